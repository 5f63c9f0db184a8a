"""The jobs the torchrun tests (test_distributed.py) run in one process and in two gloo processes.

Each job trains a tiny model with a shared trainer and returns what a user relies on being the same
whatever the number of processes: the loss at every step, the final embeddings of fixed inputs, the MSD
queues, and who wrote a checkpoint. ``run_world`` starts ``size`` spawned processes (a process group on
gloo, as torchrun would make) and returns each rank's results.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import numpy as np
import torch

CLIP_STEPS, CLIP_BATCH = 4, 8  # a global batch of 8: 4 rows per rank
PAIR_REGIONS = 16


def toy_clip_data(n: int = 16) -> tuple[list[np.ndarray], list[str]]:
    rng = np.random.default_rng(0)
    colours = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 40)}
    images, captions = [], []
    for i in range(n):
        name = list(colours)[i % 4]
        images.append(np.clip(np.array(colours[name]) + rng.normal(0, 10, (32, 32, 3)), 0, 255).astype(np.uint8))
        captions.append(f"a {name} tile with {name} roofs and {'long ' * (i % 5)}{name} streets number {i}")
    return images, captions


def _recorded(loss) -> list[float]:
    """Record the total loss of every step (the report keeps only first and last means)."""
    history: list[float] = []
    compute = loss.loss

    def recording(*args, **kwargs):
        parts = compute(*args, **kwargs)
        history.append(float(parts["total"].detach()))
        return parts

    loss.loss = recording
    return history


def clip_job(loss_name: str) -> dict[str, Any]:
    import functools

    from urbanln_bench.backbones.clip import build_clip
    from urbanln_bench.clip_training.trainer import ClipTrainConfig, build_clip_loss, train_clip
    from urbanln_bench.training_loop import pixel_batch

    images, captions = toy_clip_data()
    torch.manual_seed(0)
    model, tokenizer, preprocess = build_clip("smoke")
    loss = build_clip_loss(loss_name, **({"queue_size": 16} if loss_name == "msd" else {}))
    history = _recorded(loss)
    report = train_clip(model, images, captions, functools.partial(tokenizer, context_length=77), preprocess,
                        ClipTrainConfig(steps=CLIP_STEPS, batch_size=CLIP_BATCH, lr=1e-3), loss)
    with torch.no_grad():
        embeddings = model.encode_image(pixel_batch(images, preprocess)).float()
    out: dict[str, Any] = {"losses": history, "steps": report["steps"], "embeddings": embeddings.numpy()}
    if loss_name == "msd":
        queues = loss.distiller.image_queue, loss.distiller.text_queue
        out["queues"] = [q.current().numpy().copy() for q in queues]
        out["pointer"] = int(queues[0].pointer)
        out["temperature"] = float(loss.distiller.temperature.detach())
    return out


def _pair_setup(kind: str):
    from urbanln_bench.data.tables import Regions
    from urbanln_bench.pair_training.encoder import PairEncoder
    from urbanln_bench.pair_training.losses import NTXentObjective, TripletObjective
    from urbanln_bench.pair_training.samplers import DistantNegatives, nearest_poi_regions, spatial_neighbours
    from urbanln_bench.pair_training.trainer import ImageSet, TrainConfig, init_model

    n = PAIR_REGIONS
    regions = Regions(tuple(f"r{i}" for i in range(n)), np.arange(n) // 4 * 1.0, np.arange(n) % 4 * 1.0,
                      np.full(n, np.nan), np.full(n, np.nan))
    rng = np.random.default_rng(0)
    images = ImageSet(torch.from_numpy(rng.standard_normal((n, 3, 32, 32)).astype(np.float32)), np.arange(n), n)
    if kind == "tile2vec":  # triplets, batch norm in a ResNet trunk, dihedral augmentation
        head, objective = {}, TripletObjective(10.0, 0.01)
        positives, negatives = spatial_neighbours(regions, 1), DistantNegatives(regions, 1)
        config = TrainConfig(epochs=2, batch_size=6, lr=1e-3, betas=(0.5, 0.999), augment="dihedral")
    else:  # pg-simclr: NT-Xent with in-batch negatives, crops and flips, a projection head
        head, objective = {"head": "simclr", "out_dim": 8, "embed_from": "h"}, NTXentObjective(0.5)
        positives, negatives = nearest_poi_regions(rng.integers(0, 4, (n, 3)).astype(float), "euclidean"), None
        config = TrainConfig(epochs=0, max_images=48, batch_size=6, lr=1e-3, augment="simclr")
    model = init_model(lambda: PairEncoder(width=4, **head), 0)
    return model, images, objective, positives, negatives, config


def pair_job(kind: str) -> dict[str, Any]:
    from urbanln_bench.pair_training.trainer import train_pairs

    model, images, objective, positives, negatives, config = _pair_setup(kind)
    log = train_pairs(model, images, objective, positives, negatives, config)
    with torch.no_grad():
        embeddings = model.embed(images.pixels).numpy()
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    return {"losses": log.epoch_loss, "steps": log.steps, "images_seen": log.images_seen, "embeddings": embeddings,
            "running_var": bn.running_var.numpy().copy()}


def gradient_job(rows: int) -> dict[str, Any]:
    """One backward pass of NT-Xent over a global batch of ``rows`` pairs through a batch-norm MLP, with the
    gradients averaged: the gradient of one process's loss, whatever the number of ranks (uneven shards
    when ``rows`` does not divide). AdamW hides a wrong gradient *scale*; this does not."""
    from urbanln_bench import distributed
    from urbanln_bench.pair_training.losses import nt_xent_loss

    world = distributed.current()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    generator = torch.Generator().manual_seed(1)
    views = torch.randn(2, rows, 6, generator=generator)
    mine = views[:, world.shard(rows)]
    sizes = world.shard_sizes(rows)
    with distributed.global_batch_norm(model, world):
        anchor, positive = model(mine.reshape(-1, 6)).split(sizes[world.rank])
    loss = nt_xent_loss(distributed.gather_rows(anchor, world, sizes), distributed.gather_rows(positive, world, sizes))
    loss.backward()
    distributed.average_gradients(list(model.parameters()), world)
    return {"loss": float(loss.detach()), "gradients": [p.grad.numpy().copy() for p in model.parameters()],
            "running_mean": model[1].running_mean.numpy().copy()}


def checkpoint_job(folder: str) -> dict[str, Any]:
    """``cached_state`` twice: the first call trains (all ranks) and saves (rank 0); the second loads."""
    from urbanln_bench.pair_training import trainer

    saved: list[str] = []
    save = torch.save

    def spy(obj, f, *args, **kwargs):
        saved.append(str(f))
        return save(obj, f, *args, **kwargs)

    torch.save = spy
    try:
        model, images, objective, positives, negatives, config = _pair_setup("tile2vec")
        path = Path(folder) / "tile2vec.pt"
        first = trainer.cached_state(path, model, lambda: trainer.train_pairs(
            model, images, objective, positives, negatives, config).as_dict())
        again, *_ = _pair_setup("tile2vec")
        trained_again = []
        second = trainer.cached_state(path, again, lambda: trained_again.append(1) or {})
    finally:
        torch.save = save
    return {"saved": saved, "first_steps": first["steps"], "second_steps": second.get("steps"),
            "trained_again": bool(trained_again),
            "same_weights": all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                                  again.state_dict().values(), strict=True))}


def run_jobs(jobs: list[tuple[str, tuple]]) -> dict[str, Any]:
    """Each job's results, keyed ``name:first argument``, on one torch thread (as in every world here: the
    comparison is about the number of processes, not of threads)."""
    from urbanln_bench.captions.grounding import one_torch_thread

    table = {"clip": clip_job, "pair": pair_job, "gradient": gradient_job, "checkpoint": checkpoint_job}
    with one_torch_thread():
        return {f"{name}:{args[0]}": table[name](*args) for name, args in jobs}


def _worker(rank: int, size: int, port: int, out: str, jobs: list[tuple[str, tuple]]) -> None:
    import torch.distributed as dist

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(size),
                       "RANK": str(rank), "LOCAL_RANK": str(rank)})
    from urbanln_bench.distributed import init_from_env, shutdown

    world = init_from_env("cpu")
    assert dist.is_initialized() and world.rank == rank and world.size == size
    try:
        torch.save(run_jobs(jobs), Path(out) / f"rank{rank}.pt")
    finally:
        shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_world(size: int, out: Path, jobs: list[tuple[str, tuple]]) -> list[dict[str, Any]]:
    """Each rank's results of ``jobs`` run by ``size`` spawned processes in one gloo process group."""
    import torch.multiprocessing as mp

    mp.start_processes(_worker, args=(size, free_port(), str(out), jobs), nprocs=size, start_method="spawn")
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(size)]
