"""``urbanln-bench grid``: many runs as one job, on a local process pool or a Ray cluster (docs/grid.md).

A grid cell is one ``urbanln-bench run`` of one method variant on one city and one imagery, optionally
pretrained on another city: one fit and one embedding, shared by every task and seed of the cell, as the
runner shares them (docs/architecture.md#core-concepts). Each cell goes through ``runner.run`` unchanged,
so a cell whose records are stored under the current key is reused, not recomputed: a re-submitted grid
does only what is missing. Cells run in parallel processes (``--engine local``) or as Ray tasks
(``--engine ray``); both write through the runner's locked, atomic writes into one result store, so a
worker killed mid-cell loses only that cell (docs/reliability.md).

The selections are derived from the registry and the paper's tables, never from a copy of their names:
``paper`` is every model of the paper's main tables, UrbanLN's ablations (``ablation_of``), the μ sweep
of Table 4 (plus ``MU_SWEEP_EXTRA``) and the frame rows (floors, ceilings, the oracle, the starting
weights of every selected method); ``--transfer`` adds the pretrain-city × probe-city grid of issue 13 §2.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from urbanln_bench.errors import UserError
from urbanln_bench.registry import suggest
from urbanln_bench.runner import FRAME_METHODS, RunOptions

# the order the end-of-grid summary lists phases in; a cell's phase says why it is in the grid
PHASES = ("methods", "ablations", "mu-sweep", "frame", "transfer")
MU_SETTING = "mu"  # the setting Table 4 sweeps (L = (1 − μ)·L_C + μ·L_D, Eq. 6)
# μ values past the paper's Table 4 (0.3–0.6) that issue 13 asks for: the sweep is 0.3–0.7
MU_SWEEP_EXTRA = (0.7,)
TRANSFER_TASK = "Pop"  # issue 13 §2: the transfer grid is probed on population only (leaderboard.TRANSFER_TASK)
ENGINES = ("local", "ray")
TIMINGS_FILE = "grid/timings.jsonl"  # under the cache root: how long computed cells took, for estimates
LEDGER_FILE = "grid/runs.jsonl"  # under the cache root: every grid run's events, for its wall time across resumes


@dataclass(frozen=True)
class MethodChoice:
    """A method variant of the grid: a registered name, its ``--set`` overrides and the phase it belongs to."""

    name: str
    settings: tuple[tuple[str, str], ...] = ()
    phase: str = "methods"

    @property
    def label(self) -> str:
        return self.name + (f"[{','.join(f'{k}={v}' for k, v in self.settings)}]" if self.settings else "")


@dataclass(frozen=True)
class GridCell:
    """One run of the runner: a method variant on a city and an imagery (``SV+SI`` for a fused method),
    optionally pretrained on another city; ``tasks`` None means every task of the city."""

    city: str
    method: str
    imagery: str
    settings: tuple[tuple[str, str], ...] = ()
    pretrain_city: str | None = None
    tasks: tuple[str, ...] | None = None
    phase: str = "methods"

    @property
    def label(self) -> str:
        city = f"{self.city}←{self.pretrain_city}" if self.pretrain_city else self.city
        variant = MethodChoice(self.method, self.settings).label
        tasks = f" ({','.join(self.tasks)})" if self.tasks else ""
        return f"{city}/{variant}/{self.imagery}{tasks}"

    def identity(self) -> tuple:
        """What makes two cells the same run (their tasks are merged)."""
        return self.city, self.method, self.settings, self.imagery, self.pretrain_city

    def fit_group(self) -> tuple | None:
        """The cells of one fit: a pretraining method variant, its fit city and imagery. The runner keeps a
        fit in its process (``runner.FIT_MEMO_SIZE``), so the grid runs a group's cells on one worker, one
        after another: the transfer grid's probe cities of one pretraining city (and its in-city diagonal)
        fit once. None for a method that does not pretrain (it has nothing worth sharing)."""
        from urbanln_bench.method import get_method

        if get_method(self.method).meta.role != "method":
            return None
        return self.method, self.settings, self.pretrain_city or self.city, self.imagery

    def run_options(self, template: RunOptions) -> RunOptions:
        return dataclasses.replace(template, method=self.method, city=self.city, city_file=None,
                                   imagery=[self.imagery], settings=dict(self.settings),
                                   pretrain_city=self.pretrain_city, dry_run=False,
                                   tasks=list(self.tasks) if self.tasks else template.tasks)


@dataclass(frozen=True)
class CellResources:
    """What a cell declares to Ray's scheduler: CPUs (also its torch threads), GPUs and memory."""

    cpus: int
    gpus: float
    memory_bytes: int


GIB = 2**30
# Memory a cell reserves on Ray, by run profile: a fit and an embedding of one city (the largest, a CLIP-backed
# method under ``cpu`` on a ``small`` twin, stays below 2 GiB; ``paper`` is ViT-B/16 at 224 px). A method
# that does not pretrain (role other than "method") reserves the ``smoke`` figure. Reservations for the
# scheduler, not limits: Ray does not stop a task that uses more.
CELL_MEMORY = {"smoke": 1 * GIB, "cpu": 3 * GIB, "paper": 16 * GIB}


# -- selections -----------------------------------------------------------------------------------------

def _metas() -> dict[str, Any]:
    from urbanln_bench.method import get_method, method_names

    return {name: get_method(name).meta for name in method_names()}


def _by_display_name(metas: dict[str, Any], display: str) -> str:
    """The registered competing method whose display name the paper's tables use."""
    for name, meta in metas.items():
        if meta.display_name == display and meta.role == "method" and not meta.ours and not meta.ablation_of:
            return name
    raise UserError(f"the paper's tables name '{display}', but no registered method has that display name "
                    f"(see `urbanln-bench list methods`)")


def ours_methods(metas: dict[str, Any] | None = None) -> list[str]:
    """UrbanLN itself: the methods marked ``ours`` that are not an ablation of another."""
    metas = metas if metas is not None else _metas()
    return [name for name, meta in metas.items() if meta.ours and not meta.ablation_of]


def strongest_baseline(metas: dict[str, Any] | None = None) -> str:
    """The baseline the paper's Improvement rows most often compare UrbanLN with on Pop R² (UrbanVLP in
    every city of the paper), as a registered method name."""
    from urbanln_bench.reference.paper import improvement_rows, paper_cities, paper_table

    metas = metas if metas is not None else _metas()
    counts = collections.Counter(row.best_baseline for city in paper_cities()
                                 for row in improvement_rows(paper_table(city))
                                 if row.task == TRANSFER_TASK and row.metric == "R2")
    return _by_display_name(metas, counts.most_common(1)[0][0])


