"""``urbanln-bench grid``: wall time of one tiny grid on 1 and 2 workers, local pool and Ray (docs/grid.md).

The grid: the NY tiny twin × {colour histogram, random features} × {SV, SI} × 3 tasks × 5 probe seeds (four
cells, twelve records, no pretraining). Every round starts from a cache with the twin rendered and no
embedding, so each cell embeds and probes; the store is empty. What the numbers include:

- local, 1 worker: the cells in this process, one after another (no pool);
- local, 2 workers: spawning two interpreters that each import torch and the harness (a few seconds of the
  wall time on a small grid), then the cells two at a time;
- Ray: ``run_grid`` on a local Ray started with 1 or 2 CPUs; Ray's start-up (``extra_info["ray_init_s"]``)
  is outside the timed call, but its workers' first import of the harness is inside it.

    python -m pytest benchmarks/test_bench_grid.py --benchmark-enable -n 0
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest

from urbanln_bench.grid import parse_methods, plan_grid, run_grid
from urbanln_bench.runner import RunOptions
from urbanln_bench.specs import get_city
from urbanln_bench.synth.twin import ensure_twin


@pytest.fixture(scope="module")
def shared_twins() -> Path:
    root = Path(os.environ["URBANLN_BENCH_CACHE"])
    ensure_twin(get_city("NY"), "tiny", root=root)
    return root / "twins"


def fresh(twins: Path) -> tuple[RunOptions, list]:
    """A new cache linked to the rendered twins, an empty store, and the grid's cells."""
    root = Path(tempfile.mkdtemp(prefix="urbanln-grid-bench-"))
    (root / "cache").mkdir()
    (root / "cache" / "twins").symlink_to(twins, target_is_directory=True)
    os.environ["URBANLN_BENCH_CACHE"] = str(root / "cache")
    template = RunOptions(method="", scale="tiny", profile="smoke", seeds=[0, 1, 2, 3, 4], results_dir=root / "store")
    cells = plan_grid(["NY"], parse_methods("color-histogram,random-features"), template).cells
    return template, cells


@pytest.mark.parametrize("workers", [1, 2])
def test_grid_local(benchmark, shared_twins, workers):
    saved = os.environ["URBANLN_BENCH_CACHE"]
    try:
        def setup():
            template, cells = fresh(shared_twins)
            return (cells, template), {"engine": "local", "workers": workers}

        report = benchmark.pedantic(run_grid, setup=setup, rounds=2, iterations=1)
    finally:
        os.environ["URBANLN_BENCH_CACHE"] = saved
    assert sum(r.written for r in report.results.values()) == 12


@pytest.mark.parametrize("cpus", [1, 2])
def test_grid_ray(benchmark, shared_twins, cpus):
    import ray

    saved = os.environ["URBANLN_BENCH_CACHE"]
    try:
        template, cells = fresh(shared_twins)  # before ray.init: its workers inherit the cache
        started = time.perf_counter()
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        benchmark.extra_info["ray_init_s"] = round(time.perf_counter() - started, 2)
        report = benchmark.pedantic(run_grid, args=(cells, template), kwargs={"engine": "ray"}, rounds=1,
                                    iterations=1)
    finally:
        ray.shutdown()
        os.environ["URBANLN_BENCH_CACHE"] = saved
    assert sum(r.written for r in report.results.values()) == 12
