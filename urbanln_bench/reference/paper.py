"""The UrbanLN paper's reported numbers (AAAI 2026), shipped as reference data.

The CSVs under ``urbanln_bench/reference/paper/`` are transcriptions of the paper: the main tables
(Table 1 BJ, 6 SH, 7 SZ, 8 NY: R²/RMSE/MAE per model and task), the R²-only repeats in Tables 2
(SH) and 3 (NY), the μ sweep of Table 4 and the dataset statistics of Table 5. They are read with
``importlib.resources`` so they load from an installed wheel as well as from a checkout.

The paper's "Improvement" rows are not shipped; :func:`improvement_rows` recomputes them from the
main tables, so a transcription error shows up as a disagreement with the printed paper.

Known inconsistency inside the paper: Table 3 gives Tile2Vec NY Crime R² = 0.135 while Table 8
gives 0.035. The main table (Table 8) is used everywhere, because 0.035 is the value consistent
with Tile2Vec's RMSE/MAE in the same row; :func:`inconsistencies` lists the disagreement.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from importlib import resources
from types import MappingProxyType

from urbanln_bench.errors import UserError
from urbanln_bench.registry import suggest

METRICS: tuple[str, ...] = ("R2", "RMSE", "MAE")
"""The paper's three regression metrics; R² is better when higher, RMSE and MAE when lower."""

HIGHER_IS_BETTER: Mapping[str, bool] = MappingProxyType({"R2": True, "RMSE": False, "MAE": False})

MAIN_TABLES: Mapping[str, str] = MappingProxyType({"BJ": "T1", "SH": "T6", "SZ": "T7", "NY": "T8"})
"""City → the paper table with its full R²/RMSE/MAE results (the one the harness trusts)."""

REPEAT_TABLES: Mapping[str, str] = MappingProxyType({"T2": "SH", "T3": "NY"})
"""Tables that repeat main-table R² values in the paper's body; checked by :func:`inconsistencies`."""

DEFAULT_MU = 0.5
"""The μ of the main tables: Table 4's μ = 0.5 row equals each variant's Pop R² there."""

MU_SWEEP_VARIANT: Mapping[str, str] = MappingProxyType(
    {"street-view": "UrbanLN+SV", "satellite": "UrbanLN+SI"}
)

MISSING = "—"
"""How a missing cell (a value the paper does not report) is rendered."""

_DATA_PACKAGE = "urbanln_bench.reference"
_DATA_FOLDER = "paper"

# Table 5's CSV columns for labelled-region counts → task names used everywhere else.
_LABELLED_COLUMNS: Mapping[str, str] = MappingProxyType(
    {
        "n_pop": "Pop",
        "n_gdp": "GDP",
        "n_night": "Night",
        "n_com": "Com",
        "n_co2": "CO2",
        "n_crime": "Crime",
        "n_poi": "POI",
    }
)


class UnknownPaperCityError(UserError, ValueError):
    """A city the paper reports no main table for (a ValueError, and a UserError for the CLI)."""


@dataclass(frozen=True)
class PaperResult:
    """One number as printed in the paper: ``table`` is "T1".."T8"."""

    table: str
    city: str
    task: str
    model: str
    metric: str
    value: float


@dataclass(frozen=True)
class PaperTable:
    """One city's main table: models × tasks × metrics, ``None`` where the paper has no value."""

    city: str
    table: str
    models: tuple[str, ...]
    tasks: tuple[str, ...]
    metrics: tuple[str, ...]
    values: Mapping[tuple[str, str, str], float | None] = field(hash=False)  # (model, task, metric)

    def value(self, model: str, task: str, metric: str) -> float | None:
        """The reported value, or ``None`` for a missing cell (e.g. PG-SimCLR on NY POI)."""
        return self.values.get((model, task, metric))

    @property
    def variants(self) -> tuple[str, ...]:
        """UrbanLN's own rows, in table order."""
        return tuple(m for m in self.models if is_urbanln_variant(m))

    @property
    def baselines(self) -> tuple[str, ...]:
        """Every other model: what the paper's Improvement rows compare against."""
        return tuple(m for m in self.models if not is_urbanln_variant(m))


@dataclass(frozen=True)
class Improvement:
    """An "Improvement" cell: a variant's relative gain over the best baseline, in percent."""

    city: str
    task: str
    variant: str
    metric: str
    percent: float
    best_baseline: str


@dataclass(frozen=True)
class MuSweepPoint:
    """A Table 4 cell: population R² of the variant trained on ``imagery`` with weight μ."""

    imagery: str  # "street-view" or "satellite"
    mu: float
    city: str
    pop_r2: float


@dataclass(frozen=True)
class DatasetStats:
    """A Table 5 row; ``labelled`` maps each of the city's tasks to its regions with a label."""

    city: str
    regions: int
    street_views: int
    satellite_images: int
    labelled: Mapping[str, int] = field(hash=False)


def is_urbanln_variant(model: str) -> bool:
    """True for "UrbanLN" and its imagery variants ("UrbanLN+SV", "UrbanLN+SI")."""
    return model == "UrbanLN" or model.startswith("UrbanLN+")


