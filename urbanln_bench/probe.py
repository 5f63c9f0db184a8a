"""The downstream probe: the same small MLP head, budget and seeds for every method.

Frozen region embeddings → Linear(D, 256) → ReLU → Dropout → Linear(256, 1), regressing the
paper's target ln(y+1) (standardised with train statistics; features too, see
:mod:`urbanln_bench.probe_inputs`). This is the peers' head shape (UrbanCLIP/UrbanVLP use
768→256→1); their dropout of 0.01 is nearly a no-op, so the harness uses the conventional 0.1.
AdamW with lr 1e-3 and weight decay 1e-2 (PyTorch's AdamW default decay), batch 64, at most 500
epochs, early stopping with patience 30 on validation MSE, and the best-validation weights are
restored before the test set is scored once. The test set plays no part in training or selection.

Determinism: initialisation, batch order and dropout masks all come from one
``torch.Generator`` seeded with ``seed``; training runs with one thread and deterministic
algorithms, both restored afterwards. Same inputs and seed on the same machine → bit-identical
metrics. These switches are process-global while a probe runs, so parallelise probes across
processes, not threads.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from urbanln_bench.metrics import raw_unit_metrics, regression_metrics
from urbanln_bench.probe_inputs import ProbeConfig, ProbeData, prepare_probe_data

PROBE_THREADS = 1
"""Torch intra-op threads while probing: the matmuls are tiny, and a fixed count keeps float
reductions, hence metrics, bit-identical run to run."""

SEARCH_SPACE: dict[str, tuple[Any, ...]] = {
    "lr": (1e-4, 1e-2),  # log-uniform
    "weight_decay": (1e-5, 1e-1),  # log-uniform
    "dropout": (0.0, 0.5),  # uniform
    "hidden": (64, 128, 256, 512),  # categorical
}
"""What :func:`tune_probe` searches; everything else comes from the base config."""


@dataclass(frozen=True, eq=False)
class ProbeResult:
    """Test metrics at the best-validation epoch of one seeded probe fit."""

    metrics: dict[str, float]  # r2, rmse, mae on ln(y+1); rmse_raw, mae_raw in raw units
    best_epoch: int  # 1-based epoch whose weights were restored
    epochs_run: int
    val_mse: float  # at best_epoch, on the ln(y+1) scale
    seed: int
    config: ProbeConfig
    test_predictions: np.ndarray = field(repr=False)  # ln(y+1) scale, in test-index order


@dataclass(frozen=True)
class TuneSummary:
    """What :func:`tune_probe` tried and chose (validation MSE on the ln(y+1) scale)."""

    n_trials: int
    seed: int
    best_value: float
    best_params: dict[str, Any]
    best_trial: int
    trials: tuple[dict[str, Any], ...]
    sampler: str = "optuna.TPESampler"
    search_space: dict[str, tuple[Any, ...]] = field(default_factory=lambda: dict(SEARCH_SPACE))


@dataclass
class _Trained:
    params: list[torch.Tensor]
    best_epoch: int
    epochs_run: int
    best_val_mse: float  # standardised scale


@contextlib.contextmanager
def deterministic_torch(threads: int = PROBE_THREADS) -> Iterator[None]:
    """Fixed thread count and deterministic algorithms for the duration, then restore both."""
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)
        torch.set_num_threads(old_threads)


def _init_params(dim: int, hidden: int, generator: torch.Generator) -> list[torch.Tensor]:
    """nn.Linear's default init, U(±1/sqrt(fan_in)) for weights and biases, drawn from ``generator``."""

    def uniform(shape: tuple[int, ...], fan_in: int) -> torch.Tensor:
        bound = 1.0 / math.sqrt(fan_in)
        return ((torch.rand(shape, generator=generator) * 2 - 1) * bound).requires_grad_(True)

    return [uniform((hidden, dim), dim), uniform((hidden,), dim), uniform((1, hidden), hidden), uniform((1,), hidden)]


def _forward(params: list[torch.Tensor], x: torch.Tensor, dropout: float = 0.0,
             generator: torch.Generator | None = None) -> torch.Tensor:
    w1, b1, w2, b2 = params
    h = torch.relu(torch.addmm(b1, x, w1.t()))
    if dropout > 0.0 and generator is not None:
        keep = torch.rand(h.shape, generator=generator) >= dropout
        h = h * keep / (1.0 - dropout)
    return torch.addmm(b2, h, w2.t()).squeeze(1)


