"""What every CLIP-backed method shares: the CLIP profile, its preprocessing, its weight source, recipes.

A subclass sets ``RECIPES`` ({run profile: {epochs, max_steps, batch_size, lr}}) and has the settings
``clip`` ("" = the run's profile), ``weights`` ("" = a cached hub copy of the profile, else the
synthetic foundation) and one setting per recipe key (None or "" = the profile's value).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from urbanln_bench.method import Method


class ClipBackedMethod(Method):
    RECIPES: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self._label: str | None = None

    def clip_profile(self) -> str:
        return self.config["clip"] or self.run_profile

    def recipe(self) -> dict[str, Any]:
        base = self.RECIPES.get(self.run_profile, self.RECIPES["cpu"])
        return {k: (base[k] if self.config.get(k) in (None, "") else self.config[k]) for k in base}

    def steps_for(self, pairs: int) -> int:
        """Optimiser steps for ``pairs`` training items: the recipe's epochs, capped at its max_steps."""
        recipe = self.recipe()
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
        return tuple(self._clip_meta().get("urbanln", {}).get("mean", (0.48145466, 0.4578275, 0.40821073)))

    @property
    def std(self):
        return tuple(self._clip_meta().get("urbanln", {}).get("std", (0.26862954, 0.26130258, 0.27577711)))

    def weight_source(self) -> str:
        if self._label is None:
            from urbanln_bench.backbones.clip import weight_source_label

            self._label = weight_source_label(self.clip_profile(), self.config["weights"])
        return self._label

    def load_clip(self, context):
        """(model, tokenizer, ClipPreprocess) from the method's weight source; remembers the label."""
        from urbanln_bench.backbones.clip import load_clip

        model, tokenizer, preprocess, source = load_clip(self.clip_profile(), self.config["weights"],
                                                         context.progress, device=context.device)
        self._label = source
        return model, tokenizer, preprocess

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "clip": self.clip_profile(), "recipe": self.recipe(),
                "run_profile": self.run_profile}
