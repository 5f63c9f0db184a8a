"""The paper's reported numbers: loading, recomputed Improvement rows, rendering, self-consistency.

Expected percentages below are computed by hand from results.csv (shown in each comment), not by
the code under test.
"""

from __future__ import annotations

import json
import random
import tomllib
from importlib import resources
from types import MappingProxyType

import pytest

from urbanln_bench.errors import UserError
from urbanln_bench.reference.paper import (
    MISSING,
    Improvement,
    PaperTable,
    dataset_stats,
    improvement_rows,
    inconsistencies,
    mu_sweep,
    paper_cities,
    paper_results,
    paper_table,
    paper_table_records,
    render_paper_table_markdown,
)

VARIANTS = {"UrbanLN+SV", "UrbanLN+SI"}


def _improvement(city: str, task: str, variant: str, metric: str) -> Improvement:
    rows = [
        r
        for r in improvement_rows(paper_table(city))
        if (r.task, r.variant, r.metric) == (task, variant, metric)
    ]
    assert len(rows) == 1, rows
    return rows[0]


def _table(values: dict[tuple[str, str, str], float | None], models: tuple[str, ...]) -> PaperTable:
    """A small hand-made table (one task) for edge cases the paper does not contain."""
    tasks = tuple(dict.fromkeys(t for _, t, _ in values))
    metrics = tuple(dict.fromkeys(k for _, _, k in values))
    return PaperTable("XX", "T0", models, tasks, metrics, MappingProxyType(values))


# ------------------------------------------------------------------------------------- loading


def test_results_cover_every_table_and_keep_floats() -> None:
    rows = paper_results()
    assert {r.table for r in rows} == {"T1", "T2", "T3", "T6", "T7", "T8"}
    assert len(rows) == 472
    first = rows[0]
    assert (first.table, first.city, first.task, first.model, first.metric, first.value) == (
        "T1",
        "BJ",
        "Pop",
        "ResNet-18",
        "R2",
        0.323,
    )


def test_data_files_are_package_resources() -> None:
    # What a non-editable install relies on: the CSVs sit inside the package.
    folder = resources.files("urbanln_bench.reference").joinpath("paper")
    for name in ("results.csv", "mu_sweep.csv", "dataset_stats.csv"):
        assert folder.joinpath(name).is_file(), name


def test_main_tables_keep_csv_order_and_shape() -> None:
    assert paper_cities() == ("BJ", "SH", "SZ", "NY")
    bj = paper_table("BJ")
    assert bj.table == "T1"
    assert bj.tasks == ("Pop", "GDP", "Night", "Com", "CO2")
    assert bj.metrics == ("R2", "RMSE", "MAE")
    assert bj.variants == ("UrbanLN+SV", "UrbanLN+SI")
    assert "MuseCL" not in bj.models
    ny = paper_table("NY")
    assert ny.table == "T8"
    assert ny.tasks == ("Pop", "Crime", "POI")
    assert ny.baselines == (
        "ResNet-18",
        "Tile2Vec",
        "PG-SimCLR",
        "RemoteCLIP",
        "UrbanCLIP",
        "MuseCL",
        "UrbanVLP",
    )
    assert (paper_table("SH").table, paper_table("SZ").table) == ("T6", "T7")
    assert paper_table("SH").tasks == ("Pop", "GDP", "Night", "CO2")


def test_missing_cell_is_none() -> None:
    ny = paper_table("NY")
    for metric in ("R2", "RMSE", "MAE"):
        assert ny.value("PG-SimCLR", "POI", metric) is None
    assert ny.value("PG-SimCLR", "Crime", "R2") == 0.196


def test_unknown_city_says_did_you_mean() -> None:
    with pytest.raises(ValueError, match=r"did you mean 'NY'") as caught:
        paper_table("NYC")
    assert isinstance(caught.value, UserError)
    with pytest.raises(ValueError, match=r"did you mean 'BJ'"):
        paper_table("bj")
    with pytest.raises(ValueError, match="known: BJ, SH, SZ, NY"):
        paper_table_records("London")


# ---------------------------------------------------------------------------------- improvement


