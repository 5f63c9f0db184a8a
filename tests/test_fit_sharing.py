"""Fit once, embed many (issue 13 §2; docs/grid.md#cost-of-the-transfer-grid): the runner keeps a fit in its
process, so another probe city of the same fit is embedded without fitting again, and the grid runs the cells
of one fit in a row on one worker. A record made through a shared fit is the record a separate ``run`` makes.

UrbanLN (smoke profile, one captioner, a μ of its own so that no other test shares its embeddings) is fitted
on the tiny SZ twin's satellite tiles and probed on SZ and NY; fits kept for sharing are counted in the build
log (``fit`` lines, ``URBANLN_BENCH_BUILD_LOG``), never by timing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import pytest
from test_kill_anywhere import clean_records

from urbanln_bench.cache import cache_root
from urbanln_bench.grid import CellJob, CellResult, GridCell, eta_seconds, grouped_order, run_grid
from urbanln_bench.processes import worker_processes
from urbanln_bench.runner import RunOptions, forget_fitted_methods, run, sharing_fits

SETTINGS = {"captioners": "synthetic:qwen2.5-vl-7b", "candidates_per_captioner": "2", "mu": "0.45"}
OPTIONS = {"method": "urbanln", "scale": "tiny", "imagery": ["SI"], "tasks": ["Pop"], "seeds": [0],
           "profile": "smoke", "settings": SETTINGS}


def built(log: Path, kind: str) -> list[str]:
    if not log.exists():
        return []
    return [line.split("\t")[1] for line in log.read_text().splitlines() if line.split("\t")[0] == kind]


@contextlib.contextmanager
def one_thread():
    """Torch and BLAS on one thread, as ``grid.run_cell`` runs a cell under ``--threads 1``."""
    import torch
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture
def build_log(tmp_path: Path, monkeypatch) -> Path:
    from urbanln_bench.runner import make_method

    log = tmp_path / "builds.log"
    monkeypatch.setenv("URBANLN_BENCH_BUILD_LOG", str(log))
    forget_fitted_methods()
    slug = make_method(RunOptions(**OPTIONS)).variant_slug()  # this test's own variant: no other test embeds it
    for folder in (cache_root() / "embeddings").glob(f"{slug}*"):
        shutil.rmtree(folder)  # from an earlier run of the test on a kept cache: every fit here must happen
    yield log
    forget_fitted_methods()


def test_a_shared_fit_writes_the_records_separate_runs_write(tmp_path: Path, build_log: Path):
    shared_store, separate_store = tmp_path / "shared", tmp_path / "separate"
    # the grid in this process: SZ's in-city cell fits, NY←SZ embeds with that fit
    cells = [GridCell("SZ", "urbanln", "SI", tuple(sorted(SETTINGS.items())), None, ("Pop",), "transfer"),
             GridCell("NY", "urbanln", "SI", tuple(sorted(SETTINGS.items())), "SZ", ("Pop",), "transfer")]
    template = RunOptions(**{**OPTIONS, "method": ""}, results_dir=shared_store)
    report = run_grid(cells, template, workers=1)
    assert [r.status for _, r in sorted(report.results.items())] == ["computed", "computed"]
    fits = built(build_log, "fit")
    assert len(fits) == 1 and fits[0].endswith(" SZ SI")
    assert [report.results[i].fit_shared for i in (0, 1)] == [False, True]
    embeddings = built(build_log, "embeddings")
    assert len(embeddings) == 2
    # the same cells as separate runs, each fitting afresh (their cached embeddings removed first)
    for name in embeddings:
        (cache_root() / "embeddings" / name).unlink()
    messages: list[str] = []
    forget_fitted_methods()
    for extra in ({"city": "NY", "pretrain_city": "SZ"}, {"city": "SZ"}):
        with one_thread():  # as the grid's cell (--threads 1): a fit's float sums depend on the thread count
            # outside sharing_fits nothing is kept: NY←SZ fits, and so does SZ (whose fit is kept, for below)
            with sharing_fits() if extra["city"] == "SZ" else contextlib.nullcontext():
                run(RunOptions(**OPTIONS, **extra, results_dir=separate_store), log=messages.append)
    # NY←SZ fitted (outside sharing_fits: nothing kept, nothing noted), SZ fitted and its fit was kept
    assert len(built(build_log, "embeddings")) == 4 and len(built(build_log, "fit")) == 2
    assert not any("shared" in m for m in messages)
    shared, separate = clean_records(shared_store), clean_records(separate_store)
    assert len(shared) == 2 and shared == separate  # same keys, same numbers; only timings differ
    # a run inside sharing_fits whose fit is kept (SZ's, from the last run) says in its log that it shares it
    (cache_root() / "embeddings" / built(build_log, "embeddings")[2]).unlink()  # NY←SZ's separate embedding
    messages.clear()
    with one_thread(), sharing_fits():
        again = run(RunOptions(**OPTIONS, city="NY", pretrain_city="SZ", results_dir=tmp_path / "again"),
                    log=messages.append)
    assert len(built(build_log, "fit")) == 2 and any("fit on SZ shared" in m for m in messages)
    assert clean_records(tmp_path / "again") == {k: v for k, v in separate.items() if "from-SZ" in k}
    assert again[0].fit_shared


def test_a_fit_reading_the_probe_city_is_not_shared():
    """The oracle's latents are the probe city's own: its fit is keyed by the probe city too."""
    from urbanln_bench.data.sources import open_city
    from urbanln_bench.runner import fit_memo_key, make_method
    from urbanln_bench.specs import get_city

    ny, sz = (open_city(get_city(c), scale="tiny") for c in ("NY", "SZ"))
    options = RunOptions(method="oracle-latents", scale="tiny", profile="smoke")
    oracle = make_method(options)
    assert fit_memo_key(oracle, ny, "SI", options, ny) != fit_memo_key(oracle, sz, "SI", options, ny)
    options = RunOptions(method="urbanln", scale="tiny", profile="smoke", settings=SETTINGS)
    urbanln = make_method(options)
    assert fit_memo_key(urbanln, ny, "SI", options, sz) == fit_memo_key(urbanln, sz, "SI", options, sz)
    assert fit_memo_key(urbanln, ny, "SI", options, sz) != fit_memo_key(urbanln, ny, "SI", options, ny)


def _cells() -> list[GridCell]:
    return [GridCell("SZ", "urbanln", "SI"), GridCell("NY", "color-histogram", "SI"),
            GridCell("NY", "urbanln", "SI", pretrain_city="SZ"), GridCell("NY", "urbanln", "SV"),
            GridCell("BJ", "urbanln", "SI", pretrain_city="SZ")]


def test_a_fit_group_runs_in_a_row_after_its_first_cell():
    cells = _cells()
    jobs = [CellJob(i, cell, RunOptions(method=cell.method), 1) for i, cell in enumerate(cells)]
    assert [job.index for job in grouped_order(jobs)] == [0, 2, 4, 1, 3]
    assert cells[1].fit_group() is None  # a floor pretrains nothing
    assert cells[0].fit_group() == cells[2].fit_group() != cells[3].fit_group()


def test_the_eta_counts_a_fit_per_group_and_the_shared_cells_apart():
    cells = _cells()
    done = {0: CellResult(0, "computed", seconds=100.0), 2: CellResult(2, "computed", seconds=10.0, fit_shared=True)}
    # left: the floor and NY SV fit (100 s each), BJ←SZ shares SZ's fit (10 s); two workers
    assert eta_seconds(cells, [], done, 2) == pytest.approx((100 * 2 + 10) / 2)
    assert eta_seconds(cells, [], {}, 2) is None


def pid_of(task: str) -> int:
    """A task for the pool test: which worker ran it."""
    return os.getpid()


def test_the_pool_keeps_a_group_on_one_worker():
    groups = ["a", "b", "a", None, "b", "a", "b"]
    with worker_processes(2) as pool:
        events = [e for e in pool.run(pid_of, [str(i) for i in range(len(groups))], groups=groups) if e.kind == "done"]
    pids = {e.index: e.value for e in events}
    assert len(pids) == len(groups)
    assert len({pids[i] for i in (0, 2, 5)}) == 1 and len({pids[i] for i in (1, 4, 6)}) == 1
    assert len(set(pids.values())) == 2  # both workers ran tasks
