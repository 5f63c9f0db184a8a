"""CAPTURE speed on CPU: parser captions/s and consensus pairs/s on ~100-word captions (docs/methods.md#capture-metric).

Consensus selection scores 5–10 candidates per image against each other for ~2,000 images, so what
matters is the cost of one `capture_matrix` call with a cold embedding cache.

Run: pytest benchmarks/test_bench_capture.py --benchmark-enable
"""

from __future__ import annotations

import pytest

from urbanln_bench.captions.capture import CaptureScorer, SentenceEmbedder
from urbanln_bench.captions.parse import parse_caption

_SENTENCES = [
    "The image shows a busy downtown street on a sunny afternoon.",
    "Tall glass office towers rise on both sides of the road, their windows reflecting the blue sky.",
    "Several yellow taxis wait at a crosswalk while a crowd of pedestrians crosses toward a small plaza.",
    "A red double-decker bus is parked next to the curb in front of a coffee shop with a green awning.",
    "Street lights and traffic signals line the sidewalk, and a cyclist in a black jacket rides along a bike lane.",
    "People walking along the street carry shopping bags near a newsstand.",
    "The road is wide and freshly paved, with white lane markings and a few potholes near the corner.",
    "In the distance, a church with a stone tower sits between two modern apartment blocks.",
    "A row of trees provides shade for parked cars along the avenue.",
    "An old brick building with arched windows stands on the corner beside a narrow alley.",
    "Delivery vans are double-parked outside a grocery store with fruit stands on the sidewalk.",
    "A police officer directs traffic at the busy intersection under a large billboard.",
]


def _captions(n: int) -> list[str]:
    """n different ~100-word captions built from overlapping sentences, as candidates of one image are."""
    out = []
    for i in range(n):
        picked = [_SENTENCES[(i + k * 5) % len(_SENTENCES)] for k in range(8)]
        out.append(" ".join(dict.fromkeys(picked)))
    return out


CAPTIONS = _captions(10)


def test_parse_captions_per_second(benchmark):
    benchmark.extra_info["words_per_caption"] = sum(len(c.split()) for c in CAPTIONS) / len(CAPTIONS)
    graphs = benchmark(lambda: [parse_caption(c) for c in CAPTIONS])
    benchmark.extra_info["captions_per_call"] = len(CAPTIONS)
    assert all(g.objects for g in graphs)


@pytest.fixture(scope="module")
def embedder() -> SentenceEmbedder:
    return SentenceEmbedder()


def test_consensus_matrix_cold_cache(benchmark, embedder):
    """One image's 10 candidates: 100 ordered pairs, parsing and embedding from scratch each round."""

    def run():
        embedder._cache.clear()
        return CaptureScorer(embedder=embedder).matrix(CAPTIONS)

    matrix = benchmark.pedantic(run, rounds=5, iterations=1)
    benchmark.extra_info["pairs_per_call"] = matrix.size
    assert matrix.shape == (10, 10)


def test_consensus_matrix_warm_cache(benchmark, embedder):
    """The matching alone: parses and phrase embeddings already cached."""
    scorer = CaptureScorer(embedder=embedder)
    scorer.matrix(CAPTIONS)
    matrix = benchmark.pedantic(scorer.matrix, args=(CAPTIONS,), rounds=5, iterations=1)
    benchmark.extra_info["pairs_per_call"] = matrix.size
