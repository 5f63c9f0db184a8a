"""UrbanVLP (AAAI 2025): two CLIP towers, satellite and street view, pretrained together on MLLM
captions; the region embedding fuses both (one ``SV+SI`` row).

What it does here (docs/methods.md#urbanvlp, ``CityMind-Lab/UrbanVLP``, ``models/main_urbanvlp.py`` with the default
``MultiGranularity_GeoCLIP``):

- **Captions**: one captioner for both imageries (``caption_settings`` asks for SI and SV sets; the
  simulated ShareGPT4V persona stands in, ``captions.captioners.SINGLE_CAPTIONER``), one candidate,
  no refinement, no consensus. Satellite text: one sentence per tile, drawn once with a seeded
  generator (its dataset, UrbanCLIP's format). Street-view text: the region's street-view
  descriptions joined with spaces, tokenised to 77 tokens (its preprocessing: mostly truncated).
- **Towers**: two copies of the same starting CLIP (its code: two ``ViT-B-16`` from
  ``laion2b_s34b_b88k``; here the run profile's synthetic foundation or ``--set weights=PATH``).
- **Satellite branch**: CLIP's InfoNCE between the satellite caption and the region's fused image
  feature, normalised satellite feature + normalised street-view feature (its code adds the street-view
  tower's feature, and the GPS embedding, to the satellite feature before ``ClipLoss``), with the
  satellite tower's ``logit_scale`` (clamped at ln 100, as both towers' are).
- **Street-view branch**: the FILIP token loss of its ``ClipLoss_filip`` (``clip_training/filip.py``):
  max over text tokens, mean over image tokens, no logit scale, all 77 text positions.
- **Loss**: 0.5·satellite + 0.5·street view (``--alpha``/``--beta``); AdamW, wd 0.01, both towers and
  both objectives in one optimiser step (a small loop here, built from the shared trainer's helpers).
- **Downstream** (``encode_regions``): the satellite tower's ``encode_image`` plus the mean of the
  street-view tower's ``encode_image`` over the region's street views (the harness cap,
  ``embed.MAX_STREETVIEWS_PER_REGION``); not normalised, as its ``mlp_urbanvlp.py`` (open_clip's
  default ``normalize=False``). A region without street views gets a zero street-view feature.

Deviations:

- **No GPS embedding.** Its code adds a GeoCLIP location embedding (RFF σ = 2^0, 2^4, 2^8, 512-d) of
  the street views' coordinates, pooled by its ``Linear(25, 1)``, to the satellite feature in
  pretraining and downstream. The GeoCLIP weights (``location_encoder_weights.pth``) are not
  released, and a randomly initialised location encoder would be a coordinate lookup that no other
  method gets; it is left out.
- **No learned pixel blending.** Its code zero-pads up to 25 street views, blends the **raw pixels**
  into one image with a learned ``Linear(25, 1)``, and encodes that single image (a zero image for a
  region without street views). Here each street view is encoded on its own and the features are
  averaged per region (the harness's pooling for every method, so UrbanVLP is embedded as the others
  are, over the same ≤ 32 views); the FILIP loss takes the union of the region's views' tokens as the
  region's image-token set (its code: the blended image's tokens); and a region without views gets a
  zero feature instead of the feature of a black image (both are a constant for those regions).
  A blend of overlaid photographs is not an image a pretrained encoder has seen, and its weight per
  view slot depends on file order.
- **Regions without street views** leave the FILIP term (they have no street-view text); they stay in
  the satellite term with a zero street-view feature.
- **Recipe**: ``paper`` is its ``pretrain_urbanvlp.sh`` (lr 3e-6, batch 32, 3 epochs); ``cpu`` and
  ``smoke`` are step budgets for a CPU. All regions train (its 80/10/10 split only picks a checkpoint by
  validation loss). The lr warms up and decays (cosine) as in the shared CLIP trainer; its code keeps
  it constant.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from urbanln_bench.captions.captioners import SINGLE_CAPTIONER
from urbanln_bench.clip_training.clip_method import ClipBackedMethod, clip_settings
from urbanln_bench.method import FitContext, MethodMeta

CAPTION_CONTEXT = 77
ENCODE_BATCH = 64

RECIPES: dict[str, dict[str, Any]] = {
    "smoke": {"batch_size": 16, "lr": 1e-4},
    "cpu": {"batch_size": 32, "lr": 5e-5},
    "paper": {"epochs": 3.0, "max_steps": 10_000_000, "batch_size": 32, "lr": 3e-6},
}

DEFAULTS: dict[str, Any] = {
    **clip_settings(weight_decay=0.01, train_part=False),  # "clip": the profile of both towers
    "captioner": SINGLE_CAPTIONER["urbanvlp"],
    "satellite_weight": 0.5,  # its --alpha
    "streetview_weight": 0.5,  # its --beta
    "mask_padding": False,  # True: FILIP's paper (padding positions are not text tokens)
    "max_streetviews": 0,  # 0 = the harness cap (embed.MAX_STREETVIEWS_PER_REGION); its code: 25
}


class UrbanVLP(ClipBackedMethod):
    meta = MethodMeta(
        name="urbanvlp",
        display_name="UrbanVLP",
        version="1",
        imagery="fused",
        native_imagery=("SV+SI",),
        description="Satellite and street-view CLIP towers pretrained together: InfoNCE on one satellite caption "
                    "sentence (fused image feature) + FILIP token loss on the region's joined street-view "
                    "descriptions; embedding = satellite feature + mean street-view feature. No GeoCLIP GPS term.",
        starts_from="urbanvlp-start",
        citation="Hao et al., UrbanVLP: Multi-Granularity Vision-Language Pretraining for Urban Socioeconomic "
                 "Indicator Prediction, AAAI 2025",
        default_config=DEFAULTS,
    )
    RECIPES = RECIPES

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.satellite = None
        self.streetview = None

    def modules(self) -> list:
        return [self.satellite, self.streetview]

    def caption_settings(self, imagery: str) -> dict[str, dict[str, Any]]:
        settings = {"captioners": (str(self.config["captioner"]),), "candidates_per_captioner": 1,
                    "refinement": False, "consensus": False}
        return {"SI": dict(settings), "SV": dict(settings)}

    def view_cap(self) -> int:
        from urbanln_bench.embed import MAX_STREETVIEWS_PER_REGION

        return int(self.config["max_streetviews"]) or MAX_STREETVIEWS_PER_REGION

    # -- training ----------------------------------------------------------------------------------
    def fit(self, city, imagery: str, context: FitContext) -> None:
        import copy

        from urbanln_bench.clip_training.caption_pairs import joined_region_texts, one_sentence_per_image
        from urbanln_bench.errors import UserError

        captions = context.extras.get("captions", {})
        satellite_captions, streetview_captions = captions.get("SI"), captions.get("SV")
        if not satellite_captions or streetview_captions is None:
            raise UserError(f"{self.meta.name}: the harness gave no SI and SV captions for {city.name}")
        regions = [rid for rid in city.satellite_ids() if rid in satellite_captions]
        if len(regions) < 2:
            raise UserError(f"{self.meta.name}: {city.name} has {len(regions)} captioned satellite tiles; need >= 2")
        sentences = one_sentence_per_image(satellite_captions, regions, context.seed)
        regions = sorted(sentences)
        views = {rid: city.streetview_ids(rid)[:self.view_cap()] for rid in regions}
        sv_texts = joined_region_texts(streetview_captions, {rid: city.streetview_ids(rid) for rid in regions})
        views = {rid: (v if rid in sv_texts else []) for rid, v in views.items()}
        satellite, tokenizer, preprocess = self.load_clip(context)
        streetview = copy.deepcopy(satellite)
        data = _RegionPairs(
            regions=regions,
            satellite_images=[city.load_image(rid) for rid in regions],
            satellite_tokens=tokenizer([sentences[rid] for rid in regions], context_length=CAPTION_CONTEXT),
            streetview_images=[[city.load_image(v) for v in views[rid]] for rid in regions],
            streetview_tokens=tokenizer([sv_texts.get(rid, "") for rid in regions], context_length=CAPTION_CONTEXT),
        )
        recipe = self.recipe()
        self.report = pretrain_towers(
            satellite, streetview, data, preprocess,
            # a pair is a region: its satellite tile and its street views (the budget counts both)
            steps=self.steps_for(len(regions), 1 + sum(len(v) for v in views.values()) / len(regions)),
            batch_size=int(recipe["batch_size"]), lr=float(recipe["lr"]),
            weight_decay=float(self.config["weight_decay"]), satellite_weight=float(self.config["satellite_weight"]),
            streetview_weight=float(self.config["streetview_weight"]), mask_padding=bool(self.config["mask_padding"]),
            seed=context.seed, device=context.device, progress=context.progress,
            description=f"pretraining {self.variant_label()} on {city.name} SV+SI")
        self.report["weights"] = self.weight_source()
        self.report["captioner"] = self.config["captioner"]
        self.satellite, self.streetview = satellite.eval(), streetview.eval()

    def encode_regions(self, city, region_ids: list[str], context: FitContext) -> np.ndarray:
        """Satellite feature + mean street-view feature per region (zero for what a region lacks)."""
        import torch

        from urbanln_bench.embed import autocast, mean_per_region, preprocess, streetviews_of

        def encode(model, image_ids: list[str]) -> np.ndarray:
            chunks = []
            for batch in city.iter_images(image_ids, ENCODE_BATCH):
                pixels = preprocess(batch.images, self.input_size, self.mean, self.std).to(context.device)
                with torch.no_grad(), autocast(context.device):
                    chunks.append(model.encode_image(pixels).float().cpu().numpy())
            return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)

        position = {rid: i for i, rid in enumerate(region_ids)}
        with_tile = [rid for rid in city.satellite_ids() if rid in position]
        satellite = encode(self.satellite, with_tile)
        width = satellite.shape[1]
        out = np.zeros((len(region_ids), width), np.float64)
        out[[position[r] for r in with_tile]] += satellite
        view_ids, owners = streetviews_of(city, region_ids, self.view_cap())
        if view_ids:
            out += mean_per_region(encode(self.streetview, view_ids), owners, len(region_ids))
        return out.astype(np.float32)

    def architecture(self):
        """Two CLIPs of the profile; the profiled encoder is one region with one street view."""
        import torch

        from urbanln_bench.backbones.clip import build_clip
        from urbanln_bench.profiling import Architecture

        satellite, _, _ = build_clip(self.clip_profile())
        streetview, _, _ = build_clip(self.clip_profile())
        total = sum(p.numel() for m in (satellite, streetview) for p in m.parameters())

        class RegionEncoder(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.satellite, self.streetview = satellite.visual, streetview.visual

            def forward(self, pixels):
                return self.satellite(pixels).float() + self.streetview(pixels).float()

        return Architecture(RegionEncoder(), total, total,
                            "two CLIPs (satellite, street view), image + text towers; images/s = regions with one "
                            "street view each")


class _RegionPairs:
    """Per region (same order everywhere): its tile, one satellite sentence, its street views and joined text."""

    def __init__(self, regions, satellite_images, satellite_tokens, streetview_images, streetview_tokens) -> None:
        self.regions = regions
        self.satellite_images = satellite_images
        self.satellite_tokens = satellite_tokens
        self.streetview_images = streetview_images
        self.streetview_tokens = streetview_tokens


def pretrain_towers(satellite, streetview, data: _RegionPairs, preprocess, *, steps: int, batch_size: int, lr: float,
                    weight_decay: float, satellite_weight: float, streetview_weight: float, mask_padding: bool,
                    seed: int, device: str, progress=None, description: str = "pretraining UrbanVLP") -> dict[str, Any]:
    """UrbanVLP's joint step: ``satellite_weight``·InfoNCE(SI) + ``streetview_weight``·FILIP(SV), one AdamW.

    The shared trainer's conventions: AdamW (0.9, 0.98, eps 1e-6; no decay on gains, biases,
    temperatures, positional tables), linear warm-up (10 %) then cosine decay, horizontal flips, full
    batches from a seeded permutation, deterministic on CPU.
    """
    import math

    import torch
    import torch.nn.functional as F
    from open_clip.loss import ClipLoss

    from urbanln_bench import training_loop as loop
    from urbanln_bench.backbones.clip import count_parameters, encode_text_trimmed, trim_tokens
    from urbanln_bench.clip_training.filip import filip_loss, pad_token_sets
    from urbanln_bench.clip_training.tokens import image_token_features, text_token_features

    started = time.perf_counter()
    device_t = torch.device(device)
    n = len(data.regions)
    batch_size = min(batch_size, n)
    has_views = [bool(v) for v in data.streetview_images]
    for model in (satellite, streetview):
        model.to(device_t).train()
        for param in model.parameters():
            param.requires_grad_(True)
    named = ([(f"satellite.{k}", p) for k, p in satellite.named_parameters()]
             + [(f"streetview.{k}", p) for k, p in streetview.named_parameters()])
    optimiser = loop.adamw(loop.parameter_groups(named, weight_decay), lr, device_t)
    schedule = loop.warmup_cosine(optimiser, steps, max(1, int(0.1 * steps)))
    contrastive = ClipLoss()
    generator = torch.Generator().manual_seed(seed)

    seen = 0

    def batch_loss(batch):
        nonlocal seen
        idx = batch.tolist()
        seen += len(idx) + sum(len(data.streetview_images[i]) for i in idx)
        satellite_pixels = loop.random_flips(loop.pixel_batch([data.satellite_images[i] for i in idx], preprocess),
                                             generator).to(device_t)
        owners = [j for j, i in enumerate(idx) for _ in data.streetview_images[i]]
        with_views = [j for j, i in enumerate(idx) if has_views[i]]
        with loop.autocast(device_t):
            v_sat = F.normalize(satellite.encode_image(satellite_pixels).float(), dim=-1)
            t_sat = F.normalize(encode_text_trimmed(satellite, trim_tokens(data.satellite_tokens[idx]).to(device_t))
                                .float(), dim=-1)
            v_sv = torch.zeros_like(v_sat)
            sv_loss = torch.zeros((), device=device_t)
            if owners:
                views = loop.random_flips(
                    loop.pixel_batch([im for i in idx for im in data.streetview_images[i]], preprocess), generator)
                pooled, view_tokens = image_token_features(streetview, views.to(device_t))
                owner_t = torch.tensor(owners, device=device_t)
                sums = torch.zeros_like(v_sat).index_add(0, owner_t, pooled.float())
                counts = torch.bincount(owner_t, minlength=len(idx)).clamp(min=1).unsqueeze(1)
                v_sv = F.normalize(sums / counts, dim=-1)  # zero rows stay zero
                if len(with_views) >= 2:
                    sets = [view_tokens[owner_t == j].reshape(-1, view_tokens.shape[-1]) for j in with_views]
                    region_tokens, image_mask = pad_token_sets(sets)
                    text = data.streetview_tokens[[idx[j] for j in with_views]]
                    text = (trim_tokens(text) if mask_padding else text).to(device_t)
                    _, text_tokens = text_token_features(streetview, text)
                    sv_loss = filip_loss(region_tokens, text_tokens, image_mask,
                                         text_mask=(text != 0) if mask_padding else None)
            sat_loss = contrastive(v_sat + v_sv, t_sat, satellite.logit_scale.exp().float())
            total = satellite_weight * sat_loss + streetview_weight * sv_loss
        return {"total": total, "satellite": sat_loss, "streetview": sv_loss}

    def clamp_temperatures():
        with torch.no_grad():
            for model in (satellite, streetview):
                model.logit_scale.clamp_(0, math.log(100))

    result = loop.optimise(optimiser, schedule, loop.shuffled_batches(n, batch_size, generator), batch_loss,
                           steps=steps, description=description, progress=progress, after_step=clamp_temperatures)
    step = result.steps
    satellite.eval()
    streetview.eval()
    counts = [count_parameters(m) for m in (satellite, streetview)]
    filling = int(((data.streetview_tokens != 0).sum(1) == data.streetview_tokens.shape[1]).sum())
    return {
        "pairs": n, "regions_with_streetview": int(sum(has_views)),
        "streetview_images": int(sum(len(v) for v in data.streetview_images)),
        "steps": step, "epochs": round(step * batch_size / n, 2), "batch_size": batch_size, "images_seen": seen,
        "context_length": int(data.streetview_tokens.shape[1]), "captions_filling_context": filling,
        "loss": {"name": "urbanvlp", "satellite": "InfoNCE(normalised SI feature + normalised mean SV feature, "
                 "one SI sentence)", "streetview": "FILIP (mean over image tokens of max over text tokens, "
                 "no logit scale)", "satellite_weight": satellite_weight, "streetview_weight": streetview_weight,
                 "mask_padding": mask_padding},
        "config": {"steps": steps, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "seed": seed,
                   "warmup_fraction": 0.1, "flip": True},
        "loss_first_last": loop.summarise_losses(result.history),
        "parameters": {"trainable": sum(c[0] for c in counts), "total": sum(c[1] for c in counts)},
        "seconds": round(time.perf_counter() - started, 1), "device": str(device_t),
    }
