"""Caption fidelity against the ground-truth scene graph (docs/twins.md): object precision/recall from text.

The twins know what each image shows, so every stage of the caption pipeline (raw MLLM captions,
refined, merged, consensus-selected) can be scored the same way. Scoring works from the caption
*text* only, by matching ordinary object nouns (plurals and a few synonyms handled) against the
graph's object names, so captions from any backend are comparable. The simulated captioners also
keep generation-time bookkeeping (:class:`CaptionTruth`), which the text matcher must agree with.

Conventions (documented because they move the numbers):

- Precision and recall are over *distinct object kinds* (names), not instances.
- Generic words that name no specific kind ("building", "vehicle", "sign", "water") are not scored;
  nor is "street", which names the scene of a street view ("a city street"), not an object.
- A mention right after a negation ("no pedestrians", "without trees") is not a claim and is skipped.
- A caption that names no object kind has precision 1.0 (it asserts nothing false) and recall 0.0.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

# Every object name the twin renderers emit (synth/render_satellite.py, synth/render_streetview.py).
SCENE_VOCABULARY: dict[str, tuple[str, ...]] = {
    "satellite": (
        "road", "car", "skyscraper", "tree", "apartment building", "warehouse", "truck", "park",
        "bridge", "umbrella", "house", "office building", "empty lot", "footpath", "storage tank",
        "parking lot", "swimming pool", "sea", "river", "beach", "field", "lawn", "shop", "lake",
    ),
    "streetview": (
        "skyscraper", "shop sign", "car", "neon sign", "shop window", "cloud", "bar sign", "window",
        "apartment building", "tree", "sky", "sidewalk", "road", "lane marking", "office building",
        "pedestrian", "warehouse", "awning", "door", "string lights", "house", "street lamp",
        "balcony", "garage door", "bus", "crosswalk", "river", "chimney", "railing", "factory",
        "roof", "smoke", "truck", "shop", "hedge", "fence",
    ),
}

# Plausible urban things the renderers never draw: what a hallucinating MLLM typically adds.
PLAUSIBLE_ABSENT: dict[str, tuple[str, ...]] = {
    "satellite": (
        "fountain", "bicycle lane", "billboard", "tennis court", "soccer field", "solar panel",
        "construction crane", "railway track", "playground", "church", "stadium", "helipad",
        "water tower", "parking garage", "roundabout", "basketball court",
    ),
    "streetview": (
        "fountain", "bicycle lane", "billboard", "traffic light", "bench", "bus stop", "fire hydrant",
        "bicycle", "motorcycle", "trash can", "statue", "flag", "palm tree", "dog", "mailbox",
        "parking meter", "food truck", "construction crane",
    ),
}

# Other object nouns real captioners use, so their mentions are scored rather than ignored.
EXTRA_OBJECT_NOUNS: tuple[str, ...] = (
    "harbour", "pier", "boat", "ship", "train", "tram", "taxi", "van", "traffic cone", "scaffolding",
    "power line", "utility pole", "mountain", "hill", "cathedral", "temple", "mosque", "school",
    "hospital", "hotel", "restaurant", "cafe", "market", "garden shed", "greenhouse", "airport",
    "runway", "highway", "overpass", "tunnel", "canopy", "banner", "poster", "graffiti", "bird",
    "cyclist", "runner", "stroller", "kiosk", "plaza", "courtyard", "wall", "gate",
)

# surface form (singular) -> canonical name. Canonical names are the renderers' names where one fits.
SYNONYMS: dict[str, str] = {
    "automobile": "car", "sedan": "car", "hatchback": "car",
    "person": "pedestrian", "passer-by": "pedestrian", "walker": "pedestrian", "pedestrian": "pedestrian",
    "roadway": "road", "avenue": "road", "boulevard": "road",
    "pavement": "sidewalk", "footway": "sidewalk",
    "walkway": "footpath", "path": "footpath", "trail": "footpath",
    "high-rise": "skyscraper", "tower": "skyscraper", "tower block": "skyscraper",
    "office tower": "office building", "office block": "office building",
    "apartment block": "apartment building", "residential block": "apartment building",
    "apartment complex": "apartment building", "tenement": "apartment building",
    "townhouse": "house", "cottage": "house", "villa": "house",
    "store": "shop", "boutique": "shop", "storefront": "shop window", "shopfront": "shop window",
    "display window": "shop window", "signboard": "shop sign", "store sign": "shop sign",
    "pub sign": "bar sign", "neon light": "neon sign",
    "depot": "warehouse", "storehouse": "warehouse", "lorry": "truck", "coach": "bus",
    "streetlight": "street lamp", "street light": "street lamp", "streetlamp": "street lamp",
    "lamppost": "street lamp", "lamp post": "street lamp",
    "zebra crossing": "crosswalk", "pedestrian crossing": "crosswalk",
    "road marking": "lane marking", "lane line": "lane marking",
    "doorway": "door", "entrance": "door", "guardrail": "railing", "handrail": "railing",
    "shrub": "hedge", "bush": "hedge", "parasol": "umbrella", "pool": "swimming pool",
    "tank": "storage tank", "silo": "storage tank", "car park": "parking lot", "parking area": "parking lot",
    "vacant lot": "empty lot", "ocean": "sea", "pond": "lake", "canal": "river",
    "waterway": "river", "meadow": "field", "grass": "lawn", "garden": "park", "rooftop": "roof",
    "fairy lights": "string lights", "bike lane": "bicycle lane",
    "cycle lane": "bicycle lane", "bike": "bicycle", "traffic signal": "traffic light",
    "dumpster": "trash can", "bin": "trash can", "crane": "construction crane",
}

# Phrases that contain object-like words but name no object (consumed so the words are not scored).
NON_OBJECT_PHRASES: tuple[str, ...] = (
    "street", "street view", "street-view", "street level", "street scene", "field of view", "industrial park",
    "business park", "tree line", "parking space", "building", "vehicle", "sign", "signage", "water",
    "structure", "lane", "traffic", "light", "area", "block", "lot", "district", "neighbourhood",
    "neighborhood", "zone", "tank top", "window of opportunity",
)

NEGATIONS = frozenset({"no", "without", "not", "nor", "absent", "lacks", "lacking", "never"})
_NEGATION_WINDOW = 3

_IRREGULAR_PLURALS = {"person": "people", "passer-by": "passers-by", "bus": "buses", "mass": "masses"}
# names that are already plural or uncountable: no plural form is generated or needed
UNCOUNTABLE = frozenset({"string lights", "smoke", "sky", "sea", "grass", "scaffolding", "graffiti"})

_WORD = re.compile(r"[a-z]+(?:[-'][a-z]+)*")


def plural(name: str) -> str:
    """English plural of an object name (its last word), e.g. 'bus' -> 'buses', 'balcony' -> 'balconies'."""
    if name in UNCOUNTABLE:
        return name
    head, _, last = name.rpartition(" ")
    if last in _IRREGULAR_PLURALS:
        word = _IRREGULAR_PLURALS[last]
    elif last.endswith(("s", "x", "z", "ch", "sh")):
        word = last + "es"
    elif last.endswith("y") and len(last) > 1 and last[-2] not in "aeiou":
        word = last[:-1] + "ies"
    else:
        word = last + "s"
    return f"{head} {word}" if head else word


def words(text: str) -> list[str]:
    """Lower-case word tokens (hyphenated words kept whole, so 'flat-roofed' is not 'roof')."""
    return _WORD.findall(text.lower().replace("\u2019", "'"))


@lru_cache(maxsize=1)
def _base_lexicon() -> dict[tuple[str, ...], str | None]:
    canonical: set[str] = set(EXTRA_OBJECT_NOUNS)
    for vocabulary in (SCENE_VOCABULARY, PLAUSIBLE_ABSENT):
        for names in vocabulary.values():
            canonical.update(names)
    lexicon: dict[tuple[str, ...], str | None] = {}
    for phrase in NON_OBJECT_PHRASES:
        lexicon[tuple(words(phrase))] = None
        lexicon[tuple(words(plural(phrase)))] = None
    for surface, target in [(n, n) for n in canonical] + list(SYNONYMS.items()):
        lexicon[tuple(words(surface))] = target
        lexicon[tuple(words(plural(surface)))] = target
    return lexicon


def _lexicon_for(names: Iterable[str]) -> dict[tuple[str, ...], str | None]:
    """The base lexicon plus the graph's own names (a user's real scene graphs may use new nouns)."""
    base = _base_lexicon()
    extra = [n for n in names if tuple(words(n)) not in base]
    if not extra:
        return base
    lexicon = dict(base)
    for name in extra:
        lexicon[tuple(words(name))] = name
        lexicon[tuple(words(plural(name)))] = name
    return lexicon


def mentioned_objects(caption: str, graph_names: Iterable[str] = ()) -> list[str]:
    """Canonical object kinds a caption claims, in order of first mention (longest phrase wins)."""
    lexicon = _lexicon_for(graph_names)
    longest = max(len(k) for k in lexicon)
    tokens = words(caption)
    found: dict[str, None] = {}
    i = 0
    while i < len(tokens):
        for size in range(min(longest, len(tokens) - i), 0, -1):
            key = tuple(tokens[i : i + size])
            if key in lexicon:
                target = lexicon[key]
                negated = any(t in NEGATIONS for t in tokens[max(0, i - _NEGATION_WINDOW) : i])
                if target is not None and not negated:
                    found.setdefault(target, None)
                i += size
                break
        else:
            i += 1
    return list(found)


def graph_object_names(graph: Mapping[str, Any]) -> list[str]:
    """Distinct object names of a scene-graph dict, canonicalised through the synonym table."""
    out: dict[str, None] = {}
    for obj in graph.get("objects", ()):
        name = str(obj["name"]).lower()
        out.setdefault(SYNONYMS.get(name, name), None)
    return list(out)


def object_precision_recall(caption: str, graph: Mapping[str, Any]) -> tuple[float, float]:
    """(precision, recall) of the object kinds a caption names against the scene graph's objects.

    Precision: share of named kinds that the image shows (1 − hallucination). Recall: share of the
    image's kinds the caption names (1 − omission). Text only, so any backend's captions are scored.
    """
    truth = graph_object_names(graph)
    mentioned = mentioned_objects(caption, truth)
    truth_set = set(truth)
    hits = sum(1 for m in mentioned if m in truth_set)
    precision = hits / len(mentioned) if mentioned else 1.0
    recall = hits / len(truth_set) if truth_set else 1.0
    return precision, recall


# -- urban knowledge: what the district is used for -------------------------------------------------

LAND_USES: tuple[str, ...] = ("commercial", "residential", "industrial", "green", "waterfront")

# Phrases that assert a district's use. The simulated captioners draw their guesses from these, and
# `district_claims` reads them back from any caption.
DISTRICT_PHRASES: dict[str, tuple[str, ...]] = {
    "commercial": ("financial district", "central business district", "commercial district",
                   "shopping district", "commercial hub", "downtown business core"),
    "residential": ("residential neighbourhood", "quiet residential area", "housing estate",
                    "residential district", "suburban neighbourhood"),
    "industrial": ("industrial zone", "manufacturing district", "logistics hub", "industrial estate",
                   "industrial quarter"),
    "green": ("recreational area", "green belt", "nature reserve", "public parkland"),
    "waterfront": ("waterfront district", "riverside quarter", "coastal zone"),
}

_USE_BY_NAME: dict[str, str] = {
    "skyscraper": "commercial", "office building": "commercial", "shop": "commercial",
    "shop sign": "commercial", "shop window": "commercial", "neon sign": "commercial",
    "bar sign": "commercial", "house": "residential", "apartment building": "residential",
    "warehouse": "industrial", "factory": "industrial", "storage tank": "industrial",
    "park": "green", "field": "green", "lawn": "green", "sea": "waterfront", "river": "waterfront",
    "lake": "waterfront", "beach": "waterfront",
}
_USE_ATTRIBUTES = ("commercial", "residential", "industrial")


def dominant_land_use(graph: Mapping[str, Any]) -> str:
    """The land use covering most of the image, from use-tagged buildings and open land/water.

    Area-weighted (bounding boxes), so one big warehouse outweighs a shop sign. Buildings' own
    'commercial'/'residential'/'industrial' attributes win over the name table.
    """
    scores = dict.fromkeys(LAND_USES, 0.0)
    for obj in graph.get("objects", ()):
        attributes = set(obj.get("attributes", ()))
        use = next((a for a in _USE_ATTRIBUTES if a in attributes), None) or _USE_BY_NAME.get(obj["name"])
        if use is None:
            continue
        x0, y0, x1, y1 = obj["bbox"]
        scores[use] += max(0, x1 - x0) * max(0, y1 - y0)
    return max(LAND_USES, key=lambda u: (scores[u], -LAND_USES.index(u)))


@lru_cache(maxsize=1)
def _district_patterns() -> dict[str, re.Pattern[str]]:
    return {use: re.compile(r"\b(?:" + "|".join(re.escape(p) for p in phrases) + r")s?\b")
            for use, phrases in DISTRICT_PHRASES.items()}


def district_claims(caption: str) -> list[str]:
    """Land uses the caption asserts for the district (via :data:`DISTRICT_PHRASES`)."""
    text = " ".join(words(caption))
    return [use for use, pattern in _district_patterns().items() if pattern.search(text)]


def wrong_district_claims(caption: str, graph: Mapping[str, Any]) -> list[str]:
    """District uses the caption asserts that contradict the graph's dominant land use."""
    dominant = dominant_land_use(graph)
    return [use for use in district_claims(caption) if use != dominant]


