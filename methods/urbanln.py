"""UrbanLN (AAAI 2026): a CLIP image encoder pretrained on a city's long, noisy MLLM captions.

Data level: the harness's caption pipeline (multi-captioner long captions → divide-and-conquer
refinement → CAPTURE consensus; ``urbanln_bench/captions``) gives one caption per image of the cell's
imagery. Model level: **IPSI** stretches the text positions 77 → 248 (Eq. 2, ``stretch_positional_
embedding``; the first 20 rows frozen, as Long-CLIP) and **momentum self-distillation** trains the
CLIP (Eqs. 3–6: EMA teacher 0.995, image/text queues of 4096, learnable τ,
L = (1 − μ)·L_C + μ·L_D, μ = 0.5) with AdamW. Downstream the image encoder is frozen; its
L2-normalised features (the space the contrastive loss shapes) go to the harness's probe, street
views mean-pooled per region.

Variants (each its own registry name, so each is its own row): ``urbanln`` (+SV / +SI: pretrained and
embedded on the cell's imagery), ``urbanln-no-refinement``, ``urbanln-no-consensus`` (seeded random
choice among the candidates), ``urbanln-no-ipsi`` (captions truncated at 77 tokens) and
``urbanln-no-msd`` (no teacher, no queue: CLIP's in-batch InfoNCE). ``--set mu=0.3`` and other
settings become distinct records.

Recipes (``RECIPES``): ``paper`` is the paper's ViT-B/16 with lr 1e-7 as printed, from a local / cached
OpenAI checkpoint when present; the paper prints no batch size or epoch count, so 128 and 10 are our
choice. ``cpu`` (the default) and ``smoke`` start from the harness's synthetic foundation CLIP of that
profile (a from-scratch CLIP, never the real OpenAI weights) — lr 1e-7 would not move a model trained
in minutes, so ``smoke`` uses 1e-4 and ``cpu`` 1e-3 (the foundation's own lr), chosen on NY validation R²
from 5e-5, 2.5e-4, 1e-3 and 3e-3 (docs/methods.md#cpu-lr); they train for the profile's images-seen budget
(docs/architecture.md#budgets), like every self-supervised method.
Deviation: queue 4096 is kept although a NY ``small`` cell has fewer images (517 SI, 1,405 SV), so
the queue holds earlier teacher features of the same images — as the paper's own SI cells do
(NY has 2k satellite tiles).
"""

from __future__ import annotations

from typing import Any

from urbanln_bench.clip_training.clip_method import ClipBackedMethod, clip_settings, normalised_image_encoder
from urbanln_bench.method import FitContext, MethodMeta
from urbanln_bench.training_loop import CLIP_CONTEXT

RECIPES: dict[str, dict[str, Any]] = {
    "smoke": {"batch_size": 16, "lr": 1e-4},
    "cpu": {"batch_size": 64, "lr": 1e-3},  # chosen on NY validation R² (docs/methods.md#cpu-lr)
    "paper": {"epochs": 10.0, "max_steps": 100_000, "batch_size": 128, "lr": 1e-7},
}

DEFAULTS: dict[str, Any] = {
    **clip_settings(weight_decay=0.02),
    "mu": 0.5,
    "momentum": 0.995,
    "queue_size": 4096,
    "temperature": 0.07,
    "msd": True,
    "ipsi": True,
    "ipsi_keep": 20,
    "ipsi_ratio": 4,
    "freeze_kept": True,
    "refinement": True,
    "consensus": True,
    "captioners": [],  # [] = the pipeline's five paper captioners; e.g. ["synthetic:qwen2.5-vl-7b"]
    "candidates_per_captioner": 0,  # 0 = the pipeline's default (2)
}


