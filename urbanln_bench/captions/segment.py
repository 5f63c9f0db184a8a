"""Segmentation and the box pipeline of the divide-and-conquer refinement (docs/methods.md#caption-pipeline, Stage 2).

CAPTURE runs SAM's automatic mask generator and keeps only the masks' bounding boxes, which it
filters, clusters and merges before cutting their overlap (``rectangles.cut_overlap``). A
``Segmenter`` is the pluggable first step: ``SamSegmenter`` uses real SAM weights from a local
folder; ``ColourRegionSegmenter`` is the offline default and works from pixels alone, never from
the twin's ground-truth scene graphs.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from urbanln_bench.captions.rectangles import Box, box_area, cut_overlap
from urbanln_bench.errors import UserError

# docs/methods.md#caption-pipeline, Stage 2: CAPTURE's parameters.
MIN_BOX_FRACTION = 0.001
MAX_BOX_FRACTION = 0.9
MAX_CLUSTERS = 10
MERGE_GIOU = 0.0
MAX_EMPTY_FRACTION = 0.1


@runtime_checkable
class Segmenter(Protocol):
    """Image → region masks. Masks may overlap; only their bounding boxes are used downstream."""

    def masks(self, image: np.ndarray) -> list[np.ndarray]:
        """``image`` is (H, W, 3) uint8; each mask is (H, W) bool."""
        ...


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"a segmenter wants an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    return image


class ColourRegionSegmenter:
    """Offline default: connected regions of similar colour, from pixels only.

    The image is smoothed (``smooth`` px median filter: quiets noise, keeps edges sharp); neighbouring pixels
    whose smoothed colours differ by at most ``tolerance`` (max over channels, 0-255) are joined, and
    each connected component of at least ``min_area_fraction`` of the image (and ``min_area`` px,
    CAPTURE's SAM minimum region) becomes a mask. Deterministic; masks are sorted largest first and
    capped at ``max_masks``. Unlike SAM the masks partition the image (no nested parts and wholes).
    """

    def __init__(self, *, tolerance: float = 12.0, smooth: int = 3, min_area_fraction: float = 0.002,
                 min_area: int = 16, max_masks: int = 64) -> None:
        self.tolerance = tolerance
        self.smooth = smooth
        self.min_area_fraction = min_area_fraction
        self.min_area = min_area
        self.max_masks = max_masks

    def masks(self, image: np.ndarray) -> list[np.ndarray]:
        image = _check_image(image)
        h, w = image.shape[:2]
        colours = image.astype(np.float32)
        if self.smooth > 1:
            colours = ndimage.median_filter(colours, size=(self.smooth, self.smooth, 1), mode="nearest")
        index = np.arange(h * w).reshape(h, w)
        joins_right = np.abs(colours[:, 1:] - colours[:, :-1]).max(axis=2) <= self.tolerance
        joins_down = np.abs(colours[1:] - colours[:-1]).max(axis=2) <= self.tolerance
        rows = np.concatenate([index[:, :-1][joins_right], index[:-1][joins_down]])
        cols = np.concatenate([index[:, 1:][joins_right], index[1:][joins_down]])
        graph = coo_matrix((np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(h * w, h * w))
        _, labels = connected_components(graph, directed=False)
        labels = labels.reshape(h, w)
        sizes = np.bincount(labels.ravel())
        threshold = max(self.min_area, self.min_area_fraction * h * w)
        big = [int(lab) for lab in np.argsort(-sizes, kind="stable") if sizes[lab] >= threshold]
        return [labels == lab for lab in big[: self.max_masks]]


class SamSegmenter:
    """SAM automatic masks through transformers, with CAPTURE's settings (docs/methods.md#caption-pipeline, Stage 2).

    Weights load with ``SamModel.from_pretrained(model_dir)`` and ``SamProcessor.from_pretrained``
    (offline). Generation follows transformers' mask-generation pipeline: an 8×8 point grid over
    the image plus one crop layer (2×2 crops, points downscaled ×2, i.e. 4×4 per crop), predicted-IoU
    threshold 0.66, stability threshold 0.86, box NMS 0.7 across crops.

    What differs from segment-anything's ``SamAutomaticMaskGenerator``: transformers has no
    ``min_mask_region_area`` post-processing (hole filling and island removal, then a second NMS);
    we instead drop masks under ``min_region`` (100) pixels. transformers also runs NMS once across
    all crops and does not prefer the smaller crop's mask the way segment-anything does. Its
    ``generate_crop_boxes`` cannot mix point counts across layers, so each layer is generated alone.
    """

    def __init__(self, model_dir: str | Path, *, points_per_side: int = 8, crop_layers: int = 1,
                 crop_points_downscale: int = 2, pred_iou_threshold: float = 0.66,
                 stability_threshold: float = 0.86, box_nms_threshold: float = 0.7,
                 min_region: int = 100, points_per_batch: int = 64, device: str = "cpu") -> None:
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise UserError(
                f"SAM weights folder {model_dir} does not exist; pass a folder written by "
                "SamModel.save_pretrained (with the SamProcessor files), or use the offline "
                "'colour' segmenter"
            )
        from transformers import SamModel, SamProcessor

        try:
            self.processor = SamProcessor.from_pretrained(model_dir, local_files_only=True)
            self.model = SamModel.from_pretrained(model_dir, local_files_only=True).to(device).eval()
        except OSError as error:
            raise UserError(f"could not load SAM from {model_dir}: {error}") from error
        self.device = device
        self.points_per_side = points_per_side
        self.crop_layers = crop_layers
        self.crop_points_downscale = crop_points_downscale
        self.pred_iou_threshold = pred_iou_threshold
        self.stability_threshold = stability_threshold
        self.box_nms_threshold = box_nms_threshold
        self.min_region = min_region
        self.points_per_batch = points_per_batch

    def _crops(self, pil, target: int):
        """(crop box, points (1, n, 1, 2), labels (1, n, 1), cropped image) for every crop of every layer.

        transformers' ``generate_crop_boxes`` cannot stack layers with different point counts, so
        each layer is generated on its own and only that layer's crops are taken.
        """
        image_processor = self.processor.image_processor
        for layer in range(self.crop_layers + 1):
            n_points = int(self.points_per_side / self.crop_points_downscale**layer)
            boxes, points, crops, labels = image_processor.generate_crop_boxes(
                pil, target, crop_n_layers=layer, points_per_crop=n_points, crop_n_points_downscale_factor=1
            )
            for c in range(len(crops) - (2**layer) ** 2, len(crops)):
                yield boxes[c], points[:, :, c: c + 1], labels[:, :, c: c + 1], crops[c]

    def masks(self, image: np.ndarray) -> list[np.ndarray]:
        import torch
        from PIL import Image

        image = _check_image(image)
        image_processor = self.processor.image_processor
        pil = Image.fromarray(image)
        target = image_processor.size.get("longest_edge", image_processor.size.get("height"))
        all_masks, all_scores, all_boxes = [], [], []
        with torch.inference_mode():
            for crop_box, points, labels, crop in self._crops(pil, target):
                inputs = image_processor(images=[crop], return_tensors="pt")
                embeddings = self.model.get_image_embeddings(inputs["pixel_values"].to(self.device))
                original = inputs["original_sizes"].tolist()
                reshaped = inputs["reshaped_input_sizes"].tolist()
                for i in range(0, points.shape[1], self.points_per_batch):
                    outputs = self.model(
                        image_embeddings=embeddings,
                        input_points=points[:, i: i + self.points_per_batch].to(self.device),
                        input_labels=labels[:, i: i + self.points_per_batch].to(self.device),
                    )
                    low_res = image_processor.post_process_masks(
                        outputs.pred_masks.cpu(), original, reshaped_input_sizes=reshaped, binarize=False
                    )
                    masks, scores, boxes = image_processor.filter_masks(
                        low_res[0], outputs.iou_scores[0].cpu(), list(image.shape[:2]), crop_box,
                        self.pred_iou_threshold, self.stability_threshold,
                    )
                    all_masks.extend(masks)
                    all_scores.append(scores)
                    all_boxes.append(boxes)
        if not all_masks:
            return []
        masks, _, _, _ = image_processor.post_process_for_mask_generation(
            all_masks, torch.cat(all_scores), torch.cat(all_boxes), self.box_nms_threshold
        )
        out = [np.asarray(m, dtype=bool) for m in masks]
        return [m for m in out if m.sum() >= self.min_region]


def masks_to_boxes(masks: Sequence[np.ndarray]) -> list[Box]:
    """Tight bounding box of each non-empty mask (exclusive ends; empty masks are skipped)."""
    boxes: list[Box] = []
    for mask in masks:
        rows, cols = np.any(mask, axis=1), np.any(mask, axis=0)
        if not rows.any():
            continue
        y1, y2 = np.flatnonzero(rows)[[0, -1]]
        x1, x2 = np.flatnonzero(cols)[[0, -1]]
        boxes.append((int(x1), int(y1), int(x2) + 1, int(y2) + 1))
    return boxes


def filter_boxes(boxes: Sequence[Box], image_shape: tuple[int, ...], *, min_fraction: float = MIN_BOX_FRACTION,
                 max_fraction: float = MAX_BOX_FRACTION) -> list[Box]:
    """Drop boxes under 0.1 % (specks) or over 90 % (the whole scene) of the image area (docs/methods.md#caption-pipeline)."""
    image_area = image_shape[0] * image_shape[1]
    return [b for b in boxes if min_fraction * image_area <= box_area(b) <= max_fraction * image_area]


def hull(boxes: Sequence[Box]) -> Box:
    """The smallest box that holds all ``boxes``."""
    x1s, y1s, x2s, y2s = zip(*boxes, strict=True)
    return (min(x1s), min(y1s), max(x2s), max(y2s))


@functools.cache
def _openmp_controller():
    """One ``threadpoolctl`` controller for every :func:`cluster_boxes` call of a process.

    ``threadpool_limits(...)`` builds a new controller on each call, which scans every loaded shared library:
    about 14 ms a call beside torch, a third of a call's time. Built after ``sklearn.cluster`` is imported, the
    controller holds the OpenMP runtime KMeans runs on, so the limit (one thread, hence the same labels on any
    core count) is the same as before.
    """
    import sklearn.cluster  # noqa: F401  (loads scikit-learn's OpenMP runtime before the scan)
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def cluster_boxes(boxes: Sequence[Box], *, max_clusters: int = MAX_CLUSTERS, seed: int = 0) -> list[Box]:
    """k-means over (x1, y1, x2, y2, cx, cy) in raw pixels, one hull per cluster (docs/methods.md#caption-pipeline).

    k = min(10, n), k-means++ with 10 restarts, random_state 0, as CAPTURE; hulls come in cluster
    order. Identical boxes (fewer distinct points than k) are allowed: the duplicates' clusters are
    empty and vanish.
    """
    if not boxes:
        return []
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    points = np.array([(x1, y1, x2, y2, (x1 + x2) / 2, (y1 + y2) / 2) for x1, y1, x2, y2 in boxes], dtype=float)
    k = min(max_clusters, len(boxes))
    # A few dozen points: OpenMP threads cost far more than they save (~200 ms → ~10 ms per image).
    with warnings.catch_warnings(), _openmp_controller().limit(limits=1, user_api="openmp"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        labels = KMeans(n_clusters=k, init="k-means++", n_init=10, random_state=seed).fit_predict(points)
    return [hull([boxes[i] for i in np.flatnonzero(labels == c)]) for c in range(k) if np.any(labels == c)]


def empty_fraction(a: Box, b: Box) -> float:
    """Share of the joint enclosing box that neither ``a`` nor ``b`` covers."""
    enclosing = box_area(hull([a, b]))
    union = box_area(a) + box_area(b) - _intersection(a, b)
    return (enclosing - union) / enclosing if enclosing else 0.0


def _intersection(a: Box, b: Box) -> int:
    return box_area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))


def giou(a: Box, b: Box) -> float:
    """Generalised IoU: IoU minus the empty share of the enclosing box; in [-1, 1], > 0 when close."""
    inter = _intersection(a, b)
    union = box_area(a) + box_area(b) - inter
    if union == 0:
        return 0.0
    return inter / union - empty_fraction(a, b)


def merge_boxes(hulls: Sequence[Box], *, giou_threshold: float = MERGE_GIOU,
                max_empty: float = MAX_EMPTY_FRACTION) -> list[Box]:
    """CAPTURE's single merge pass (docs/methods.md#caption-pipeline): smallest first, absorb close hulls, never re-merge.

    The smallest remaining hull takes every remaining hull whose GIoU with *it* is above
    ``giou_threshold`` or whose joint enclosing box with it is under ``max_empty`` empty; the group
    becomes one hull.
    """
    remaining = sorted(hulls, key=lambda b: (box_area(b), b))
    merged: list[Box] = []
    while remaining:
        seed, rest = remaining[0], remaining[1:]
        close = [giou(seed, b) > giou_threshold or empty_fraction(seed, b) < max_empty for b in rest]
        merged.append(hull([seed, *(b for b, c in zip(rest, close, strict=True) if c)]))
        remaining = [b for b, c in zip(rest, close, strict=True) if not c]
    return merged


def crops_from_masks(masks: Sequence[np.ndarray], image_shape: tuple[int, ...]) -> list[Box]:
    """The whole of CAPTURE's Stage 2 (docs/methods.md#caption-pipeline): masks → boxes → filter → cluster → merge → cut."""
    boxes = filter_boxes(masks_to_boxes(masks), image_shape)
    return cut_overlap(merge_boxes(cluster_boxes(boxes)))
