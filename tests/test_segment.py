"""Segmenters and CAPTURE's box filter / cluster / merge steps (docs/methods.md#caption-pipeline, Stage 2)."""

from __future__ import annotations

import numpy as np
import pytest

from urbanln_bench.captions.segment import (
    ColourRegionSegmenter,
    SamSegmenter,
    Segmenter,
    cluster_boxes,
    crops_from_masks,
    empty_fraction,
    filter_boxes,
    giou,
    masks_to_boxes,
    merge_boxes,
)
from urbanln_bench.errors import UserError


def test_masks_to_boxes_uses_exclusive_ends() -> None:
    mask = np.zeros((10, 12), bool)
    mask[2:5, 3:9] = True
    mask[7, 1] = True
    assert masks_to_boxes([mask, np.zeros((10, 12), bool)]) == [(1, 2, 9, 8)]


def test_filter_boxes_thresholds() -> None:
    shape = (100, 100, 3)  # 0.1 % = 10 px, 90 % = 9000 px
    boxes = [(0, 0, 10, 1), (0, 0, 9, 1), (0, 0, 90, 100), (0, 0, 100, 91), (0, 0, 100, 100)]
    assert filter_boxes(boxes, shape) == [(0, 0, 10, 1), (0, 0, 90, 100)]


def test_giou_and_empty_fraction() -> None:
    assert giou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert giou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert giou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0  # touching: no overlap, nothing empty
    assert giou((0, 0, 10, 10), (20, 0, 30, 10)) == pytest.approx(-10 / 30)
    assert empty_fraction((0, 0, 10, 10), (20, 0, 30, 10)) == pytest.approx(10 / 30)


def test_cluster_boxes_few_boxes_are_their_own_clusters() -> None:
    boxes = [(0, 0, 10, 10), (50, 50, 60, 70), (20, 5, 40, 30)]
    assert sorted(cluster_boxes(boxes)) == sorted(boxes)
    assert cluster_boxes([]) == []


def test_cluster_boxes_runs_kmeans_on_one_openmp_thread(monkeypatch) -> None:
    """The labels must not depend on the core count: KMeans sees one OpenMP thread inside every call
    (the controller is built once per process, segment._openmp_controller), and the process's own limit
    is back afterwards."""
    from sklearn.cluster import KMeans
    from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

    seen = []
    original = KMeans.fit_predict

    def recording(self, *args, **kwargs):
        seen.append(_openmp_effective_n_threads())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(KMeans, "fit_predict", recording)
    before = _openmp_effective_n_threads()
    boxes = [(i, i, i + 5, i + 7) for i in range(0, 60, 3)]
    cluster_boxes(boxes)
    cluster_boxes(boxes[:12])
    assert seen == [1, 1]
    assert _openmp_effective_n_threads() == before


def test_cluster_boxes_hulls_are_deterministic_and_cover_every_box() -> None:
    rng = np.random.default_rng(3)
    boxes = []
    for _ in range(40):
        x1, y1 = (int(v) for v in rng.integers(0, 80, 2))
        boxes.append((x1, y1, x1 + int(rng.integers(2, 30)), y1 + int(rng.integers(2, 30))))
    hulls = cluster_boxes(boxes)
    assert len(hulls) == 10
    assert hulls == cluster_boxes(list(boxes))
    for x1, y1, x2, y2 in boxes:
        assert any(h[0] <= x1 and h[1] <= y1 and x2 <= h[2] and y2 <= h[3] for h in hulls)
    # Duplicates leave fewer distinct points than k; the empty clusters vanish.
    assert cluster_boxes([(0, 0, 5, 5)] * 4) == [(0, 0, 5, 5)]


def test_merge_is_one_pass_smallest_first() -> None:
    small, middle, far = (0, 0, 10, 10), (5, 0, 25, 12), (60, 60, 100, 100)
    chained = (22, 0, 45, 14)  # overlaps `middle` but not `small`
    merged = merge_boxes([far, chained, middle, small])
    assert (0, 0, 25, 12) in merged  # small absorbed middle
    assert chained in merged  # ... and the merged hull was not merged again with `chained`
    assert far in merged
    assert len(merged) == 3