def mu_sweep_values() -> list[float]:
    """Table 4's μ values and ``MU_SWEEP_EXTRA``, ascending."""
    from urbanln_bench.reference.paper import mu_sweep

    return sorted({point.mu for point in mu_sweep()} | set(MU_SWEEP_EXTRA))


def paper_methods() -> list[MethodChoice]:
    """Every method of the paper's main tables (UrbanLN for its ``+SV``/``+SI`` rows) and every other
    registered competing method (the harness's own baselines, e.g. caption regression: the leaderboard ranks
    them beside the paper's), UrbanLN's ablations, the μ sweep (the default μ is UrbanLN itself) and the
    frame rows: floors, ceilings, the latent oracle, the reference rows (caption text) and the starting
    weights of each selected method. What the leaderboard's tables show, so one grid remakes them."""
    from urbanln_bench.reference.paper import is_urbanln_variant, paper_cities, paper_table

    metas = _metas()
    models = list(dict.fromkeys(m for city in paper_cities() for m in paper_table(city).models))
    ours = ours_methods(metas)
    main = [_by_display_name(metas, m) for m in models if not is_urbanln_variant(m)]
    if any(is_urbanln_variant(m) for m in models):
        main += ours
    main += [name for name, meta in metas.items()
             if meta.role == "method" and not meta.ours and not meta.ablation_of and name not in main]
    choices = [MethodChoice(name) for name in main]
    choices += [MethodChoice(name, phase="ablations") for name, meta in metas.items() if meta.ablation_of in ours]
    for name in ours:
        default = metas[name].default_config.get(MU_SETTING)
        choices += [MethodChoice(name, ((MU_SETTING, str(mu)),), "mu-sweep") for mu in mu_sweep_values()
                    if default is not None and mu != default]
    frame = [name for name, meta in metas.items() if meta.role in ("floor", "ceiling", "oracle", "reference")]
    starts = [metas[c.name].starts_from for c in choices if metas[c.name].starts_from]
    choices += [MethodChoice(name, phase="frame") for name in dict.fromkeys(frame + starts)]
    return choices


def _phase_of(meta) -> str:
    return "frame" if meta.role != "method" else "ablations" if meta.ablation_of else "methods"


def parse_methods(text: str, settings: dict[str, str] | None = None) -> list[MethodChoice]:
    """``--methods``: ``paper``, ``all`` (every registered method), ``none`` (with ``--transfer``), or a
    comma-separated list whose items may carry settings: ``urbanln:mu=0.3`` (``:`` between several).
    ``--set`` (``settings``) applies to every named method."""
    from urbanln_bench.method import get_method, method_names

    text = text.strip()
    if text in ("paper", "all") and settings:
        raise UserError(f"--set applies to named methods, not to --methods {text}; name them, e.g. "
                        "--methods urbanln:mu=0.3,urbanln:mu=0.4")
    if text == "paper":
        return paper_methods()
    if text == "none":
        return []
    if text == "all":
        return [MethodChoice(name, phase=_phase_of(get_method(name).meta)) for name in method_names()]
    choices = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, *pairs = item.split(":")
        overrides = dict(settings or {})
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep or not key.strip():
                raise UserError(f"--methods {item!r}: settings look like NAME:KEY=VALUE (e.g. urbanln:mu=0.3)")
            overrides[key.strip()] = value.strip()
        if name not in method_names():
            raise UserError(f"--methods: unknown method '{name}'{suggest(name, method_names())}; "
                            "see `urbanln-bench list methods`")
        cls = get_method(name)
        cls(overrides)  # an unknown setting or a value out of range fails here, before any work
        choices.append(MethodChoice(name, tuple(sorted(overrides.items())), _phase_of(cls.meta)))
    if not choices:
        raise UserError("--methods names no method; give paper, all, none or a list such as color-histogram,resnet18")
    return choices


def parse_cities(text: str) -> list[str]:
    """``--cities``: ``all`` (every benchmark city) or a comma-separated list."""
    from urbanln_bench.specs import city_names, get_city

    known = [name for name in city_names() if get_city(name).kind == "benchmark"]
    if text.strip() == "all":
        return known
    chosen = [c.strip() for c in text.split(",") if c.strip()]
    for city in chosen:
        if city not in city_names():
            raise UserError(f"--cities: unknown city '{city}'{suggest(city, known)}; known: {', '.join(known)}")
    if not chosen:
        raise UserError("--cities names no city; give all or a list such as NY,SZ")
    return list(dict.fromkeys(chosen))


# -- the cells ------------------------------------------------------------------------------------------

@dataclass
class GridPlan:
    cells: list[GridCell]
    skipped: list[str] = field(default_factory=list)  # why a (city, method) pair has no cell


def _imagery_of(meta, spec, wanted: list[str] | None) -> list[str]:
    runnable = [i for i in meta.runnable_imagery() if i == "SV+SI" or i in spec.imagery]
    return [i for i in runnable if not wanted or i in wanted]


def _is_real(spec, data_root: Path | None) -> bool:
    from urbanln_bench.data.sources import real_data_dir

    return real_data_dir(spec, data_root) is not None


