"""Simulated MLLM captioners: long, noisy captions written from a twin image's scene graph.

No MLLM weights exist offline, so UrbanLN's multi-captioner stage (docs/methods.md#urbanln) runs on personas:
one generator, with each persona's style and noise as data (``styles/*.toml``, documented in
``styles/README.md``). The personas are named after the paper's MLLMs and are labelled *simulated*
everywhere. Captions are deterministic from (persona, image id, seed, caption index): each draws
its own generator from a stable hash, so call order and process count never change them.

The words come from ``grammar`` (entities, noun phrases, positions, verbs); this module adds the
persona's noise and layout. The pretraining world's short captions are in ``short_captions``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from urbanln_bench.captions import fidelity
from urbanln_bench.captions.fidelity import CaptionTruth
from urbanln_bench.captions.grammar import (
    COLOURS,
    UNIQUE,
    Entity,
    article,
    category_of,
    definite,
    entities_of,
    entity_relations,
    fill_template,
    is_plural,
    join_items,
    noun_phrase,
    verb_phrase,
    where_phrase,
)
from urbanln_bench.captions.personas import Persona, PersonaStyle, load_persona
from urbanln_bench.errors import UserError

# -- the generator ------------------------------------------------------------------------------------

@dataclass
class _Sentence:
    text: str
    role: str  # opener, list, body, filler, remark, knowledge, closer
    mentions: frozenset[str] = frozenset()
    category: str = "details"
    prefix: str = ""  # a connector ("Moreover,") or section lead ("Buildings:"), joined at the end

    def render(self) -> str:
        if not self.prefix:
            return self.text
        return f"{self.prefix} {self.text[:1].lower()}{self.text[1:]}"


def stable_rng(*parts: object) -> np.random.Generator:
    """A generator seeded from a stable hash of ``parts`` (never Python's salted ``hash``)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _word_count(sentences: Sequence[_Sentence]) -> int:
    return sum(len(s.render().split()) for s in sentences)


class SyntheticCaptioner:
    """A simulated MLLM persona (``persona`` = built-in name or a .toml path); needs scene graphs.

    ``rng`` arguments are ignored on purpose: captions depend only on (persona, image id, seed,
    caption index), so they are the same whatever order or process writes them.
    """

    backend = "synthetic"

    def __init__(self, persona: str = "qwen2.5-vl-7b", seed: int = 0) -> None:
        self.persona = load_persona(persona)
        self.seed = int(seed)
        self.name = self.persona.name

    def __repr__(self) -> str:
        return f"SyntheticCaptioner({self.persona.name!r}, seed={self.seed})"

    # -- protocol ---------------------------------------------------------------------------------
    def describe(self, image: np.ndarray | None, image_id: str, graph: Mapping[str, Any] | None, n: int = 2,
                 rng: np.random.Generator | None = None) -> list[str]:
        """``n`` long captions of one image (different draws of the persona's noise)."""
        return [t.caption for t in self.describe_with_truth(image, image_id, graph, n)]

    def describe_with_truth(self, image: np.ndarray | None, image_id: str, graph: Mapping[str, Any] | None,
                            n: int = 2, rng: np.random.Generator | None = None) -> list[CaptionTruth]:
        """Captions with the record of what each names truthfully, hallucinates and omits."""
        graph = self._require_graph(image_id, graph)
        return [self._caption(image_id, graph, i) for i in range(n)]

    def describe_region(self, image: np.ndarray | None, image_id: str, graph: Mapping[str, Any] | None,
                        box: Sequence[float], rng: np.random.Generator | None = None) -> str:
        """A short local caption (≤ 20 words) of the crop ``box`` = (x0, y0, x1, y1), same noise."""
        graph = self._require_graph(image_id, graph)
        return _region_caption(self.persona, graph, box,
                               stable_rng(self.persona.name, image_id, self.seed, "region", *box))

    def rewrite(self, overall: str, local_details: Sequence[str], image: np.ndarray | None = None,
                image_id: str = "", rng: np.random.Generator | None = None) -> str:
        """Merge kept local details into the overall caption in this persona's voice, no duplicates."""
        return merge_details(overall, local_details, self.persona.style.detail_templates,
                             self.persona.style.connectors,
                             stable_rng(self.persona.name, image_id, self.seed, "rewrite", overall))

    # -- generation --------------------------------------------------------------------------------
    def _require_graph(self, image_id: str, graph: Mapping[str, Any] | None) -> Mapping[str, Any]:
        if graph is None:
            raise UserError(f"captioner '{self.name}' (simulated) writes from scene graphs, and image '{image_id}' "
                            "has none; scene graphs exist for synthetic twins only. For real imagery use the "
                            "'transformers' backend (a local MLLM) or import captions with the 'file' backend.")
        return graph

    def _caption(self, image_id: str, graph: Mapping[str, Any], index: int) -> CaptionTruth:
        persona, style, noise = self.persona, self.persona.style, self.persona.noise
        rng = stable_rng(persona.name, image_id, self.seed, index)
        kind = str(graph.get("kind", "satellite"))
        present = entities_of(graph)
        # 1. omissions, small kinds more often; keep at least the largest kind
        kept, omitted = [], []
        for entity in present:
            p = noise.omission_rate * (noise.small_object_omission_factor if entity.small else 1.0)
            (omitted if rng.random() < min(0.95, p) else kept).append(entity)
        if not kept and omitted:
            kept.append(omitted.pop(0))
        # 2. attribute errors (one wrong colour or size word)
        attribute_errors = []
        for i, entity in enumerate(kept):
            if rng.random() < noise.attribute_error_rate:
                changed = _corrupt_attribute(entity, rng)
                if changed is not None:
                    kept[i], note = changed
                    attribute_errors.append(note)
        # 3. hallucinated kinds: expected share of named kinds = hallucination_rate
        ratio = noise.hallucination_rate / (1.0 - noise.hallucination_rate)
        n_fake = int(rng.binomial(len(kept), min(1.0, ratio))) if kept else 0
        fakes = _hallucinate(kind, {e.name for e in present}, n_fake, noise.hallucination_from_scene, graph, rng)
        # 4. sentences
        salience = sorted(kept, key=lambda e: -e.area * rng.uniform(0.5, 1.5))
        opener_entities = salience[: 2 + int(rng.random() < 0.5)]
        rest = [e for e in salience if e not in opener_entities]
        summary = join_items([noun_phrase(e, style, rng, max_attributes=1) for e in opener_entities]) \
            or "few distinguishable features"
        opener = _Sentence(fill_template(str(rng.choice(style.openers(kind))), summary=summary), "opener",
                           frozenset(e.name for e in opener_entities))
        body: list[_Sentence] = []
        if style.layout == "list" and rest:
            listed, rest = rest[:5], rest[5:]
            items = join_items([noun_phrase(e, style, rng) for e in listed])
            body.append(_Sentence(fill_template(str(rng.choice(style.list_templates)), items=items), "list",
                                  frozenset(e.name for e in listed)))
        relations = entity_relations(graph, {e.name: e for e in kept})
        for entity in rest:
            body.append(self._entity_sentence(entity, relations, graph, rng))
        for fake in fakes:
            position = int(rng.integers(0, len(body) + 1))
            body.insert(position, self._fake_sentence(fake, kept, graph, rng))
        for sentence in body:
            if sentence.role == "body" and rng.random() < style.connector_rate:
                sentence.prefix = str(rng.choice(style.connectors))
        n_filler = int(rng.binomial(max(1, len(body)), noise.filler_rate / (1.0 - noise.filler_rate)))
        for text in _pick(style.filler, n_filler, rng):
            body.insert(int(rng.integers(0, len(body) + 1)), _Sentence(text, "filler"))
        # 5. urban knowledge: at most one district claim, drawn before anything is trimmed
        dominant = fidelity.dominant_land_use(graph)
        u = rng.random()
        claim: str | None = None
        if u < noise.wrong_urban_knowledge_rate:
            claim = str(rng.choice([use for use in fidelity.LAND_USES if use != dominant]))
        elif u < noise.wrong_urban_knowledge_rate + noise.urban_knowledge_rate:
            claim = dominant
        tail: list[_Sentence] = []
        if claim is not None:
            phrase = str(rng.choice(fidelity.DISTRICT_PHRASES[claim]))
            tail.append(_Sentence(fill_template(str(rng.choice(style.knowledge_templates)),
                                                district=f"{article(phrase)} {phrase}"), "knowledge"))
        tail.append(_Sentence(str(rng.choice(style.closers)), "closer"))
        # 6. length: trim random body sentences, or pad with view remarks, then filler
        target = int(rng.integers(persona.length.min_words, persona.length.max_words + 1))
        while body and _word_count([opener, *body, *tail]) > target:
            body.pop(int(rng.integers(0, len(body))))
        used = {s.text for s in body}
        pads = [_elaboration(e, graph, rng) for e in kept]
        pads += [_Sentence(t, "remark") for t in _pick(style.remarks(kind), len(style.remarks(kind)), rng)]
        pads += [_Sentence(t, "filler") for t in _pick(style.filler, len(style.filler), rng) if t not in used]
        while pads and _word_count([opener, *body, *tail]) < persona.length.min_words:
            body.insert(int(rng.integers(0, len(body) + 1)), pads.pop(0))
        while _word_count([opener, *body, *tail]) > persona.length.max_words and len(tail) > 1:
            tail.pop()  # the closer goes before the district claim does
        sentences = [opener, *self._arrange(body, style), *tail]
        caption = " ".join(s.render() for s in sentences)
        named = set().union(*(s.mentions for s in sentences))
        truth_names = {e.name for e in present}
        return CaptionTruth(
            caption=caption, captioner=persona.name,
            truthful=tuple(e.name for e in present if e.name in named),
            hallucinated=tuple(sorted(named - truth_names)),
            omitted=tuple(e.name for e in present if e.name not in named),
            attribute_errors=tuple(attribute_errors),
            filler_sentences=sum(s.role == "filler" for s in sentences),
            district_claim=claim, wrong_district_claim=claim is not None and claim != dominant,
        )

    def _entity_sentence(self, entity: Entity, relations: dict[str, list[tuple[str, Entity]]],
                         graph: Mapping[str, Any], rng: np.random.Generator,
                         relation_chance: float = 0.75) -> _Sentence:
        style = self.persona.style
        options = relations.get(entity.name, [])
        where = where_phrase(entity, graph)
        if options and rng.random() < relation_chance:
            predicate, other = options[int(rng.integers(0, len(options)))]
            text = fill_template(str(rng.choice(style.relation_templates)),
                                 subject=noun_phrase(entity, style, rng, keep_states=False),
                                 verb=verb_phrase(predicate, entity, rng), object=definite(other), where=where,
                                 be="are" if is_plural(entity) else "is")
            return _Sentence(text, "body", frozenset({entity.name, other.name}), category_of(entity.name))
        text = fill_template(str(rng.choice(style.entity_templates)), phrase=noun_phrase(entity, style, rng),
                             be="are" if is_plural(entity) else "is", where=where)
        return _Sentence(text, "body", frozenset({entity.name}), category_of(entity.name))

    def _fake_sentence(self, fake: Entity, kept: Sequence[Entity], graph: Mapping[str, Any],
                       rng: np.random.Generator) -> _Sentence:
        anchors = [e for e in kept if e.name not in UNIQUE and e.name not in fidelity.UNCOUNTABLE]
        if anchors and rng.random() < 0.5:
            anchor = anchors[int(rng.integers(0, len(anchors)))]
            return self._entity_sentence(fake, {fake.name: [("near", anchor)]}, graph, rng, relation_chance=1.0)
        return self._entity_sentence(fake, {}, graph, rng)

    def _arrange(self, body: list[_Sentence], style: PersonaStyle) -> list[_Sentence]:
        """'sections' layout: group content sentences by category, each group led by its heading."""
        if style.layout != "sections":
            return body
        order = ["buildings", "transport", "nature", "details"]
        content = [s for s in body if s.role == "body"]
        others = [s for s in body if s.role != "body"]
        out: list[_Sentence] = [s for s in others if s.role == "list"]
        for category in order:
            group = [s for s in content if s.category == category]
            lead = style.section_leads.get(category)
            if group and lead:
                group[0] = replace(group[0], prefix=lead)
            out.extend(group)
        return out + [s for s in others if s.role != "list"]


def _elaboration(entity: Entity, graph: Mapping[str, Any], rng: np.random.Generator) -> _Sentence:
    """A second, plain sentence about a kind's position: padding that adds no new claim."""
    verb = "are" if is_plural(entity) else "is"
    where = where_phrase(entity, graph)
    text = fill_template(str(rng.choice(["{The} {be} mostly {where}.", "{The} {be} found {where}.",
                                         "Most of {the} {be} {where}."])), the=definite(entity), be=verb, where=where)
    return _Sentence(text, "remark", frozenset({entity.name}), category_of(entity.name))


def _pick(pool: Sequence[str], k: int, rng: np.random.Generator) -> list[str]:
    if k <= 0 or not pool:
        return []
    order = rng.permutation(len(pool))
    return [pool[int(i)] for i in order[: min(k, len(pool))]]


_SIZE_SWAPS = {"tall": "low-rise", "low-rise": "tall", "mid-rise": "tall", "low": "tall", "large": "small",
               "small": "large", "wide": "narrow", "narrow": "wide"}


def _corrupt_attribute(entity: Entity, rng: np.random.Generator) -> tuple[Entity, str] | None:
    attrs = list(entity.attributes)
    candidates = [i for i, a in enumerate(attrs) if a in COLOURS or a in _SIZE_SWAPS]
    if not candidates:
        return None
    i = candidates[int(rng.integers(0, len(candidates)))]
    old = attrs[i]
    new = _SIZE_SWAPS[old] if old in _SIZE_SWAPS else str(rng.choice([c for c in COLOURS if c != old]))
    attrs[i] = new
    return replace(entity, attributes=tuple(attrs)), f"{entity.name}: {old} -> {new}"


FAKE_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "fountain": ("small", "stone"), "billboard": ("large", "bright"), "bench": ("wooden",), "statue": ("bronze",),
    "traffic light": ("red",), "bicycle": ("blue",), "flag": ("red",), "tennis court": ("green",),
    "solar panel": ("dark blue",), "bus stop": ("small", "glass"), "trash can": ("black",), "dog": ("small", "brown"),
}


