"""The one optimisation loop every CLIP trainer runs: the synthetic foundation, the methods' CLIP
fine-tuning (``trainer.train_clip``) and UrbanVLP's two towers.

CLIP's recipe (Radford et al. 2021; open_clip's defaults): AdamW with β = (0.9, 0.98), ε = 1e-6 and
no weight decay on gains, biases, norms and temperatures; a linear warm-up then cosine decay of the
learning rate; horizontal flips; batches from a seeded permutation, so a run is deterministic on one
machine. A trainer supplies what differs (how a batch becomes a loss, what to clamp after a step);
the loop owns the order of operations, which decides the numbers (docs/identity.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from urbanln_bench.embed import autocast  # noqa: F401  (the loop's precision rule, used as loop.autocast)
from urbanln_bench.embed import preprocess as preprocess_images
from urbanln_bench.errors import UserError

Progress = Callable[[str, int], Callable[[int], None]]
# the CLIP image statistics every CLIP method normalises with, unless its profile's config names others
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_CONTEXT = 77  # CLIP's text context; IPSI stretches it (clip_training.ipsi)


def pixel_batch(images: Sequence[np.ndarray], preprocess) -> Any:
    """Images → a normalised (n, 3, s, s) float tensor with a CLIP preprocess's size, mean and std."""
    return preprocess_images(list(images), preprocess.image_size, preprocess.mean, preprocess.std)


def random_flips(pixels, generator, *, drawn: int | None = None, rows: slice = slice(None)):
    """Each image flipped horizontally with probability ½ (one draw from ``generator`` per image).

    Under torchrun ``pixels`` are one rank's ``rows`` of a global batch of ``drawn`` images: every rank
    draws for the whole batch (their generators stay in step) and keeps its rows' draws."""
    import torch

    flip = (torch.rand(drawn or len(pixels), generator=generator) < 0.5)[rows]
    return torch.where(flip.view(-1, 1, 1, 1), pixels.flip(-1), pixels)


def parameter_groups(params: Sequence[tuple[str, Any]], weight_decay: float, *,
                     decay_positional: bool = False) -> list[dict[str, Any]]:
    """open_clip's rule: no decay on gains, biases, norms and temperatures. Fine-tuning also spares the
    positional tables (``decay_positional=False``): decay would move IPSI's frozen rows, whose
    gradient is masked to zero. The foundation, trained from scratch, decays them as open_clip does."""
    decay, no_decay = [], []
    for name, param in params:
        if not param.requires_grad:
            continue
        skip = (param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
                or "temperature" in name or (not decay_positional and "positional_embedding" in name))
        (no_decay if skip else decay).append(param)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def adamw(groups: list[dict[str, Any]], lr: float, device) -> Any:
    import torch

    fused = {"fused": True} if device.type in ("cpu", "cuda") else {}
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6, **fused)


def warmup_cosine(optimiser, steps: int, warmup: int) -> Any:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``steps``."""
    import torch

    return torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: min(
        (step + 1) / warmup, 0.5 * (1 + math.cos(math.pi * max(0, step - warmup) / max(1, steps - warmup)))))


def shuffled_batches(n: int, batch_size: int, generator, *, epochs: int | None = None,
                     drop_last: bool = True, min_size: int = 2) -> Iterator[tuple[int, Any]]:
    """(epoch, index tensor) per batch: a fresh permutation each epoch; ``epochs=None`` never ends.

    ``drop_last`` keeps full batches only; otherwise the last, smaller batch comes too when it has at
    least ``min_size`` items (a contrastive batch needs two).
    """
    import torch

    if n < min_size or (drop_last and batch_size < min_size):
        raise UserError(f"{n} items in batches of {batch_size} give no batch of at least {min_size}")
    epoch = 0
    while epochs is None or epoch < epochs:
        permutation = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1 if drop_last else n, batch_size):
            idx = permutation[start:start + batch_size]
            if len(idx) >= min_size:
                yield epoch, idx
        epoch += 1


@dataclass
class LoopResult:
    steps: int
    history: dict[str, list[float]] = field(default_factory=dict)  # per step, per loss part
    epoch_of_step: list[int] = field(default_factory=list)

    def epoch_means(self, part: str = "total") -> list[float]:
        """The mean of ``part`` over each epoch's steps, rounded to 4 decimals."""
        by_epoch: dict[int, list[float]] = {}
        for epoch, value in zip(self.epoch_of_step, self.history.get(part, []), strict=True):
            by_epoch.setdefault(epoch, []).append(value)
        return [round(float(np.mean(v)), 4) for _, v in sorted(by_epoch.items())]


def optimise(optimiser, schedule, batches: Iterator[tuple[int, Any]], batch_loss: Callable[[Any], Mapping[str, Any]],
             *, steps: int, description: str, progress: Progress | None = None,
             after_step: Callable[[], None] | None = None, progress_total: int | None = None,
             after_backward: Callable[[], None] | None = None) -> LoopResult:
    """At most ``steps`` optimiser steps over ``batches``; ``batch_loss(idx)`` returns the loss parts,
    ``"total"`` among them. Stops with a clear error when the loss stops being finite.
    ``after_backward`` runs between the backward pass and the step (under torchrun: average the
    gradients over ranks, ``distributed.average_gradients``)."""
    import torch

    advance = progress(description, progress_total or steps) if progress else None
    result = LoopResult(0)
    while result.steps < steps:
        batch = next(batches, None)
        if batch is None:
            break
        epoch, idx = batch
        parts = batch_loss(idx)
        total = parts["total"]
        if not torch.isfinite(total):
            raise UserError(f"{description}: the loss became {float(total)} at step {result.steps}; lower the lr")
        optimiser.zero_grad(set_to_none=True)
        total.backward()
        if after_backward is not None:
            after_backward()
        optimiser.step()
        schedule.step()
        if after_step is not None:
            after_step()
        for key, value in parts.items():
            result.history.setdefault(key, []).append(float(value.detach() if hasattr(value, "detach") else value))
        result.epoch_of_step.append(epoch)
        result.steps += 1
        if advance:
            advance(1)
    return result


def summarise_losses(history: Mapping[str, list[float]]) -> dict[str, list[float]]:
    """Each loss part's mean over the first and the last five steps, rounded to 4 decimals."""
    return {k: [round(float(np.mean(v[:5])), 4), round(float(np.mean(v[-5:])), 4)] for k, v in history.items()}