def _train_head(x_train: np.ndarray, t_train: np.ndarray, x_val: np.ndarray, t_val: np.ndarray,
                config: ProbeConfig, seed: int) -> _Trained:
    """Train on train, early-stop on val; only train and val arrays ever reach this function."""
    with deterministic_torch():
        generator = torch.Generator().manual_seed(int(seed))
        xt, tt = torch.from_numpy(x_train), torch.from_numpy(t_train)
        xv, tv = torch.from_numpy(x_val), torch.from_numpy(t_val)
        params = _init_params(xt.shape[1], config.hidden, generator)
        # fused AdamW: same update rule, ~3x faster per step on CPU for this tiny head.
        optimiser = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)
        n = xt.shape[0]
        best_val, best_epoch, best_params = math.inf, 0, [p.detach().clone() for p in params]
        epoch = 0
        for epoch in range(1, config.max_epochs + 1):
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, config.batch_size):
                idx = order[start: start + config.batch_size]
                loss = torch.mean((_forward(params, xt[idx], config.dropout, generator) - tt[idx]) ** 2)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
            with torch.no_grad():
                val = float(torch.mean((_forward(params, xv) - tv) ** 2))
            if val < best_val:
                best_val, best_epoch = val, epoch
                best_params = [p.detach().clone() for p in params]
            elif epoch - best_epoch >= config.patience:
                break
        if not math.isfinite(best_val):
            raise FloatingPointError("probe training diverged (validation MSE is not finite in any epoch); "
                                     "lower the learning rate")
        return _Trained(best_params, best_epoch, epoch, best_val)


def _prepare(X: np.ndarray, y: np.ndarray, split_indices: Sequence[np.ndarray],
             region_ids: Sequence[str] | None) -> ProbeData:
    return prepare_probe_data(X, y, split_indices, region_ids, dtype=np.float32)


def _fit_prepared(data: ProbeData, config: ProbeConfig, seed: int) -> ProbeResult:
    trained = _train_head(data.x_train, data.t_train, data.x_val, data.t_val, config, seed)
    with deterministic_torch(), torch.no_grad():
        pred_std = _forward(trained.params, torch.from_numpy(data.x_test)).numpy()
    pred = data.to_log_scale(pred_std)
    truth = data.to_log_scale(data.t_test)
    metrics = regression_metrics(truth, pred) | raw_unit_metrics(truth, pred)
    return ProbeResult(metrics, trained.best_epoch, trained.epochs_run,
                       trained.best_val_mse * data.target_std**2, int(seed), config, pred)


def fit_probe(
    X: np.ndarray,
    y: np.ndarray,
    split_indices: Sequence[np.ndarray],
    config: ProbeConfig = ProbeConfig(),
    seed: int = 0,
    region_ids: Sequence[str] | None = None,
) -> ProbeResult:
    """Fit the probe head on frozen embeddings ``X`` (n, D) for raw targets ``y`` (n,) ≥ 0.

    ``split_indices`` is (train, val, test) index arrays into the rows of ``X`` (see
    :meth:`urbanln_bench.splits.Split.indices`); ``region_ids`` only improves error messages.
    """
    return _fit_prepared(_prepare(X, y, split_indices, region_ids), config, seed)


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    import optuna

    old = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(old)


def tune_probe(
    X: np.ndarray,
    y: np.ndarray,
    split_indices: Sequence[np.ndarray],
    n_trials: int,
    seed: int,
    base_config: ProbeConfig = ProbeConfig(),
    region_ids: Sequence[str] | None = None,
) -> tuple[ProbeConfig, TuneSummary]:
    """Search lr, weight decay, dropout and hidden size (:data:`SEARCH_SPACE`) with optuna's TPE
    sampler seeded by ``seed``, minimising validation MSE only; the test part is never scored.

    Give every method the same ``n_trials`` (the paper's protocol is an equal budget). Each trial
    trains with the same ``seed``, so trials differ only in their hyper-parameters.
    """
    import optuna

    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    data = _prepare(X, y, split_indices, region_ids)
    x_train, t_train, x_val, t_val = data.x_train, data.t_train, data.x_val, data.t_val
    lr_range, wd_range, dropout_range, hidden_choices = (SEARCH_SPACE[k] for k in
                                                         ("lr", "weight_decay", "dropout", "hidden"))

    def objective(trial: optuna.Trial) -> float:
        config = replace(
            base_config,
            lr=trial.suggest_float("lr", *lr_range, log=True),
            weight_decay=trial.suggest_float("weight_decay", *wd_range, log=True),
            dropout=trial.suggest_float("dropout", *dropout_range),
            hidden=trial.suggest_categorical("hidden", list(hidden_choices)),
        )
        trained = _train_head(x_train, t_train, x_val, t_val, config, seed)
        trial.set_user_attr("best_epoch", trained.best_epoch)
        return trained.best_val_mse * data.target_std**2

    with _quiet_optuna():
        study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=int(seed)))
        study.optimize(objective, n_trials=n_trials)
    best = study.best_trial
    chosen = replace(base_config, **best.params)
    trials = tuple({"number": t.number, "params": dict(t.params), "val_mse": t.value,
                    "best_epoch": t.user_attrs.get("best_epoch")} for t in study.trials)
    summary = TuneSummary(n_trials=n_trials, seed=int(seed), best_value=float(best.value),
                          best_params=dict(best.params), best_trial=best.number, trials=trials)
    return chosen, summary
