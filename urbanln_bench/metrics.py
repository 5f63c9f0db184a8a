"""Regression metrics of the paper (R², RMSE, MAE on ln(y+1)) and mean ± std over seeds.

The paper reports R², RMSE and MAE on the ``ln(y+1)`` scale. Peers differ (z-scored targets,
no test scoring, MAPE on log targets), so the harness computes one definition everywhere, adds
RMSE/MAE in the raw units of the indicator, and never computes MAPE on log targets (it is
meaningless near ln(1) = 0).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

METRIC_NAMES: tuple[str, ...] = ("r2", "rmse", "mae")
RAW_METRIC_NAMES: tuple[str, ...] = ("rmse_raw", "mae_raw")


def _pair(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if t.ndim != 1 or t.shape != p.shape:
        raise ValueError(f"y_true and y_pred must be 1-D and of equal length, got shapes {t.shape} and {p.shape}")
    if t.size == 0:
        raise ValueError("cannot compute metrics on an empty set of regions")
    for name, arr in (("y_true", t), ("y_pred", p)):
        bad = ~np.isfinite(arr)
        if bad.any():
            raise ValueError(f"{name} has {int(bad.sum())} non-finite values (first at index {int(np.argmax(bad))})")
    return t, p


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """R² = 1 − SSE/SST over the given arrays (sklearn's ``r2_score``; negative when worse than
    predicting the test mean), RMSE and MAE, all in the units of the inputs.

    As in sklearn, a constant ``y_true`` (SST = 0) gives R² = 1 for a perfect prediction, else 0.
    """
    t, p = _pair(y_true, y_pred)
    err = t - p
    sse = float(np.sum(err**2))
    sst = float(np.sum((t - t.mean()) ** 2))
    if sst == 0.0:
        r2 = 1.0 if sse == 0.0 else 0.0
    else:
        r2 = 1.0 - sse / sst
    return {"r2": r2, "rmse": float(np.sqrt(sse / t.size)), "mae": float(np.mean(np.abs(err)))}


def log1p_inverse(log_values: np.ndarray) -> np.ndarray:
    """Raw units from ln(y+1) values: expm1, clipped at 0 because indicators are non-negative
    (a log prediction below 0 would otherwise map to an impossible negative count)."""
    with np.errstate(over="ignore"):
        return np.maximum(np.expm1(np.asarray(log_values, dtype=np.float64)), 0.0)


def raw_unit_metrics(log_true: np.ndarray, log_pred: np.ndarray) -> dict[str, float]:
    """RMSE and MAE in the indicator's raw units, from truth and prediction on the ln(y+1) scale.

    Keys ``rmse_raw`` and ``mae_raw``. No MAPE: near-zero indicators make it explode, and
    peers' MAPE on log or z-scored targets is not comparable across papers.
    """
    t, p = _pair(log_true, log_pred)
    err = log1p_inverse(t) - log1p_inverse(p)
    with np.errstate(over="ignore", invalid="ignore"):
        return {"rmse_raw": float(np.sqrt(np.mean(err**2))), "mae_raw": float(np.mean(np.abs(err)))}


def aggregate(per_seed: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Mean ± std of each metric over seeds: ``{name: {"mean", "std", "n"}}``.

    ``std`` is the sample standard deviation (ddof = 1), the usual "± std over runs" of papers and
    an unbiased variance estimate for the few (≥ 5) seeds used; with a single seed it is 0.0 and
    ``n`` = 1 says so. Every seed must report the same metric names: averaging over incomplete
    rows would silently compare different things.
    """
    if len(per_seed) == 0:
        raise ValueError("aggregate needs at least one per-seed metrics dict")
    names = set(per_seed[0])
    for i, record in enumerate(per_seed[1:], start=1):
        if set(record) != names:
            diff = sorted(names.symmetric_difference(record))
            raise ValueError(f"seed record {i} has different metric names than record 0 (differ: {diff}); "
                             "every seed must report the same metrics")
    out: dict[str, dict[str, float]] = {}
    for name in sorted(names):
        values = np.array([float(record[name]) for record in per_seed], dtype=np.float64)
        n = values.size
        out[name] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if n > 1 else 0.0, "n": n}
    return out
