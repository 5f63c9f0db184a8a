"""The twin's generative model below the images: latent fields, indicators, aux modalities, ceiling."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from urbanln_bench.errors import SpecError
from urbanln_bench.specs import get_city, get_task, load_task_file, pretraining_world
from urbanln_bench.synth.auxiliary import POI_CATEGORIES, sample_poi_counts
from urbanln_bench.synth.fields import city_cells, generate_latents, twin_params
from urbanln_bench.synth.indicators import (
    IndicatorModel,
    analytic_ceiling,
    cell_ceiling,
    conditional_log_moments,
    indicator_model,
    linear_predictor,
    sample_indicator,
    simulate_twin_tables,
)
from urbanln_bench.synth.latents import LATENT_NAMES
from urbanln_bench.synth.twin import with_seed

BENCHMARK_CITIES = ("NY", "BJ", "SH", "SZ")


def _twin(spec):
    cells = city_cells(spec)
    latents = generate_latents(spec)
    tables = simulate_twin_tables(spec, [get_task(t) for t in spec.tasks], latents, cells)
    return cells, latents, tables


@pytest.fixture(scope="module")
def twins():
    return {name: (get_city(name), *_twin(get_city(name))) for name in BENCHMARK_CITIES}


def _column(latents: np.ndarray, name: str) -> np.ndarray:
    return latents[:, LATENT_NAMES.index(name)]


def test_same_spec_gives_byte_identical_twin():
    spec = get_city("NY")
    first, second = _twin(spec), _twin(get_city("NY"))
    for a, b in zip(first[:2], second[:2], strict=True):
        assert a.tobytes() == b.tobytes()
    t1, t2 = first[2], second[2]
    for task in spec.tasks:
        assert t1.indicators[task].tobytes() == t2.indicators[task].tobytes()
        assert t1.conditional_log_variance[task].tobytes() == t2.conditional_log_variance[task].tobytes()
    assert t1.poi_counts.tobytes() == t2.poi_counts.tobytes()
    assert all(a.tobytes() == b.tobytes() for a, b in zip(t1.mobility, t2.mobility, strict=True))


def test_another_seed_gives_another_twin():
    spec = get_city("BJ")
    other = with_seed(spec, twin_params(spec).seed + 1)
    assert not np.array_equal(generate_latents(spec), generate_latents(other))
    tasks = [get_task(t) for t in spec.tasks]
    a = simulate_twin_tables(spec, tasks, generate_latents(spec), city_cells(spec))
    b = simulate_twin_tables(other, tasks, generate_latents(spec), city_cells(spec))
    assert not np.array_equal(a.indicators["Pop"], b.indicators["Pop"], equal_nan=True)


def test_task_order_does_not_change_the_tables():
    spec = get_city("SZ")
    cells, latents = city_cells(spec), generate_latents(spec)
    tasks = [get_task(t) for t in spec.tasks]
    forward = simulate_twin_tables(spec, tasks, latents, cells)
    backward = simulate_twin_tables(spec, tasks[::-1], latents, cells)
    for task in spec.tasks:
        np.testing.assert_array_equal(forward.indicators[task], backward.indicators[task])


@pytest.mark.parametrize("name", BENCHMARK_CITIES)
def test_region_count_is_the_papers_and_cells_are_row_major_on_the_grid(name):
    spec = get_city(name)
    cells = city_cells(spec)
    assert cells.shape == (spec.paper.regions, 2)
    assert cells.dtype.kind == "i"
    assert (cells[:, 0] >= 0).all() and (cells[:, 0] < spec.geo.rows).all()
    assert (cells[:, 1] >= 0).all() and (cells[:, 1] < spec.geo.cols).all()
    flat = cells[:, 0] * spec.geo.cols + cells[:, 1]
    assert (np.diff(flat) > 0).all()  # unique and row-major


def test_scaled_down_twin_keeps_the_exact_count():
    spec = dataclasses.replace(get_city("BJ"), regions=300)
    assert city_cells(spec).shape == (300, 2)
    assert generate_latents(spec).shape == (300, len(LATENT_NAMES))


def test_pretraining_world_cities_have_their_own_layouts():
    specs = pretraining_world()
    layouts = [frozenset(map(tuple, city_cells(spec))) for spec in specs]
    for spec, layout in zip(specs, layouts, strict=True):
        assert len(layout) == spec.n_regions
    assert len(set(layouts)) == len(layouts)
    densities = [_column(generate_latents(spec), "density") for spec in specs]
    assert not np.allclose(densities[0], densities[1])


def test_a_coast_that_leaves_too_little_land_is_a_clear_error():
    spec = get_city("SZ")
    flooded = dataclasses.replace(spec, twin={**spec.twin, "coast": {**spec.twin["coast"], "extent": 0.9}})
    with pytest.raises(SpecError, match="land cells"):
        city_cells(flooded)


@pytest.mark.parametrize("name", BENCHMARK_CITIES)
def test_latents_are_in_unit_interval(name, twins):
    spec, cells, latents, _ = twins[name]
    assert latents.shape == (spec.n_regions, len(LATENT_NAMES))
    assert latents.dtype == np.float64
    assert np.isfinite(latents).all()
    assert latents.min() >= 0.0 and latents.max() <= 1.0


def _neighbour_pairs(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    index = {(int(r), int(c)): i for i, (r, c) in enumerate(cells)}
    pairs = [(i, index[(r, c + 1)]) for (r, c), i in index.items() if (r, c + 1) in index]
    pairs += [(i, index[(r + 1, c)]) for (r, c), i in index.items() if (r + 1, c) in index]
    a, b = np.array(pairs).T
    return a, b


@pytest.mark.parametrize("name", BENCHMARK_CITIES)
def test_neighbouring_regions_are_alike(name, twins):
    """Tile2Vec's premise: adjacent regions correlate clearly more than shuffled ones."""
    _, cells, latents, _ = twins[name]
    a, b = _neighbour_pairs(cells)
    shuffled = np.random.default_rng(0).permutation(len(cells))
    for k, latent in enumerate(LATENT_NAMES):
        if latents[:, k].std() < 1e-3:
            continue
        near = np.corrcoef(latents[a, k], latents[b, k])[0, 1]
        far = np.corrcoef(latents[a, k], latents[shuffled[b], k])[0, 1]
        assert near > 0.4, (latent, near)
        assert near > far + 0.3, (latent, near, far)