@pytest.mark.parametrize(
    ("city", "task", "variant", "metric", "percent", "best"),
    [
        # (0.705 − 0.619) / 0.619 = 0.13893 → 13.9
        ("BJ", "Pop", "UrbanLN+SV", "R2", 13.9, "UrbanVLP"),
        # (0.728 − 0.686) / 0.728 = 0.05769 → 5.8
        ("BJ", "Pop", "UrbanLN+SV", "RMSE", 5.8, "UrbanVLP"),
        # min MAE is PG-SimCLR's 0.452, not the last baseline: (0.452 − 0.383) / 0.452 = 0.15265 → 15.3
        ("BJ", "CO2", "UrbanLN+SI", "MAE", 15.3, "PG-SimCLR"),
        # (0.718 − 0.637) / 0.637 = 0.12716 → 12.7
        ("SH", "CO2", "UrbanLN+SI", "R2", 12.7, "UrbanVLP"),
        # PG-SimCLR has no POI value and is skipped: (0.650 − 0.583) / 0.583 = 0.11492 → 11.5
        ("NY", "POI", "UrbanLN+SV", "R2", 11.5, "UrbanVLP"),
        # a loss: (0.701 − 0.767) / 0.701 = −0.09415 → −9.4
        ("NY", "POI", "UrbanLN+SI", "MAE", -9.4, "MuseCL"),
        # (0.323 − 0.467) / 0.467 = −0.30835 → −30.8
        ("NY", "Crime", "UrbanLN+SI", "R2", -30.8, "UrbanVLP"),
        # (1.623 − 0.994) / 1.623 = 0.38755 → 38.8
        ("NY", "Pop", "UrbanLN+SV", "RMSE", 38.8, "UrbanVLP"),
    ],
)
def test_hand_computed_improvements(
    city: str, task: str, variant: str, metric: str, percent: float, best: str
) -> None:
    row = _improvement(city, task, variant, metric)
    assert row.percent == percent
    assert row.best_baseline == best


def test_every_city_has_both_variants_for_every_cell() -> None:
    for city in paper_cities():
        table = paper_table(city)
        rows = improvement_rows(table)
        assert {r.variant for r in rows} == VARIANTS
        assert len(rows) == len(VARIANTS) * len(table.tasks) * 3
        assert all(r.best_baseline in table.baselines for r in rows)
        assert all(r.city == city for r in rows)


def test_missing_baseline_is_never_chosen() -> None:
    ny_poi = [r for r in improvement_rows(paper_table("NY")) if r.task == "POI"]
    assert len(ny_poi) == 6
    assert "PG-SimCLR" not in {r.best_baseline for r in ny_poi}


def test_missing_baseline_is_skipped_not_zero() -> None:
    # Treated as 0, the missing RMSE would be the "best" (lowest) baseline.
    table = _table(
        {
            ("A", "Pop", "RMSE"): None,
            ("B", "Pop", "RMSE"): 1.0,
            ("UrbanLN+SV", "Pop", "RMSE"): 0.9,
            ("A", "Crime", "RMSE"): None,
            ("B", "Crime", "RMSE"): None,
            ("UrbanLN+SV", "Crime", "RMSE"): 0.9,
        },
        ("A", "B", "UrbanLN+SV"),
    )
    rows = improvement_rows(table)
    assert [(r.task, r.percent, r.best_baseline) for r in rows] == [("Pop", 10.0, "B")]


def test_rounding_is_half_away_from_zero_on_exact_decimals() -> None:
    # 0.049 / 0.4 = 12.25% exactly; float arithmetic gives 12.2499… and would round to 12.2.
    table = _table(
        {
            ("B", "Pop", "R2"): 0.4,
            ("UrbanLN+SV", "Pop", "R2"): 0.449,
            ("UrbanLN+SI", "Pop", "R2"): 0.351,
            ("B", "Pop", "RMSE"): 0.4,
            ("UrbanLN+SV", "Pop", "RMSE"): 0.351,
            ("UrbanLN+SI", "Pop", "RMSE"): 0.449,
        },
        ("B", "UrbanLN+SV", "UrbanLN+SI"),
    )
    got = {(r.variant, r.metric): r.percent for r in improvement_rows(table)}
    assert got == {
        ("UrbanLN+SV", "R2"): 12.3,
        ("UrbanLN+SV", "RMSE"): 12.3,
        ("UrbanLN+SI", "R2"): -12.3,
        ("UrbanLN+SI", "RMSE"): -12.3,
    }


def test_tie_goes_to_first_listed_baseline() -> None:
    table = _table(
        {("A", "Pop", "MAE"): 0.5, ("B", "Pop", "MAE"): 0.5, ("UrbanLN+SV", "Pop", "MAE"): 0.4},
        ("A", "B", "UrbanLN+SV"),
    )
    assert improvement_rows(table)[0].best_baseline == "A"


