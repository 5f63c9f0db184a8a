"""``urbanln-bench run``: fit a method on a city, embed once per imagery, probe every task × seed,
write one record per cell (DESIGN §3, §7: embeddings are shared by all tasks and seeds)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from urbanln_bench import HARNESS_VERSION
from urbanln_bench.cache import cache_root, config_hash, file_lock
from urbanln_bench.data.loader import CityData
from urbanln_bench.errors import UserError
from urbanln_bench.method import FitContext, Method, get_method
from urbanln_bench.records import (
    RecordPath,
    check_overwrite,
    data_tag,
    git_revision,
    record_key,
    reusable,
    write_record,
)
from urbanln_bench.registry import suggest
from urbanln_bench.specs import CitySpec, get_task

FIT_SEED = 0  # pretraining seed of every method (probe seeds vary; pretraining runs once per cell group)


@dataclass
class RunOptions:
    method: str
    city: str | None = None
    city_file: Path | None = None
    tasks: list[str] | None = None
    imagery: list[str] | None = None
    scale: str = "small"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    strategy: str = "random"
    overwrite: str = "only-missing"
    tune: int = 0
    device: str = "cpu"
    profile: str = "cpu"
    results_dir: Path = Path("results")
    data_root: Path | None = None
    settings: dict[str, str] = field(default_factory=dict)
    batch_size: int = 64
    embeddings_file: Path | None = None  # eval: probe embeddings made elsewhere instead of a method
    embeddings_label: str | None = None


@dataclass
class CellOutcome:
    cell: str
    record: dict[str, Any] | None  # None when the cell is excluded
    reused: bool = False
    note: str = ""


def parse_seeds(text: str) -> list[int]:
    """'0-4' or '0,1,2' → [0, 1, 2, 3, 4]."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                seeds += list(range(lo, hi + 1))
            elif part:
                seeds.append(int(part))
    except ValueError:
        raise UserError(f"--seeds must look like '0-4' or '0,1,2', got '{text}'") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds must name distinct seeds, got '{text}'")
    return seeds


def parse_cell(cell: str) -> tuple[str, str, str]:
    """'NY/Pop/SV' → ('NY', 'Pop', 'SV'), checked against the catalogue with suggestions."""
    from urbanln_bench.specs import city_names, get_city

    parts = cell.split("/")
    known = [f"{c}/{t}/{i}" for c in city_names() for spec in [get_city(c)] for t in spec.tasks for i in spec.imagery]
    if len(parts) != 3 or cell not in known:
        raise UserError(f"unknown cell '{cell}'{suggest(cell, known)}; cells look like NY/Pop/SV "
                        "(see `urbanln-bench list cells`)")
    return parts[0], parts[1], parts[2]


def parse_settings(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"--set expects KEY=VALUE, got '{item}'")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def select_cells(spec: CitySpec, method: Method, tasks: list[str] | None, imagery: list[str] | None) -> list[tuple[str, str]]:
    """(task, imagery) pairs to run, in the city's task order."""
    for task in tasks or []:
        if task not in spec.tasks:
            raise UserError(f"city {spec.name} has no task '{task}'{suggest(task, list(spec.tasks))}; "
                            f"its tasks: {', '.join(spec.tasks)}")
    runnable = [i for i in method.meta.runnable_imagery() if i == "SV+SI" or i in spec.imagery]
    for requested in imagery or []:
        if requested not in runnable:
            raise UserError(f"method '{method.meta.name}' runs on imagery {', '.join(runnable)}, not '{requested}'")
    chosen_imagery = [i for i in runnable if not imagery or i in imagery]
    return [(t, i) for i in chosen_imagery for t in spec.tasks if not tasks or t in tasks]


def embedding_cache_path(method: Method, data: CityData, imagery: str, fit_city: str) -> Path:
    key = config_hash({"method": method.identity(), "data": data.manifest_hash, "imagery": imagery,
                       "fit_seed": FIT_SEED, "fit_city": fit_city, "harness": HARNESS_VERSION,
                       "pooling": "mean-capped"}, length=20)
    return cache_root() / "embeddings" / method.variant_slug() / f"{data.name}-{imagery.replace('+', '')}-{key}.npz"