@pytest.mark.parametrize("name", BENCHMARK_CITIES)
def test_latents_are_correlated_the_way_cities_are(name, twins):
    _, _, latents, _ = twins[name]

    def corr(x: str, y: str) -> float:
        return float(np.corrcoef(_column(latents, x), _column(latents, y))[0, 1])

    assert corr("density", "greenery") < -0.2
    assert corr("density", "building_height") > 0.5
    assert corr("commercial", "building_height") > 0.3
    assert corr("commercial", "nightlife") > 0.4
    assert corr("affluence", "nightlife") > 0.2
    assert corr("industrial", "commercial") < 0
    assert corr("affluence", "deprivation") < -0.3
    # partly independent: neither affluence nor deprivation is a function of density
    assert abs(corr("density", "affluence")) < 0.6
    assert abs(corr("affluence", "deprivation")) < 0.85


def test_cities_differ_in_form(twins):
    means = {name: twins[name][2].mean(axis=0) for name in BENCHMARK_CITIES}
    water = {name: _column(twins[name][2], "water").mean() for name in BENCHMARK_CITIES}
    assert water["NY"] > water["BJ"]  # a city of rivers and bays vs an inland one
    assert not np.allclose(means["SH"], means["SZ"], atol=0.01)


@pytest.mark.parametrize("name", BENCHMARK_CITIES)
def test_labelled_counts_match_paper_table5(name, twins):
    spec, _, _, tables = twins[name]
    assert set(tables.indicators) == set(spec.tasks)
    for task, count in spec.paper.labelled.items():
        assert int((~np.isnan(tables.indicators[task])).sum()) == count


@pytest.mark.parametrize("name", BENCHMARK_CITIES)
def test_missing_labels_are_mildly_structured(name, twins):
    """Labels are thinner in sparse regions, yet labelled regions still span the whole city."""
    spec, _, latents, tables = twins[name]
    density = _column(latents, "density")
    for task in spec.tasks:
        labelled = ~np.isnan(tables.indicators[task])
        if labelled.all():
            continue
        assert density[labelled].mean() > density[~labelled].mean()
        assert density[labelled].min() < np.quantile(density, 0.05)


@pytest.mark.parametrize("name", BENCHMARK_CITIES)
def test_indicators_are_nonnegative_and_finite_where_labelled(name, twins):
    spec, _, _, tables = twins[name]
    for task in spec.tasks:
        values = tables.indicators[task]
        labelled = values[~np.isnan(values)]
        assert np.isfinite(labelled).all() and (labelled >= 0).all()
        assert np.isfinite(tables.conditional_log_variance[task]).all()
        assert (tables.conditional_log_variance[task] >= 0).all()


def test_poi_label_is_the_total_of_poi_counts(twins):
    spec, _, _, tables = twins["NY"]
    assert get_task("POI").derived_from_aux == "poi_counts"
    assert tables.poi_counts.shape == (spec.n_regions, 14) == (spec.n_regions, len(POI_CATEGORIES))
    assert tables.poi_counts.dtype == np.int64 and (tables.poi_counts >= 0).all()
    poi = tables.indicators["POI"]
    labelled = ~np.isnan(poi)
    np.testing.assert_array_equal(poi[labelled], tables.poi_counts[labelled].sum(axis=1))


