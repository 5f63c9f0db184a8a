"""Divide-and-conquer refinement of one image's long captions (docs/methods.md#urbanln; CAPTURE's pipeline, docs/methods.md#caption-pipeline).

Per image: segment → maximal-rectangle crops (``segment.crops_from_masks``, dilated by W//50,
H//50) → one short local caption per crop by the *same* captioner → phrases from the overall and
the local captions → each phrase scored (local ones against their crop, overall ones against the
whole image) → rejected phrases deleted → the captioner rewrites the filtered overall caption with
the kept local captions into one long caption.

Deletion follows CAPTURE (docs/methods.md#caption-pipeline, Stage 4), grammar not repaired: in a local caption a regex
removes the phrase plus any attached letters ("car" also removes "cars"); in the overall caption
the phrase is removed as a plain substring (longest phrases first). Only whitespace is tidied.
A local caption left with no kept phrase is not passed on.

Two documented departures from CAPTURE: phrases whose last word is on CAPTURE's stop list (image,
view, scene, side, ...) name no detectable object and are neither queried nor deleted; and the
segmentation, crops and local captions are computed once per (image, captioner) and shared by that
captioner's candidates (they do not depend on the candidate).

Segmentation, phrase extraction and scoring see pixels and text only; the scene graph reaches the
simulated captioners alone (they play MLLMs looking at the image).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np

from urbanln_bench.captions.captioners import Captioner
from urbanln_bench.captions.factual import PhraseExtractor, RuleParserExtractor
from urbanln_bench.captions.phrase_scoring import PhraseScorer, QuerySet
from urbanln_bench.captions.rectangles import Box, dilate_box
from urbanln_bench.captions.segment import ColourRegionSegmenter, Segmenter, crops_from_masks
from urbanln_bench.errors import UserError


@dataclass
class StageTimes:
    """Seconds and item counts per pipeline stage (for captions/s and pairs/s reports)."""

    seconds: dict[str, float] = field(default_factory=dict)
    items: dict[str, int] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str, items: int = 1) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            self.items[name] = self.items.get(name, 0) + items

    def rates(self) -> dict[str, dict[str, float]]:
        return {name: {"seconds": round(s, 3), "items": self.items[name],
                       "per_second": round(self.items[name] / s, 2) if s > 0 else float("inf")}
                for name, s in self.seconds.items()}


@dataclass(frozen=True)
class PhraseDecision:
    phrase: str
    source: str  # "overall" or "local"
    region: int  # crop index, -1 = the whole image
    score: float
    kept: bool


@dataclass(frozen=True)
class LocalCaption:
    box: Box
    caption: str
    filtered: str
    kept: bool
    decisions: tuple[PhraseDecision, ...]


@dataclass(frozen=True)
class Refinement:
    """One refined candidate: the result and how it came about (provenance)."""

    caption: str
    overall: str
    overall_filtered: str
    decisions: tuple[PhraseDecision, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"overall_filtered": self.overall_filtered,
                "phrases": [[d.phrase, round(d.score, 4), d.kept] for d in self.decisions]}


# -- deletion (docs/methods.md#caption-pipeline, Stage 4) ------------------------------------------------------------------


def tidy(text: str) -> str:
    """Collapse whitespace and drop spaces before punctuation; no other repair (as CAPTURE)."""
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r"\s+([,.;:!?])", r"\1", text)


def delete_from_local(caption: str, phrases: Sequence[str]) -> str:
    """CAPTURE's local-caption deletion: the phrase plus any attached letters."""
    for phrase in sorted(phrases, key=len, reverse=True):
        caption = re.sub(rf"\w*{re.escape(phrase)}\w*", "", caption)
    return tidy(caption)


def delete_from_overall(caption: str, phrases: Sequence[str]) -> str:
    """CAPTURE's overall-caption deletion: a plain substring, longest phrases first."""
    for phrase in sorted(phrases, key=len, reverse=True):
        caption = caption.replace(phrase, "")
    return tidy(caption)


