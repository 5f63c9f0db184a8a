"""The ``file`` captioner backend: captions made elsewhere, imported from JSONL or a JSON array.

JSONL: one JSON object per line, ``{"image_id": ..., "captioner": ..., "caption": ...}``. What people
actually have is accepted too: a UTF-8 byte-order mark, CRLF line ends, and a JSON **array** — of such
objects, or UrbanCLIP's ``{"caption", "image"}`` sentences (flat or grouped per image), which are
regrouped by ``image`` into one caption per image (its sentences joined in file order; a tile name
``<City>/<zoom>_<x>_<y>_s.jpg`` becomes the region id ``z<zoom>_<x>_<y>`` that ``data import`` gives it),
and the log says so. A file that is not UTF-8 is refused with the line of the first bad byte.

The whole file is checked before anything is used, and every problem is reported with ``file:line``
(malformed JSON, a missing key, an empty caption, an image the city does not have), so a user fixes
the file in one pass. Writing is atomic: a failed write leaves no partial file.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from urbanln_bench.errors import UserError

REQUIRED_KEYS = ("image_id", "captioner", "caption")
_MAX_LISTED = 20
_TILE = re.compile(r"^(?P<zoom>\d{1,2})_(?P<x>\d+)_(?P<y>\d+)_s\.(?:jpe?g|png)$", re.IGNORECASE)
log = logging.getLogger(__name__)


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
        + "\nEach line (or item of a JSON array) must be a JSON object with non-empty string keys "
        + ", ".join(f"'{k}'" for k in REQUIRED_KEYS) + ", or UrbanCLIP's {'caption', 'image'}."
    )


def _decode(path: Path) -> str:
    """The file's text: UTF-8 with or without a byte-order mark; else an error naming the bad byte's line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        start = exc.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)
        line = data[:start].count(b"\n") + 1
        column = start - (data.rfind(b"\n", 0, start) + 1) + 1
        raise CaptionFileError(
            f"{path}:{line}: not UTF-8 text: byte 0x{data[start]:02x} at column {column} ({exc.reason}); "
            "convert the file to UTF-8 (e.g. `iconv -f GB18030 -t UTF-8`)") from None


def _record(data: Any, where: str, known: set[str] | None, problems: list[str]) -> CaptionRecord | None:
    """One ``{"image_id", "captioner", "caption"}`` object, checked; None (and a problem) if it is bad."""
    if not isinstance(data, dict):
        problems.append(f"{where}: expected a JSON object, got {type(data).__name__}")
        return None
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        problems.append(f"{where}: missing key(s) {', '.join(repr(k) for k in missing)}")
        return None
    wrong = [k for k in REQUIRED_KEYS if not isinstance(data[k], str)]
    if wrong:
        problems.append(f"{where}: {', '.join(repr(k) for k in wrong)} must be string(s)")
        return None
    if not data["caption"].strip():
        problems.append(f"{where}: empty caption for image '{data['image_id']}'")
        return None
    if not data["image_id"].strip() or not data["captioner"].strip():
        problems.append(f"{where}: empty {'image_id' if not data['image_id'].strip() else 'captioner'}")
        return None
    if known is not None and data["image_id"] not in known:
        problems.append(f"{where}: unknown image id '{data['image_id']}' (not an image of this city)")
        return None
    return CaptionRecord(data["image_id"], data["captioner"], data["caption"].strip())


def object_lines(text: str) -> list[int]:
    """The line of every ``{`` outside JSON strings, in order (where each object of an array starts)."""
    lines, line, in_string, escaped = [], 1, False, False
    for char in text:
        if char == "\n":
            line += 1
        elif in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "{":
            lines.append(line)
    return lines


def _image_id(image: str) -> str:
    """UrbanCLIP's image name → the city's image id: a tile ``Beijing/16_x_y_s.jpg`` → ``z16_x_y``."""
    match = _TILE.match(Path(image).name)
    return f"z{match['zoom']}_{match['x']}_{match['y']}" if match else image


def _read_array(path: Path, text: str, known: set[str] | None, problems: list[str]) -> list[CaptionRecord]:
    """A JSON array of caption records, or of UrbanCLIP's ``{"caption", "image"}`` sentences (regrouped)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        problems.append(f"{path}:{exc.lineno}: malformed JSON array ({exc.msg} at column {exc.colno})")
        return []
    except RecursionError:
        problems.append(f"{path}:1: malformed JSON (nested too deeply)")
        return []
    lines = object_lines(text)
    groups = sum(isinstance(entry, list) for entry in data)
    items = [item for entry in data for item in (entry if isinstance(entry, list) else [entry])]
    records: list[CaptionRecord] = []
    sentences: dict[str, list[str]] = {}
    objects = 0
    for item in items:
        where = f"{path}:{lines[min(objects, len(lines) - 1)] if lines else 1}"
        objects += isinstance(item, dict)
        if isinstance(item, dict) and "image" in item and "image_id" not in item:
            if not isinstance(item.get("caption"), str) or not isinstance(item["image"], str):
                problems.append(f"{where}: expected {{\"caption\": str, \"image\": str}} (UrbanCLIP's format)")
                continue
            image_id = _image_id(item["image"])
            if known is not None and image_id not in known:
                problems.append(f"{where}: unknown image '{item['image']}' (image id '{image_id}' is not an image "
                                "of this city)")
                continue
            if item["caption"].strip():
                sentences.setdefault(image_id, []).append(item["caption"].strip())
            continue
        record = _record(item, where, known, problems)
        if record is not None:
            records.append(record)
    shape = (f"grouped per image in {groups} inner arrays" if groups and groups == len(data) else
             "one flat list" if not groups else f"{groups} of {len(data)} entries inner arrays")
    if sentences:
        name = path.stem
        for image_id, parts in sentences.items():
            joined = " ".join(p if p.endswith((".", "!", "?")) else p + "." for p in parts)
            records.append(CaptionRecord(image_id, name, joined))
        log.warning("%s: a JSON array, not JSONL: %d {caption, image} sentences (UrbanCLIP's format), %s; regrouped "
                    "by 'image' into %d captions by captioner '%s' (each image's sentences joined in file order)",
                    path, sum(len(v) for v in sentences.values()), shape, len(sentences), name)
    elif records:
        log.warning("%s: a JSON array, not JSONL: %d caption records, %s", path, len(records), shape)
    return records


def read_caption_jsonl(path: str | Path, known_image_ids: Collection[str] | None = None) -> list[CaptionRecord]:
    """Every record of a caption file (JSONL or a JSON array), or a CaptionFileError listing every bad line."""
    path = Path(path)
    if not path.is_file():
        raise CaptionFileError(f"{path}: caption file not found" + (" (it is a directory)" if path.exists() else ""))
    known = set(known_image_ids) if known_image_ids is not None else None
    records: list[CaptionRecord] = []
    problems: list[str] = []
    text = _decode(path)
    if text.lstrip().startswith("["):
        records = _read_array(path, text, known, problems)
    else:
        # split on "\n" only: str.splitlines() also breaks at U+2028 / U+0085, which JSON strings may hold raw
        for number, line in enumerate(text.split("\n"), start=1):
            line = line.removesuffix("\r")
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
            record = _record(data, where, known, problems)
            if record is not None:
                records.append(record)
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
