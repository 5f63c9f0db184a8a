"""Content hashes that identify a city's data in every result (docs/architecture.md#core-concepts: data provenance)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from urbanln_bench.data import layout
from urbanln_bench.errors import DataError


def data_files(root: Path) -> list[str]:
    """Relative paths (POSIX) of every data file under ``root``, sorted.

    Excluded: the manifest itself, ``captions/`` (they have their own keys) and ``city.json`` —
    metadata, which for a twin records its configuration and generator version: a change there that
    leaves every data byte unchanged must not change the data's identity.
    """
    files = []
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        rel = path.relative_to(root).as_posix()
        if rel in (layout.MANIFEST, layout.CITY_META) or rel.startswith(layout.CAPTIONS + "/") or "/." in "/" + rel:
            continue
        files.append(rel)
    return sorted(files)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def compute_manifest(root: Path) -> dict[str, str]:
    return {rel: file_sha256(root / rel) for rel in data_files(root)}


def manifest_hash(files: dict[str, str]) -> str:
    """One hash for the whole data set: sha256 of the canonical JSON of {path: sha256}."""
    files = {k: v for k, v in files.items() if k != layout.CITY_META}  # metadata, not data (see data_files)
    canonical = json.dumps(files, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()


def write_manifest(root: Path) -> str:
    files = compute_manifest(root)
    text = json.dumps({"version": 1, "files": files}, sort_keys=True, indent=1) + "\n"
    tmp = root / (layout.MANIFEST + ".tmp")
    tmp.write_text(text)
    tmp.replace(root / layout.MANIFEST)
    return manifest_hash(files)


def read_manifest(root: Path) -> dict[str, str] | None:
    path = root / layout.MANIFEST
    if not path.exists():
        return None
    fix = "rewrite it with `urbanln-bench data validate PATH --write-manifest`"
    try:
        files = json.loads(path.read_text())["files"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise DataError(f"{path}: unreadable manifest (not JSON: {exc}); {fix}") from None
    except (KeyError, TypeError):
        raise DataError(f"{path}: not a manifest (a JSON object with 'files'); {fix}") from None
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise DataError(f"{path}: 'files' must map each data file to its sha256; {fix}")
    return files
