"""The synthetic foundation: the profile's CLIP pretrained by the harness from scratch on the
pretraining world (never on a benchmark twin) with short captions (≤ 77 tokens) written from the scene
graphs, with CLIP's symmetric InfoNCE (``training_loop``), and cached under a key of everything that
changes it (docs/identity.md). Stands in for real CLIP weights where none can be had; its label says so.
"""

from __future__ import annotations

import json
import math
import os
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from urbanln_bench import training_loop as loop
from urbanln_bench.backbones.clip import (
    ClipPreprocess,
    build_clip,
    clip_config,
    count_parameters,
    encode_text_trimmed,
    trim_tokens,
)
from urbanln_bench.cache import (
    atomic_write_text,
    cache_root,
    config_hash,
    file_lock,
    note_build,
    remove_leftovers,
)
from urbanln_bench.profiles import recipe

FOUNDATION_LABEL = "synthetic foundation"
# bump when train_foundation (its initial model, its training loop pretrain_foundation) changes what it
# produces; pinned by tests/test_training_golden.py (docs/identity.md)
TRAINER_VERSION = 1
Progress = Callable[[str, int], Callable[[int], None]]


# --------------------------------------------------------------------------------------------------
# Short captions for the foundation (captions.short_captions)


def _short_caption_function() -> tuple[Callable[[Mapping[str, Any], np.random.Generator], str], str]:
    """The pretraining world's short-caption writer (``captions.short_captions.short_caption``) and
    the version the foundation's key carries: ``CAPTIONER_VERSION`` (docs/identity.md)."""
    from urbanln_bench.captions.short_captions import short_caption
    from urbanln_bench.captions.versions import CAPTIONER_VERSION

    return short_caption, f"synthetic-short-caption-{CAPTIONER_VERSION}"


def fit_to_context(text: str, tokenizer, context_length: int) -> str:
    """Drop trailing words until the caption fits the context with its start and end tokens (≤ 77)."""
    words = text.split()
    while len(words) > 1 and len(tokenizer.encode(" ".join(words))) + 2 > context_length:
        words.pop()
    return " ".join(words)


@dataclass
class WorldPairs:
    """Pretraining-world images, one short caption each, and provenance."""

    image_ids: list[str]  # "<city>/<image id>"
    images: list[np.ndarray]
    captions: list[str]
    manifests: list[str]


def world_caption_pairs(profile: str, seed: int, context_length: int = 77) -> WorldPairs:
    """All satellite and street-view images of the pretraining world with a short caption each."""
    import open_clip

    from urbanln_bench.backbones.world_data import world_scale_for
    from urbanln_bench.data.loader import CityData
    from urbanln_bench.specs import pretraining_world
    from urbanln_bench.synth.twin import ensure_twin

    write, _ = _short_caption_function()
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=context_length)
    ids, images, captions, manifests = [], [], [], []
    for spec in pretraining_world():
        data = CityData.open(ensure_twin(spec, world_scale_for(profile)))
        manifests.append(data.manifest_hash)
        for imagery in ("SI", "SV"):
            for image_id, graph in sorted(data.scene_graphs(imagery).items()):
                uid = f"{spec.name}/{image_id}"
                rng = np.random.default_rng([seed, zlib.crc32(uid.encode())])
                ids.append(uid)
                images.append(data.load_image(image_id))
                captions.append(fit_to_context(write(graph, rng), tokenizer, context_length))
    return WorldPairs(ids, images, captions, manifests)


# --------------------------------------------------------------------------------------------------
# The synthetic foundation


@dataclass(frozen=True)
class FoundationConfig:
    profile: str
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 0.1
    warmup_fraction: float = 0.1
    holdout_fraction: float = 0.1
    seed: int = 0


FOUNDATION_RECIPES = {
    "smoke": FoundationConfig("smoke", epochs=12, batch_size=64, lr=1e-3),
    "cpu": FoundationConfig("cpu", epochs=6, batch_size=128, lr=1e-3),
    "paper": FoundationConfig("paper", epochs=20, batch_size=256, lr=5e-4, weight_decay=0.2),
}


def foundation_config(profile: str) -> FoundationConfig:
    return recipe(FOUNDATION_RECIPES, profile, "the synthetic foundation CLIP", "pass a checkpoint with --weights")


