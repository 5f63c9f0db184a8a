"""The twin's cheap difficulty check (docs/twins.md): a colour-histogram ridge regression per cell.

If plain colour statistics came within 0.1 R² of the analytic ceiling on most cells, the twin would
be too easy — the imagery would give the indicators away without any reading of structure — and a
benchmark on it would be defective. ``urbanln-bench data check`` prints both per cell.
"""

from __future__ import annotations

import numpy as np

from urbanln_bench.data.loader import CityData

HISTOGRAM_BINS = 4


def color_histogram_features(rgb: np.ndarray, bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """(B, H, W, 3) floats in [0, 1] → (B, bins³ + 6): joint RGB histogram, channel means and stds."""
    q = np.clip((rgb * bins).astype(np.int64), 0, bins - 1)
    index = ((q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]).reshape(len(rgb), -1)
    hist = np.stack([np.bincount(row, minlength=bins ** 3) for row in index]).astype(np.float64) / index.shape[1]
    flat = rgb.reshape(len(rgb), -1, 3)
    return np.concatenate([hist, flat.mean(axis=1), flat.std(axis=1)], axis=1)


def region_histograms(data: CityData, imagery: str) -> tuple[list[str], np.ndarray]:
    """Per region: the satellite tile's features (SI) or the mean over its street views (SV)."""
    ids, rows = [], []
    for rid in data.regions.ids:
        image_ids = [rid] if imagery == "SI" else data.streetview_ids(rid)
        if not image_ids:
            continue
        images = np.stack([data.load_image(i) for i in image_ids]).astype(np.float64) / 255.0
        rows.append(color_histogram_features(images).mean(axis=0))
        ids.append(rid)
    return ids, np.asarray(rows)


def histogram_check(data: CityData, seeds: tuple[int, ...] = (0, 1, 2, 3, 4)) -> list[dict]:
    """Ceiling and colour-histogram ridge test R² for every cell, over random 6:2:2 splits.

    The verdict uses the median over seeds: a ridge on sparse histogram bins occasionally blows up
    on one split (a bin empty in train), and a mean would then flatter the twin's difficulty.
    """
    from urbanln_bench.ridge import ridge_probe
    from urbanln_bench.splits import split_regions

    oracle = data.oracle()["cells"]
    rows = []
    for imagery in ("SV", "SI"):
        ids, features = region_histograms(data, imagery)
        position = {rid: i for i, rid in enumerate(ids)}
        for task in data.tasks:
            cell = f"{data.name}/{task}/{imagery}"
            if cell not in oracle:
                continue
            y_all = data.indicator(task)
            labelled = [rid for rid, v in zip(data.regions.ids, y_all, strict=True) if np.isfinite(v)]
            y = np.full(len(ids), np.nan)
            index = data.regions.index()
            for rid, i in position.items():
                y[i] = y_all[index[rid]]
            per_seed = []
            for seed in seeds:
                split, _ = split_regions(labelled, city=data.name, task=task, seed=seed).restrict(position)
                per_seed.append(float(ridge_probe(features, y, split.indices(ids), region_ids=ids).metrics["r2"]))
            rows.append({"cell": cell, "n": split.n_regions, "ceiling": oracle[cell]["ceiling"],
                         "histogram_r2": float(np.median(per_seed)), "histogram_r2_per_seed": per_seed})
    return rows
