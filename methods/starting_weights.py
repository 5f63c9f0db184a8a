"""Each trained method's own starting weights, frozen: the frame rows (role ``start``) that say whether a
method's pretraining moved its encoder at all (docs/architecture.md#roles).

A method names its row in ``MethodMeta.starts_from``. The row embeds the city with exactly the encoder the
method's ``fit`` starts from, before any step: the same architecture, the same seeded initialisation (or
the same loaded weights), the same preprocessing and pooling, the same probe. A trained method that does
not beat it with paired significance has learnt nothing from its pretraining that the probe can use.

- ``clip-start``: the CLIP that UrbanLN, UrbanCLIP and UrbanVLP load (``load_clip`` with the profile's
  weights: the synthetic foundation on ``smoke``/``cpu``, a local OpenAI checkpoint on ``paper``), frozen,
  L2-normalised image features (what the CLIP methods hand the probe). UrbanLN's IPSI stretches only the
  text tower's positional table, so the image encoder is the same.
- ``tile2vec-start``, ``pg-simclr-start``, ``musecl-start``: the method's encoders at their seeded
  initialisation (zero steps; MuseCL's fusion head untrained too).
- ``caption-regression-start``: the 4-block CNN at its seeded initialisation.
- ``urbanvlp-start``: UrbanVLP's two towers as it loads them (both the profile's CLIP, no step), embedded the
  way UrbanVLP embeds (satellite feature + mean street-view feature, unnormalised): the fused row UrbanVLP
  is read against. ``clip-start`` is per imagery and L2-normalised, so it is not UrbanVLP's start.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from urbanln_bench.builtin.methods.caption_regression import CaptionRegression
from urbanln_bench.builtin.methods.musecl import MuseCL
from urbanln_bench.builtin.methods.pg_simclr import PGSimCLR
from urbanln_bench.builtin.methods.tile2vec import Tile2Vec
from urbanln_bench.builtin.methods.urbanvlp import UrbanVLP
from urbanln_bench.clip_training.clip_method import ClipBackedMethod, normalised_image_encoder
from urbanln_bench.method import FitContext, MethodMeta


def start_meta(meta: MethodMeta, **changes: Any) -> MethodMeta:
    """The starting-weights row's metadata from the trained method's."""
    return dataclasses.replace(meta, name=f"{meta.name}-start", display_name=f"{meta.display_name} (starting weights)",
                               role="start", ours=False, ablation_of="", starts_from="",
                               description=f"{meta.display_name}'s encoder before its pretraining: seeded "
                                           "initialisation, no step, frozen.", **changes)


class ClipStart(ClipBackedMethod):
    RECIPES = {"smoke": {}, "cpu": {}, "paper": {}}
    meta = MethodMeta(
        name="clip-start",
        display_name="CLIP (starting weights)",
        version="1",
        imagery="either",
        native_imagery=("SV", "SI"),
        role="start",
        description="The frozen CLIP that UrbanLN, UrbanCLIP and UrbanVLP start from (the profile's weights; the "
                    "synthetic foundation on smoke/cpu), L2-normalised image features, no pretraining on the city.",
        citation="Radford et al., Learning Transferable Visual Models From Natural Language Supervision, ICML 2021",
        default_config={"clip": "", "weights": ""},
    )

    def recipe(self) -> dict[str, Any]:
        return {}  # nothing trains: no recipe, no budget

    def fit(self, city, imagery: str, context: FitContext) -> None:
        model, _, _ = self.load_clip(context)
        self.model = model.eval()
        self.report = {"steps": 0, "images_seen": 0, "weights": self.weight_source()}

    def architecture(self):
        """The CLIP of the profile; nothing trains."""
        from urbanln_bench.backbones.clip import build_clip
        from urbanln_bench.profiling import Architecture

        model, _, _ = build_clip(self.clip_profile())
        total = sum(p.numel() for p in model.visual.parameters())
        return Architecture(normalised_image_encoder(model.visual), total, 0, "image tower, frozen")


class Tile2VecStart(Tile2Vec):
    UNTRAINED = True
    meta = start_meta(Tile2Vec.meta)


class PGSimCLRStart(PGSimCLR):
    UNTRAINED = True
    meta = start_meta(PGSimCLR.meta)


class MuseCLStart(MuseCL):
    UNTRAINED = True
    EPOCH_KEYS = ("rs_epochs", "sv_epochs", "fusion_epochs")  # the fusion head stays untrained too
    meta = start_meta(MuseCL.meta)


class CaptionRegressionStart(CaptionRegression):
    UNTRAINED = True
    meta = start_meta(CaptionRegression.meta)


class UrbanVLPStart(UrbanVLP):
    RECIPES = {"smoke": {}, "cpu": {}, "paper": {}}
    meta = start_meta(UrbanVLP.meta)

    def recipe(self) -> dict[str, Any]:
        return {}  # nothing trains: no recipe, no budget

    def caption_settings(self, imagery: str) -> dict[str, dict[str, Any]]:
        return {}  # no pretraining, so no captions

    def fit(self, city, imagery: str, context: FitContext) -> None:
        import copy

        satellite, _, _ = self.load_clip(context)
        # UrbanVLP.fit deep-copies the loaded CLIP into its street-view tower before any step
        self.satellite, self.streetview = satellite.eval(), copy.deepcopy(satellite).eval()
        self.report = {"steps": 0, "images_seen": 0, "weights": self.weight_source()}
