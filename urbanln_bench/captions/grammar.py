"""The simulated captioners' grammar (docs/twins.md#captioners): from a scene graph to describable
entities, and the English words that name them.

``entities_of`` groups a graph's objects by name and ``entity_relations`` lifts its relations to
those groups; ``noun_phrase`` ("six parked cars", "a tall dark grey office building", "the sky"),
``where_phrase`` (from the bounding box), ``verb_phrase`` (a relation's verb, conjugated by number)
and ``fill_template`` turn them into sentences. No persona noise here: the long captions' noise is
in ``synthetic_captioner``, and the short captions (``short_captions``) use none.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from urbanln_bench.captions import fidelity
from urbanln_bench.captions.fidelity import plural
from urbanln_bench.captions.personas import PersonaStyle

# -- from graph to describable entities ----------------------------------------------------------------

# colour words (an attribute error swaps one for another; synthetic_captioner)
COLOURS = ("black", "dark grey", "grey", "light grey", "white", "red", "dark red", "brown", "orange", "beige",
           "yellow", "green", "dark green", "blue", "light blue", "teal", "purple", "pink")
_SIZE_ORDER = ("tall", "mid-rise", "low-rise", "low", "large", "small", "wide", "narrow")
_STATES = ("moving", "parked", "walking", "glowing")
_USES = ("commercial", "residential", "industrial")
UNIQUE = {"sky": "the sky", "sea": "the sea"}  # one of a kind: never counted, always "the"
_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
            "twelve")
_CATEGORY = {
    "buildings": ("house", "apartment building", "office building", "skyscraper", "warehouse", "factory", "shop",
                  "roof", "chimney", "balcony", "window", "door", "garage door", "storage tank", "church",
                  "stadium", "water tower", "parking garage"),
    "transport": ("road", "car", "truck", "bus", "parking lot", "bridge", "lane marking", "crosswalk", "sidewalk",
                  "footpath", "pedestrian", "traffic light", "bicycle lane", "bicycle", "motorcycle", "bus stop",
                  "railway track", "roundabout", "food truck", "parking meter"),
    "nature": ("tree", "park", "lawn", "field", "hedge", "sea", "river", "lake", "beach", "swimming pool", "sky",
               "cloud", "palm tree", "fountain", "playground", "empty lot"),
}
_SMALL_AREA = 0.02


def category_of(name: str) -> str:
    """The caption section an object kind belongs to: buildings, transport, nature or details."""
    return next((c for c, names in _CATEGORY.items() if name in names), "details")


@dataclass
class Entity:
    """All objects of one name in an image, as a caption talks about them."""

    name: str
    count: int
    attributes: tuple[str, ...]
    area: float  # share of the image covered by the union of boxes (approx.)
    bbox: tuple[int, int, int, int]
    ids: tuple[int, ...] = ()
    hallucinated: bool = False

    @property
    def small(self) -> bool:
        return self.area < _SMALL_AREA


def entities_of(graph: Mapping[str, Any]) -> list[Entity]:
    """Group a graph's objects by name (largest group first within a name; by area overall)."""
    width, height = max(1, int(graph["width"])), max(1, int(graph["height"]))
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for obj in graph.get("objects", ()):
        groups.setdefault(str(obj["name"]), []).append(obj)
    out = []
    for name, objs in groups.items():
        areas = [max(0, o["bbox"][2] - o["bbox"][0]) * max(0, o["bbox"][3] - o["bbox"][1]) for o in objs]
        biggest = objs[int(np.argmax(areas))]
        out.append(Entity(
            name=name, count=sum(int(o.get("count", 1)) for o in objs), attributes=tuple(biggest.get("attributes", ())),
            area=min(1.0, sum(areas) / (width * height)), bbox=tuple(int(v) for v in biggest["bbox"]),  # type: ignore[arg-type]
            ids=tuple(int(o["id"]) for o in objs),
        ))
    out.sort(key=lambda e: -e.area)
    return out


def entity_relations(graph: Mapping[str, Any], kept: Mapping[str, Entity]) -> dict[str, list[tuple[str, Entity]]]:
    """Name-level relations between kept kinds: subject name -> [(predicate, object entity)], deduplicated."""
    by_id = {int(o["id"]): str(o["name"]) for o in graph.get("objects", ())}
    out: dict[str, list[tuple[str, Entity]]] = {}
    seen: set[tuple[str, str, str]] = set()
    for relation in graph.get("relations", ()):
        subject, obj = by_id.get(int(relation["subject"])), by_id.get(int(relation["object"]))
        predicate = str(relation["predicate"])
        if subject in kept and obj in kept and subject != obj and (subject, predicate, obj) not in seen:
            seen.add((subject, predicate, obj))
            out.setdefault(subject, []).append((predicate, kept[obj]))
    return out


# -- words ---------------------------------------------------------------------------------------------

def _count_words(count: int, style: str, rng: np.random.Generator) -> str:
    if style == "exact":
        if count <= 12:
            return _NUMBERS[count]
        return "more than a dozen" if count < 25 else "dozens of"
    if count == 2:
        return str(rng.choice(["two", "a couple of"]))
    if count <= 5:
        return str(rng.choice(["a few", "several"]))
    return str(rng.choice(["many", "numerous", "lots of"]))


def article(word: str) -> str:
    """'a' or 'an' before ``word``."""
    return "an" if word[:1] in "aeiou" else "a"