# -- generation-time bookkeeping ---------------------------------------------------------------------


@dataclass(frozen=True)
class CaptionTruth:
    """What a simulated caption says, against the scene graph it was written from."""

    caption: str
    captioner: str
    truthful: tuple[str, ...]  # object kinds named that the image shows
    hallucinated: tuple[str, ...]  # object kinds named that the image does not show
    omitted: tuple[str, ...]  # object kinds in the image the caption leaves out
    attribute_errors: tuple[str, ...] = ()  # e.g. "car: red -> blue"
    filler_sentences: int = 0
    district_claim: str | None = None
    wrong_district_claim: bool = False
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def precision(self) -> float:
        named = len(self.truthful) + len(self.hallucinated)
        return len(self.truthful) / named if named else 1.0

    @property
    def recall(self) -> float:
        shown = len(self.truthful) + len(self.omitted)
        return len(self.truthful) / shown if shown else 1.0


def describe_with_truth(captioner: Any, image_id: str, graph: Mapping[str, Any], n: int = 2) -> list[CaptionTruth]:
    """Captions plus their bookkeeping, for captioners that keep it (the simulated ones)."""
    method = getattr(captioner, "describe_with_truth", None)
    if method is None:
        raise TypeError(f"{type(captioner).__name__} keeps no generation-time truth; "
                        "score its captions with object_precision_recall instead")
    return method(None, image_id, dict(graph), n)


