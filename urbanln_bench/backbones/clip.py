"""CLIP backbones (open_clip) with an explicit weight source (docs/architecture.md#core-concepts, STYLE: open_clip).

Architectures are data: ``clip_configs/{paper,cpu,tiny}.json`` are open_clip model configs
(``paper`` is open_clip's ``ViT-B-16`` exactly); a plain open_clip model name (e.g. ``ViT-B-32``, the
architecture of a RemoteCLIP checkpoint) works too. Weights are a separate, explicit choice:

1. ``weights = PATH``: a local open_clip-format checkpoint (a state dict, possibly wrapped in
   ``{"state_dict": ...}`` with DDP ``module.`` prefixes; RemoteCLIP checkpoints are plain state dicts),
   or a folder holding ``open_clip_model.safetensors`` / ``open_clip_pytorch_model.bin``;
2. ``weights = "hf-hub:ORG/NAME"`` or an open_clip pretrained tag (``openai``): the offline Hugging Face
   cache only, never a download; with no ``weights``, the profile's known hub checkpoints (``paper``:
   open_clip's ViT-B-16 tags, OpenAI's first) are used when one is already cached;
3. else the **synthetic foundation**: the profile's CLIP pretrained by the harness from scratch on the
   pretraining world (never on a benchmark twin) with short captions (≤ 77 tokens) written from the
   scene graphs, with CLIP's symmetric InfoNCE, and cached under a key of everything that changes it.

The returned label names the source; every result records it.
"""

from __future__ import annotations

import json
import math
import os
import time
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from urbanln_bench import training_loop as loop
from urbanln_bench.cache import atomic_write_text, cache_root, config_hash, file_lock
from urbanln_bench.errors import UserError
from urbanln_bench.registry import suggest

CONFIG_DIR = Path(__file__).with_name("clip_configs")
FOUNDATION_LABEL = "synthetic foundation"
TRAINER_VERSION = 1  # bump when train_foundation changes what it produces
HF_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_CLIP_FIELDS = {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "init_logit_scale", "init_logit_bias"}

Progress = Callable[[str, int], Callable[[int], None]]


# --------------------------------------------------------------------------------------------------
# Architectures


@dataclass(frozen=True)
class ClipPreprocess:
    """What the harness must do to pixels and text before this CLIP sees them."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    context_length: int


def clip_profiles() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def clip_config(profile: str) -> dict[str, Any]:
    """The architecture of ``profile``: our JSON file, else open_clip's config of that model name."""
    path = CONFIG_DIR / f"{profile}.json"
    if path.is_file():
        return json.loads(path.read_text())
    import open_clip

    config = open_clip.get_model_config(profile)
    if config is None:
        known = clip_profiles()
        raise UserError(f"unknown CLIP profile '{profile}'{suggest(profile, known)}; known profiles: "
                        f"{', '.join(known)} (or an open_clip model name such as ViT-B-32)")
    extra = set(config) - _CLIP_FIELDS
    if extra or "timm_model_name" in config.get("vision_cfg", {}) or "hf_model_name" in config.get("text_cfg", {}):
        raise UserError(f"open_clip model '{profile}' is not a plain CLIP architecture (it has {sorted(extra)} or "
                        "a timm / Hugging Face tower); use one of the harness profiles or a plain ViT/ResNet CLIP")
    import open_clip.constants as constants

    return {**config, "urbanln": {"open_clip_name": profile, "mean": list(constants.OPENAI_DATASET_MEAN),
                                  "std": list(constants.OPENAI_DATASET_STD)}}


