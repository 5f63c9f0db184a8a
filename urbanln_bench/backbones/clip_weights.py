"""Where a CLIP's weights come from, explicitly (docs/architecture.md#core-concepts):

1. ``weights = PATH``: a local open_clip-format checkpoint (a state dict, possibly wrapped in
   ``{"state_dict": ...}`` with DDP ``module.`` prefixes; RemoteCLIP checkpoints are plain state dicts;
   an OpenAI state dict's scalar ``input_resolution`` / ``context_length`` / ``vocab_size`` entries are
   dropped; a Long-CLIP checkpoint's two 248-row position tables become one and the text context
   follows), or a folder holding ``open_clip_model.safetensors`` / ``open_clip_pytorch_model.bin``;
2. ``weights = "hf-hub:ORG/NAME"`` or an open_clip pretrained tag (``openai``): the offline Hugging Face
   cache only, never a download; with no ``weights``, the profile's known hub checkpoints (``paper``:
   open_clip's ViT-B-16 tags, OpenAI's first) are used when one is already cached;
3. else the **synthetic foundation** (``foundation``), trained on first use.

The returned label names the source; every result records it.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from urbanln_bench.backbones.checkpoints import needs_more_than_tensors, refused_pickle
from urbanln_bench.backbones.clip import build_clip, clip_config
from urbanln_bench.backbones.foundation import (
    foundation_clip,
    foundation_config,
    foundation_key,
    foundation_label,
)
from urbanln_bench.errors import UserError

HF_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
# Scalars OpenAI's CLIP state dicts carry beside the weights (their clip.build_model deletes them too).
OPENAI_SCALARS = ("input_resolution", "context_length", "vocab_size")
LONGCLIP_KEEP = 20  # Long-CLIP's rows read from positional_embedding (mask1); the rest from positional_embedding_res
Progress = Callable[[str, int], Callable[[int], None]]


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
    except pickle.UnpicklingError as exc:
        if not needs_more_than_tensors(exc):
            raise UserError(f"{path}: not a loadable CLIP checkpoint ({str(exc)[:200]}); expected an open_clip "
                            "state dict saved with torch.save or safetensors") from None
        raise UserError(refused_pickle(path, exc)) from None
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
    state = {k: v for k, v in state.items() if not (k in OPENAI_SCALARS and v.ndim == 0)}
    return merge_longclip_positions(state, path)


def merge_longclip_positions(state: dict[str, Any], origin: Any = "") -> dict[str, Any]:
    """One position table from a Long-CLIP checkpoint's two.

    Long-CLIP (``model_longclip.CLIP.encode_text``) adds ``positional_embedding · mask1`` (rows below 20,
    frozen) and ``positional_embedding_res · mask2`` (rows 20 and up); open_clip has one table, so rows
    below 20 come from the first and the rest from the second. Any other checkpoint passes unchanged.
    """
    res = state.pop("positional_embedding_res", None)
    if res is None:
        return state
    pe = state.get("positional_embedding")
    if pe is None or pe.shape != res.shape or pe.ndim != 2:
        raise UserError(f"{origin}: positional_embedding_res {tuple(res.shape)} (a Long-CLIP checkpoint) needs a "
                        f"positional_embedding of the same shape, got {None if pe is None else tuple(pe.shape)}")
    merged = res.clone()
    merged[:LONGCLIP_KEEP] = pe[:LONGCLIP_KEEP]
    state["positional_embedding"] = merged
    return state


def resize_text_context(model, length: int) -> None:
    """Give an open_clip CLIP ``length`` text positions (for a checkpoint stretched past 77, e.g. Long-CLIP's 248).

    The model is marked ``ipsi_stretched``: UrbanLN's IPSI keeps such a table instead of stretching it again.
    """
    import torch

    from urbanln_bench.clip_training.ipsi import build_causal_mask

    old = model.positional_embedding
    model.positional_embedding = torch.nn.Parameter(old.new_zeros(length, old.shape[1]))
    model.register_buffer("attn_mask", build_causal_mask(length).to(old.device), persistent=False)
    model.context_length = length
    model.ipsi_stretched = True


def _key_mismatches(model, state: Mapping[str, Any]) -> str:
    """The keys that do not fit: different shapes, missing from the file, not in the model."""
    own = model.state_dict()
    shapes = [f"{k} (file {tuple(v.shape)}, model {tuple(own[k].shape)})" for k, v in state.items()
              if k in own and tuple(v.shape) != tuple(own[k].shape)]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    parts = []
    for what, keys in (("shape differs", shapes), ("missing from the file", missing), ("not in the model", unexpected)):
        if keys:
            more = f" … and {len(keys) - 4} more" if len(keys) > 4 else ""
            parts.append(f"{what} ({len(keys)}): {'; '.join(keys[:4])}{more}")
    return "; ".join(parts)


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
        depths = [len({k.split(".")[2] for k in state if k.startswith(f"visual.layer{i}.")}) for i in range(1, 5)]
        stem, pool = state.get("visual.conv1.weight"), state.get("visual.attnpool.positional_embedding")
        width = f", width {stem.shape[0] * 2}" if stem is not None and stem.ndim == 4 else ""
        image = f" image {int(round(math.sqrt(pool.shape[0] - 1))) * 32}" if pool is not None else ""
        parts.append(f"ModifiedResNet{image}, layers {depths}{width}")
    if "text_projection" in state:
        parts.append(f"embed_dim {state['text_projection'].shape[-1]}")
    if "positional_embedding" in state:
        parts.append(f"context {state['positional_embedding'].shape[0]}")
    return ", ".join(parts) or "not a recognisable CLIP"


def load_clip_state(model, state: Mapping[str, Any], origin: str, profile: str) -> None:
    """Load ``state`` strictly; a mismatch says what the file is and what the profile expects."""
    expected = describe_state_dict(model.state_dict())
    mismatches = _key_mismatches(model, state)
    if mismatches:
        raise UserError(f"{origin}: weights do not fit the '{profile}' CLIP ({expected}); the file holds "
                        f"{describe_state_dict(state)}. Mismatching keys: {mismatches}. Pick the profile of the "
                        "checkpoint's architecture (e.g. ViT-B-32 for RemoteCLIP-ViT-B-32)")
    model.load_state_dict(dict(state), strict=True)


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
    key, _ = foundation_key(foundation_config(profile), device)
    return foundation_label(profile, key)


def load_clip(profile: str, weights: str = "", progress: Progress | None = None, device: str = "cpu"):
    """(model in eval mode on ``device``, tokenizer, ClipPreprocess, weight-source label)."""
    resolved = resolve_clip_weights(profile, weights, progress=progress, device=device)
    model, tokenizer, preprocess = build_clip(profile, quick_gelu=resolved.quick_gelu)
    positions = resolved.state_dict.get("positional_embedding")
    own = model.positional_embedding
    if positions is not None and positions.ndim == 2 and positions.shape[1] == own.shape[1] \
            and positions.shape[0] > own.shape[0]:  # stretched past 77 (Long-CLIP, an IPSI fine-tune)
        import dataclasses

        import open_clip

        resize_text_context(model, positions.shape[0])
        tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=positions.shape[0])
        preprocess = dataclasses.replace(preprocess, context_length=positions.shape[0])
    load_clip_state(model, resolved.state_dict, resolved.path or resolved.source, profile)
    return model.to(device).eval(), tokenizer, preprocess, resolved.source
