"""What the pair-trained baselines share as harness methods: settings per run profile, the input size,
the weight-source label and the fit report.

Settings are data (``RECIPES``: ``smoke`` for tests, ``cpu`` for a laptop, ``paper`` for the paper's
hyper-parameters), not code branches. ``default_config`` is the ``cpu`` profile, so ``--set key=value``
knows every key and its type; the run's profile (``run_profile``, set by the harness) chooses the base
and the user's ``--set`` overrides win. ``self.config`` resolves them from ``run_profile`` on every read
(nothing is rewritten when the harness sets the profile), so records and cache keys carry exactly what
was trained.
"""

from __future__ import annotations

from typing import Any, ClassVar

from urbanln_bench.errors import UserError
from urbanln_bench.method import Method
from urbanln_bench.profiles import images_seen_budget, recipe


class PairTrainedMethod(Method):
    """Base of Tile2Vec, PG-SimCLR and MuseCL: an encoder trained from scratch on the city by the shared
    pair-sampling trainer."""

    RECIPES: ClassVar[dict[str, dict[str, Any]]]

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self._report: dict[str, Any] = {}

    # the recipe keys that set the length of training where a profile has no images-seen budget
    EPOCH_KEYS: ClassVar[tuple[str, ...]] = ("epochs",)
    # True for a method's starting-weights row (methods/starting_weights.py): every encoder keeps its
    # seeded initialisation (no step, no image seen)
    UNTRAINED: ClassVar[bool] = False

    @property
    def config(self) -> dict[str, Any]:
        """The profile's recipe under the user's overrides. Under a profile with an images-seen budget (or
        an ``images_seen`` setting) the budget, not epochs, sets the length of training
        (profiles.IMAGES_SEEN_BUDGETS)."""
        config = {**recipe(self.RECIPES, self.run_profile, f"method '{self.meta.name}'"), **self.overrides}
        if self.UNTRAINED:
            return {**{k: v for k, v in config.items() if k != "images_seen"}, **dict.fromkeys(self.EPOCH_KEYS, 0)}
        budget = images_seen_budget(self.run_profile, self.overrides.get("images_seen"))
        if budget is None:
            config.pop("images_seen", None)
            return config
        stray = [k for k in self.EPOCH_KEYS if k in self.overrides]
        if stray:
            raise UserError(f"method '{self.meta.name}': {', '.join(stray)} cannot be set under the "
                            f"'{self.run_profile}' profile, whose images-seen budget sets the length of training; "
                            "set images_seen=N instead")
        config = {k: v for k, v in config.items() if k not in self.EPOCH_KEYS}
        config["images_seen"] = budget
        return config

    @classmethod
    def settings(cls, recipes: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """``default_config`` for ``--set``: every key of every profile's recipe (the ``cpu`` values where
        it has them) plus ``images_seen`` (0: the profile's budget)."""
        keys = {k: v for profile in ("paper", "smoke", "cpu") for k, v in recipes[profile].items()}
        return {**keys, **recipes["cpu"], "images_seen": 0}

    def images_budget(self, share: float = 1.0) -> int:
        """The images-seen budget of one encoder that gets ``share`` of the method's budget; 0 (train by
        epochs) under a profile without one."""
        budget = self.config.get("images_seen")
        return max(2, int(budget * share)) if budget else 0

    @property
    def input_size(self) -> int:  # the harness resizes every image to this; training sees the same
        return int(self.config["input_size"])

    def weight_source(self) -> str:
        if self.UNTRAINED:
            return f"seeded initialisation, not trained ({self.run_profile} profile)"
        return f"from scratch (self-supervised on the fit city, {self.run_profile} profile)"

    def identity(self) -> dict[str, Any]:
        """The method's identity plus the shared pair trainer's version (docs/identity.md): a change of
        the trainer moves every pair-trained record's key without touching the methods' own versions."""
        from urbanln_bench.pair_training.trainer import PAIR_TRAINER_VERSION

        return {**super().identity(), "pair_trainer": PAIR_TRAINER_VERSION}

    def fit_report(self) -> dict[str, Any]:
        return dict(self._report)

    @staticmethod
    def summarise(logs: dict[str, dict]) -> dict[str, Any]:
        """The fit report: per encoder the trainer's log, plus totals the record keeps."""
        seen = [log.get("images_seen") for log in logs.values() if log.get("images")]  # image encoders only (not
        # MuseCL's fusion head, which trains on region features)
        return {
            "steps": sum(log["steps"] for log in logs.values()),
            # the budget in images seen (None for a log cached before the trainer counted them)
            "images_seen": sum(seen) if all(isinstance(n, int) and n >= 0 for n in seen) else None,
            "parameters": sum(log["parameters"] for log in logs.values()),
            "loss_first_last": {name: [round(log["epoch_loss"][0], 4), round(log["epoch_loss"][-1], 4)]
                                for name, log in logs.items() if log["epoch_loss"]},
            "encoders": logs,
        }
