"""Closed-form ridge regression probe: a cheap floor and diagnostic next to the MLP probe.

Same inputs, target transform (ln(y+1), train-standardised) and metrics as the MLP probe; the
regularisation strength is chosen on validation MSE from a fixed grid, never on test. numpy only,
so importing it does not import torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from urbanln_bench.metrics import raw_unit_metrics, regression_metrics
from urbanln_bench.probe_inputs import prepare_probe_data

RIDGE_ALPHAS: tuple[float, ...] = tuple(float(10.0**k) for k in np.arange(-3.0, 6.01, 0.5))
"""10^-3 … 10^6 in half decades, on standardised features (penalty on the sum of squares)."""


@dataclass(frozen=True, eq=False)
class RidgeResult:
    metrics: dict[str, float]  # r2, rmse, mae on ln(y+1); rmse_raw, mae_raw in raw units
    alpha: float
    val_mse: float  # on the ln(y+1) scale, at the chosen alpha
    test_predictions: np.ndarray  # ln(y+1) scale, in the order of the test indices


def ridge_probe(
    X: np.ndarray,
    y: np.ndarray,
    split_indices: Sequence[np.ndarray],
    alphas: Sequence[float] = RIDGE_ALPHAS,
    region_ids: Sequence[str] | None = None,
    scaling: str = "per-feature",
) -> RidgeResult:
    """Fit ridge on train for every alpha (one SVD), pick the alpha with the lowest val MSE
    (the smallest alpha on a tie), and report test metrics at that alpha. ``scaling`` is
    :func:`~urbanln_bench.probe_inputs.prepare_probe_data`'s: the records' ridge column uses ``global``
    (the embedding's own geometry); the twin's difficulty check keeps ``per-feature``."""
    if len(alphas) == 0 or min(alphas) < 0:
        raise ValueError("alphas must be a non-empty grid of values >= 0")
    data = prepare_probe_data(X, y, split_indices, region_ids, scaling=scaling)
    # Features and target are centred on train, so the intercept is 0 on the standardised scale.
    u, s, vt = np.linalg.svd(data.x_train, full_matrices=False)
    uty = u.T @ data.t_train
    best: tuple[float, float, np.ndarray] | None = None
    for alpha in sorted(float(a) for a in alphas):
        denom = s**2 + alpha
        shrink = np.divide(s, denom, out=np.zeros_like(s), where=denom > 0)
        w = vt.T @ (shrink * uty)
        val_mse = float(np.mean((data.x_val @ w - data.t_val) ** 2))
        if best is None or val_mse < best[1]:
            best = (alpha, val_mse, w)
    assert best is not None
    alpha, val_mse_std, w = best
    pred = data.to_log_scale(data.x_test @ w)
    truth = data.to_log_scale(data.t_test)
    metrics = regression_metrics(truth, pred) | raw_unit_metrics(truth, pred)
    return RidgeResult(metrics, alpha, val_mse_std * data.target_std**2, pred)