def foundation_key(config: FoundationConfig, device: str = "cpu") -> tuple[str, dict[str, Any]]:
    """Key over everything that changes the checkpoint: architecture, recipe, world data, captions, precision."""
    import open_clip

    from urbanln_bench.backbones.world_data import world_manifests
    from urbanln_bench.specs import pretraining_world

    _, captions = _short_caption_function()
    world = [{"city": spec.name, "manifest": manifest}
             for spec, manifest in zip(pretraining_world(), world_manifests(config.profile), strict=True)]
    inputs = {
        "arch": clip_config(config.profile),
        "open_clip": open_clip.__version__,
        "train": asdict(config),
        "world": world,
        "captions": captions,
        "precision": "bf16-autocast" if str(device).startswith("cuda") else "fp32",
        "trainer": TRAINER_VERSION,
    }
    return config_hash(inputs), inputs


def foundation_label(profile: str, key: str) -> str:
    return (f"{FOUNDATION_LABEL}: CLIP '{profile}' pretrained from scratch on the synthetic pretraining world "
            f"with short captions ({key})")


def foundation_path(profile: str, device: str = "cpu") -> Path:
    key, _ = foundation_key(foundation_config(profile), device)
    return cache_root() / "backbones" / f"clip-foundation-{profile}-{key}.pt"


def foundation_clip(profile: str, progress: Progress | None = None, device: str = "cpu") -> tuple[Path, str]:
    """The cached synthetic-foundation checkpoint of ``profile`` (trained on first use) and its label.

    Its JSON sidecar (same name, ``.json``) holds the recipe, timings, parameter counts and the
    held-out image→text retrieval check.
    """
    config = foundation_config(profile)
    key, inputs = foundation_key(config, device)
    path = cache_root() / "backbones" / f"clip-foundation-{profile}-{key}.pt"
    label = foundation_label(profile, key)
    if path.exists():
        return path, label
    with file_lock(path.with_suffix(".lock")):
        if not path.exists():
            started = time.perf_counter()
            for target in (path, path.with_suffix(".json")):  # a killed run's temporary files
                remove_leftovers(target)
            train_foundation(config, path, progress=progress, device=device,
                             provenance={"key": key, "source": label, **inputs})
            note_build("foundation", path.name, started)
    return path, label


def encode_world(model, images: list[np.ndarray], tokens, preprocess: ClipPreprocess, device,
                 batch_size: int = 256):
    """L2-normalised image and text features (float32, on CPU), in eval mode without gradients."""
    import torch
    import torch.nn.functional as F

    model.eval()
    image_features, text_features = [], []
    with torch.no_grad(), loop.autocast(device):
        for start in range(0, len(images), batch_size):
            pixels = loop.pixel_batch(images[start:start + batch_size], preprocess).to(device)
            image_features.append(F.normalize(model.encode_image(pixels).float(), dim=-1).cpu())
        for start in range(0, len(tokens), batch_size):
            batch = tokens[start:start + batch_size].to(device)
            text_features.append(F.normalize(encode_text_trimmed(model, batch).float(), dim=-1).cpu())
    return torch.cat(image_features), torch.cat(text_features)


def image_to_text_recall(model, images: list[np.ndarray], captions: list[str], tokenizer,
                         preprocess: ClipPreprocess, device="cpu", ks: tuple[int, ...] = (1, 5)) -> dict[str, Any]:
    """Image→text R@k over the distinct captions of ``images`` (identical captions count as one text).

    Chance is k / (number of distinct captions).
    """
    import torch

    device = torch.device(device)
    texts = sorted(set(captions))
    position = {t: i for i, t in enumerate(texts)}
    truth = torch.tensor([position[c] for c in captions])
    tokens = trim_tokens(tokenizer(texts))
    image_features, text_features = encode_world(model, images, tokens, preprocess, device)
    similarity = image_features @ text_features.T
    rank = (similarity > similarity.gather(1, truth[:, None])).sum(1)
    out: dict[str, Any] = {"n_images": len(images), "n_texts": len(texts)}
    for k in ks:
        out[f"R@{k}"] = round(float((rank < k).float().mean()), 4)
        out[f"chance_R@{k}"] = round(min(1.0, k / len(texts)), 4)
    return out


