"""Indicators of a synthetic twin as documented functions of the latents (docs/twins.md).

Each task file's ``[twin]`` table is an :class:`IndicatorModel`, a log-linear model

    η = intercept + Σ weight·latent + Σ weight_ij·latent_i·latent_j

with one of two noise models:

* ``noise = "lognormal"``: ln(y + 1) = max(η + ε, 0), ε ~ N(0, noise_sd²) (continuous quantities:
  persons, million yuan, radiance, tonnes);
* ``noise = "negative_binomial"``: y ~ NegBin(mean e^η, Var = mean + dispersion·mean²) (counts:
  reviews, incidents).

A task with ``derived_from_aux = "poi_counts"`` (POI) takes its label from the auxiliary modality
instead: the total of the region's 14 POI category counts (:mod:`urbanln_bench.synth.auxiliary`).

Because the noise is known, Var(ln(y+1) | latents) is known per region (exactly for lognormal and
negative-binomial noise, by a fixed-seed Monte Carlo for the POI total), and so is the analytic
ceiling of each cell: 1 − mean Var(noise) / Var(ln(y+1)), the R² the true latents would achieve.
Labels are missing for a share of regions as in the paper's Table 5, more often in sparse and
watery regions, like real grids where sources are thin.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from urbanln_bench.errors import SpecError
from urbanln_bench.strict import from_mapping
from urbanln_bench.synth import libm
from urbanln_bench.synth.auxiliary import (
    POI_CATEGORIES,
    negative_binomial,
    sample_poi_counts,
    simulate_mobility,
    simulate_poi_counts,
)
from urbanln_bench.synth.fields import twin_params
from urbanln_bench.synth.latents import LATENT_NAMES


# scipy is imported on first use: task files are parsed (for `list`, `--help`) without it.
def _stats():
    from scipy import stats

    return stats


def gammaln(x):
    from scipy.special import gammaln as _gammaln

    return _gammaln(x)

if TYPE_CHECKING:
    from urbanln_bench.specs import CitySpec, TaskSpec

__all__ = [
    "NOISE_MODELS",
    "POI_CATEGORIES",
    "IndicatorModel",
    "TwinTables",
    "analytic_ceiling",
    "cell_ceiling",
    "conditional_log_moments",
    "label_mask",
    "linear_predictor",
    "sample_indicator",
    "simulate_twin_tables",
]

NOISE_MODELS = ("lognormal", "negative_binomial")

# Fixed sub-stream constants (see synth.fields and synth.auxiliary for the others).
_NOISE_STREAM = 301
_MISSING_STREAM = 302
_MONTE_CARLO_STREAM = 303
_MONTE_CARLO_REPLICAS = 256
_NB_GRID_POINTS = 129  # interpolation nodes in ln(mean) for the exact negative-binomial moments


def _check_latent(name: str, where: str) -> None:
    if name not in LATENT_NAMES:
        import difflib

        close = difflib.get_close_matches(name, LATENT_NAMES, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(f"{where}: unknown latent '{name}'{hint}; latents: {', '.join(LATENT_NAMES)}")


@dataclass(frozen=True)
class IndicatorModel:
    """The ``[twin]`` table of a task file: how a twin generates the indicator (module docstring)."""

    intercept: float = 0.0
    weights: dict[str, float] = field(default_factory=dict)
    interactions: tuple[tuple[str, str, float], ...] = ()
    noise: str = "lognormal"
    noise_sd: float = 0.3  # lognormal: sd of ε on the ln(y+1) scale
    dispersion: float = 0.5  # negative_binomial: α in Var = mean + α·mean²
    # which regions keep their label: score = Σ weight·latent + Gumbel noise, the top share kept
    label_propensity: dict[str, float] = field(default_factory=lambda: {"density": 1.5, "water": -2.0})

    def __post_init__(self) -> None:
        if self.noise not in NOISE_MODELS:
            raise ValueError(f"noise must be one of {', '.join(NOISE_MODELS)}, got '{self.noise}'")
        if self.noise_sd < 0:
            raise ValueError(f"noise_sd must be ≥ 0, got {self.noise_sd}")
        if self.dispersion <= 0:
            raise ValueError(f"dispersion must be positive, got {self.dispersion}")
        for name in self.weights:
            _check_latent(name, "weights")
        for name in self.label_propensity:
            _check_latent(name, "label_propensity")
        for i, (a, b, _) in enumerate(self.interactions):
            _check_latent(a, f"interactions[{i}]")
            _check_latent(b, f"interactions[{i}]")


def indicator_model(task: TaskSpec) -> IndicatorModel:
    """The task file's ``[twin]`` table as :class:`IndicatorModel` (how a twin draws the label)."""
    if task.twin is None:
        raise SpecError(f"{task.source_file or task.name}: no [twin] table, so a twin cannot draw task '{task.name}'")
    return from_mapping(IndicatorModel, task.twin, f"{task.source_file or task.name}.twin")


