"""CLIP fine-tuning step time in one process and under torchrun-style DDP on CPU (issue 14 §2–3).

Times ``train_clip`` (the shared CLIP trainer, UrbanLN's MSD objective by default) on toy image–caption
pairs with the same *global* batch in three layouts: one process on one thread, one process on
``--threads`` threads, and ``--processes`` gloo processes on one thread each (as ``torchrun
--nproc_per_node N`` runs them: each rank encodes B/N rows, features are gathered, gradients
all-reduced). The step time is the median of the steps after the first two.

    python benchmarks/ddp_step_time.py --clip cpu --batch 32 --steps 8 --out ddp.json

It is a script, not a pytest-benchmark, because DDP needs several processes. What to expect on a small
CPU machine: DDP is *not* faster. On two cores, two ranks do the same arithmetic as one process on two
threads, plus the gathers and the all-reduce of every gradient; it exists for several GPUs or nodes,
where each rank has its own device.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path


def _step_times(clip: str, loss_name: str, batch: int, steps: int) -> list[float]:
    import functools

    import numpy as np
    import torch

    from urbanln_bench.backbones.clip import build_clip, clip_config
    from urbanln_bench.clip_training.trainer import ClipTrainConfig, build_clip_loss, train_clip

    size = clip_config(clip)["vision_cfg"]["image_size"]
    size = size if isinstance(size, int) else size[0]
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for _ in range(2 * batch)]
    captions = [f"a street with {'tall ' * (i % 7)}buildings, trees and {i % 5} cars" for i in range(2 * batch)]
    torch.manual_seed(0)
    model, tokenizer, preprocess = build_clip(clip)
    loss = build_clip_loss(loss_name)
    stamps: list[float] = []
    compute = loss.loss

    def timed(*args, **kwargs):
        stamps.append(time.perf_counter())
        return compute(*args, **kwargs)

    loss.loss = timed
    train_clip(model, images, captions, functools.partial(tokenizer, context_length=77), preprocess,
               ClipTrainConfig(steps=steps, batch_size=batch, lr=1e-5), loss)
    stamps.append(time.perf_counter())
    return [float(d) for d in np.diff(stamps)]


def _rank(rank: int, size: int, port: int, out: str, args: dict) -> None:
    import torch

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(size),
                       "RANK": str(rank), "LOCAL_RANK": str(rank)})
    from urbanln_bench.distributed import init_from_env, shutdown

    torch.set_num_threads(1)
    init_from_env("cpu")
    try:
        times = _step_times(**args)
        if rank == 0:
            Path(out).write_text(json.dumps(times))
    finally:
        shutdown()


def _in_processes(size: int, args: dict) -> list[float]:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = Path(tempfile.mkdtemp(prefix="urbanln-ddp-bench-")) / "times.json"
    mp.start_processes(_rank, args=(size, port, str(out), args), nprocs=size, start_method="spawn")
    return json.loads(out.read_text())


def _median_after_warmup(times: list[float]) -> float:
    return round(statistics.median(times[2:] or times), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", default="cpu", help="CLIP profile (smoke, cpu, paper) or open_clip name")
    parser.add_argument("--loss", default="msd", choices=["infonce", "msd"])
    parser.add_argument("--batch", type=int, default=32, help="the global batch")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="threads of the one-process comparison")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    job = {"clip": args.clip, "loss_name": args.loss, "batch": args.batch, "steps": args.steps}
    result: dict = {"clip": args.clip, "loss": args.loss, "global_batch": args.batch, "steps": args.steps,
                    "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
                    "torch": torch.__version__, "seconds_per_step": {}}
    for threads in sorted({1, args.threads}):
        torch.set_num_threads(threads)
        name = f"1 process, {threads} thread{'s' if threads > 1 else ''}"
        result["seconds_per_step"][name] = _median_after_warmup(_step_times(**job))
        print(f"{name}: {result['seconds_per_step'][name]} s/step", flush=True)
    name = f"{args.processes} processes (gloo DDP), 1 thread each"
    result["seconds_per_step"][name] = _median_after_warmup(_in_processes(args.processes, job))
    print(f"{name}: {result['seconds_per_step'][name]} s/step", flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
