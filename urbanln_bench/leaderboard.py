"""``leaderboard.md`` from result records only (docs/architecture.md#core-concepts Report).

Per city and data set, a table shaped like the paper's (methods on their native imagery × task ×
R²/RMSE/MAE, mean ± std over seeds), the improvement rows of "ours" variants over the best baseline
(the paper's definition, ``reference/paper.py``), the oracle and floor rows, the paper-reported
numbers in labelled rows, and provenance (data, weights) per row. Missing cells are "—"; nothing is
averaged over incomplete rows. Deterministic: the same records give a byte-identical file. Figure 4
(parameters vs images/s) and caption fidelity per stage come from stored measurements (``measurements.py``)
where they exist: the numbers stored, never measured again here.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from urbanln_bench.compare import CellComparison, compare_cell, mean_ranks, paired_difference, predictions
from urbanln_bench.figures import (
    AblationFigure,
    CaseStudyFigure,
    FidelityFigure,
    FidelitySeries,
    Figure,
    Interval,
    PredictionFigure,
    PredictionPanel,
    ProfileFigure,
    ProfilePoint,
    SweepFigure,
    TransferFigure,
    file_name,
)
from urbanln_bench.markdown import table_lines
from urbanln_bench.records import MethodInfo, Record, iter_records
from urbanln_bench.reference.paper import MISSING, PaperTable, improvement_rows, paper_cities, paper_table

METRICS = ("r2", "rmse", "mae")
METRIC_LABELS = {"r2": "R²", "rmse": "RMSE", "mae": "MAE"}
PAPER_METRIC = {"r2": "R2", "rmse": "RMSE", "mae": "MAE"}
PAPER_ORDER = ("ResNet-18", "Tile2Vec", "PG-SimCLR", "RemoteCLIP", "UrbanCLIP", "MuseCL", "UrbanVLP")
ROLE_ORDER = {"method": 0, "start": 2, "floor": 3, "reference": 4, "ceiling": 5, "oracle": 6}
ROLE_MARK = {"floor": " *(floor)*", "start": " *(starting weights)*", "reference": " *(reference)*",
             "ceiling": " *(ceiling)*", "oracle": " *(latent oracle)*"}
CITY_ORDER = ("BJ", "SH", "SZ", "NY")
NOTE_MARK = " †"
FIGURES_LINK = "figures"  # the figures' folder as leaderboard.md links it (relative to the file)
TIE_MARK = " ≈"  # statistically tied with the cell's winner (compare.py)  # a cell whose record carries notes (a task derived from the method's auxiliary data)


@dataclass(frozen=True)
class Row:
    label: str
    imagery: str
    role: str
    ours: bool
    weights: str
    strategy: str
    native: bool  # the method's native imagery (the paper-shaped table shows only these)
    ablation: bool = False  # an ablation or a settings override of an "ours" method: the ablation table


def is_ablation(method: MethodInfo) -> bool:
    return method.ours and bool(method.ablation_of or method.overrides)


def row_label(record: Record) -> str:
    method = record.method
    imagery = record.cell.imagery
    label = method.variant
    if len(method.native_imagery) > 1 or imagery not in method.native_imagery:
        if method.ours:  # the paper's naming: UrbanLN+SV, UrbanLN+SV w/o IPSI, UrbanLN+SV [mu=0.3]
            head, space, rest = label.partition(" ")
            return f"{head}+{imagery}{space}{rest}"
        return f"{label} ({imagery})"
    return label


def _sort_key(row: Row) -> tuple:
    base = row.label.split(" [")[0].split(" (")[0]
    paper_rank = PAPER_ORDER.index(base) if base in PAPER_ORDER else len(PAPER_ORDER)
    return (ROLE_ORDER[row.role] + (1 if row.ours else 0), paper_rank, row.label, row.imagery)


def _short_weights(source: str) -> str:
    source = source.split(" (")[0] if source.startswith("surrogate") else source
    return source.replace("|", "/")


def _fmt(entry: dict | None) -> str:
    if entry is None:
        return MISSING
    if entry.get("n", 1) > 1:
        return f"{entry['mean']:.3f} ± {entry['std']:.3f}"
    return f"{entry['mean']:.3f}"


def store_records(results_dir: Path) -> list[Record]:
    """Every readable record of the store, in path order: read once per leaderboard (a pass over a store of
    ~900 records takes seconds) and handed to each section that needs the records."""
    return [record for _, record in iter_records(results_dir, skip_corrupt=True)]


def street_view_caps(results_dir: Path, records: list[Record] | None = None) -> dict[tuple[str, str], int]:
    """(city, data tag) → at most this many street views per region (the twin's ``max_street_views``)."""
    return {(r.cell.city, r.data.tag): r.data.street_view_cap
            for r in (store_records(results_dir) if records is None else records) if r.data.street_view_cap}


def seeds_line(results_dir: Path, records: list[Record] | None = None) -> str:
    """How many probe seeds the records have: one sentence, every seed set with its record count, so a store in
    the middle of a change of ``--seeds`` says so instead of averaging unlike means side by side unnoticed."""
    from collections import Counter

    counts = Counter(tuple(record.split.get("seeds") or ())
                     for record in (store_records(results_dir) if records is None else records))
    if not counts:
        return ""

    def named(seeds: tuple) -> str:
        run = len(seeds) > 2 and list(seeds) == list(range(seeds[0], seeds[0] + len(seeds)))
        listed = f"{seeds[0]}–{seeds[-1]}" if run else ", ".join(str(s) for s in seeds)
        return f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} ({listed})"

    if len(counts) == 1:
        return f"Probe seeds: {named(next(iter(counts)))} in every record."
    parts = [f"{named(seeds)} in {n} record{'s' if n != 1 else ''}"
             for seeds, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    return ("Probe seeds: " + "; ".join(parts) + ". A paired comparison uses the seeds both records have; a mean "
            "over more seeds is not comparable digit for digit with one over fewer.")


def collect(results_dir: Path, records: list[Record] | None = None) -> dict[tuple[str, str], dict[Row, dict[str, dict]]]:
    """(city, data tag) → row → task → metrics (``records``: the store's, when already read)."""
    tables: dict[tuple[str, str], dict[Row, dict[str, dict]]] = defaultdict(lambda: defaultdict(dict))
    for record in store_records(results_dir) if records is None else records:
        cell, method = record.cell, record.method
        if record.is_transfer:
            continue  # transfer records have their own section
        row = Row(row_label(record), cell.imagery, method.role, method.ours, _short_weights(method.weight_source),
                  record.split["strategy"], cell.imagery in method.native_imagery, is_ablation(method))
        metrics = _cell_metrics(record)  # the record rides along for paired comparisons (compare.py)
        if record.notes:
            metrics["notes"] = list(record.notes)
        tables[(cell.city, record.data.tag)][row][cell.task] = metrics
    return tables


@dataclass(frozen=True)
class RunTableRow:
    label: str
    imagery: str
    role: str  # one of method.ROLES, or paper
    this_run: bool  # a row of the run's own method
    r2: dict[str, dict | None]  # task → {mean, std, n} (None: no record)


@dataclass(frozen=True)
class RunTable:
    """The table a run prints (the paper's Table 3 shape): test R² per task for the run's rows, the other
    native rows of this city and data set in the store, the floor and oracle rows, and the paper's own
    numbers for the same models (real data, orientation only)."""

    title: str
    tasks: list[str]
    rows: list[RunTableRow]


def run_table(records: list[Record], city: str, results_dir: Path) -> RunTable | None:
    """The :class:`RunTable` for a run's records (None when the run wrote or reused none)."""
    if not records:
        return None
    tag = records[0].data.tag
    tasks = list(dict.fromkeys(r.cell.task for r in records))
    try:
        from urbanln_bench.specs import get_city

        tasks = [t for t in get_city(city).tasks if t in tasks] or tasks
    except Exception:  # a user's city given by file: keep the order of the records
        pass
    mine = {row_label(r) for r in records}
    rows = collect(results_dir).get((city, tag), {})
    shown = {row: metrics for row, metrics in rows.items()
             if row.strategy == "random" and (row.label in mine or (row.native and not row.ablation))}
    order = ROLE_ORDER
    out = [RunTableRow(row.label, row.imagery, row.role, row.label in mine,
                       {t: shown[row].get(t, {}).get("r2") for t in tasks})
           for row in sorted(shown, key=lambda r: (order[r.role], r.label not in mine, r.label, r.imagery))]
    if city in paper_cities():
        paper = paper_table(city)
        for model in paper.models:
            if any(model == label or model.split("+")[0] == label.split("+")[0] for label in mine):
                values = {t: paper.value(model, t, "R2") if t in paper.tasks else None for t in tasks}
                out.append(RunTableRow(f"{model} (paper-reported, real data)", "", "paper", False,
                                       {t: None if v is None else {"mean": v, "std": None, "n": 1}
                                        for t, v in values.items()}))
    title = (f"{city} ({tag}): test R² on ln(y+1), mean ± std over seeds "
             f"({'synthetic twin' if tag.startswith('synthetic') else 'real data'})")
    return RunTable(title, tasks, out)


def _improvements(city: str, rows: dict[Row, dict[str, dict]], tasks: list[str]) -> list[list[str]]:
    models = [r for r in rows if r.role == "method"]
    if not any(r.ours for r in models) or not any(not r.ours for r in models):
        return []
    values = {}
    for r in models:
        for task, metrics in rows[r].items():
            for metric in METRICS:
                values[(r.label, task, PAPER_METRIC[metric])] = metrics[metric]["mean"]
    table = PaperTable(city, "records", tuple(r.label for r in models), tuple(tasks),
                       tuple(PAPER_METRIC[m] for m in METRICS), values)
    # the paper's rule: the variants are UrbanLN rows; here "ours" rows are those the records flag
    ours = {r.label for r in models if r.ours}
    improvements = [i for i in improvement_rows(table) if i.variant in ours] if all(
        label.startswith("UrbanLN") for label in ours) else []
    out = []
    for variant in sorted({i.variant for i in improvements}):
        by = {(i.task, i.metric): i.percent for i in improvements if i.variant == variant}
        cells = [f"{by[(t, PAPER_METRIC[m])]:.1f}%" if (t, PAPER_METRIC[m]) in by else MISSING
                 for t in tasks for m in METRICS]
        out.append([f"Improvement ({variant})", "", "", *cells])
    return out


def cell_comparisons(rows: dict[Row, dict[str, dict]], tasks: list[str]) -> dict[str, CellComparison]:
    """Task → the paired comparison of the competing rows (role "method") with the task's winner."""
    out = {}
    for task in tasks:
        records = {row.label + "|" + row.imagery: metrics[task]["record"] for row, metrics in rows.items()
                   if row.role == "method" and task in metrics and "record" in metrics[task]}
        comparison = compare_cell(records)
        if comparison is not None and any(d is not None for d in comparison.differences.values()):
            out[task] = comparison
    return out


def _r2_mark(comparison: CellComparison | None, row: Row) -> tuple[str, str]:
    """(prefix, suffix) around a row's R²: bold for the cell's winner, ≈ for a statistical tie with it."""
    if comparison is None or row.role != "method":
        return "", ""
    key = row.label + "|" + row.imagery
    if key == comparison.winner:
        return "**", "**"
    return ("", TIE_MARK) if comparison.tied(key) else ("", "")


def native_rows(rows: dict[Row, dict[str, dict]]) -> dict[Row, dict[str, dict]]:
    """The paper-shaped table's rows: native imagery, random split, no ablations."""
    return {r: v for r, v in rows.items() if r.native and r.strategy == "random" and not r.ablation}


def city_section(city: str, tag: str, rows: dict[Row, dict[str, dict]], tasks: list[str], *,
                 native_only: bool, comparisons: dict[str, CellComparison] | None = None) -> list[str]:
    header = ["Method", "Imagery", "Weights", *(f"{t} {METRIC_LABELS[m]}" for t in tasks for m in METRICS)]
    table: list[list[str]] = []
    chosen = native_rows(rows) if native_only else rows
    if not native_only:
        comparisons = {}
    elif comparisons is None:
        comparisons = cell_comparisons(chosen, tasks)

    def cell(row: Row, metrics: dict, task: str, metric: str) -> str:
        if task not in metrics:
            return MISSING
        text = _fmt(metrics[task].get(metric))
        if metric != "r2":
            return text
        before, after = _r2_mark(comparisons.get(task), row)
        return before + text + after + (NOTE_MARK if metrics[task].get("notes") else "")

    for row in sorted(chosen, key=_sort_key):
        metrics = chosen[row]
        cells = [cell(row, metrics, t, m) for t in tasks for m in METRICS]
        role = ROLE_MARK.get(row.role, "")
        imagery = row.imagery if native_only else f"{row.imagery}, {row.strategy}"
        table.append([row.label + role, imagery, row.weights, *cells])
    if native_only:
        table += _improvements(city, chosen, tasks)
        if city in paper_cities():
            paper = paper_table(city)
            for model in paper.models:
                cells = []
                for t in tasks:
                    for m in METRICS:
                        value = paper.value(model, t, PAPER_METRIC[m]) if t in paper.tasks else None
                        cells.append(MISSING if value is None else f"{value:.3f}")
                table.append([f"{model} *(paper-reported)*", "real", "paper", *cells])
    lines = table_lines(header, table, "lll" + "r" * (len(header) - 3))
    if any(v.get("notes") for metrics in chosen.values() for v in metrics.values()):
        lines += ["", f"{NOTE_MARK.strip()} The method trains on the auxiliary data this task is derived from; "
                      "reported because the paper reports it."]
    if native_only:
        lines += ["", _comparison_note(chosen, comparisons, tasks)]
    return lines


def _comparison_note(rows: dict[Row, dict[str, dict]], comparisons: dict[str, CellComparison],
                     tasks: list[str]) -> str:
    methods = [m for row, metrics in rows.items() if row.role == "method" for m in metrics.values()]
    without = sum(1 for m in methods if "record" in m and not predictions(m["record"]))
    if comparisons:
        text = (f"**Bold**: the task's winner (highest mean R² among the methods); {TIE_MARK.strip()}: tied with "
                f"it (the 95 % paired bootstrap interval of the R² difference over test regions and seeds "
                f"contains 0; `compare.py`). Compared on {len(comparisons)} of {len(tasks)} tasks.")
    else:
        text = "No paired comparison yet: ties with the winner cannot be told apart from differences."
    if without:
        text += (f" {without} of these records were made before records kept their test predictions and are "
                 "left out of the comparisons; re-running them (`--overwrite always`) adds them.")
    return text


def ablation_section(city: str, tag: str, rows: dict[Row, dict[str, dict]], tasks: list[str],
                     figures_link: str = FIGURES_LINK) -> tuple[list[str], list[Figure]]:
    """The paper's ablation table: every "ours" row (full method, ablations, overrides) per imagery, R² per
    task with the change against the full method on the same imagery; and the figures of those changes
    (ablation bars, one-setting sweeps) with links to them under the table, which holds their numbers."""
    ours = {r: v for r, v in rows.items() if r.ours and r.role == "method" and r.strategy == "random"}
    if not any(r.ablation for r in ours):
        return [], []
    full = {r.imagery: v for r, v in ours.items() if not r.ablation}
    header = ["Variant", "Imagery", *(f"{t} R²" for t in tasks), *(f"Δ {t}" for t in tasks)]
    lines = [f"### {city} — ablations (`{tag}`)", "",
             "R² mean ± std over probe seeds; Δ = variant − full UrbanLN on the same imagery, with its 95 % paired "
             "bootstrap interval where both records keep test predictions (≈: the interval contains 0).", ""]
    table = []
    deltas: dict[tuple[Row, str], Interval] = {}
    for row in sorted(ours, key=lambda r: (r.imagery, r.ablation, r.label)):
        metrics = ours[row]
        base = full.get(row.imagery, {})
        cells = [_fmt(metrics.get(t, {}).get("r2")) for t in tasks]
        texts = []
        for t in tasks:
            if not (row.ablation and t in metrics and t in base):
                texts.append(MISSING)
                continue
            text, deltas[(row, t)] = _delta(metrics[t], base[t])
            texts.append(text)
        table.append([row.label, row.imagery, *cells, *texts])
    lines += table_lines(header, table, "ll" + "r" * (len(header) - 2))
    figures = [f for f in (_ablation_figure(city, tag, ours, deltas, tasks), *_sweep_figures(city, tag, ours, deltas,
                                                                                               tasks)) if f]
    for figure in figures:
        lines += ["", *figure_link(figure, figures_link)]
    return lines + [""], figures


def figure_link(figure: Figure, figures_link: str) -> list[str]:
    """The lines that show a figure in leaderboard.md: the image, then where its numbers are."""
    alt = figure.caption.replace("[", "\\[").replace("]", "\\]")  # a variant's "[mu=0.3]" would end the alt text
    lines = [f"![{alt}]({figures_link}/{figure.name})", "",
             f"*Figure `{figure.name}`: {figure.caption}.*"]
    if isinstance(figure, PredictionFigure):
        lines += ["", f"<details><summary>The numbers of <code>{figure.name}</code>: each test region's true and "
                      "predicted ln(y+1)</summary>", ""]
        for panel in figure.panels:
            labels = [label for label, _, _ in panel.series]
            lines += [f"{panel.task}, seed {panel.seed} (R²: "
                      + ", ".join(f"{label} {r2:.3f}" for label, _, r2 in panel.series) + "):", ""]
            table = [[region, f"{truth:.3f}", *(f"{preds[i]:.3f}" for _, preds, _ in panel.series)]
                     for i, (region, truth) in enumerate(zip(panel.regions, panel.truth, strict=True))]
            lines += table_lines(["Region", "True ln(y+1)", *labels], table, "lr" + "r" * len(labels)) + [""]
        lines.append("</details>")
    return lines


def prediction_figures(city: str, tag: str, rows: dict[Row, dict[str, dict]], tasks: list[str]) -> list[PredictionFigure]:
    """The paper's Figure 2 per imagery: on one seed's test regions (the first both records share), the
    predictions of the best "ours" row and of the best baseline (highest mean R² among the other competing
    rows of the paper-shaped table on the same imagery), per task where both keep test predictions."""
    native = native_rows(rows)
    figures = []
    for imagery in sorted({r.imagery for r in native}, key=_imagery_rank):
        panels = []
        for task in tasks:
            ours, baseline = _best_row(native, imagery, task, True), _best_row(native, imagery, task, False)
            if ours is None or baseline is None:
                continue
            mine, theirs = predictions(ours[1]["record"]), predictions(baseline[1]["record"])
            seeds = [s for s in sorted(set(mine) & set(theirs)) if mine[s].ids == theirs[s].ids]
            if not seeds:
                continue
            seed = seeds[0]
            truth = mine[seed].y
            series = tuple((row.label, tuple(float(v) for v in preds[seed].pred), _r2(truth, preds[seed].pred))
                           for row, preds in ((ours[0], mine), (baseline[0], theirs)))
            panels.append(PredictionPanel(task, seed, mine[seed].ids, tuple(float(v) for v in truth), series))
        if panels:
            figures.append(PredictionFigure(
                file_name(city, tag, "predictions", imagery),
                f"{city} ({tag}), {imagery}: predicted vs true ln(y+1) on the test regions of one seed, our best "
                "row and the best baseline per task (the paper's Figure 2)", tuple(panels)))
    return figures


def _best_row(rows: dict[Row, dict[str, dict]], imagery: str, task: str, ours: bool) -> tuple[Row, dict] | None:
    """The competing row (ours or not) with the highest mean R² on ``imagery`` and ``task`` among those whose
    record keeps test predictions (a task derived from the method's own auxiliary data left out)."""
    found = [(r, v[task]) for r, v in rows.items() if r.imagery == imagery and r.role == "method" and r.ours == ours
             and task in v and not v[task].get("notes") and "record" in v[task] and predictions(v[task]["record"])]
    return max(found, key=lambda x: (x[1]["r2"]["mean"], x[0].label), default=None)


def _r2(y, pred) -> float:
    """R² of one seed's predictions on its test regions."""
    centred = y - y.mean()
    total = float((centred**2).sum())
    return 1.0 - float(((y - pred) ** 2).sum()) / total if total > 0 else 0.0


# The caption pipeline's stages as caption-text rows (methods/caption_text.py), and the comparisons between
# them that test the paper's data-level claims: refinement makes captions more informative (refined − raw),
# consensus selection keeps what matters (consensus − refined, consensus − raw).
CAPTION_STAGES = (("caption-text-refined", "caption-text-raw", "refined − raw"),
                  ("caption-text-consensus", "caption-text-refined", "consensus − refined"),
                  ("caption-text-consensus", "caption-text-raw", "consensus − raw"))


def caption_stage_section(city: str, tag: str, rows: dict[Row, dict[str, dict]], tasks: list[str]) -> list[str]:
    """R² of the caption-text rows per stage and imagery, with the paired differences between stages."""
    stage_rows: dict[tuple[str, str], dict[str, dict]] = {}
    for row, metrics in rows.items():
        method = _row_method(metrics)
        if row.role == "reference" and row.strategy == "random" and method and method.name.startswith("caption-text-"):
            stage_rows[(method.name, row.imagery)] = metrics
    imageries = sorted({imagery for _, imagery in stage_rows}, key=_imagery_rank)
    table = []
    for imagery in imageries:
        for a, b, label in CAPTION_STAGES:
            first, second = stage_rows.get((a, imagery)), stage_rows.get((b, imagery))
            if not (first and second):
                continue
            cells = []
            for t in tasks:
                if t in first and t in second:
                    cells.append(_delta(first[t], second[t])[0])
                else:
                    cells.append(MISSING)
            table.append([label, imagery, *cells])
    if not table:
        return []
    lines = [f"### {city} — caption stages (`{tag}`)", "",
             "What the captions know after each stage of the caption pipeline, before any image encoder is "
             "trained: the caption-text rows (every caption embedded with the frozen all-MiniLM-L6-v2 sentence "
             "model, pooled per region, probed; `methods/caption_text.py`). Δ R² with its 95 % paired bootstrap "
             "interval (≈: the interval contains 0). *Raw* and *refined* pool every candidate caption of every "
             "captioner; *consensus* keeps the one selected caption per image (what UrbanLN trains on), so its "
             "comparisons also change how much text a region has.", ""]
    header = ["Comparison", "Imagery", *(f"Δ {t}" for t in tasks)]
    return lines + table_lines(header, table, "ll" + "r" * len(tasks)) + [""]


def _delta(variant: dict, full: dict) -> tuple[str, Interval]:
    """A Δ R² cell (variant − full, on one cell's metrics: ``{"r2": …, "record": …}``) and the same number for
    a figure: the paired bootstrap difference with its interval where both records keep test predictions,
    else the difference of the means. The ablation, caption-stage and transfer tables all use it."""
    diff = None
    if "record" in variant and "record" in full:
        diff = paired_difference(variant["record"], full["record"])
    if diff is None:
        value = variant["r2"]["mean"] - full["r2"]["mean"]
        return f"{value:+.3f}", Interval(value)
    return diff.text() + (TIE_MARK if diff.tied else ""), Interval(diff.diff, diff.low, diff.high)


def _row_method(metrics: dict[str, dict]) -> MethodInfo | None:
    """The method of a row (from any of its records)."""
    return next((m["record"].method for m in metrics.values() if "record" in m), None)


def _ablation_figure(city: str, tag: str, ours: dict[Row, dict[str, dict]], deltas: dict[tuple[Row, str], Interval],
                     tasks: list[str]) -> AblationFigure | None:
    """Figure 3: bars of the ablations (``ablation_of``, not settings overrides) per imagery and task."""
    panels = []
    for imagery in sorted({r.imagery for r in ours}, key=_imagery_rank):
        variants = [(row.label, tuple(deltas.get((row, t)) for t in tasks))
                    for row in sorted(ours, key=lambda r: r.label) if row.imagery == imagery
                    and (method := _row_method(ours[row])) is not None and method.ablation_of
                    and any(deltas.get((row, t)) for t in tasks)]
        if variants:
            panels.append((imagery, tuple(variants)))
    if not panels:
        return None
    return AblationFigure(file_name(city, tag, "ablations"), f"{city} ({tag}): ablations, ΔR² from the full method "
                          "with 95 % paired bootstrap intervals (the ablation table's Δ columns)", tuple(tasks),
                          tuple(panels))


def _number(value) -> float | None:
    """A setting's value as a float, or None when it is not a number (booleans are not)."""
    return None if isinstance(value, bool) or not isinstance(value, int | float) else float(value)


def _setting_sweeps(ours: dict[Row, dict[str, dict]]) -> dict[str, dict[str, dict[float, Row]]]:
    """setting → imagery → value → row, for the "ours" variants that override one numeric setting alone (μ);
    ablations are not points of a sweep."""
    sweeps: dict[str, dict[str, dict[float, Row]]] = defaultdict(lambda: defaultdict(dict))
    for row, metrics in ours.items():
        method = _row_method(metrics)
        if method is None or method.ablation_of or len(method.overrides) != 1:
            continue
        setting, value = next(iter(method.overrides.items()))
        if (number := _number(value)) is not None:
            sweeps[setting][row.imagery][number] = row
    return sweeps


def _sweep_anchor(ours: dict[Row, dict[str, dict]], imagery: str, setting: str) -> tuple[dict, float] | None:
    """The full method's metrics on ``imagery`` and its own value of ``setting``; None when either is unknown."""
    full = next((m for r, m in ours.items() if r.imagery == imagery and not r.ablation), None)
    method = _row_method(full) if full else None
    value = _number(method.config.get(setting)) if method else None
    return None if value is None else (full, value)


def _sweep_figures(city: str, tag: str, ours: dict[Row, dict[str, dict]], deltas: dict[tuple[Row, str], Interval],
                   tasks: list[str]) -> list[SweepFigure]:
    """Table 4 as lines: for each setting that "ours" variants override alone with a number (μ), ΔR² from the
    full method along the setting's values, the full method's own value at 0."""
    sweeps = _setting_sweeps(ours)
    figures = []
    for setting in sorted(sweeps):
        panels = []
        for imagery in sorted(sweeps[setting], key=_imagery_rank):
            anchored = _sweep_anchor(ours, imagery, setting)
            if anchored is None:
                continue  # the full method's own value is unknown: nothing to anchor the sweep on
            full, value = anchored
            points = {v: tuple(deltas.get((row, t)) for t in tasks) for v, row in sweeps[setting][imagery].items()}
            points[value] = tuple(Interval(0.0) if t in full else None for t in tasks)
            panels.append((imagery, tuple(sorted(points.items()))))
        if panels:
            figures.append(SweepFigure(file_name(city, tag, "sweep", setting), f"{city} ({tag}): sweep of {setting}, "
                                       "ΔR² from the full method with 95 % paired bootstrap intervals (the ablation "
                                       "table's Δ columns)", setting, tuple(tasks), tuple(panels)))
    return figures


def _imagery_rank(imagery: str) -> tuple[int, str]:
    return (("SV", "SI", "SV+SI").index(imagery) if imagery in ("SV", "SI", "SV+SI") else 9, imagery)


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman's ρ (average ranks for ties); None for fewer than 3 pairs or a constant side."""
    if len(a) < 3:
        return None
    ra, rb = _ranks(a), _ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    va, vb = sum((x - ma) ** 2 for x in ra), sum((y - mb) ** 2 for y in rb)
    return None if va == 0 or vb == 0 else cov / (va * vb) ** 0.5


def paper_name(label: str) -> str:
    """Our row label as the paper names the model ("RemoteCLIP (surrogate)" → "RemoteCLIP")."""
    return label.replace(" (surrogate)", "")


def summary_section(city: str, tag: str, rows: dict[Row, dict[str, dict]], tasks: list[str],
                    comparisons: dict[str, CellComparison] | None = None) -> list[str]:
    """Per task: who wins among the methods of the paper-shaped table, the best floor, the ceiling, every
    method's distance to the ceiling of its imagery, and how our ranking agrees with the paper's.
    ``comparisons``: the paired comparisons of the native rows (``cell_comparisons``), when computed already."""
    methods = {r: v for r, v in native_rows(rows).items() if r.role == "method"}
    oracle = {r.imagery: v for r, v in rows.items() if r.role == "oracle" and r.strategy == "random"}
    floors = {r: v for r, v in rows.items() if r.role == "floor" and r.strategy == "random"}
    if len(methods) < 2:
        return []

    def r2(metrics: dict, task: str) -> float | None:
        return metrics[task]["r2"]["mean"] if task in metrics else None

    def ceiling(imagery: str, task: str) -> float | None:
        source = oracle.get("SI" if imagery == "SV+SI" else imagery, {})
        return r2(source, task)

    paper = paper_table(city) if city in paper_cities() else None
    lines = [f"### {city} — summary (`{tag}`)", "",
             "Winner = highest mean test R² among the methods above (native imagery; floors and the ceiling "
             "excluded). Gap = the ceiling of the method's imagery (the oracle row; SI for fused SV+SI) − its R². "
             "ρ = Spearman rank correlation of our R² with the paper-reported R² over the models in both.", "",
             "Tied = the methods whose 95 % paired bootstrap interval of the R² difference from the winner "
             "contains 0 (— when the records keep no test predictions). Ridge winner = the winner under the "
             "closed-form ridge probe, named where it differs from the MLP's.", ""]
    winners = []
    if comparisons is None:
        comparisons = cell_comparisons(methods, tasks)
    for task in tasks:
        scored = sorted(((r2(v, task), r) for r, v in methods.items() if r2(v, task) is not None),
                        key=lambda x: (-x[0], x[1].label))
        if not scored:
            continue
        (best, winner), runner = scored[0], scored[1] if len(scored) > 1 else None
        floor = max(((r2(v, task), r) for r, v in floors.items() if r2(v, task) is not None),
                    key=lambda x: x[0], default=None)
        top = ceiling(winner.imagery, task)
        mark = NOTE_MARK if methods[winner][task].get("notes") else ""
        comparison = comparisons.get(task)
        tied = ([r.label for _, r in scored[1:] if comparison.tied(r.label + "|" + r.imagery)]
                if comparison is not None else None)
        ridge = max(((v[task]["ridge_r2"]["mean"], r) for r, v in methods.items()
                     if task in v and "ridge_r2" in v[task]), key=lambda x: (x[0], x[1].label), default=None)
        ridge_text = MISSING if ridge is None else ("same" if ridge[1] == winner
                                                    else f"{ridge[1].label} ({ridge[0]:.3f})")
        cells = [task, f"{winner.label} ({best:.3f}){mark}", f"{runner[1].label} ({runner[0]:.3f})" if runner else MISSING,
                 MISSING if tied is None else (", ".join(tied) or "none"), ridge_text,
                 f"{floor[1].label} ({floor[0]:.3f})" if floor else MISSING,
                 f"{top - best:.3f}" if top is not None else MISSING]
        if paper is not None and task in paper.tasks:
            reported = {m: paper.value(m, task, "R2") for m in paper.models}
            reported = {m: v for m, v in reported.items() if v is not None}
            paper_winner = max(reported, key=reported.get) if reported else None
            pairs = [(b, reported[paper_name(r.label)]) for b, r in scored if paper_name(r.label) in reported]
            rho = spearman([p[0] for p in pairs], [p[1] for p in pairs])
            cells += [f"{paper_winner} ({reported[paper_winner]:.3f})" if paper_winner else MISSING,
                      f"{rho:+.2f} ({len(pairs)})" if rho is not None else f"{MISSING} ({len(pairs)})"]
        else:
            cells += [MISSING, MISSING]
        winners.append(cells)
    lines += table_lines(["Task", "Winner", "Runner-up", "Tied with the winner", "Ridge winner", "Best floor",
                          "Winner's gap to ceiling", "Paper's winner", "ρ vs paper (n)"], winners, "llllllrlr")
    ranks = mean_ranks([{row.label + "|" + row.imagery: v[task]["record"] for row, v in methods.items()
                         if task in v and "record" in v[task]} for task in tasks])
    if ranks:
        lines += ["", "Mean rank over the tasks with comparable records (1 = best by R²; 95 % bootstrap interval "
                      "from resampling every task's test regions):", ""]
        table = [[*key.split("|"), f"{rank.mean:.2f}", f"[{rank.low:.2f}, {rank.high:.2f}]", str(rank.cells)]
                 for key, rank in sorted(ranks.items(), key=lambda kv: (kv[1].mean, kv[0]))]
        lines += table_lines(["Method", "Imagery", "Mean rank", "95 % interval", "Tasks"], table, "llrlr")
    lines += _information_chain(rows, methods, tasks)
    lines += _learning_check(rows, methods, tasks)
    lines += _split_agreement(rows, tasks)
    lines += ["", "Distance to the ceiling (oracle R² − method R², lower is better):", ""]
    table = []
    for row in sorted(methods, key=_sort_key):
        gaps = []
        for task in tasks:
            value, top = r2(methods[row], task), ceiling(row.imagery, task)
            gaps.append(f"{top - value:.3f}" if value is not None and top is not None else MISSING)
        table.append([row.label, row.imagery, *gaps])
    lines += table_lines(["Method", "Imagery", *(f"{t} gap" for t in tasks)], table, "ll" + "r" * len(tasks))
    return lines + [""]


def _colour_floor(rows: dict[Row, dict[str, dict]], imagery: str, task: str) -> float | None:
    """The colour-histogram floor's R² on ``imagery`` (a fused method: the better of SV and SI)."""
    values = [v[task]["r2"]["mean"] for r, v in rows.items() if r.role == "floor" and r.strategy == "random"
              and r.label.startswith("Colour histogram") and r.imagery in imagery.split("+") and task in v]
    return max(values) if values else None


def _role_r2(rows: dict[Row, dict[str, dict]], role: str, imagery: str, task: str) -> float | None:
    """The best R² of a framing role's rows on exactly ``imagery``."""
    values = [v[task]["r2"]["mean"] for r, v in rows.items() if r.role == role and r.strategy == "random"
              and r.imagery == imagery and task in v]
    return max(values) if values else None


def _percent(share: float) -> str:
    value = round(100 * share)
    return f"{value if value != 0 else 0} %"  # no "-0 %"


def _information_chain(rows: dict[Row, dict[str, dict]], methods: dict[Row, dict[str, dict]],
                       tasks: list[str]) -> list[str]:
    """Where the information is, per task and imagery (latent oracle → scene-graph ceiling → caption text →
    best method → colour floor), and each method's share of the floor → scene-graph gap it closes."""
    imageries = sorted({r.imagery for r in rows if r.role == "ceiling" and r.strategy == "random"},
                       key=lambda i: ("SV", "SI", "SV+SI").index(i) if i in ("SV", "SI", "SV+SI") else 9)
    if not imageries:
        return []

    def fmt(value: float | None) -> str:
        return MISSING if value is None else f"{value:.3f}"

    lines = ["", "Where the information is (R²): the latent oracle (all a region's latents), the scene-graph ceiling "
                 "(what a perfect parser of the pixels could know), the best caption-text row (what the caption sets "
                 "know before any image training), the best method and the colour floor.", ""]
    chain = []
    for task in tasks:
        for imagery in imageries:
            best = max((v[task]["r2"]["mean"] for r, v in methods.items() if r.imagery == imagery and task in v),
                       default=None)
            oracle = _role_r2(rows, "oracle", "SI" if imagery == "SV+SI" else imagery, task)
            chain.append([task, imagery, fmt(oracle), fmt(_role_r2(rows, "ceiling", imagery, task)),
                          fmt(_role_r2(rows, "reference", imagery, task)), fmt(best),
                          fmt(_colour_floor(rows, imagery, task))])
    lines += table_lines(["Task", "Imagery", "Latent oracle", "Scene-graph ceiling", "Caption text", "Best method",
                          "Colour floor"], chain, "llrrrrr")
    lines += ["", "Share of the gap from the colour floor to the scene-graph ceiling that each method closes "
                  "((R² − floor) / (ceiling − floor) on its imagery; 100 % = all a perfect parser could add, "
                  "below 0 = under the floor):", ""]
    table = []
    for row in sorted(methods, key=_sort_key):
        shares = []
        for task in tasks:
            floor, top = _colour_floor(rows, row.imagery, task), _role_r2(rows, "ceiling", row.imagery, task)
            value = methods[row].get(task, {}).get("r2", {}).get("mean")
            shares.append(None if None in (floor, top, value) or top - floor <= 0 else (value - floor) / (top - floor))
        known = [x for x in shares if x is not None]
        cells = [MISSING if x is None else _percent(x) for x in shares]
        table.append([row.label, row.imagery, *cells, _percent(sum(known) / len(known)) if known else MISSING])
    return lines + table_lines(["Method", "Imagery", *(f"{t} share" for t in tasks), "Mean"], table,
                               "ll" + "r" * (len(tasks) + 1))


def _split_agreement(rows: dict[Row, dict[str, dict]], tasks: list[str]) -> list[str]:
    """Random vs spatial-block splits: per task, the Spearman rank correlation of the methods' R² under the
    two strategies (random splits put neighbours of test regions in training, which inflates scores and can
    reorder models on real cities), over the methods (native imagery, no ablations) that have both."""
    by_strategy: dict[str, dict[tuple[str, str], dict]] = defaultdict(dict)
    for row, metrics in rows.items():
        if row.role == "method" and row.native and not row.ablation:
            by_strategy[row.strategy][(row.label, row.imagery)] = metrics
    random, block = by_strategy.get("random", {}), by_strategy.get("spatial-block", {})
    shared = sorted(set(random) & set(block))
    if not shared:
        return []
    lines = ["", "Random vs spatial-block splits: Spearman ρ of the methods' R² under the two split strategies, "
                 "over the methods that have both (ρ near 1: the spatial-block split keeps the ranking).", ""]
    table = []
    for task in tasks:
        pairs = [(random[k][task]["r2"]["mean"], block[k][task]["r2"]["mean"]) for k in shared
                 if task in random[k] and task in block[k]]
        if not pairs:
            continue
        rho = spearman([a for a, _ in pairs], [b for _, b in pairs])
        drop = sum(a - b for a, b in pairs) / len(pairs)
        table.append([task, f"{MISSING if rho is None else f'{rho:+.2f}'} ({len(pairs)})", f"{drop:+.3f}"])
    return lines + table_lines(["Task", "ρ random vs spatial-block (n)", "Mean R² drop (random − spatial-block)"],
                               table, "lrr")


def _starts_from(record: Record) -> str:
    """The registered starting-weights row of a record's method (MethodMeta.starts_from); "" for a method
    that is not installed here or has none."""
    from urbanln_bench.method import get_method

    try:
        return get_method(record.method.name).meta.starts_from
    except Exception:  # a plugin's record read where the plugin is not installed
        return ""


def _learning_check(rows: dict[Row, dict[str, dict]], methods: dict[Row, dict[str, dict]],
                    tasks: list[str]) -> list[str]:
    """Did pretraining move each trained method's encoder? Per method, the cells where it beats its own
    starting weights (role ``start``) and random features with a paired 95 % interval above 0, and the
    paired R² differences from its starting weights."""
    def record_of(name: str, imagery: str, task: str) -> Record | None:
        for row, metrics in rows.items():
            record = metrics.get(task, {}).get("record")
            if record is not None and row.strategy == "random" and record.method.name == name \
                    and not record.method.overrides and row.imagery == imagery:
                return record
        return None

    table: list[list[str]] = []
    for row in sorted(methods, key=_sort_key):
        records = {t: methods[row][t]["record"] for t in tasks if "record" in methods[row].get(t, {})}
        start = next((_starts_from(r) for r in records.values()), "")
        if not start:
            continue
        won = {"start": [0, 0], "random": [0, 0]}
        deltas = []
        for task in tasks:
            record = records.get(task)
            delta = None
            random = "random-features-fused" if row.imagery == "SV+SI" else "random-features"
            for key, name in (("start", start), ("random", random)):
                other = record_of(name, row.imagery, task) if record is not None else None
                difference = paired_difference(record, other) if other is not None else None
                if difference is not None:
                    won[key][1] += 1
                    won[key][0] += difference.low > 0
                    if key == "start":
                        delta = difference
            deltas.append(MISSING if delta is None else delta.text())
        counts = [f"{a} / {n}" if n else MISSING for a, n in (won["start"], won["random"])]
        table.append([row.label, row.imagery, *counts, *deltas])
    if not table:
        return []
    return ["", "Does pretraining move the encoder? Cells (tasks) where a trained method beats its own "
                "starting weights (the same encoder frozen before its pretraining) and random features: "
                "paired 95 % bootstrap interval of the R² difference above 0, over the cells where both "
                "records keep test predictions; then the difference from the starting weights per task.", "",
            *table_lines(["Method", "Imagery", "Beats its starting weights", "Beats random features",
                          *(f"{t} Δ vs start" for t in tasks)], table, "llrr" + "l" * len(tasks))]


def overall_section(tables: dict[tuple[str, str], dict[Row, dict[str, dict]]],
                    comparisons_of: dict[tuple[str, str], dict[str, CellComparison]]) -> list[str]:
    """The top-of-leaderboard summary across cities, one table per data tag (twin scale or real manifest: ranks
    over a mix of synthetic and real cells would mean nothing): per competing method (native imagery, random
    split), its mean rank over every (city, task) cell with comparable records and the 95 % bootstrap interval
    (``compare.mean_ranks``, GEO-Bench's aggregate), how many of those cells it wins and in how many it is
    statistically tied with the winner (the city tables' paired comparisons)."""
    lines: list[str] = []
    for tag in sorted({tag for _, tag in tables}):
        keys = [key for key in tables if key[1] == tag and comparisons_of.get(key)]
        if not keys:
            continue
        cells, wins, ties, where = [], defaultdict(int), defaultdict(int), defaultdict(set)
        for key in sorted(keys, key=lambda k: (CITY_ORDER.index(k[0]) if k[0] in CITY_ORDER else len(CITY_ORDER), k)):
            methods = {r: v for r, v in native_rows(tables[key]).items() if r.role == "method"}
            for task, comparison in comparisons_of[key].items():  # cell_comparisons: the city's tasks only
                cells.append({r.label + "|" + r.imagery: v[task]["record"] for r, v in methods.items()
                              if task in v and "record" in v[task]})
                wins[comparison.winner] += 1
                for label in comparison.differences:
                    ties[label] += comparison.tied(label)
                for label in cells[-1]:
                    where[label].add(key[0])
        ranks = mean_ranks(cells)
        if not ranks:
            continue
        cities = sorted({key[0] for key in keys}, key=lambda c: (CITY_ORDER.index(c) if c in CITY_ORDER else 9, c))
        kind = "synthetic twins" if tag.startswith("synthetic") else "real data"
        lines += [f"## All cities — summary (`{tag}`, {kind})", "",
                  f"Over every city × task cell of {', '.join(cities)} where the records keep test predictions: "
                  "each method's rank per cell among the methods of that city's table (1 = highest R²; native "
                  "imagery, random split; floors, references and ceilings excluded), averaged over its cells, with "
                  "the 95 % bootstrap interval from resampling every cell's test regions; wins = cells where it has "
                  "the highest R²; tied = cells where its paired 95 % interval of the R² difference from the "
                  "winner contains 0. A method ranked over fewer cells, or other cities, is ranked against a "
                  "different field: read its mean rank with its cell count. A rank cannot go below 1, so a method "
                  "that wins most cells can only lose rank in a resample: its interval starts at or near its mean "
                  "rank (a percentile interval, not mean ± a symmetric margin).", ""]
        table = [[*label.split("|"), f"{rank.mean:.2f}", f"[{rank.low:.2f}, {rank.high:.2f}]", str(wins[label]),
                  str(ties[label]), str(rank.cells), ", ".join(sorted(where[label]))]
                 for label, rank in sorted(ranks.items(), key=lambda kv: (kv[1].mean, kv[0]))]
        lines += table_lines(["Method", "Imagery", "Mean rank", "95 % interval", "Wins", "Tied with the winner",
                              "Cells", "Cities"], table, "llrlrrrl")
        lines.append("")
    return lines


TRANSFER_TASK = "Pop"


def _cell_metrics(record: Record | None) -> dict:
    """A record as a table cell's metrics (``{"r2": …, …, "record": record}``, as ``collect`` gives them); {} for none."""
    return {**record.metric_dicts(), "record": record} if record else {}


def transfer_section(results_dir: Path, figures_link: str = FIGURES_LINK,
                     records: list[Record] | None = None) -> tuple[list[str], list[Figure]]:
    """Source rows × target columns, Pop R² per imagery, from records whose fit city differs from the cell's
    (``run --pretrain-city``). In-city records of the same method fill the diagonal when they exist; a last row
    gives the method's starting weights (``MethodMeta.starts_from``: no pretraining at all) on each probed city,
    so the reader sees what pretraining anywhere adds. Under each grid, every off-diagonal cell's paired
    difference from the in-city diagonal of its column (same probed city, same splits). Each grid is also drawn
    as a heatmap (the paper's Figure 5), linked under its table."""
    entries: dict[tuple[str, str, str], dict[tuple[str, str], Record]] = defaultdict(dict)
    targets: dict[tuple[str, str], set[str]] = defaultdict(set)
    transfer_methods: dict[tuple[str, str], str] = {}
    records = [record for record in (store_records(results_dir) if records is None else records)
               if record.cell.task == TRANSFER_TASK]
    for record in records:
        if record.is_transfer:
            transfer_methods[(record.method.variant, record.data.tag)] = _starts_from(record)
    starts: dict[tuple[str, str, str], Record] = {}  # (start method name, tag, cell id) → its in-city record
    for record in records:
        if not record.is_transfer and record.method.role == "start":
            starts[(record.method.name, record.data.tag, record.cell.id)] = record
    for record in records:
        cell, method = record.cell, record.method
        if (method.variant, record.data.tag) not in transfer_methods:
            continue
        key = (method.variant, record.data.tag, cell.imagery)
        entries[key][(record.fit_city, cell.city)] = record
        targets[key[:2]].add(cell.city)
    if not entries:
        return [], []
    figures: list[Figure] = []
    lines = ["## Transfer — pretrain on one city, probe another", "",
             f"{TRANSFER_TASK} R² (mean ± std over probe seeds). Rows: the city the method was pretrained on "
             "(`run --pretrain-city`); columns: the city embedded and probed. The diagonal is in-city pretraining; "
             "the last row, the method's starting weights (no pretraining). Under each grid: every other cell minus "
             "the in-city diagonal of its column, with its 95 % paired bootstrap interval over the probed city's "
             "test regions and seeds (≈: the interval contains 0).", ""]
    for variant, tag, imagery in sorted(entries):
        cities = sorted(targets[(variant, tag)] | {s for s, _ in entries[(variant, tag, imagery)]},
                        key=lambda c: (CITY_ORDER.index(c) if c in CITY_ORDER else len(CITY_ORDER), c))
        grid = entries[(variant, tag, imagery)]
        start_name = transfer_methods[(variant, tag)]
        start = {t: starts.get((start_name, tag, f"{t}/{TRANSFER_TASK}/{imagery}")) for t in cities}
        sources = [source for source in cities if any((source, target) in grid for target in cities)]
        table = [[source, *(_fmt(_cell_metrics(grid.get((source, target))).get("r2")) for target in cities)]
                 for source in sources]
        start_label = ""
        if any(start.values()):
            start_label = next(r.method.display_name for r in start.values() if r)
            table.append([f"*{start_label}*", *(_fmt(_cell_metrics(start[t]).get("r2")) for t in cities)])
        deltas = []
        for label, row in [*((source, {t: grid.get((source, t)) for t in cities}) for source in sources),
                           *([(f"*{start_label}*", start)] if start_label else [])]:
            cells = []
            for target in cities:
                diagonal, other = grid.get((target, target)), row.get(target)
                if other is None or diagonal is None or other is diagonal:
                    cells.append(MISSING)
                    continue
                cells.append(_delta(_cell_metrics(other), _cell_metrics(diagonal))[0])
            if any(c != MISSING for c in cells):
                deltas.append([label, *cells])
        figure = TransferFigure(
            file_name("transfer", tag, variant, imagery), f"{variant}, {imagery} ({tag}): {TRANSFER_TASK} R² by "
            "pretraining city (rows) and probed city (columns), the table above", f"{variant}, {imagery}: "
            f"{TRANSFER_TASK} R²", tuple(sources), tuple(cities),
            tuple(tuple(grid[(s, t)].metric("r2").mean if (s, t) in grid else None for t in cities) for s in sources))
        figures.append(figure)
        lines += [f"### {variant}, {imagery} (`{tag}`)", "",
                  *table_lines(["pretrained on ↓, probed on →", *cities], table, "l" + "r" * len(cities)), ""]
        if deltas:
            lines += [f"Δ {TRANSFER_TASK} R² from in-city pretraining:", "",
                      *table_lines(["pretrained on ↓, probed on →", *cities], deltas, "l" + "r" * len(cities)), ""]
        lines += [*figure_link(figure, figures_link), ""]
    return lines, figures


SWEEP_SETTING = "mu"  # the setting Table 4 sweeps (L = (1 − μ)·L_C + μ·L_D, UrbanLN Eq. 6)
SWEEP_TASK = "Pop"  # Table 4 reports population R² only
PAPER_IMAGERY = {"SV": "street-view", "SI": "satellite"}  # reference/paper.py's names for Table 4's imageries


def _sweep_mark(interval: Interval | None) -> str:
    """▲ / ▼: the paired 95 % interval of the difference from the full method lies above / below 0; ≈: it
    contains 0; nothing where the records keep no test predictions (no interval)."""
    if interval is None or interval.low is None or interval.high is None:
        return ""
    return " ▲" if interval.low > 0 else " ▼" if interval.high < 0 else TIE_MARK


def mu_sweep_section(tables: dict[tuple[str, str], dict[Row, dict[str, dict]]]) -> list[str]:
    """The paper's Table 4 across cities: Pop R² of UrbanLN at every μ with records, per city and imagery, the
    paper's row above the twin's. Each twin value carries its paired comparison with the full method's μ (the
    per-city ablation tables give the Δ and its interval); the last column gives the μ of the highest mean, and
    the closing lines count where twin and paper agree. Only variants that override μ alone count."""
    from urbanln_bench.reference.paper import mu_sweep

    paper: dict[tuple[str, str], dict[float, float]] = defaultdict(dict)
    for point in mu_sweep():
        paper[(point.city, point.imagery)][point.mu] = point.pop_r2
    lines: list[str] = []
    for tag in sorted({tag for _, tag in tables}):
        sweeps: list[tuple[str, str, float, dict[float, tuple[float, Interval | None]], dict[float, float]]] = []
        for city in sorted({c for c, t in tables if t == tag},
                           key=lambda c: (CITY_ORDER.index(c) if c in CITY_ORDER else len(CITY_ORDER), c)):
            ours = {r: v for r, v in tables[(city, tag)].items()
                    if r.ours and r.role == "method" and r.strategy == "random"}
            variants = _setting_sweeps(ours).get(SWEEP_SETTING, {})
            for imagery in sorted(variants, key=_imagery_rank):
                anchored = _sweep_anchor(ours, imagery, SWEEP_SETTING)
                if anchored is None or SWEEP_TASK not in anchored[0]:
                    continue
                full, anchor = anchored
                points: dict[float, tuple[float, Interval | None]] = {anchor: (full[SWEEP_TASK]["r2"]["mean"], None)}
                for value, row in variants[imagery].items():
                    if SWEEP_TASK in (metrics := ours[row]):
                        points[value] = (metrics[SWEEP_TASK]["r2"]["mean"],
                                         _delta(metrics[SWEEP_TASK], full[SWEEP_TASK])[1])
                if len(points) > 1:
                    sweeps.append((city, imagery, anchor, points,
                                   paper.get((city, PAPER_IMAGERY.get(imagery, "")), {})))
        if not sweeps:
            continue
        mus = sorted({m for *_, points, reported in sweeps for m in (*points, *reported)})
        table, same_peak, compared, flat = [], 0, 0, 0
        for city, imagery, anchor, points, reported in sweeps:
            twin_best = max(points, key=lambda m: (points[m][0], -m))
            if reported:
                paper_best = max(reported, key=lambda m: (reported[m], -m))
                table.append([city, imagery, "paper-reported",
                              *(f"{reported[m]:.3f}" if m in reported else MISSING for m in mus), f"{paper_best:g}"])
                shared = [m for m in points if m in reported]
                if set(reported) <= set(points):  # the twin measured every μ the paper reports
                    compared += 1
                    same_peak += max(shared, key=lambda m: (points[m][0], -m)) == paper_best
            table.append([city, imagery, "twin",
                          *(f"{points[m][0]:.3f}" + ("" if m == anchor else _sweep_mark(points[m][1]))
                            if m in points else MISSING for m in mus), f"{twin_best:g}"])
            flat += all(_sweep_mark(points[m][1]) == TIE_MARK for m in points if m != anchor)
        kind = "synthetic twins" if tag.startswith("synthetic") else "real data"
        lines += [f"## μ sweep across cities — the paper's Table 4 (`{tag}`, {kind})", "",
                  f"UrbanLN's {SWEEP_TASK} R² (mean over probe seeds) for each weight μ of the loss (Eq. 6), per city "
                  "and imagery; *paper-reported* rows are the paper's Table 4 (real data), the *twin* rows this "
                  "harness's records. Against the full method's μ on the same cell (95 % paired bootstrap "
                  f"interval of the difference): ▲ higher, ▼ lower, {TIE_MARK.strip()} tied; the Δ and its interval "
                  "are in each city's ablation table. *Peak*: the μ with the highest mean.", ""]
        lines += table_lines(["City", "Imagery", "Source", *(f"μ = {m:g}" for m in mus), "Peak"], table,
                             "lll" + "r" * (len(mus) + 1))
        lines += ["", f"Over the μ both sides measured, the twin peaks where the paper does in {same_peak} of "
                  f"{compared} sweeps; in {flat} of {len(sweeps)} twin sweeps no μ differs significantly from the full "
                  "method's.", ""]
    return lines


def profile_section(results_dir: Path, figures_link: str = FIGURES_LINK) -> tuple[list[str], list[Figure]]:
    """The paper's Figure 4 per stored profile (``profile --save``): a table of every method profiled and a
    scatter of parameters against images/s, under a heading naming the machine and that weights are random.
    The numbers are the stored measurement's; nothing is measured here."""
    from urbanln_bench.measurements import ProfileRecord, iter_measurements

    stored = [(path, m) for path, m in iter_measurements(results_dir, skip_corrupt=True) if isinstance(m, ProfileRecord)]
    if not stored:
        return [], []
    lines = ["## Parameters and speed (Figure 4)", "",
             "Per method: every parameter of its model(s) (text towers and heads included), the parameters its city "
             "pretraining updates, and inference images/s of its image encoder on random pixels, as stored by "
             "`urbanln-bench profile --save` (`results/profiles/`). Images/s is a wall-clock measurement of the "
             "named machine, not a result that reproduces elsewhere; `leaderboard` never measures again.", ""]
    figures: list[Figure] = []
    for path, profile in stored:
        machine = profile.machine
        heading = (f"{machine.label}; `{profile.profile}` profile, {profile.device}, batch {profile.batch_size} × "
                   f"{profile.batches}; random weights")
        table = []
        for m in profile.methods:
            def count(value: int | None) -> str:
                return MISSING if value is None else f"{value:,}"
            speed = MISSING if m.images_per_second is None else f"{m.images_per_second:,.1f}"
            table.append([m.display_name, m.method, f"{m.input_size} px", count(m.total), count(m.trainable), speed,
                          machine.device, m.note.replace("|", "/")])
        points = tuple(ProfilePoint(m.display_name, m.total, m.trainable or 0, float(m.images_per_second))
                       for m in profile.methods if m.total is not None and m.images_per_second)
        lines += [f"### {heading}", "",
                  *table_lines(["Method", "Name", "Input", "Total params", "Trainable params", "Images/s", "Machine",
                                "Note"], table, "lllrrrll"), "",
                  f"Stored in `{path.relative_to(results_dir).as_posix()}` ({machine.platform}, Python "
                  f"{machine.python}, CPU {machine.cpu}); {profile.weights}.", ""]
        if points:
            figure = ProfileFigure(
                file_name("profile", machine.slug, profile.profile, profile.device),
                f"Figure 4 on {machine.device.replace(':', ' ')} ({machine.cores} cores), {profile.profile} profile, "
                "random weights: parameters (total filled, trainable open) vs inference images/s per method, the "
                "table above", points)
            figures.append(figure)
            lines += [*figure_link(figure, figures_link), ""]
    return lines, figures


def fidelity_section(results_dir: Path, figures_link: str = FIGURES_LINK) -> tuple[list[str], list[Figure]]:
    """Caption fidelity per pipeline stage from stored reports (``captions report --save``): a table per city ×
    imagery (object precision = 1 − hallucination, recall, mean CLIP tokens per stage) and one figure per data
    tag with every city × imagery of it."""
    from urbanln_bench.measurements import FidelityRecord, iter_measurements, stage_rank

    stored = [m for _, m in iter_measurements(results_dir, skip_corrupt=True) if isinstance(m, FidelityRecord)]
    if not stored:
        return [], []

    def rank(m: FidelityRecord) -> tuple:
        return (m.tag, CITY_ORDER.index(m.city) if m.city in CITY_ORDER else len(CITY_ORDER), m.city,
                _imagery_rank(m.imagery))

    lines = ["## Caption fidelity per stage", "",
             "The caption pipeline's stages scored against the synthetic twins' scene graphs (`urbanln-bench captions "
             "report --save`): object precision (1 − hallucination rate) and recall of the objects a caption names, "
             "and its mean length in CLIP tokens (CLIP reads 77). Raw and refined rows average every candidate; "
             "\"selected (random)\" is the w/o Consensus ablation's choice among the same refined candidates. "
             "**Synthetic**: simulated captioners on synthetic twins, not the paper's MLLMs on real imagery.", ""]
    figures: list[Figure] = []
    by_tag: dict[str, list[FidelityRecord]] = defaultdict(list)
    for m in sorted(stored, key=rank):
        by_tag[m.tag].append(m)
    for tag, group in by_tag.items():
        for m in group:
            settings = m.settings
            limit = settings.get("limit")
            lines += [f"### {m.city} {m.imagery} (`{tag}`)", "",
                      *table_lines(["Stage", "Captions", "Object precision", "Object recall", "CLIP tokens"],
                                   [[s.stage, str(s.captions), f"{s.object_precision:.3f}", f"{s.object_recall:.3f}",
                                     f"{s.clip_tokens:.1f}"] for s in sorted(m.stages, key=lambda s: stage_rank(s.stage))],
                                   "lrrrr"), "",
                      f"Caption set `{m.caption_key}`: {len(settings.get('captioners') or ())} captioner(s) × "
                      f"{settings.get('candidates_per_captioner')} candidate(s), "
                      + (f"refined with `{settings.get('phrase_scorer')}`" if settings.get("refinement")
                         else "refinement off")
                      + (f", first {limit} images only" if limit else "")
                      + (f"; {m.phrases['judged']} phrases judged, {100 * m.phrases['kept_share']:.0f} % kept"
                         if m.phrases.get("judged") else "") + f"; {m.label}.", ""]
        stages = tuple(sorted({s.stage for m in group for s in m.stages}, key=stage_rank))

        def per_stage(m: FidelityRecord, attribute: str, stages: tuple[str, ...] = stages) -> tuple[float | None, ...]:
            values = {s.stage: getattr(s, attribute) for s in m.stages}
            return tuple(values.get(stage) for stage in stages)

        figure = FidelityFigure(
            file_name("caption-fidelity", tag), f"Caption fidelity per pipeline stage ({tag}): object precision "
            "(solid) and recall (dashed), mean CLIP tokens, per city and imagery, the tables above", stages,
            tuple(FidelitySeries(f"{m.city} {m.imagery}", per_stage(m, "object_precision"),
                                 per_stage(m, "object_recall"), per_stage(m, "clip_tokens")) for m in group))
        figures.append(figure)
        lines += [*figure_link(figure, figures_link), ""]
    return lines, figures


def case_study_section(results_dir: Path, figures_link: str = FIGURES_LINK) -> tuple[list[str], list[Figure]]:
    """The paper's Figure 6 per case-study artifact of the store (``urbanln-bench case-study``): the figure, and
    under it its numbers per cluster (the per-region values are in the artifact, which the caption names).
    Artifacts that cannot be read are left out (``leaderboard --check`` names them)."""
    from urbanln_bench.case_study import iter_case_studies

    studies = sorted(iter_case_studies(results_dir, skip_corrupt=True), key=lambda s: (
        CITY_ORDER.index(s.city) if s.city in CITY_ORDER else len(CITY_ORDER), s.city, s.tag, s.path.as_posix()))
    if not studies:
        return [], []
    lines = ["## Case study (Figure 6)", "",
             "A method's region embeddings of one city (`urbanln-bench case-study`), standardised: PCA to two "
             "components (to draw them) and k-means on the full standardised embedding; clusters numbered by their "
             "mean PC1. Per cluster, the task's raw value (mean, median) over its labelled regions, and the regions "
             "nearest its centroid whose images the figure shows.", ""]
    figures: list[Figure] = []
    for study in studies:
        figure, table_lines_ = _case_study(study, results_dir)
        figures.append(figure)
        data = study.data
        lines += [f"### {study.city}, {data['method']['variant']}, {data['imagery']} (`{study.tag}`)", "",
                  *table_lines_, "", *figure_link(figure, figures_link), ""]
    return lines, figures


def _case_study(study, results_dir: Path) -> tuple[CaseStudyFigure, list[str]]:
    """One artifact's figure and its table."""
    import base64

    data, regions = study.data, study.data["regions"]
    task, tag, imagery, variant = data["task"], study.tag, data["imagery"], data["method"]["variant"]
    explained = tuple(float(v) for v in data["pca"]["explained_variance"])
    grid = "row" in regions and "col" in regions
    where = study.path.relative_to(results_dir).as_posix() if study.path.is_relative_to(results_dir) else study.path.name
    figure = CaseStudyFigure(
        name=file_name(study.city, tag, "case-study", data["method"]["slug"], imagery),
        caption=(f"{study.city} ({tag}), {variant}, {imagery}: PCA of the region embeddings coloured by k-means "
                 f"cluster, the clusters on the map, ln({task} + 1) per cluster and the images nearest each "
                 f"centroid (the paper's Figure 6; per-region values in `{where}`)"),
        title=f"{variant}, {study.city} {imagery}", task=task, explained=(explained[0], explained[1]),
        map_axes=("col", "row") if grid else ("lon", "lat"),
        x=tuple(float(v) for v in regions["col" if grid else "lon"]),
        y=tuple(float(v) for v in regions["row" if grid else "lat"]),
        pc1=tuple(float(v) for v in regions["pc1"]), pc2=tuple(float(v) for v in regions["pc2"]),
        cluster=tuple(int(c) for c in regions["cluster"]),
        ln_y=tuple(None if v is None else float(v) for v in regions["ln_y"]),
        sizes=tuple(int(c["size"]) for c in data["clusters"]),
        thumbnails=tuple(tuple(base64.b64decode(s["png"]) for s in c["samples"]) for c in data["clusters"]))

    def number(value) -> str:
        return MISSING if value is None else f"{value:.5g}"

    table = [[str(c["cluster"] + 1), str(c["size"]), str(c["labelled"]), number(c["mean_y"]), number(c["median_y"]),
              number(c["mean_ln_y"]), number(c["mean_pc1"]), number(c["mean_pc2"]),
              ", ".join(s["region"] for s in c["samples"])] for c in data["clusters"]]
    head = [f"{data['embedding']['regions']} regions with {imagery} imagery, {data['embedding']['dim']}-d embedding "
            f"({data['data']['label']}); PC1 holds {100 * explained[0]:.1f} % and PC2 {100 * explained[1]:.1f} % of "
            f"the standardised embedding's variance; {len(data['clusters'])} clusters.", ""]
    return figure, head + table_lines(["Cluster", "Regions", f"With {task}", f"Mean {task}", f"Median {task}",
                                       f"Mean ln({task}+1)", "Mean PC1", "Mean PC2", "Sample regions"],
                                      table, "rrrrrrrrl")


@dataclass(frozen=True)
class Leaderboard:
    """leaderboard.md's text and the figures it links (drawn by ``figures.render_png``)."""

    text: str
    figures: tuple[Figure, ...]


def render_leaderboard(results_dir: Path, figures_link: str = FIGURES_LINK) -> str:
    """leaderboard.md's text (the figures it links are not drawn)."""
    return build_leaderboard(results_dir, figures_link).text


def build_leaderboard(results_dir: Path, figures_link: str = FIGURES_LINK) -> Leaderboard:
    """leaderboard.md from the records under ``results_dir``; figures are linked as ``figures_link/<name>``."""
    from urbanln_bench.specs import get_city

    records = store_records(results_dir)
    tables = collect(results_dir, records)
    caps = street_view_caps(results_dir, records)
    figures: list[Figure] = []
    lines = [
        "# urbanln-bench leaderboard",
        "",
        "Generated by `urbanln-bench leaderboard` from the result records in `results/` — do not edit by hand.",
        "Metrics: R², RMSE and MAE on ln(y+1), test split, mean ± std over probe seeds; MLP probe on frozen",
        "embeddings (same head, budget and seeds for every method). **Synthetic** rows come from the synthetic",
        "twins (procedural cities, docs/twins.md), not from the paper's real data; *paper-reported* rows are the",
        "paper's own numbers on real data, shown for orientation only. *Weights* names each row's weight source",
        "(a `surrogate` is pretrained by the harness on the synthetic pretraining world, not ImageNet/LAION).",
        "",
    ]
    seeds = seeds_line(results_dir, records)
    if seeds:
        lines += [seeds, ""]
    def city_rank(key):
        city, tag = key
        return (CITY_ORDER.index(city) if city in CITY_ORDER else len(CITY_ORDER), city, tag)

    tasks_of: dict[tuple[str, str], list[str]] = {}
    comparisons_of: dict[tuple[str, str], dict[str, CellComparison]] = {}
    for city, tag in sorted(tables, key=city_rank):  # bootstraps: once per city, before the cross-city summary
        rows = tables[(city, tag)]
        try:
            tasks_of[(city, tag)] = list(get_city(city).tasks)
        except Exception:  # a user's city without its file: fall back to the tasks recorded
            tasks_of[(city, tag)] = sorted({t for v in rows.values() for t in v})
        comparisons_of[(city, tag)] = cell_comparisons(native_rows(rows), tasks_of[(city, tag)])
    lines += overall_section(tables, comparisons_of)
    for city, tag in sorted(tables, key=city_rank):
        rows = tables[(city, tag)]
        tasks = tasks_of[(city, tag)]
        kind = "synthetic twin" if tag.startswith("synthetic") else "real data"
        data_note = (f"**Synthetic data** ({city} twin, scale `{tag.split('-', 1)[1]}`)" if kind == "synthetic twin"
                     else f"Real data (manifest `{tag.split('-', 1)[1]}`)")
        cap = caps.get((city, tag))
        if cap:
            data_note += f", at most {cap} street view{'s' if cap > 1 else ''} per region (`max_street_views` in its city file)"
        lines += [f"## {city} — {kind} (`{tag}`)", "",
                  f"{data_note}. Methods on their native imagery, random 6:2:2 split.", ""]
        comparisons = comparisons_of[(city, tag)]
        lines += city_section(city, tag, rows, tasks, native_only=True, comparisons=comparisons)
        for figure in prediction_figures(city, tag, rows, tasks):
            figures.append(figure)
            lines += ["", *figure_link(figure, figures_link)]
        summary = summary_section(city, tag, rows, tasks, comparisons)
        if summary:
            lines += [""] + summary[:-1]
        ablations, ablation_figures = ablation_section(city, tag, rows, tasks, figures_link)
        figures += ablation_figures
        if ablations:
            lines += [""] + ablations[:-1]
        stages = caption_stage_section(city, tag, rows, tasks)
        if stages:
            lines += [""] + stages[:-1]
        lines += ["", f"### {city} — every imagery variant and split strategy (`{tag}`)", ""]
        lines += city_section(city, tag, rows, tasks, native_only=False)
        lines.append("")
    transfer, transfer_figures = transfer_section(results_dir, figures_link, records)
    lines += transfer
    figures += transfer_figures
    lines += mu_sweep_section(tables)
    for section in (case_study_section, profile_section, fidelity_section):
        extra, extra_figures = section(results_dir, figures_link)
        lines += extra
        figures += extra_figures
    if not tables:
        lines += ["No result records yet: run `urbanln-bench run --method resnet18 --city NY`.", ""]
    return Leaderboard("\n".join(lines).rstrip("\n") + "\n", tuple(figures))
