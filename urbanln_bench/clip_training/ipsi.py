"""IPSI: interpolated positional-embedding stretching (UrbanLN Eq. 2, after Long-CLIP).

CLIP's text encoder has L = 77 positions. UrbanLN keeps the first ``keep`` = 20 rows (well trained,
they carry most short-caption signal) and stretches the rest by ``ratio`` λ = 4 with linear
interpolation, extrapolating the last ``ratio`` rows, so the text encoder reads
``keep + ratio·(L − keep)`` = 248 tokens. Long-CLIP (``model/longclip.py``, ``load_from_clip``) stores
the kept rows frozen; so do we (configurable), via a gradient mask on the stretched table.
"""

from __future__ import annotations

import torch


def stretched_length(length: int, keep: int = 20, ratio: int = 4) -> int:
    return keep + ratio * (length - keep)


def stretch_positional_embedding(pe: torch.Tensor, keep: int = 20, ratio: int = 4) -> torch.Tensor:
    """(L, D) → (keep + ratio·(L − keep), D).

    Rows below ``keep`` are copied. For i = 0 … L−keep−2 and k = 0 … ratio−1:
    new[keep + ratio·i + k] = (1 − k/ratio)·pe[keep+i] + (k/ratio)·pe[keep+i+1];
    the last ``ratio`` rows extrapolate: pe[L−1] + (k/ratio)·(pe[L−1] − pe[L−2]).
    """
    if pe.dim() != 2:
        raise ValueError(f"positional embedding must be (L, D), got {tuple(pe.shape)}")
    length = pe.shape[0]
    if not 0 <= keep <= length - 2 or ratio < 1:
        raise ValueError(f"need 0 <= keep <= L-2 and ratio >= 1 (L={length}, keep={keep}, ratio={ratio})")
    k = torch.arange(ratio, dtype=pe.dtype, device=pe.device).view(1, ratio, 1) / ratio
    left = pe[keep:length - 1].unsqueeze(1)  # (L-keep-1, 1, D)
    right = pe[keep + 1:length].unsqueeze(1)
    middle = ((1 - k) * left + k * right).reshape(-1, pe.shape[1])
    tail = pe[length - 1] + k.view(ratio, 1) * (pe[length - 1] - pe[length - 2])
    return torch.cat([pe[:keep], middle, tail], dim=0)


def build_causal_mask(length: int) -> torch.Tensor:
    """open_clip's text attention mask: -inf above the diagonal."""
    mask = torch.empty(length, length)
    mask.fill_(float("-inf"))
    mask.triu_(1)
    return mask


def apply_ipsi(model, keep: int = 20, ratio: int = 4, freeze_kept: bool = True) -> int:
    """Stretch an open_clip CLIP's text positions in place; returns the new context length.

    The causal attention mask and ``model.context_length`` follow; tokenise with the returned length.
    With ``freeze_kept`` the first ``keep`` rows get zero gradient (and must be excluded from weight
    decay by the optimiser: ``positional_embedding`` is in ``no_decay_parameters``).
    A model whose checkpoint was already stretched (a Long-CLIP one, marked ``ipsi_stretched`` by
    ``clip_weights.load_clip``) keeps its table; only the freezing applies.
    """
    if getattr(model, "ipsi_stretched", False):
        new = model.positional_embedding.data
    else:
        new = stretch_positional_embedding(model.positional_embedding.data, keep, ratio)
        model.positional_embedding = torch.nn.Parameter(new)
        model.register_buffer("attn_mask", build_causal_mask(new.shape[0]), persistent=False)
        model.context_length = new.shape[0]
    if freeze_kept and keep > 0:
        grad_mask = torch.ones(new.shape[0], 1)
        grad_mask[:keep] = 0.0
        model.positional_embedding.register_hook(lambda grad: grad * grad_mask.to(grad.device, grad.dtype))
    return new.shape[0]
