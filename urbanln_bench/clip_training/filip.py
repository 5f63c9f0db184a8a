"""FILIP's token-wise contrastive loss, as UrbanVLP's street-view branch uses it (``ClipLoss_filip``).

FILIP (Yao et al. 2021, "cross-modal late interaction") scores an image i against a text j token by
token: each image token takes its most similar text token, and the image-to-text similarity is the
mean of those maxima,

  s^I_{i,j} = (1/n_i) Σ_k max_r ⟨x^I_{i,k}, x^T_{j,r}⟩

(text-to-image is the mirror: each text token's best image token, averaged over the text).
Both enter a symmetric InfoNCE with a learnable temperature, and FILIP drops padding tokens.

UrbanVLP's released code (``open_clip_mine/loss.py``, ``forward_filip``), which we follow, differs:

- only s^I is computed; the text-to-image logits are its transpose (not the mirrored s^T);
- **no logit scale**: the cosine similarities go into the cross-entropy as they are;
- the tokens are the L2-normalised, projected image tokens with the pooled feature in front
  (``[pooled; patches]``) and all text positions of the 77-token context after ``ln_final`` —
  padding included (``mask_padding=True`` drops it, as FILIP does).

``filip_loss`` takes token sets of any size with masks, so a region's street views can be one set
(UrbanVLP blends them into one image; see ``methods/urbanvlp.py``). The ``filip`` plugin of the
shared CLIP trainer applies it to one image and its caption.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from urbanln_bench.clip_training.losses import ClipLossPlugin

CHUNK_ELEMENTS = 1 << 25  # bound on one chunk of the (images × texts × image tokens × text tokens) tensor


def filip_similarity(image_tokens: torch.Tensor, text_tokens: torch.Tensor, image_mask: torch.Tensor | None = None,
                     text_mask: torch.Tensor | None = None) -> torch.Tensor:
    """s[i, j] = mean over image i's valid tokens k of max over text j's valid tokens r of ⟨x_ik, y_jr⟩.

    ``image_tokens`` (Bi, K, D), ``text_tokens`` (Bt, R, D); masks are True where a token is real.
    Computed in chunks of images so a long token set does not materialise Bi·Bt·K·R at once.
    """
    n_images, k_tokens, _ = image_tokens.shape
    n_texts, r_tokens, _ = text_tokens.shape
    if text_mask is not None and not bool(text_mask.any(dim=1).all()):
        raise ValueError("every text needs at least one unmasked token")
    if image_mask is not None and not bool(image_mask.any(dim=1).all()):
        raise ValueError("every image needs at least one unmasked token")
    chunk = max(1, CHUNK_ELEMENTS // max(1, n_texts * k_tokens * r_tokens))
    rows = []
    for start in range(0, n_images, chunk):
        block = torch.einsum("ikd,jrd->ijkr", image_tokens[start:start + chunk], text_tokens)
        if text_mask is not None:
            block = block.masked_fill(~text_mask[None, :, None, :], float("-inf"))
        best = block.max(dim=-1).values  # (chunk, Bt, K): each image token's best text token
        if image_mask is None:
            rows.append(best.mean(dim=-1))
        else:
            weights = image_mask[start:start + chunk, None, :].to(best.dtype)
            rows.append((best * weights).sum(-1) / weights.sum(-1))
    return torch.cat(rows)


def filip_loss(image_tokens: torch.Tensor, text_tokens: torch.Tensor, image_mask: torch.Tensor | None = None,
               text_mask: torch.Tensor | None = None, logit_scale: torch.Tensor | float | None = None) -> torch.Tensor:
    """Symmetric cross-entropy over ``filip_similarity`` with matching pairs on the diagonal.

    Text-to-image uses the transpose, as UrbanVLP's code; ``logit_scale`` None = no scale (its code),
    a value multiplies the similarities (FILIP's learnable temperature).
    """
    similarity = filip_similarity(image_tokens, text_tokens, image_mask, text_mask)
    if logit_scale is not None:
        similarity = similarity * logit_scale
    labels = torch.arange(len(similarity), device=similarity.device)
    return (F.cross_entropy(similarity, labels) + F.cross_entropy(similarity.T, labels)) / 2


def pad_token_sets(sets: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token sets of different lengths (each (n_i, D)) → padded (B, max n, D) and a mask of real tokens."""
    if not sets:
        raise ValueError("no token sets")
    longest = max(len(s) for s in sets)
    padded = sets[0].new_zeros(len(sets), longest, sets[0].shape[-1])
    mask = torch.zeros(len(sets), longest, dtype=torch.bool, device=sets[0].device)
    for i, tokens in enumerate(sets):
        padded[i, :len(tokens)] = tokens
        mask[i, :len(tokens)] = True
    return padded, mask


def full_context(model, tokens: torch.Tensor) -> torch.Tensor:
    """Tokens padded back to the model's whole context (the trainer trims all-padding columns)."""
    context = int(model.positional_embedding.shape[0])
    return F.pad(tokens, (0, context - tokens.shape[1])) if tokens.shape[1] < context else tokens


class FILIPLoss(ClipLossPlugin):
    """UrbanVLP's FILIP token loss on (image, caption) pairs; no parameters of its own.

    ``mask_padding`` False (UrbanVLP's code): every position of the full context counts as a text
    token, so the trainer's trimmed tokens are padded back to it. True: padding positions are dropped,
    as FILIP's paper does. ``logit_scale`` False: no scale (its code); True: the CLIP's ``logit_scale``.
    """

    name = "filip"

    def __init__(self, mask_padding: bool = False, logit_scale: bool = False) -> None:
        self.mask_padding, self.use_logit_scale = bool(mask_padding), bool(logit_scale)

    def loss(self, model, pixels, tokens, encode_text):
        from urbanln_bench.clip_training.tokens import image_token_features, text_token_features

        if not self.mask_padding:
            tokens = full_context(model, tokens)
        _, image_side = image_token_features(model, pixels)
        _, text_side = text_token_features(model, tokens)
        scale = model.logit_scale.exp().float() if self.use_logit_scale else None
        total = filip_loss(image_side, text_side, text_mask=(tokens != 0) if self.mask_padding else None,
                           logit_scale=scale)
        return {"total": total, "filip": total.detach()}

    def after_step(self, model) -> None:
        import math

        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))

    def settings(self) -> dict[str, Any]:
        return {"name": self.name, "mask_padding": self.mask_padding, "logit_scale": self.use_logit_scale,
                "similarity": "mean over image tokens of max over text tokens; text-to-image = transpose"}
