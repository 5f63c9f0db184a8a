"""The shared CLIP trainer (DESIGN §6): one loop, the objective is a loss plugin.

``train_clip`` fine-tunes an open_clip CLIP on (image, caption) pairs of one city. What differs
between the CLIP-based methods is the objective, so it is a plugin from ``CLIP_LOSSES``:

- ``infonce``: CLIP's symmetric in-batch contrastive loss with the model's own temperature
  (Radford et al. 2021, Eq. in §2.3; UrbanLN's "w/o MSD" ablation);
- ``msd``: UrbanLN's momentum self-distillation (Eqs. 3–6, ``msd.py``);
- ``coca``: contrastive + captioning with a from-scratch multimodal decoder (``coca.py``; UrbanCLIP);
- ``filip``: FILIP's token-wise loss as UrbanVLP's code has it (``filip.py``).

The loop is deliberately plain and deterministic on CPU: AdamW (no decay on gains, biases, the
temperature and the positional table), linear warm-up then cosine decay, horizontal flips, a fixed
``torch.Generator`` for order and augmentation. Which parameters train is explicit
(``ClipTrainConfig.train``) and the report counts them. Text is encoded over the longest caption in
the batch only (``encode_text_trimmed``): identical to encoding the padded context under the causal
mask, and most of the saving on CPU.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from urbanln_bench.backbones.clip import trim_tokens
from urbanln_bench.errors import UserError
from urbanln_bench.registry import Registry

Progress = Callable[[str, int], Callable[[int], None]]
TRAIN_PARTS = ("all", "image", "text")


@dataclass(frozen=True)
class ClipTrainConfig:
    """Every setting of one fine-tuning run (all of it enters the method's cache key via its config)."""

    steps: int = 120  # optimiser steps (epochs follow from the number of pairs: steps·batch/pairs)
    batch_size: int = 64
    lr: float = 5e-5
    weight_decay: float = 0.02
    warmup_fraction: float = 0.1
    train: str = "all"  # which towers train: all, image (text frozen) or text (image frozen)
    flip: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.train not in TRAIN_PARTS:
            raise UserError(f"train must be one of {', '.join(TRAIN_PARTS)}, got '{self.train}'")
        if self.steps < 1 or self.batch_size < 2:
            raise UserError(f"need steps >= 1 and batch_size >= 2 (got {self.steps}, {self.batch_size})")


# --------------------------------------------------------------------------------------------------
# Loss plugins


class ClipLossPlugin:
    """An objective for ``train_clip``. ``setup`` once, ``loss`` per batch, ``after_step`` after each update."""

    name = "base"

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

    def loss(self, model, pixels, tokens, encode_text):
        import torch
        import torch.nn.functional as F

        v = F.normalize(model.encode_image(pixels).float(), dim=-1)
        t = F.normalize(encode_text(model, tokens).float(), dim=-1)
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
                                           mu=self.mu, temperature=self.temperature)
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


# --------------------------------------------------------------------------------------------------
# The loop


def set_trainable(model, train: str) -> None:
    """Freeze what ``train`` excludes; ``logit_scale`` trains with the text or image tower alike."""
    text_prefixes = ("transformer.", "token_embedding.", "positional_embedding", "ln_final.", "text_projection",
                     "text.")
    for name, param in model.named_parameters():
        is_text = name.startswith(text_prefixes)
        if train == "all" or name == "logit_scale":
            param.requires_grad_(True)
        elif train == "image":
            param.requires_grad_(not is_text)
        else:
            param.requires_grad_(is_text)