def test_merge_joins_nearly_touching_boxes() -> None:
    # A 1 px gap: GIoU < 0 but the joint box is only 1/41 empty (< 10 %).
    assert merge_boxes([(0, 0, 20, 10), (21, 0, 41, 10)]) == [(0, 0, 41, 10)]
    # A 10 px gap: 10/50 empty, kept apart.
    assert len(merge_boxes([(0, 0, 20, 10), (30, 0, 50, 10)])) == 2


def two_colour_image(rng: np.random.Generator) -> np.ndarray:
    image = np.zeros((48, 64, 3), np.int16)
    image[:, :32] = (200, 40, 40)
    image[:, 32:] = (30, 60, 190)
    image[10:20, 40:52] = (240, 240, 60)  # a yellow patch inside the blue half
    image[40:42, 5:7] = (0, 255, 0)  # a 4 px speck: below the minimum area
    noise = rng.integers(-6, 7, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def test_colour_segmenter_finds_the_obvious_regions() -> None:
    segmenter = ColourRegionSegmenter()
    assert isinstance(segmenter, Segmenter)
    image = two_colour_image(np.random.default_rng(0))
    masks = segmenter.masks(image)
    assert all(m.dtype == bool and m.shape == (48, 64) for m in masks)
    expected = {"red": np.zeros((48, 64), bool), "blue": np.zeros((48, 64), bool), "yellow": np.zeros((48, 64), bool)}
    expected["red"][:, :32] = True
    expected["blue"][:, 32:] = True
    expected["yellow"][10:20, 40:52] = True
    expected["blue"] &= ~expected["yellow"]
    for name, truth in expected.items():
        best = max((m & truth).sum() / (m | truth).sum() for m in masks)
        assert best > 0.8, name
    assert len(masks) == 3
    again = segmenter.masks(image)
    assert all((a == b).all() for a, b in zip(masks, again, strict=True))


def test_colour_segmenter_rejects_bad_images() -> None:
    with pytest.raises(ValueError, match="uint8"):
        ColourRegionSegmenter().masks(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError):
        ColourRegionSegmenter().masks(np.zeros((8, 8), np.uint8))


def test_sam_segmenter_names_a_missing_folder(tmp_path) -> None:
    missing = tmp_path / "no-sam-here"
    with pytest.raises(UserError, match="no-sam-here"):
        SamSegmenter(missing)


@pytest.fixture(scope="module")
def tiny_sam_dir(tmp_path_factory):
    """A random SAM small enough for CPU tests, saved the way real weights are."""
    import torch
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

    config = SamConfig(
        vision_config=dict(hidden_size=16, output_channels=8, num_hidden_layers=1, num_attention_heads=2,
                           image_size=64, patch_size=8, mlp_dim=32, global_attn_indexes=[0],
                           num_pos_feats=4, window_size=4),
        prompt_encoder_config=dict(hidden_size=8, image_size=64, patch_size=8, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, mlp_dim=16,
                                 iou_head_hidden_dim=8),
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-sam")
    SamModel(config).save_pretrained(folder)
    image_processor = SamImageProcessor(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64},
                                        mask_size={"longest_edge": 16}, mask_pad_size={"height": 16, "width": 16})
    SamProcessor(image_processor=image_processor).save_pretrained(folder)
    return folder


def test_sam_segmenter_loads_from_a_local_folder(tiny_sam_dir) -> None:
    image = two_colour_image(np.random.default_rng(1))
    # Random weights predict low IoU, so open the thresholds to see masks come through.
    segmenter = SamSegmenter(tiny_sam_dir, pred_iou_threshold=0.0, stability_threshold=0.0, min_region=0)
    assert segmenter.processor.image_processor.size["longest_edge"] == 64
    masks = segmenter.masks(image)
    assert masks, "an open-threshold SAM must return at least one mask"
    assert all(m.dtype == bool and m.shape == (48, 64) for m in masks)
    crops = crops_from_masks(masks, image.shape)
    assert all(0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 48 for x1, y1, x2, y2 in crops)
    # CAPTURE's thresholds run through the same path (random weights may leave nothing).
    strict = SamSegmenter(tiny_sam_dir).masks(image)
    assert len(strict) <= len(masks)