class UrbanLN(ClipBackedMethod):
    meta = MethodMeta(
        name="urbanln",
        display_name="UrbanLN",
        version="1",
        imagery="either",
        native_imagery=("SV", "SI"),
        description="CLIP pretrained on refined, consensus-selected long captions with IPSI (77→248 tokens) and "
                    "momentum self-distillation; frozen image encoder.",
        starts_from="clip-start",
        citation="UrbanLN, AAAI 2026",
        ours=True,
        default_config=DEFAULTS,
    )
    RECIPES = RECIPES

    def caption_settings(self, imagery: str) -> dict[str, dict[str, Any]]:
        """The caption sets ``fit`` needs: the cell's imagery, with the variant's ablation flags."""
        from urbanln_bench.fit_inputs import caption_request

        return {imagery: caption_request(self.config, refinement=bool(self.config["refinement"]),
                                         consensus=bool(self.config["consensus"]))}

    # -- training ----------------------------------------------------------------------------------
    def fit(self, city, imagery: str, context: FitContext) -> None:
        import torch

        from urbanln_bench.clip_training.ipsi import apply_ipsi
        from urbanln_bench.clip_training.trainer import ClipTrainConfig, build_clip_loss, train_clip
        from urbanln_bench.errors import UserError

        captions = context.extras.get("captions", {}).get(imagery)
        if not captions:
            raise UserError(f"{self.meta.name}: the harness gave no {imagery} captions for {city.name}")
        ids = [i for i in city.image_ids(imagery) if i in captions]
        if len(ids) < 2:
            raise UserError(f"{self.meta.name}: {city.name} has {len(ids)} captioned {imagery} images; need >= 2")
        model, tokenizer, preprocess = self.load_clip(context)
        context_length = CLIP_CONTEXT
        if self.config["ipsi"]:
            context_length = apply_ipsi(model, keep=int(self.config["ipsi_keep"]), ratio=int(self.config["ipsi_ratio"]),
                                        freeze_kept=bool(self.config["freeze_kept"]))
        recipe = self.recipe()
        train_config = ClipTrainConfig(steps=self.steps_for(len(ids)), batch_size=int(recipe["batch_size"]), lr=float(recipe["lr"]),
                                       weight_decay=float(self.config["weight_decay"]), train=self.config["train"],
                                       seed=context.seed)
        if self.config["msd"]:
            loss = build_clip_loss("msd", mu=float(self.config["mu"]), momentum=float(self.config["momentum"]),
                                   queue_size=int(self.config["queue_size"]),
                                   temperature=float(self.config["temperature"]))
        else:
            loss = build_clip_loss("infonce")
        images = [city.load_image(i) for i in ids]
        texts = [captions[i] for i in ids]

        def tokenize(batch: list[str]) -> torch.Tensor:
            return tokenizer(batch, context_length=context_length)

        self.report = train_clip(model, images, texts, tokenize, preprocess, train_config, loss,
                                 device=context.device, progress=context.progress,
                                 description=f"pretraining {self.variant_label()} on {city.name} {imagery}")
        self.report["weights"] = self.weight_source()
        self.report["ipsi"] = {"context_length": context_length, "keep": self.config["ipsi_keep"],
                               "frozen_rows": int(self.config["ipsi_keep"]) if self.config["ipsi"] and
                               self.config["freeze_kept"] else 0}
        self.model = model.eval()

    def architecture(self):
        """The CLIP of the profile (IPSI-stretched when on): all of it trains, except IPSI's frozen rows."""
        from urbanln_bench.backbones.clip import build_clip
        from urbanln_bench.clip_training.ipsi import apply_ipsi
        from urbanln_bench.profiling import Architecture

        model, _, _ = build_clip(self.clip_profile())
        frozen = 0
        if self.config["ipsi"]:
            apply_ipsi(model, keep=int(self.config["ipsi_keep"]), ratio=int(self.config["ipsi_ratio"]))
            if self.config["freeze_kept"]:
                frozen = int(self.config["ipsi_keep"]) * model.positional_embedding.shape[1]
        total = sum(p.numel() for p in model.parameters())
        note = "image + text towers; " + ("EMA teacher (same size) not trained" if self.config["msd"] else "no teacher")
        return Architecture(normalised_image_encoder(model.visual), total, total - frozen, note)


def _variant(name: str, display: str, description: str, **changes: Any) -> type[UrbanLN]:
    meta = MethodMeta(name=name, display_name=display, version=UrbanLN.meta.version, imagery="either",
                      native_imagery=("SV", "SI"), description=description, citation=UrbanLN.meta.citation,
                      ours=True, ablation_of="urbanln", default_config={**DEFAULTS, **changes})
    return type(name.replace("-", "_"), (UrbanLN,), {"meta": meta, "__doc__": description})


UrbanLNNoRefinement = _variant("urbanln-no-refinement", "UrbanLN w/o Refinement",
                               "Ablation: the multi-captioner candidates go to consensus unrefined.", refinement=False)
UrbanLNNoConsensus = _variant("urbanln-no-consensus", "UrbanLN w/o Consensus",
                              "Ablation: a seeded random candidate instead of the CAPTURE consensus.", consensus=False)
UrbanLNNoIPSI = _variant("urbanln-no-ipsi", "UrbanLN w/o IPSI",
                         "Ablation: no positional stretching; captions truncated at 77 tokens.", ipsi=False)
UrbanLNNoMSD = _variant("urbanln-no-msd", "UrbanLN w/o MSD",
                        "Ablation: no teacher and no queue; CLIP's in-batch InfoNCE.", msd=False)