def compute_embeddings(method: Method, data: CityData, imagery: str, options: RunOptions,
                       progress: Callable | None):
    from urbanln_bench.embed import Embeddings, embed_city

    path = embedding_cache_path(method, data, imagery, data.name)
    if path.exists():
        return Embeddings.load(path), True
    with file_lock(path.with_suffix(".lock")):
        if path.exists():
            return Embeddings.load(path), True
        extras = {}
        if method.meta.role == "oracle":
            names, matrix = data.latents()
            extras["latents"] = dict(zip(data.regions.ids, matrix, strict=True))
        context = FitContext(seed=FIT_SEED, device=options.device, scale=options.scale, profile=options.profile,
                             work_dir=path.parent / (path.stem + "-work"), progress=progress, extras=extras)
        import torch

        torch.manual_seed(FIT_SEED)
        method.fit(data.unlabelled(), imagery, context)
        embeddings = embed_city(method, data, imagery, context, batch_size=options.batch_size, progress=progress)
        embeddings.save(path)
    return embeddings, False


def probe_cell(embeddings, data: CityData, task: str, imagery: str, options: RunOptions, grid_by_id: dict):
    """Probe one cell for every seed: split over labelled regions, drop those without the imagery."""
    from urbanln_bench.metrics import aggregate
    from urbanln_bench.probe import ProbeConfig, fit_probe, tune_probe
    from urbanln_bench.splits import split_regions

    y_all = data.indicator(task)
    labelled = [rid for rid, v in zip(data.regions.ids, y_all, strict=True) if np.isfinite(v)]
    position = {rid: i for i, rid in enumerate(data.regions.ids)}
    emb_pos = {rid: i for i, rid in enumerate(embeddings.region_ids)}
    X = embeddings.vectors
    y = np.full(len(embeddings.region_ids), np.nan)
    for rid, i in emb_pos.items():
        y[i] = y_all[position[rid]]
    grid = np.asarray([grid_by_id[r] for r in labelled]) if options.strategy == "spatial-block" else None
    per_seed, splits, base = [], {}, ProbeConfig()
    dropped = 0
    tuned = None
    for seed in options.seeds:
        split = split_regions(labelled, city=data.name, task=task, seed=seed, strategy=options.strategy, grid=grid)
        restricted, dropped = split.restrict(emb_pos)
        indices = restricted.indices(embeddings.region_ids)
        config = base
        if options.tune:
            config, summary = tune_probe(X, y, indices, options.tune, seed, base, region_ids=embeddings.region_ids)
            tuned = {"n_trials": options.tune, "best_params": summary.best_params}
        result = fit_probe(X, y, indices, config, seed, region_ids=embeddings.region_ids)
        per_seed.append({"seed": seed, **{k: float(v) for k, v in result.metrics.items()},
                         "best_epoch": result.best_epoch, "n_train": len(indices.train), "n_val": len(indices.val),
                         "n_test": len(indices.test)})
        splits[str(seed)] = restricted.digest
    metrics = aggregate([{k: s[k] for k in ("r2", "rmse", "mae", "rmse_raw", "mae_raw")} for s in per_seed])
    split_info = {"strategy": options.strategy, "seeds": list(options.seeds), "digests": splits,
                  "labelled_regions": len(labelled), "dropped_without_imagery": dropped}
    from urbanln_bench.probe_inputs import FEATURE_CLIP, PROBE_VERSION

    probe_info = {**dataclasses.asdict(base), "digest": base.digest, "version": PROBE_VERSION,
                  "feature_clip_sd": FEATURE_CLIP, "tune_trials": options.tune,
                  "target": "ln(y+1), standardised on train", "tuned": tuned}
    return per_seed, metrics, split_info, probe_info


def make_method(options: RunOptions) -> Method:
    if options.embeddings_file is not None:
        from urbanln_bench.external import make_file_method

        method = make_file_method(options.embeddings_file, options.embeddings_label)
    else:
        method = get_method(options.method)(options.settings)
    method.run_profile = options.profile
    return method


def export_embeddings(options: RunOptions, imagery: str, out: Path, progress: Callable | None = None) -> Path:
    """Fit (or reuse) a method's embeddings of a city and write them as ``.npz`` + JSON sidecar."""
    from urbanln_bench.data.sources import open_city
    from urbanln_bench.specs import get_city

    spec = get_city(options.city, options.city_file)
    method = make_method(options)
    select_cells(spec, method, None, [imagery])
    data = open_city(spec, scale=options.scale, data_root=options.data_root)
    embeddings, _ = compute_embeddings(method, data, imagery, options, progress)
    embeddings.save(out)
    return out


