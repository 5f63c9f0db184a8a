"""CLIP architectures as data (docs/architecture.md#core-concepts; open_clip's factory and model configs).

``clip_configs/{paper,cpu,smoke}.json`` are open_clip model configs (``paper`` is open_clip's
``ViT-B-16`` exactly); a plain open_clip model name (e.g. ``ViT-B-32``, the architecture of a
RemoteCLIP checkpoint) works too. Weights are a separate, explicit choice (``clip_weights``); the
harness's own from-scratch CLIP is ``foundation``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from urbanln_bench.errors import UserError
from urbanln_bench.registry import suggest

CONFIG_DIR = Path(__file__).with_name("clip_configs")
_CLIP_FIELDS = {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "init_logit_scale", "init_logit_bias"}


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


def trim_tokens(tokens):
    """Drop all-padding columns (see ``encode_text_trimmed``)."""
    used = int((tokens != 0).sum(1).max())
    return tokens[:, :max(used, 1)]
