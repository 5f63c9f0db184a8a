"""The maximal-rectangle overlap cut and crop helpers (docs/methods.md#caption-pipeline, Stage 2-3)."""

from __future__ import annotations

import numpy as np
import pytest

from urbanln_bench.captions.rectangles import (
    box_area,
    box_statistics,
    carve_rectangles,
    cut_overlap,
    dilate_box,
    largest_free_rectangle,
)
from urbanln_bench.captions.segment import crops_from_masks


def brute_force_largest_area(free: np.ndarray) -> int:
    """Every (r0, r1, c0, c1), checked with a summed-area table: O(n^4)."""
    rows, cols = free.shape
    table = np.zeros((rows + 1, cols + 1), dtype=int)
    table[1:, 1:] = free.astype(int).cumsum(0).cumsum(1)
    best = 0
    for r0 in range(rows):
        for r1 in range(r0 + 1, rows + 1):
            for c0 in range(cols):
                for c1 in range(c0 + 1, cols + 1):
                    area = (r1 - r0) * (c1 - c0)
                    count = table[r1, c1] - table[r0, c1] - table[r1, c0] + table[r0, c0]
                    if count == area:
                        best = max(best, area)
    return best


def random_masks(n: int, seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        shape = (int(rng.integers(1, 9)), int(rng.integers(1, 10)))
        yield rng.random(shape) < rng.choice([0.2, 0.5, 0.8, 0.95])


@pytest.mark.parametrize("seed", range(4))
def test_largest_free_rectangle_matches_brute_force(seed: int) -> None:
    for free in random_masks(150, seed):
        r0, c0, r1, c1 = largest_free_rectangle(free)
        assert 0 <= r0 <= r1 <= free.shape[0] and 0 <= c0 <= c1 <= free.shape[1]
        assert free[r0:r1, c0:c1].all()
        assert (r1 - r0) * (c1 - c0) == brute_force_largest_area(free), free.astype(int)


def test_largest_free_rectangle_edge_cases() -> None:
    assert largest_free_rectangle(np.zeros((3, 4), bool)) == (0, 0, 0, 0)
    assert largest_free_rectangle(np.ones((3, 4), bool)) == (0, 0, 3, 4)
    free = np.zeros((5, 6), bool)
    free[1:4, 2:6] = True
    assert largest_free_rectangle(free) == (1, 2, 4, 6)
    with pytest.raises(ValueError):
        largest_free_rectangle(np.ones(4, bool))


def test_unblocked_region_comes_back_whole() -> None:
    """CAPTURE's off-by-one would return (0, 0, 36, 36) here; we keep every pixel."""
    assert carve_rectangles((0, 0, 40, 40), []) == [(0, 0, 40, 40)]
    assert carve_rectangles((3, 5, 45, 42), []) == [(3, 5, 45, 42)]


def random_boxes(rng: np.random.Generator, n: int, width: int, height: int) -> list[tuple[int, int, int, int]]:
    boxes = []
    for _ in range(n):
        x1, y1 = int(rng.integers(0, width - 4)), int(rng.integers(0, height - 4))
        boxes.append((x1, y1, int(rng.integers(x1 + 4, width + 1)), int(rng.integers(y1 + 4, height + 1))))
    return boxes


def coverage_count(boxes, height: int, width: int) -> np.ndarray:
    count = np.zeros((height, width), int)
    for x1, y1, x2, y2 in boxes:
        count[y1:y2, x1:x2] += 1
    return count


@pytest.mark.parametrize("seed", range(40))
def test_carved_rectangles_are_free_disjoint_and_inside(seed: int) -> None:
    rng = np.random.default_rng(seed)
    region = random_boxes(rng, 1, 60, 50)[0]
    blocked = random_boxes(rng, int(rng.integers(0, 6)), 60, 50)
    exact = carve_rectangles(region, blocked, compress_scale=1)
    blocked_count = coverage_count(blocked, 50, 60)
    for x1, y1, x2, y2 in exact:
        assert region[0] <= x1 < x2 <= region[2] and region[1] <= y1 < y2 <= region[3]
        assert not blocked_count[y1:y2, x1:x2].any()
    assert coverage_count(exact, 50, 60).max(initial=0) <= 1
    # On the ×4 grid a cell is free when at least half its pixels are, so a carved box is mostly free.
    coarse = carve_rectangles(region, blocked)
    assert coverage_count(coarse, 50, 60).max(initial=0) <= 1
    for x1, y1, x2, y2 in coarse:
        assert region[0] <= x1 < x2 <= region[2] and region[1] <= y1 < y2 <= region[3]
        assert (blocked_count[y1:y2, x1:x2] == 0).mean() >= 0.5


@pytest.mark.parametrize("seed", range(40))
def test_cut_never_adds_overlap(seed: int) -> None:
    """Each pixel is covered by at most as many boxes after the cut as before, so the overlap
    excess (sum of areas − union) cannot grow. (The ratio sum/union can: a big box that yields
    no rectangle leaves a smaller union.)"""
    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, int(rng.integers(1, 11)), 80, 64)
    cut = cut_overlap(boxes)
    assert len(cut) <= max(len(boxes) - 3, 0) + 6
    assert (coverage_count(cut, 64, 80) <= coverage_count(boxes, 64, 80)).all()
    assert box_statistics(cut, (64, 80)).excess <= box_statistics(boxes, (64, 80)).excess
    ordered = sorted(boxes, key=lambda b: (-box_area(b), b))
    kept = ordered[3:]
    for box in kept:
        assert box in cut
    exact_carved = [b for b in cut_overlap(boxes, compress_scale=1) if b not in kept]
    kept_count = coverage_count(kept, 64, 80)
    for x1, y1, x2, y2 in exact_carved:
        assert not kept_count[y1:y2, x1:x2].any()