def plan_grid(cities: list[str], methods: list[MethodChoice], template: RunOptions, *, imagery: list[str] | None = None,
              frame: bool = False, transfer: bool = False) -> GridPlan:
    """The grid's cells, in phase order, duplicates merged (a cell asked for twice runs once, on the union of
    its tasks). ``frame`` adds the runner's frame (``FRAME_METHODS`` and each method's starting weights) on
    every synthetic city; ``transfer`` adds the pretrain-city × probe-city grid of UrbanLN, the strongest
    baseline and their starting weights, on ``TRANSFER_TASK``."""
    from urbanln_bench.method import get_method
    from urbanln_bench.specs import get_city

    specs = {city: get_city(city) for city in cities}
    plan = GridPlan([])
    cells: dict[tuple, GridCell] = {}

    def add(cell: GridCell) -> None:
        known = cells.get(cell.identity())
        if known is None:
            cells[cell.identity()] = cell
        elif known.tasks is not None:
            tasks = None if cell.tasks is None else tuple(dict.fromkeys(known.tasks + cell.tasks))
            cells[cell.identity()] = dataclasses.replace(known, tasks=tasks)

    def tasks_for(spec) -> tuple[str, ...] | None | bool:
        if not template.tasks:
            return None
        chosen = tuple(t for t in template.tasks if t in spec.tasks)
        return chosen or False

    choices = list(methods)
    framing: dict[MethodChoice, None] = {}  # the frame --frame adds (ordered): on twins only, as run_frame does
    if frame:
        for choice in methods:
            meta = get_method(choice.name).meta
            extra = ([meta.starts_from] if meta.starts_from else []) + list(FRAME_METHODS)
            if meta.imagery == "fused":
                extra.append("scene-graph-ceiling-fused")
            framing.update(dict.fromkeys(MethodChoice(name, phase="frame") for name in extra))
        choices += [choice for choice in framing if choice not in choices]
    for choice in sorted(dict.fromkeys(choices), key=lambda c: (PHASES.index(c.phase), choices.index(c))):
        meta = get_method(choice.name).meta
        for city, spec in specs.items():
            real = _is_real(spec, template.data_root)
            if real and choice in framing:
                continue
            if meta.synthetic_only and real:
                plan.skipped.append(f"{city}/{choice.label}: needs a synthetic twin's truth; {city} has real data")
                continue
            tasks = tasks_for(spec)
            if tasks is False:
                plan.skipped.append(f"{city}/{choice.label}: {city} has none of the tasks {', '.join(template.tasks)}")
                continue
            for one in _imagery_of(meta, spec, imagery):
                add(GridCell(city, choice.name, one, choice.settings, None, tasks, choice.phase))
    if transfer:
        for cell in transfer_cells(specs, imagery):
            add(cell)
    plan.cells = sorted(cells.values(), key=lambda c: PHASES.index(c.phase))
    return plan


def transfer_cells(specs: dict[str, Any], imagery: list[str] | None = None) -> list[GridCell]:
    """Issue 13 §2: UrbanLN and the strongest baseline pretrained on each city and probed on each city
    (the diagonal is in-city pretraining), and their starting weights probed on each city (they do not
    pretrain, so one row), on ``TRANSFER_TASK`` only; cities without that task are left out."""
    from urbanln_bench.method import get_method

    metas = _metas()
    trained = list(dict.fromkeys(ours_methods(metas) + [strongest_baseline(metas)]))
    starts = list(dict.fromkeys(metas[m].starts_from for m in trained if metas[m].starts_from))
    targets = {city: spec for city, spec in specs.items() if TRANSFER_TASK in spec.tasks}
    out = []
    for name in trained + starts:
        meta = get_method(name).meta
        sources = list(targets) if meta.role == "method" else [None]
        for source in sources:
            for city, spec in targets.items():
                for one in _imagery_of(meta, spec, imagery):
                    if source is not None and one != "SV+SI" and one not in specs[source].imagery:
                        continue
                    out.append(GridCell(city, name, one, (), None if source in (None, city) else source,
                                        (TRANSFER_TASK,), "transfer"))
    return out


# -- running one cell (in a worker process, a Ray task or this process) ----------------------------------

@dataclass(frozen=True)
class CellJob:
    index: int
    cell: GridCell
    options: RunOptions
    threads: int


@dataclass
class CellResult:
    """What a cell did: ``computed`` (wrote at least one record), ``reused`` (every record stored under the
    current key), ``excluded`` (the runner excluded every task, e.g. a method's auxiliary modality), or
    ``failed`` (``message`` says why; nothing of the cell is half-written)."""

    index: int
    status: str
    written: int = 0
    reused: int = 0
    excluded: int = 0
    seconds: float = 0.0
    message: str = ""
    fit_shared: bool = False  # its records came from a fit an earlier cell of its group made (not fitted again)


def run_cell(job: CellJob) -> CellResult:
    """Run one cell through ``runner.run`` (its fit kept for its fit group's next cell, ``sharing_fits``) on
    ``job.threads`` threads, torch's and the BLAS/OpenMP pools numpy and scipy use (``threadpoolctl``, a
    scikit-learn dependency): a worker's BLAS left at one thread per core would oversubscribe the cores the
    other workers use. Errors become a failed result (a user's error as
    its message, anything else as a traceback)."""
    import traceback

    import torch
    from threadpoolctl import threadpool_limits

    from urbanln_bench.cache import builds
    from urbanln_bench.runner import run, sharing_fits

    started = time.perf_counter()
    before = len(builds())
    previous = torch.get_num_threads()
    torch.set_num_threads(job.threads)
    try:
        with threadpool_limits(limits=job.threads), sharing_fits():  # the next cell of its fit group reuses its fit
            outcomes = run(job.options, progress=None, log=lambda message: None)
    except UserError as exc:
        return CellResult(job.index, "failed", seconds=time.perf_counter() - started, message=str(exc))
    except Exception:
        return CellResult(job.index, "failed", seconds=time.perf_counter() - started, message=traceback.format_exc())
    finally:
        torch.set_num_threads(previous)
    seconds = time.perf_counter() - started
    written = sum(1 for o in outcomes if o.record is not None and not o.reused)
    reused = sum(1 for o in outcomes if o.reused)
    excluded = sum(1 for o in outcomes if o.record is None)
    status = "computed" if written else "reused" if reused else "excluded"
    result = CellResult(job.index, status, written, reused, excluded, seconds,
                        "; ".join(dict.fromkeys(o.note for o in outcomes if o.note)),
                        fit_shared=any(o.fit_shared for o in outcomes))
    if written:
        computed = [o for o in outcomes if o.record is not None and not o.reused]
        note_timing(job, seconds, result.fit_shared, builds()[before:], all(o.embeddings_cached for o in computed))
    return result


def run_cells(jobs: list[CellJob]) -> list[CellResult]:
    """Run one fit group's cells in a row in this process (a Ray task), each as ``run_cell`` does: a failed cell
    fails alone, the others still run and keep their records."""
    return [run_cell(job) for job in jobs]


def _timings_path() -> Path:
    from urbanln_bench.cache import cache_root

    return cache_root() / TIMINGS_FILE


