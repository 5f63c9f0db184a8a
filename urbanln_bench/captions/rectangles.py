"""Overlap cutting ("maximal rectangle") and crop boxes for the local captions (docs/methods.md#caption-pipeline, Stage 2-3).

CAPTURE's refinement captions each region of the image separately. Its boxes overlap heavily, so
the three largest boxes are replaced by rectangles carved from the area that the smaller boxes leave
free. This module does that cut (``segment.crops_from_masks`` chains the whole box pipeline) and dilates
the crops before they are captioned.

Boxes are ``(x1, y1, x2, y2)`` integer pixels with **exclusive** ends: a box covers
``image[y1:y2, x1:x2]``, its width is ``x2 - x1``. CAPTURE mixes inclusive and exclusive corners in
the cut, so its carved boxes lose one compressed cell (4 px) on the right and bottom (docs/methods.md#caption-pipeline,
"Off-by-one"). We do not copy that: a carved rectangle maps back to exactly the pixels of its cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Box = tuple[int, int, int, int]
"""(x1, y1, x2, y2) pixels, ends exclusive."""

# docs/methods.md#caption-pipeline, Stage 2 "Cut overlap": the parameters of CAPTURE's maximal-rectangle step.
N_BIG_BOXES = 3
RECTANGLES_PER_BIG_BOX = 2
COMPRESS_SCALE = 4
MIN_FREE_FRACTION = 0.3
MIN_RECTANGLE_FRACTION = 0.3


def _largest_in_histogram(heights: np.ndarray) -> tuple[int, int, int, int]:
    """(area, height, start, end) of the largest rectangle under a histogram (stack method, O(n))."""
    best = (0, 0, 0, 0)
    stack: list[tuple[int, int]] = []  # (start column, height), heights strictly increasing
    for col, height in enumerate([*heights.tolist(), 0]):
        start = col
        while stack and stack[-1][1] >= height:
            start, top = stack.pop()
            area = top * (col - start)
            if area > best[0]:
                best = (area, top, start, col)
        stack.append((start, height))
    return best


def largest_free_rectangle(free: np.ndarray) -> tuple[int, int, int, int]:
    """The largest axis-aligned rectangle of ``True`` cells, as ``(r0, c0, r1, c1)`` with exclusive ends.

    Row run-lengths (how many free cells stack up above and including each cell) turn every row into
    a histogram; the largest rectangle in any of those histograms is the answer (docs/methods.md#caption-pipeline). Returns
    ``(0, 0, 0, 0)`` when nothing is free. Ties go to the first found (top row first, then left).
    """
    free = np.asarray(free, dtype=bool)
    if free.ndim != 2:
        raise ValueError(f"largest_free_rectangle wants a 2-D mask, got shape {free.shape}")
    best_area, best = 0, (0, 0, 0, 0)
    heights = np.zeros(free.shape[1], dtype=np.int64)
    for row in range(free.shape[0]):
        heights = np.where(free[row], heights + 1, 0)
        area, height, start, end = _largest_in_histogram(heights)
        if area > best_area:
            best_area, best = area, (row + 1 - height, start, row + 1, end)
    return best


def box_area(box: Box) -> int:
    x1, y1, x2, y2 = box
    return max(0, x2 - x1) * max(0, y2 - y1)


def _compress(free: np.ndarray, scale: int) -> np.ndarray:
    """Downsample a free mask by ``scale``: a cell is free if at least half of its pixels are (docs/methods.md#caption-pipeline).

    Edge cells that hang over the mask count only the pixels they really hold.
    """
    h, w = free.shape
    gh, gw = -(-h // scale), -(-w // scale)
    padded = np.zeros((gh * scale, gw * scale), dtype=np.int32)
    padded[:h, :w] = free
    present = np.zeros_like(padded)
    present[:h, :w] = 1
    free_count = padded.reshape(gh, scale, gw, scale).sum(axis=(1, 3))
    pixel_count = present.reshape(gh, scale, gw, scale).sum(axis=(1, 3))
    return 2 * free_count >= pixel_count


def carve_rectangles(
    region: Box,
    blocked: Sequence[Box],
    *,
    compress_scale: int = COMPRESS_SCALE,
    max_rectangles: int = RECTANGLES_PER_BIG_BOX,
    min_free_fraction: float = MIN_FREE_FRACTION,
    min_rectangle_fraction: float = MIN_RECTANGLE_FRACTION,
) -> list[Box]:
    """Up to ``max_rectangles`` rectangles inside ``region`` that avoid the ``blocked`` boxes (docs/methods.md#caption-pipeline).

    The free part of ``region`` is compressed ×``compress_scale``; then, while at least
    ``min_free_fraction`` of the grid is free, the largest all-free rectangle is blanked and kept if
    it covers at least ``min_rectangle_fraction`` of the grid (else the loop stops). Carved
    rectangles are disjoint from each other; with ``compress_scale=1`` they are also disjoint from
    every blocked box (with coarser grids a cell only needs to be half free).
    """
    rx1, ry1, rx2, ry2 = region
    if rx2 <= rx1 or ry2 <= ry1:
        return []
    free = np.ones((ry2 - ry1, rx2 - rx1), dtype=bool)
    for bx1, by1, bx2, by2 in blocked:
        x1, y1 = max(bx1, rx1) - rx1, max(by1, ry1) - ry1
        x2, y2 = min(bx2, rx2) - rx1, min(by2, ry2) - ry1
        if x2 > x1 and y2 > y1:
            free[y1:y2, x1:x2] = False
    grid = _compress(free, compress_scale)
    cells = grid.size
    carved: list[Box] = []
    while len(carved) < max_rectangles and grid.sum() >= min_free_fraction * cells:
        r0, c0, r1, c1 = largest_free_rectangle(grid)
        grid[r0:r1, c0:c1] = False
        if (r1 - r0) * (c1 - c0) < min_rectangle_fraction * cells:
            break
        carved.append((
            rx1 + c0 * compress_scale,
            ry1 + r0 * compress_scale,
            min(rx1 + c1 * compress_scale, rx2),
            min(ry1 + r1 * compress_scale, ry2),
        ))
    return carved


def cut_overlap(
    boxes: Sequence[Box],
    *,
    n_big: int = N_BIG_BOXES,
    compress_scale: int = COMPRESS_SCALE,
    max_rectangles: int = RECTANGLES_PER_BIG_BOX,
    min_free_fraction: float = MIN_FREE_FRACTION,
    min_rectangle_fraction: float = MIN_RECTANGLE_FRACTION,
) -> list[Box]:
    """CAPTURE's "maximal rectangle" step (docs/methods.md#caption-pipeline): fewer, less overlapping crops.

    All but the ``n_big`` largest boxes are kept. Each big box, largest first, is replaced by the
    rectangles ``carve_rectangles`` finds in it; carved rectangles then block later big boxes, the
    other big boxes do not. Returns the kept boxes (largest first) followed by the carved ones.
    """
    ordered = sorted(boxes, key=lambda b: (-box_area(b), b))
    kept = list(ordered[n_big:])
    for big in ordered[:n_big]:
        kept += carve_rectangles(
            big, kept, compress_scale=compress_scale, max_rectangles=max_rectangles,
            min_free_fraction=min_free_fraction, min_rectangle_fraction=min_rectangle_fraction,
        )
    return kept


@dataclass(frozen=True)
class BoxStatistics:
    """What CAPTURE's ``bbox_statistics.py`` reports per step (docs/methods.md#caption-pipeline): count, coverage, overlap."""

    count: int
    coverage: float  # union area / image area
    overlap: float  # sum of areas / union area (1.0 = no overlap; 0.0 when there are no boxes)
    excess: int  # sum of areas - union area, in pixels


def box_statistics(boxes: Sequence[Box], image_shape: tuple[int, ...]) -> BoxStatistics:
    height, width = image_shape[:2]
    covered = np.zeros((height, width), dtype=bool)
    for x1, y1, x2, y2 in boxes:
        covered[max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)] = True
    union = int(covered.sum())
    total = sum(box_area(b) for b in boxes)
    return BoxStatistics(len(boxes), union / (height * width), total / union if union else 0.0, total - union)


def dilate_box(box: Box, width: int, height: int) -> Box | None:
    """Grow a crop by W//50 and H//50 per side, clipped to the image, before it is captioned (docs/methods.md#caption-pipeline,
    Stage 3); ``None`` when the clipped crop is 2 px or less wide or tall (CAPTURE skips those).
    """
    x1, y1, x2, y2 = box
    dx, dy = width // 50, height // 50
    x1, y1 = max(0, x1 - dx), max(0, y1 - dy)
    x2, y2 = min(width, x2 + dx), min(height, y2 + dy)
    if x2 - x1 <= 2 or y2 - y1 <= 2:
        return None
    return (x1, y1, x2, y2)
