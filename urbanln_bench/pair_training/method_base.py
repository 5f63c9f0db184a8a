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

from urbanln_bench.method import Method
from urbanln_bench.profiles import recipe


class PairTrainedMethod(Method):
    """Base of Tile2Vec, PG-SimCLR and MuseCL: an encoder trained from scratch on the city by the shared
    pair-sampling trainer."""

    RECIPES: ClassVar[dict[str, dict[str, Any]]]

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self._report: dict[str, Any] = {}

    @property
    def config(self) -> dict[str, Any]:
        return {**recipe(self.RECIPES, self.run_profile, f"method '{self.meta.name}'"), **self.overrides}

    @property
    def input_size(self) -> int:  # the harness resizes every image to this; training sees the same
        return int(self.config["input_size"])

    def weight_source(self) -> str:
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
        seen = [log.get("images_seen") for log in logs.values() if "images" in log]  # image encoders only (not
        # MuseCL's fusion head, which trains on region features)
        return {
            "steps": sum(log["steps"] for log in logs.values()),
            # the budget in images seen (None for a log cached before the trainer counted them)
            "images_seen": sum(seen) if all(isinstance(n, int) and n > 0 for n in seen) else None,
            "parameters": sum(log["parameters"] for log in logs.values()),
            "loss_first_last": {name: [round(log["epoch_loss"][0], 4), round(log["epoch_loss"][-1], 4)]
                                for name, log in logs.items() if log["epoch_loss"]},
            "encoders": logs,
        }