def note_timing(job: CellJob, seconds: float, fit_shared: bool = False, built: list | None = None,
                probe_only: bool = False) -> None:
    """Append how long a computed cell took to the cache's timing log (one ``O_APPEND`` line, so workers
    sharing a cache can write it at once), whether it fitted or shared an earlier cell's fit, whether it only
    probed embeddings found in the cache (``probe_only``: new seeds or tasks for a cell embedded before), its
    number of probe seeds, and which shared artefacts it built on the way (``built``: ``cache.builds()`` during
    the cell; their kinds and wall seconds, ``build_seconds``, which a later cell of the same method would not
    pay); ``--dry-run`` estimates from it."""
    from urbanln_bench.cache import SHARED_BUILDS, append_line, build_seconds

    shared = [b for b in built or [] if b.kind in SHARED_BUILDS]
    spent = build_seconds(shared)
    cell, options = job.cell, job.options
    line = json.dumps({"method": cell.method, "settings": dict(cell.settings), "city": cell.city,
                       "pretrain_city": cell.pretrain_city, "imagery": cell.imagery, "scale": options.scale,
                       "profile": options.profile, "device": options.device, "seconds": round(seconds, 2),
                       "fit_shared": fit_shared, "probe_only": probe_only, "seeds": len(options.seeds or ()),
                       "built": sorted({b.kind for b in shared}),
                       "build_seconds": None if spent is None else round(spent, 2)})
    append_line(_timings_path(), line)


def read_timings() -> list[dict]:
    from urbanln_bench.cache import read_json_lines

    return read_json_lines(_timings_path())


def estimate_seconds(cell: GridCell, options: RunOptions, timings: list[dict], fit_shared: bool = False) -> float | None:
    """A to-do cell's expected seconds from earlier computed cells of the same scale, profile and device, or None.

    The timings of the same method variant (method and settings) that fitted, or, for a cell that will share an
    earlier cell's fit (``fit_shared``), those that shared one (those that fitted when none did: an estimate too
    high rather than too low). Timings of the cell's own context (city, imagery, pretrain city) give their
    median. Otherwise each timing from another context is scaled by how much slower the cell's context is than
    that one for the other methods timed in both (the median ratio of their median seconds: a large twin costs
    every method more, and averaging over cities under-counted the large twins); a context with no method in
    common keeps the timing as it is. A variant never timed (a new ``mu``) borrows its method's other settings,
    which change what is learned, not how many steps are taken.

    A timing counts the cell's own work: its seconds less the shared artefacts it built first (a caption set,
    a twin, a checkpoint: ``build_seconds``), which a later cell reuses. Timings logged before cells noted
    their builds may include one, so timings that say are preferred (``_own_work_first``)."""
    import statistics

    ok = [t for t in timings if t["scale"] == options.scale and t["profile"] == options.profile
          and t["device"] == options.device]
    context = (cell.city, cell.imagery, cell.pretrain_city)

    def pool_of(rows: list[dict]) -> list[dict]:
        rows = [t for t in rows if not t.get("probe_only")] or rows  # a probe of cached embeddings is no fit
        fitted = [t for t in rows if not t.get("fit_shared")]
        return _own_work_first(([t for t in rows if t.get("fit_shared")] or fitted) if fit_shared else fitted)

    same = pool_of([t for t in ok if t["method"] == cell.method and t["settings"] == dict(cell.settings)])
    if not same:
        same = pool_of([t for t in ok if t["method"] == cell.method])
    if not same:
        return None
    exact = [t for t in same if _context(t) == context]
    if exact:
        return statistics.median(own_seconds(t) for t in exact)
    # median fitted seconds per (method variant, context), for the context ratios
    cost: dict[tuple, list[float]] = {}
    for t in ok:
        if not t.get("fit_shared") and not t.get("probe_only"):
            cost.setdefault((t["method"], json.dumps(t["settings"], sort_keys=True), _context(t)), []).append(own_seconds(t))
    median_cost = {key: statistics.median(v) for key, v in cost.items()}

    def ratio(other: tuple) -> float:
        ratios = [median_cost[(m, s, context)] / seconds for (m, s, c), seconds in median_cost.items()
                  if c == other and (m, s, context) in median_cost and seconds > 0]
        return statistics.median(ratios) if ratios else 1.0

    return statistics.median(own_seconds(t) * ratio(_context(t)) for t in same)


def own_seconds(timing: dict) -> float:
    """A timing's seconds less those it spent building shared artefacts (``build_seconds``), where it says."""
    spent = timing.get("build_seconds") or 0.0
    return max(0.0, timing["seconds"] - spent)


def _own_work_first(rows: list[dict]) -> list[dict]:
    """``rows`` that say what they built and for how long; else those logged before cells said (which may
    include a build); else all (a build of unknown length: an estimate too high rather than none)."""
    told = [t for t in rows if "built" in t and (not t["built"] or t.get("build_seconds") is not None)]
    return told or [t for t in rows if "built" not in t] or rows


def _context(timing: dict) -> tuple:
    return timing["city"], timing["imagery"], timing["pretrain_city"]


# -- the dry run ----------------------------------------------------------------------------------------

@dataclass
class CellStatus:
    cell: GridCell
    status: str  # finished, to do, cannot tell, error
    to_compute: int = 0
    estimate: float | None = None
    note: str = ""


def dry_run(cells: list[GridCell], template: RunOptions) -> list[CellStatus]:
    """Each cell's status from the runner's own dry run (the record keys the current code computes; nothing is
    rendered or fitted) and, for a cell to do, an estimate from the timing log."""
    from urbanln_bench.data.loader import reuse_opened

    with reuse_opened():  # nothing is written while planning: each city folder is read and verified once
        return _dry_run(cells, template)


def _dry_run(cells: list[GridCell], template: RunOptions) -> list[CellStatus]:
    from urbanln_bench.runner import run

    timings = read_timings()
    out = []
    fitting: set[tuple] = set()  # fit groups whose first to-do cell fits: their later to-do cells share its fit
    for cell in cells:
        options = dataclasses.replace(cell.run_options(template), dry_run=True)
        try:
            outcomes = run(options, progress=None, log=lambda message: None)
        except UserError as exc:
            out.append(CellStatus(cell, "error", note=str(exc)))
            continue
        unknown = [o for o in outcomes if o.note.startswith("would compute, or reuse")]
        todo = [o for o in outcomes if o.note.startswith("would compute") and o not in unknown]
        if unknown:
            out.append(CellStatus(cell, "cannot tell", len(unknown) + len(todo), estimate_seconds(cell, template, timings),
                                  "its twin (or its foundation's world) is not rendered yet"))
        elif todo:
            group = cell.fit_group()
            shared = group is not None and group in fitting
            if group is not None:
                fitting.add(group)
            out.append(CellStatus(cell, "to do", len(todo), estimate_seconds(cell, template, timings, shared)))
        else:
            out.append(CellStatus(cell, "finished"))
    return out


