"""Probe: learns when the target depends on X, not on noise; deterministic; never selects on test."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from urbanln_bench.probe import ProbeConfig, fit_probe, tune_probe
from urbanln_bench.probe_inputs import ProbeInputError
from urbanln_bench.ridge import ridge_probe
from urbanln_bench.splits import split_regions

N, D = 300, 16


def _data(signal: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, D)).astype(np.float32)
    if signal:
        w = rng.normal(size=D)
        log_y = 2.0 + 0.6 * np.tanh(X @ w / np.linalg.norm(w)) * 1.5 + 0.05 * rng.normal(size=N)
    else:
        log_y = np.abs(rng.normal(size=N)) + 1.0
    y = np.expm1(log_y)
    ids = [f"r{i:03d}" for i in range(N)]
    split = split_regions(ids, city="NY", task="Pop", seed=seed)
    return X, y, tuple(split.indices(ids))


@pytest.fixture(scope="module")
def signal_data():
    return _data(signal=True)


@pytest.fixture(scope="module")
def noise_data():
    return _data(signal=False)


@pytest.fixture(scope="module")
def noise_fit(noise_data):
    return fit_probe(*noise_data, seed=0)


def test_probe_learns_a_signal(signal_data):
    result = fit_probe(*signal_data, seed=0)
    assert result.metrics["r2"] > 0.8
    assert set(result.metrics) == {"r2", "rmse", "mae", "rmse_raw", "mae_raw"}
    assert result.test_predictions.shape == (len(signal_data[2][2]),)


def test_probe_finds_nothing_in_noise_and_stops_early(noise_fit):
    assert noise_fit.metrics["r2"] < 0.1
    assert noise_fit.epochs_run < ProbeConfig().max_epochs
    assert noise_fit.epochs_run - noise_fit.best_epoch == ProbeConfig().patience


def test_same_seed_gives_bit_identical_results(signal_data):
    config = ProbeConfig(max_epochs=40)
    a = fit_probe(*signal_data, config=config, seed=3)
    b = fit_probe(*signal_data, config=config, seed=3)
    c = fit_probe(*signal_data, config=config, seed=4)
    assert a.metrics == b.metrics
    assert np.array_equal(a.test_predictions, b.test_predictions)
    assert a.metrics != c.metrics


def test_probe_restores_torch_global_state(signal_data):
    import torch

    threads = torch.get_num_threads()
    fit_probe(*signal_data, config=ProbeConfig(max_epochs=2), seed=0)
    assert torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()


def test_test_targets_never_influence_training(noise_data, noise_fit):
    X, y, (train, val, test) = noise_data
    y2 = y.copy()
    y2[test] = np.random.default_rng(1).permutation(y[test]) * 3.0
    other = fit_probe(X, y2, (train, val, test), seed=0)
    assert other.best_epoch == noise_fit.best_epoch
    assert other.val_mse == noise_fit.val_mse
    assert np.array_equal(other.test_predictions, noise_fit.test_predictions)
    assert other.metrics != noise_fit.metrics  # the test part *is* scored, only after training


def test_tune_selects_on_validation_only(signal_data):
    X, y, (train, val, test) = signal_data
    base = ProbeConfig(max_epochs=15, patience=5)
    config, summary = tune_probe(X, y, (train, val, test), n_trials=4, seed=0, base_config=base)
    y2 = y.copy()
    y2[test] = y[test][::-1] * 5.0
    config2, summary2 = tune_probe(X, y2, (train, val, test), n_trials=4, seed=0, base_config=base)
    assert config == config2 and summary == summary2
    assert summary.n_trials == len(summary.trials) == 4
    assert summary.best_value == min(t["val_mse"] for t in summary.trials)
    assert (config.max_epochs, config.patience) == (15, 5)  # untuned fields come from the base
    assert config.hidden in (64, 128, 256, 512)
    y3 = y.copy()
    y3[val] = y[val][::-1]
    _, summary3 = tune_probe(X, y3, (train, val, test), n_trials=4, seed=0, base_config=base)
    assert summary3.best_value != summary.best_value  # validation does drive the choice


def test_config_digest_and_validation():
    assert ProbeConfig().digest == ProbeConfig().digest
    assert ProbeConfig(lr=2e-3).digest != ProbeConfig().digest
    assert (ProbeConfig().hidden, ProbeConfig().dropout, ProbeConfig().batch_size) == (256, 0.1, 64)
    with pytest.raises(ValueError, match="dropout"):
        ProbeConfig(dropout=1.0)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda X, y, s: (np.where(np.arange(N)[:, None] % 100 == 7, np.nan, X), y, s), r"3 row\(s\), first at row 7"),
        (lambda X, y, s: (X, np.where(np.arange(N) == 11, -1.0, y), s), "negative in 1 row"),
        (lambda X, y, s: (X, np.where(np.arange(N) == 5, np.nan, y), s), "NaN or inf"),
        (lambda X, y, s: (X[:-1], y, s), "aligned"),
        (lambda X, y, s: (X, y, (s[0], s[1][:0], s[2])), "'val' is empty"),
        (lambda X, y, s: (X, y, (s[0], s[1], np.concatenate([s[2], s[0][:1]]))), "disjoint"),
        (lambda X, y, s: (X[:, 0], y, s), "2-D"),
    ],
)
def test_bad_inputs_raise_value_errors_naming_the_problem(signal_data, mutate, message):
    X, y, split = mutate(*signal_data)
    with pytest.raises(ValueError, match=message):
        fit_probe(X, y, split, config=ProbeConfig(max_epochs=1))


def test_bad_rows_name_the_region_when_ids_are_given(signal_data):
    X, y, split = signal_data
    X = X.copy()
    X[3] = np.inf
    ids = [f"r{i:03d}" for i in range(N)]
    with pytest.raises(ProbeInputError, match="region 'r003'"):
        fit_probe(X, y, split, region_ids=ids)


def test_rows_outside_the_split_are_not_checked(signal_data):
    X, y, (train, val, test) = signal_data
    y = y.copy()
    y[test[0]] = np.nan  # an unlabelled region left out of the split
    result = fit_probe(X, y, (train, val, test[1:]), config=ProbeConfig(max_epochs=2))
    assert np.isfinite(result.metrics["r2"])


def test_ridge_probe_floor(signal_data, noise_data):
    signal = ridge_probe(*signal_data)
    assert signal.metrics["r2"] > 0.7
    noise = ridge_probe(*noise_data)
    assert noise.metrics["r2"] < 0.1
    X, y, (train, val, test) = signal_data
    y2 = y.copy()
    y2[test] = y[test][::-1]
    assert ridge_probe(X, y2, (train, val, test)).alpha == signal.alpha


def test_ridge_matches_sklearn_at_fixed_alpha(signal_data):
    from sklearn.linear_model import Ridge

    X, y, (train, val, test) = signal_data
    result = ridge_probe(X, y, (train, val, test), alphas=[10.0])
    mu, sd = X[train].mean(0), X[train].std(0)
    t = np.log1p(y)
    model = Ridge(alpha=10.0).fit((X[train] - mu) / sd, (t[train] - t[train].mean()) / t[train].std())
    expected = model.predict((X[test] - mu) / sd) * t[train].std() + t[train].mean()
    np.testing.assert_allclose(result.test_predictions, expected, rtol=1e-5, atol=1e-5)


def test_torch_free_modules_do_not_import_torch():
    code = ("import sys, urbanln_bench.splits, urbanln_bench.metrics, urbanln_bench.ridge, "
            "urbanln_bench.probe_inputs; sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_passing_a_split_of_ids_explains_the_fix(signal_data):
    X, y, _ = signal_data
    ids = [f"r{i:03d}" for i in range(N)]
    split = split_regions(ids, city="NY", task="Pop", seed=0)
    with pytest.raises(ValueError, match=r"split.indices\(region_ids\)"):
        fit_probe(X, y, split)
