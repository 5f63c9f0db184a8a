"""Checked, transformed probe inputs shared by the MLP probe and the ridge floor (numpy only).

One target transform for every method, as the paper states it: ``t = ln(y + 1)``. For training,
``t`` is standardised with the *train* mean/std and the features with the *train* per-dimension
mean/std, so no statistic of val or test leaks into the head and methods whose embeddings have
different scales get the same optimisation problem. Metrics undo the target standardisation.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from urbanln_bench.errors import UserError

PART_NAMES: tuple[str, ...] = ("train", "val", "test")


class ProbeInputError(UserError, ValueError):
    """Embeddings, targets or split indices that a probe cannot use."""


@dataclass(frozen=True, eq=False)
class ProbeData:
    """Standardised features and targets per part, plus what is needed to undo the target scaling."""

    x_train: np.ndarray
    x_val: np.ndarray
    x_test: np.ndarray
    t_train: np.ndarray  # standardised ln(y+1)
    t_val: np.ndarray
    t_test: np.ndarray
    target_mean: float  # train mean of ln(y+1)
    target_std: float  # train std of ln(y+1)

    def to_log_scale(self, standardised: np.ndarray) -> np.ndarray:
        return np.asarray(standardised, dtype=np.float64) * self.target_std + self.target_mean


def _describe_rows(rows: np.ndarray, region_ids: Sequence[str] | None) -> str:
    first = int(rows[0])
    where = f"row {first}" + (f" (region {region_ids[first]!r})" if region_ids is not None else "")
    return f"{len(rows)} row(s), first at {where}"


def check_split_indices(split_indices: Sequence[np.ndarray], n_rows: int) -> tuple[np.ndarray, ...]:
    """Three non-empty, disjoint, in-range integer index arrays (train, val, test)."""
    if hasattr(split_indices, "digest") and hasattr(split_indices, "restrict"):
        raise ProbeInputError("got a Split of region ids; pass split.indices(region_ids), the row "
                              "indices of its train/val/test regions in X")
    parts = tuple(split_indices)
    if len(parts) != 3:
        raise ProbeInputError(f"split_indices must be (train, val, test), got {len(parts)} parts")
    out = []
    for name, idx in zip(PART_NAMES, parts, strict=True):
        arr = np.asarray(idx)
        if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
            raise ProbeInputError(f"split part '{name}' must be a 1-D integer index array, got "
                                  f"shape {arr.shape} dtype {arr.dtype}")
        if arr.size == 0:
            raise ProbeInputError(f"split part '{name}' is empty; every part needs at least one region")
        if arr.min() < 0 or arr.max() >= n_rows:
            raise ProbeInputError(f"split part '{name}' has indices outside 0..{n_rows - 1} "
                                  f"(min {arr.min()}, max {arr.max()})")
        if len(np.unique(arr)) != arr.size:
            raise ProbeInputError(f"split part '{name}' repeats an index")
        out.append(arr.astype(np.int64))
    for i in range(3):
        for j in range(i + 1, 3):
            common = np.intersect1d(out[i], out[j])
            if common.size:
                raise ProbeInputError(f"split parts '{PART_NAMES[i]}' and '{PART_NAMES[j]}' share "
                                      f"{common.size} rows (first {int(common[0])}); they must be disjoint")
    return tuple(out)


def check_probe_inputs(
    X: np.ndarray,
    y: np.ndarray,
    split_indices: Sequence[np.ndarray],
    region_ids: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
    """Validate shapes, split indices, and the rows the split uses: finite X, finite y ≥ 0.

    Rows outside the split are not checked (regions without this cell's label may be NaN).
    """
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim != 2:
        raise ProbeInputError(f"embeddings X must be 2-D (regions, dims), got shape {X.shape}")
    if y.ndim != 1:
        raise ProbeInputError(f"targets y must be 1-D (one value per region), got shape {y.shape}")
    if X.shape[0] != y.shape[0]:
        raise ProbeInputError(f"X has {X.shape[0]} rows but y has {y.shape[0]} values; they must be "
                              "aligned with the same region ids")
    if region_ids is not None and len(region_ids) != X.shape[0]:
        raise ProbeInputError(f"{len(region_ids)} region ids for {X.shape[0]} embedding rows")
    if not np.issubdtype(X.dtype, np.number) or not np.issubdtype(y.dtype, np.number):
        raise ProbeInputError(f"X and y must be numeric, got {X.dtype} and {y.dtype}")
    parts = check_split_indices(split_indices, X.shape[0])
    used = np.sort(np.concatenate(parts))
    bad_x = used[~np.isfinite(X[used]).all(axis=1)]
    if bad_x.size:
        raise ProbeInputError(f"embeddings X contain NaN or inf in {_describe_rows(bad_x, region_ids)}; "
                              "fix or drop those regions before probing")
    y_used = y[used].astype(np.float64)
    bad_y = used[~np.isfinite(y_used)]
    if bad_y.size:
        raise ProbeInputError(f"targets y are NaN or inf in {_describe_rows(bad_y, region_ids)}; "
                              "a split must contain only regions that have the label")
    neg_y = used[y_used < 0]
    if neg_y.size:
        raise ProbeInputError(f"targets y are negative in {_describe_rows(neg_y, region_ids)}; the paper's "
                              "ln(y+1) transform needs raw indicator values >= 0")
    return X, y, parts


# Bump when the probe's preprocessing or training code changes numbers (part of every record key).
PROBE_VERSION = "2"
FEATURE_CLIP = 10.0


def prepare_probe_data(
    X: np.ndarray,
    y: np.ndarray,
    split_indices: Sequence[np.ndarray],
    region_ids: Sequence[str] | None = None,
    dtype: type = np.float64,
    scaling: str = "per-feature",
) -> ProbeData:
    """Check inputs, take ln(y+1), standardise features and targets with train statistics.

    ``scaling="per-feature"`` (the MLP probe's): every feature is centred and divided by its own train
    std; a feature (or target) with zero train variance is only centred (its std is taken as 1).
    Standardised features are clipped to ±``FEATURE_CLIP`` train standard deviations: a region far
    outside the train range (say a histogram bin that is almost never non-zero in train) must not
    blow a prediction up. The same rule holds for every method.

    ``scaling="global"`` (the ridge probe's): features are centred and divided by one number, the root
    mean train variance over features, and not clipped. It keeps the embedding's geometry (which
    directions carry its variance) as the method made it: per-feature scaling inflates directions of
    tiny variance to unit variance, which can drown a low-rank embedding's signal in noise.
    """
    if scaling not in ("per-feature", "global"):
        raise ValueError(f"scaling must be 'per-feature' or 'global', got {scaling!r}")
    X, y, (tr, va, te) = check_probe_inputs(X, y, split_indices, region_ids)
    x64 = X.astype(np.float64)
    mu = x64[tr].mean(axis=0)
    sd = x64[tr].std(axis=0)
    if scaling == "global":
        rms = float(np.sqrt(np.mean(sd**2)))
        sd = np.full_like(sd, rms if rms > 0 else 1.0)
    sd = np.where(sd > 0, sd, 1.0)
    clip = FEATURE_CLIP if scaling == "per-feature" else np.inf
    t = np.log1p(y.astype(np.float64))
    t_mean = float(t[tr].mean())
    t_std = float(t[tr].std())
    t_std = t_std if t_std > 0 else 1.0

    def feats(idx: np.ndarray) -> np.ndarray:
        return np.clip((x64[idx] - mu) / sd, -clip, clip).astype(dtype)

    def targ(idx: np.ndarray) -> np.ndarray:
        return ((t[idx] - t_mean) / t_std).astype(dtype)

    return ProbeData(feats(tr), feats(va), feats(te), targ(tr), targ(va), targ(te), t_mean, t_std)


@dataclass(frozen=True)
class ProbeConfig:
    """Hyper-parameters of the probe head; its :attr:`digest` goes into result records."""

    hidden: int = 256
    dropout: float = 0.1
    lr: float = 1e-3
    weight_decay: float = 1e-2
    batch_size: int = 64
    max_epochs: int = 500
    patience: int = 30

    def __post_init__(self) -> None:
        problems = []
        if self.hidden < 1:
            problems.append(f"hidden={self.hidden} must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout={self.dropout} must be in [0, 1)")
        if not self.lr > 0:
            problems.append(f"lr={self.lr} must be > 0")
        if not self.weight_decay >= 0:
            problems.append(f"weight_decay={self.weight_decay} must be >= 0")
        for name in ("batch_size", "max_epochs", "patience"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} must be >= 1")
        if problems:
            raise ValueError("invalid ProbeConfig: " + "; ".join(problems))

    @property
    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()