def test_three_stacked_boxes_lose_their_overlap() -> None:
    boxes = [(0, 0, 40, 40), (0, 0, 36, 36), (4, 4, 32, 32)]
    before = box_statistics(boxes, (40, 40))
    after = box_statistics(cut_overlap(boxes), (40, 40))
    assert before.overlap > 1.5
    assert after.overlap == 1.0 and after.coverage == 1.0
    assert cut_overlap(boxes) == [(0, 0, 40, 40)]


def test_box_statistics() -> None:
    stats = box_statistics([(0, 0, 10, 10), (5, 0, 15, 10)], (20, 20))
    assert stats.count == 2
    assert stats.coverage == pytest.approx(150 / 400)
    assert stats.overlap == pytest.approx(200 / 150)
    assert stats.excess == 50
    assert box_statistics([], (20, 20)).overlap == 0.0


def test_dilate_box() -> None:
    assert dilate_box((10, 10, 20, 20), 100, 50) == (8, 9, 22, 21)
    assert dilate_box((0, 0, 100, 50), 100, 50) == (0, 0, 100, 50)
    assert dilate_box((1, 1, 99, 49), 100, 50) == (0, 0, 100, 50)
    # 49 px wide image: no dilation, so a 2 px crop stays 2 px and is skipped; 3 px is kept.
    assert dilate_box((5, 5, 7, 20), 49, 49) is None
    assert dilate_box((5, 5, 20, 7), 49, 49) is None
    assert dilate_box((5, 5, 8, 8), 49, 49) == (5, 5, 8, 8)


def test_crops_from_masks_on_blocky_masks() -> None:
    rng = np.random.default_rng(1)
    height, width = 64, 96
    masks = []
    for x1, y1, x2, y2 in random_boxes(rng, 25, width, height):
        mask = np.zeros((height, width), bool)
        mask[y1:y2, x1:x2] = True
        masks.append(mask)
    whole = np.ones((height, width), bool)  # > 90 % of the image: filtered out
    crops = crops_from_masks([*masks, whole], (height, width, 3))
    assert 1 <= len(crops) <= 13
    for x1, y1, x2, y2 in crops:
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
    assert crops == crops_from_masks([*masks, whole], (height, width, 3))
    assert crops_from_masks([], (height, width, 3)) == []
