"""CoCa-style contrastive + captioning loss (Yu et al. 2022), the objective UrbanCLIP fine-tunes with.

CoCa trains an image encoder, a unimodal text decoder and a multimodal text decoder that
cross-attends to the image tokens, with

  L_CoCa = λ_Con · L_Con + λ_Cap · L_Cap                                          (CoCa, Eq. 4)

where L_Con is CLIP's symmetric InfoNCE between the pooled image and text features and L_Cap is the
autoregressive captioning loss: teacher forcing, cross-entropy of each next caption token, padding
ignored. UrbanCLIP uses open_clip's ``CoCaLoss`` with caption weight 1.0 and contrastive weight 1.0
(CoCa's paper uses λ_Cap = 2).

Here the CLIP of the run is the image encoder and the unimodal text decoder (its text tower is causal,
so position t's state sees tokens ≤ t only, as CoCa's unimodal decoder). The plugin owns the
**multimodal decoder, trained from scratch**: open_clip's ``MultimodalTransformer`` (causal
self-attention + cross-attention blocks, CoCa's decoder in open_clip) of the text tower's width and
depth, fed the text states and cross-attending to the vision transformer's patch tokens through a
linear adapter (our CLIPs have no attentional pooler; CoCa's 256 pooled queries are the patch
tokens here). Its parameters are returned by ``setup`` and go to the trainer's optimiser.

``vocabulary`` (token ids) restricts the caption softmax to the tokens that occur in the training
captions: the full 49,408-way softmax costs seconds per CPU step; the left-out classes are never a
target, so the gradient into the image encoder barely changes. ``None`` is the full vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from urbanln_bench.clip_training.losses import ClipLossPlugin
from urbanln_bench.errors import UserError


def caption_cross_entropy(hidden: torch.Tensor, labels: torch.Tensor, projection: torch.Tensor,
                          lookup: torch.Tensor | None = None, pad_id: int = 0) -> torch.Tensor:
    """Mean next-token cross-entropy over the non-padding labels (open_clip ``CoCaLoss``'s caption term).

    ``hidden`` (B, L, W) decoder states; ``labels`` (B, L) the tokens they predict (the caption shifted
    by one); ``projection`` (W, V) to the decoder's vocabulary; ``lookup`` maps token ids to vocabulary
    rows when the vocabulary is restricted. Only non-padding positions are projected: the same value
    as projecting every position and ignoring ``pad_id``, at a fraction of the cost.
    """
    keep = labels != pad_id
    targets = labels[keep]
    if lookup is not None:
        targets = lookup[targets]
        if bool((targets < 0).any()):
            raise UserError("a caption token is outside the caption decoder's vocabulary; build the vocabulary "
                            "from the same tokenised captions the trainer sees")
    logits = hidden[keep] @ projection.to(hidden.dtype)
    return F.cross_entropy(logits.float(), targets)


class CaptionDecoder(torch.nn.Module):
    """CoCa's multimodal text decoder: open_clip ``MultimodalTransformer`` plus an image-token adapter."""

    def __init__(self, image_width: int, width: int, layers: int, heads: int, context_length: int,
                 vocab_size: int, vocabulary: Sequence[int] | None = None) -> None:
        from open_clip.transformer import MultimodalTransformer

        super().__init__()
        rows = vocab_size if vocabulary is None else len(vocabulary)
        self.image_adapter = torch.nn.Linear(image_width, width)
        self.transformer = MultimodalTransformer(width=width, layers=layers, heads=heads,
                                                 context_length=context_length, output_dim=rows)
        lookup = torch.arange(vocab_size) if vocabulary is None else torch.full((vocab_size,), -1, dtype=torch.long)
        if vocabulary is not None:
            lookup[torch.as_tensor(list(vocabulary), dtype=torch.long)] = torch.arange(rows)
        self.register_buffer("lookup", lookup, persistent=False)
        self.restricted = vocabulary is not None
        self._initialise()

    def _initialise(self) -> None:
        """open_clip's intended init for this decoder (its ``init_parameters`` is never called, and the
        vocabulary projection is allocated with ``torch.empty``: CoCa relies on pretrained weights)."""
        width, layers = self.transformer.width, self.transformer.layers
        proj_std, attn_std, fc_std = width ** -0.5 * (2 * layers) ** -0.5, width ** -0.5, (2 * width) ** -0.5
        for block in [*self.transformer.resblocks, *self.transformer.cross_attn]:
            torch.nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            torch.nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            torch.nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            torch.nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        torch.nn.init.normal_(self.transformer.text_projection, std=width ** -0.5)

    def hidden(self, image_tokens: torch.Tensor, text_states: torch.Tensor) -> torch.Tensor:
        """Decoder states (B, L, W) before the vocabulary projection (``MultimodalTransformer.forward``)."""
        image_embs = self.image_adapter(image_tokens)
        length = text_states.shape[1]
        mask = self.transformer.attn_mask[:length, :length]
        x = text_states
        for block, cross in zip(self.transformer.resblocks, self.transformer.cross_attn, strict=True):
            x = block(x, attn_mask=mask)
            x = cross(x, k_x=image_embs, v_x=image_embs)
        return self.transformer.ln_final(x)

    def caption_loss(self, image_tokens: torch.Tensor, text_states: torch.Tensor, labels: torch.Tensor,
                     pad_id: int = 0) -> torch.Tensor:
        hidden = self.hidden(image_tokens, text_states)
        return caption_cross_entropy(hidden, labels, self.transformer.text_projection,
                                     self.lookup if self.restricted else None, pad_id)


class CoCaLoss(ClipLossPlugin):
    """L = λ_Con·L_Con + λ_Cap·L_Cap (CoCa Eq. 4) with a from-scratch multimodal decoder (see module doc)."""

    name = "coca"

    def __init__(self, caption_weight: float = 1.0, contrastive_weight: float = 1.0, decoder_layers: int = 0,
                 vocabulary: Sequence[int] | None = None, pad_id: int = 0) -> None:
        if caption_weight < 0 or contrastive_weight < 0 or caption_weight + contrastive_weight == 0:
            raise UserError(f"CoCa weights must be >= 0 and not both 0 (caption {caption_weight}, "
                            f"contrastive {contrastive_weight})")
        if decoder_layers < 0:
            raise UserError(f"decoder_layers must be >= 0 (0 = the text tower's depth), got {decoder_layers}")
        self.caption_weight, self.contrastive_weight = float(caption_weight), float(contrastive_weight)
        self.decoder_layers, self.pad_id = int(decoder_layers), int(pad_id)
        self.vocabulary = None if vocabulary is None else sorted({int(v) for v in vocabulary} - {self.pad_id})
        self.decoder: CaptionDecoder | None = None

    def build_decoder(self, model) -> CaptionDecoder:
        """The decoder sized from ``model``'s towers (text width and heads, depth = text depth by default)."""
        from urbanln_bench.clip_training.tokens import image_width

        blocks = model.transformer.resblocks
        return CaptionDecoder(image_width(model), int(model.token_embedding.embedding_dim),
                              self.decoder_layers or len(blocks), int(blocks[0].attn.num_heads),
                              int(model.positional_embedding.shape[0]), int(model.token_embedding.num_embeddings),
                              self.vocabulary)

    def setup(self, model, embed_dim: int) -> list:
        self.decoder = self.build_decoder(model).to(next(model.parameters()).device).train()
        return [(f"decoder.{name}", param) for name, param in self.decoder.named_parameters()]

    def loss(self, model, pixels, tokens, encode_text):
        from open_clip.loss import ClipLoss

        from urbanln_bench.clip_training.tokens import image_tokens, text_states

        pooled_image, patches = image_tokens(model, pixels)
        pooled_text, states = text_states(model, tokens)
        contrastive = ClipLoss()(F.normalize(pooled_image.float(), dim=-1), F.normalize(pooled_text.float(), dim=-1),
                                 model.logit_scale.exp().float())
        caption = self.decoder.caption_loss(patches, states[:, :-1], tokens[:, 1:], self.pad_id)
        total = self.contrastive_weight * contrastive + self.caption_weight * caption
        return {"total": total, "contrastive": contrastive.detach(), "caption": caption.detach()}

    def after_step(self, model) -> None:
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))  # UrbanCLIP's main.py clamps at ln 100

    def settings(self) -> dict[str, Any]:
        return {"name": self.name, "caption_weight": self.caption_weight,
                "contrastive_weight": self.contrastive_weight, "decoder_layers": self.decoder_layers or "text depth",
                "vocabulary": "full" if self.vocabulary is None else len(self.vocabulary),
                "decoder": "open_clip MultimodalTransformer, trained from scratch"}
