"""Short captions for the pretraining world (docs/twins.md#pretraining-world): one or two truthful
sentences within CLIP's 77 tokens, written from a scene graph.

Conventional CLIP pretraining text, with no persona noise: the synthetic foundation CLIP
(``backbones.foundation``, docs/architecture.md) trains on these. The words come from ``grammar``,
the same as the simulated MLLM captioners' (``synthetic_captioner``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from urbanln_bench.captions import fidelity
from urbanln_bench.captions.grammar import (
    definite,
    entities_of,
    entity_relations,
    fill_template,
    join_items,
    noun_phrase,
    verb_phrase,
)
from urbanln_bench.captions.personas import PersonaStyle

_SHORT_OPENERS = {
    "satellite": ("An aerial view of {items}.", "A satellite image of {items}.", "Top-down view of {items}."),
    "streetview": ("A city street with {items}.", "A street-level view of {items}.", "An urban scene with {items}."),
}
_EXACT = PersonaStyle(
    layout="paragraph", count_style="exact", max_attributes=1, connector_rate=0.0, openers_satellite=("",),
    openers_streetview=("",), list_templates=("",), entity_templates=("",), relation_templates=("",),
    connectors=("",), knowledge_templates=("",), filler=("",), remarks_satellite=("",), remarks_streetview=("",),
    closers=("",), region_templates=("",), detail_templates=("",),
)


def short_caption(graph: Mapping[str, Any], rng: np.random.Generator, max_tokens: int = 77) -> str:
    """A truthful one-or-two-sentence caption within CLIP's 77 tokens (pretraining-world CLIP text).

    Conventional CLIP pretraining text: short, accurate, no persona noise. The token budget is
    checked with open_clip's tokenizer when it is installed, else with a conservative word bound.
    """
    kind = str(graph.get("kind", "satellite"))
    entities = entities_of(graph)
    if not entities:
        return "An aerial view of open ground." if kind == "satellite" else "An empty street-level view."
    ranked = sorted(entities, key=lambda e: -e.area * rng.uniform(0.6, 1.4))
    template = str(rng.choice(_SHORT_OPENERS.get(kind, _SHORT_OPENERS["satellite"])))
    phrases = [noun_phrase(e, _EXACT, rng) for e in ranked[:5]]
    relations = entity_relations(graph, {e.name: e for e in ranked[:5]})
    second = ""
    subject = next((e for e in ranked[:5] if relations.get(e.name)), None)
    if subject is not None and rng.random() < 0.6:
        predicate, other = relations[subject.name][0]
        second = " " + fill_template("{Subject} {verb} {object}.",
                                     subject=noun_phrase(subject, _EXACT, rng, keep_states=False),
                                     verb=verb_phrase(predicate, subject, rng), object=definite(other))
    while True:
        text = fill_template(template, items=join_items(phrases)) + second
        if _fits(text, max_tokens) or (len(phrases) == 1 and not second):
            return text
        if second:
            second = ""
        else:
            phrases.pop()


def _fits(text: str, max_tokens: int) -> bool:
    try:
        return fidelity.clip_token_length(text) <= max_tokens
    except ImportError:
        return 2 * len(text.split()) + 2 <= max_tokens