def _hallucinate(kind: str, present: set[str], n: int, from_scene: float, graph: Mapping[str, Any],
                 rng: np.random.Generator) -> list[Entity]:
    """``n`` absent kinds: other twin scenes' objects, or plausible things the twins never draw."""
    scene_pool = [v for v in fidelity.SCENE_VOCABULARY.get(kind, ()) if v not in present and v not in UNIQUE]
    absent_pool = [v for v in fidelity.PLAUSIBLE_ABSENT.get(kind, ()) if v not in present]
    width, height = int(graph["width"]), int(graph["height"])
    out: list[Entity] = []
    for _ in range(n):
        pool = scene_pool if (scene_pool and rng.random() < from_scene) else absent_pool or scene_pool
        pool = [v for v in pool if v not in {e.name for e in out}]
        if not pool:
            break
        name = pool[int(rng.integers(0, len(pool)))]
        x0, y0 = int(rng.integers(0, max(1, width - 8))), int(rng.integers(0, max(1, height - 8)))
        count = 1 if rng.random() < 0.6 else int(rng.integers(2, 5))
        attributes = FAKE_ATTRIBUTES.get(name, ()) if rng.random() < 0.7 else ()
        out.append(Entity(name, count, attributes, 0.01, (x0, y0, x0 + 8, y0 + 8), hallucinated=True))
    return out