@cache
def _stop_words() -> frozenset[str]:
    from urbanln_bench.captions.capture import load_stop_words

    return frozenset(w.lower() for w in load_stop_words())


def judged(phrases: Sequence[str]) -> list[str]:
    """Phrases worth querying: the last word names a thing (not on CAPTURE's stop list)."""
    stop = _stop_words()
    out = []
    for phrase in phrases:
        words = phrase.lower().split()
        if words and words[-1] not in stop and phrase.lower() not in stop and any(c.isalpha() for c in phrase):
            out.append(phrase)
    return out


# -- segmenters -------------------------------------------------------------------------------------


def build_segmenter(spec: str) -> Segmenter:
    """``"colour"`` (offline default, pixels only) or ``"sam:MODEL_DIR"`` (SAM via transformers)."""
    backend, _, argument = spec.partition(":")
    if backend == "colour" and not argument:
        return ColourRegionSegmenter()
    if backend == "sam":
        if not argument:
            raise UserError("segmenter 'sam' needs a folder: 'sam:/path/to/sam-vit-large'")
        from urbanln_bench.captions.segment import SamSegmenter

        return SamSegmenter(argument)
    raise UserError(f"unknown segmenter '{spec}'; use 'colour' (offline) or 'sam:MODEL_DIR'")


# -- the refiner ------------------------------------------------------------------------------------