def dry_run_estimate(caption_sets: Sequence[float | None], cells: Sequence[float], unknown_cells: int,
                     workers: int) -> str:
    """The dry run's closing estimate from the caption sets not in the cache (their estimated seconds, None: nothing
    alike was timed), the estimated seconds of the cells to do and how many cells have no estimate. When some set or
    cell has no estimate the total covers only the others, so it reads "at least" and says which are left out."""
    timed_sets = [s for s in caption_sets if s is not None]
    untimed_sets = len(caption_sets) - len(timed_sets)
    parts = []
    if caption_sets:
        if not timed_sets:
            parts.append(f"captions phase not estimated: {len(caption_sets)} caption set(s) not in the cache, none "
                         "like them timed")
        else:
            parts.append(f"captions phase {sum(timed_sets) / 60:.1f} min for {len(timed_sets)} of {len(caption_sets)} "
                         "caption set(s) not in the cache" + (f", {untimed_sets} never timed" if untimed_sets else ""))
    if cells or unknown_cells:
        parts.append(f"cells {sum(cells) / workers / 60:.1f} min on {workers} worker(s) for {len(cells)} "
                     "cell(s) timed before" + (f", {unknown_cells} never timed" if unknown_cells else ""))
    if not parts:
        return "nothing to do"
    if not cells and not timed_sets:
        return "no estimate: nothing like these cells was timed with this cache"
    bound = "at least " if untimed_sets or unknown_cells else ""
    return f"estimate {bound}{(sum(timed_sets) + sum(cells) / workers) / 60:.1f} min ({'; '.join(parts)})"


# -- the captions phase ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class CaptionBuild:
    """One caption set the grid's cells to do will ask for: the fit city and the pipeline configuration."""

    city: str
    config: Any  # captions.pipeline.PipelineConfig

    @property
    def label(self) -> str:
        """What tells this set from the city's others: its captioners (named when there is one, a baseline's;
        counted when there are several, UrbanLN's pool) and candidates per captioner, then refinement and
        consensus (UrbanLN's ablations)."""
        c = self.config
        names = [name.split(":", 1)[-1] for name in c.captioners]
        pool = names[0] if len(names) == 1 else f"{len(names)} captioners"
        parts = [f"{pool} ×{c.candidates_per_captioner}", f"refinement {'on' if c.refinement else 'off'}",
                 f"consensus {'on' if c.consensus else 'off'}"]
        return f"{self.city} {c.imagery} captions ({', '.join(parts)})"


def caption_builds(cells: list[GridCell], template: RunOptions,
                   statuses: list[CellStatus] | None = None) -> list[CaptionBuild]:
    """The caption sets that the cells still to do (or that cannot tell without rendering) ask for, each once,
    in the order the cells first ask: ``fit_inputs.caption_configs`` of each cell's method on its fit city
    (the pretraining city of a transfer cell), as the runner asks for them. Only the cells that ask for
    captions at all get a dry run (``dry_run``) to tell whether they are still to do, unless ``statuses``
    (``dry_run`` of ``cells``, in order) already tell."""
    from urbanln_bench.fit_inputs import caption_configs
    from urbanln_bench.runner import make_method

    asking = []  # (index in cells, cell, its caption configurations)
    for index, cell in enumerate(cells):
        configs = list(caption_configs(make_method(cell.run_options(template)), cell.imagery, template.profile).values())
        if configs:
            asking.append((index, cell, configs))
    if not asking:
        return []
    found = (dry_run([cell for _, cell, _ in asking], template) if statuses is None
             else [statuses[index] for index, _, _ in asking])
    wanted = (CaptionBuild(cell.pretrain_city or cell.city, config)
              for (_, cell, configs), status in zip(asking, found, strict=True)
              if status.status in ("to do", "cannot tell") for config in configs)
    return list(dict.fromkeys(wanted))


@dataclass(frozen=True)
class CaptionEstimate:
    """A caption set the captions phase would build: whether the cache has it, its images and expected seconds."""

    build: CaptionBuild
    status: str  # cached, to build, cannot tell (its twin is not rendered)
    images: int | None = None
    seconds: float | None = None


# what a caption set's cost depends on, besides its images (PipelineConfig's fields less seed, limit, threshold)
_COST_FIELDS = ("imagery", "captioners", "candidates_per_captioner", "segmenter", "phrase_extractor",
                "phrase_scorer", "refinement", "consensus")


def estimate_caption_builds(builds: list[CaptionBuild], template: RunOptions) -> list[CaptionEstimate]:
    """For ``--dry-run``: each caption set the captions phase would build, as ``cached`` (a set of the same
    configuration, data and pipeline version is in the city's captions folder: reused unless the scorer's or a
    captioner's files changed, which only the build's own key can tell), ``to build`` with an estimate
    (``caption_seconds_per_image`` of the sets built before, under every twin of the cache and the city's own
    folder, times the city's images), or ``cannot tell`` when its twin is not rendered (nothing is rendered
    here)."""
    from urbanln_bench.cache import cache_root
    from urbanln_bench.data.loader import reuse_opened
    from urbanln_bench.processes import resolve_workers

    known = [info for root in sorted((cache_root() / "twins").glob("*/captions")) for info in caption_sets(root)]
    workers = resolve_workers(None)
    with reuse_opened():  # a city asked for by several sets is read and verified once
        return [_estimate_caption_build(build, template, known, workers) for build in builds]


def _estimate_caption_build(build: CaptionBuild, template: RunOptions, known: list[dict], workers: int) -> CaptionEstimate:
    from urbanln_bench.captions.pipeline import captions_root, image_ids
    from urbanln_bench.captions.versions import PIPELINE_VERSION
    from urbanln_bench.data.sources import open_city
    from urbanln_bench.specs import get_city
    from urbanln_bench.synth.twin import TwinNotRendered, no_rendering

    wanted = json.loads(json.dumps(dataclasses.asdict(build.config)))  # tuples as JSON lists, as config.json has
    try:
        with no_rendering():
            city = open_city(get_city(build.city), scale=template.scale)
    except TwinNotRendered:
        return CaptionEstimate(build, "cannot tell")
    own = caption_sets(captions_root(city))
    if any(info["config"] == wanted and info.get("data_manifest") == city.manifest_hash
           and info.get("version") == PIPELINE_VERSION for info in own):
        return CaptionEstimate(build, "cached")
    rate = caption_seconds_per_image(known + own, wanted, workers, PIPELINE_VERSION)
    images = len(image_ids(city, build.config.imagery))
    return CaptionEstimate(build, "to build", images, None if rate is None else rate * images)