# -- local region captions and the merge step ---------------------------------------------------------


def _region_caption(persona: Persona, graph: Mapping[str, Any], box: Sequence[float],
                    rng: np.random.Generator) -> str:
    bx0, by0, bx1, by1 = (float(v) for v in box)
    box_area = max(1e-9, (bx1 - bx0) * (by1 - by0))
    inside: dict[str, Entity] = {}
    for obj in graph.get("objects", ()):
        x0, y0, x1, y1 = obj["bbox"]
        overlap = max(0.0, min(x1, bx1) - max(x0, bx0)) * max(0.0, min(y1, by1) - max(y0, by0))
        area = max(1e-9, (x1 - x0) * (y1 - y0))
        if overlap / area < 0.5 and overlap / box_area < 0.25:
            continue
        share = overlap / area
        count = max(1, round(int(obj.get("count", 1)) * share))
        name = str(obj["name"])
        if name in inside:
            inside[name].count += count
            inside[name].area += overlap / box_area
        else:
            inside[name] = Entity(name, count, tuple(obj.get("attributes", ())), overlap / box_area,
                                  (int(x0), int(y0), int(x1), int(y1)))
    noise, style = persona.noise, persona.style
    entities = sorted(inside.values(), key=lambda e: -e.area)
    kept = [e for e in entities
            if rng.random() >= min(0.95, noise.omission_rate * (noise.small_object_omission_factor if e.small else 1))]
    if not kept and entities:
        kept = entities[:1]
    kind = str(graph.get("kind", "satellite"))
    if kept and rng.random() < noise.hallucination_rate:
        kept += _hallucinate(kind, set(inside), 1, noise.hallucination_from_scene, graph, rng)
    if not kept:
        return "A plain patch of the image with nothing distinct in it."
    phrases = [noun_phrase(e, style, rng, max_attributes=1) for e in kept[:3]]
    template = str(rng.choice(style.region_templates)) if len(phrases) > 1 else "{items}"
    while True:
        text = fill_template(template, items=join_items(phrases), first=phrases[0], rest=join_items(phrases[1:])) + "."
        if len(text.split()) <= 20 or len(phrases) == 1:
            return " ".join(text.split()[:20]).rstrip(",") if len(text.split()) > 20 else text
        phrases.pop()