class Refiner:
    """The refinement steps with their backends held once (see module docstring)."""

    def __init__(self, segmenter: Segmenter, scorer: PhraseScorer, extractor: PhraseExtractor | None = None,
                 times: StageTimes | None = None) -> None:
        self.segmenter = segmenter
        self.scorer = scorer
        self.extractor = extractor or RuleParserExtractor()
        self.times = times or StageTimes()

    def crops(self, image: np.ndarray) -> list[Box]:
        """Segment, cut overlaps into maximal rectangles, dilate (docs/methods.md#caption-pipeline, Stages 2–3)."""
        with self.times.stage("segment"):
            boxes = crops_from_masks(self.segmenter.masks(image), image.shape)
        height, width = image.shape[:2]
        return [b for b in (dilate_box(tuple(int(v) for v in box), width, height) for box in boxes) if b is not None]

    def local_captions(self, captioner: Captioner, image: np.ndarray, image_id: str,
                       graph: Mapping[str, Any] | None, crops: Sequence[Box]) -> list[LocalCaption]:
        """A short caption per crop, its phrases scored against the crop, rejected ones deleted."""
        captions, phrases = self._local_phrases(captioner, image, image_id, graph, crops)
        return self._score_local(image, crops, captions, phrases)

    def _local_phrases(self, captioner: Captioner, image: np.ndarray, image_id: str,
                       graph: Mapping[str, Any] | None, crops: Sequence[Box]) -> tuple[list[str], list[list[str]]]:
        with self.times.stage("local captions", len(crops)):
            captions = [captioner.describe_region(image, image_id, graph, box) for box in crops]
        with self.times.stage("phrase extraction", len(captions)):
            phrases = [judged(self.extractor(c)) for c in captions]
        return captions, phrases

    def _score_local(self, image: np.ndarray, crops: Sequence[Box], captions: Sequence[str],
                     phrases: Sequence[Sequence[str]]) -> list[LocalCaption]:
        with self.times.stage("phrase scoring", len(captions)):
            scores = self.scorer.score(image, [QuerySet(tuple(p), box, (c,))
                                               for p, box, c in zip(phrases, crops, captions, strict=True)])
        out = []
        for index, (box, caption, found, score) in enumerate(zip(crops, captions, phrases, scores, strict=True)):
            decisions = tuple(PhraseDecision(p, "local", index, float(s), bool(s > self.scorer.threshold))
                              for p, s in zip(found, score, strict=True))
            rejected = [d.phrase for d in decisions if not d.kept]
            out.append(LocalCaption(box, caption, delete_from_local(caption, rejected),
                                    any(d.kept for d in decisions), decisions))
        return out

    def refine(self, captioner: Captioner, image: np.ndarray, image_id: str, overall: str,
               local: Sequence[LocalCaption]) -> Refinement:
        """Filter one overall caption against the whole image and merge the kept local captions into it."""
        with self.times.stage("phrase extraction"):
            phrases = judged(self.extractor(overall))
        return self._refine_with(captioner, image, image_id, overall, phrases, local)

    def _refine_with(self, captioner: Captioner, image: np.ndarray, image_id: str, overall: str,
                     phrases: Sequence[str], local: Sequence[LocalCaption]) -> Refinement:
        with self.times.stage("phrase scoring"):
            # CAPTURE queries sentence by sentence; one set per caption is the same for an independent scorer
            (scores,) = self.scorer.score(image, [QuerySet(tuple(phrases), None)])
        decisions = tuple(PhraseDecision(p, "overall", -1, float(s), bool(s > self.scorer.threshold))
                          for p, s in zip(phrases, scores, strict=True))
        filtered = delete_from_overall(overall, [d.phrase for d in decisions if not d.kept])
        kept_local = [c.filtered for c in local if c.kept and c.filtered]
        with self.times.stage("rewrite"):
            caption = captioner.rewrite(filtered, kept_local, image=image, image_id=image_id)
        return Refinement(caption, overall, filtered,
                          decisions + tuple(d for c in local for d in c.decisions))

    def refine_image(self, captioner: Captioner, image: np.ndarray, image_id: str, graph: Mapping[str, Any] | None,
                     candidates: Sequence[str], crops: Sequence[Box] | None = None) -> list[Refinement]:
        """Refine every candidate of one captioner for one image (crops computed here unless given)."""
        crops = self.crops(image) if crops is None else crops
        local = self.local_captions(captioner, image, image_id, graph, crops)
        return [self.refine(captioner, image, image_id, c, local) for c in candidates]

    # -- the same work in two halves, for the caption pipeline's stages (stages.py) ---------------
    def plan(self, captioner: Captioner, image: np.ndarray, image_id: str, graph: Mapping[str, Any] | None,
             candidates: Sequence[str], crops: Sequence[Box]) -> RefinementPlan:
        """Everything of :meth:`refine_image` before the first phrase is scored: local captions and all phrases."""
        captions, phrases = self._local_phrases(captioner, image, image_id, graph, crops)
        overall = []
        for candidate in candidates:
            with self.times.stage("phrase extraction"):
                overall.append(judged(self.extractor(candidate)))
        return RefinementPlan(tuple(crops), tuple(captions), tuple(map(tuple, phrases)), tuple(candidates),
                              tuple(map(tuple, overall)))

    def apply(self, captioner: Captioner, image: np.ndarray, image_id: str, plan: RefinementPlan) -> list[Refinement]:
        """The rest of :meth:`refine_image`: score, delete, rewrite (the same scorer calls in the same order)."""
        local = self._score_local(image, plan.crops, plan.local_captions, plan.local_phrases)
        return [self._refine_with(captioner, image, image_id, c, p, local)
                for c, p in zip(plan.candidates, plan.overall_phrases, strict=True)]


@dataclass(frozen=True)
class RefinementPlan:
    """One captioner's refinement of one image up to the scoring: what :meth:`Refiner.apply` finishes."""

    crops: tuple[Box, ...]
    local_captions: tuple[str, ...]
    local_phrases: tuple[tuple[str, ...], ...]
    candidates: tuple[str, ...]
    overall_phrases: tuple[tuple[str, ...], ...]

    def text_queries(self) -> list[tuple[str, ...]]:
        """The phrase lists :meth:`Refiner.apply` hands the scorer's text encoder, in order (empty ones are skipped)."""
        return [p for p in self.local_phrases if p] + [p for p in self.overall_phrases if p]
