"""Result records: one JSON per (method variant, cell), self-describing (docs/architecture.md#core-concepts, MTEB-style).

A record carries per-seed and mean ± std metrics, the full config, the cache key, data provenance
(real or synthetic, manifest hash), backbone provenance (weight source), harness version and git
revision. Its ``key`` hashes everything that can change the numbers; a stored record with the same
key is reused, one with another key is stale. Records are written atomically.

Store layout: ``<results>/<data tag>/<city>/<variant slug>/<task>_<imagery>_<split strategy>.json``,
the data tag being ``synthetic-<scale>`` or ``real-<manifest hash[:12]>``.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from urbanln_bench import HARNESS_VERSION
from urbanln_bench.cache import atomic_write_text, config_hash
from urbanln_bench.errors import UserError
from urbanln_bench.registry import suggest

SCHEMA = 1
OVERWRITE = ("never", "only-missing", "always")


class CorruptRecordError(UserError):
    """A file in the result store that is not a valid record."""


def git_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=5, cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if out.returncode != 0:
        return "unknown"
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def data_tag(source: str, scale: str | None, manifest: str) -> str:
    return f"synthetic-{scale}" if source == "synthetic" else f"real-{manifest[:12]}"


def record_key(parts: dict[str, Any]) -> str:
    return config_hash({**parts, "harness_version": HARNESS_VERSION, "schema": SCHEMA}, length=64)


@dataclass(frozen=True)
class RecordPath:
    results: Path
    tag: str
    city: str
    slug: str
    task: str
    imagery: str
    strategy: str

    @property
    def path(self) -> Path:
        return self.results / self.tag / self.city / self.slug / f"{self.task}_{self.imagery}_{self.strategy}.json"


REQUIRED = ("schema", "key", "method", "cell", "data", "split", "probe", "per_seed", "metrics", "harness_version")


def load_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CorruptRecordError(f"{path}: corrupted result record (not JSON: {exc}); delete it or re-run with "
                                 "--overwrite always") from exc
    except OSError as exc:
        raise CorruptRecordError(f"{path}: unreadable result record: {exc}") from exc
    if not isinstance(record, dict):
        raise CorruptRecordError(f"{path}: corrupted result record (not a JSON object)")
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise CorruptRecordError(f"{path}: corrupted result record (missing {', '.join(missing)}); delete it or "
                                 "re-run with --overwrite always")
    for metric in ("r2", "rmse", "mae"):
        entry = record["metrics"].get(metric)
        if not isinstance(entry, dict) or not isinstance(entry.get("mean"), int | float):
            raise CorruptRecordError(f"{path}: corrupted result record (metrics.{metric}.mean missing or not a number)")
    return record


def check_overwrite(policy: str) -> str:
    if policy not in OVERWRITE:
        raise UserError(f"--overwrite must be one of {', '.join(OVERWRITE)}, got '{policy}'{suggest(policy, list(OVERWRITE))}")
    return policy


def reusable(path: Path, key: str, policy: str) -> dict[str, Any] | None:
    """The stored record to reuse under ``policy``, or None when the cell must be computed."""
    if policy == "always" or not path.exists():
        return None
    record = load_record(path)
    if record["key"] == key:
        return record
    if policy == "never":
        raise UserError(f"{path}: a record with another key exists (stale config or data) and --overwrite never "
                        "forbids replacing it; use --overwrite only-missing or always")
    return None


def write_record(path: Path, record: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True) + "\n")


def iter_records(results: Path):
    """Every record under a store, sorted by path; corrupted files raise CorruptRecordError."""
    for path in sorted(results.rglob("*.json")):
        if path.name.startswith("."):
            continue
        yield path, load_record(path)
