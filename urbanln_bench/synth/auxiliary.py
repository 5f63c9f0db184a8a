"""Auxiliary modalities of a twin: POI category counts and mobility flows (docs/twins.md, §6).

Some baselines train on them (PG-SimCLR on POI counts, mobility-based pair sampling on flows), and
the POI task's label is the total of the POI counts, so they are simulated from the same latents
as everything else. Both are pure functions of the latents and an explicit seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from urbanln_bench.synth import libm
from urbanln_bench.synth.latents import LATENT_NAMES

# Fixed sub-stream constants (see synth.fields for the others); the module is not named `aux`, a reserved file name on Windows.
POI_STREAM = 201
MOBILITY_STREAM = 202


@dataclass(frozen=True)
class PoiCategory:
    """One first-level POI category: count ~ NegBin(mean = exp(intercept + Σ weight·latent), dispersion).

    ``dispersion`` is α in Var = mean + α·mean² (α → 0 is Poisson).
    """

    name: str
    intercept: float
    weights: tuple[tuple[str, float], ...]
    dispersion: float = 0.4

    def log_mean(self, latents: np.ndarray) -> np.ndarray:
        eta = np.full(latents.shape[0], self.intercept)
        for latent, weight in self.weights:
            eta = eta + weight * latents[:, LATENT_NAMES.index(latent)]
        return eta


# The 14 first-level categories of Chinese/NYC POI catalogues, each driven by the land use that
# hosts it: food and shops follow commerce and density, entertainment follows nightlife, finance
# follows tall commercial cores, auto service and companies the industrial fringe, tourism and sports
# green and water. Counts are per ~1 km² region.
POI_MODEL: tuple[PoiCategory, ...] = (
    PoiCategory("food", 1.6, (("commercial", 2.0), ("density", 1.8), ("nightlife", 1.0))),
    PoiCategory("shopping", 1.4, (("commercial", 2.5), ("density", 1.5))),
    PoiCategory("lodging", -0.4, (("commercial", 1.5), ("nightlife", 1.0), ("building_height", 1.0))),
    PoiCategory("entertainment", -0.5, (("nightlife", 2.5), ("commercial", 1.0), ("density", 0.5))),
    PoiCategory("education", 0.0, (("residential", 1.5), ("density", 1.2), ("affluence", 0.5))),
    PoiCategory("healthcare", 0.0, (("density", 1.6), ("residential", 0.8))),
    PoiCategory("finance", -1.2, (("commercial", 2.0), ("building_height", 1.5), ("affluence", 0.8))),
    PoiCategory("company", 0.2, (("commercial", 1.5), ("industrial", 1.5), ("building_height", 1.0))),
    PoiCategory("transport", 0.0, (("road_density", 2.0), ("density", 0.8))),
    PoiCategory("government", -1.2, (("density", 1.2), ("commercial", 0.5))),
    PoiCategory("residence", 0.4, (("residential", 2.5), ("density", 1.2))),
    PoiCategory("tourism", -1.8, (("water", 1.0), ("greenery", 1.5), ("affluence", 0.5))),
    PoiCategory("sports", -1.2, (("greenery", 1.2), ("residential", 0.5), ("affluence", 0.5))),
    PoiCategory("auto service", -0.6, (("industrial", 1.8), ("road_density", 1.0), ("density", 0.3))),
)
POI_CATEGORIES: tuple[str, ...] = tuple(category.name for category in POI_MODEL)


def negative_binomial(rng: np.random.Generator, mean: np.ndarray, dispersion: float, size=None) -> np.ndarray:
    """Counts with the given mean and Var = mean + dispersion·mean² (gamma–Poisson mixture)."""
    n = 1.0 / dispersion
    return rng.negative_binomial(n, n / (n + mean), size=size)


def poi_log_means(latents: np.ndarray) -> np.ndarray:
    """ln of the expected count per region and category, shape (n_regions, 14)."""
    return np.stack([category.log_mean(latents) for category in POI_MODEL], axis=1)


def sample_poi_counts(
    latents: np.ndarray, rng: np.random.Generator, replicas: int | None = None
) -> np.ndarray:
    """POI counts, shape (n, 14) (or (replicas, n, 14)), int64."""
    means = libm.exp(poi_log_means(latents))
    dispersion = np.array([category.dispersion for category in POI_MODEL])
    n = 1.0 / dispersion
    size = means.shape if replicas is None else (replicas, *means.shape)
    return rng.negative_binomial(n, n / (n + means), size=size).astype(np.int64)


def simulate_poi_counts(latents: np.ndarray, seed: int) -> np.ndarray:
    """The twin's POI category counts, shape (n_regions, len(POI_CATEGORIES)), int64."""
    return sample_poi_counts(latents, np.random.default_rng([seed, POI_STREAM]))


def simulate_mobility(
    latents: np.ndarray, cells: np.ndarray, seed: int, decay_cells: float, trips_per_region: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Origin–destination flows from a production-constrained gravity model with Poisson noise.

    Origins emit trips in proportion to where people live (density × residential share);
    each origin's trips go to destination j in proportion to A_j·exp(−d_ij / decay), with
    attraction A_j = density × (commercial + 0.6·industrial + 0.1) (where people work and shop).
    Returns (origin index, destination index, trips) for the pairs with at least one trip,
    indices into the region rows; intra-region trips are left out.
    """
    idx = {name: LATENT_NAMES.index(name) for name in ("density", "residential", "commercial", "industrial")}
    density = latents[:, idx["density"]]
    production = density * (0.2 + latents[:, idx["residential"]])
    attraction = density * (latents[:, idx["commercial"]] + 0.6 * latents[:, idx["industrial"]] + 0.1)
    outflow = trips_per_region * len(latents) * production / production.sum()
    cells_f = cells.astype(np.float64)
    distance = np.hypot(cells_f[:, None, 0] - cells_f[None, :, 0], cells_f[:, None, 1] - cells_f[None, :, 1])
    weight = attraction[None, :] * libm.exp(-distance / decay_cells)
    np.fill_diagonal(weight, 0.0)
    expected = outflow[:, None] * weight / weight.sum(axis=1, keepdims=True)
    trips = np.random.default_rng([seed, MOBILITY_STREAM]).poisson(expected)
    origin, destination = np.nonzero(trips)
    return origin.astype(np.int64), destination.astype(np.int64), trips[origin, destination].astype(np.int64)
