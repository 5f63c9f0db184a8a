"""``urbanln-bench grid`` (issue 13 §5, issue 14 §1; docs/grid.md): the cells it selects, and that its engines
write the records a plain ``run`` of each cell writes.

The grid here is the NY tiny twin × {colour histogram, random features} × {SV, SI}: four cells of two
tasks (Pop, Crime), one probe seed, no pretraining. Each engine runs on a cache of its own whose ``twins/`` is the
session's (so the twin is rendered once and every embedding is computed again), and its records are
compared with a sequential ``run`` of each cell, timings and digests aside (``test_kill_anywhere``'s
``clean_records``). One Ray session (``ray.init(num_cpus=2)``) serves every Ray test of the module.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli
from test_kill_anywhere import alive, clean_records, held_locks, leftovers

from urbanln_bench.cache import Build, build_seconds
from urbanln_bench.grid import (
    MU_SWEEP_EXTRA,
    CaptionBuild,
    GridCell,
    caption_seconds_per_image,
    estimate_seconds,
    ledger_runs,
    mu_sweep_values,
    parse_methods,
    plan_grid,
    read_ledger,
    strongest_baseline,
    transfer_cells,
)
from urbanln_bench.processes import worker_processes
from urbanln_bench.runner import RunOptions

METHODS = ("color-histogram", "random-features")
TASKS = ("--task", "Pop", "--task", "Crime")
COMMON = ("--city", "NY", "--scale", "tiny", "--profile", "smoke", "--seeds", "0", *TASKS)
DEADLINE = 600  # seconds before a wait fails instead of hanging (not a speed assertion)


def grid_args(store: Path, *extra: str) -> list[str]:
    return ["grid", "--cities", "NY", "--methods", ",".join(METHODS), "--no-frame", "--scale", "tiny",
            "--profile", "smoke", "--seeds", "0", *TASKS, "--results", str(store), *extra]


def fresh_cache(root: Path, shared: Path) -> Path:
    """A cache of its own that shares the session's rendered twins (a link to its ``twins/``)."""
    root.mkdir(parents=True)
    (shared / "twins").mkdir(parents=True, exist_ok=True)
    (root / "twins").symlink_to(shared / "twins", target_is_directory=True)
    return root


