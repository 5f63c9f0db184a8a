"""Pretraining under ``torchrun`` (PyTorch distributed data parallel; docs/torchrun.md).

``torchrun`` starts one process per GPU (or per CPU share) and tells each its place through the
environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``). :func:`init_from_env` joins the process group
(NCCL on GPUs, gloo on CPUs); a :class:`World` then says which rank this is and which rows of a global
batch it owns. The shared trainers use it so that N processes train *the same model* as one process
with the same global batch:

- every rank draws the same global batch from the same seeded generator and keeps a contiguous shard of
  it (:meth:`World.shard`), so the gathered batch is in one process's order;
- features are gathered across ranks *with* gradient (:func:`gather_rows`, as open_clip's
  ``gather_features(gather_with_grad=True)``), so each rank computes the loss of the whole global batch;
- gradients are averaged across ranks after the backward pass (:func:`average_gradients`, the all-reduce
  DDP does), which then equals one process's gradient: every collective's backward sums over ranks, so
  each rank holds N·∂L/∂θ for its share and the mean is ∂L/∂θ;
- batch norm normalises with the statistics of the global batch (:func:`global_batch_norm`; torch's
  ``SyncBatchNorm`` does this on GPUs only).

Rank 0 alone writes caches, checkpoints and records; the others wait (:func:`main_first`) and read.
Outside ``torchrun`` everything here is a no-op on a one-process :class:`World`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from urbanln_bench.errors import UserError

# how long a rank waits at a barrier or collective for the others (rank 0 may be rendering a twin or
# training the synthetic foundation while the others wait); hours, overridable for very long builds
TIMEOUT_ENV = "URBANLN_BENCH_DIST_TIMEOUT_HOURS"
DEFAULT_TIMEOUT_HOURS = 6.0


@dataclass(frozen=True)
class World:
    """This process's place among the processes ``torchrun`` started (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard_sizes(self, n: int) -> list[int]:
        """Rows of a global batch of ``n`` per rank: contiguous, the first ``n mod size`` ranks one more."""
        base, extra = divmod(n, self.size)
        return [base + (1 if r < extra else 0) for r in range(self.size)]

    def shard(self, n: int) -> slice:
        """This rank's contiguous rows of a global batch of ``n`` (all of them in one process)."""
        sizes = self.shard_sizes(n)
        start = sum(sizes[:self.rank])
        return slice(start, start + sizes[self.rank])


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise UserError(f"environment variable {name}={value!r} is not an integer; torchrun sets it, "
                        "do not set it by hand") from None


def launched_by_torchrun() -> bool:
    """True when ``torchrun`` (or ``srun`` with its variables) started more than one process."""
    return _env_int("WORLD_SIZE", 1) > 1


def current() -> World:
    """The world of the joined process group, or one process when none was joined."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch always ships it
        return World()
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))


def init_from_env(device: str = "cpu") -> World:
    """Join the process group ``torchrun`` prepared (NCCL for ``cuda``, gloo for ``cpu``) and return the
    world; a no-op returning one process outside ``torchrun``. On CUDA each rank takes GPU ``LOCAL_RANK``."""
    if not launched_by_torchrun():
        return World()
    import datetime

    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return current()
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise UserError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} is set but {name} is not: start distributed "
                            "runs with torchrun (docs/torchrun.md), which sets all of them")
    cuda = device.startswith("cuda")
    if cuda and device != "cuda":
        raise UserError(f"--device {device}: under torchrun give --device cuda; each process then uses GPU "
                        "LOCAL_RANK of its node")
    local_rank = _env_int("LOCAL_RANK", 0)
    if cuda:  # minimal and untested here (no GPU on the development machine): one GPU per rank, NCCL
        torch.cuda.set_device(local_rank)
    hours = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_HOURS))
    dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=datetime.timedelta(hours=hours))
    return current()


def shutdown() -> None:
    """Leave the process group (at the end of a command) so torchrun sees a clean exit."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.active:
        import torch.distributed as dist

        dist.barrier()


@contextmanager
def main_first(world: World) -> Iterator[None]:
    """Rank 0 runs the block first (building whatever cache it needs); the others wait, then run it
    (reading what rank 0 built). If rank 0 fails, torchrun stops the others."""
    if world.active and not world.is_main:
        barrier(world)
    yield
    if world.active and world.is_main:
        barrier(world)