# ---------------------------------------------------------------------------------------- loading


def _read_csv(name: str, header: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """Rows of a shipped CSV with their line numbers; the header must match exactly."""
    path = resources.files(_DATA_PACKAGE).joinpath(_DATA_FOLDER, name)
    text = path.read_text(encoding="utf-8")
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != header:
        raise ValueError(
            f"{_DATA_FOLDER}/{name}: header is {reader.fieldnames}, expected {list(header)}; "
            "the shipped reference data is damaged, reinstall urbanln-bench"
        )
    return [(reader.line_num, row) for row in reader]


def _number(name: str, line: int, column: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(
            f"{_DATA_FOLDER}/{name}:{line}: column '{column}' is not a number: {text!r}"
        ) from None


@cache
def _results() -> tuple[PaperResult, ...]:
    name = "results.csv"
    rows: list[PaperResult] = []
    seen: set[tuple[str, str, str, str, str]] = set()
    for line, row in _read_csv(name, ("table", "city", "task", "model", "metric", "value")):
        if row["metric"] not in METRICS:
            raise ValueError(f"{_DATA_FOLDER}/{name}:{line}: unknown metric {row['metric']!r}")
        key = (row["table"], row["city"], row["task"], row["model"], row["metric"])
        if key in seen:
            raise ValueError(f"{_DATA_FOLDER}/{name}:{line}: duplicate row for {key}")
        seen.add(key)
        value = _number(name, line, "value", row["value"])
        rows.append(PaperResult(*key, value=value))
    return tuple(rows)


def paper_results() -> list[PaperResult]:
    """Every number of Tables 1, 2, 3, 6, 7 and 8, in the CSV's order (repeats included)."""
    return list(_results())


def paper_cities() -> tuple[str, ...]:
    """The cities with a main table, in the paper's order (BJ, SH, SZ, NY)."""
    return tuple(MAIN_TABLES)


def _check_city(city: str) -> None:
    if city not in MAIN_TABLES:
        known = list(MAIN_TABLES)
        raise UnknownPaperCityError(
            f"the paper has no results for city '{city}'{suggest(city, known)}; known: {', '.join(known)}"
        )


@cache
def _table(city: str) -> PaperTable:
    table_id = MAIN_TABLES[city]
    rows = [r for r in _results() if r.table == table_id]
    models = tuple(dict.fromkeys(r.model for r in rows))
    tasks = tuple(dict.fromkeys(r.task for r in rows))
    values: dict[tuple[str, str, str], float | None] = {
        (m, t, k): None for m in models for t in tasks for k in METRICS
    }
    for r in rows:
        values[(r.model, r.task, r.metric)] = r.value
    return PaperTable(city, table_id, models, tasks, METRICS, MappingProxyType(values))


def paper_table(city: str) -> PaperTable:
    """The main table of ``city`` (Table 1 BJ, 6 SH, 7 SZ, 8 NY); task order as in the CSV."""
    _check_city(city)
    return _table(city)


# ------------------------------------------------------------------------------------ improvement


def _relative_gain_percent(ours: float, best: float, higher_is_better: bool) -> float:
    """The paper's gain in percent, one decimal, rounded half away from zero on exact decimals.

    Decimal arithmetic on the printed values avoids float artefacts (0.049/0.4 = 12.25% must round
    to 12.3, not 12.2).
    """
    ours_d, best_d = Decimal(str(ours)), Decimal(str(best))
    if best_d <= 0:
        raise ValueError(f"relative gain over a best baseline of {best} is undefined (must be > 0)")
    gain = (ours_d - best_d) / best_d if higher_is_better else (best_d - ours_d) / best_d
    return float((gain * 100).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def improvement_rows(table: PaperTable) -> list[Improvement]:
    """The paper's Improvement rows, recomputed: each variant against the best baseline.

    Best = max R², min RMSE/MAE over every non-UrbanLN model; gain = (ours − best)/best for R² and
    (best − ours)/best for RMSE/MAE. Missing baseline cells are skipped (never averaged or
    imputed); a cell with no baseline value or no variant value yields no row. Ties go to the
    baseline listed first. Order: variant, then task, then metric, as in the table.
    """
    rows: list[Improvement] = []
    for variant in table.variants:
        for task in table.tasks:
            for metric in table.metrics:
                ours = table.value(variant, task, metric)
                if ours is None:
                    continue
                higher = HIGHER_IS_BETTER[metric]
                best_model: str | None = None
                best_value = 0.0
                for model in table.baselines:
                    value = table.value(model, task, metric)
                    if value is None:
                        continue
                    if best_model is None or (value > best_value if higher else value < best_value):
                        best_model, best_value = model, value
                if best_model is None:
                    continue
                percent = _relative_gain_percent(ours, best_value, higher)
                rows.append(Improvement(table.city, task, variant, metric, percent, best_model))
    return rows


def paper_table_records(city: str) -> list[dict[str, str | float]]:
    """JSON records of ``city``'s Improvement rows (what ``paper-table CITY --json`` prints)."""
    return [
        {"city": r.city, "task": r.task, "variant": r.variant, "metric": r.metric, "percent": r.percent}
        for r in improvement_rows(paper_table(city))
    ]


# -------------------------------------------------------------------------------------- rendering

_METRIC_LABELS: Mapping[str, str] = MappingProxyType({"R2": "R²", "RMSE": "RMSE", "MAE": "MAE"})


def render_paper_table_markdown(table: PaperTable, improvements: list[Improvement]) -> str:
    """The table as in the paper: methods as rows, task × metric columns, Improvement rows in %.

    Deterministic (table order throughout); missing cells are rendered as "—".
    """
    columns = [(t, k) for t in table.tasks for k in table.metrics]
    header = ["Method", *(f"{t} {_METRIC_LABELS.get(k, k)}" for t, k in columns)]
    lines = [
        f"Table {table.table[1:]} ({table.city}), paper-reported; "
        "Improvement = gain of each UrbanLN variant over the best baseline, in %",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---", *(["---:"] * len(columns))]) + "|",
    ]
    for model in table.models:
        cells = [table.value(model, t, k) for t, k in columns]
        lines.append(
            "| " + " | ".join([model, *(MISSING if v is None else f"{v:.3f}" for v in cells)]) + " |"
        )
    by_cell = {(r.variant, r.task, r.metric): r.percent for r in improvements if r.city == table.city}
    for variant in table.variants:
        percents = [by_cell.get((variant, t, k)) for t, k in columns]
        label = f"Improvement ({variant})"
        lines.append(
            "| " + " | ".join([label, *(MISSING if p is None else f"{p:.1f}%" for p in percents)]) + " |"
        )
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------- Tables 4 and 5


@cache
def _mu_sweep() -> tuple[MuSweepPoint, ...]:
    name = "mu_sweep.csv"
    points = []
    for line, row in _read_csv(name, ("imagery", "mu", "city", "pop_r2")):
        if row["imagery"] not in MU_SWEEP_VARIANT:
            raise ValueError(f"{_DATA_FOLDER}/{name}:{line}: unknown imagery {row['imagery']!r}")
        points.append(
            MuSweepPoint(
                row["imagery"],
                _number(name, line, "mu", row["mu"]),
                row["city"],
                _number(name, line, "pop_r2", row["pop_r2"]),
            )
        )
    return tuple(points)


def mu_sweep() -> list[MuSweepPoint]:
    """Table 4: population R² for μ ∈ {0.3, 0.4, 0.5, 0.6}, per imagery and city."""
    return list(_mu_sweep())


@cache
def _dataset_stats() -> Mapping[str, DatasetStats]:
    name = "dataset_stats.csv"
    header = ("city", "regions", "n_sv", "n_si", *_LABELLED_COLUMNS)
    stats: dict[str, DatasetStats] = {}
    for line, row in _read_csv(name, header):

        def count(column: str, row: dict[str, str] = row, line: int = line) -> int:
            text = row[column]
            if not text.isdigit():
                raise ValueError(f"{_DATA_FOLDER}/{name}:{line}: column '{column}' is not a count: {text!r}")
            return int(text)

        labelled = {task: count(col) for col, task in _LABELLED_COLUMNS.items() if row[col] != ""}
        stats[row["city"]] = DatasetStats(
            row["city"], count("regions"), count("n_sv"), count("n_si"), MappingProxyType(labelled)
        )
    return MappingProxyType(stats)


def dataset_stats() -> dict[str, DatasetStats]:
    """Table 5 per city; a task the city does not have is absent from ``labelled``."""
    return dict(_dataset_stats())


# ---------------------------------------------------------------------------------- consistency


def inconsistencies() -> list[str]:
    """Places where the paper disagrees with itself; the main tables win.

    Checks the R² repeats of Tables 2 (SH) and 3 (NY) against the main tables, and Table 4's
    μ = 0.5 row against each variant's Pop R². Today's known case: Table 3 Tile2Vec NY Crime R²
    0.135 vs Table 8 0.035.
    """
    found: list[str] = []
    for r in _results():
        if r.table not in REPEAT_TABLES:
            continue
        main = _table(r.city)
        value = main.value(r.model, r.task, r.metric)
        if value != r.value:
            shown = MISSING if value is None else f"{value:.3f}"
            found.append(
                f"Table {r.table[1:]} gives {r.model} {r.city} {r.task} {r.metric} = {r.value:.3f}, "
                f"Table {main.table[1:]} gives {shown}; the harness uses Table {main.table[1:]}"
            )
    for p in _mu_sweep():
        if p.mu != DEFAULT_MU or p.city not in MAIN_TABLES:
            continue
        variant = MU_SWEEP_VARIANT[p.imagery]
        main = _table(p.city)
        value = main.value(variant, "Pop", "R2")
        if value != p.pop_r2:
            shown = MISSING if value is None else f"{value:.3f}"
            found.append(
                f"Table 4 gives {variant} {p.city} Pop R2 = {p.pop_r2:.3f} at mu = {DEFAULT_MU}, "
                f"Table {main.table[1:]} gives {shown}; the harness uses Table {main.table[1:]}"
            )
    return found
