"""The shared CLIP trainer (docs/methods.md): one loop, the objective is a loss plugin.

``train_clip`` fine-tunes an open_clip CLIP on (image, caption) pairs of one city. What differs
between the CLIP-based methods is the objective, so it is a plugin from ``CLIP_LOSSES`` (``losses.py``):

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

Under ``torchrun`` (docs/torchrun.md) the same call trains one model over all processes: the batch size
and the step count stay global (so the images-seen budget keeps its meaning), each rank encodes its
contiguous shard of every global batch, the loss plugin gathers the features across ranks
(``distributed.gather_rows``) and the gradients are averaged before each step. Only the ``infonce`` and
``msd`` objectives support it (``ClipLossPlugin.distributed``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from urbanln_bench import distributed
from urbanln_bench import training_loop as loop
from urbanln_bench.backbones.clip import trim_tokens
from urbanln_bench.clip_training.losses import CLIP_LOSSES, ClipLossPlugin, build_clip_loss  # noqa: F401 (public here too)
from urbanln_bench.errors import UserError

Progress = Callable[[str, int], Callable[[int], None]]
TRAIN_PARTS = ("all", "image", "text")
# bump when train_clip (with the shared training_loop it runs) changes what it produces for the same
# model, data, config and loss; it is in every CLIP-backed method's key (ClipBackedMethod.identity) and
# pinned by tests/test_training_golden.py (docs/identity.md)
CLIP_TRAINER_VERSION = 1


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


def train_clip(model, images: Sequence[np.ndarray], captions: Sequence[str], tokenize: Callable[[list[str]], Any],
               preprocess, config: ClipTrainConfig, loss: ClipLossPlugin, device: str = "cpu",
               progress: Progress | None = None, description: str = "fine-tuning CLIP") -> dict[str, Any]:
    """Fine-tune ``model`` in place on ``images`` × ``captions`` (same order); returns a report.

    ``tokenize`` maps captions to a (n, context) token tensor (it decides truncation: 77 or IPSI's 248).
    """
    import torch

    from urbanln_bench.backbones.clip import count_parameters, encode_text_trimmed

    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    if len(images) < 2:
        raise UserError(f"CLIP fine-tuning needs at least 2 image-caption pairs, got {len(images)}")
    world = distributed.current()
    if world.active and not loss.distributed:
        raise UserError(f"the '{loss.name}' CLIP objective does not run under torchrun yet (only "
                        "infonce and msd do); run this method in one process")
    loss.world = world
    started = time.perf_counter()
    device_t = torch.device(device)
    tokens = tokenize(list(captions))
    truncated = int(((tokens != 0).sum(1) == tokens.shape[1]).sum())  # captions that fill the whole context
    set_trainable(model, config.train)
    model.to(device_t).train()
    distributed.broadcast_module(model, world)  # one starting model on every rank (before the teacher copy)
    batch_size = min(config.batch_size, len(images))
    if batch_size < world.size:
        raise UserError(f"a global batch of {batch_size} pairs cannot be shared by {world.size} processes; "
                        "use a larger batch_size or fewer processes")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        extra = loss.setup(model, int(model.text_projection.shape[-1]
                                      if not hasattr(model.text_projection, "weight")
                                      else model.text_projection.weight.shape[0]))
        named_extra = [(f"loss.{p[0]}", p[1]) if isinstance(p, tuple) else (f"loss.temperature.{i}", p)
                       for i, p in enumerate(extra)]
        named = list(model.named_parameters()) + named_extra
        optimiser = loop.adamw(loop.parameter_groups(named, config.weight_decay), config.lr, device_t)
        schedule = loop.warmup_cosine(optimiser, config.steps, max(1, int(config.warmup_fraction * config.steps)))
        generator = torch.Generator().manual_seed(config.seed)

        def batch_loss(idx):  # idx: the global batch; this rank encodes its rows (all of them in one process)
            rows = world.shard(len(idx))
            pixels = loop.pixel_batch([images[i] for i in idx[rows].tolist()], preprocess)
            if config.flip:
                pixels = loop.random_flips(pixels, generator, drawn=len(idx), rows=rows)
            text = trim_tokens(tokens[idx])[rows].to(device_t)
            with loop.autocast(device_t):
                return loss.loss(model, pixels.to(device_t), text, encode_text_trimmed)

        result = loop.optimise(optimiser, schedule, loop.shuffled_batches(len(images), batch_size, generator),
                               batch_loss, steps=config.steps, description=description, progress=progress,
                               after_step=lambda: loss.after_step(model),
                               after_backward=(lambda: distributed.average_gradients([p for _, p in named], world))
                               if world.active else None)
    step = result.steps
    model.eval()
    trainable, total_params = count_parameters(model)
    return {
        "pairs": len(images), "steps": step, "epochs": round(step * batch_size / len(images), 2),
        "batch_size": batch_size, "context_length": int(tokens.shape[1]),
        "captions_filling_context": truncated,
        "loss": loss.settings(), "config": asdict(config),
        "loss_first_last": loop.summarise_losses(result.history),
        "parameters": {"trainable": trainable, "total": total_params},
        "loss_parameters": sum(p.numel() for _, p in named_extra),  # trained with the model, e.g. a decoder
        "seconds": round(time.perf_counter() - started, 1), "device": str(device_t),
        **({"processes": world.size, "batch_per_process": world.shard_sizes(batch_size)} if world.active else {}),
    }
