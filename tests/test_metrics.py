"""Metrics: hand-computed values, agreement with sklearn, raw-unit errors, mean ± std over seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from urbanln_bench.metrics import aggregate, log1p_inverse, raw_unit_metrics, regression_metrics


def test_hand_computed_values():
    m = regression_metrics(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0, 5.0]))
    # SSE = 1, SST = 5, n = 4
    assert m["r2"] == pytest.approx(0.8)
    assert m["rmse"] == pytest.approx(0.5)
    assert m["mae"] == pytest.approx(0.25)


def test_r2_can_be_negative_and_matches_sklearn():
    rng = np.random.default_rng(0)
    for _ in range(5):
        t = rng.normal(size=50)
        p = t + rng.normal(scale=2.0, size=50)
        m = regression_metrics(t, p)
        assert m["r2"] == pytest.approx(r2_score(t, p), abs=1e-12)
        assert m["rmse"] == pytest.approx(math.sqrt(mean_squared_error(t, p)), abs=1e-12)
        assert m["mae"] == pytest.approx(mean_absolute_error(t, p), abs=1e-12)
    assert regression_metrics(np.array([0.0, 1.0]), np.array([1.0, 0.0]))["r2"] == pytest.approx(-3.0)


def test_constant_truth_follows_sklearn():
    assert regression_metrics(np.ones(3), np.ones(3))["r2"] == 1.0
    assert regression_metrics(np.ones(3), np.array([1.0, 2.0, 1.0]))["r2"] == 0.0


def test_bad_metric_inputs():
    with pytest.raises(ValueError, match="equal length"):
        regression_metrics(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="empty"):
        regression_metrics(np.array([]), np.array([]))
    with pytest.raises(ValueError, match="non-finite"):
        regression_metrics(np.array([1.0, np.nan]), np.ones(2))


def test_raw_unit_metrics_undo_log1p():
    raw_true = np.array([0.0, 9.0, 99.0])
    raw_pred = np.array([1.0, 9.0, 89.0])
    m = raw_unit_metrics(np.log1p(raw_true), np.log1p(raw_pred))
    assert m["mae_raw"] == pytest.approx(11.0 / 3)
    assert m["rmse_raw"] == pytest.approx(math.sqrt(101.0 / 3))
    assert set(m) == {"rmse_raw", "mae_raw"}  # no MAPE on log targets
    assert log1p_inverse(np.array([-0.5]))[0] == 0.0  # a negative log prediction is a 0 count


def test_aggregate_mean_and_sample_std():
    out = aggregate([{"r2": 0.5, "rmse": 1.0}, {"r2": 0.7, "rmse": 1.0}, {"r2": 0.6, "rmse": 1.0}])
    assert out["r2"]["mean"] == pytest.approx(0.6)
    assert out["r2"]["std"] == pytest.approx(0.1)  # ddof = 1: sqrt(0.02 / 2)
    assert out["r2"]["n"] == 3
    assert out["rmse"]["std"] == 0.0
    single = aggregate([{"r2": 0.5}])
    assert single["r2"] == {"mean": 0.5, "std": 0.0, "n": 1}


def test_aggregate_refuses_incomplete_rows():
    with pytest.raises(ValueError, match="same metrics"):
        aggregate([{"r2": 0.5, "rmse": 1.0}, {"r2": 0.7}])
    with pytest.raises(ValueError, match="at least one"):
        aggregate([])
