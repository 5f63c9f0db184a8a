"""Shared fixtures: a hand-made real-data city folder and a cached tiny twin."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Every test (and every CLI subprocess a test starts) uses one throw-away cache, never the user's. The
# process that starts the run makes it and removes it at the end; pytest-xdist workers inherit its
# environment and share it, so each tiny artefact (twin, foundation, grounder, surrogate) is built once
# per run: the cache's file locks make a second worker wait for the first instead of building it again.
_SHARED = "_URBANLN_BENCH_TEST_CACHE"
_OWNS_CACHE = not (os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get(_SHARED))
if _OWNS_CACHE:
    os.environ[_SHARED] = tempfile.mkdtemp(prefix="urbanln-test-cache-")
os.environ["URBANLN_BENCH_CACHE"] = os.environ[_SHARED]
# One caption worker per test process: pytest-xdist already runs a test process per core, and a spawned
# worker would not see a test's monkeypatches. tests/test_caption_workers.py asks for workers itself.
os.environ["URBANLN_BENCH_WORKERS"] = "1"


def pytest_sessionfinish(session, exitstatus) -> None:
    if _OWNS_CACHE:
        import shutil

        shutil.rmtree(os.environ[_SHARED], ignore_errors=True)


def write_city_dir(root: Path, *, n_regions: int = 12, tasks=("Pop", "Crime"), streetviews: int = 2,
                   city: str = "NY") -> Path:
    """A small, valid city folder in the native layout, as a user with real data would write it."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    (root / "city.json").write_text(json.dumps({"city": city, "source": "real", "tasks": list(tasks)}))
    ids = [f"t{i:03d}" for i in range(n_regions)]
    lines = ["region_id,row,col,lat,lon"] + [f"{rid},{i // 4},{i % 4},{40 + i * 0.01:.4f},{-74 + i * 0.01:.4f}"
                                            for i, rid in enumerate(ids)]
    (root / "regions.csv").write_text("\n".join(lines) + "\n")
    values = ["region_id," + ",".join(tasks)]
    for i, rid in enumerate(ids):
        row = [rid] + [("" if (i == 3 and j == 0) else f"{(i + 1) * 10 + j}") for j in range(len(tasks))]
        values.append(",".join(row))
    (root / "indicators.csv").write_text("\n".join(values) + "\n")
    (root / "satellite").mkdir(exist_ok=True)
    for i, rid in enumerate(ids):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / "satellite" / f"{rid}.png")
        if i % 5 == 4:
            continue  # some regions have no street view
        folder = root / "streetview" / rid
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(streetviews):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / f"{k}.jpg")
    (root / "aux").mkdir(exist_ok=True)
    (root / "aux" / "poi_counts.csv").write_text(
        "region_id,food,shopping\n" + "".join(f"{rid},{i},{2 * i}\n" for i, rid in enumerate(ids)))
    (root / "aux" / "mobility.csv").write_text(
        "origin_id,destination_id,trips\n" + "".join(f"{ids[i]},{ids[(i + 1) % n_regions]},{i + 1}\n"
                                                     for i in range(n_regions)))
    return root


@pytest.fixture
def city_dir(tmp_path: Path) -> Path:
    return write_city_dir(tmp_path / "NY")


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    return Path(os.environ["URBANLN_BENCH_CACHE"])


def install_plugin(site: Path, package: str, code: str, entry_points: dict[str, str]) -> dict[str, str]:
    """Install a throw-away third-party method package into ``site`` (outside this repo's tree) the way
    pip lays one out — a module plus a ``.dist-info`` with ``entry_points.txt`` — and return the
    environment under which a subprocess sees it."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{package}.py").write_text(code)
    info = site / f"{package}-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[urbanln_bench.methods]\n{lines}")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(site) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def toy_pairs(n: int, caption, size: int = 32) -> tuple[list[np.ndarray], list[str]]:
    """Toy CLIP training data: ``n`` tiles of four solid colours with seeded sensor noise, and
    ``caption(colour name, index)`` for each."""
    rng = np.random.default_rng(0)
    colours = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 40)}
    images, captions = [], []
    for i in range(n):
        name = list(colours)[i % 4]
        images.append(np.clip(np.array(colours[name]) + rng.normal(0, 10, (size, size, 3)), 0, 255).astype(np.uint8))
        captions.append(caption(name, i))
    return images, captions


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def cli_process(*args: str, env: dict | None = None, cwd: Path | None = None) -> CliResult:
    """Run the CLI in a new process, for what only a process shows (an installed plugin, imports)."""
    import subprocess

    done = subprocess.run([sys.executable, "-m", "urbanln_bench.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd)
    return CliResult(done.returncode, done.stdout, done.stderr)


@contextmanager
def plugin_path(entries: list[str]):
    """``entries`` on sys.path, as PYTHONPATH would put them, with the method registry re-discovering
    entry points there; afterwards the registry, sys.path and the imported plugin modules are as before."""
    from urbanln_bench.method import METHODS

    saved_path, saved_modules = list(sys.path), set(sys.modules)
    saved_registry = (dict(METHODS._entries), METHODS._discovered)
    sys.path[:0] = entries
    if entries:  # discover again, from scratch (the built-ins are entry points too)
        METHODS._entries, METHODS._discovered = {}, False
    try:
        yield
    finally:
        sys.path[:] = saved_path
        METHODS._entries, METHODS._discovered = saved_registry
        for name in set(sys.modules) - saved_modules:
            origin = getattr(sys.modules[name], "__file__", None) or ""
            if any(origin.startswith(entry) for entry in entries):
                del sys.modules[name]


def cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> CliResult:
    """Run the CLI as ``urbanln-bench ARGS`` would, through its ``main`` (exit code, stdout, stderr), in
    this process: a new process costs ~2 s of imports. A PYTHONPATH in ``env`` (a plugin installed for
    the test) goes on sys.path for the call (``plugin_path``)."""
    import contextlib
    import io
    import traceback

    extra: list[str] = []
    if env is not None and env.get("PYTHONPATH", "") != os.environ.get("PYTHONPATH", ""):
        current = os.environ.get("PYTHONPATH", "").split(os.pathsep)
        extra = [p for p in env["PYTHONPATH"].split(os.pathsep) if p and p not in current]
    from urbanln_bench import cli as cli_module

    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_env, saved_cwd = sys.argv, dict(os.environ), os.getcwd()
    code = 0
    try:
        sys.argv = ["urbanln-bench", *args]
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        if cwd is not None:
            os.chdir(cwd)
        with plugin_path(extra), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                warnings.catch_warnings():
            # as a process would: warnings go to its stderr, not to pytest's summary
            warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: err.write(
                warnings.formatwarning(message, category, filename, lineno, line))
            try:
                cli_module.main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except Exception:  # what a process would print before exiting 1
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)
    return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def tiny_ny(cache_dir: Path) -> Path:
    """The NY twin at scale tiny, generated once per test session."""
    from urbanln_bench.specs import get_city
    from urbanln_bench.synth.twin import ensure_twin

    return ensure_twin(get_city("NY"), "tiny", root=cache_dir)