def environment(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["URBANLN_BENCH_CACHE"] = str(cache)
    env["URBANLN_BENCH_BUILD_LOG"] = str(cache / "builds.log")
    return env


@pytest.fixture(scope="module")
def sequential(tmp_path_factory, tiny_ny, cache_dir) -> dict[str, dict]:
    """The records of one ``run`` per method, one after another, in this process."""
    root = tmp_path_factory.mktemp("grid-sequential")
    env = environment(fresh_cache(root / "cache", cache_dir))
    for method in METHODS:
        result = cli("run", "--method", method, *COMMON, "--no-frame", "--results", str(root / "store"), env=env)
        assert result.returncode == 0, result.stdout + result.stderr
    records = clean_records(root / "store")
    assert len(records) == 8  # 2 methods × 2 imageries × 2 tasks
    return records


# -- what the grid selects ------------------------------------------------------------------------------

def test_paper_selection_comes_from_the_registry_and_the_paper():
    choices = parse_methods("paper")
    by_phase: dict[str, set] = {}
    for choice in choices:
        by_phase.setdefault(choice.phase, set()).add(choice.label)
    assert by_phase["methods"] == {"resnet18", "tile2vec", "pg-simclr", "remoteclip", "urbanclip", "musecl",
                                   "urbanvlp", "urbanln", "caption-regression"}  # the paper's, and the harness's own
    assert by_phase["ablations"] == {"urbanln-no-refinement", "urbanln-no-consensus", "urbanln-no-ipsi",
                                     "urbanln-no-msd"}
    # Table 4's values and the issue's 0.7; the default 0.5 is UrbanLN itself
    assert mu_sweep_values() == [0.3, 0.4, 0.5, 0.6, 0.7] and MU_SWEEP_EXTRA == (0.7,)
    assert by_phase["mu-sweep"] == {f"urbanln[mu={mu}]" for mu in ("0.3", "0.4", "0.6", "0.7")}
    frame = by_phase["frame"]
    assert {"color-histogram", "random-features", "scene-graph-ceiling", "scene-graph-ceiling-fused",
            "oracle-latents", "clip-start", "tile2vec-start", "pg-simclr-start", "musecl-start",
            "caption-regression-start", "caption-text-raw", "caption-text-refined", "caption-text-consensus"} <= frame
    from urbanln_bench.method import get_method

    assert {get_method(name).meta.role for name in frame} == {"floor", "ceiling", "oracle", "reference", "start"}
    starts = {get_method(c.name).meta.starts_from for c in choices} - {""}
    assert {n for n in frame if get_method(n).meta.role == "start"} == starts  # no start of an unselected method
    assert len(choices) == sum(len(v) for v in by_phase.values())  # nothing twice


def test_transfer_grid_is_four_by_four_on_pop():
    from urbanln_bench.specs import get_city

    assert strongest_baseline() == "urbanvlp"  # the paper's best baseline on Pop R² in every city
    specs = {city: get_city(city) for city in ("BJ", "SH", "SZ", "NY")}
    cells = transfer_cells(specs)
    assert all(cell.tasks == ("Pop",) and cell.phase == "transfer" for cell in cells)
    urbanln = [c for c in cells if c.method == "urbanln"]
    assert len(urbanln) == 4 * 4 * 2  # pretrain city × probe city × {SV, SI}
    assert sum(c.pretrain_city is None for c in urbanln) == 4 * 2  # the diagonal is in-city pretraining
    assert len([c for c in cells if c.method == "urbanvlp"]) == 16  # fused: one SV+SI cell per pair
    starts = [c for c in cells if c.method == "clip-start"]  # no pretraining: one row, per probe city
    assert len(starts) == 4 * 2 and all(c.pretrain_city is None for c in starts)


def test_plan_merges_duplicates_and_frames_twins():
    template = RunOptions(method="", scale="tiny", profile="smoke")
    plan = plan_grid(["NY"], parse_methods("random-features,urbanln"), template, imagery=["SI"], frame=True,
                     transfer=True)
    labels = [cell.label for cell in plan.cells]
    assert len(labels) == len(set(labels))
    assert "NY/urbanln/SI" in labels  # the transfer diagonal merged into the main cell (every task)
    assert {"NY/color-histogram/SI", "NY/oracle-latents/SI", "NY/scene-graph-ceiling/SI",
            "NY/clip-start/SI"} <= set(labels)
    phases = [cell.phase for cell in plan.cells]
    assert phases == sorted(phases, key=("methods", "ablations", "mu-sweep", "frame", "transfer").index)


def test_an_estimate_scales_other_cities_timings_by_how_much_slower_the_city_is():
    """The dry run's estimate (docs/grid.md "The whole grid, projected"): a cell's own timings when it has some;
    else its method's timings elsewhere, times the median ratio of the other methods' seconds between the two
    contexts; a setting never timed borrows its method's; a cell sharing a fit is estimated from shared ones."""
    def timing(method, city, seconds, settings=None, imagery="SV", shared=False):
        return {"method": method, "settings": settings or {}, "city": city, "pretrain_city": None, "imagery": imagery,
                "scale": "small", "profile": "cpu", "device": "cpu", "seconds": seconds, "fit_shared": shared}

    log = [timing("color-histogram", "NY", 10), timing("color-histogram", "BJ", 40),
           timing("oracle-latents", "NY", 20), timing("oracle-latents", "BJ", 100),
           timing("urbanln", "NY", 300), timing("urbanln", "NY", 30, shared=True),
           timing("urbanln", "SH", 999, imagery="SI")]  # SH SI: no method in common with BJ SV, kept as it is
    options = RunOptions(method="urbanln", city="BJ", scale="small", profile="cpu")

    def estimate(method, city, settings=(), shared=False, pretrain=None):
        cell = GridCell(city, method, "SV", tuple(settings), pretrain)
        return estimate_seconds(cell, options, log, shared)

    assert estimate("urbanln", "NY") == 300  # its own context
    assert estimate("urbanln", "BJ") == pytest.approx((300 * 4.5 + 999) / 2)  # ratios 4 and 5: median 4.5
    assert estimate("urbanln", "BJ", settings=(("mu", "0.7"),)) == estimate("urbanln", "BJ")
    assert estimate("urbanln", "NY", shared=True) == 30
    assert estimate("tile2vec", "BJ") is None
    assert estimate_seconds(GridCell("NY", "urbanln", "SV"), dataclasses.replace(options, scale="tiny"), log) is None


def test_an_estimate_counts_a_cells_own_work_not_the_shared_artefacts_it_built_first():
    """A timing that built a caption set on the way counts its seconds less the build's (``build_seconds``),
    and timings that say what they built are preferred to those logged before cells said: the dry run of
    stop 29 took BJ's and SH's UrbanLN cells, which had built their caption sets, for the cost of a cell.
    A cell that only probed embeddings found in the cache says nothing about one that fits."""
    def timing(seconds, **told):
        return {"method": "urbanln", "settings": {}, "city": "SH", "pretrain_city": None, "imagery": "SV",
                "scale": "small", "profile": "cpu", "device": "cpu", "seconds": seconds, "fit_shared": False, **told}

    options = RunOptions(method="urbanln", city="SH", scale="small", profile="cpu")
    cell = GridCell("SH", "urbanln", "SV")
    assert estimate_seconds(cell, options, [timing(1019)]) == 1019  # logged before cells said: all it has
    told = [timing(1019), timing(1400, built=["captions"], build_seconds=1000), timing(410, built=[], build_seconds=0),
            timing(31, built=[], build_seconds=0, probe_only=True)]  # 10 seeds probed on cached embeddings: no fit
    assert estimate_seconds(cell, options, told) == pytest.approx(405)  # median of 400 and 410; 1,019 left out
    unknown_length = [timing(1019), timing(1400, built=["captions"], build_seconds=None)]
    assert estimate_seconds(cell, options, unknown_length) == 1019


def test_build_seconds_count_nested_builds_once():
    """A grounder trained inside a caption build's interval is not counted twice; a build noted without its
    start makes the total unknown rather than too small."""
    builds = [Build("captions", "a", 10.0, 50.0), Build("grounder", "g", 20.0, 30.0), Build("fit", "f", 50.0, 90.0),
              Build("twin", "t", 60.0, 70.0)]
    assert build_seconds(builds) == 50.0  # 10–50 and 60–70; the fit is the cell's own work
    assert build_seconds([]) == 0.0
    assert build_seconds(builds + [Build("surrogate", "s", None, 95.0)]) is None


def test_each_caption_set_of_a_city_has_its_own_label():
    """The captions phase's rows (and the ledger's) tell every set a city's cells ask for apart: a baseline's
    single captioner is named, UrbanLN's pool counted; refinement and consensus always shown."""
    from urbanln_bench.captions.pipeline import PipelineConfig

    configs = [PipelineConfig(imagery="SV"), PipelineConfig(imagery="SV", refinement=False, consensus=False),
               PipelineConfig(imagery="SV", consensus=False), PipelineConfig(imagery="SV", refinement=False),
               PipelineConfig(imagery="SV", captioners=("synthetic:llama-adapter-v2",), candidates_per_captioner=1,
                              refinement=False, consensus=False),
               PipelineConfig(imagery="SV", captioners=("synthetic:sharegpt4v-7b",), candidates_per_captioner=1,
                              refinement=False, consensus=False)]
    labels = [CaptionBuild("SZ", c).label for c in configs]
    assert len(set(labels)) == len(labels), labels
    assert labels[0] == "SZ SV captions (5 captioners ×2, refinement on, consensus on)"
    assert labels[4] == "SZ SV captions (llama-adapter-v2 ×1, refinement off, consensus off)"


def test_a_caption_set_is_estimated_from_alike_sets_per_image():
    """The captions phase's estimate: seconds per image of the sets built with the same cost-relevant settings
    (seed and threshold aside), each set once, preferring this pipeline version and the phase's workers."""
    def built(key, seconds, images, workers=2, version=2, **config):
        settings = {"imagery": "SV", "captioners": ["a", "b"], "refinement": True, "consensus": True, "seed": 0}
        return {"key": key, "config": {**settings, **config}, "seconds_total": seconds, "counts": {"images": images},
                "workers": workers, "version": version}

    sets = [built("k1", 100, 1000), built("k2", 300, 1000, seed=3), built("k2", 300, 1000, seed=3),
            built("k3", 900, 1000, workers=1), built("k4", 50, 1000, version=1), built("k5", 9, 1000, consensus=False)]
    wanted = {"imagery": "SV", "captioners": ["a", "b"], "refinement": True, "consensus": True, "seed": 0,
              "threshold": None, "limit": None}
    assert caption_seconds_per_image(sets, wanted, workers=2, version=2) == pytest.approx(0.2)  # k1 and k2
    assert caption_seconds_per_image(sets, wanted, workers=1, version=2) == pytest.approx(0.9)
    assert caption_seconds_per_image(sets, {**wanted, "imagery": "SI"}, workers=2, version=2) is None


def test_the_dry_run_estimate_says_what_it_leaves_out():
    from urbanln_bench.grid import dry_run_estimate

    assert dry_run_estimate([], [], 0, 2) == "nothing to do"
    assert dry_run_estimate([None, None], [], 3, 2) == "no estimate: nothing like these cells was timed with this cache"
    assert dry_run_estimate([120.0, 60.0], [240.0], 0, 2) == (
        "estimate 5.0 min (captions phase 3.0 min for 2 of 2 caption set(s) not in the cache; "
        "cells 2.0 min on 2 worker(s) for 1 cell(s) timed before)")
    # sets or cells without an estimate: the total is a lower bound and says so (a fresh cache: 6 sets untimed)
    assert dry_run_estimate([None] * 6, [600.0, 600.0], 36, 2) == (
        "estimate at least 10.0 min (captions phase not estimated: 6 caption set(s) not in the cache, none like them "
        "timed; cells 10.0 min on 2 worker(s) for 2 cell(s) timed before, 36 never timed)")
    assert dry_run_estimate([60.0, None], [], 0, 1) == (
        "estimate at least 1.0 min (captions phase 1.0 min for 1 of 2 caption set(s) not in the cache, 1 never timed)")


def test_the_run_ledger_sums_a_grid_resumed_after_a_kill():
    """Each run's wall time is its last event minus its start: a run killed after its second cell counts up to
    that cell; a cell that reused its records is no computed cell; a line without its run's start is not counted."""
    events = [
        {"run": "a", "event": "start", "t": 100.0, "workers": 2, "cells": 3},
        {"run": "a", "event": "caption set", "t": 160.0, "label": "NY SV", "status": "built", "seconds": 60.0},
        {"run": "a", "event": "cell", "t": 260.0, "phase": "methods", "status": "computed", "seconds": 100.0},
        {"run": "a", "event": "cell", "t": 300.0, "phase": "frame", "status": "computed", "seconds": 40.0},
        {"run": "b", "event": "start", "t": 1000.0, "workers": 2, "cells": 3},
        {"run": "b", "event": "caption set", "t": 1001.0, "label": "NY SV", "status": "reused", "seconds": 1.0},
        {"run": "b", "event": "cell", "t": 1002.0, "phase": "methods", "status": "reused", "seconds": 1.0},
        {"run": "b", "event": "cell", "t": 1090.0, "phase": "methods", "status": "computed", "seconds": 88.0},
        {"run": "b", "event": "end", "t": 1091.0, "wall": 91.0, "failed": 0},
        {"run": "c", "event": "cell", "t": 2000.0, "phase": "methods", "status": "computed", "seconds": 5.0},
    ]
    a, b = ledger_runs(events)
    assert (a["wall"], a["ended"], a["captions"]) == (200.0, False, {"built": 1, "seconds": 60.0})
    assert a["phases"] == {"methods": {"cells": 1, "seconds": 100.0}, "frame": {"cells": 1, "seconds": 40.0}}
    assert (b["wall"], b["ended"], b["captions"]["built"]) == (91.0, True, 0)
    assert b["phases"] == {"methods": {"cells": 1, "seconds": 88.0}}


def test_bad_selections_are_refused_before_any_work():
    result = cli("grid", "--methods", "color-histogrm", "--dry-run")
    assert result.returncode == 2 and "did you mean" in result.stderr and "color-histogram" in result.stderr
    result = cli("grid", "--methods", "urbanln:mu=7", "--dry-run")
    assert result.returncode == 2 and "out of range" in result.stderr
    result = cli("grid", "--cities", "NYC", "--dry-run")
    assert result.returncode == 2 and "NY" in result.stderr
    result = cli("grid", "--methods", "paper", "--set", "mu=0.3", "--dry-run")
    assert result.returncode == 2 and "--set applies to named methods" in result.stderr


# -- the worker pool ------------------------------------------------------------------------------------

def double_or_die(task: str) -> str:
    """A task for the pool test: ``die`` SIGKILLs its own worker, ``raise`` fails, anything else returns."""
    if task == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    if task == "raise":
        raise ValueError("asked to")
    return task * 2


def test_a_dead_worker_costs_only_its_own_task():
    with worker_processes(2) as pool:
        events = list(pool.run(double_or_die, ["a", "die", "raise", "b", "c"]))
        assert len(pool._workers) == 2 and all(w.process.is_alive() for w in pool._workers)
    finished = {e.index: e for e in events if e.kind != "started"}
    assert finished[1].kind == "died" and finished[1].value == -signal.SIGKILL and not finished[1].retried
    assert finished[2].kind == "failed" and "ValueError: asked to" in finished[2].value
    assert {i: finished[i].value for i in (0, 3, 4)} == {0: "aa", 3: "bb", 4: "cc"}
    with worker_processes(1) as pool:  # with a retry, the task runs again on a fresh worker
        events = list(pool.run(double_or_die, ["die", "a"], retries=1))
    assert [(e.kind, e.index, e.retried) for e in events if e.kind == "died"] == [("died", 0, True), ("died", 0, False)]


# -- the engines write what a sequential run writes ------------------------------------------------------

def test_local_engine_two_workers_writes_the_sequential_records(tmp_path: Path, sequential):
    """On an empty cache: both workers need the NY twin at once; one renders it, the other waits on its lock."""
    cache, store = tmp_path / "cache", tmp_path / "store"
    cache.mkdir()
    env = environment(cache)
    before = cli(*grid_args(store, "--dry-run"), env=env)
    assert before.returncode == 0, before.stdout + before.stderr
    assert "0 finished, 0 to do, 4 cannot tell" in before.stdout  # the twin's content hash is in every key
    assert "no estimate: nothing like these cells was timed with this cache" in before.stdout
    result = cli(*grid_args(store, "--workers", "2"), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert clean_records(store) == sequential
    built = [line.split("\t") for line in (cache / "builds.log").read_text().splitlines()]
    assert len({(kind, name) for kind, name, _ in built}) == len(built), "an artefact was built twice"
    kinds = [kind for kind, _, _ in built]
    assert kinds.count("twin") == 1 and kinds.count("embeddings") == 4 and kinds.count("record") == 8
    assert len({pid for kind, _, pid in built if kind == "embeddings"}) == 2, "two workers shared the cells"
    after = cli(*grid_args(store, "--dry-run"), env=env)
    assert "4 finished, 0 to do" in after.stdout and "nothing to do" in after.stdout
    import urbanln_bench  # the checkout whose code decided the keys is named, run or dry run
    code = f"code: urbanln_bench from {Path(urbanln_bench.__file__).resolve().parents[1]} at git "
    assert code in after.stderr, after.stderr  # progress and notes go to stderr, tables to stdout
    starts = [json.loads(line) for line in (cache / "grid" / "runs.jsonl").read_text().splitlines()]
    assert {e["code"] for e in starts if e["event"] == "start"} == {str(Path(urbanln_bench.__file__).resolve().parents[1])}
    elsewhere = cli(*grid_args(tmp_path / "other-store", "--dry-run"), env=env)
    assert re.search(r"estimate [0-9.]+ min \(cells [0-9.]+ min on \d+ worker\(s\) for 4 cell\(s\) timed before\)",
                     elsewhere.stdout), elsewhere.stdout
    again = cli(*grid_args(store, "--workers", "1"), env=env)  # resumable: every cell reused (in this process)
    assert again.returncode == 0 and "frame" in again.stdout  # the summary's phase: both methods are floors
    assert len((cache / "builds.log").read_text().splitlines()) == len(built)
    assert leftovers(store, cache) == [] and held_locks(cache) == []


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory, cache_dir):
    """One local Ray cluster for the module; its workers start with a cache of their own."""
    import ray

    cache = fresh_cache(tmp_path_factory.mktemp("grid-ray") / "cache", cache_dir)
    saved = {name: os.environ.get(name) for name in ("URBANLN_BENCH_CACHE", "URBANLN_BENCH_BUILD_LOG",
                                                     "RAY_worker_niceness")}
    os.environ.update(environment(cache))  # the raylet and its workers inherit the cache and its build log
    os.environ["RAY_worker_niceness"] = "0"  # as the grid's own local Ray: not starved by a busy machine
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    yield cache
    ray.shutdown()


def test_ray_engine_writes_the_sequential_records(tmp_path: Path, sequential, ray_session):
    store = tmp_path / "store"
    result = cli(*grid_args(store, "--engine", "ray"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert clean_records(store) == sequential
    again = cli(*grid_args(store, "--engine", "ray"))  # a re-submitted grid reuses every cell
    assert again.returncode == 0, again.stdout + again.stderr
    assert clean_records(store) == sequential
    assert leftovers(store, ray_session) == [] and held_locks(ray_session) == []


def test_ray_engine_gives_the_view_the_cluster_s_parallelism(ray_session):
    """The ETA divides by the cells the cluster runs at once (its CPUs ÷ threads per cell), not by this
    machine's cores: the engine says it once connected, and the view takes it."""
    from rich.console import Console

    from urbanln_bench.grid import GridView, run_ray

    assert list(run_ray([], None)) == [("workers", -1, 2)]  # ray.init(num_cpus=2), one thread per cell
    view = GridView([GridCell("NY", "color-histogram", "SV")], 1, Console(quiet=True))
    view("workers", -1, 2)
    assert view.parallel == 2


def test_ray_cells_declare_their_resources():
    from urbanln_bench.grid import GIB, cell_resources

    options = RunOptions(method="", profile="cpu", device="cuda")
    trained = cell_resources(GridCell("NY", "urbanln", "SV"), options, threads=4)
    assert (trained.cpus, trained.gpus, trained.memory_bytes) == (4, 1.0, 3 * GIB)
    floor = cell_resources(GridCell("NY", "color-histogram", "SV"), options, threads=1)
    assert (floor.cpus, floor.gpus, floor.memory_bytes) == (1, 0.0, 1 * GIB)


# -- a worker killed mid-cell -----------------------------------------------------------------------------

def other_task(record: Path) -> Path:
    """The cell's other record: a cell here writes ``Pop_<imagery>_random.json`` and ``Crime_...``."""
    task, rest = record.name.split("_", 1)
    return record.with_name(f"{'Crime' if task == 'Pop' else 'Pop'}_{rest}")


def kill_a_worker_mid_cell(log: Path, process: subprocess.Popen, output: Path) -> int:
    """SIGKILL a worker between the two records of one cell and return its pid. Each time a worker logs a
    record, it is stopped (SIGSTOP) and the cell's other record looked for: missing, the worker is mid-cell and
    is killed; present or being written (the record logged was the cell's second, or the worker is inside the
    other's atomic write), it is let go and the next record waited for.
    So the kill lands inside a cell however fast the cells run, which a kill on the first logged record alone
    does not promise."""
    deadline = time.monotonic() + DEADLINE
    seen = 0
    while True:
        lines = [line.split("\t") for line in log.read_text().splitlines()] if log.exists() else []
        records = [(Path(name), int(pid)) for kind, name, pid in lines if kind == "record"]
        for record, pid in records[seen:]:
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                continue
            other = other_task(record)
            if not other.exists() and not list(other.parent.glob(f".{other.name}.*")):  # nor being written
                os.kill(pid, signal.SIGKILL)
                return pid
            os.kill(pid, signal.SIGCONT)
        seen = len(records)
        assert process.poll() is None, output.read_text()
        assert time.monotonic() < deadline, "no worker was caught between a cell's two records"
        time.sleep(0.01)


def kill_then_resubmit(args: list[str], env: dict[str, str] | None, log: Path, store: Path, cache: Path,
                       sequential: dict[str, dict], tmp_path: Path, crash: str) -> None:
    """Run the grid ``args``, kill a worker mid-cell (``kill_a_worker_mid_cell``), and check what both kill
    tests promise: exit 1 naming the crash (``crash`` in the output), no partial file, no held lock, every
    record left whole and equal to the sequential run's; then the same command again computes exactly the
    missing records and leaves the earlier build-log lines as they were."""
    with open(tmp_path / "grid.out", "w") as out:
        process = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            victim = kill_a_worker_mid_cell(log, process, tmp_path / "grid.out")
            rc = process.wait(timeout=DEADLINE)
        finally:
            if process.poll() is None:
                process.kill()
    output = (tmp_path / "grid.out").read_text()
    assert not alive(victim)
    assert rc == 1 and crash in output, output
    assert leftovers(store, cache) == [] and held_locks(cache) == []
    partial = clean_records(store)  # every record there is whole (its digest checks)
    assert len(partial) < 8 and all(sequential[path] == record for path, record in partial.items())
    before = log.read_text().splitlines()
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=DEADLINE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert clean_records(store) == sequential
    after = log.read_text().splitlines()
    assert after[:len(before)] == before
    rebuilt = [line.split("\t")[1] for line in after[len(before):] if line.startswith("record\t")]
    assert len(rebuilt) == 8 - len(partial), "only the missing records were computed"


@pytest.mark.slow  # two CLI processes, each starting two workers: over 20 s on two cores
def test_a_worker_killed_mid_cell_loses_only_its_cell(tmp_path: Path, sequential, cache_dir):
    """SIGKILL the worker that has just written a cell's first record (of two): the grid finishes the other
    cells, reports that one failed and leaves no partial file; the same command again completes it."""
    cache = fresh_cache(tmp_path / "cache", cache_dir)
    store = tmp_path / "store"
    log = cache / "builds.log"
    args = [sys.executable, "-m", "urbanln_bench.cli", *grid_args(store, "--workers", "2")]
    kill_then_resubmit(args, environment(cache), log, store, cache, sequential, tmp_path,
                       "its worker died (killed by SIGKILL)")


@pytest.mark.slow  # a second Ray driver process twice, each connecting to the module's cluster: over 20 s
def test_a_ray_worker_killed_mid_cell_loses_only_its_cell(tmp_path: Path, sequential, ray_session):
    """The Ray engine under the same kill: the task whose worker died fails (Ray's WorkerCrashedError, no
    retry by default), the other cells finish, no partial file is left, and the same grid submitted again to
    the same cluster computes only the missing records. The grid runs as its own driver, connected to the
    module's cluster by address, as a cluster user's would."""
    import ray

    address = ray.get_runtime_context().gcs_address
    store = tmp_path / "store"
    log = ray_session / "builds.log"
    if log.exists():  # the module's other Ray test may have run first: only this test's lines count
        log.unlink()
    args = [sys.executable, "-m", "urbanln_bench.cli", *grid_args(store, "--engine", "ray", "--address", address)]
    kill_then_resubmit(args, None, log, store, ray_session, sequential, tmp_path, "WorkerCrashedError")


# -- the captions phase ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_the_captions_phase_builds_each_caption_set_once_before_its_cells(tmp_path: Path):
    """A cell that needs a caption set finds it built by the grid's captions phase (in the grid's process,
    before any cell): one captions build, logged before the cell's fit, and the cell's record names that set;
    a resumed grid has no caption set left to build. Two workers: the cells run in fresh processes, so no fit
    memoised in this one (``runner.FIT_MEMO_SIZE``) hides a build. (Without the phase the cell builds the same
    set under the same key: the pipeline's bytes do not depend on its workers, ``test_caption_workers``.)"""
    args = ["grid", "--cities", "NY", "--methods", "caption-text-consensus", "--no-frame", "--scale", "tiny",
            "--profile", "smoke", "--seeds", "0", "--task", "Pop", "--imagery", "SI", "--workers", "2",
            "--results", str(tmp_path / "store")]
    (tmp_path / "cache").mkdir()
    env = environment(tmp_path / "cache")
    result = cli(*args, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "captions phase: 1 caption set(s)" in result.stdout + result.stderr
    assert "built NY SI captions" in result.stdout + result.stderr
    built = [line.split("\t") for line in (tmp_path / "cache" / "builds.log").read_text().splitlines()]
    kinds = [kind for kind, _, _ in built]
    assert kinds.count("captions") == 1 and kinds.index("captions") < kinds.index("fit")
    captions_pid = built[kinds.index("captions")][2]
    assert captions_pid != built[kinds.index("fit")][2]  # built by the grid's process, not by the cell's worker
    (record,) = clean_records(tmp_path / "store").values()
    assert record["pretraining"]["captions"]["SI"]["key"] == built[kinds.index("captions")][1].split("/")[1]
    (timing,) = [json.loads(line) for line in (tmp_path / "cache" / "grid" / "timings.jsonl").read_text().splitlines()]
    assert timing["built"] == [] and timing["build_seconds"] == 0  # the phase built the set, not the cell
    assert timing["probe_only"] is False and timing["seeds"] == 1  # it embedded the city: a fresh cache
    elsewhere = [*args[:-1], str(tmp_path / "other-store"), "--dry-run"]
    planned = cli(*elsewhere, env=env)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert re.search(r"NY SI captions \(2 captioners ×2, refinement on, consensus on\) *│ cached", planned.stdout), planned.stdout
    again = cli(*args, env=env)
    assert again.returncode == 0 and "captions phase" not in again.stdout + again.stderr
    first, second = ledger_runs(read_ledger(tmp_path / "cache" / "grid" / "runs.jsonl"))  # the dry run writes none
    assert first["ended"] and first["captions"]["built"] == 1 and first["phases"]["frame"]["cells"] == 1
    assert first["wall"] >= first["phases"]["frame"]["seconds"] > 0
    assert second["ended"] and second["captions"]["built"] == 0 and second["phases"] == {}
    assert [line.split("\t")[0] for line in (tmp_path / "cache" / "builds.log").read_text().splitlines()].count(
        "captions") == 1
