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

A ResNet image tower (open_clip's ``ModifiedResNet``, CLIP's RN50 family) has tokens too: the positions of its
attention pool. CLIP's ``AttentionPool2d`` prepends the spatial mean to the h × w grid of the last stage,
runs one multi-head attention over all 1 + h·w positions and keeps the first output; the other h·w outputs are
the grid cells attended the same way, already through the pool's output projection (width = embed dim). They
are what that tower's "patch tokens" are here, for CoCa and FILIP alike (docs/methods.md#cpu-tower); ``image_width``
is then the embed dim and ``image_token_features`` does not project them again. Other towers get a clear error.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from urbanln_bench.errors import UserError


def _is_vision_transformer(visual) -> bool:
    return hasattr(visual, "output_tokens") and hasattr(visual, "conv1") and hasattr(visual, "transformer")


def _is_modified_resnet(visual) -> bool:
    return hasattr(visual, "attnpool") and hasattr(visual, "stem") and hasattr(visual, "layer4")


def _image_tower(model):
    visual = model.visual
    if not (_is_vision_transformer(visual) or _is_modified_resnet(visual)):
        raise UserError(f"token-level CLIP objectives need a ViT or a ModifiedResNet image tower; this CLIP has "
                        f"{type(visual).__name__}. Pick a harness profile (smoke, cpu, paper) or e.g. ViT-B-32 / RN50")
    return visual


def _attention_pool_tokens(pool, x: torch.Tensor) -> torch.Tensor:
    """Every position of open_clip's ``AttentionPool2d`` on the (B, C, h, w) map ``x``: (B, 1 + h·w, E);
    position 0 is what the pool returns (its ``forward`` keeps only that one)."""
    x = x.reshape(x.shape[0], x.shape[1], x.shape[2] * x.shape[3]).permute(2, 0, 1)  # NCHW -> (HW)NC
    x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)
    x = x + pool.positional_embedding[:, None, :].to(x.dtype)
    x, _ = F.multi_head_attention_forward(
        query=x, key=x, value=x, embed_dim_to_check=x.shape[-1], num_heads=pool.num_heads,
        q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight, v_proj_weight=pool.v_proj.weight,
        in_proj_weight=None, in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
        out_proj_weight=pool.c_proj.weight, out_proj_bias=pool.c_proj.bias,
        use_separate_proj_weight=True, training=pool.training, need_weights=False)
    return x.permute(1, 0, 2)


def image_tokens(model, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled feature (B, E), patch tokens (B, P, W)) of the image tower in one pass."""
    visual = _image_tower(model)
    if _is_modified_resnet(visual):
        x = visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(pixels)))))
        positions = _attention_pool_tokens(visual.attnpool, x)
        return positions[:, 0], positions[:, 1:]
    previous = visual.output_tokens
    visual.output_tokens = True  # open_clip's own switch: forward returns (pooled, tokens)
    try:
        pooled, tokens = visual(pixels)
    finally:
        visual.output_tokens = previous
    return pooled, tokens


def image_width(model) -> int:
    """Width of the image tower's tokens: the vision transformer's (before its projection), or a
    ModifiedResNet's embed dim (its pool's positions are already projected)."""
    visual = _image_tower(model)
    if _is_modified_resnet(visual):
        return int(visual.attnpool.c_proj.out_features)
    return int(visual.conv1.out_channels)


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
    visual = _image_tower(model)
    proj = None if _is_modified_resnet(visual) else visual.proj
    projected = tokens @ proj if proj is not None else tokens
    return pooled, F.normalize(torch.cat([pooled.unsqueeze(1), projected], dim=1).float(), dim=-1)


def text_token_features(model, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled feature (B, E), L2-normalised projected states of every position (B, L, E))."""
    pooled, states = text_states(model, tokens)
    return pooled, F.normalize(_project_text(model, states).float(), dim=-1)