# -- CLIP token length -----------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _clip_tokenizer() -> Any:
    """open_clip's SimpleTokenizer, imported lazily (open_clip is optional).

    Importing the ``open_clip`` package builds its whole model zoo (seconds); its ``tokenizer``
    module stands alone, so when the package is not loaded yet only that file is loaded.
    """
    import importlib.util
    import sys

    module = sys.modules.get("open_clip.tokenizer")
    if module is None:
        spec = importlib.util.find_spec("open_clip")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("clip_token_length needs open_clip: pip install open_clip_torch")
        path = Path(spec.submodule_search_locations[0]) / "tokenizer.py"
        try:
            file_spec = importlib.util.spec_from_file_location("_urbanln_open_clip_tokenizer", path)
            module = importlib.util.module_from_spec(file_spec)  # type: ignore[arg-type]
            file_spec.loader.exec_module(module)  # type: ignore[union-attr]
        except Exception:  # a future open_clip whose tokenizer needs its package: import it whole
            import open_clip.tokenizer as module  # noqa: PLC0415
    return module.SimpleTokenizer()


def clip_token_length(text: str) -> int:
    """Tokens CLIP's BPE needs for ``text``, untruncated, plus start/end (77 is CLIP's context)."""
    return len(_clip_tokenizer().encode(text)) + 2
