"""``urbanln-bench run``: fit a method on a city, embed once per imagery, probe every task × seed,
write one record per cell (docs/architecture.md#core-concepts, §7: embeddings are shared by all tasks and seeds)."""

from __future__ import annotations

import collections
import contextvars
import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from urbanln_bench import HARNESS_VERSION, distributed
from urbanln_bench.cache import cache_root, config_hash, file_lock, note_build, remove_leftovers
from urbanln_bench.data.loader import CityData
from urbanln_bench.errors import UserError
from urbanln_bench.fit_inputs import fit_input_identities, fit_input_summaries, needed_fit_inputs
from urbanln_bench.method import FitContext, Method, get_method
from urbanln_bench.paths import contained
from urbanln_bench.profiles import DEFAULT_PROFILE, check_profile
from urbanln_bench.records import (
    CellInfo,
    DataInfo,
    MethodInfo,
    MetricSummary,
    Record,
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
    profile: str = DEFAULT_PROFILE
    results_dir: Path = Path("results")
    data_root: Path | None = None
    settings: dict[str, str] = field(default_factory=dict)
    batch_size: int = 64
    embeddings_file: Path | None = None  # eval: probe embeddings made elsewhere instead of a method
    embeddings_label: str | None = None
    pretrain_city: str | None = None  # transfer: pretrain on this city, embed and probe the target city
    dry_run: bool = False  # only say, per cell, whether a stored record would be reused or the cell computed
    allow_symlinks: bool = False  # accept links out of the --data-root folder (data/links.py)
    render_for_keys: bool = False  # a dry run may render twins (never fit) to know keys (leaderboard --verify-keys)

    def __post_init__(self) -> None:
        check_profile(self.profile)


@dataclass
class CellOutcome:
    cell: str
    record: Record | None  # None when the cell is excluded (or, in a dry run, would be computed)
    reused: bool = False
    note: str = ""
    key: str = ""  # the record key the current code computes (set on every dry-run outcome that would compute)
    fit_shared: bool = False  # computed from a fit kept in this process for another probe city (not fitted again)
    embeddings_cached: bool = False  # computed from embeddings found in the cache: only probed


def parse_seeds(text: str) -> list[int]:
    """'0-4' or '0,1,2' → [0, 1, 2, 3, 4] (``checks.parse_seeds``: distinct, ranges ascending, bounded)."""
    from urbanln_bench.checks import parse_seeds as checked

    return checked(text)


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


def embedding_cache_path(method: Method, data: CityData, imagery: str, fit_data: CityData, profile: str) -> Path:
    key = config_hash({"method": method.identity(), "data": data.manifest_hash, "imagery": imagery,
                       "fit_seed": FIT_SEED, "fit_city": fit_data.name, "fit_data": fit_data.manifest_hash,
                       **fit_input_identities(method, imagery, profile), "harness": HARNESS_VERSION,
                       "pooling": "mean-capped"}, length=20)
    slug = method.variant_slug() + (f"__from-{fit_data.name}" if fit_data.name != data.name else "")
    folder = cache_root() / "embeddings"
    return contained(folder / slug / f"{data.name}-{imagery.replace('+', '')}-{key}.npz", folder, "embedding cache")


FIT_MEMO_SIZE = 1  # fitted methods kept in a process (the grid runs one fit's probe cities in a row)


@dataclass
class FittedMethod:
    """A fitted method and what embedding with it needs, kept so that another probe city of the same fit
    is embedded without fitting again ("fit once, embed many", docs/grid.md#cost-of-the-transfer-grid)."""

    method: Method
    context: FitContext
    provenance: dict[str, Any]
    fit_seconds: float
    random_state: tuple  # the RNGs' state right after the fit: every embedding starts from it, as a fresh fit's did


_FITTED: collections.OrderedDict[str, FittedMethod] = collections.OrderedDict()
# off by default: only callers that ask (the grid's cells) share fits; ``check-method`` and every other
# caller fit a fresh instance each time, as they always did
_SHARING: contextvars.ContextVar[bool] = contextvars.ContextVar("sharing_fits", default=False)


@contextmanager
def sharing_fits() -> Iterator[None]:
    """Inside, ``compute_embeddings`` keeps its fits (``FIT_MEMO_SIZE``) and reuses a kept one for another
    probe city of the same fit (``fit_memo_key``); the kept fits outlive the block, for the next cell of
    the same fit group (``forget_fitted_methods`` drops them)."""
    token = _SHARING.set(True)
    try:
        yield
    finally:
        _SHARING.reset(token)


def fit_memo_key(method: Method, data: CityData, imagery: str, options: RunOptions, fit_data: CityData) -> str:
    """Everything a fit depends on: the method variant, the fit city's data, imagery, profile, scale, device,
    ``FIT_SEED`` and the fit inputs' identities. Not the probe city, unless a fit input the method needs reads
    it (``reads_probe_city``: the oracle's latents and the ceiling's scene graphs are the probe city's own;
    a provider that does not say is assumed to read it)."""
    from urbanln_bench.fit_inputs import reads_probe_city

    parts: dict[str, Any] = {"method": method.identity(), "imagery": imagery, "fit_seed": FIT_SEED,
                             "fit_city": fit_data.name, "fit_data": fit_data.manifest_hash,
                             "profile": options.profile, "scale": options.scale, "device": options.device,
                             **fit_input_identities(method, imagery, options.profile), "harness": HARNESS_VERSION}
    if reads_probe_city(method, imagery, options.profile):
        parts["probe_data"] = data.manifest_hash
    return config_hash(parts, length=24)


def forget_fitted_methods() -> None:
    """Drop the fitted methods this process keeps (tests; a caller that wants the memory back)."""
    _FITTED.clear()


def _random_state() -> tuple:
    import random

    import torch

    return (random.getstate(), np.random.get_state(), torch.get_rng_state(),
            torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None)


def _restore_random_state(state: tuple) -> None:
    import random

    import torch

    random.setstate(state[0])
    np.random.set_state(state[1])
    torch.set_rng_state(state[2])
    if state[3] is not None:
        torch.cuda.set_rng_state_all(state[3])


def compute_embeddings(method: Method, data: CityData, imagery: str, options: RunOptions,
                       progress: Callable | None, fit_data: CityData | None = None):
    """Fit the method on ``fit_data`` (default: ``data``) and embed ``data``; cached per key.

    Inside ``sharing_fits`` a fit is kept in this process (``FIT_MEMO_SIZE``, keyed by ``fit_memo_key``):
    embedding another probe city of the same fit reuses it instead of fitting again, from the same random state, so its embeddings
    (and records) are those a fresh fit would give; ``meta["fit"]["shared"]`` says so.

    Under torchrun (docs/torchrun.md) every rank calls this: rank 0 decides whether the embeddings are
    cached, builds the fit inputs first (the others then read them), all ranks fit together, and rank 0
    alone embeds and writes; the other ranks get ``None``. Fits are not kept there (every rank would have
    to agree on the memo)."""
    from urbanln_bench.embed import Embeddings, embed_city

    fit_data = fit_data or data
    path = embedding_cache_path(method, data, imagery, fit_data, options.profile)
    world = distributed.current()
    if distributed.broadcast_object(path.exists(), world):
        return (Embeddings.load(path) if world.is_main else None), True
    with file_lock(path.with_suffix(".lock")) if world.is_main else nullcontext():
        if distributed.broadcast_object(path.exists(), world):
            return (Embeddings.load(path) if world.is_main else None), True
        if world.is_main:
            for target in (path, path.with_suffix(".json")):  # a killed run's temporary files
                remove_leftovers(target)
        memo_key = fit_memo_key(method, data, imagery, options, fit_data) if _SHARING.get() and not world.active else None
        fitted = _FITTED.get(memo_key) if memo_key else None
        if fitted is None:
            fitted = _fit(method, data, imagery, options, progress, fit_data, path, world)
            if memo_key:
                _FITTED[memo_key] = fitted
                # a kept fit is an artefact of this process: the build log counts them (tests/test_fit_sharing.py)
                note_build("fit", f"{method.variant_slug()} {fit_data.name} {imagery}")
                while len(_FITTED) > FIT_MEMO_SIZE:
                    _FITTED.popitem(last=False)
            shared = False
        else:
            _FITTED.move_to_end(memo_key)
            fitted.context.progress = progress
            shared = True
        embeddings = None
        if world.is_main:
            _restore_random_state(fitted.random_state)
            embeddings = embed_city(fitted.method, data, imagery, fitted.context, batch_size=options.batch_size,
                                    progress=progress)
            embeddings.meta["fit"] = {"city": fit_data.name, "data_manifest": fit_data.manifest_hash,
                                      "seconds": round(fitted.fit_seconds, 1), "report": fitted.method.fit_report(),
                                      **({"shared": True} if shared else {})}
            embeddings.meta.update(fitted.provenance)
            embeddings.meta["machine"] = machine_summary(options.device)
            embeddings.save(path)
            note_build("embeddings", f"{path.parent.name}/{path.name}")
        distributed.barrier(world)
    return embeddings, False


def _fit(method: Method, data: CityData, imagery: str, options: RunOptions, progress: Callable | None,
         fit_data: CityData, path: Path, world) -> FittedMethod:
    """Build the fit inputs and fit ``method`` on ``fit_data`` (seeded with ``FIT_SEED``)."""
    import time

    import torch

    extras: dict[str, Any] = {}
    provenance: dict[str, Any] = {}
    context = FitContext(seed=FIT_SEED, device=options.device, scale=options.scale, profile=options.profile,
                         work_dir=path.parent / (path.stem + "-work"), progress=progress, extras=extras)
    with distributed.main_first(world):  # rank 0 builds the caches; the others read them
        for provider in needed_fit_inputs(method, imagery, options.profile):
            extras[provider.name], info = provider.provide(method, fit_data, data, imagery, options.profile,
                                                           progress)
            if info:
                provenance[provider.name] = info
        if world.active:
            method.prepare_fit(context)
    torch.manual_seed(FIT_SEED)
    started = time.perf_counter()
    method.fit(fit_data.unlabelled(), imagery, context)
    fit_seconds = time.perf_counter() - started
    return FittedMethod(method, context, provenance, fit_seconds, _random_state())


def record_lock(path: Path) -> Path:
    """The lock file of the record at ``path``: in the cache (``locks/records/``), not in the result store,
    which is committed; keyed by the record's resolved path, so two runs on one store and one cache
    take the same lock."""
    digest = config_hash(str(path.resolve()), length=24)
    return cache_root() / "locks" / "records" / f"{digest}.lock"


def spectrum_summary(vectors: np.ndarray) -> dict[str, float | int]:
    """How many directions an embedding uses: the participation ratio (Σλ)² / Σλ² of its PCA spectrum
    (1 = collapsed onto one direction, D = every direction equally) and how many principal components
    hold 90 % and 99 % of its variance."""
    x = np.asarray(vectors, dtype=np.float64)
    x = x - x.mean(axis=0)
    eig = np.clip(np.linalg.svd(x, compute_uv=False) ** 2, 0.0, None)
    total = float(eig.sum())
    if total <= 0:
        return {"participation_ratio": 0.0, "components_90": 0, "components_99": 0}
    share = np.cumsum(eig) / total
    return {"participation_ratio": round(total**2 / float((eig**2).sum()), 3),
            "components_90": int(np.searchsorted(share, 0.90) + 1),
            "components_99": int(np.searchsorted(share, 0.99) + 1)}


PREDICTION_DECIMALS = 6  # ln(y+1) predictions are stored rounded: 1e-6 is far below any R² difference shown


def seed_predictions(region_ids, test_index, truth, mlp, ridge) -> dict[str, list]:
    """A seed's test regions, their ln(y+1) targets and both probes' predictions, as a record keeps them."""
    def rounded(values) -> list[float]:
        return [round(float(v), PREDICTION_DECIMALS) for v in values]

    return {"ids": [region_ids[i] for i in test_index], "y": rounded(truth), "mlp": rounded(mlp),
            "ridge": rounded(ridge)}


def probe_cell(embeddings, data: CityData, task: str, imagery: str, options: RunOptions, grid_by_id: dict):
    """Probe one cell for every seed: split over labelled regions, drop those without the imagery."""
    from urbanln_bench.metrics import aggregate
    from urbanln_bench.probe import ProbeConfig, fit_probe, tune_probe
    from urbanln_bench.ridge import ridge_probe
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
        ridge = ridge_probe(X, y, indices, region_ids=embeddings.region_ids, scaling="global")
        t_val = np.log1p(y[indices.val])
        per_seed.append({"seed": seed, **{k: float(v) for k, v in result.metrics.items()},
                         # validation scores, for choosing recipes and settings without looking at test
                         "val_mse": float(result.val_mse), "val_r2": float(1.0 - result.val_mse / np.var(t_val)),
                         "best_epoch": result.best_epoch, "n_train": len(indices.train), "n_val": len(indices.val),
                         "n_test": len(indices.test),
                         **{f"ridge_{k}": float(ridge.metrics[k]) for k in ("r2", "rmse", "mae")},
                         "ridge_alpha": ridge.alpha,
                         # the test predictions (ln(y+1) scale), so two methods can be compared region by
                         # region on the same split (compare.py: paired bootstrap)
                         "predictions": seed_predictions(embeddings.region_ids, indices.test, np.log1p(y[indices.test]),
                                                         result.test_predictions, ridge.test_predictions)})
        splits[str(seed)] = restricted.digest
    metrics = aggregate([{k: s[k] for k in ("r2", "rmse", "mae", "rmse_raw", "mae_raw", "ridge_r2", "ridge_rmse",
                                            "ridge_mae")} for s in per_seed])
    split_info = {"strategy": options.strategy, "seeds": list(options.seeds), "digests": splits,
                  "labelled_regions": len(labelled), "dropped_without_imagery": dropped}
    from urbanln_bench.probe_inputs import FEATURE_CLIP, PROBE_VERSION
    from urbanln_bench.ridge import RIDGE_ALPHAS

    probe_info = {**dataclasses.asdict(base), "digest": base.digest, "version": PROBE_VERSION,
                  "feature_clip_sd": FEATURE_CLIP, "tune_trials": options.tune,
                  "target": "ln(y+1), standardised on train", "tuned": tuned,
                  "ridge": {"alphas": list(RIDGE_ALPHAS), "selection": "validation MSE",
                            "scaling": "centred, one global scale (the embedding's geometry kept)"}}
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

    check_options(options, writes_records=False)
    spec = get_city(options.city, options.city_file)
    method = make_method(options)
    select_cells(spec, method, None, [imagery])
    with distributed.main_first(distributed.current()):
        data = open_city(spec, scale=options.scale, data_root=options.data_root)
    embeddings, _ = compute_embeddings(method, data, imagery, options, progress)
    if embeddings is not None:  # under torchrun: rank 0 writes
        embeddings.save(out)
    return out


def check_options(options: RunOptions, *, writes_records: bool = True) -> None:
    """Every option of a run that can be checked without data, checked before any work (checks.py)."""
    from urbanln_bench.checks import check_device, check_output_dir, check_tune
    from urbanln_bench.splits import STRATEGIES
    from urbanln_bench.synth.scales import get_scale

    check_overwrite(options.overwrite)
    if options.strategy not in STRATEGIES:
        raise UserError(f"unknown split strategy '{options.strategy}'{suggest(options.strategy, list(STRATEGIES))}")
    get_scale(options.scale, "--scale")
    check_tune(options.tune)
    check_device(options.device)
    if writes_records and not options.dry_run:  # a dry run writes nothing: a read-only store can be checked
        check_output_dir(options.results_dir)


def run(options: RunOptions, progress: Callable | None = None, log: Callable[[str], None] = print) -> list[CellOutcome]:
    """Run ``options.method`` on the chosen cells. Every option is checked first (``check_options``); a dry
    run renders and fits nothing: a twin not in the cache makes its cells "cannot tell" (unless
    ``render_for_keys``, which ``leaderboard --verify-keys`` sets to replay keys)."""
    from urbanln_bench.specs import get_city

    check_options(options)
    spec = get_city(options.city, options.city_file)
    method = make_method(options)
    method.variant_slug()  # names the record folder: refused before any work when it cannot
    cells = select_cells(spec, method, options.tasks, options.imagery)
    if options.pretrain_city and options.pretrain_city != spec.name:
        get_city(options.pretrain_city)  # an unknown or broken pretraining city fails before the target renders
    if not options.dry_run or options.render_for_keys:
        return _run_cells(options, spec, method, cells, progress, log)
    from urbanln_bench.synth.twin import TwinNotRendered, no_rendering

    try:
        with no_rendering():
            return _run_cells(options, spec, method, cells, progress, log)
    except TwinNotRendered as exc:
        # the key covers the data's (and a foundation's world's) content hash, known only once rendered
        note = (f"would compute, or reuse a stored record: cannot tell without rendering — {exc}, and its content "
                "hash is part of the record key (nothing was rendered; the run itself, or "
                "`leaderboard --verify-keys` on its records, renders it)")
        return [CellOutcome(f"{spec.name}/{t}/{i}", None, note=note) for t, i in cells]


def _run_cells(options: RunOptions, spec: CitySpec, method: Method, cells: list[tuple[str, str]],
               progress: Callable | None, log: Callable[[str], None]) -> list[CellOutcome]:
    """``run`` past the checks: open the data, then per cell reuse, report (dry run) or compute a record."""
    from urbanln_bench.data.sources import open_city
    from urbanln_bench.probe_inputs import PROBE_VERSION, ProbeConfig
    from urbanln_bench.specs import get_city

    world = distributed.current()
    with distributed.main_first(world):  # under torchrun rank 0 renders a missing twin, the others read it
        data = open_city(spec, scale=options.scale, data_root=options.data_root,
                         allow_symlinks=options.allow_symlinks, progress_factory=(
            (lambda total: progress(f"rendering {spec.name} twin ({options.scale})", total)) if progress else None))
    if method.meta.synthetic_only and data.source != "synthetic":
        raise UserError(f"method '{method.meta.name}' needs a synthetic twin's truth; {data.root} is real data")
    fit_data = data
    if options.pretrain_city and options.pretrain_city != spec.name:
        if options.data_root is not None:
            raise UserError("--pretrain-city with --data-root: give the pretraining city's data through "
                            "$URBANLN_BENCH_DATA_ROOT/<CITY> (one --data-root names one city)")
        if method.meta.role != "method":
            raise UserError(f"--pretrain-city: '{method.meta.name}' is a {method.meta.role}, it has no pretraining")
        fit_spec = get_city(options.pretrain_city)
        with distributed.main_first(world):
            fit_data = open_city(fit_spec, scale=options.scale, progress_factory=(
                (lambda total: progress(f"rendering {fit_spec.name} twin ({options.scale})", total))
                if progress else None))
        for _, imagery in cells:
            if imagery != "SV+SI" and imagery not in fit_spec.imagery:
                raise UserError(f"--pretrain-city {fit_spec.name} has no {imagery} imagery")
    missing = missing_aux(method.meta, fit_data)
    if missing:
        note = f"excluded: {method.meta.display_name} needs {' and '.join(missing)}, which {fit_data.name}'s data lacks"
        return [CellOutcome(f"{spec.name}/{t}/{i}", None, note=note) for t, i in cells]
    transfer = fit_data is not data
    slug = method.variant_slug() + (f"__from-{fit_data.name}" if transfer else "")
    tag = data_tag(data.source, options.scale, data.manifest_hash)
    grid_by_id = {rid: (r, c) for rid, r, c in zip(data.regions.ids, data.regions.row, data.regions.col, strict=True)}
    identity = method.identity()
    meta = method.meta
    outcomes: list[CellOutcome] = []
    revision = git_revision()
    here: dict[str, Any] | None = None  # the probing machine, read once and only when a record is written
    for imagery in dict.fromkeys(i for _, i in cells):
        todo = []
        for task, _ in [(t, i) for t, i in cells if i == imagery]:
            cell_id = f"{spec.name}/{task}/{imagery}"
            task_spec = get_task(task)
            if task_spec.derived_from_aux in meta.uses_aux and not meta.report_derived_cells:
                outcomes.append(CellOutcome(cell_id, None, note=f"excluded: {meta.display_name} trains on "
                                            f"{task_spec.derived_from_aux}, from which {task} is derived"))
                continue
            key_parts = {"method": identity, "cell": cell_id, "data": data.manifest_hash,
                         "split": [options.strategy, list(options.seeds)], "probe": [ProbeConfig().digest, PROBE_VERSION],
                         "tune": options.tune, "fit_city": fit_data.name}
            key_parts.update(fit_input_identities(method, imagery, options.profile))
            if transfer:
                key_parts["fit_data"] = fit_data.manifest_hash
            key = record_key(key_parts)
            path = RecordPath(options.results_dir, tag, spec.name, slug, task, imagery, options.strategy).path
            stored = reusable(path, key, options.overwrite)
            if stored is not None:
                outcomes.append(CellOutcome(cell_id, stored, reused=True))
            elif options.dry_run:
                why = "a stored record has another key (stale)" if path.exists() else "no stored record"
                outcomes.append(CellOutcome(cell_id, None, note=f"would compute: {why} ({path})", key=key))
            else:
                todo.append((task, cell_id, key, path))
        # under torchrun rank 0's store decides, so that every rank joins the same fits
        if not distributed.broadcast_object(bool(todo), world):
            continue
        embeddings, cached = compute_embeddings(method, data, imagery, options, progress, fit_data)
        if not world.is_main:  # rank 0 alone probes and writes the records
            continue
        fit_shared = not cached and bool(embeddings.meta.get("fit", {}).get("shared"))
        shared = (f" (fit on {fit_data.name} shared with an earlier embedding in this process, not fitted again)"
                  if fit_shared else "")
        log(f"{'reused cached' if cached else 'computed'} {imagery} embeddings of {spec.name}: "
            f"{len(embeddings.region_ids)} regions × {embeddings.vectors.shape[1]}{shared}")
        for task, cell_id, key, path in todo:
            # another run on this store and cache may have written the cell while this one waited or embedded
            with file_lock(record_lock(path)):
                stored = None if options.overwrite == "always" else reusable(path, key, "only-missing")
                if stored is not None:
                    outcomes.append(CellOutcome(cell_id, stored, reused=True))
                    continue
                remove_leftovers(path)
                per_seed, metrics, split_info, probe_info = probe_cell(embeddings, data, task, imagery, options, grid_by_id)
                here = here or machine_summary(options.device)
                record = Record(
                    key=key,
                    method=MethodInfo(name=meta.name, display_name=meta.display_name, variant=method.variant_label(),
                                      slug=slug, version=meta.version, config=method.config, overrides=method.overrides,
                                      role=meta.role, ours=meta.ours, ablation_of=meta.ablation_of,
                                      native_imagery=tuple(meta.native_imagery), weight_source=method.weight_source(),
                                      uses_aux=tuple(meta.uses_aux)),
                    cell=CellInfo(id=cell_id, city=spec.name, task=task, imagery=imagery),
                    fit_city=fit_data.name,
                    data=DataInfo(source=data.source, manifest=data.manifest_hash,
                                  scale=options.scale if data.source == "synthetic" else None, tag=tag,
                                  street_view_cap=_street_view_cap(data)),
                    split=split_info, probe=probe_info, per_seed=per_seed,
                    metrics={name: MetricSummary(**summary) for name, summary in metrics.items()},
                    embedding={"dim": int(embeddings.vectors.shape[1]), "regions": len(embeddings.region_ids),
                               "pooling": embeddings.meta.get("pooling"),
                               "max_streetviews_per_region": embeddings.meta.get("max_streetviews_per_region"),
                               **spectrum_summary(embeddings.vectors)},
                    pretraining=_pretraining_summary(embeddings.meta),
                    notes=tuple(aux_notes(meta, task)),
                    harness_version=HARNESS_VERSION, git_revision=revision,
                    machine={"probe": here, "embedding": embeddings.meta.get("machine")},
                )
                write_record(path, record)
                note_build("record", str(path))
                outcomes.append(CellOutcome(cell_id, record, fit_shared=fit_shared, embeddings_cached=cached))
    return outcomes


# the floors (colour histogram, random features), the scene-graph ceiling and the latent oracle every twin run
# is read against, after the run's own starting weights (MethodMeta.starts_from) when it has them; a fused run
# adds the fused ceiling and the fused random features (docs/architecture.md#roles)
FRAME_METHODS = ("color-histogram", "random-features", "scene-graph-ceiling", "oracle-latents")
FUSED_FRAME_METHODS = ("scene-graph-ceiling-fused", "random-features-fused")


def run_frame(options: RunOptions, outcomes: list[CellOutcome], progress: Callable | None = None,
              log: Callable[[str], None] = lambda m: None) -> list[CellOutcome]:
    """The floors (colour histogram, random features), the scene-graph ceiling and the latent oracle on the
    cells ``outcomes`` cover, so a run's numbers are read against them, as the CLI's table is: a fused method's
    SV+SI cells are framed on both imageries and by the fused scene-graph ceiling and random features. Only on a synthetic twin (real data has no oracle) and not for a transfer run;
    reused when stored, like any cell."""
    records = [o.record for o in outcomes if o.record is not None]
    if not records or records[0].data.source != "synthetic" or options.pretrain_city or options.dry_run:
        return []
    imagery = sorted({i for r in records for i in r.cell.imagery.split("+")})
    tasks = list(dict.fromkeys(r.cell.task for r in records))
    framed: list[CellOutcome] = []
    frame = FRAME_METHODS + (FUSED_FRAME_METHODS if any("+" in r.cell.imagery for r in records) else ())
    starts_from = get_method(options.method).meta.starts_from  # the method's own starting weights
    if starts_from:
        frame = (starts_from, *frame)
    for name in frame:
        if name != options.method:
            fused = get_method(name).meta.imagery == "fused"
            framed += run(dataclasses.replace(options, method=name, settings={}, pretrain_city=None,
                                              imagery=None if fused else imagery, tasks=tasks),
                          progress=progress, log=log)
    return framed


AUX_PRESENT: dict[str, Callable[[CityData], bool]] = {
    "poi_counts": lambda data: data.poi is not None,
    "mobility": lambda data: data.mobility is not None,
}


def missing_aux(meta, data: CityData) -> list[str]:
    """The auxiliary modalities a method ``requires`` that the city's data does not have."""
    return [name for name in meta.requires if not AUX_PRESENT[name](data)]


def aux_notes(meta, task: str) -> list[str]:
    """A record's notes: the cell is derived from an auxiliary modality the method trains on (run only
    for methods the paper reports there anyway, ``report_derived_cells``)."""
    derived = get_task(task).derived_from_aux
    if derived and derived in meta.uses_aux:
        return [f"{meta.display_name} trains on {derived}, from which {task} is derived; reported as the paper does"]
    return []


def _street_view_cap(data) -> int | None:
    """The twin's per-region street-view cap (a city file's ``max_street_views``), when it has one."""
    cap = (data.meta.get("counts") or {}).get("max_streetviews_per_region")
    return int(cap) if cap else None


def machine_summary(device: str = "cpu") -> dict[str, Any]:
    """The machine a number was made on (docs/identity.md): ``measurements.this_machine`` (CPU model, cores,
    torch threads, platform, Python, torch, device) plus the instruction set torch dispatches to and numpy's
    version. Trained numbers agree across CPUs only within a declared tolerance, so records name the machine
    that fitted and embedded and the one that probed."""
    import dataclasses

    import numpy
    import torch

    from urbanln_bench.measurements import this_machine

    return {**dataclasses.asdict(this_machine(device)), "isa": torch.backends.cpu.get_cpu_capability(),
            "numpy": numpy.__version__}


def _pretraining_summary(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The record's view of the fit: city, seconds, the method's report (steps, parameters) and what each
    fit input summarises of its provenance (e.g. the caption sets' keys)."""
    fit = meta.get("fit")
    if not fit:
        return None
    out = {"city": fit["city"], "data_manifest": fit["data_manifest"], "seconds": fit["seconds"]}
    report = fit.get("report") or {}
    for key in ("steps", "epochs", "pairs", "batch_size", "images", "context_length", "captions_filling_context",
                "parameters", "loss", "loss_first_last", "ipsi", "text_targets", "weights"):
        if key in report:
            out[key] = report[key]
    out["images_seen"] = images_seen(report)
    out.update(fit_input_summaries(meta))
    return out


def images_seen(report: dict[str, Any]) -> int | None:
    """The training budget a fit spent, in images (or image–text pairs) seen: the report's own count, else
    steps × batch size; 0 for a method that does not train; None when the report does not say."""
    if "images_seen" in report:
        return None if report["images_seen"] is None else int(report["images_seen"])
    if "steps" in report and isinstance(report.get("batch_size"), int | float):
        return int(report["steps"]) * int(report["batch_size"])
    return 0 if not report.get("steps") else None
