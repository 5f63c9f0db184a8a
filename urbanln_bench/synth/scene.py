"""Ground-truth scene graphs of rendered images: what is in the picture, in plain English.

The renderers emit one graph per image; the simulated captioners write captions from it and the
caption-fidelity metrics score object precision/recall against it (docs/twins.md). So object names are
ordinary nouns ("building", "tree", "car"), attributes ordinary adjectives ("tall", "red",
"glass"), and relations short prepositions ("on", "next to", "along").

Bounding boxes are ``(x0, y0, x1, y1)`` integer pixels, half-open: ``0 <= x0 < x1 <= width``.
A repeated thing drawn as a group (a row of windows, cars parked along a road) is one object with
``count`` > 1, so graphs stay readable (≈ 8–40 objects per image).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

SCENE_KINDS: tuple[str, ...] = ("satellite", "streetview")

BBox = tuple[int, int, int, int]


@dataclass(frozen=True)
class SceneObject:
    """One thing (or a group of ``count`` alike things) visible in the image."""

    id: int
    name: str
    attributes: tuple[str, ...] = ()
    bbox: BBox = (0, 0, 1, 1)
    count: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "attributes": list(self.attributes),
            "bbox": list(self.bbox),
            "count": self.count,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SceneObject:
        x0, y0, x1, y1 = (int(v) for v in data["bbox"])
        return cls(
            id=int(data["id"]),
            name=str(data["name"]),
            attributes=tuple(str(a) for a in data.get("attributes", ())),
            bbox=(x0, y0, x1, y1),
            count=int(data.get("count", 1)),
        )


@dataclass(frozen=True)
class SceneRelation:
    """``subject`` <predicate> ``object``, e.g. car 3 "on" road 1."""

    subject: int
    predicate: str
    object: int

    def to_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "predicate": self.predicate, "object": self.object}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SceneRelation:
        return cls(subject=int(data["subject"]), predicate=str(data["predicate"]), object=int(data["object"]))


@dataclass(frozen=True)
class SceneGraph:
    """Everything a captioner may truthfully say about one image."""

    kind: str
    width: int
    height: int
    objects: tuple[SceneObject, ...] = ()
    relations: tuple[SceneRelation, ...] = ()
    view: str = ""  # how the image was taken, e.g. "top-down", "facing the facades", "along the street"

    def __post_init__(self) -> None:
        if self.kind not in SCENE_KINDS:
            raise ValueError(f"scene kind must be one of {', '.join(SCENE_KINDS)}, got '{self.kind}'")
        ids = {o.id for o in self.objects}
        if len(ids) != len(self.objects):
            raise ValueError("scene object ids must be unique")
        for relation in self.relations:
            if relation.subject not in ids or relation.object not in ids:
                raise ValueError(f"relation {relation} refers to an unknown object id")

    def by_id(self, object_id: int) -> SceneObject:
        for obj in self.objects:
            if obj.id == object_id:
                return obj
        raise KeyError(f"no scene object with id {object_id}")

    def names(self) -> tuple[str, ...]:
        """Distinct object names in first-appearance order."""
        return tuple(dict.fromkeys(o.name for o in self.objects))

    def count(self, name: str) -> int:
        """How many things called ``name`` the image shows (groups count as their ``count``)."""
        return sum(o.count for o in self.objects if o.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "width": self.width,
            "height": self.height,
            "view": self.view,
            "objects": [o.to_dict() for o in self.objects],
            "relations": [r.to_dict() for r in self.relations],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SceneGraph:
        return cls(
            kind=str(data["kind"]),
            width=int(data["width"]),
            height=int(data["height"]),
            view=str(data.get("view", "")),
            objects=tuple(SceneObject.from_dict(o) for o in data.get("objects", ())),
            relations=tuple(SceneRelation.from_dict(r) for r in data.get("relations", ())),
        )


@dataclass
class SceneBuilder:
    """Collects objects and relations while a renderer draws; clips boxes to the image."""

    kind: str
    width: int
    height: int
    view: str = ""
    _objects: list[SceneObject] = field(default_factory=list)
    _relations: list[SceneRelation] = field(default_factory=list)

    def add(
        self, name: str, bbox: Sequence[float], attributes: Iterable[str] = (), count: int = 1
    ) -> int | None:
        """Record an object; returns its id, or None when it lies outside the image."""
        x0 = max(0, int(bbox[0]))
        y0 = max(0, int(bbox[1]))
        x1 = min(self.width, int(bbox[2] + 0.999))
        y1 = min(self.height, int(bbox[3] + 0.999))
        if x1 <= x0 or y1 <= y0 or count < 1:
            return None
        object_id = len(self._objects)
        attrs = tuple(dict.fromkeys(a for a in attributes if a))
        self._objects.append(SceneObject(object_id, name, attrs, (x0, y0, x1, y1), count))
        return object_id

    def relate(self, subject: int | None, predicate: str, obj: int | None) -> None:
        if subject is not None and obj is not None and subject != obj:
            self._relations.append(SceneRelation(subject, predicate, obj))

    def build(self) -> SceneGraph:
        return SceneGraph(
            self.kind, self.width, self.height, tuple(self._objects), tuple(self._relations), self.view
        )


# Basic colour words an ordinary caption uses, with a representative RGB each.
_COLOUR_WORDS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("black", (30, 30, 30)),
    ("dark grey", (80, 80, 82)),
    ("grey", (130, 130, 130)),
    ("light grey", (185, 185, 185)),
    ("white", (235, 235, 235)),
    ("red", (180, 40, 40)),
    ("dark red", (120, 40, 36)),
    ("brown", (120, 80, 50)),
    ("orange", (220, 130, 50)),
    ("beige", (210, 195, 160)),
    ("yellow", (225, 200, 60)),
    ("green", (60, 130, 60)),
    ("dark green", (40, 80, 40)),
    ("blue", (50, 90, 170)),
    ("light blue", (140, 180, 220)),
    ("teal", (40, 130, 130)),
    ("purple", (120, 60, 140)),
    ("pink", (220, 120, 160)),
)


def colour_name(rgb: Sequence[float]) -> str:
    """The nearest basic English colour word for ``rgb`` (as a caption would name it)."""
    return _colour_name_quantised(int(rgb[0]) >> 2, int(rgb[1]) >> 2, int(rgb[2]) >> 2)


@lru_cache(maxsize=65536)
def _colour_name_quantised(rq: int, gq: int, bq: int) -> str:
    r, g, b = rq * 4 + 2, gq * 4 + 2, bq * 4 + 2
    best, best_d = "grey", float("inf")
    for word, (cr, cg, cb) in _COLOUR_WORDS:
        d = 0.3 * (r - cr) ** 2 + 0.59 * (g - cg) ** 2 + 0.11 * (b - cb) ** 2
        # chroma matters for naming too: grey vs a dull colour
        d += 0.5 * ((r - g) - (cr - cg)) ** 2 + 0.5 * ((g - b) - (cg - cb)) ** 2
        if d < best_d:
            best, best_d = word, d
    return best