def run(options: RunOptions, progress: Callable | None = None, log: Callable[[str], None] = print) -> list[CellOutcome]:
    from urbanln_bench.data.sources import open_city
    from urbanln_bench.probe_inputs import PROBE_VERSION, ProbeConfig
    from urbanln_bench.specs import get_city
    from urbanln_bench.splits import STRATEGIES

    check_overwrite(options.overwrite)
    if options.strategy not in STRATEGIES:
        raise UserError(f"unknown split strategy '{options.strategy}'{suggest(options.strategy, list(STRATEGIES))}")
    spec = get_city(options.city, options.city_file)
    method = make_method(options)
    cells = select_cells(spec, method, options.tasks, options.imagery)
    data = open_city(spec, scale=options.scale, data_root=options.data_root, progress_factory=(
        (lambda total: progress(f"rendering {spec.name} twin ({options.scale})", total)) if progress else None))
    if method.meta.synthetic_only and data.source != "synthetic":
        raise UserError(f"method '{method.meta.name}' needs a synthetic twin's truth; {data.root} is real data")
    tag = data_tag(data.source, options.scale, data.manifest_hash)
    grid_by_id = {rid: (r, c) for rid, r, c in zip(data.regions.ids, data.regions.row, data.regions.col, strict=True)}
    identity = method.identity()
    meta = method.meta
    outcomes: list[CellOutcome] = []
    revision = git_revision()
    for imagery in dict.fromkeys(i for _, i in cells):
        todo = []
        for task, _ in [(t, i) for t, i in cells if i == imagery]:
            cell_id = f"{spec.name}/{task}/{imagery}"
            task_spec = get_task(task)
            if task_spec.derived_from_aux and task_spec.derived_from_aux in meta.uses_aux:
                outcomes.append(CellOutcome(cell_id, None, note=f"excluded: {meta.display_name} trains on "
                                            f"{task_spec.derived_from_aux}, from which {task} is derived"))
                continue
            key = record_key({"method": identity, "cell": cell_id, "data": data.manifest_hash,
                              "split": [options.strategy, list(options.seeds)], "probe": [ProbeConfig().digest, PROBE_VERSION],
                              "tune": options.tune, "fit_city": spec.name})
            path = RecordPath(options.results_dir, tag, spec.name, method.variant_slug(), task,
                              imagery, options.strategy).path
            stored = reusable(path, key, options.overwrite)
            if stored is not None:
                outcomes.append(CellOutcome(cell_id, stored, reused=True))
            else:
                todo.append((task, cell_id, key, path))
        if not todo:
            continue
        embeddings, cached = compute_embeddings(method, data, imagery, options, progress)
        log(f"{'reused cached' if cached else 'computed'} {imagery} embeddings of {spec.name}: "
            f"{len(embeddings.region_ids)} regions × {embeddings.vectors.shape[1]}")
        for task, cell_id, key, path in todo:
            per_seed, metrics, split_info, probe_info = probe_cell(embeddings, data, task, imagery, options, grid_by_id)
            record = {
                "schema": 1, "key": key,
                "method": {"name": meta.name, "display_name": meta.display_name, "variant": method.variant_label(),
                           "slug": method.variant_slug(), "version": meta.version, "config": method.config,
                           "overrides": method.overrides, "role": meta.role, "ours": meta.ours,
                           "native_imagery": list(meta.native_imagery), "weight_source": method.weight_source(),
                           "uses_aux": list(meta.uses_aux)},
                "cell": {"id": cell_id, "city": spec.name, "task": task, "imagery": imagery},
                "fit_city": spec.name,
                "data": {"source": data.source, "manifest": data.manifest_hash, "scale": options.scale
                         if data.source == "synthetic" else None, "tag": tag},
                "split": split_info, "probe": probe_info, "per_seed": per_seed, "metrics": metrics,
                "embedding": {"dim": int(embeddings.vectors.shape[1]), "regions": len(embeddings.region_ids),
                              "pooling": embeddings.meta.get("pooling"),
                              "max_streetviews_per_region": embeddings.meta.get("max_streetviews_per_region")},
                "harness_version": HARNESS_VERSION, "git_revision": revision,
            }
            write_record(path, record)
            outcomes.append(CellOutcome(cell_id, record))
    return outcomes
