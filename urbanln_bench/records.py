"""Result records: one JSON per (method variant, cell), self-describing (docs/architecture.md#core-concepts, MTEB-style).

A record carries per-seed and mean ± std metrics, the full config, the cache key, data provenance
(real or synthetic, manifest hash), backbone provenance (weight source), harness version and git
revision. Its ``key`` hashes everything that can change the numbers; a stored record with the same
key is reused, one with another key is stale. Records are written atomically.

Store layout: ``<results>/<data tag>/<city>/<variant slug>/<task>_<imagery>_<split strategy>.json``,
the data tag being ``synthetic-<scale>`` or ``real-<manifest hash[:12]>``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import types
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from urbanln_bench import HARNESS_VERSION
from urbanln_bench.cache import atomic_write_text, config_hash
from urbanln_bench.errors import UserError
from urbanln_bench.paths import contained
from urbanln_bench.registry import suggest

SCHEMA = 1
OVERWRITE = ("never", "only-missing", "always")


class CorruptRecordError(UserError):
    """A file in the result store that is not a valid record."""


class TamperedRecordError(CorruptRecordError):
    """A record whose content no longer matches the digest written with it (edited by hand)."""


DIGEST_FIELD = "digest"
DIGEST_PREFIX = "sha256:"


def record_digest(data: dict[str, Any]) -> str:
    """The content digest of a record (JSON object): sha256 over its canonical JSON (sorted keys, no
    whitespace) without the digest field itself. Written with every record so that a number edited by
    hand, key kept, is detected (docs/identity.md#tamper-evident-records). It is not part of the key."""
    body = {k: v for k, v in data.items() if k != DIGEST_FIELD}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return DIGEST_PREFIX + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def check_digest(data: dict[str, Any], source: str) -> str | None:
    """The record's digest when it matches its content, None for an unsealed record (no digest)."""
    stored = data.get(DIGEST_FIELD)
    if stored is None:
        return None
    if not isinstance(stored, str) or not stored.startswith(DIGEST_PREFIX):
        raise CorruptRecordError(f"{source}: corrupted result record (field '{DIGEST_FIELD}' must be "
                                 f"'{DIGEST_PREFIX}<hex>', got {stored!r})")
    if stored != record_digest(data):
        raise TamperedRecordError(f"{source}: the record's content does not match its digest: it was edited after "
                                  "it was written (numbers changed by hand?). Restore it (git checkout) or re-run "
                                  "its cell with --overwrite always")
    return stored


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
        path = self.results / self.tag / self.city / self.slug / f"{self.task}_{self.imagery}_{self.strategy}.json"
        return contained(path, self.results, "result record")


@dataclass(frozen=True)
class MetricSummary:
    """One metric over the seeds: mean, sample std (None for one seed) and the number of seeds."""

    mean: float
    std: float | None
    n: int


@dataclass(frozen=True)
class MethodInfo:
    """Which method variant made the record, as the leaderboard shows it."""

    name: str
    display_name: str
    variant: str
    slug: str
    version: str
    config: dict[str, Any]
    overrides: dict[str, Any]
    role: str  # method / floor / oracle
    ours: bool
    native_imagery: tuple[str, ...]
    weight_source: str
    uses_aux: tuple[str, ...]
    ablation_of: str = ""


@dataclass(frozen=True)
class CellInfo:
    id: str  # e.g. NY/Pop/SV
    city: str
    task: str
    imagery: str


@dataclass(frozen=True)
class DataInfo:
    source: str  # synthetic / real
    manifest: str
    scale: str | None
    tag: str
    street_view_cap: int | None = None


@dataclass(frozen=True)
class Record:
    """One result record (schema ``SCHEMA``): what every reader of a result goes through.

    ``to_json`` / ``from_json`` convert to and from the JSON object on disk; ``from_json`` validates
    and names the file and the field that are wrong, and migrates older schemas (``MIGRATIONS``).
    """

    key: str
    method: MethodInfo
    cell: CellInfo
    fit_city: str
    data: DataInfo
    split: dict[str, Any]
    probe: dict[str, Any]
    per_seed: list[dict[str, Any]]
    metrics: dict[str, MetricSummary]
    embedding: dict[str, Any]
    harness_version: str
    git_revision: str
    pretraining: dict[str, Any] | None = None
    notes: tuple[str, ...] = ()
    # {"probe": the machine that probed and wrote the record, "embedding": the one that fitted and embedded (None:
    # an embedding cached before embeddings said)}; None: written before records said (the field is then absent)
    machine: dict[str, Any] | None = None
    schema: int = SCHEMA
    # content digest as read (record_digest); None: unsealed. Not content: equality and to_json ignore it
    digest: str | None = field(default=None, compare=False)

    @property
    def is_transfer(self) -> bool:
        return self.fit_city != self.cell.city

    def metric(self, name: str) -> MetricSummary:
        return self.metrics[name]

    def metric_dicts(self) -> dict[str, dict[str, Any]]:
        """{metric: {mean, std, n}} as on disk."""
        return {name: asdict(summary) for name, summary in self.metrics.items()}

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["method"]["native_imagery"] = list(self.method.native_imagery)
        out["method"]["uses_aux"] = list(self.method.uses_aux)
        out["notes"] = list(self.notes)
        if self.data.street_view_cap is None:
            del out["data"]["street_view_cap"]
        if self.machine is None:  # records written before the field keep their digest
            del out["machine"]
        del out[DIGEST_FIELD]  # the content only: write_record seals it with a fresh digest
        return out

    @classmethod
    def from_json(cls, data: Any, source: str = "record") -> Record:
        if not isinstance(data, dict):
            raise CorruptRecordError(f"{source}: corrupted result record (not a JSON object)")
        schema = data.get("schema")
        if not isinstance(schema, int):
            raise CorruptRecordError(f"{source}: corrupted result record (field 'schema' missing or not an integer)")
        if schema > SCHEMA:
            raise CorruptRecordError(f"{source}: record schema {schema} is newer than this urbanln-bench reads "
                                     f"({SCHEMA}); upgrade urbanln-bench")
        raw = data  # the digest seals the record as written, before any migration
        while schema < SCHEMA:
            if schema not in MIGRATIONS:
                raise CorruptRecordError(f"{source}: record schema {schema} has no migration to {SCHEMA}")
            data = MIGRATIONS[schema](dict(data))
            schema = data["schema"]
        missing = [k for k in REQUIRED if k not in data]
        if missing:
            raise CorruptRecordError(f"{source}: corrupted result record (missing {', '.join(missing)}); delete it "
                                     "or re-run with --overwrite always")
        for name, cls_ in (("method", MethodInfo), ("cell", CellInfo), ("data", DataInfo)):
            _check_fields(data[name], cls_, name, source)
        for name, kind in (("split", dict), ("probe", dict), ("per_seed", list), ("metrics", dict),
                           ("key", str), ("harness_version", str), ("embedding", dict | None),
                           ("pretraining", dict | None), ("notes", list | None), ("fit_city", str),
                           ("git_revision", str), ("machine", dict | None)):
            if name in data and not isinstance(data[name], kind):
                raise CorruptRecordError(f"{source}: corrupted result record (field '{name}' must be "
                                         f"{_kind_name(kind)}, got {type(data[name]).__name__} {data[name]!r:.60}); "
                                         "delete it or re-run its cell with --overwrite always")
        if not all(isinstance(entry, dict) for entry in data["per_seed"]):
            raise CorruptRecordError(f"{source}: corrupted result record (field 'per_seed' must be a list of "
                                     "objects, one per seed)")
        method = dict(data["method"])
        method_info = MethodInfo(**{**method, "native_imagery": tuple(method["native_imagery"]),
                                    "uses_aux": tuple(method.get("uses_aux", ()))})
        cell = CellInfo(**data["cell"])
        data_info = DataInfo(**data["data"])
        metrics = {}
        for name, entry in data["metrics"].items():
            if not isinstance(entry, dict) or not _is_number(entry.get("mean")):
                raise CorruptRecordError(f"{source}: corrupted result record (metrics.{name}.mean missing or not a "
                                         "number)")
            if entry.get("std") is not None and not _is_number(entry["std"]):
                raise CorruptRecordError(f"{source}: corrupted result record (metrics.{name}.std must be a number "
                                         f"or null, got {entry['std']!r:.60})")
            n = entry.get("n", 1)
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise CorruptRecordError(f"{source}: corrupted result record (metrics.{name}.n must be a positive "
                                         f"integer, got {n!r:.60})")
            metrics[name] = MetricSummary(float(entry["mean"]), entry.get("std"), n)
        for name in ("r2", "rmse", "mae"):
            if name not in metrics:
                raise CorruptRecordError(f"{source}: corrupted result record (metrics.{name}.mean missing or not a "
                                         "number)")
        digest = check_digest(raw, source)  # after the field checks: a broken field is named as such
        return cls(key=str(data["key"]), method=method_info, cell=cell, fit_city=str(data.get("fit_city", cell.city)),
                   data=data_info, split=data["split"], probe=data["probe"], per_seed=list(data["per_seed"]),
                   metrics=metrics, embedding=data.get("embedding") or {}, harness_version=str(data["harness_version"]),
                   git_revision=str(data.get("git_revision", "unknown")), pretraining=data.get("pretraining"),
                   notes=tuple(data.get("notes") or ()), machine=data.get("machine"), schema=SCHEMA, digest=digest)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _kind_name(kind: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "true or false", int: "an integer",
             float: "a number", type(None): "null"}
    return " or ".join(names.get(k, k.__name__) for k in typing.get_args(kind) or (kind,))


def _json_kind(annotation: Any) -> Any:
    """The JSON type(s) a field of a record dataclass holds on disk: tuples are lists, floats may be ints."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        kinds = tuple(_json_kind(a) for a in typing.get_args(annotation))
        return kinds
    if origin is tuple or annotation is tuple:
        return list
    if origin is dict or annotation is dict:
        return dict
    if annotation is float:
        return int | float
    return annotation


def _check_fields(value: Any, cls: type, name: str, source: str) -> None:
    """Every field of a record's ``name`` object (``cls``) present and of its type, or a CorruptRecordError
    naming the file and the field: a record edited by hand must not reach the leaderboard as a traceback."""
    fail = f"{source}: corrupted result record"
    if not isinstance(value, dict):
        raise CorruptRecordError(f"{fail} (field '{name}' must be an object, got {type(value).__name__})")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in value if k not in fields]
    if unknown:
        raise CorruptRecordError(f"{fail} (unknown field '{name}.{unknown[0]}')")
    for field_name, spec in fields.items():
        if field_name not in value:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING \
                    and field_name != "uses_aux":
                raise CorruptRecordError(f"{fail} (field '{name}.{field_name}' missing)")
            continue
        kind = _json_kind(hints[field_name])
        kinds = kind if isinstance(kind, tuple) else (kind,)
        item = value[field_name]
        ok = any(item is None if k is type(None) else (k is typing.Any or (isinstance(item, k) and not (
            isinstance(item, bool) and k is not bool))) for k in kinds)
        if ok and isinstance(item, list) and hints[field_name] != Any:
            ok = all(isinstance(v, str) for v in item)
        if not ok:
            raise CorruptRecordError(f"{fail} (field '{name}.{field_name}' must be {_kind_name_of(kinds)}, got "
                                     f"{type(item).__name__} {item!r:.60}); delete it or re-run its cell with "
                                     "--overwrite always")


def _kind_name_of(kinds: tuple) -> str:
    parts = []
    for k in kinds:
        if k is list:
            parts.append("a list of strings")
        elif k == int | float:
            parts.append("a number")
        else:
            parts.append(_kind_name(k))
    return " or ".join(parts)


REQUIRED = ("schema", "key", "method", "cell", "data", "split", "probe", "per_seed", "metrics", "harness_version")
# schema N → a function that turns a schema-N record (JSON object) into a schema-N+1 one. Schema 1 is the
# first; fields added within it since (``method.ablation_of``, ``data.street_view_cap``, ``notes``,
# ``pretraining``, ``machine``) have defaults, so older schema-1 files read as they are.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def load_record(path: Path) -> Record:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise CorruptRecordError(f"{path}: corrupted result record (not JSON: {exc}); delete it or re-run with "
                                 "--overwrite always") from None
    except OSError as exc:
        raise CorruptRecordError(f"{path}: unreadable result record: {exc}") from exc
    return Record.from_json(data, str(path))


def check_overwrite(policy: str) -> str:
    if policy not in OVERWRITE:
        raise UserError(f"--overwrite must be one of {', '.join(OVERWRITE)}, got '{policy}'{suggest(policy, list(OVERWRITE))}")
    return policy


def reusable(path: Path, key: str, policy: str) -> Record | None:
    """The stored record to reuse under ``policy``, or None when the cell must be computed."""
    if policy == "always" or not path.exists():
        return None
    record = load_record(path)
    if record.key == key:
        return record
    if policy == "never":
        raise UserError(f"{path}: a record with another key exists (stale config or data) and --overwrite never "
                        "forbids replacing it; use --overwrite only-missing or always")
    return None


def write_record(path: Path, record: Record) -> None:
    """Write a record atomically, sealed with the digest of its content."""
    data = record.to_json()
    data[DIGEST_FIELD] = record_digest(data)
    atomic_write_text(path, record_text(data))


def record_text(data: dict[str, Any]) -> str:
    """A record's file text (what ``write_record`` writes)."""
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


# Folders of a store that hold stored measurements, not records (``measurements.py``): parameter and speed
# profiles at ``<results>/profiles/``, caption fidelity at ``<results>/<data tag>/<city>/captions/``. No method's
# variant slug is ``captions`` (``method.py`` refuses the name), so no record folder is mistaken for one.
PROFILES_FOLDER = "profiles"
CAPTIONS_FOLDER = "captions"
CASE_STUDY_PREFIX = "case_study_"  # the case-study artifacts beside a method's records (case_study.py): not records


def is_measurement_file(path: Path, results: Path) -> bool:
    """Whether ``path`` (under ``results``) is a stored measurement rather than a record."""
    parts = path.relative_to(results).parts
    return (len(parts) > 1 and parts[0] == PROFILES_FOLDER) or (len(parts) == 4 and parts[2] == CAPTIONS_FOLDER)


def is_record_file(path: Path, results: Path | None = None) -> bool:
    """Whether a ``.json`` file of a store is a record: not hidden (a writer's temporary file), not a
    case-study artifact (record files are named ``<task>_<imagery>_<split>.json``, so the two never clash) and,
    given the store's root, not a stored measurement."""
    if path.name.startswith((".", CASE_STUDY_PREFIX)):
        return False
    return results is None or not is_measurement_file(path, results)


def record_files(results: Path) -> list[Path]:
    """The record files of a store, sorted: every ``*.json`` that ``is_record_file``."""
    return [p for p in sorted(results.rglob("*.json")) if is_record_file(p, results)]


def iter_records(results: Path, *, skip_corrupt: bool = False):
    """Every record under a store, sorted by path; corrupted files raise CorruptRecordError, or with
    ``skip_corrupt`` are left out (``corrupt_records`` names them): a reader of the whole store, such as the
    leaderboard, is not blocked by one bad file."""
    for path in record_files(results):
        try:
            record = load_record(path)
        except CorruptRecordError:
            if skip_corrupt:
                continue
            raise
        yield path, record


def corrupt_records(results: Path) -> list[str]:
    """One message per file under the store that is not a valid record (what, where, how to fix)."""
    problems = []
    for path in record_files(results):
        try:
            load_record(path)
        except CorruptRecordError as exc:
            problems.append(str(exc))
    return problems