_STOP = frozenset("a an the of and with in on at to is are be also some its their there this that".split())
_SENTENCE_VERBS = re.compile(r"\b(is|are|was|were|stands?|sits?|runs?|can be|appears?|shows?|has|have)\b")


def _content_words(text: str) -> set[str]:
    return {w for w in fidelity.words(text) if w not in _STOP}


def merge_details(overall: str, local_details: Sequence[str], detail_templates: Sequence[str],
                  connectors: Sequence[str], rng: np.random.Generator) -> str:
    """Rule-based merge (the refinement's last step): weave new local details into ``overall``.

    A detail is dropped when it adds nothing: its text is already in the caption, or every object
    kind and content word it has is already there, or an earlier detail said the same.
    Noun-phrase details are grouped two per sentence in a persona frame; sentence details get a
    connector. They go before the caption's closing sentence, so its style and ending are kept.
    """
    base = overall.strip()
    known_words = _content_words(base)
    known_kinds = set(fidelity.mentioned_objects(base))
    lowered = " ".join(fidelity.words(base))
    phrases: list[str] = []
    sentences: list[str] = []
    seen: set[frozenset[str]] = set()
    for raw in local_details:
        detail = " ".join(str(raw).split()).strip(" .;,")
        if not detail:
            continue
        norm = " ".join(fidelity.words(detail))
        content = frozenset(_content_words(detail))
        kinds = set(fidelity.mentioned_objects(detail))
        if not norm or norm in lowered or content in seen:
            continue
        if kinds <= known_kinds and content <= known_words:
            continue
        seen.add(content)
        known_words |= content
        known_kinds |= kinds
        if _SENTENCE_VERBS.search(detail.lower()):
            connector = str(rng.choice(list(connectors))) if connectors else ""
            sentences.append(f"{connector} {detail[:1].lower()}{detail[1:]}.".strip() if connector
                             else f"{detail[:1].upper()}{detail[1:]}.")
        else:
            phrases.append(detail[:1].lower() + detail[1:] if not detail[:2].isupper() else detail)
    added = []
    groups: list[list[str]] = []
    for phrase in phrases:  # short phrases two to a sentence, long ones alone
        if groups and len(groups[-1]) == 1 and len(groups[-1][0].split()) + len(phrase.split()) <= 12:
            groups[-1].append(phrase)
        else:
            groups.append([phrase])
    for group in groups:
        many = len(group) > 1 or not re.match(r"(a|an|one|the)\b", group[0])
        added.append(fill_template(str(rng.choice(list(detail_templates))), details=join_items(group),
                                   be="are" if many else "is"))
    added += [s[:1].upper() + s[1:] for s in sentences]
    if not added:
        return base
    parts = re.split(r"(?<=[.!?])\s+", base)
    if len(parts) >= 3:
        return " ".join(parts[:-1] + added + parts[-1:])
    return " ".join([base, *added]) if base else " ".join(added)