def initial_foundation_model(config: FoundationConfig):
    """``config.profile``'s CLIP, randomly initialised from ``config.seed`` (the caller's global RNG stays
    untouched), its tokenizer and preprocessing: where :func:`train_foundation` starts."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return build_clip(config.profile)


def pretrain_foundation(model, images: Sequence[np.ndarray], tokens, preprocess: ClipPreprocess,
                        config: FoundationConfig, *, device="cpu", progress: Progress | None = None) -> loop.LoopResult:
    """The foundation's training loop, on ``images`` and their caption ``tokens`` (one row each): trains
    ``model`` in place for ``config.epochs`` epochs and returns the per-step losses.

    CLIP's recipe, small: symmetric InfoNCE (open_clip ``ClipLoss``) with a learned temperature clamped
    to ≤ 100, AdamW (no decay on gains/biases), linear warm-up then cosine decay, horizontal flips, the
    last smaller batch kept; every draw from ``config.seed``, so it is deterministic on CPU.
    """
    import torch
    from open_clip.loss import ClipLoss

    device_t = torch.device(device)
    steps_per_epoch = math.ceil(len(images) / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model.to(device_t).train()
        optimiser = loop.adamw(loop.parameter_groups(list(model.named_parameters()), config.weight_decay,
                                                     decay_positional=True), config.lr, device_t)
        schedule = loop.warmup_cosine(optimiser, total_steps, max(1, int(config.warmup_fraction * total_steps)))
        loss_fn = ClipLoss()
        generator = torch.Generator().manual_seed(config.seed)

        def batch_loss(idx):
            pixels = loop.random_flips(loop.pixel_batch([images[i] for i in idx.tolist()], preprocess),
                                       generator).to(device_t)
            text = trim_tokens(tokens[idx]).to(device_t)
            with loop.autocast(device_t):
                image_features = torch.nn.functional.normalize(model.encode_image(pixels).float(), dim=-1)
                text_features = torch.nn.functional.normalize(encode_text_trimmed(model, text).float(), dim=-1)
            return {"total": loss_fn(image_features, text_features, model.logit_scale.exp().float())}

        def clamp_temperature():
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))

        return loop.optimise(
            optimiser, schedule,
            loop.shuffled_batches(len(images), config.batch_size, generator, epochs=config.epochs, drop_last=False),
            batch_loss, steps=total_steps, after_step=clamp_temperature, progress=progress,
            description=f"pretraining the CLIP '{config.profile}' synthetic foundation")


def train_foundation(config: FoundationConfig, path: Path, progress: Progress | None = None,
                     device: str = "cpu", provenance: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Pretrain ``config.profile``'s CLIP from scratch on the pretraining world and write it atomically.

    :func:`pretrain_foundation` from :func:`initial_foundation_model` on the world's training images
    (CLIP's recipe, small; a fixed seed makes it deterministic on CPU). A held-out slice of the world's
    images measures image→text retrieval.
    """
    import torch

    started = time.perf_counter()
    device_t = torch.device(device)
    model, tokenizer, preprocess = initial_foundation_model(config)
    pairs = world_caption_pairs(config.profile, config.seed, preprocess.context_length)
    n = len(pairs.images)
    order = np.random.default_rng(config.seed).permutation(n)
    n_holdout = max(16, int(round(config.holdout_fraction * n)))
    holdout, train = sorted(order[:n_holdout].tolist()), sorted(order[n_holdout:].tolist())
    train_images = [pairs.images[i] for i in train]
    tokens = trim_tokens(tokenizer([pairs.captions[i] for i in train]))
    loaded = time.perf_counter()

    result = pretrain_foundation(model, train_images, tokens, preprocess, config, device=device_t, progress=progress)
    losses = result.epoch_means()
    trained = time.perf_counter()

    held = [pairs.images[i] for i in holdout]
    retrieval = image_to_text_recall(model, held, [pairs.captions[i] for i in holdout], tokenizer, preprocess, device_t)
    seen = sorted(order[n_holdout:2 * n_holdout].tolist())  # a training slice of the same size, for contrast
    retrieval_train = image_to_text_recall(model, [pairs.images[i] for i in seen], [pairs.captions[i] for i in seen],
                                           tokenizer, preprocess, device_t)
    trainable, total = count_parameters(model)
    report = {
        **(provenance or {}),
        "profile": config.profile,
        "device": str(device_t),
        "n_images": n, "n_train": len(train), "n_holdout": len(holdout),
        "caption_tokens_max": int(tokens.shape[1]),
        "example_captions": [pairs.captions[i] for i in holdout[:3]],
        "epoch_mean_loss": losses,
        "retrieval_holdout_image_to_text": retrieval,
        "retrieval_train_slice_image_to_text": retrieval_train,
        "parameters": {"trainable": trainable, "total": total},
        "seconds": {"load": round(loaded - started, 1), "train": round(trained - loaded, 1),
                    "total": round(time.perf_counter() - started, 1)},
        "world_manifests": pairs.manifests,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path.with_suffix(".json"), json.dumps(report, indent=1, sort_keys=True, default=str) + "\n")
    tmp = path.with_suffix(".pt.tmp")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "profile": config.profile, "key": report.get("key", "")}, tmp)
    os.replace(tmp, path)
    return report


def foundation_report(profile: str, device: str = "cpu") -> dict[str, Any] | None:
    """The sidecar of the cached foundation (None when it is not trained yet)."""
    sidecar = foundation_path(profile, device).with_suffix(".json")
    return json.loads(sidecar.read_text()) if sidecar.exists() else None
