"""UrbanCLIP (Yan et al., WWW 2024): a CLIP fine-tuned on one MLLM caption sentence per satellite tile
with CoCa's contrastive + captioning loss; frozen image encoder downstream.

What it does here (docs/methods.md#urbanclip, ``StupidBuluchacha/UrbanCLIP``):

- **Captions**: one captioner, the simulated LLaMA-Adapter V2 (``synthetic:llama-adapter-v2``; the
  paper's MLLM), one candidate per image, no refinement, no consensus (``caption_settings``). Images
  whose caption contains ``ocean`` are dropped from pretraining (its toolkit's ``img-filter.py``;
  ``--set exclude_keyword=``). Each caption is split on ``'. '`` and one sentence per image is drawn
  once with a seeded generator (``CoCaDataset``), then tokenised to 77 tokens (truncated).
- **Objective**: L = 1.0·L_Con + 1.0·L_Cap (open_clip ``CoCaLoss`` weights; CoCa Eq. 4) through the
  shared CLIP trainer's ``coca`` plugin (``clip_training/coca.py``); ``logit_scale`` clamped at ln 100.
- **Downstream**: the frozen image encoder's ``encode_image``, L2-normalised (open_clip CoCa's
  ``encode_image`` normalises by default; its ``mlp.py`` probes that), street views mean-pooled.

Deviations, each because of what runs offline on a CPU:

- **Backbone**: the paper's code fine-tunes open_clip ``coca_ViT-L-14`` from
  ``mscoco_finetuned_laion2B-s13B-b90k``. No CoCa checkpoint is available here, so the image encoder
  and unimodal text decoder are the harness's CLIP of the run profile (the synthetic foundation, or a
  plain open_clip CLIP checkpoint via ``--set weights=PATH``) and the **multimodal decoder is trained
  from scratch** during the city fine-tuning. A CoCa checkpoint is not accepted (its towers differ:
  attentional pooler, appended text CLS token).
- **Caption softmax**: on ``smoke`` / ``cpu`` the decoder predicts over the tokens that occur in the
  city's training sentences (the full 49,408-way softmax costs seconds per CPU step); ``paper`` and
  ``--set caption_vocabulary=full`` use the full vocabulary.
- **Recipe**: ``paper`` is its ``main.py`` (AdamW lr 3e-4, wd 0.01, batch 2, 100 epochs); ``cpu`` and
  ``smoke`` are step budgets for a CPU. Every image of the city trains (its 80/10/10 split only picks
  a checkpoint by validation loss; the probe's split is the harness's). The harness's trainer warms
  up and decays the lr (cosine) for every CLIP method; its code keeps it constant.
- **Native imagery**: the paper reports UrbanCLIP as one row, on satellite tiles (``native_imagery``
  SI); ``--imagery SV`` runs the same recipe on street views.
"""

from __future__ import annotations

from typing import Any

from urbanln_bench.captions.captioners import SINGLE_CAPTIONER
from urbanln_bench.clip_training.clip_method import ClipBackedMethod, clip_settings, normalised_image_encoder
from urbanln_bench.method import FitContext, MethodMeta
from urbanln_bench.training_loop import CLIP_CONTEXT

RECIPES: dict[str, dict[str, Any]] = {
    "smoke": {"batch_size": 16, "lr": 1e-4, "caption_vocabulary": "observed"},
    "cpu": {"batch_size": 64, "lr": 1e-4, "caption_vocabulary": "observed"},
    "paper": {"epochs": 100.0, "max_steps": 10_000_000, "batch_size": 2, "lr": 3e-4, "caption_vocabulary": "full"},
}

DEFAULTS: dict[str, Any] = {
    **clip_settings(weight_decay=0.01),
    "captioner": SINGLE_CAPTIONER["urbanclip"],
    "exclude_keyword": "ocean",
    "caption_weight": 1.0,
    "contrastive_weight": 1.0,
    "decoder_layers": 0,  # 0 = the text tower's depth
    "caption_vocabulary": "",  # "": the recipe's ("observed" on smoke/cpu, "full" on paper)
}


