"""Kill anywhere, run again: nothing lost, duplicated or corrupt (issue 15; docs/reliability.md).

Each trial starts a real CLI process on its own cache, waits for a milestone drawn from a seeded
generator (so many PNGs rendered into the twin's ``.partial`` folder, the k-th artefact built, a lock
taken), kills it with SIGKILL or SIGTERM, checks that no worker outlived it and no lock is held, runs
the same command again and compares what it made with a clean run's: the twin's content digest, the
records (timings aside), no ``.partial`` or ``.tmp`` left. One synth kill and the pool test run in the
fast suite, the rest under ``slow`` (CI). Linux only, like the guarantees they test (``flock``, ``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from urbanln_bench.synth.twin import TWIN_GOLDEN, twin_content_digest, twin_versions

DEADLINE = 600  # seconds a step may take before the test fails instead of hanging (not a speed assertion)
RNG = random.Random(15)  # the kill points: random, but the same on every run


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "urbanln_bench.cli", *args]


def environment(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["URBANLN_BENCH_CACHE"] = str(cache)
    env["URBANLN_BENCH_BUILD_LOG"] = str(cache / "builds.log")
    return env


def children(pid: int) -> set[int]:
    """The live child processes of ``pid`` (Linux ``/proc``)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return set()
    return {int(p) for p in text.split()}


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(condition: Callable[[], bool], what: str, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the process ended (rc {process.returncode}) before {what}")
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def held_locks(cache: Path) -> list[Path]:
    """Lock files under ``cache`` that some process still holds."""
    held = []
    for path in cache.rglob("*.lock"):
        with open(path, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held.append(path)
            else:
                fcntl.flock(handle, fcntl.LOCK_UN)
    return held


def leftovers(*roots: Path) -> list[Path]:
    return [p for root in roots if root.exists() for p in root.rglob("*") if p.name.endswith((".partial", ".tmp"))]


def builds(cache: Path) -> list[tuple[str, str]]:
    log = cache / "builds.log"
    return [tuple(line.split("\t")[:2]) for line in log.read_text().splitlines()] if log.exists() else []


def kill_at(args: list[str], cache: Path, milestone: Callable[[], bool], what: str, sig: signal.Signals) -> None:
    """Start ``args``, send ``sig`` once ``milestone()`` holds, and check the process and all its workers
    are gone and hold no lock."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "killed.out", "w") as out:
        process = subprocess.Popen(args, env=environment(cache), stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_until(milestone, what, process)
            workers = children(process.pid)
            process.send_signal(sig)
            rc = process.wait(timeout=DEADLINE)
        finally:
            if process.poll() is None:
                process.kill()
    assert rc in (-sig, 128 + sig), f"killed at {what} with {sig.name}: rc {rc}\n{(cache / 'killed.out').read_text()}"
    wait_until(lambda: not any(alive(p) for p in workers), f"the workers {sorted(workers)} to die with their parent")
    assert held_locks(cache) == [], "a lock outlived the killed run"


def run_again(args: list[str], cache: Path) -> str:
    result = subprocess.run(args, env=environment(cache), capture_output=True, text=True, timeout=DEADLINE)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def partial_pngs(cache: Path) -> int:
    twins = cache / "twins"
    if not twins.exists():
        return 0
    return sum(1 for folder in twins.glob(".*.partial") for _ in folder.rglob("*.png"))


def clean_records(store: Path) -> dict[str, dict]:
    """Every record under ``store`` by relative path, with the wall-clock timings and the machine dropped (a grid
    worker runs one torch thread, a sequential run all of them: the numbers must agree, the provenance says
    which), and with them the content digest, which covers both (each record is loaded first, so its digest
    must be valid)."""
    from urbanln_bench.records import load_record

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("seconds", "digest", "machine")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    paths = [p for p in sorted(store.rglob("*.json")) if not p.name.startswith(".")]
    for path in paths:
        load_record(path)  # a TamperedRecordError if the digest does not match the content
    return {p.relative_to(store).as_posix(): strip(json.loads(p.read_text())) for p in paths}


# -- data synth ------------------------------------------------------------------------------------

SYNTH = ("data", "synth", "--city", "NY", "--scale", "tiny")
SYNTH_POINTS = [(RNG.randint(1, 120), sig) for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGKILL, signal.SIGTERM)]


def check_synth_recovers(tmp_path: Path, pngs: int, sig: signal.Signals) -> None:
    cache = tmp_path / "cache"
    kill_at(cli(*SYNTH), cache, lambda: partial_pngs(cache) >= pngs, f"{pngs} PNGs rendered", sig)
    folder = Path(run_again(cli(*SYNTH), cache).strip().splitlines()[-1])
    assert twin_content_digest(folder) == TWIN_GOLDEN[twin_versions()], "the twin differs from a clean run's"
    assert leftovers(cache) == [] and held_locks(cache) == []
    assert [kind for kind, _ in builds(cache)] == ["twin"]


def test_kill_during_twin_rendering_fast(tmp_path: Path) -> None:
    """The reported hang: SIGKILL mid-render; the workers die, the lock is free, the next run completes."""
    check_synth_recovers(tmp_path, *SYNTH_POINTS[0])


@pytest.mark.slow
@pytest.mark.parametrize("point", SYNTH_POINTS[1:], ids=lambda p: f"{p[0]}png-{p[1].name}")
def test_kill_during_twin_rendering(tmp_path: Path, point) -> None:
    check_synth_recovers(tmp_path, *point)


def test_pool_workers_hold_no_lock_and_die_with_their_parent(tmp_path: Path) -> None:
    """A process holding a cache lock starts a worker pool and is SIGKILLed: its workers never had the
    lock's descriptor (spawned, not forked), die with it (PR_SET_PDEATHSIG), and the lock is free."""
    lock = tmp_path / "x.lock"
    script = (
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "from urbanln_bench.cache import file_lock\n"
        "from urbanln_bench.processes import worker_pool\n"
        f"with file_lock(Path({str(lock)!r})):\n"
        "    with worker_pool(2) as pool:\n"
        "        fds = pool.map(os.listdir, ['/proc/self/fd'] * 2)\n"
        "        print(pool.apply(os.getpid), flush=True)\n"
        "        pool.map_async(time.sleep, [600, 600])\n"
        "        print('ready', flush=True)\n"
        "        time.sleep(600)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        first = process.stdout.readline()
        assert first.strip().isdigit(), first
        assert process.stdout.readline().strip() == "ready"
        workers = children(process.pid)
        assert int(first) in workers
        assert held_locks(tmp_path) == [lock]
        for pid in workers:
            targets = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")
                       if os.path.exists(f"/proc/{pid}/fd/{fd}")}
            assert str(lock) not in targets, f"worker {pid} inherited the lock file"
        process.kill()
        process.wait(timeout=DEADLINE)
    finally:
        if process.poll() is None:
            process.kill()
    wait_until(lambda: not any(alive(p) for p in workers), "the pool's workers to die with their parent")
    assert held_locks(tmp_path) == []


# -- a grid: one run, several methods (the method and its frame: floor, ceiling, oracle) ----------------

def grid_args(store: Path) -> list[str]:
    return cli("run", "--method", "random-features", "--city", "NY", "--scale", "tiny", "--profile", "smoke",
               "--seeds", "0-1", "--task", "Pop", "--results", str(store))


@pytest.fixture(scope="module")
def grid_reference(tmp_path_factory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("grid-reference")
    run_again(grid_args(root / "store"), root / "cache")
    records = clean_records(root / "store")
    assert len(records) == 8  # 4 methods (random features, colour floor, scene-graph ceiling, oracle) × SV, SI
    return records


def record_count(cache: Path) -> int:
    return sum(kind == "record" for kind, _ in builds(cache))


GRID_POINTS = [(RNG.randint(0, 7), sig) for sig in (signal.SIGTERM, signal.SIGKILL, signal.SIGTERM)]


def check_grid_recovers(tmp_path: Path, reference: dict[str, dict], records: int, sig: signal.Signals) -> None:
    cache, store = tmp_path / "cache", tmp_path / "store"
    if records == 0:  # before any record: while the twin renders
        kill_at(grid_args(store), cache, lambda: partial_pngs(cache) >= 30, "the twin's 30th PNG", sig)
    else:
        kill_at(grid_args(store), cache, lambda: record_count(cache) >= records, f"record {records}", sig)
    before = builds(cache)
    run_again(grid_args(store), cache)
    assert clean_records(store) == reference, "the resumed grid's records differ from a clean run's"
    assert leftovers(cache, store) == [] and held_locks(cache) == []
    built = builds(cache)
    assert len(set(built)) == len(built), "an artefact was built twice"
    assert built[:len(before)] == before and len(built) > len(before)


@pytest.mark.slow
@pytest.mark.parametrize("point", GRID_POINTS, ids=lambda p: f"record{p[0]}-{p[1].name}")
def test_kill_grid(tmp_path: Path, grid_reference, point) -> None:
    check_grid_recovers(tmp_path, grid_reference, *point)


# -- a caption build (pretraining-world twins, the phrase grounder, the caption set) -------------------

CAPTIONS = ("captions", "build", "--city", "NY", "--scale", "tiny", "--limit", "6", "--scorer", "clip:smoke")


def caption_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.jsonl"))}


@pytest.fixture(scope="module")
def captions_reference(tmp_path_factory) -> tuple[Path, Path]:
    """A clean caption build: its cache (twins and grounder to copy) and its caption set's folder."""
    cache = tmp_path_factory.mktemp("captions-reference") / "cache"
    folder = Path(run_again(cli(*CAPTIONS), cache).strip().splitlines()[-1])
    assert caption_files(folder)
    return cache, folder


def caption_partials(cache: Path) -> bool:
    return any(cache.glob("twins/NY-*/captions/.*.partial"))


CAPTION_POINTS = [("PW twin PNG", RNG.randint(1, 200), signal.SIGTERM),
                  ("grounder training", RNG.uniform(0.0, 2.0), signal.SIGKILL),
                  ("captioning", RNG.uniform(0.0, 1.0), signal.SIGTERM)]


@pytest.mark.slow
@pytest.mark.parametrize("point", CAPTION_POINTS, ids=lambda p: f"{p[0].replace(' ', '-')}-{p[2].name}")
def test_kill_caption_build(tmp_path: Path, captions_reference, point) -> None:
    import shutil

    reference_cache, reference_folder = captions_reference
    stage, amount, sig = point
    cache = tmp_path / "cache"
    if stage == "PW twin PNG":
        milestone, what = (lambda: partial_pngs(cache) >= amount), f"{amount} pretraining-world PNGs"
    elif stage == "grounder training":
        def milestone() -> bool:
            return any((cache / "backbones").glob("phrase-grounder-*.lock")) and time.sleep(amount) is None
        what = f"{amount:.2f} s into the grounder's training"
    else:  # the twins and the grounder are there: kill while the caption set is written
        shutil.copytree(reference_cache / "twins", cache / "twins",
                        ignore=shutil.ignore_patterns("captions"))
        shutil.copytree(reference_cache / "backbones", cache / "backbones")
        def milestone() -> bool:
            return caption_partials(cache) and time.sleep(amount) is None
        what = f"{amount:.2f} s into captioning"
    kill_at(cli(*CAPTIONS), cache, milestone, what, sig)
    folder = Path(run_again(cli(*CAPTIONS), cache).strip().splitlines()[-1])
    assert folder.name == reference_folder.name
    assert caption_files(folder) == caption_files(reference_folder), "the caption set differs from a clean build's"
    assert leftovers(cache) == [] and held_locks(cache) == []
    built = builds(cache)
    assert len(set(built)) == len(built)


# -- a pretraining (Tile2Vec: pair training, checkpoint in the fit's work folder, then the embedding) ----

def pretrain_args(store: Path) -> list[str]:
    return cli("run", "--method", "tile2vec", "--city", "NY", "--scale", "tiny", "--profile", "smoke",
               "--seeds", "0-1", "--task", "Pop", "--no-frame", "--results", str(store))


@pytest.fixture(scope="module")
def pretrain_reference(tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    root = tmp_path_factory.mktemp("pretrain-reference")
    run_again(pretrain_args(root / "store"), root / "cache")
    return root / "cache", clean_records(root / "store")


PRETRAIN_POINTS = [("fitting", RNG.uniform(0.0, 3.0), signal.SIGKILL),
                   ("embedding", RNG.uniform(0.0, 0.5), signal.SIGTERM)]


@pytest.mark.slow
@pytest.mark.parametrize("point", PRETRAIN_POINTS, ids=lambda p: f"{p[0]}-{p[2].name}")
def test_kill_pretraining(tmp_path: Path, pretrain_reference, point) -> None:
    import shutil

    reference_cache, reference = pretrain_reference
    stage, delay, sig = point
    cache, store = tmp_path / "cache", tmp_path / "store"
    shutil.copytree(reference_cache / "twins", cache / "twins")
    if stage == "fitting":
        def milestone() -> bool:
            return any((cache / "embeddings").rglob("*.lock")) and time.sleep(delay) is None
    else:  # the fit saved its checkpoint; the next run resumes from it
        def milestone() -> bool:
            return any((cache / "embeddings").rglob("*-work/*.json")) and time.sleep(delay) is None
    kill_at(pretrain_args(store), cache, milestone, f"{delay:.2f} s into {stage}", sig)
    run_again(pretrain_args(store), cache)
    assert clean_records(store) == reference, "the resumed pretraining's records differ from a clean run's"
    assert leftovers(cache, store) == [] and held_locks(cache) == []


# -- concurrency: two runs of overlapping grids on one store and one cache -------------------------------

def concurrent_args(store: Path, *tasks: str) -> list[str]:
    return cli("run", "--method", "remoteclip", "--city", "NY", "--scale", "tiny", "--profile", "smoke",
               "--seeds", "0-1", "--imagery", "SI", *(a for t in tasks for a in ("--task", t)),
               "--results", str(store))


@pytest.mark.slow
def test_two_overlapping_runs_build_everything_once(tmp_path: Path) -> None:
    """Both start on an empty cache (a fresh twin, fresh pretraining-world twins, a fresh synthetic
    foundation CLIP) and share the Crime cell and every frame record of it: each artefact is built once,
    and the records equal one run's of the union grid on its own cache."""
    cache, store = tmp_path / "cache", tmp_path / "store"
    cache.mkdir()
    outs = [open(tmp_path / f"run{i}.out", "w") for i in range(2)]
    try:
        runs = [subprocess.Popen(concurrent_args(store, *tasks), env=environment(cache), stdout=out,
                                 stderr=subprocess.STDOUT)
                for tasks, out in zip((("Pop", "Crime"), ("Crime", "POI")), outs, strict=True)]
        codes = [run.wait(timeout=DEADLINE) for run in runs]
    finally:
        for out in outs:
            out.close()
    assert codes == [0, 0], [(tmp_path / f"run{i}.out").read_text()[-3000:] for i in range(2)]
    built = builds(cache)
    assert len(set(built)) == len(built), f"built twice: {[b for b in built if built.count(b) > 1]}"
    kinds = [kind for kind, _ in built]
    assert kinds.count("foundation") == 1 and kinds.count("twin") == 4  # NY and the three pretraining-world cities
    assert leftovers(cache, store) == [] and held_locks(cache) == []

    single_cache, single_store = tmp_path / "single-cache", tmp_path / "single-store"
    run_again(concurrent_args(single_store, "Pop", "Crime", "POI"), single_cache)
    assert clean_records(store) == clean_records(single_store)
    alone = builds(single_cache)
    assert sorted(b for b in built if b[0] != "record") == sorted(b for b in alone if b[0] != "record")
    assert kinds.count("record") == sum(kind == "record" for kind, _ in alone)
