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