def caption_sets(folder: Path) -> list[dict]:
    """The ``config.json`` of each complete caption set under ``folder`` (a city's captions folder), except
    those limited to a few images (quick looks, tests); unreadable ones are skipped."""
    out = []
    for path in sorted(folder.glob("*/config.json")):
        try:
            info = json.loads(path.read_text())
            if info["config"].get("limit") is None and info["counts"]["images"] > 0:
                out.append(info)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # a set from another version or a damaged file: not worth failing an estimate for
    return out


def caption_seconds_per_image(sets: list[dict], config: dict, workers: int, version: int) -> float | None:
    """The median wall seconds per image (``seconds_total / images``) of the caption sets (``caption_sets``)
    built with ``config``'s cost-relevant settings (``_COST_FIELDS``: all but seed, limit and threshold), each
    set once (by key); of those, the ones built by ``version`` of the pipeline and on ``workers`` processes
    where there are any. None when no set is alike."""
    import statistics

    def cost_of(c: dict) -> str:
        return json.dumps({k: c.get(k) for k in _COST_FIELDS}, sort_keys=True)

    unique = {info.get("key", id(info)): info for info in sets}.values()
    alike = [i for i in unique if cost_of(i["config"]) == cost_of(config) and i.get("seconds_total") is not None]
    alike = [i for i in alike if i.get("version") == version] or alike
    alike = [i for i in alike if i.get("workers") == workers] or alike
    return statistics.median(i["seconds_total"] / i["counts"]["images"] for i in alike) if alike else None


@dataclass(frozen=True)
class CaptionBuilt:
    build: CaptionBuild
    status: str  # built, reused, failed
    seconds: float
    workers: int | None = None
    message: str = ""


def build_caption_sets(builds: list[CaptionBuild], template: RunOptions, progress: Callable | None = None,
                       workers: int | None = None) -> Iterator[CaptionBuilt]:
    """Build (or reuse) each caption set before the cells run, one after another, each on every core
    (``captions.pipeline.run_pipeline``'s workers; docs/grid.md#the-captions-phase). The bytes are those a
    cell would have built (the pipeline's files do not depend on its number of workers). A build that
    fails is reported, not raised: the cells that need it then fail on their own, with the same error."""
    from urbanln_bench.captions.pipeline import run_pipeline
    from urbanln_bench.data.sources import open_city
    from urbanln_bench.errors import DataError
    from urbanln_bench.specs import get_city

    for build in builds:
        started = time.perf_counter()
        try:  # the grid's cells name registry cities, real ones through $URBANLN_BENCH_DATA_ROOT (data/sources.py)
            data = open_city(get_city(build.city), scale=template.scale, progress_factory=(
                (lambda total, city=build.city: progress(f"rendering {city} twin ({template.scale})", total))
                if progress else None))
            run = run_pipeline(data, build.config, progress, workers=workers)
        except (UserError, DataError) as exc:
            yield CaptionBuilt(build, "failed", time.perf_counter() - started, message=str(exc))
            continue
        yield CaptionBuilt(build, "reused" if run.reused else "built", time.perf_counter() - started,
                           run.info.get("workers"))


def captions_row(built: list[CaptionBuilt]) -> list[dict[str, Any]]:
    """The captions phase as a row of the grid summary (``GridReport.phases``' columns), or none."""
    if not built:
        return []
    count = collections.Counter(b.status for b in built)
    return [{"phase": "captions", "cells": len(built), "computed": count["built"], "reused": count["reused"],
             "excluded": 0, "failed": count["failed"], "not run": 0, "records written": 0, "records reused": 0,
             "cell seconds": round(sum(b.seconds for b in built), 1)}]


# -- engines --------------------------------------------------------------------------------------------

def cell_resources(cell: GridCell, options: RunOptions, threads: int) -> CellResources:
    """What a cell declares to Ray: its threads as CPUs, one GPU under ``--device cuda`` for a method that
    pretrains, and ``CELL_MEMORY`` of its profile."""
    from urbanln_bench.method import get_method

    trains = get_method(cell.method).meta.role == "method"
    memory = CELL_MEMORY[options.profile if trains else "smoke"]
    gpus = 1.0 if options.device.startswith("cuda") and trains else 0.0
    return CellResources(threads, gpus, memory)


