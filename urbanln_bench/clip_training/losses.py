"""The CLIP trainer's objectives as plugins (docs/methods.md): ``train_clip`` runs whichever one a
method builds by name from ``CLIP_LOSSES``.

- ``infonce``: CLIP's symmetric in-batch contrastive loss with the model's own temperature
  (Radford et al. 2021; UrbanLN's "w/o MSD" ablation);
- ``msd``: UrbanLN's momentum self-distillation (Eqs. 3–6, ``msd.py``);
- ``coca``: contrastive + captioning with a from-scratch multimodal decoder (``coca.py``; UrbanCLIP);
- ``filip``: FILIP's token-wise loss as UrbanVLP's code has it (``filip.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from urbanln_bench.distributed import World, gather_rows
from urbanln_bench.errors import UserError
from urbanln_bench.registry import Registry


class ClipLossPlugin:
    """An objective for ``train_clip``. ``setup`` once, ``loss`` per batch, ``after_step`` after each update."""

    name = "base"
    # True when the objective gathers its features across ranks (``distributed.gather_rows``), so that it
    # runs under torchrun; ``train_clip`` sets ``world`` before ``setup``
    distributed = False
    world = World()

    def setup(self, model, embed_dim: int) -> list:
        """Prepare state; return extra trainable parameters (e.g. a learnable temperature).

        Entries may be bare parameters (named as temperatures: no weight decay) or ``(name, parameter)``
        pairs, e.g. a decoder's ``named_parameters()``, which get the usual decay rule by name.
        """
        return []

    def loss(self, model, pixels, tokens, encode_text) -> dict[str, Any]:
        """``{"total": scalar tensor, ...parts}`` for one batch."""
        raise NotImplementedError

    def after_step(self, model) -> None:
        pass

    def settings(self) -> dict[str, Any]:
        return {"name": self.name}


class InfoNCELoss(ClipLossPlugin):
    """CLIP's symmetric InfoNCE over the batch with the model's learnable ``logit_scale``."""

    name = "infonce"
    distributed = True

    def loss(self, model, pixels, tokens, encode_text):
        import torch
        import torch.nn.functional as F

        # under torchrun: every rank's features (gradient to its own), so the loss is the global batch's
        v = gather_rows(F.normalize(model.encode_image(pixels).float(), dim=-1), self.world)
        t = gather_rows(F.normalize(encode_text(model, tokens).float(), dim=-1), self.world)
        logits = model.logit_scale.exp().float() * v @ t.T
        targets = torch.arange(len(v), device=v.device)
        total = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
        return {"total": total, "contrastive": total.detach()}

    def after_step(self, model) -> None:
        import torch

        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))


class MSDLoss(ClipLossPlugin):
    """UrbanLN's momentum self-distillation, L = (1 − μ)·L_C + μ·L_D (Eqs. 3–6); see ``msd.py``."""

    name = "msd"
    distributed = True

    def __init__(self, mu: float = 0.5, momentum: float = 0.995, queue_size: int = 4096,
                 temperature: float = 0.07) -> None:
        if not 0.0 <= mu <= 1.0:
            raise UserError(f"mu must lie in [0, 1], got {mu}")
        if not 0.0 <= momentum < 1.0:
            raise UserError(f"momentum must lie in [0, 1), got {momentum}")
        if queue_size < 0:
            raise UserError(f"queue_size must be >= 0, got {queue_size}")
        self.mu, self.momentum, self.queue_size, self.temperature = mu, momentum, queue_size, temperature
        self.distiller = None

    def setup(self, model, embed_dim: int) -> list:
        from urbanln_bench.clip_training.msd import MomentumDistiller

        self.distiller = MomentumDistiller(model, embed_dim, queue_size=self.queue_size, momentum=self.momentum,
                                           mu=self.mu, temperature=self.temperature, world=self.world)
        self.distiller.to(next(model.parameters()).device)
        return [self.distiller.log_temperature]

    def loss(self, model, pixels, tokens, encode_text):
        losses = self.distiller.loss(model, pixels, tokens, encode_text=encode_text)
        return {"total": losses.total, "contrastive": losses.contrastive.detach(),
                "distillation": losses.distillation.detach(), "temperature": self.distiller.temperature.detach()}

    def after_step(self, model) -> None:
        self.distiller.after_step(model)

    def settings(self) -> dict[str, Any]:
        return {"name": self.name, "mu": self.mu, "momentum": self.momentum, "queue_size": self.queue_size,
                "temperature_init": self.temperature}


CLIP_LOSSES: Registry[Callable[..., ClipLossPlugin]] = Registry("CLIP loss")
CLIP_LOSSES.register("infonce")(InfoNCELoss)
CLIP_LOSSES.register("msd")(MSDLoss)
CLIP_LOSSES.register("coca", "urbanln_bench.clip_training.coca:CoCaLoss")
CLIP_LOSSES.register("filip", "urbanln_bench.clip_training.filip:FILIPLoss")


def build_clip_loss(name: str, **options: Any) -> ClipLossPlugin:
    return CLIP_LOSSES.get(name)(**options)
