"""Pretraining under torchrun (docs/torchrun.md): two gloo processes with a per-rank batch of B/2 train
the same model as one process with batch B.

Not bit for bit: each rank multiplies a half batch, and the gradients of the two halves are summed by an
all-reduce, in another order than one process's matrix products sum them; float32 rounding then differs
in the last bits and the steps of AdamW carry it forward. Measured on one machine (one thread per
process), two ranks against one process:
- the loss at every step: at most 4.8e-6 absolute (a relative 5e-7);
- final embeddings: at most 5.3e-6 absolute (their entries reach ~3.5);
- MSD queues: at most 2.2e-7;
- batch-norm running variances: at most 1.2e-7.

The tests allow ``LOSS_RTOL`` and ``EMBEDDING_ATOL``, 10–20 times that. What they must catch moves far more:
- per-rank batch norm: 0.7–2 % of the pair losses, 0.7 on the embeddings;
- a gather whose backward does not sum over ranks (half the gradient, which AdamW nearly hides):
  2.6e-5 of the CLIP loss, 1.5e-4 on the embeddings.
"""

from __future__ import annotations

import numpy as np
import pytest
from ddp_worker import CLIP_STEPS, run_jobs, run_world

from urbanln_bench.distributed import World

JOBS = [("clip", ("infonce",)), ("clip", ("msd",)), ("pair", ("tile2vec",)), ("pair", ("pg-simclr",)),
        ("gradient", (9,))]
LOSS_RTOL = 1e-5
EMBEDDING_ATOL = 5e-5


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    """(one process's results, each of two gloo ranks' results) of the same jobs."""
    out = tmp_path_factory.mktemp("ddp")
    two = run_world(2, out, [*JOBS, ("checkpoint", (str(out / "work"),))])
    return run_jobs(JOBS), two


