"""Content hashes that identify a city's data in every result (docs/architecture.md#core-concepts: data provenance).

A data folder's identity comes from its bytes. ``manifest.json`` records the sha256 of every data
file, plus each file's size and modification time; it is only a cache of those hashes, so it is
verified against the files whenever the folder is opened (``verify_manifest``): a file whose size and
mtime are as recorded is taken as unchanged, any other is hashed again, and ``full=True`` (``data
validate --verify``) hashes every file. A stale or forged manifest is an error naming the files that
differ (docs/identity.md#data-identity). The identity (``manifest_hash``) is the hash of
{path: sha256} alone, so the recorded sizes and times never enter a key.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from urbanln_bench.data import layout
from urbanln_bench.errors import DataError

MANIFEST_FORMAT = 2  # 1: {"files"}; 2: adds "stats" (size, mtime_ns) for the verification shortcut


def _walk(root: Path) -> list[str]:
    """Relative paths (POSIX) of the files under ``root``, following links to folders (a folder linked
    into the data is data too; ``data/links.py`` decides whether a link may stay), but not round a cycle."""
    out: list[str] = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        ancestors = Path(folder).relative_to(root).parents
        if any(os.path.realpath(root / parent) == real for parent in ancestors):  # a link to a folder above
            dirs[:] = []
            continue
        base = Path(folder).relative_to(root).as_posix()
        for name in files:
            out.append(name if base == "." else f"{base}/{name}")
    return out


def data_files(root: Path) -> list[str]:
    """Relative paths (POSIX) of every data file under ``root``, sorted.

    Excluded: the manifest itself, ``captions/`` (they have their own keys), ``city.json`` —
    metadata, which for a twin records its configuration and generator version: a change there that
    leaves every data byte unchanged must not change the data's identity — and hidden files.
    """
    files = []
    for rel in _walk(root):
        if rel in (layout.MANIFEST, layout.CITY_META) or rel.startswith(layout.CAPTIONS + "/") or "/." in "/" + rel:
            continue
        if (root / rel).is_file():
            files.append(rel)
    return sorted(files)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _stat(path: Path) -> list[int]:
    info = path.stat()
    return [info.st_size, info.st_mtime_ns]


def compute_manifest(root: Path) -> dict[str, str]:
    return {rel: file_sha256(root / rel) for rel in data_files(root)}


def manifest_hash(files: dict[str, str]) -> str:
    """One hash for the whole data set: sha256 of the canonical JSON of {path: sha256}."""
    files = {k: v for k, v in files.items() if k != layout.CITY_META}  # metadata, not data (see data_files)
    canonical = json.dumps(files, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()


def write_manifest(root: Path) -> str:
    rels = data_files(root)
    files = {rel: file_sha256(root / rel) for rel in rels}
    stats = {rel: _stat(root / rel) for rel in rels}
    text = json.dumps({"version": MANIFEST_FORMAT, "files": files, "stats": stats}, sort_keys=True, indent=1) + "\n"
    tmp = root / f".{layout.MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(text)
    tmp.replace(root / layout.MANIFEST)
    return manifest_hash(files)


@dataclass(frozen=True)
class Manifest:
    """A parsed ``manifest.json``: {path: sha256} and, from format 2 on, {path: [size, mtime_ns]}."""

    files: dict[str, str]
    stats: dict[str, list[int]] = field(default_factory=dict)


def _fix_hint(root: Path) -> str:
    return (f"if the files are right, rewrite it with `urbanln-bench data validate {root} --write-manifest`; "
            "for a synthetic twin in the cache, delete the twin's folder and it is generated again")


def read_manifest(root: Path) -> Manifest | None:
    """The manifest of ``root`` (None when there is none); a malformed one is a DataError naming it."""
    path = root / layout.MANIFEST
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise DataError(f"{path}: not a readable manifest ({exc}); {_fix_hint(root)}") from None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) and len(v) == 64
                                              for k, v in files.items()):
        raise DataError(f"{path}: not a manifest (expected {{\"files\": {{path: sha256}}}}); {_fix_hint(root)}")
    stats = data.get("stats") or {}
    if not isinstance(stats, dict):
        raise DataError(f"{path}: 'stats' must map paths to [size, mtime_ns]; {_fix_hint(root)}")
    good_stats = {k: v for k, v in stats.items()
                  if isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) for x in v)}
    return Manifest(files=files, stats=good_stats)


def verify_manifest(root: Path, manifest: Manifest, *, full: bool = False,
                    exempt: frozenset[str] = frozenset()) -> list[str]:
    """Where the files of ``root`` differ from ``manifest``: one line per file changed, missing or not in it.

    A file whose size and mtime are those recorded is taken as unchanged unless ``full``; any other is
    hashed. ``exempt``: files the harness itself rewrote on purpose (check-method's scrambled labels),
    which keep their recorded identity.
    """
    problems = []
    present = data_files(root)
    for rel in present:
        if rel in exempt:
            continue
        recorded = manifest.files.get(rel)
        if recorded is None:
            problems.append(f"{rel}: not in the manifest (a file added after it was written)")
            continue
        path = root / rel
        if not full and manifest.stats.get(rel) == _stat(path):
            continue
        if file_sha256(path) != recorded:
            problems.append(f"{rel}: content differs from the manifest (changed after it was written)")
    on_disk = set(present)
    for rel in sorted(manifest.files):
        if rel not in on_disk and rel != layout.CITY_META and rel not in exempt:
            problems.append(f"{rel}: in the manifest but missing")
    return problems


def manifest_error(root: Path, problems: list[str]) -> DataError:
    shown = "\n  ".join(problems[:20])
    more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
    return DataError(f"{root / layout.MANIFEST}: stale or forged manifest: {len(problems)} file(s) differ from it, "
                     f"so it does not identify this data:\n  {shown}{more}\n{_fix_hint(root)[0].upper()}"
                     f"{_fix_hint(root)[1:]}")


def verified_manifest_hash(root: Path, *, full: bool = False, exempt: frozenset[str] = frozenset()) -> str:
    """The data identity of ``root``: its manifest's hash once the manifest is verified against the files
    (a DataError naming the files that differ otherwise), or the hash of the files when it has none."""
    manifest = read_manifest(root)
    if manifest is None:
        return manifest_hash(compute_manifest(root))
    problems = verify_manifest(root, manifest, full=full, exempt=exempt)
    if problems:
        raise manifest_error(root, problems)
    return manifest_hash(manifest.files)