# ------------------------------------------------------------------------------------ rendering


def test_json_records_have_exactly_the_documented_keys() -> None:
    records = paper_table_records("NY")
    assert len(records) == 18
    for record in records:
        assert set(record) == {"city", "task", "variant", "metric", "percent"}
        assert isinstance(record["percent"], float)
    assert json.loads(json.dumps(records)) == records
    assert {"city": "NY", "task": "POI", "variant": "UrbanLN+SV", "metric": "R2", "percent": 11.5} in records


def test_markdown_rows_and_missing_cells() -> None:
    table = paper_table("NY")
    text = render_paper_table_markdown(table, improvement_rows(table))
    lines = text.splitlines()
    assert lines[2] == (
        "| Method | Pop R² | Pop RMSE | Pop MAE | Crime R² | Crime RMSE | Crime MAE"
        " | POI R² | POI RMSE | POI MAE |"
    )
    assert "| PG-SimCLR | 0.375 | 1.942 | 1.324 | 0.196 | 1.337 | 1.158 | — | — | — |" in lines
    assert "| ResNet-18 | -0.079 | 2.154 | 1.528 | 0.050 | 1.520 | 1.280 | 0.160 | 1.217 | 0.870 |" in lines
    assert (
        "| Improvement (UrbanLN+SV) | 26.6% | 38.8% | 25.4% | 54.8% | 26.7% | 27.4% | 11.5% | 6.5% | 4.3% |"
        in lines
    )
    assert sum(line.startswith("| Improvement (") for line in lines) == 2
    assert text.count(MISSING) == 3


def test_markdown_is_deterministic() -> None:
    table = paper_table("BJ")
    rows = improvement_rows(table)
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    assert shuffled != rows
    first = render_paper_table_markdown(table, rows)
    assert render_paper_table_markdown(paper_table("BJ"), improvement_rows(paper_table("BJ"))) == first
    assert render_paper_table_markdown(table, shuffled) == first


def test_markdown_shows_missing_improvement_as_dash() -> None:
    table = paper_table("SZ")
    text = render_paper_table_markdown(table, [])
    improvement_lines = [line for line in text.splitlines() if line.startswith("| Improvement (")]
    assert len(improvement_lines) == 2
    assert all(line.count(MISSING) == len(table.tasks) * 3 for line in improvement_lines)


# -------------------------------------------------------------------------- Tables 4, 5 and checks


def test_known_inconsistency_is_reported() -> None:
    found = inconsistencies()
    assert len(found) == 1, found
    message = found[0]
    for fragment in ("Table 3", "Table 8", "Tile2Vec", "NY", "Crime", "0.135", "0.035"):
        assert fragment in message
    assert paper_table("NY").value("Tile2Vec", "Crime", "R2") == 0.035


def test_mu_sweep_default_row_matches_main_tables() -> None:
    points = mu_sweep()
    assert len(points) == 32
    assert sorted({p.mu for p in points}) == [0.3, 0.4, 0.5, 0.6]
    bj_sv = {p.mu: p.pop_r2 for p in points if (p.imagery, p.city) == ("street-view", "BJ")}
    assert bj_sv == {0.3: 0.687, 0.4: 0.697, 0.5: 0.705, 0.6: 0.692}
    assert bj_sv[0.5] == paper_table("BJ").value("UrbanLN+SV", "Pop", "R2")


def test_dataset_stats_match_tables_and_city_files() -> None:
    stats = dataset_stats()
    assert list(stats) == ["BJ", "SH", "SZ", "NY"]
    ny = stats["NY"]
    assert (ny.regions, ny.street_views, ny.satellite_images) == (517, 44617, 517)
    assert dict(ny.labelled) == {"Pop": 506, "Crime": 422, "POI": 516}
    cities = resources.files("urbanln_bench.builtin.cities")
    for city, row in stats.items():
        assert tuple(row.labelled) == paper_table(city).tasks
        spec = tomllib.loads(cities.joinpath(f"{city}.toml").read_text(encoding="utf-8"))["paper"]
        assert (spec["regions"], spec["street_views"], spec["satellite_images"]) == (
            row.regions,
            row.street_views,
            row.satellite_images,
        )
        assert spec["labelled"] == dict(row.labelled)