def _max_abs(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


@pytest.mark.parametrize("loss_name", ["infonce", "msd"])
def test_clip_training_in_two_processes_matches_one_process(worlds, loss_name):
    one, two = worlds
    single, ranks = one[f"clip:{loss_name}"], [r[f"clip:{loss_name}"] for r in two]
    assert single["steps"] == ranks[0]["steps"] == CLIP_STEPS  # the global batch sets the number of steps
    for rank in ranks:
        assert len(rank["losses"]) == CLIP_STEPS
        assert np.allclose(rank["losses"], single["losses"], rtol=LOSS_RTOL, atol=0), (
            rank["losses"], single["losses"])
        assert _max_abs(rank["embeddings"], single["embeddings"]) < EMBEDDING_ATOL
    # the ranks compute the same global loss from the same gathered features, and step the same model
    assert ranks[0]["losses"] == ranks[1]["losses"]
    assert np.array_equal(ranks[0]["embeddings"], ranks[1]["embeddings"])


def test_msd_queues_hold_the_global_batches_teacher_features(worlds):
    one, two = worlds
    single = one["clip:msd"]
    for rank in (r["clip:msd"] for r in two):
        # 4 steps of 8 global rows through a queue of 16: it wrapped, and holds the last two global batches
        assert rank["pointer"] == single["pointer"] == (CLIP_STEPS * 8) % 16
        for queue, expected in zip(rank["queues"], single["queues"], strict=True):
            assert queue.shape == expected.shape == (16, expected.shape[1])
            assert _max_abs(queue, expected) < EMBEDDING_ATOL
        assert np.isclose(rank["temperature"], single["temperature"], rtol=LOSS_RTOL)


@pytest.mark.parametrize("kind", ["tile2vec", "pg-simclr"])
def test_pair_training_in_two_processes_matches_one_process(worlds, kind):
    """The ResNet trunk's batch norm uses the global batch's statistics (distributed.global_batch_norm);
    with per-rank statistics the losses differ by percents."""
    one, two = worlds
    single = one[f"pair:{kind}"]
    for rank in (r[f"pair:{kind}"] for r in two):
        assert rank["steps"] == single["steps"] and rank["images_seen"] == single["images_seen"]
        assert np.allclose(rank["losses"], single["losses"], rtol=LOSS_RTOL, atol=0), (rank["losses"], single["losses"])
        assert _max_abs(rank["embeddings"], single["embeddings"]) < EMBEDDING_ATOL
        assert np.allclose(rank["running_var"], single["running_var"], rtol=LOSS_RTOL, atol=1e-6)


def test_one_backward_pass_gives_one_process_gradient(worlds):
    """Gathers with gradient, global batch norm and the gradient average together give ∂L/∂θ of one
    process's loss, on uneven shards (9 rows: 5 and 4); a factor of 2 (a gather whose backward does not
    sum over ranks) or per-rank statistics would show here even where AdamW would hide it."""
    one, two = worlds
    single = one["gradient:9"]
    # The first layer's bias feeds batch norm, so its true gradient is 0 and what float32 leaves of it
    # (~1e-8 here) is rounding noise whose value depends on the summation order, which differs between
    # CPUs (measured: 1.4e-7 apart on an AMD EPYC, within 1e-7 on an Intel Xeon). So the absolute tolerance
    # is relative to the model's gradient scale (its largest entry, ~1), not to each entry; a wrong factor
    # (half a gradient) moves the large entries by ~0.5, far outside it.
    scale = max(float(np.abs(g).max()) for g in single["gradients"])
    for rank in (r["gradient:9"] for r in two):
        assert np.isclose(rank["loss"], single["loss"], rtol=1e-6)
        for got, expected in zip(rank["gradients"], single["gradients"], strict=True):
            assert np.allclose(got, expected, rtol=1e-5, atol=1e-6 * scale), _max_abs(got, expected)
        assert np.allclose(rank["running_mean"], single["running_mean"], rtol=1e-6, atol=1e-7)


def test_rank_zero_alone_writes_the_checkpoint_and_every_rank_reads_it(worlds):
    _, two = worlds
    ranks = [next(v for k, v in r.items() if k.startswith("checkpoint:")) for r in two]
    first, second = ranks
    assert len(first["saved"]) == 1 and first["saved"][0].endswith("tile2vec.tmp")
    assert second["saved"] == []
    for rank in ranks:
        assert rank["first_steps"] > 0 and rank["second_steps"] == rank["first_steps"]
        assert not rank["trained_again"] and rank["same_weights"]


def test_a_global_batch_is_shared_in_contiguous_rows():
    world = World(rank=2, size=3)
    assert world.shard_sizes(8) == [3, 3, 2] and world.shard(8) == slice(6, 8)
    assert World(rank=0, size=3).shard(8) == slice(0, 3)
    assert World().shard(5) == slice(0, 5) and not World().active


def test_an_objective_without_gathering_is_refused_under_torchrun(monkeypatch):
    from urbanln_bench import distributed
    from urbanln_bench.backbones.clip import build_clip
    from urbanln_bench.clip_training.trainer import ClipTrainConfig, build_clip_loss, train_clip
    from urbanln_bench.errors import UserError

    monkeypatch.setattr(distributed, "current", lambda: World(rank=0, size=2))
    model, tokenizer, preprocess = build_clip("smoke")
    images = [np.zeros((8, 8, 3), np.uint8)] * 4
    with pytest.raises(UserError, match="'coca' CLIP objective does not run under torchrun"):
        train_clip(model, images, ["a"] * 4, tokenizer, preprocess, ClipTrainConfig(steps=1, batch_size=4),
                   build_clip_loss("coca"))


def test_torchrun_runs_a_method_and_rank_zero_alone_writes(tmp_path, tiny_ny, cache_dir):
    """`torchrun --nproc_per_node 2 -m urbanln_bench run ...`: both ranks pretrain, one process writes the
    checkpoint, the embeddings and the record, and one table is printed. (A budget variant of Tile2Vec,
    so that no other test has its embeddings cached.)"""
    import json
    import os
    import subprocess
    import sys

    log = tmp_path / "builds.log"
    env = {**os.environ, "URBANLN_BENCH_BUILD_LOG": str(log), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "urbanln_bench", "run", "--method", "tile2vec", "--city", "NY", "--scale", "tiny",
                           "--profile", "smoke", "--set", "images_seen=150", "--seeds", "0", "--task", "Pop",
                           "--imagery", "SI", "--no-frame", "--results", str(tmp_path / "results")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    builds = [line.split("\t") for line in log.read_text().splitlines()]
    assert sorted(kind for kind, *_ in builds) == ["embeddings", "record"]
    assert len({pid for *_, pid in builds}) == 1  # one process wrote both
    assert done.stderr.count("1 record(s) written") == 1
    records = list((tmp_path / "results").rglob("*.json"))
    assert len(records) == 1
    pretraining = json.loads(records[0].read_text())["pretraining"]
    assert pretraining["images_seen"] == 150 and pretraining["steps"] == 2  # global images: 2 steps of 25 × 3
    embeddings = next(name for kind, name, _ in builds if kind == "embeddings")  # "<slug>/<file>.npz"
    work = cache_dir / "embeddings" / (embeddings.removesuffix(".npz") + "-work")  # the fit's checkpoints
    assert (work / "tile2vec.pt").is_file() and (work / "tile2vec.json").is_file()


def test_torchrun_with_a_numbered_cuda_device_is_refused_before_joining(monkeypatch):
    from urbanln_bench.distributed import init_from_env
    from urbanln_bench.errors import UserError

    for name, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(UserError, match="give --device cuda; each process then uses GPU LOCAL_RANK"):
        init_from_env("cuda:1")
    monkeypatch.delenv("MASTER_PORT")
    with pytest.raises(UserError, match="MASTER_PORT is not"):
        init_from_env("cpu")