def _adjectives(entity: Entity, max_attributes: int, *, keep_states: bool) -> list[str]:
    attrs = [a for a in entity.attributes if a not in _USES and (keep_states or a not in _STATES)]
    attrs.sort(key=lambda a: (0 if a in _SIZE_ORDER else 1 if a in COLOURS else 2))
    return attrs[:max_attributes]


def noun_phrase(entity: Entity, style: PersonaStyle, rng: np.random.Generator, *, keep_states: bool = True,
                max_attributes: int | None = None) -> str:
    """'six parked cars', 'a tall dark grey office building', 'the sky' (count and attributes from the graph)."""
    limit = style.max_attributes if max_attributes is None else max_attributes
    adjectives = " ".join(_adjectives(entity, limit, keep_states=keep_states))
    name = entity.name
    if name in UNIQUE:
        return f"the {adjectives} {name}".replace("  ", " ") if adjectives else UNIQUE[name]
    if name in fidelity.UNCOUNTABLE:
        lead = "some" if name != "string lights" else str(rng.choice(["some", "a row of"]))
        return f"{lead} {adjectives} {name}".replace("  ", " ")
    head = f"{adjectives} " if adjectives else ""
    if entity.count == 1:
        return f"{article(head or name)} {head}{name}"
    return f"{_count_words(entity.count, style.count_style, rng)} {head}{plural(name)}"


def is_plural(entity: Entity) -> bool:
    """Whether the entity takes a plural verb."""
    return entity.name not in UNIQUE and (entity.count > 1 or entity.name == "string lights")


def definite(entity: Entity) -> str:
    """'the cars', 'the road': the entity named again."""
    return f"the {plural(entity.name) if is_plural(entity) else entity.name}"


def where_phrase(entity: Entity, graph: Mapping[str, Any]) -> str:
    """Position words from the bounding box ('in the upper left', 'across the image', 'on the right')."""
    width, height = max(1, int(graph["width"])), max(1, int(graph["height"]))
    x0, y0, x1, y1 = entity.bbox
    if (x1 - x0) > 0.8 * width:
        return "across the image" if graph.get("kind") == "satellite" else "across the view"
    cx, cy = (x0 + x1) / 2 / width, (y0 + y1) / 2 / height
    horizontal = "left" if cx < 0.36 else "right" if cx > 0.64 else ""
    if graph.get("kind") == "satellite":
        vertical = "upper" if cy < 0.36 else "lower" if cy > 0.64 else ""
        if vertical and horizontal:
            return f"in the {vertical} {horizontal} part of the image"
        if vertical or horizontal:
            return f"on the {horizontal} side" if horizontal else f"in the {vertical} part of the image"
        return "near the centre of the image"
    if cy > 0.7:
        return f"in the foreground on the {horizontal}" if horizontal else "in the foreground"
    if cy < 0.3:
        return "high up in the frame"
    return f"on the {horizontal} side" if horizontal else "in the middle of the view"


# predicate -> (subject state or category) -> verb frames; {be}/{3s} conjugated by number
_VERBS: dict[str, dict[str, tuple[str, ...]]] = {
    "on": {"moving": ("{be} driving on", "{be} travelling along"), "parked": ("{be} parked on",),
           "walking": ("{be} walking on", "stroll{3s} along"), "sign": ("{be} mounted on", "hang{3s} on"),
           "": ("{be} on", "{be} set on")},
    "along": {"parked": ("{be} parked along", "{be} lined up along"), "moving": ("{be} moving along",),
              "": ("{be} arranged along", "{be} lined up along", "run{3s} along")},
    "next to": {"": ("stand{3s} next to", "{be} located next to", "{be} right beside")},
    "above": {"": ("hang{3s} above", "{be} above")},
    "in": {"cloud": ("{be} scattered across",), "footpath": ("wind{3s} through",), "": ("{be} in",)},
    "over": {"": ("cross{3s}", "span{3s}")},
    "part of": {"": ("{be} part of",)},
    "in front of": {"": ("stand{3s} in front of", "{be} in front of")},
    "behind": {"": ("rise{3s} behind", "{be} behind")},
    "near": {"": ("{be} near", "stand{3s} close to")},
}


def verb_phrase(predicate: str, subject: Entity, rng: np.random.Generator) -> str:
    """A verb frame for a relation ('are parked along', 'crosses'), chosen by the subject's state or kind."""
    table = _VERBS.get(predicate, {"": (f"{{be}} {predicate}",)})
    key = next((s for s in _STATES if s in subject.attributes and s in table), "")
    if not key and subject.name in table:
        key = subject.name
    if not key and subject.name.endswith("sign") and "sign" in table:
        key = "sign"
    frame = str(rng.choice(table[key]))
    many = is_plural(subject)
    return frame.replace("{be}", "are" if many else "is").replace("{3s}", "" if many else "s")


def fill_template(template: str, **slots: str) -> str:
    """Fill ``{slot}`` and ``{Slot}`` (capitalised) placeholders; then tidy spaces and capitalise."""
    def sub(match: re.Match[str]) -> str:
        key = match.group(1)
        value = slots.get(key.lower(), "")
        return value[:1].upper() + value[1:] if key[:1].isupper() else value

    text = re.sub(r"\{(\w+)\}", sub, template)
    text = re.sub(r"\s+", " ", text).replace(" ,", ",").replace(" .", ".").strip()
    return text[:1].upper() + text[1:]


def join_items(items: Sequence[str]) -> str:
    """'a, b and c'."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]
