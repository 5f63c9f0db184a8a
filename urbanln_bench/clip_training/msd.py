"""Momentum self-distillation (UrbanLN Eqs. 3–6, after ALBEF's momentum distillation).

An EMA teacher (momentum 0.995) of the whole student, teacher image and text feature queues of size
K = 4096, and a learnable temperature τ. With v_i, t_i the student's normalised features and v^m,
t^m the teacher's (the current batch of N first, then the queue):

  p^{i2t}_k(I_i) = exp(cos(v_i, t^m_k)/τ) / Σ_{k'=1}^{N+K} exp(cos(v_i, t^m_{k'})/τ)   (Eq. 3)
  L_C = −(1/2N) Σ_i [log p^{i2t}_i(I_i) + log p^{t2i}_i(T_i)]                         (Eq. 4)
  q^{i2t}, q^{t2i}: the same softmaxes from the teacher's own similarities cos(v^m_i, t^m_k)
  L_D = ½ mean_i [KL(q^{i2t} ‖ p^{i2t}) + KL(q^{t2i} ‖ p^{t2i})]                       (Eq. 5)
  L = (1 − μ)·L_C + μ·L_D,  μ = 0.5                                                    (Eq. 6)

Unlike ALBEF's code this needs no torch.distributed and accepts any batch size: the queue is a ring
buffer that wraps, and only its filled part enters the softmax. Under torchrun (docs/torchrun.md) it
does what ALBEF does: the student's features are gathered with gradient and the teacher's with
``concat_all_gather`` before the loss and ``_dequeue_and_enqueue``, so every rank computes the global
batch's loss and pushes the global batch's teacher features: the queues hold one process's history.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from urbanln_bench.distributed import World, concat_all_gather, gather_rows


@dataclass
class MSDLosses:
    total: torch.Tensor
    contrastive: torch.Tensor
    distillation: torch.Tensor


class FeatureQueue(torch.nn.Module):
    """A ring buffer of the teacher's normalised features."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("features", torch.zeros(size, dim))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    def current(self) -> torch.Tensor:
        return self.features[: int(self.filled)]

    @torch.no_grad()
    def push(self, batch: torch.Tensor) -> None:
        batch = batch.detach()[-self.size:]
        n, start = len(batch), int(self.pointer)
        first = min(n, self.size - start)
        self.features[start:start + first] = batch[:first]
        if n > first:
            self.features[: n - first] = batch[first:]
        self.pointer.fill_((start + n) % self.size)
        self.filled.fill_(min(self.size, int(self.filled) + n))


def ema_copy(student: torch.nn.Module) -> torch.nn.Module:
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: torch.nn.Module, student: torch.nn.Module, momentum: float) -> None:
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        t.mul_(momentum).add_(s.detach(), alpha=1 - momentum)
    for t, s in zip(teacher.buffers(), student.buffers(), strict=True):
        t.copy_(s)


def msd_loss(v: torch.Tensor, t: torch.Tensor, v_m: torch.Tensor, t_m: torch.Tensor,
             image_queue: torch.Tensor, text_queue: torch.Tensor, temperature: torch.Tensor,
             mu: float) -> MSDLosses:
    """Eqs. 3–6 for one batch; all features L2-normalised; queues hold earlier teacher features."""
    all_t = torch.cat([t_m, text_queue], dim=0)  # (N + K, D): the batch first, then the queue
    all_v = torch.cat([v_m, image_queue], dim=0)
    logits_i2t = v @ all_t.T / temperature
    logits_t2i = t @ all_v.T / temperature
    targets = torch.arange(len(v), device=v.device)
    log_p_i2t = F.log_softmax(logits_i2t, dim=1)
    log_p_t2i = F.log_softmax(logits_t2i, dim=1)
    contrastive = -(log_p_i2t[targets, targets].mean() + log_p_t2i[targets, targets].mean()) / 2
    with torch.no_grad():
        q_i2t = F.softmax(v_m @ all_t.T / temperature, dim=1)
        q_t2i = F.softmax(t_m @ all_v.T / temperature, dim=1)
    kl_i2t = (q_i2t * (torch.log(q_i2t.clamp_min(1e-12)) - log_p_i2t)).sum(dim=1)
    kl_t2i = (q_t2i * (torch.log(q_t2i.clamp_min(1e-12)) - log_p_t2i)).sum(dim=1)
    distillation = 0.5 * (kl_i2t + kl_t2i).mean()
    return MSDLosses((1 - mu) * contrastive + mu * distillation, contrastive, distillation)


class MomentumDistiller(torch.nn.Module):
    """Teacher, queues and temperature around a CLIP student (``encode_image``/``encode_text``)."""

    def __init__(self, student: torch.nn.Module, dim: int, *, queue_size: int = 4096, momentum: float = 0.995,
                 mu: float = 0.5, temperature: float = 0.07, world: World | None = None) -> None:
        super().__init__()
        self.world = world or World()
        self.teacher = ema_copy(student)
        self.image_queue = FeatureQueue(queue_size, dim)
        self.text_queue = FeatureQueue(queue_size, dim)
        self.log_temperature = torch.nn.Parameter(torch.tensor(float(temperature)).log())
        self.momentum, self.mu = momentum, mu

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp().clamp(0.001, 0.5)  # ALBEF's clamp on a learnable τ

    def loss(self, student: torch.nn.Module, images: torch.Tensor, texts: torch.Tensor,
             encode_text=None) -> MSDLosses:
        """One batch. ``encode_text(model, tokens)`` replaces ``model.encode_text`` (e.g. trimmed padding)."""
        encode_text = encode_text or (lambda model, tokens: model.encode_text(tokens))
        v = gather_rows(F.normalize(student.encode_image(images).float(), dim=-1), self.world)
        t = gather_rows(F.normalize(encode_text(student, texts).float(), dim=-1), self.world)
        with torch.no_grad():
            v_m = concat_all_gather(F.normalize(self.teacher.encode_image(images).float(), dim=-1), self.world)
            t_m = concat_all_gather(F.normalize(encode_text(self.teacher, texts).float(), dim=-1), self.world)
        losses = msd_loss(v, t, v_m, t_m, self.image_queue.current(), self.text_queue.current(),
                          self.temperature, self.mu)
        self.image_queue.push(v_m)
        self.text_queue.push(t_m)
        return losses

    def after_step(self, student: torch.nn.Module) -> None:
        ema_update(self.teacher, student, self.momentum)
