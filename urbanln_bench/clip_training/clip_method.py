"""The base of every CLIP-backed method (UrbanLN, UrbanCLIP, UrbanVLP): the CLIP profile, its
preprocessing, its weight source, the recipe per run profile and the frozen image encoder.

A subclass sets ``RECIPES`` ({run profile: {batch_size, lr, ...}}, plus {epochs, max_steps} for a profile
without an images-seen budget, i.e. ``paper``: profiles.IMAGES_SEEN_BUDGETS) and has the
settings ``clip`` ("" = the run's profile), ``weights`` ("" = a cached hub copy of the profile, else
the synthetic foundation) and one setting per recipe key (None or "" = the profile's value). The
harness sets ``run_profile`` before it asks for anything; the recipe is resolved from it on each
call, never written back into the config.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from urbanln_bench import profiles
from urbanln_bench.method import Method
from urbanln_bench.training_loop import CLIP_MEAN, CLIP_STD


def clip_settings(weight_decay: float, *, train_part: bool = True) -> dict[str, Any]:
    """The settings every CLIP-backed method has, with their defaults: which CLIP and weights, the
    recipe keys (None = the run profile's ``RECIPES`` entry), the weight decay and which tower trains."""
    settings: dict[str, Any] = {
        "clip": "",  # CLIP profile; "" = the run's --profile (smoke / cpu / paper) or an open_clip model name
        "weights": "",  # a local open_clip checkpoint or hf-hub entry; "" = cached hub copy, else the foundation
        "images_seen": None,  # None: the profile's budget (profiles.IMAGES_SEEN_BUDGETS)
        "epochs": None,  # None: the profile's recipe (only a profile without a budget has epochs)
        "max_steps": None,
        "batch_size": None,
        "lr": None,
        "weight_decay": weight_decay,
    }
    if train_part:
        settings["train"] = "all"  # all / image / text (clip_training.trainer.set_trainable)
    return settings


def normalised_image_encoder(visual):
    """A module that maps pixels to the L2-normalised features of a CLIP image tower ``visual``: what
    every CLIP method hands the probe (the space its contrastive loss shapes)."""
    import torch

    class NormalisedImageEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.visual = visual

        def forward(self, pixels):
            return torch.nn.functional.normalize(self.visual(pixels).float(), dim=-1)

    return NormalisedImageEncoder()


class ClipBackedMethod(Method):
    RECIPES: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self._label: str | None = None
        self.model = None  # the fitted CLIP (one-tower methods)
        self.report: dict[str, Any] = {}

    def modules(self) -> list:
        return [self.model]

    def encode_images(self, pixels):
        """The frozen CLIP's L2-normalised image features."""
        import torch.nn.functional as F

        return F.normalize(self.model.encode_image(pixels).float(), dim=-1)

    def fit_report(self) -> dict[str, Any]:
        return self.report

    def clip_profile(self) -> str:
        return self.config["clip"] or self.run_profile

    def recipe(self) -> dict[str, Any]:
        """The run profile's recipe with the user's settings: under a profile with an images-seen budget
        (or an ``images_seen`` setting) the budget, not epochs, sets the length of training."""
        from urbanln_bench.errors import UserError

        base = profiles.recipe(self.RECIPES, self.run_profile, f"method '{self.meta.name}'")
        out = {k: (base[k] if self.config.get(k) in (None, "") else self.config[k]) for k in base}
        budget = profiles.images_seen_budget(self.run_profile, self.config.get("images_seen"))
        if budget is None:
            return out
        stray = [k for k in ("epochs", "max_steps") if self.config.get(k) not in (None, "")]
        if stray:
            raise UserError(f"method '{self.meta.name}': {', '.join(stray)} cannot be set under the "
                            f"'{self.run_profile}' profile, whose images-seen budget sets the length of training; "
                            "set images_seen=N instead")
        out = {k: v for k, v in out.items() if k not in ("epochs", "max_steps")}
        out["images_seen"] = budget
        return out

    def steps_for(self, pairs: int, images_per_pair: float = 1.0) -> int:
        """Optimiser steps for ``pairs`` training items of ``images_per_pair`` images each: the budget
        divided by the images a step sees, or (no budget) the recipe's epochs capped at its max_steps."""
        recipe = self.recipe()
        if "images_seen" in recipe:
            return profiles.steps_for_budget(int(recipe["images_seen"]), int(recipe["batch_size"]) * images_per_pair)
        return min(int(recipe["max_steps"]), max(1, math.ceil(recipe["epochs"] * pairs / recipe["batch_size"])))

    def _clip_meta(self) -> dict[str, Any]:
        from urbanln_bench.backbones.clip import clip_config

        return clip_config(self.clip_profile())

    @property
    def input_size(self) -> int:  # the harness resizes to the CLIP's own image size
        size = self._clip_meta()["vision_cfg"]["image_size"]
        return int(size if isinstance(size, int) else size[0])

    @property
    def mean(self):
        return tuple(self._clip_meta().get("urbanln", {}).get("mean", CLIP_MEAN))

    @property
    def std(self):
        return tuple(self._clip_meta().get("urbanln", {}).get("std", CLIP_STD))

    def weight_source(self) -> str:
        if self._label is None:
            from urbanln_bench.backbones.clip_weights import weight_source_label

            self._label = weight_source_label(self.clip_profile(), self.config["weights"])
        return self._label

    def load_clip(self, context):
        """(model, tokenizer, ClipPreprocess) from the method's weight source; remembers the label."""
        from urbanln_bench.backbones.clip_weights import load_clip

        model, tokenizer, preprocess, source = load_clip(self.clip_profile(), self.config["weights"],
                                                         context.progress, device=context.device)
        self._label = source
        return model, tokenizer, preprocess

    def prepare_fit(self, context) -> None:
        """Under torchrun: rank 0 loads the CLIP once first (building the synthetic foundation if it is
        not cached), so the other ranks' ``fit`` reads it instead of building it."""
        self.load_clip(context)

    def identity(self) -> dict[str, Any]:
        from urbanln_bench.clip_training.trainer import CLIP_TRAINER_VERSION

        return {**super().identity(), "clip": self.clip_profile(), "recipe": self.recipe(),
                "run_profile": self.run_profile, "clip_trainer": CLIP_TRAINER_VERSION}