class UrbanCLIP(ClipBackedMethod):
    meta = MethodMeta(
        name="urbanclip",
        display_name="UrbanCLIP",
        version="1",
        imagery="either",
        native_imagery=("SI",),
        description="CLIP fine-tuned with CoCa's contrastive + captioning loss (from-scratch multimodal decoder) on "
                    "one sentence per image of a single captioner's captions (simulated LLaMA-Adapter V2, "
                    "synthetic:llama-adapter-v2); frozen image encoder.",
        starts_from="clip-start",
        citation="Yan et al., UrbanCLIP: Learning Text-enhanced Urban Region Profiling with Contrastive "
                 "Language-Image Pretraining from the Web, WWW 2024",
        default_config=DEFAULTS,
    )
    RECIPES = RECIPES

    def caption_settings(self, imagery: str) -> dict[str, dict[str, Any]]:
        """One captioner, one candidate, no refinement, no consensus: the pipeline only describes."""
        return {imagery: {"captioners": (str(self.config["captioner"]),), "candidates_per_captioner": 1,
                          "refinement": False, "consensus": False}}

    def _vocabulary_mode(self) -> str:
        mode = str(self.recipe()["caption_vocabulary"])
        if mode not in ("observed", "full"):
            from urbanln_bench.errors import UserError

            raise UserError(f"urbanclip: caption_vocabulary must be 'observed' or 'full', got '{mode}'")
        return mode

    # -- training ----------------------------------------------------------------------------------
    def fit(self, city, imagery: str, context: FitContext) -> None:
        import torch

        from urbanln_bench.clip_training.caption_pairs import one_sentence_per_image, without_keyword
        from urbanln_bench.clip_training.trainer import ClipTrainConfig, build_clip_loss, train_clip
        from urbanln_bench.errors import UserError

        captions = context.extras.get("captions", {}).get(imagery)
        if not captions:
            raise UserError(f"{self.meta.name}: the harness gave no {imagery} captions for {city.name}")
        captioned = [i for i in city.image_ids(imagery) if i in captions]
        ids = without_keyword(captions, captioned, str(self.config["exclude_keyword"]))
        if len(ids) < 2:
            raise UserError(f"{self.meta.name}: {city.name} has {len(ids)} usable captioned {imagery} images "
                            f"({len(captioned) - len(ids)} dropped for '{self.config['exclude_keyword']}'); need >= 2")
        sentences = one_sentence_per_image(captions, ids, context.seed)
        ids = sorted(sentences)
        model, tokenizer, preprocess = self.load_clip(context)
        recipe = self.recipe()
        texts = [sentences[i] for i in ids]

        def tokenize(batch: list[str]) -> torch.Tensor:
            return tokenizer(batch, context_length=CLIP_CONTEXT)

        vocabulary = None
        if self._vocabulary_mode() == "observed":
            vocabulary = sorted(set(tokenize(texts).flatten().tolist()))
        loss = build_clip_loss("coca", caption_weight=float(self.config["caption_weight"]),
                               contrastive_weight=float(self.config["contrastive_weight"]),
                               decoder_layers=int(self.config["decoder_layers"]), vocabulary=vocabulary)
        train_config = ClipTrainConfig(steps=self.steps_for(len(ids)), batch_size=int(recipe["batch_size"]),
                                       lr=float(recipe["lr"]), weight_decay=float(self.config["weight_decay"]),
                                       train=self.config["train"], seed=context.seed)
        images = [city.load_image(i) for i in ids]
        self.report = train_clip(model, images, texts, tokenize, preprocess, train_config, loss,
                                 device=context.device, progress=context.progress,
                                 description=f"pretraining {self.variant_label()} on {city.name} {imagery}")
        self.report["weights"] = self.weight_source()
        self.report["captioner"] = self.config["captioner"]
        self.report["sentences"] = {"images": len(ids), "dropped_for_keyword": len(captioned) - len(ids),
                                    "mean_words": round(sum(len(t.split()) for t in texts) / len(texts), 1)}
        self.model = model.eval()  # downstream: L2-normalised image features, CoCa's encode_image default

    def architecture(self):
        """The CLIP of the profile plus the caption decoder (full vocabulary): all of it trains."""
        from urbanln_bench.backbones.clip import build_clip
        from urbanln_bench.clip_training.coca import CoCaLoss
        from urbanln_bench.profiling import Architecture

        model, _, _ = build_clip(self.clip_profile())
        decoder = CoCaLoss(decoder_layers=int(self.config["decoder_layers"])).build_decoder(model)
        total = sum(p.numel() for p in model.parameters()) + sum(p.numel() for p in decoder.parameters())
        note = ("image + text towers + multimodal caption decoder (full vocabulary; smoke/cpu recipes project onto "
                "the observed tokens only, fewer parameters)")
        return Architecture(normalised_image_encoder(model.visual), total, total, note)
