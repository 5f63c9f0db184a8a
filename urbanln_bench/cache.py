"""The on-disk cache (twins, captions, checkpoints, embeddings) and atomic, locked writes.

Root: ``$URBANLN_BENCH_CACHE`` or ``~/.cache/urbanln-bench``. Every entry is produced in a temporary
sibling and renamed into place, so a killed run never leaves a half-written entry, and a file lock
makes two runs on one cache wait for each other instead of producing the same entry twice. What this
relies on (``flock`` released by the OS when its holder dies, ``rename`` atomic within a filesystem, a
local filesystem) is in docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def cache_root() -> Path:
    env = os.environ.get("URBANLN_BENCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "urbanln-bench"


def config_hash(config: Any, length: int = 16) -> str:
    """Stable short hash of a JSON-able config (sorted keys)."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(canonical).hexdigest()[:length]


BUILD_LOG_ENV = "URBANLN_BENCH_BUILD_LOG"


# Artefacts that outlive the cell that built them: a later cell reuses them instead of paying for them again
SHARED_BUILDS = ("twin", "captions", "foundation", "surrogate", "grounder", "calibration")


@dataclass(frozen=True)
class Build:
    """One artefact this process built, and when (``time.perf_counter`` at its start and end, or None)."""

    kind: str
    name: str
    started: float | None
    ended: float


_BUILDS: list[Build] = []  # this process's builds, in order


def note_build(kind: str, name: str, started: float | None = None) -> None:
    """Note that an artefact was built: in this process's list (``builds``; with its seconds when the caller
    passes ``started``, its ``time.perf_counter()`` before the build), and as ``kind<TAB>name<TAB>pid`` in
    ``$URBANLN_BENCH_BUILD_LOG`` when set.

    The log gets one short ``O_APPEND`` write per line, so concurrent runs can share one log: it is how the
    concurrency tests count that every artefact was built exactly once (docs/reliability.md). The list is
    how the grid tells a cell's own work from the shared artefacts it happened to build first
    (``build_seconds``; docs/grid.md, the dry run's estimate).
    """
    _BUILDS.append(Build(kind, name, started, time.perf_counter()))
    log = os.environ.get(BUILD_LOG_ENV)
    if log:
        append_line(Path(log), f"{kind}\t{name}\t{os.getpid()}")


def append_line(path: Path, line: str) -> None:
    """Append ``line`` and a newline to ``path`` in one ``O_APPEND`` write (its folder made first): short lines
    from concurrent processes land whole, one after another, so several writers can share one log."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def read_json_lines(path: Path) -> list[Any]:
    """The JSON values of a log ``append_line`` wrote, in order; none when it does not exist. A line cut by a
    killed writer is skipped: the readers are estimates and sums, not worth failing for one."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def builds() -> list[Build]:
    """The artefacts this process has built so far, oldest first (a copy)."""
    return list(_BUILDS)


def build_seconds(done: list[Build], kinds: tuple[str, ...] = SHARED_BUILDS) -> float | None:
    """Wall seconds spent building the ``kinds`` among ``done``: the length of the union of their intervals,
    so a build nested in another (a grounder trained for a caption set's scorer) counts once. None when one
    of them was noted without its start."""
    spans = sorted((b.started, b.ended) for b in done if b.kind in kinds and b.started is not None)
    if any(b.kind in kinds and b.started is None for b in done):
        return None
    total, reach = 0.0, float("-inf")
    for start, end in spans:
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path``: the OS releases it when the holder dies, however it dies.

    The descriptor is close-on-exec and never shared with a forked child (pools spawn their workers,
    ``processes.worker_pool``), so a dead holder cannot leave the lock held by its children. The lock
    file itself stays behind, empty and unlocked: its presence means nothing.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_leftovers(target: Path) -> list[Path]:
    """Remove the temporary siblings a killed writer of ``target`` left (``.<name>.*.partial`` folders,
    ``.<name>.*.tmp`` files); returns them. Call it only while holding ``target``'s lock: then no live
    writer owns them."""
    if not target.parent.is_dir():
        return []
    prefix = f".{target.name}."
    removed = []
    for sibling in target.parent.iterdir():
        if sibling.name.startswith(prefix) and sibling.name.endswith((".partial", ".tmp")):
            if sibling.is_dir() and not sibling.is_symlink():
                shutil.rmtree(sibling, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    sibling.unlink()
            removed.append(sibling)
    return removed


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a temporary folder next to ``target``; on success it becomes ``target`` in one rename.

    Callers hold ``target``'s lock, so a ``.partial`` sibling found here is a killed run's: removed first.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``path`` through a ``.<name>.*.tmp`` sibling, fsync it, rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
