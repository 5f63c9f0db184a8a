"""Probe speed on a paper-sized cell: n = 500 regions, D = 512 (CLIP ViT-B/16 width).

Run: pytest benchmarks/test_bench_probe.py --benchmark-enable
"""

from __future__ import annotations

import numpy as np
import pytest

from urbanln_bench.probe import ProbeConfig, fit_probe
from urbanln_bench.ridge import ridge_probe
from urbanln_bench.splits import split_regions

N, D = 500, 512


@pytest.fixture(scope="module")
def cell():
    """Embeddings that explain part of ln(y+1), so early stopping behaves as on a real cell."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, D)).astype(np.float32)
    w = rng.normal(size=D) / np.sqrt(D)
    y = np.expm1(np.clip(3.0 + 0.8 * (X @ w) + 0.3 * rng.normal(size=N), 0.0, None))
    ids = [f"r{i:04d}" for i in range(N)]
    return X, y, tuple(split_regions(ids, city="NY", task="Pop", seed=0).indices(ids))


def test_probe_one_seed(benchmark, cell):
    result = benchmark.pedantic(fit_probe, args=cell, kwargs={"seed": 0}, rounds=3, iterations=1,
                                warmup_rounds=1)
    benchmark.extra_info.update(epochs_run=result.epochs_run, best_epoch=result.best_epoch)


def test_probe_five_seeds(benchmark, cell):
    results = benchmark.pedantic(lambda: [fit_probe(*cell, seed=s) for s in range(5)], rounds=1,
                                 iterations=1, warmup_rounds=0)
    benchmark.extra_info.update(epochs_run=[r.epochs_run for r in results])


def test_probe_one_seed_all_500_epochs(benchmark, cell):
    """Upper bound: early stopping never fires."""
    config = ProbeConfig(patience=10_000)
    result = benchmark.pedantic(fit_probe, args=cell, kwargs={"config": config, "seed": 0}, rounds=1,
                                iterations=1)
    assert result.epochs_run == 500


def test_ridge_probe(benchmark, cell):
    benchmark.pedantic(ridge_probe, args=cell, rounds=5, iterations=1, warmup_rounds=1)


def test_ridge_probe_global_scaling(benchmark, cell):
    """The records' ridge column (one global scale, the embedding's geometry kept)."""
    benchmark.pedantic(ridge_probe, args=cell, kwargs={"scaling": "global"}, rounds=5, iterations=1,
                       warmup_rounds=1)


def test_paired_bootstrap_one_cell(benchmark):
    """compare.paired_difference on a paper-sized cell: 10 seeds × 100 test regions, 2000 replicates."""
    import json
    from pathlib import Path

    from urbanln_bench.compare import paired_difference
    from urbanln_bench.records import Record

    template = json.loads((Path(__file__).resolve().parents[1] / "results" / "synthetic-small" / "NY" /
                           "color-histogram" / "Crime_SI_random.json").read_text())
    rng = np.random.default_rng(0)
    truth = {s: rng.normal(5.0, 1.0, 100) for s in range(10)}

    def record(sd: float) -> Record:
        data = json.loads(json.dumps(template))
        data.pop("digest", None)  # a sealed record's digest no longer matches once the seeds are replaced
        data["per_seed"] = [{"seed": s, "r2": 0.0, "rmse": 1.0, "mae": 1.0, "predictions": {
            "ids": [str(i) for i in range(100)], "y": y.tolist(), "mlp": (y + rng.normal(0, sd, 100)).tolist(),
            "ridge": y.tolist()}} for s, y in truth.items()]
        return Record.from_json(data)

    a, b = record(0.5), record(0.6)
    diff = benchmark.pedantic(paired_difference, args=(a, b), rounds=5, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(ci=[diff.low, diff.high])
