"""The ``file`` captioner backend: captions made elsewhere, imported from JSONL.

One JSON object per line: ``{"image_id": ..., "captioner": ..., "caption": ...}``. The whole file
is checked before anything is used, and every problem is reported with ``file:line`` (malformed
JSON, a missing key, an empty caption, an image the city does not have), so a user fixes the file
in one pass. Writing is atomic: a failed write leaves no partial file.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from urbanln_bench.errors import UserError

REQUIRED_KEYS = ("image_id", "captioner", "caption")
_MAX_LISTED = 20


class CaptionFileError(UserError):
    """A caption JSONL file that cannot be imported as it is."""


class CaptionerUnavailableError(UserError):
    """A captioner asked for something its backend cannot do (e.g. region captions from a file)."""


@dataclass(frozen=True)
class CaptionRecord:
    image_id: str
    captioner: str
    caption: str

    def to_dict(self) -> dict[str, str]:
        return {"image_id": self.image_id, "captioner": self.captioner, "caption": self.caption}


def _raise(path: Path, problems: list[str]) -> None:
    shown = problems[:_MAX_LISTED]
    more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    raise CaptionFileError(
        f"{path}: {len(problems)} problem(s) in the caption file; nothing was imported:\n  "
        + "\n  ".join(shown) + more
        + "\nEach line must be a JSON object with non-empty string keys "
        + ", ".join(f"'{k}'" for k in REQUIRED_KEYS) + "."
    )


def read_caption_jsonl(path: str | Path, known_image_ids: Collection[str] | None = None) -> list[CaptionRecord]:
    """Every record of a caption file, or a CaptionFileError listing every bad line."""
    path = Path(path)
    if not path.is_file():
        raise CaptionFileError(f"{path}: caption file not found" + (" (it is a directory)" if path.exists() else ""))
    known = set(known_image_ids) if known_image_ids is not None else None
    records: list[CaptionRecord] = []
    problems: list[str] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise CaptionFileError(f"{path}: not UTF-8 text ({exc})") from exc
    for number, line in enumerate(lines, start=1):
        where = f"{path}:{number}"
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{where}: malformed JSON ({exc.msg} at column {exc.colno})")
            continue
        except RecursionError:
            problems.append(f"{where}: malformed JSON (nested too deeply)")
            continue
        if not isinstance(data, dict):
            problems.append(f"{where}: expected a JSON object, got {type(data).__name__}")
            continue
        missing = [k for k in REQUIRED_KEYS if k not in data]
        if missing:
            problems.append(f"{where}: missing key(s) {', '.join(repr(k) for k in missing)}")
            continue
        wrong = [k for k in REQUIRED_KEYS if not isinstance(data[k], str)]
        if wrong:
            problems.append(f"{where}: {', '.join(repr(k) for k in wrong)} must be string(s)")
            continue
        if not data["caption"].strip():
            problems.append(f"{where}: empty caption for image '{data['image_id']}'")
            continue
        if not data["image_id"].strip() or not data["captioner"].strip():
            problems.append(f"{where}: empty {'image_id' if not data['image_id'].strip() else 'captioner'}")
            continue
        if known is not None and data["image_id"] not in known:
            problems.append(f"{where}: unknown image id '{data['image_id']}' (not an image of this city)")
            continue
        records.append(CaptionRecord(data["image_id"], data["captioner"], data["caption"].strip()))
    if problems:
        _raise(path, problems)
    if not records:
        raise CaptionFileError(f"{path}: no captions in the file")
    return records


def write_caption_jsonl(path: str | Path, records: Iterable[CaptionRecord | Mapping[str, Any]]) -> Path:
    """Write records atomically (validated first: no empty captions or missing keys)."""
    from urbanln_bench.cache import atomic_write_text

    path = Path(path)
    lines, problems = [], []
    for i, record in enumerate(records):
        data = record.to_dict() if isinstance(record, CaptionRecord) else dict(record)
        missing = [k for k in REQUIRED_KEYS if not isinstance(data.get(k), str) or not data[k].strip()]
        if missing:
            problems.append(f"record {i}: missing or empty {', '.join(missing)}")
        lines.append(json.dumps({k: data.get(k) for k in REQUIRED_KEYS}, ensure_ascii=False))
    if problems:
        raise CaptionFileError(f"{path}: not written; " + "; ".join(problems[:_MAX_LISTED]))
    atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))
    return path


class FileCaptioner:
    """Captions imported from a JSONL file; ``captioner`` selects one captioner's lines.

    ``describe`` returns the image's stored captions in file order, at most ``n``; an image with
    none is an error (a silent gap would bias consensus selection).
    """

    backend = "file"

    def __init__(self, path: str | Path, captioner: str | None = None,
                 known_image_ids: Collection[str] | None = None) -> None:
        self.path = Path(path)
        records = read_caption_jsonl(self.path, known_image_ids)
        if captioner is not None:
            names = sorted({r.captioner for r in records})
            records = [r for r in records if r.captioner == captioner]
            if not records:
                raise CaptionFileError(f"{self.path}: no captions by captioner '{captioner}'; "
                                       f"the file has: {', '.join(names)}")
        self.name = captioner or f"file:{self.path.name}"
        self._by_image: dict[str, list[CaptionRecord]] = {}
        for record in records:
            self._by_image.setdefault(record.image_id, []).append(record)

    def image_ids(self) -> list[str]:
        return sorted(self._by_image)

    def records(self, image_id: str) -> list[CaptionRecord]:
        return list(self._by_image.get(image_id, ()))

    def describe(self, image: np.ndarray | None, image_id: str, graph: Mapping[str, Any] | None = None,
                 n: int = 2, rng: np.random.Generator | None = None) -> list[str]:
        found = self._by_image.get(image_id)
        if not found:
            raise CaptionFileError(f"{self.path}: no caption for image '{image_id}'"
                                   + (f" by captioner '{self.name}'" if not self.name.startswith("file:") else ""))
        return [r.caption for r in found[:n]]

    def describe_region(self, image: np.ndarray | None, image_id: str, graph: Mapping[str, Any] | None,
                        box: Sequence[float], rng: np.random.Generator | None = None) -> str:
        raise CaptionerUnavailableError(
            f"imported captions ({self.path}) have no region captions; refinement needs a captioner that can "
            "look at crops: use 'synthetic:<persona>' or 'transformers:<model dir>' for local captions")

    def rewrite(self, overall: str, local_details: Sequence[str], image: np.ndarray | None = None,
                image_id: str = "", rng: np.random.Generator | None = None) -> str:
        """The rule-based merge in a neutral voice (no model to rewrite with)."""
        from urbanln_bench.captions.synthetic_captioner import merge_details, stable_rng

        return merge_details(overall, local_details, ("The image also shows {details}.",), ("Also,",),
                             stable_rng("file", image_id, overall))