def parameter_groups(params: Sequence[tuple[str, Any]], weight_decay: float) -> list[dict[str, Any]]:
    """open_clip's rule (no decay on gains, biases, norms, temperatures), plus the positional tables:
    decay would move IPSI's frozen rows, whose gradient is masked to zero."""
    decay, no_decay = [], []
    for name, param in params:
        if not param.requires_grad:
            continue
        skip = (param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
                or "positional_embedding" in name or "temperature" in name)
        (no_decay if skip else decay).append(param)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def train_clip(model, images: Sequence[np.ndarray], captions: Sequence[str], tokenize: Callable[[list[str]], Any],
               preprocess, config: ClipTrainConfig, loss: ClipLossPlugin, device: str = "cpu",
               progress: Progress | None = None, description: str = "fine-tuning CLIP") -> dict[str, Any]:
    """Fine-tune ``model`` in place on ``images`` × ``captions`` (same order); returns a report.

    ``tokenize`` maps captions to a (n, context) token tensor (it decides truncation: 77 or IPSI's 248).
    """
    import torch

    from urbanln_bench.backbones.clip import _autocast, _pixels, count_parameters, encode_text_trimmed

    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    if len(images) < 2:
        raise UserError(f"CLIP fine-tuning needs at least 2 image-caption pairs, got {len(images)}")
    started = time.perf_counter()
    device_t = torch.device(device)
    tokens = tokenize(list(captions))
    truncated = int(((tokens != 0).sum(1) == tokens.shape[1]).sum())  # captions that fill the whole context
    set_trainable(model, config.train)
    model.to(device_t).train()
    batch_size = min(config.batch_size, len(images))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        extra = loss.setup(model, int(model.text_projection.shape[-1]
                                      if not hasattr(model.text_projection, "weight")
                                      else model.text_projection.weight.shape[0]))
        named_extra = [(f"loss.{p[0]}", p[1]) if isinstance(p, tuple) else (f"loss.temperature.{i}", p)
                       for i, p in enumerate(extra)]
        named = list(model.named_parameters()) + named_extra
        fused = {"fused": True} if device_t.type in ("cpu", "cuda") else {}
        optimiser = torch.optim.AdamW(parameter_groups(named, config.weight_decay), lr=config.lr,
                                      betas=(0.9, 0.98), eps=1e-6, **fused)
        warmup = max(1, int(config.warmup_fraction * config.steps))
        schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: min(
            (step + 1) / warmup, 0.5 * (1 + math.cos(math.pi * max(0, step - warmup) / max(1, config.steps - warmup)))))
        generator = torch.Generator().manual_seed(config.seed)
        advance = progress(description, config.steps) if progress else None
        history: dict[str, list[float]] = {}
        step, epochs = 0, 0
        while step < config.steps:
            permutation = torch.randperm(len(images), generator=generator)
            epochs += 1
            for start in range(0, len(images) - batch_size + 1, batch_size):  # full batches only
                if step >= config.steps:
                    break
                idx = permutation[start:start + batch_size]
                pixels = _pixels([images[i] for i in idx.tolist()], preprocess)
                if config.flip:
                    flip = torch.rand(len(idx), generator=generator) < 0.5
                    pixels = torch.where(flip.view(-1, 1, 1, 1), pixels.flip(-1), pixels)
                text = trim_tokens(tokens[idx]).to(device_t)
                with _autocast(device_t):
                    parts = loss.loss(model, pixels.to(device_t), text, encode_text_trimmed)
                total = parts["total"]
                if not torch.isfinite(total):
                    raise UserError(f"{description}: the loss became {float(total)} at step {step}; lower the lr")
                optimiser.zero_grad(set_to_none=True)
                total.backward()
                optimiser.step()
                schedule.step()
                loss.after_step(model)
                for key, value in parts.items():
                    history.setdefault(key, []).append(float(value.detach() if hasattr(value, "detach") else value))
                step += 1
                if advance:
                    advance(1)
    model.eval()
    trainable, total_params = count_parameters(model)
    return {
        "pairs": len(images), "steps": step, "epochs": round(step * batch_size / len(images), 2),
        "batch_size": batch_size, "context_length": int(tokens.shape[1]),
        "captions_filling_context": truncated,
        "loss": loss.settings(), "config": asdict(config),
        "loss_first_last": summarise_losses(history),
        "parameters": {"trainable": trainable, "total": total_params},
        "loss_parameters": sum(p.numel() for _, p in named_extra),  # trained with the model, e.g. a decoder
        "seconds": round(time.perf_counter() - started, 1), "device": str(device_t),
    }


def summarise_losses(history: Mapping[str, list[float]]) -> dict[str, list[float]]:
    return {k: [round(float(np.mean(v[:5])), 4), round(float(np.mean(v[-5:])), 4)] for k, v in history.items()}
