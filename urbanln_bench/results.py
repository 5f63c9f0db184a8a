"""Result records as data: one table row per (record, probe seed), for users who make their own plots.

``load`` reads a result store through :class:`records.Record` (never raw dicts) and flattens each record
into rows with its provenance: city, data (synthetic twin or real, scale, manifest), method and variant,
settings overrides, imagery, task, split strategy, pretraining city, weight source, key, digest, harness
version, git revision and pretraining time. Per-seed columns come from the seed's own entry; the
``*_mean`` / ``*_std`` columns repeat the record's summary on each of its rows. ``predictions`` gives the
stored test predictions one row per region. ``urbanln-bench results`` writes ``load``'s table as CSV,
JSON or Markdown. pandas is imported here only, so the CLI's ``--help`` stays fast.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from urbanln_bench.errors import UserError
from urbanln_bench.records import Record, iter_records

if TYPE_CHECKING:
    import pandas

FORMATS = ("csv", "json", "md")
SEED_METRICS = ("r2", "rmse", "mae", "ridge_r2", "ridge_rmse", "ridge_mae", "rmse_raw", "mae_raw")
SEED_FIELDS = ("n_train", "n_val", "n_test", "best_epoch", "val_r2", "val_mse", "ridge_alpha")
SUMMARY_METRICS = ("r2", "rmse", "mae")
# the column order of ``load``'s frame: provenance first, then the seed's numbers, then the record's summary
COLUMNS = (
    "city", "data", "scale", "manifest", "data_tag", "method", "variant", "label", "role", "ours", "ablation_of",
    "settings", "imagery", "native_imagery", "task", "cell", "split_strategy", "pretrain_city", "transfer", "seed",
    *SEED_METRICS, *SEED_FIELDS, "split_digest", "has_predictions",
    *(f"{m}_{s}" for m in SUMMARY_METRICS for s in ("mean", "std")), "n_seeds",
    "weight_source", "method_version", "key", "digest", "harness_version", "git_revision", "machine",
    "pretrain_seconds", "pretrain_steps", "parameters", "embedding_dim", "path",
)


def settings_text(overrides: dict[str, Any]) -> str:
    """A variant's settings overrides as ``name=value`` pairs (sorted; "" for the method's defaults)."""
    return ",".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in sorted(overrides.items()))


def machine_label(record: Record) -> str | None:
    """The device (a CPU's model, a GPU's name) that fitted and embedded the record's method, else the one that
    probed it; None for a record written before records named their machine."""
    machine = record.machine or {}
    for part in ("embedding", "probe"):
        entry = machine.get(part)
        if isinstance(entry, dict) and entry.get("device"):
            return f"{entry['device']} ({entry.get('isa', '?')})"
    return None


def record_rows(record: Record, path: str = "") -> list[dict[str, Any]]:
    """One row per probe seed of ``record`` (one row with the seed empty for a record without per-seed
    entries, so that no record disappears from the table)."""
    from urbanln_bench.leaderboard import row_label

    method, cell, data = record.method, record.cell, record.data
    pretraining = record.pretraining or {}
    parameters = pretraining.get("parameters")
    base: dict[str, Any] = {
        "city": cell.city, "data": "synthetic twin" if data.source == "synthetic" else "real",
        "scale": data.scale, "manifest": data.manifest, "data_tag": data.tag, "method": method.name,
        "variant": method.variant, "label": row_label(record), "role": method.role, "ours": method.ours,
        "ablation_of": method.ablation_of, "settings": settings_text(method.overrides), "imagery": cell.imagery,
        "native_imagery": cell.imagery in method.native_imagery, "task": cell.task, "cell": cell.id,
        "split_strategy": record.split.get("strategy"), "pretrain_city": record.fit_city,
        "transfer": record.is_transfer, "weight_source": method.weight_source, "method_version": method.version,
        "key": record.key, "digest": record.digest, "harness_version": record.harness_version,
        "git_revision": record.git_revision, "machine": machine_label(record),
        "pretrain_seconds": pretraining.get("seconds"),
        "pretrain_steps": pretraining.get("steps"),
        "parameters": parameters.get("total") if isinstance(parameters, dict) else None,
        "embedding_dim": record.embedding.get("dim"), "path": path, "n_seeds": record.metrics["r2"].n,
    }
    for name in SUMMARY_METRICS:
        base[f"{name}_mean"] = record.metrics[name].mean
        base[f"{name}_std"] = record.metrics[name].std
    digests = record.split.get("digests") or {}
    rows = []
    for entry in record.per_seed or [{}]:
        row = dict(base)
        seed = entry.get("seed")
        row["seed"] = seed
        for name in (*SEED_METRICS, *SEED_FIELDS):
            row[name] = entry.get(name)
        row["split_digest"] = digests.get(str(seed)) if seed is not None else None
        row["has_predictions"] = bool(entry.get("predictions"))
        rows.append(row)
    return rows


def _matches(value: str, wanted: Iterable[str] | str | None) -> bool:
    if wanted is None:
        return True
    return value in ({wanted} if isinstance(wanted, str) else set(wanted))


def load(results_dir: str | Path = "results", *, city: Iterable[str] | str | None = None,
         method: Iterable[str] | str | None = None, task: Iterable[str] | str | None = None,
         imagery: Iterable[str] | str | None = None) -> pandas.DataFrame:
    """The records under ``results_dir`` as a pandas DataFrame, one row per record × probe seed (columns:
    ``COLUMNS``), sorted by record path then seed. Filters take a name or a list of names (``method`` is the
    registered name, e.g. ``urbanln``). Files that are not valid records are left out, as the leaderboard
    leaves them out (``urbanln-bench leaderboard --check`` names them)."""
    import pandas as pd

    results = Path(results_dir)
    if not results.is_dir():
        raise UserError(f"{results}: no result store there (a folder of records, e.g. results/); pass the folder "
                        "`urbanln-bench run` wrote with --results")
    rows: list[dict[str, Any]] = []
    for path, record in iter_records(results, skip_corrupt=True):
        if not (_matches(record.cell.city, city) and _matches(record.method.name, method)
                and _matches(record.cell.task, task) and _matches(record.cell.imagery, imagery)):
            continue
        rows += record_rows(record, path.relative_to(results).as_posix())
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    for name in ("seed", "n_train", "n_val", "n_test", "best_epoch", "pretrain_steps", "parameters",
                 "embedding_dim", "n_seeds"):
        frame[name] = frame[name].astype("Int64")  # integers with gaps (a record without seeds) stay integers
    return frame


def predictions(results_dir: str | Path = "results", *, city: Iterable[str] | str | None = None,
                method: Iterable[str] | str | None = None, task: Iterable[str] | str | None = None,
                imagery: Iterable[str] | str | None = None) -> pandas.DataFrame:
    """The stored test predictions, one row per record × seed × test region: ``city, label, method, imagery,
    task, split_strategy, pretrain_city, seed, region, y, mlp, ridge`` (``y`` and the predictions on
    ln(y+1)). Records made before predictions were stored contribute no rows."""
    import pandas as pd

    from urbanln_bench.leaderboard import row_label

    rows = []
    for _, record in iter_records(Path(results_dir), skip_corrupt=True):
        if not (_matches(record.cell.city, city) and _matches(record.method.name, method)
                and _matches(record.cell.task, task) and _matches(record.cell.imagery, imagery)):
            continue
        head = (record.cell.city, row_label(record), record.method.name, record.cell.imagery, record.cell.task,
                record.split.get("strategy"), record.fit_city)
        for entry in record.per_seed:
            stored = entry.get("predictions") or {}
            ridge = stored.get("ridge") or [None] * len(stored.get("ids", ()))
            for region, y, mlp, ridge_value in zip(stored.get("ids", ()), stored.get("y", ()), stored.get("mlp", ()),
                                                   ridge, strict=False):
                rows.append((*head, entry.get("seed"), region, y, mlp, ridge_value))
    return pd.DataFrame(rows, columns=["city", "label", "method", "imagery", "task", "split_strategy",
                                       "pretrain_city", "seed", "region", "y", "mlp", "ridge"])


def check_format(fmt: str) -> str:
    """``fmt`` when it is one of ``FORMATS`` (checked before the store is read)."""
    if fmt not in FORMATS:
        from urbanln_bench.registry import suggest

        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got '{fmt}'{suggest(fmt, list(FORMATS))}")
    return fmt


def render(frame: pandas.DataFrame, fmt: str) -> str:
    """``frame`` as CSV, JSON (a list of row objects, nulls for gaps) or a Markdown table."""
    check_format(fmt)
    if fmt == "csv":
        return frame.to_csv(index=False, lineterminator="\n")
    if fmt == "json":
        return frame.to_json(orient="records", indent=1, force_ascii=False, double_precision=15) + "\n"
    from urbanln_bench.markdown import markdown_table

    def cell(value: Any) -> str:
        if value is None or (not isinstance(value, str) and _is_missing(value)):
            return ""
        if isinstance(value, float):
            return f"{value:.6g}"
        return str(value).replace("|", "\\|")

    rows = [[cell(v) for v in row] for row in frame.itertuples(index=False, name=None)]
    return markdown_table(list(frame.columns), rows, "l" * len(frame.columns)) + "\n"


def _is_missing(value: Any) -> bool:
    import pandas as pd

    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False
