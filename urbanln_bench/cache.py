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
from collections.abc import Iterator
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


def note_build(kind: str, name: str) -> None:
    """Append ``kind<TAB>name<TAB>pid`` to ``$URBANLN_BENCH_BUILD_LOG`` (when set) after an artefact is built.

    One short ``O_APPEND`` write per line, so concurrent runs can share one log: it is how the
    concurrency tests count that every artefact was built exactly once (docs/reliability.md).
    """
    log = os.environ.get(BUILD_LOG_ENV)
    if not log:
        return
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{kind}\t{name}\t{os.getpid()}\n".encode())
    finally:
        os.close(fd)


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