def build_clip(profile: str, quick_gelu: bool | None = None):
    """A randomly initialised CLIP of ``profile`` (no weights are ever fetched), its tokenizer and preprocessing.

    Built with ``open_clip.model.CLIP(**config)`` — what ``open_clip.create_model`` does for the same JSON.
    ``quick_gelu`` overrides the config (OpenAI's checkpoints were trained with QuickGELU).
    """
    import open_clip
    from open_clip.model import CLIP

    config = clip_config(profile)
    meta = config.get("urbanln", {})
    arch = {k: v for k, v in config.items() if k != "urbanln"}
    if quick_gelu is not None:
        arch["quick_gelu"] = quick_gelu
    model = CLIP(**arch)
    context = int(arch["text_cfg"].get("context_length", 77))
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=context)
    image_size = arch["vision_cfg"]["image_size"]
    preprocess = ClipPreprocess(
        image_size=int(image_size if isinstance(image_size, int) else image_size[0]),
        mean=tuple(meta.get("mean", open_clip.constants.OPENAI_DATASET_MEAN)),
        std=tuple(meta.get("std", open_clip.constants.OPENAI_DATASET_STD)),
        context_length=context,
    )
    return model, tokenizer, preprocess


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def encode_text_trimmed(model, tokens):
    """``model.encode_text`` over only the first ``tokens.shape[1]`` positions.

    Equal to encoding the 77-token padded input: the text mask is causal, so padding after the
    end-of-text token never reaches the pooled (end-of-text) position. Short captions then cost their
    length, not 77 — most of the text tower's time in the foundation pretraining.
    """
    from open_clip.transformer import text_global_pool

    length = tokens.shape[1]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
    mask = model.attn_mask[:length, :length] if model.attn_mask is not None else None
    x = model.ln_final(model.transformer(x, attn_mask=mask))
    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    if model.text_projection is not None:
        x = model.text_projection(x) if hasattr(model.text_projection, "weight") else x @ model.text_projection
    return x


# --------------------------------------------------------------------------------------------------
# Weights from the user: a local file or the offline Hugging Face cache


@dataclass
class ClipWeights:
    """A resolved weight source: the label every result carries, and the state dict to load."""

    source: str
    state_dict: dict[str, Any]
    path: Path | None = None
    quick_gelu: bool | None = None


def _is_torchscript_archive(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in archive.namelist())


def read_clip_checkpoint(path: Path) -> dict[str, Any]:
    """The state dict in an open_clip-format checkpoint, unwrapped and without DDP ``module.`` prefixes."""
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"CLIP weights file not found: {path}")
    if _is_torchscript_archive(path):
        raise UserError(f"{path}: a TorchScript (JIT) archive, not a state dict — e.g. OpenAI's original "
                        "RN50.pt / ViT-B-16.pt (RemoteCLIP issue #8: 'Expected state_dict to be dict-like'). "
                        "Pass an open_clip-format checkpoint (e.g. RemoteCLIP-ViT-B-32.pt, or the hub's "
                        "open_clip_model.safetensors)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch / safetensors raise many types for a bad file
        raise UserError(f"{path}: not a loadable CLIP checkpoint ({type(exc).__name__}: {str(exc)[:200]}); "
                        "expected an open_clip state dict saved with torch.save or safetensors") from exc
    while isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: expected a state dict (a dict of tensors, optionally under 'state_dict'), got "
                        f"{type(state).__name__} — is this a full pickled model or a JIT archive?")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def describe_state_dict(state: Mapping[str, Any]) -> str:
    """A short architecture signature of a CLIP state dict, for errors that say what a file really is."""
    parts = []
    conv = state.get("visual.conv1.weight")
    if conv is not None and conv.ndim == 4 and "visual.positional_embedding" in state:
        grid = int(round(math.sqrt(state["visual.positional_embedding"].shape[0] - 1)))
        layers = len({k.split(".")[3] for k in state if k.startswith("visual.transformer.resblocks.")})
        patch = conv.shape[-1]
        parts.append(f"ViT image {grid * patch}, patch {patch}, width {conv.shape[0]}, {layers} layers")
    elif any(k.startswith("visual.layer1.") for k in state):
        parts.append("ModifiedResNet image tower")
    if "text_projection" in state:
        parts.append(f"embed_dim {state['text_projection'].shape[-1]}")
    if "positional_embedding" in state:
        parts.append(f"context {state['positional_embedding'].shape[0]}")
    return ", ".join(parts) or "not a recognisable CLIP"


def load_clip_state(model, state: Mapping[str, Any], origin: str, profile: str) -> None:
    """Load ``state`` strictly; a mismatch says what the file is and what the profile expects."""
    expected = describe_state_dict(model.state_dict())
    try:
        missing, unexpected = model.load_state_dict(dict(state), strict=False)
    except RuntimeError as exc:
        raise UserError(f"{origin}: weights do not fit the '{profile}' CLIP ({expected}); the file holds "
                        f"{describe_state_dict(state)}. Pick the profile of the checkpoint's architecture "
                        f"(e.g. ViT-B-32 for RemoteCLIP-ViT-B-32). Detail: {str(exc).splitlines()[-1][:200]}"
                        ) from None
    if missing or unexpected:
        raise UserError(f"{origin}: weights do not fit the '{profile}' CLIP ({expected}): missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]}; the file holds {describe_state_dict(state)}")