def broadcast_object(value: Any, world: World) -> Any:
    """Rank 0's ``value`` on every rank: decisions that must agree (is this cached? fit or not?)."""
    if not world.active:
        return value
    import torch.distributed as dist

    box = [value if world.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _all_reduce_sum(x):
    import torch.distributed as dist

    dist.all_reduce(x)
    return x


@functools.cache
def _gather_function():
    import torch

    class GatherRows(torch.autograd.Function):
        """Forward: every rank's rows in rank order. Backward: the gradient of the gathered tensor summed
        over ranks (each rank's loss used it), this rank's rows of it."""

        @staticmethod
        def forward(ctx, x, sizes, rank):
            import torch.distributed as dist

            ctx.sizes, ctx.rank = sizes, rank
            width = max(sizes)
            padded = x.new_zeros((width, *x.shape[1:]))
            padded[:len(x)] = x
            parts = [torch.empty_like(padded) for _ in sizes]
            dist.all_gather(parts, padded.contiguous())
            return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])

        @staticmethod
        def backward(ctx, grad):
            grad = _all_reduce_sum(grad.contiguous().clone())
            start = sum(ctx.sizes[:ctx.rank])
            return grad[start:start + ctx.sizes[ctx.rank]], None, None

    return GatherRows


def gather_rows(x, world: World, sizes: Sequence[int] | None = None):
    """The rows of ``x`` of every rank, concatenated in rank order, with gradient flowing back to each
    rank's own rows (open_clip's ``gather_features`` with ``gather_with_grad``; uneven shards allowed).
    ``sizes``: rows per rank when known (saves one small collective)."""
    if not world.active:
        return x
    import torch
    import torch.distributed as dist

    if sizes is None:
        count = torch.tensor([len(x)], device=x.device)
        counts = [torch.zeros_like(count) for _ in range(world.size)]
        dist.all_gather(counts, count)
        sizes = [int(c) for c in counts]
    sizes = [int(s) for s in sizes]
    if sizes[world.rank] != len(x):
        raise ValueError(f"rank {world.rank} holds {len(x)} rows, sizes say {sizes[world.rank]}")
    return _gather_function().apply(x, sizes, world.rank)


def concat_all_gather(x, world: World, sizes: Sequence[int] | None = None):
    """Every rank's rows without gradient (ALBEF's ``concat_all_gather``, for the MSD queues)."""
    import torch

    with torch.no_grad():
        return gather_rows(x.detach(), world, sizes)


@functools.cache
def _all_reduce_function():
    import torch

    class AllReduceSum(torch.autograd.Function):
        """Forward: the sum over ranks. Backward: the gradient summed over ranks (each rank used the sum)."""

        @staticmethod
        def forward(ctx, value):
            return _all_reduce_sum(value.clone())

        @staticmethod
        def backward(ctx, grad):
            return _all_reduce_sum(grad.contiguous().clone())

    return AllReduceSum


def _all_reduce_with_grad(x):
    return _all_reduce_function().apply(x)


def average_gradients(parameters, world: World) -> None:
    """Replace each parameter's gradient by its mean over ranks (one flat all-reduce, as DDP's buckets).
    A parameter without a gradient has none on every rank (all ranks run the same graph) and is skipped."""
    if not world.active:
        return
    import torch

    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = _all_reduce_sum(torch.cat([g.reshape(-1) for g in grads]))
    flat.div_(world.size)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_module(module, world: World) -> None:
    """Rank 0's parameters and buffers on every rank (DDP does the same when it wraps a model), so the
    ranks start from one model even if loading or initialising it were not deterministic."""
    if not world.active:
        return
    import torch
    import torch.distributed as dist

    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def _global_batch_norm_forward(module, world: World):
    import torch

    own_forward = type(module).forward

    def forward(x):
        if not module.training or not world.active:
            return own_forward(module, x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        rows = torch.tensor([float(x.numel() // x.shape[1])], dtype=x.dtype, device=x.device)
        sums = _all_reduce_with_grad(torch.cat([x.sum(dims), rows]))  # one all-reduce: sums and row count
        count = sums[-1].detach()
        mean = sums[:-1] / count
        centred = x - mean.view(shape)
        var = _all_reduce_with_grad((centred * centred).sum(dims)) / count
        out = centred * torch.rsqrt(var + module.eps).view(shape)
        if module.affine:
            out = out * module.weight.view(shape) + module.bias.view(shape)
        if module.track_running_stats:
            with torch.no_grad():
                module.num_batches_tracked.add_(1)
                factor = (1.0 / float(module.num_batches_tracked) if module.momentum is None else module.momentum)
                n = float(count)
                module.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                module.running_var.mul_(1 - factor).add_(var.detach() * (n / max(n - 1, 1)), alpha=factor)
        return out

    return forward


@contextmanager
def global_batch_norm(model, world: World) -> Iterator[None]:
    """While training under torchrun, every batch-norm layer of ``model`` normalises with the mean and
    variance of the *global* batch (all-reduced, with gradient), as one process would; its running
    statistics follow the global batch too. torch's ``SyncBatchNorm`` does this only on GPUs; this works
    on gloo/CPU and NCCL alike and leaves the module types and state dict unchanged."""
    if not world.active:
        yield
        return
    import torch

    layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for layer in layers:
        layer.forward = _global_batch_norm_forward(layer, world)
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward
