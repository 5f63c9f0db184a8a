"""Scene-graph ceiling: what a perfect parser of the pixels could know (synthetic twins only).

A reference row that frames every twin table (docs/methods.md#scene-graph-ceiling, docs/twins.md#floors-
and-ceilings): between the colour-histogram floor and the true-latent oracle, it is the best a
representation can do from what is *drawn* in the images, read off the twin's ground-truth scene graphs
(``truth/scene_graphs/*.jsonl``, format in ``synth/scene.py``) instead of the pixels. It declares
``truth=("scene_graphs",)``, so the harness hands it the graphs of the embedded city
(``fit_inputs.SceneGraphs``); nothing is learned and no label is read.

Features of one image (all from its graph, read the way the captioners read it, ``captions.grammar``):

- ``count:<object>``: log(1 + number of objects of that name), a group object counting ``count`` times
  (``grammar.entities_of``'s ``Entity.count``);
- ``attribute:<object>|<attribute>``: log(1 + number of objects of that name carrying that attribute),
  groups counting ``count`` times;
- ``relation:<predicate>``: log(1 + number of relations with that predicate);
- ``area:<object>``: the object name's share of the image, its boxes' areas summed over the image area and
  capped at 1 (``Entity.area``; the graphs store boxes, not masks, so overlaps count twice below the cap).

The vocabulary of each block is the sorted union over every image of that imagery in the city (graphs
only, no labels), so the width is 2·|objects| + |object–attribute pairs| + |predicates| per imagery.
A region's SV feature is the mean of its street views' features (at most
``embed.MAX_STREETVIEWS_PER_REGION``, the harness's pooling cap), its SI feature that of its one tile.
``scene-graph-ceiling-fused`` (SV+SI) concatenates the SV and the SI feature of every region; a region
without street views (or without a tile) gets zeros for that part, as UrbanVLP does (``methods/urbanvlp.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from urbanln_bench.errors import UserError
from urbanln_bench.method import FitContext, Method, MethodMeta

BLOCKS = ("count", "attribute", "relation", "area")  # feature-name prefixes, in column order


def image_terms(graph: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """One graph's raw values per block: object counts, object|attribute counts, predicate counts, areas."""
    from urbanln_bench.captions.grammar import entities_of

    entities = entities_of(graph)
    attributes: dict[str, float] = {}
    for obj in graph.get("objects", ()):
        for attribute in dict.fromkeys(str(a) for a in obj.get("attributes", ())):
            pair = f"{obj['name']}|{attribute}"
            attributes[pair] = attributes.get(pair, 0.0) + int(obj.get("count", 1))
    relations: dict[str, float] = {}
    for relation in graph.get("relations", ()):
        predicate = str(relation["predicate"])
        relations[predicate] = relations.get(predicate, 0.0) + 1.0
    return {"count": {e.name: float(e.count) for e in entities}, "attribute": attributes,
            "relation": relations, "area": {e.name: float(e.area) for e in entities}}


@dataclass(frozen=True)
class SceneGraphVocabulary:
    """The feature columns of one imagery: sorted object names, object|attribute pairs and predicates."""

    objects: tuple[str, ...]
    pairs: tuple[str, ...]
    predicates: tuple[str, ...]

    @classmethod
    def of(cls, graphs: Mapping[str, Mapping[str, Any]]) -> SceneGraphVocabulary:
        objects: set[str] = set()
        pairs: set[str] = set()
        predicates: set[str] = set()
        for graph in graphs.values():
            terms = image_terms(graph)
            objects |= set(terms["count"])
            pairs |= set(terms["attribute"])
            predicates |= set(terms["relation"])
        return cls(tuple(sorted(objects)), tuple(sorted(pairs)), tuple(sorted(predicates)))

    def _columns(self) -> list[tuple[str, tuple[str, ...]]]:
        return [("count", self.objects), ("attribute", self.pairs), ("relation", self.predicates),
                ("area", self.objects)]

    @property
    def names(self) -> list[str]:
        return [f"{block}:{term}" for block, terms in self._columns() for term in terms]

    @property
    def width(self) -> int:
        return 2 * len(self.objects) + len(self.pairs) + len(self.predicates)

    def encode(self, graph: Mapping[str, Any]) -> np.ndarray:
        """One image's feature vector (float64): log(1 + count) per count block, the area share per object."""
        terms = image_terms(graph)
        parts = []
        for block, vocabulary in self._columns():
            values = np.array([terms[block].get(term, 0.0) for term in vocabulary], np.float64)
            parts.append(values if block == "area" else np.log1p(values))
        return np.concatenate(parts)


def region_features(city, region_ids: Sequence[str], imagery: str, graphs: Mapping[str, Mapping[str, Any]],
                    vocabulary: SceneGraphVocabulary) -> np.ndarray:
    """(n, width) float64: the tile's features (SI) or the mean over ≤ 32 street views (SV); zeros for a
    region without that imagery."""
    from urbanln_bench.embed import MAX_STREETVIEWS_PER_REGION

    out = np.zeros((len(region_ids), vocabulary.width), np.float64)
    tiles = set(city.satellite_ids()) if imagery == "SI" else set()
    for row, rid in enumerate(region_ids):
        if imagery == "SI":
            image_ids = [rid] if rid in tiles else []
        else:
            image_ids = city.streetview_ids(rid)[:MAX_STREETVIEWS_PER_REGION]
        missing = [i for i in image_ids if i not in graphs]
        if missing:
            raise UserError(f"scene-graph ceiling: no {imagery} scene graph for image '{missing[0]}' of {city.name}")
        if image_ids:
            out[row] = np.mean([vocabulary.encode(graphs[i]) for i in image_ids], axis=0)
    return out


class SceneGraphCeiling(Method):
    meta = MethodMeta(
        name="scene-graph-ceiling",
        display_name="Scene-graph ceiling",
        version="1",
        imagery="either",
        native_imagery=("SV", "SI"),
        description="Ground-truth scene graphs per image (object counts, object|attribute counts, predicate "
                    "counts, object area shares), street views averaged per region: what a perfect parser of "
                    "the pixels could know (synthetic only).",
        role="ceiling",
        synthetic_only=True,
        truth=("scene_graphs",),
    )

    def weight_source(self) -> str:
        return "none (ground-truth scene graphs)"

    def fit(self, city, imagery: str, context: FitContext) -> None:
        self.graphs = context.extras["scene_graphs"]  # {"SV"/"SI": image id -> graph}, provided by the harness
        self.vocabularies = {kind: SceneGraphVocabulary.of(graphs) for kind, graphs in self.graphs.items()}

    def kinds(self) -> tuple[str, ...]:
        return tuple(self.vocabularies)

    def feature_names(self) -> list[str]:
        """Column names of the embedding (after ``fit``); fused columns are prefixed ``SV/`` and ``SI/``."""
        if len(self.kinds()) == 1:
            return self.vocabularies[self.kinds()[0]].names
        return [f"{kind}/{name}" for kind in self.kinds() for name in self.vocabularies[kind].names]

    def encode_regions(self, city, region_ids, context: FitContext) -> np.ndarray:
        parts = [region_features(city, region_ids, kind, self.graphs[kind], self.vocabularies[kind])
                 for kind in self.kinds()]
        return np.concatenate(parts, axis=1).astype(np.float32)


class SceneGraphCeilingFused(SceneGraphCeiling):
    meta = MethodMeta(
        name="scene-graph-ceiling-fused",
        display_name="Scene-graph ceiling (SV+SI)",
        version="1",
        imagery="fused",
        native_imagery=("SV+SI",),
        description="The scene-graph ceiling's SV and SI region features concatenated (zeros for a region "
                    "without street views): the SV+SI reference (synthetic only).",
        role="ceiling",
        synthetic_only=True,
        truth=("scene_graphs",),
    )
