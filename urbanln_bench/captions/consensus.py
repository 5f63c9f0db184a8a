"""Consensus selection among an image's candidate captions by CAPTURE (docs/methods.md#urbanln, UrbanLN data level).

Each candidate's score is its mean CAPTURE (as candidate, docs/methods.md#capture-metric) against every *other* candidate
of the same image; the best is kept, ties to the lowest index. The "w/o Consensus" ablation picks
one candidate at random, from a generator seeded by a stable hash of (image id, seed), so the choice
never depends on call order or process.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from urbanln_bench.captions.capture import CaptureScorer


@dataclass(frozen=True)
class Selection:
    """The kept candidate of one image and every candidate's consensus score (NaN under random choice)."""

    index: int
    scores: tuple[float, ...]


def consensus_scores(matrix: np.ndarray) -> np.ndarray:
    """Row means of a CAPTURE matrix without the diagonal: [i] = mean_{j≠i} CAPTURE(i, j)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    n = matrix.shape[0]
    if matrix.shape != (n, n):
        raise ValueError(f"need a square matrix, got {matrix.shape}")
    if n == 1:
        return np.ones(1)
    return (matrix.sum(axis=1) - np.diag(matrix)) / (n - 1)


def select_by_consensus(captions: Sequence[str], scorer: CaptureScorer | None = None) -> Selection:
    """The candidate with the highest mean CAPTURE against the others (ties: lowest index)."""
    if not captions:
        raise ValueError("consensus selection needs at least one candidate caption")
    if len(captions) == 1:
        return Selection(0, (1.0,))
    from urbanln_bench.captions.capture import default_scorer

    scores = consensus_scores((scorer or default_scorer()).matrix(list(captions)))
    return Selection(int(np.argmax(scores)), tuple(float(s) for s in scores))  # argmax: first of ties


def random_index(n: int, image_id: str, seed: int) -> int:
    """The ablation's pick among ``n`` candidates: stable hash of (image id, seed), never Python's ``hash``."""
    if n < 1:
        raise ValueError("random selection needs at least one candidate caption")
    digest = hashlib.sha256(f"consensus-ablation\x1f{image_id}\x1f{seed}".encode()).digest()
    return int(np.random.default_rng(int.from_bytes(digest[:8], "little")).integers(n))


def select_at_random(captions: Sequence[str], image_id: str, seed: int) -> Selection:
    """UrbanLN's "w/o Consensus" ablation: one candidate at random (seeded)."""
    return Selection(random_index(len(captions), image_id, seed), tuple(float("nan") for _ in captions))