def default_workers(threads: int) -> int:
    """Cores this process may use divided by the threads per worker (at least one worker)."""
    return max(1, usable_cores() // max(1, threads))


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def fit_groups(jobs: list[CellJob]) -> list[list[CellJob]]:
    """``jobs`` split into fit groups (``GridCell.fit_group``; a cell without one is a group of its own), each in
    the jobs' order, the groups in the order of their first cell: what one process runs to fit each group once."""
    groups: dict[Any, list[CellJob]] = {}
    for job in jobs:
        groups.setdefault(job.cell.fit_group() or ("cell", job.index), []).append(job)
    return list(groups.values())


def grouped_order(jobs: list[CellJob]) -> list[CellJob]:
    """``jobs`` in their order, except that a fit group's cells follow its first cell (``fit_groups``)."""
    return [job for group in fit_groups(jobs) for job in group]


def run_local(jobs: list[CellJob], workers: int, retries: int = 0) -> Iterator[tuple[str, int, Any]]:
    """Run ``jobs`` on ``workers`` spawned processes (``processes.WorkerProcesses``), or in this process when
    ``workers`` is 1; either way the cells of one fit group run in one process, in a row, so they fit once.
    Yields ``("started", index, None)`` and ``("done", index, CellResult)``."""
    if workers <= 1:
        for job in grouped_order(jobs):
            yield "started", job.index, None
            yield "done", job.index, run_cell(job)
        return
    from urbanln_bench.processes import worker_processes

    with worker_processes(workers) as pool:
        for event in pool.run(run_cell, jobs, retries=retries, groups=[job.cell.fit_group() for job in jobs]):
            job = jobs[event.index]
            if event.kind == "started":
                yield "started", job.index, None
            elif event.kind == "done":
                yield "done", job.index, event.value
            elif event.kind == "failed":
                yield "done", job.index, CellResult(job.index, "failed", message=str(event.value))
            elif event.kind == "died":
                message = f"its worker died ({describe_exit(event.value)})" + ("; retried" if event.retried else "")
                if event.retried:
                    yield "retry", job.index, message
                else:
                    yield "done", job.index, CellResult(job.index, "failed", message=message)


def describe_exit(code: int | None) -> str:
    import signal

    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def run_ray(jobs: list[CellJob], address: str | None, retries: int = 0) -> Iterator[tuple[str, int, Any]]:
    """Submit every job as a Ray task declaring ``cell_resources`` (a fit group's jobs as one task,
    ``run_cells``, so they fit once); yields ``("done", index, CellResult)`` as tasks finish, after
    ``("workers", -1, n)``: the cells the cluster's CPUs run at once (the view's ETA).
    Connects to ``address`` (``auto``, ``host:port``, ``ray://host:10001``), or to the session
    this process already has, or starts a local one (its CPUs and memory). A task whose worker died
    (killed, out of memory, node lost) is retried ``retries`` times by Ray, then reported failed."""
    try:
        import ray
    except ImportError:
        raise UserError("--engine ray needs Ray: pip install 'urbanln-bench[ray]' (or pip install 'ray>=2.9')") from None

    started_here = not ray.is_initialized()
    if started_here:
        local = {"include_dashboard": False} if address is None else {}  # a cluster keeps its own settings
        if address is None:
            # Ray starts its workers at niceness 15 (RAY_worker_niceness), so on a machine doing anything else the
            # cells, which are the whole job, get almost no CPU (measured: 2 % each beside a load of 8, docs/grid.md)
            os.environ.setdefault("RAY_worker_niceness", "0")
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False, **local)
        except ConnectionError as exc:  # no cluster there: a user's input, not a crash
            first = (str(exc).strip().splitlines() or [""])[0]
            raise UserError(f"--address {address}: {first}. Start the head with `ray start --head`, then pass "
                            "the address it prints (HOST:PORT on the node's own IP, not 127.0.0.1), or "
                            "--address auto on a node of the cluster") from None
    remote = ray.remote(run_cells)
    pending: dict[Any, list[int]] = {}
    threads = max(1, jobs[0].threads) if jobs else 1
    yield "workers", -1, max(1, int(ray.cluster_resources().get("CPU", 1)) // threads)  # the cluster's, for the ETA
    try:
        for group in fit_groups(jobs):
            need = cell_resources(group[0].cell, group[0].options, group[0].threads)
            more = f" and {len(group) - 1} more cells of its fit" if len(group) > 1 else ""
            ref = remote.options(num_cpus=need.cpus, num_gpus=need.gpus, memory=need.memory_bytes,
                                 max_retries=retries, retry_exceptions=False,
                                 name=f"urbanln-bench {group[0].cell.label}{more}").remote(group)
            pending[ref] = [job.index for job in group]
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            indices = pending.pop(done[0])
            try:
                results = ray.get(done[0])
            except ray.exceptions.RayError as exc:
                first = (str(exc).strip().splitlines() or [""])[0]
                results = [CellResult(index, "failed", message=f"Ray: {type(exc).__name__}: {first}")
                           for index in indices]
            for result in results:
                yield "done", result.index, result
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started_here:
            ray.shutdown()


# -- the whole grid -------------------------------------------------------------------------------------

@dataclass
class GridReport:
    cells: list[GridCell]
    results: dict[int, CellResult]
    seconds: float

    def phases(self) -> list[dict[str, Any]]:
        """One summary row per phase: cells, how many computed / reused / excluded / failed, records written
        and reused, and the cells' summed seconds."""
        rows = []
        for phase in PHASES:
            indices = [i for i, c in enumerate(self.cells) if c.phase == phase]
            if not indices:
                continue
            results = [self.results[i] for i in indices if i in self.results]
            count = collections.Counter(r.status for r in results)
            rows.append({"phase": phase, "cells": len(indices), "computed": count["computed"],
                         "reused": count["reused"], "excluded": count["excluded"], "failed": count["failed"],
                         "not run": len(indices) - len(results),
                         "records written": sum(r.written for r in results),
                         "records reused": sum(r.reused for r in results),
                         "cell seconds": round(sum(r.seconds for r in results), 1)})
        return rows

    def failed(self) -> list[tuple[GridCell, CellResult]]:
        return [(self.cells[i], r) for i, r in sorted(self.results.items()) if r.status == "failed"]


def code_origin() -> str:
    """Where this run's ``urbanln_bench`` comes from and at which revision: the checkout that decides every key
    (``python -m`` puts the current directory first on ``sys.path``, so a run started inside another checkout
    imports that checkout's code whatever ``PYTHONPATH`` says; docs/grid.md)."""
    from urbanln_bench.records import git_revision

    return f"urbanln_bench from {code_root()} at git {git_revision()}"


def code_root() -> str:
    """The folder that holds the imported ``urbanln_bench`` package (a checkout, or site-packages)."""
    import urbanln_bench

    return str(Path(urbanln_bench.__file__).resolve().parent.parent)


class GridLedger:
    """A grid run's events, appended by the grid's own process as they happen to the cache's run ledger
    (``LEDGER_FILE``, one ``O_APPEND`` JSON line each, wall-clock ``t``): its start (cells, workers, git
    revision), each caption set of the captions phase, each cell as it ends, and its end. A run killed
    midway keeps every event up to the kill, so the wall time of a grid resumed over several runs is the
    sum of each run's last event minus its start (``benchmarks/grid_wall.py``; docs/grid.md)."""

    def __init__(self, cells: list[GridCell], template: RunOptions, workers: int, engine: str) -> None:
        import uuid

        from urbanln_bench.cache import cache_root
        from urbanln_bench.records import git_revision

        self.path = cache_root() / LEDGER_FILE
        self.run = uuid.uuid4().hex[:12]
        self.cells = cells
        self.write("start", cells=len(cells), workers=workers, engine=engine, scale=template.scale,
                   profile=template.profile, device=template.device, seeds=len(template.seeds or ()),
                   results=str(template.results_dir), git=git_revision(), code=code_root())

    def write(self, event: str, **fields: Any) -> None:
        from urbanln_bench.cache import append_line

        append_line(self.path, json.dumps({"run": self.run, "event": event, "t": round(time.time(), 2), **fields}))

    def caption_set(self, built: CaptionBuilt) -> None:
        self.write("caption set", label=built.build.label, status=built.status, seconds=round(built.seconds, 2))

    def cell(self, index: int, result: CellResult) -> None:
        cell = self.cells[index]
        self.write("cell", cell=cell.label, phase=cell.phase, status=result.status,
                   seconds=round(result.seconds, 2), fit_shared=result.fit_shared)

    def end(self, wall: float, failed: int) -> None:
        self.write("end", wall=round(wall, 2), failed=failed)


def read_ledger(path: Path | None = None) -> list[dict]:
    """The run ledger's events (``GridLedger``), oldest first; lines cut by a killed writer are skipped."""
    from urbanln_bench.cache import cache_root, read_json_lines

    return read_json_lines(path or cache_root() / LEDGER_FILE)


def ledger_runs(events: list[dict]) -> list[dict]:
    """Per grid run of the ledger, in order: its start, wall seconds (its last event minus its start: a killed
    run counts up to its last finished cell or caption set), the captions phase's seconds, and per phase the
    cells computed and their summed seconds."""
    runs: dict[str, dict] = {}
    for e in events:
        if e.get("event") == "start":
            runs[e["run"]] = {"run": e["run"], "started": e["t"], "last": e["t"], "workers": e.get("workers"),
                              "cells": e.get("cells"), "git": e.get("git"), "seeds": e.get("seeds"),
                              "captions": {"built": 0, "seconds": 0.0}, "phases": {}, "ended": False}
            continue
        run = runs.get(e.get("run"))
        if run is None:
            continue  # its start line was cut: not counted rather than counted wrong
        run["last"] = max(run["last"], e["t"])
        if e["event"] == "caption set" and e.get("status") == "built":
            run["captions"]["built"] += 1
            run["captions"]["seconds"] += e["seconds"]
        elif e["event"] == "cell" and e.get("status") == "computed":
            phase = run["phases"].setdefault(e["phase"], {"cells": 0, "seconds": 0.0})
            phase["cells"] += 1
            phase["seconds"] += e["seconds"]
        elif e["event"] == "end":
            run["ended"] = True
    for run in runs.values():
        run["wall"] = run["last"] - run["started"]
    return sorted(runs.values(), key=lambda r: r["started"])


def make_jobs(cells: list[GridCell], template: RunOptions, threads: int) -> list[CellJob]:
    """One job per cell, its paths absolute (a Ray worker does not run in this folder)."""
    template = dataclasses.replace(template, results_dir=template.results_dir.resolve(),
                                   data_root=template.data_root.resolve() if template.data_root else None)
    return [CellJob(i, cell, cell.run_options(template), threads) for i, cell in enumerate(cells)]


def run_grid(cells: list[GridCell], template: RunOptions, *, engine: str = "local", workers: int | None = None,
             threads: int = 1, address: str | None = None, retries: int = 0,
             view: Callable[[str, int, Any], None] | None = None) -> GridReport:
    """Run every cell (finished ones are reused by the runner) and report per cell; ``view`` sees each event."""
    from urbanln_bench.runner import check_options

    check_options(template)
    if engine not in ENGINES:
        raise UserError(f"unknown --engine '{engine}'{suggest(engine, list(ENGINES))}; known: {', '.join(ENGINES)}")
    jobs = make_jobs(cells, template, threads)
    started = time.perf_counter()
    results: dict[int, CellResult] = {}
    events = (run_local(jobs, workers or default_workers(threads), retries) if engine == "local"
              else run_ray(jobs, address, retries))
    try:
        for kind, index, value in events:
            if kind == "done":
                results[index] = value
            if view is not None:
                view(kind, index, value)
    finally:
        events.close()  # on an exception here (the view's, Ctrl-C): the workers are stopped now, not at gc
    return GridReport(cells, results, time.perf_counter() - started)


def eta_seconds(cells: list[GridCell], running: list[int], done: dict[int, CellResult], parallel: int) -> float | None:
    """Seconds left: the cells left that will fit (the first of each fit group not seen finished, running ones
    first, and every cell without a group) × the finished fitting cells' mean seconds, plus the cells left
    that will share a fit × the finished sharing cells' mean (the fitting mean until one has finished), ÷
    ``parallel``; None before any cell has finished."""
    if not done:
        return None
    fits = [r.seconds for r in done.values() if not r.fit_shared]
    shares = [r.seconds for r in done.values() if r.fit_shared]
    fit_mean = sum(fits) / len(fits) if fits else sum(shares) / len(shares)
    share_mean = sum(shares) / len(shares) if shares else fit_mean
    seen = {cells[i].fit_group() for i in done} - {None}
    fitting = sharing = 0
    for index in [*running, *(i for i in range(len(cells)) if i not in done and i not in running)]:
        group = cells[index].fit_group()
        if group is not None and group in seen:
            sharing += 1
        else:
            fitting += 1
            seen.add(group)
    return (fit_mean * fitting + share_mean * sharing) / max(1, parallel)


class GridView:
    """One rich progress view over every cell: cells done / total, the cells running now, and an ETA from the
    finished cells' times (``eta_seconds``: fitting and fit-sharing cells apart, ÷ parallel workers)."""

    def __init__(self, cells: list[GridCell], parallel: int, console) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.cells, self.parallel = cells, max(1, parallel)
        self.running: dict[int, float] = {}
        self.done: dict[int, CellResult] = {}
        self.progress = Progress(TextColumn("grid"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TextColumn("ETA {task.fields[eta]}"), TextColumn("{task.fields[current]}"),
                                 console=console, transient=False)
        self.task = self.progress.add_task("grid", total=len(cells), eta="?", current="")

    def __enter__(self) -> GridView:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, kind: str, index: int, value: Any) -> None:
        if kind == "workers":  # the Ray engine, once connected: the cells the cluster's CPUs run at once
            self.parallel = max(1, int(value))
            return
        if kind == "started":
            self.running[index] = time.perf_counter()
        elif kind == "done":
            self.running.pop(index, None)
            self.done[index] = value
            if value.status == "failed":
                from rich.markup import escape

                last = value.message.strip().splitlines()[-1] if value.message.strip() else ""
                self.progress.console.print(f"[red]failed[/red] {escape(self.cells[index].label)}: {escape(last)}",
                                            highlight=False)
            self.progress.advance(self.task)
        seconds = eta_seconds(self.cells, list(self.running), self.done, self.parallel)
        eta = "?" if seconds is None else time.strftime("%H:%M:%S", time.gmtime(seconds))
        from rich.markup import escape

        current = ", ".join(self.cells[i].label for i in self.running)
        self.progress.update(self.task, eta=eta, current=escape(current[:120]))