def _column(latents: np.ndarray, name: str) -> np.ndarray:
    return latents[:, LATENT_NAMES.index(name)]


def linear_predictor(model: IndicatorModel, latents: np.ndarray) -> np.ndarray:
    """η per region: intercept + Σ weight·latent + Σ weight·latent_i·latent_j."""
    eta = np.full(latents.shape[0], model.intercept, dtype=np.float64)
    for name, weight in model.weights.items():
        eta += weight * _column(latents, name)
    for a, b, weight in model.interactions:
        eta += weight * _column(latents, a) * _column(latents, b)
    return eta


def sample_indicator(
    model: IndicatorModel, eta: np.ndarray, rng: np.random.Generator, replicas: int | None = None
) -> np.ndarray:
    """Raw indicator values (≥ 0) for linear predictor ``eta``; shape (n,) or (replicas, n)."""
    shape = eta.shape if replicas is None else (replicas, *eta.shape)
    if model.noise == "lognormal":
        return libm.expm1(np.maximum(eta + model.noise_sd * rng.standard_normal(shape), 0.0))
    return negative_binomial(rng, np.broadcast_to(libm.exp(eta), shape), model.dispersion).astype(np.float64)


def _censored_normal_moments(mean: np.ndarray, sd: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of max(X, 0), X ~ N(mean, sd²)."""
    if sd == 0:
        clipped = np.maximum(mean, 0.0)
        return clipped, np.zeros_like(clipped)
    a = mean / sd
    cdf, pdf = _stats().norm.cdf(a), _stats().norm.pdf(a)
    first = mean * cdf + sd * pdf
    second = (mean**2 + sd**2) * cdf + mean * sd * pdf
    return first, np.maximum(second - first**2, 0.0)


def _negative_binomial_log_moments(eta: np.ndarray, dispersion: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact E and Var of ln(y+1), y ~ NegBin(e^η, α), by summing the pmf on a grid of η, interpolated.

    Far in the bulk of a wide distribution the pmf is summed every ``step`` counts (≥ 100 points per
    standard deviation, where both the pmf and ln(y+1) are smooth), which keeps large means cheap.
    """
    lo, hi = float(eta.min()), float(eta.max())
    nodes = np.linspace(lo, hi, _NB_GRID_POINTS) if hi > lo else np.array([lo])
    n = 1.0 / dispersion
    means, variances = np.empty_like(nodes), np.empty_like(nodes)
    for i, node in enumerate(nodes):
        mean = math.exp(float(node))
        p = n / (n + mean)
        top = int(_stats().nbinom.ppf(1.0 - 1e-12, n, p))
        step = max(1, int(np.sqrt(mean + dispersion * mean**2) / 100))
        k = np.arange(0, top + step, step, dtype=np.float64)
        log_pmf = gammaln(k + n) - gammaln(n) - gammaln(k + 1) + n * math.log(p) + k * math.log1p(-p)
        pmf = libm.exp(log_pmf - log_pmf.max())
        pmf /= pmf.sum()
        log_y = libm.log1p(k)
        means[i] = pmf @ log_y
        variances[i] = pmf @ (log_y - means[i]) ** 2
    if len(nodes) == 1:
        return np.full_like(eta, means[0]), np.full_like(eta, variances[0])
    return np.interp(eta, nodes, means), np.interp(eta, nodes, variances)


def conditional_log_moments(model: IndicatorModel, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """E[ln(y+1) | latents] and Var[ln(y+1) | latents] per region (exact for both noise models)."""
    if model.noise == "lognormal":
        return _censored_normal_moments(eta, model.noise_sd)
    return _negative_binomial_log_moments(eta, model.dispersion)


def _poi_total_log_moments(latents: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """E and Var of ln(total POI + 1) per region by Monte Carlo with a fixed seed."""
    rng = np.random.default_rng([seed, _MONTE_CARLO_STREAM, _task_key("poi_counts")])
    log_total = libm.log1p(sample_poi_counts(latents, rng, replicas=_MONTE_CARLO_REPLICAS).sum(axis=2))
    return log_total.mean(axis=0), log_total.var(axis=0, ddof=1)


def _task_key(name: str) -> int:
    """A stable per-task stream key (Python's hash() is salted per process)."""
    return zlib.crc32(name.encode("utf-8"))


def label_mask(spec: CitySpec, task: TaskSpec, latents: np.ndarray) -> np.ndarray:
    """Which regions carry a label: exactly round(share·n), sparser in thin and watery regions."""
    n = latents.shape[0]
    k = int(round(spec.labelled_share(task.name) * n))
    rng = np.random.default_rng([twin_params(spec).seed, _MISSING_STREAM, _task_key(task.name)])
    score = rng.gumbel(size=n)
    for name, weight in indicator_model(task).label_propensity.items():
        score += weight * _column(latents, name)
    mask = np.zeros(n, dtype=bool)
    mask[np.argsort(-score, kind="stable")[:k]] = True
    return mask


@dataclass(frozen=True)
class TwinTables:
    """Everything of a twin below the images; region rows align with ``city_cells(spec)``."""

    indicators: dict[str, np.ndarray]  # raw units ≥ 0, NaN = missing label
    conditional_log_mean: dict[str, np.ndarray]  # E[ln(y+1) | latents]: the oracle's prediction
    conditional_log_variance: dict[str, np.ndarray]  # Var[ln(y+1) | latents]: the irreducible noise
    poi_counts: np.ndarray  # (n_regions, 14) int64, columns = poi_categories
    mobility: tuple[np.ndarray, np.ndarray, np.ndarray] | None  # (origin, destination, trips) or None
    poi_categories: tuple[str, ...] = POI_CATEGORIES


def simulate_twin_tables(
    spec: CitySpec, tasks: Sequence[TaskSpec], latents: np.ndarray, cells: np.ndarray
) -> TwinTables:
    """Indicators, their conditional moments, POI counts and (where the city has them) mobility flows.

    Deterministic in (the ``[twin]`` seed, task name); the order of ``tasks`` does not matter.
    """
    if latents.shape != (len(cells), len(LATENT_NAMES)):
        raise ValueError(f"latents of shape {latents.shape} do not match {len(cells)} cells")
    where = spec.source_file or spec.name
    params = twin_params(spec)
    seed = params.seed
    poi_counts = simulate_poi_counts(latents, seed)
    indicators: dict[str, np.ndarray] = {}
    log_means: dict[str, np.ndarray] = {}
    log_variances: dict[str, np.ndarray] = {}
    for task in tasks:
        model = indicator_model(task)
        if task.derived_from_aux == "poi_counts":
            if model.weights or model.interactions:
                raise SpecError(
                    f"{task.source_file or task.name}: [twin] weights/interactions are ignored for a task "
                    "derived from poi_counts (its label is the POI total); remove them"
                )
            values = poi_counts.sum(axis=1).astype(np.float64)
            log_means[task.name], log_variances[task.name] = _poi_total_log_moments(latents, seed)
        elif task.derived_from_aux:
            raise SpecError(
                f"{where}: task '{task.name}' is derived from '{task.derived_from_aux}', which a twin "
                "cannot turn into a label; only 'poi_counts' is supported"
            )
        else:
            eta = linear_predictor(model, latents)
            rng = np.random.default_rng([seed, _NOISE_STREAM, _task_key(task.name)])
            values = sample_indicator(model, eta, rng)
            log_means[task.name], log_variances[task.name] = conditional_log_moments(model, eta)
        values = np.where(label_mask(spec, task, latents), values, np.nan)
        indicators[task.name] = values
    mobility = None
    if "mobility" in spec.aux:
        mobility = simulate_mobility(
            latents, cells, seed, params.mobility_decay, params.mobility_trips_per_region
        )
    return TwinTables(
        indicators=indicators,
        conditional_log_mean=log_means,
        conditional_log_variance=log_variances,
        poi_counts=poi_counts,
        mobility=mobility,
    )


def analytic_ceiling(log_target: np.ndarray, conditional_log_variance: np.ndarray) -> float:
    """The oracle R² (docs/twins.md): 1 − mean Var(ln(y+1) | latents) / Var(ln(y+1))."""
    log_target = np.asarray(log_target, dtype=np.float64)
    total = float(np.var(log_target))
    if total == 0:
        raise ValueError("the target has no variance; the ceiling is undefined")
    return 1.0 - float(np.mean(conditional_log_variance)) / total


def cell_ceiling(tables: TwinTables, task: str) -> float:
    """The analytic ceiling of one task over its labelled regions."""
    values = tables.indicators[task]
    labelled = ~np.isnan(values)
    return analytic_ceiling(libm.log1p(values[labelled]), tables.conditional_log_variance[task][labelled])