def hf_cached_file(repo_id: str, filename: str) -> Path | None:
    """``filename`` of ``repo_id`` in the local Hugging Face cache, or None. Never downloads."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=os.environ.get("HF_HUB_CACHE") or None)
    return Path(found) if isinstance(found, str) else None


@dataclass(frozen=True)
class HubCandidate:
    repo_id: str
    quick_gelu: bool | None = None


def hub_candidates(profile: str) -> list[HubCandidate]:
    """Known hub checkpoints of the profile's architecture: open_clip's pretrained tags of the same model."""
    import open_clip

    name = clip_config(profile).get("urbanln", {}).get("open_clip_name")
    if not name:
        return []
    out = []
    for tag in open_clip.list_pretrained_tags_by_model(name):
        cfg = open_clip.get_pretrained_cfg(name, tag)
        if cfg.get("hf_hub"):
            out.append(HubCandidate(cfg["hf_hub"].strip("/"), cfg.get("quick_gelu")))
    return out


def _hub_weights(candidate: HubCandidate) -> ClipWeights | None:
    for filename in HF_WEIGHT_FILES:
        path = hf_cached_file(candidate.repo_id, filename)
        if path is None:
            continue
        quick_gelu = candidate.quick_gelu
        config_file = hf_cached_file(candidate.repo_id, "open_clip_config.json")
        if config_file is not None:
            model_cfg = json.loads(config_file.read_text()).get("model_cfg", {})
            quick_gelu = model_cfg.get("quick_gelu", quick_gelu)
        revision = path.parent.name[:12]
        return ClipWeights(f"hf-hub cache: {candidate.repo_id}@{revision} ({filename})",
                           read_clip_checkpoint(path), path, quick_gelu)
    return None


def _weights_from_folder(folder: Path) -> ClipWeights:
    for filename in HF_WEIGHT_FILES:
        if (folder / filename).is_file():
            return _local_weights(folder / filename)
    raise UserError(f"{folder}: a folder, but it holds none of {', '.join(HF_WEIGHT_FILES)}; pass the checkpoint file")


def _local_weights(path: Path) -> ClipWeights:
    from urbanln_bench.backbones.resnet import file_digest

    state = read_clip_checkpoint(path)  # first: a missing or bad file gets its own clear error
    quick_gelu = None
    sibling = path.parent / "open_clip_config.json"  # a copied hub snapshot says whether it needs QuickGELU
    if sibling.is_file():
        quick_gelu = json.loads(sibling.read_text()).get("model_cfg", {}).get("quick_gelu")
    return ClipWeights(f"local checkpoint: {path.name} (sha256 {file_digest(path)})", state, path, quick_gelu)


def resolve_clip_weights(profile: str, weights: str = "", progress: Progress | None = None,
                         device: str = "cpu") -> ClipWeights:
    """The weight source for ``profile``: explicit file / hub entry, else a cached hub checkpoint, else the
    synthetic foundation (trained on first use). ``weights="foundation"`` asks for the foundation."""
    clip_config(profile)  # unknown profile → a clear error before anything else
    weights = weights.strip()
    if weights and weights != "foundation":
        tags = {}
        name = clip_config(profile).get("urbanln", {}).get("open_clip_name")
        if name:
            import open_clip

            tags = {tag: open_clip.get_pretrained_cfg(name, tag) for tag in open_clip.list_pretrained_tags_by_model(name)}
        if weights.startswith("hf-hub:") or weights in tags:
            if weights in tags:
                if not tags[weights].get("hf_hub"):
                    raise UserError(f"open_clip tag '{weights}' of {name} has no Hugging Face hub copy; download it "
                                    "elsewhere and pass the file")
                candidate = HubCandidate(tags[weights]["hf_hub"].strip("/"), tags[weights].get("quick_gelu"))
            else:
                candidate = HubCandidate(weights[len("hf-hub:"):].strip("/"))
            found = _hub_weights(candidate)
            if found is None:
                raise UserError(f"'{weights}': {candidate.repo_id} is not in the offline Hugging Face cache "
                                f"({os.environ.get('HF_HUB_CACHE') or '~/.cache/huggingface/hub'}); nothing is "
                                f"downloaded here. Fetch it on a connected machine (`huggingface-cli download "
                                f"{candidate.repo_id}`) and copy the cache, or pass a local checkpoint file")
            return found
        path = Path(weights).expanduser()
        if path.is_dir():
            return _weights_from_folder(path)
        return _local_weights(path)
    if not weights:
        for candidate in hub_candidates(profile):
            found = _hub_weights(candidate)
            if found is not None:
                return found
    path, label = foundation_clip(profile, progress=progress, device=device)
    return ClipWeights(label, read_clip_checkpoint(path), path)


def weight_source_label(profile: str, weights: str = "", device: str = "cpu") -> str:
    """The label ``resolve_clip_weights`` would give, without training the foundation when it is not cached.

    Cache keys and records need the weight source before anything is fitted.
    """
    weights = weights.strip()
    if weights and weights != "foundation":
        return resolve_clip_weights(profile, weights, device=device).source
    if not weights:
        for candidate in hub_candidates(profile):
            found = _hub_weights(candidate)
            if found is not None:
                return found.source
    key, _ = foundation_key(_foundation_config(profile), device)
    return foundation_label(profile, key)


def load_clip(profile: str, weights: str = "", progress: Progress | None = None, device: str = "cpu"):
    """(model in eval mode on ``device``, tokenizer, ClipPreprocess, weight-source label)."""
    resolved = resolve_clip_weights(profile, weights, progress=progress, device=device)
    model, tokenizer, preprocess = build_clip(profile, quick_gelu=resolved.quick_gelu)
    load_clip_state(model, resolved.state_dict, resolved.path or resolved.source, profile)
    return model.to(device).eval(), tokenizer, preprocess, resolved.source


# --------------------------------------------------------------------------------------------------
# Short captions for the foundation (the colleague's synthetic captioners when present)


_NUMBER_WORDS = ["no", "a", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _fallback_short_caption(graph: Mapping[str, Any]) -> str:
    """A one-sentence caption from a scene graph: the largest object kinds with counts and attributes.

    Stand-in for ``urbanln_bench.captions.captioners.short_caption`` while that does not exist; like
    alt-text, it names what covers most of the image first.
    """
    area: Counter[str] = Counter()
    count: Counter[str] = Counter()
    attributes: dict[str, Counter[str]] = {}
    for obj in graph.get("objects", []):
        name = str(obj["name"])
        x0, y0, x1, y1 = obj.get("bbox", (0, 0, 1, 1))
        area[name] += max(1, (x1 - x0) * (y1 - y0))
        count[name] += int(obj.get("count", 1))
        attributes.setdefault(name, Counter()).update(str(a) for a in obj.get("attributes", []))
    phrases = []
    for name, _ in sorted(area.items(), key=lambda item: (-item[1], item[0]))[:6]:
        n = count[name]
        words = [a for a, _ in sorted(attributes[name].items(), key=lambda item: (-item[1], item[0]))[:2]]
        noun = name if n == 1 else (name + "es" if name.endswith(("s", "sh", "ch")) else name + "s")
        phrases.append(" ".join([_NUMBER_WORDS[n] if n < len(_NUMBER_WORDS) else "many", *words, noun]))
    view = "a satellite image" if graph.get("kind") == "satellite" else "a street view"
    if not phrases:
        return f"{view} of an urban area."
    listed = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return f"{view} with {listed}."


def _short_caption_function() -> tuple[Callable[[Mapping[str, Any], np.random.Generator], str], str]:
    """The short-caption writer and a version string for cache keys.

    The synthetic captioners' ``short_caption`` (exported by ``captions.captioners``, defined in
    ``captions.synthetic_captioner``) when present, else ``_fallback_short_caption``. The version is
    the captioners' ``CAPTIONER_VERSION`` (docs/identity.md), never the module's source or path.
    """
    import importlib

    function = None
    for module_name in ("urbanln_bench.captions.captioners", "urbanln_bench.captions.synthetic_captioner"):
        try:
            function = getattr(importlib.import_module(module_name), "short_caption", None)
        except ImportError:
            continue
        if function is not None:
            break
    if function is None:
        return (lambda graph, rng: _fallback_short_caption(graph)), "fallback-short-caption-1"
    from urbanln_bench.captions.versions import CAPTIONER_VERSION

    return function, f"synthetic-short-caption-{CAPTIONER_VERSION}"


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


FOUNDATION_PROFILES = {
    "tiny": FoundationConfig("tiny", epochs=12, batch_size=64, lr=1e-3),
    "cpu": FoundationConfig("cpu", epochs=6, batch_size=128, lr=1e-3),
    "paper": FoundationConfig("paper", epochs=20, batch_size=256, lr=5e-4, weight_decay=0.2),
}


def _foundation_config(profile: str) -> FoundationConfig:
    try:
        return FOUNDATION_PROFILES[profile]
    except KeyError:
        raise UserError(f"no synthetic-foundation recipe for CLIP '{profile}' (only {', '.join(FOUNDATION_PROFILES)}); "
                        "pass a checkpoint with --weights") from None


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
    key, _ = foundation_key(_foundation_config(profile), device)
    return cache_root() / "backbones" / f"clip-foundation-{profile}-{key}.pt"


def foundation_clip(profile: str, progress: Progress | None = None, device: str = "cpu") -> tuple[Path, str]:
    """The cached synthetic-foundation checkpoint of ``profile`` (trained on first use) and its label.

    Its JSON sidecar (same name, ``.json``) holds the recipe, timings, parameter counts and the
    held-out image→text retrieval check.
    """
    config = _foundation_config(profile)
    key, inputs = foundation_key(config, device)
    path = cache_root() / "backbones" / f"clip-foundation-{profile}-{key}.pt"
    label = foundation_label(profile, key)
    if path.exists():
        return path, label
    with file_lock(path.with_suffix(".lock")):
        if not path.exists():
            train_foundation(config, path, progress=progress, device=device,
                             provenance={"key": key, "source": label, **inputs})
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


def trim_tokens(tokens):
    """Drop all-padding columns (see ``encode_text_trimmed``)."""
    used = int((tokens != 0).sum(1).max())
    return tokens[:, :max(used, 1)]


def train_foundation(config: FoundationConfig, path: Path, progress: Progress | None = None,
                     device: str = "cpu", provenance: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Pretrain ``config.profile``'s CLIP from scratch on the pretraining world and write it atomically.

    CLIP's recipe, small: symmetric InfoNCE (open_clip ``ClipLoss``) with a learned temperature, AdamW
    (no decay on gains/biases), linear warm-up then cosine decay, horizontal flips; a fixed seed makes
    it deterministic on CPU. A held-out slice of the world's images measures image→text retrieval.
    """
    import torch
    from open_clip.loss import ClipLoss

    started = time.perf_counter()
    device_t = torch.device(device)
    with torch.random.fork_rng(devices=[]):  # the caller's global RNG stays untouched
        torch.manual_seed(config.seed)
        model, tokenizer, preprocess = build_clip(config.profile)
    pairs = world_caption_pairs(config.profile, config.seed, preprocess.context_length)
    n = len(pairs.images)
    order = np.random.default_rng(config.seed).permutation(n)
    n_holdout = max(16, int(round(config.holdout_fraction * n)))
    holdout, train = sorted(order[:n_holdout].tolist()), sorted(order[n_holdout:].tolist())
    train_images = [pairs.images[i] for i in train]
    tokens = trim_tokens(tokenizer([pairs.captions[i] for i in train]))
    loaded = time.perf_counter()

    steps_per_epoch = math.ceil(len(train) / config.batch_size)
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
            pixels = loop.random_flips(loop.pixel_batch([train_images[i] for i in idx.tolist()], preprocess),
                                       generator).to(device_t)
            text = trim_tokens(tokens[idx]).to(device_t)
            with loop.autocast(device_t):
                image_features = torch.nn.functional.normalize(model.encode_image(pixels).float(), dim=-1)
                text_features = torch.nn.functional.normalize(encode_text_trimmed(model, text).float(), dim=-1)
            return {"total": loss_fn(image_features, text_features, model.logit_scale.exp().float())}

        def clamp_temperature():
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))

        result = loop.optimise(
            optimiser, schedule,
            loop.shuffled_batches(len(train), config.batch_size, generator, epochs=config.epochs, drop_last=False),
            batch_loss, steps=total_steps, after_step=clamp_temperature, progress=progress,
            description=f"pretraining the CLIP '{config.profile}' synthetic foundation")
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