def test_mobility_only_for_new_york(twins):
    for name in BENCHMARK_CITIES:
        spec, _, _, tables = twins[name]
        assert (tables.mobility is not None) == ("mobility" in spec.aux) == (name == "NY")
    spec, cells, latents, tables = twins["NY"]
    origin, destination, trips = tables.mobility
    assert len(origin) == len(destination) == len(trips) > 0
    assert origin.min() >= 0 and max(origin.max(), destination.max()) < spec.n_regions
    assert (origin != destination).all() and (trips > 0).all() and trips.dtype.kind == "i"
    # gravity: trips fall off with distance
    distance = np.hypot(*(cells[origin] - cells[destination]).T)
    assert trips[distance <= 2].mean() > trips[distance >= 8].mean()


def test_ceiling_formula_on_a_hand_case():
    log_target = np.array([0.0, 1.0, 2.0, 3.0])  # variance 1.25
    assert analytic_ceiling(log_target, np.full(4, 0.25)) == pytest.approx(0.8)
    assert analytic_ceiling(log_target, np.zeros(4)) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        analytic_ceiling(np.ones(3), np.zeros(3))


@pytest.mark.parametrize(
    "model",
    [
        IndicatorModel(intercept=0.2, weights={"density": 3.0}, noise="lognormal", noise_sd=0.7),
        IndicatorModel(intercept=0.0, weights={"density": 6.0}, noise="negative_binomial", dispersion=0.6),
    ],
    ids=["lognormal-censored", "negative-binomial"],
)
def test_conditional_moments_agree_with_simulated_replicas(model):
    """Var(ln(y+1) | latents) from the model matches many redraws of the noise for fixed latents."""
    latents = np.zeros((12, len(LATENT_NAMES)))
    latents[:, LATENT_NAMES.index("density")] = np.linspace(0.0, 1.0, 12)
    eta = linear_predictor(model, latents)
    mean, variance = conditional_log_moments(model, eta)
    replicas = np.log1p(sample_indicator(model, eta, np.random.default_rng(7), replicas=40_000))
    np.testing.assert_allclose(mean, replicas.mean(axis=0), atol=0.02)
    np.testing.assert_allclose(variance, replicas.var(axis=0), rtol=0.06, atol=0.005)


def test_poi_monte_carlo_variance_agrees_with_independent_replicas(twins):
    _, _, latents, tables = twins["NY"]
    rows = np.arange(0, latents.shape[0], 25)
    replicas = np.log1p(
        sample_poi_counts(latents[rows], np.random.default_rng(99), replicas=8_000).sum(axis=2)
    )
    model_var = tables.conditional_log_variance["POI"][rows]
    np.testing.assert_allclose(model_var, replicas.var(axis=0), rtol=0.35)
    assert model_var.mean() == pytest.approx(replicas.var(axis=0).mean(), rel=0.06)


@pytest.mark.parametrize("name", BENCHMARK_CITIES)
def test_oracle_reaches_the_ceiling_and_ceilings_are_informative(name, twins):
    """The true conditional mean explains what the ceiling says; no cell is trivial or hopeless."""
    spec, _, _, tables = twins[name]
    for task in spec.tasks:
        values = tables.indicators[task]
        labelled = ~np.isnan(values)
        log_target = np.log1p(values[labelled])
        residual = log_target - tables.conditional_log_mean[task][labelled]
        oracle_r2 = 1.0 - residual.var() / log_target.var()
        ceiling = cell_ceiling(tables, task)
        assert 0.55 < ceiling < 0.97, (task, ceiling)
        assert oracle_r2 == pytest.approx(ceiling, abs=0.05), task


def test_some_indicator_depends_on_latents_images_cannot_show():
    invisible = {"affluence", "nightlife", "deprivation"}
    for task in ("GDP", "Com", "Crime"):
        assert invisible & set(indicator_model(get_task(task)).weights)
    assert indicator_model(get_task("Crime")).weights["deprivation"] > 1.0


def test_task_file_with_unknown_latent_names_the_file(tmp_path: Path):
    text = Path(get_task("Pop").source_file).read_text().replace("residential = 2.0", "residentail = 2.0")
    bad = tmp_path / "Pop.toml"
    bad.write_text(text)
    task = load_task_file(bad)  # the catalogue does not read [twin]; the twin does, before it renders
    with pytest.raises(SpecError, match=r"Pop\.toml\.twin.*residentail.*did you mean 'residential'"):
        indicator_model(task)
