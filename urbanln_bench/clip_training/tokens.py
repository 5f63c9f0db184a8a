"""Token-level features of an open_clip CLIP, for objectives that look past the pooled vectors.

CoCa's captioning decoder cross-attends to the image tower's patch tokens and reads the text tower's
per-position states; FILIP compares image and text tokens one by one. open_clip's ``CLIP`` pools
both towers inside ``encode_image`` / ``encode_text``, so these helpers run the towers and keep the
tokens too:

- ``image_tokens``: the pooled, projected image feature (what ``encode_image`` returns) and the patch
  tokens after ``ln_post`` (width of the vision transformer, before the projection);
- ``text_states``: the pooled, projected text feature (what ``encode_text_trimmed`` returns) and every
  position's state after ``ln_final`` (text width, before the projection), over only the positions
  given (the causal mask makes that equal to the padded context; IPSI-stretched tables work too);
- ``image_token_features`` / ``text_token_features``: UrbanVLP's "all tokens" (its vendored
  ``open_clip_mine``): tokens mapped through the tower's own projection into the joint space and
  L2-normalised; the image side is the pooled feature followed by the projected patch tokens.

Only ViT image towers have tokens; a ResNet CLIP gets a clear error.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from urbanln_bench.errors import UserError


def _vision_transformer(model):
    visual = model.visual
    if not hasattr(visual, "output_tokens") or not hasattr(visual, "conv1") or not hasattr(visual, "transformer"):
        raise UserError(f"token-level CLIP objectives need a ViT image tower; this CLIP has "
                        f"{type(visual).__name__}. Pick a ViT profile (smoke, cpu, paper or e.g. ViT-B-32)")
    return visual


def image_tokens(model, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled feature (B, E), patch tokens (B, P, W)) of the image tower in one pass."""
    visual = _vision_transformer(model)
    previous = visual.output_tokens
    visual.output_tokens = True  # open_clip's own switch: forward returns (pooled, tokens)
    try:
        pooled, tokens = visual(pixels)
    finally:
        visual.output_tokens = previous
    return pooled, tokens


def image_width(model) -> int:
    """Width of the vision transformer's tokens (before the projection)."""
    return int(_vision_transformer(model).conv1.out_channels)


def text_states(model, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled feature (B, E), per-position states after ``ln_final`` (B, L, W)) of the text tower.

    The pooled feature equals ``encode_text_trimmed(model, tokens)``.
    """
    from open_clip.transformer import text_global_pool

    length = tokens.shape[1]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
    mask = model.attn_mask[:length, :length] if model.attn_mask is not None else None
    states = model.ln_final(model.transformer(x, attn_mask=mask))
    pooled = text_global_pool(states, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    return _project_text(model, pooled), states


def _project_text(model, x: torch.Tensor) -> torch.Tensor:
    if model.text_projection is None:
        return x
    return model.text_projection(x) if hasattr(model.text_projection, "weight") else x @ model.text_projection


def image_token_features(model, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled feature (B, E), L2-normalised [pooled; projected patch tokens] (B, 1 + P, E))."""
    pooled, tokens = image_tokens(model, pixels)
    proj = _vision_transformer(model).proj
    projected = tokens @ proj if proj is not None else tokens
    return pooled, F.normalize(torch.cat([pooled.unsqueeze(1), projected], dim=1).float(), dim=-1)


def text_token_features(model, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled feature (B, E), L2-normalised projected states of every position (B, L, E))."""
    pooled, states = text_states(model, tokens)
    return pooled, F.normalize(_project_text(model, states).float(), dim=-1)
