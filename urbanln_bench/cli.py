"""The ``urbanln-bench`` command line. Heavy modules are imported inside commands so ``--help`` is fast."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from urbanln_bench.errors import UserError


def escape(text: str) -> str:
    """``text`` with rich markup escaped: messages name TOML tables ("[twin]") and lists."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)

app = typer.Typer(
    name="urbanln-bench",
    help="Benchmark harness for urban region representation learning from imagery (UrbanLN and baselines).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="City data: synthesise twins, validate real data, look at it.", no_args_is_help=True)
list_app = typer.Typer(help="List the catalogue: cities, tasks, methods, cells.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(list_app, name="list")

CityOpt = Annotated[str | None, typer.Option("--city", help="City name (see `urbanln-bench list cities`).")]
CityFileOpt = Annotated[Path | None, typer.Option("--city-file", help="Your own city file (TOML); wins over --city.")]
ScaleOpt = Annotated[str, typer.Option("--scale", help="Twin scale: tiny, small (default) or full.")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Override the twin seed of the city file.")]
DataRootOpt = Annotated[Path | None, typer.Option("--data-root", help="A city folder with real data in the native layout.")]
WorkersOpt = Annotated[int | None, typer.Option(
    "--workers", min=1, help="Processes that caption and score images (default: $URBANLN_BENCH_WORKERS, else every "
    "core). The caption sets are the same bytes for any number.")]
AllowSymlinksOpt = Annotated[bool, typer.Option("--allow-symlinks", help="Accept symbolic links in the --data-root "
                                                "folder that lead outside it (refused by default).")]


def _console(stderr: bool = True):
    from rich.console import Console

    console = Console(stderr=stderr, soft_wrap=True)
    if not console.is_terminal:
        console.width = 240  # piped output: never squeeze tables into 80 columns
    return console


def _progress_factory(description: str):
    """A rich progress bar (on stderr) for a step of known size."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=_console(), transient=False)

    def factory(total: int):
        progress.start()
        task = progress.add_task(description, total=total)

        def advance(n: int) -> None:
            progress.advance(task, n)
            if progress.tasks[0].completed >= total:
                progress.stop()

        return advance

    return factory


def _city(city: str | None, city_file: Path | None, seed: int | None = None):
    from urbanln_bench.checks import MAX_SEED, check_count
    from urbanln_bench.specs import get_city
    from urbanln_bench.synth.twin import check_twin_tables, with_seed

    if seed is not None:
        check_count(seed, "--seed", 0, MAX_SEED)
    spec = with_seed(get_city(city, city_file), seed)
    if spec.twin is not None:
        check_twin_tables(spec)  # every value of the twin's tables checked before anything is rendered
    return spec


@data_app.command("synth")
def data_synth(city: CityOpt = None, city_file: CityFileOpt = None, scale: ScaleOpt = "small", seed: SeedOpt = None) -> None:
    """Write a city's synthetic twin into the cache (once) and print where it is."""
    from urbanln_bench.synth.scales import get_scale
    from urbanln_bench.synth.twin import ensure_twin, twin_dir

    spec = _city(city, city_file, seed)
    existed = (twin_dir(spec, get_scale(scale)) / "manifest.json").exists()
    path = ensure_twin(spec, scale, progress_factory=_progress_factory(f"rendering {spec.name} twin ({scale})"))
    meta = json.loads((path / "city.json").read_text())
    counts = meta["counts"]
    _console().print(
        f"{'cached' if existed else 'wrote'} synthetic twin of {spec.name} ({scale}): {counts['regions']} regions, "
        f"{counts['streetview_images']} street views ({counts['regions_without_streetview']} regions without)"
    )
    typer.echo(str(path))


@data_app.command("validate")
def data_validate(path: Annotated[Path, typer.Argument(help="A city folder in the native layout.")],
                  json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
                  write_manifest: Annotated[bool, typer.Option("--write-manifest", help="Write manifest.json when valid.")] = False,
                  verify: Annotated[bool, typer.Option("--verify", help="Hash every file against manifest.json (default: "
                                                       "only files whose size or mtime changed).")] = False,
                  allow_symlinks: Annotated[bool, typer.Option("--allow-symlinks", help="Accept symbolic links that "
                                                               "lead outside the folder.")] = False) -> None:
    """Report every problem of a city folder, its manifest checked against the files; exit 1 if there is any."""
    from urbanln_bench.data.validate import validate_city_dir

    report = validate_city_dir(path, check_manifest=not write_manifest, verify=verify, allow_symlinks=allow_symlinks)
    if json_out:
        typer.echo(json.dumps({"path": str(path), "ok": report.ok, "problems": report.problems,
                               "regions": report.regions, "satellite_images": report.satellite_images,
                               "streetview_images": report.streetview_images,
                               "regions_without_streetview": report.regions_without_streetview,
                               "labelled": report.labelled, "source": report.source}, indent=1))
    else:
        console = _console(stderr=False)
        console.print(f"[bold]{path}[/bold] ({report.source}): {report.regions} regions, {report.satellite_images} "
                      f"satellite images, {report.streetview_images} street views, "
                      f"{report.regions_without_streetview} regions without street views")
        if report.labelled:
            console.print("labelled regions: " + ", ".join(f"{k} {v}" for k, v in report.labelled.items()))
        for problem in report.problems:
            console.print(f"[red]problem:[/red] {problem}", markup=True, highlight=False)
        console.print(f"[red]{len(report.problems)} problem(s)[/red]" if report.problems else "[green]no problems[/green]")
    if report.problems:
        raise typer.Exit(1)
    if write_manifest:
        from urbanln_bench.data.manifest import write_manifest as write

        typer.echo(f"manifest hash {write(path)}")


@data_app.command("import")
def data_import(
    src: Annotated[Path, typer.Argument(help="The peer's data folder (e.g. UrbanVLP's data/).")],
    dest: Annotated[Path, typer.Argument(help="The new city folder (native layout); must not exist.")],
    fmt: Annotated[str, typer.Option("--from", help="Source format: urbanclip, urbanvlp (musecl: see the error).")],
    city: Annotated[str | None, typer.Option("--city", help="The harness city name (default: Beijing → BJ, "
                                             "Shanghai → SH, Shenzhen → SZ).")] = None,
    source_city: Annotated[str | None, typer.Option("--source-city", help="The peer's city folder name, when the "
                                                    "source has several (e.g. Beijing).")] = None,
    zoom: Annotated[int, typer.Option("--zoom", help="Tile zoom level of the regions.")] = 16,
    column: Annotated[list[str] | None, typer.Option("--column", help="NAME=TASK maps a CSV column to a task; NAME= "
                                                     "drops it (repeatable).")] = None,
    region_grid: Annotated[str, typer.Option("--region-grid", help="Region ids: 'tile' (z<zoom>_<x>_<y>) or "
                                             "'latlon:<deg>' (cells g<deg>_<row>_<col> of a WGS84 grid; tiles need "
                                             "a WGS84 position).")] = "tile",
    streetview_datum: Annotated[str | None, typer.Option("--streetview-datum", help="Datum of the street views' "
                                                         "file-name lon,lat on a lat/lon grid: wgs84, gcj02 or "
                                                         "bd09.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Convert a peer's released data (UrbanCLIP, UrbanVLP) into the native layout and validate it; exit 1 on problems."""
    from urbanln_bench.data.importers import import_city

    columns = {}
    for item in column or []:
        name, sep, task = item.partition("=")
        if not sep or not name.strip():
            raise UserError(f"--column {item!r}: expected NAME=TASK (or NAME= to drop the column)")
        columns[name.strip()] = task.strip()
    report = import_city(fmt, src, dest, city=city, source_city=source_city, zoom=zoom, columns=columns,
                         region_grid=region_grid, streetview_datum=streetview_datum)
    if json_out:
        typer.echo(json.dumps(report.as_dict(), indent=1))
    else:
        console = _console(stderr=False)
        console.print(f"[bold]{src}[/bold] ({fmt}, city {report.source_city} → {report.city}): {report.regions} "
                      f"regions, {report.streetview_images} street views, captions "
                      + (", ".join(f"{k} {v}" for k, v in report.captions.items()) or "none"), highlight=False)
        if report.labelled:
            console.print("labelled regions: " + ", ".join(f"{k} {v}" for k, v in report.labelled.items()))
        for note in report.notes:
            console.print(f"note: {note}", markup=False, highlight=False)
        from rich.markup import escape

        for problem in report.problems:
            console.print(f"[red]problem:[/red] {escape(problem)}", markup=True, highlight=False)
        console.print(f"[red]{len(report.problems)} problem(s); nothing was written[/red]" if report.problems
                      else f"[green]imported into {dest}; it passes `data validate`[/green]")
    if report.problems:
        raise typer.Exit(1)
    if not json_out:
        typer.echo(str(dest))


@data_app.command("show")
def data_show(city: CityOpt = None, city_file: CityFileOpt = None, scale: ScaleOpt = "small", seed: SeedOpt = None,
              data_root: DataRootOpt = None,
              out: Annotated[Path | None, typer.Option("--out", help="PNG path (default ./<CITY>-contact-sheet.png).")] = None,
              regions: Annotated[int, typer.Option("--regions", help="How many regions to show.")] = 8) -> None:
    """Write a contact sheet PNG: satellite tile and street views of a few regions."""
    from urbanln_bench.checks import check_count, check_output_file
    from urbanln_bench.data.contact_sheet import contact_sheet
    from urbanln_bench.data.sources import open_city

    spec = _city(city, city_file, seed)
    out = check_output_file(out or Path(f"{spec.name}-contact-sheet.png"), "--out")
    check_count(regions, "--regions", 1, 1000)
    data = open_city(spec, scale=scale, data_root=data_root, progress_factory=_progress_factory(f"rendering {spec.name} twin"))
    contact_sheet(data, out, n_regions=regions)
    typer.echo(str(out))


@data_app.command("check")
def data_check(city: CityOpt = None, city_file: CityFileOpt = None, scale: ScaleOpt = "small", seed: SeedOpt = None,
               json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """A twin's difficulty check: analytic ceiling vs a colour-histogram ridge regression per cell."""
    from urbanln_bench.data.sources import open_city
    from urbanln_bench.synth.floors import histogram_check

    spec = _city(city, city_file, seed)
    data = open_city(spec, scale=scale, progress_factory=_progress_factory(f"rendering {spec.name} twin"))
    rows = histogram_check(data)
    if json_out:
        typer.echo(json.dumps(rows, indent=1))
        return
    from rich.table import Table

    table = Table(title=f"{spec.name} twin ({scale}, synthetic): ceiling vs colour-histogram ridge, "
                        "test R² (median over split seeds 0-4)")
    for column in ("cell", "n", "ceiling", "histogram R²", "gap"):
        table.add_column(column, justify="right" if column != "cell" else "left")
    for row in rows:
        table.add_row(row["cell"], str(row["n"]), f"{row['ceiling']:.3f}", f"{row['histogram_r2']:.3f}",
                      f"{row['ceiling'] - row['histogram_r2']:.3f}")
    _console(stderr=False).print(table)
    too_easy = sum(1 for r in rows if r["ceiling"] - r["histogram_r2"] < 0.1)
    typer.echo(f"{too_easy}/{len(rows)} cells have colour histograms within 0.1 R² of the ceiling"
               + (" — the twin is too easy (defective)" if too_easy > len(rows) / 2 else ""))


@list_app.command("cities")
def list_cities(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The benchmark cities."""
    from urbanln_bench.specs import city_names, get_city

    cities = [get_city(n) for n in city_names()]
    cities = [c for c in cities if c.kind == "benchmark"]
    if json_out:
        typer.echo(json.dumps([{"name": c.name, "full_name": c.full_name, "tasks": list(c.tasks),
                                "regions": c.n_regions} for c in cities], indent=1))
        return
    for c in cities:
        typer.echo(f"{c.name}\t{c.full_name}\t{c.n_regions} regions\ttasks: {', '.join(c.tasks)}")


@list_app.command("tasks")
def list_tasks(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The downstream tasks (indicators)."""
    from urbanln_bench.specs import get_task, task_names

    tasks = [get_task(n) for n in task_names()]
    if json_out:
        typer.echo(json.dumps([{"name": t.name, "full_name": t.full_name, "unit": t.unit, "source": t.source,
                                "derived_from_aux": t.derived_from_aux or None} for t in tasks], indent=1))
        return
    for t in tasks:
        typer.echo(f"{t.name}\t{t.full_name}\t{t.unit}")


@list_app.command("methods")
def list_methods(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Registered methods: built-ins and installed plugins."""
    from urbanln_bench.method import METHODS, get_method, method_names

    rows = []
    for name in method_names():
        meta = get_method(name).meta
        rows.append({"name": name, "display_name": meta.display_name, "imagery": meta.imagery,
                     "native_imagery": list(meta.native_imagery), "role": meta.role,
                     "truth": list(meta.truth),
                     "builtin": METHODS.is_builtin(name), "description": meta.description})
    if json_out:
        typer.echo(json.dumps(rows, indent=1))
        return
    for r in rows:
        origin = "built-in" if r["builtin"] else "plugin"
        typer.echo(f"{r['name']}\t{r['display_name']}\t{r['imagery']}\t{r['role']}\t{origin}")


@list_app.command("cells")
def list_cells(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every benchmark cell: CITY/TASK/IMAGERY (the paper's 34)."""
    from urbanln_bench.specs import city_names, get_city

    cells = []
    for name in city_names():
        spec = get_city(name)
        if spec.kind == "benchmark":
            cells += [f"{spec.name}/{t}/{i}" for t in spec.tasks for i in spec.imagery]
    if json_out:
        typer.echo(json.dumps(cells))
        return
    typer.echo("\n".join(cells))


def _print_run_table(records, city: str, results: Path) -> None:
    """The run's table (``leaderboard.run_table``), printed."""
    from rich.table import Table

    from urbanln_bench.leaderboard import run_table

    built = run_table(records, city, results)
    if built is None:
        return
    table = Table(title=built.title)
    table.add_column("Method")
    table.add_column("Imagery")
    for t in built.tasks:
        table.add_column(f"{t} R²", justify="right")
    suffix = {"floor": " (floor)", "start": "", "oracle": " (latent oracle)", "ceiling": " (ceiling)",
              "reference": " (reference)"}
    for row in built.rows:
        cells = []
        for t in built.tasks:
            entry = row.r2[t]
            cells.append("—" if entry is None else f"{entry['mean']:.3f}" if entry["std"] is None
                         else f"{entry['mean']:.3f}±{entry['std']:.3f}")
        label = ("[bold]" + row.label + "[/]" if row.this_run else row.label) + suffix.get(row.role, "")
        table.add_row(label, row.imagery, *cells)
    _console(stderr=False).print(table)


@app.command("run")
def run_command(
    method: Annotated[str, typer.Option("--method", help="Method name (see `urbanln-bench list methods`).")],
    city: CityOpt = None, city_file: CityFileOpt = None,
    task: Annotated[list[str] | None, typer.Option("--task", help="Only these tasks (repeatable).")] = None,
    imagery: Annotated[list[str] | None, typer.Option("--imagery", help="Only this imagery: SV, SI or SV+SI.")] = None,
    scale: ScaleOpt = "small",
    seeds: Annotated[str, typer.Option("--seeds", help="Probe seeds, e.g. 0-4 or 0,1,2.")] = "0-4",
    split: Annotated[str, typer.Option("--split", help="Split strategy: random or spatial-block.")] = "random",
    overwrite: Annotated[str, typer.Option("--overwrite", help="never, only-missing or always.")] = "only-missing",
    tune: Annotated[int, typer.Option("--tune", help="Optuna trials per cell on validation (0 = off).")] = 0,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
    profile: Annotated[str, typer.Option("--profile", help="Run profile: smoke (tests), cpu or paper.")] = "cpu",
    results: Annotated[Path, typer.Option("--results", help="Result store folder.")] = Path("results"),
    data_root: DataRootOpt = None,
    setting: Annotated[list[str] | None, typer.Option("--set", help="Method setting KEY=VALUE (repeatable).")] = None,
    cell: Annotated[str | None, typer.Option("--cell", help="One cell, e.g. NY/Pop/SV (sets city, task, imagery).")] = None,
    pretrain_city: Annotated[str | None, typer.Option(
        "--pretrain-city", help="Transfer: pretrain on this city, then embed and probe --city.")] = None,
    frame: Annotated[bool, typer.Option(
        "--frame/--no-frame", help="On a twin, also run the floor (colour histogram) and the oracle on the same "
        "cells for the printed table (seconds; reused when present).")] = True,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Fit nothing: say per cell whether its stored record is reused or would be computed "
        "(a record whose key no longer matches the code, data or settings is stale).")] = False,
    allow_symlinks: AllowSymlinksOpt = False,
    workers: WorkersOpt = None,
) -> None:
    """Run a method on every cell of a city: pretrain, embed, probe, write records, print the table.

    Under torchrun (`torchrun --nproc_per_node N -m urbanln_bench run ...`, docs/torchrun.md) the N
    processes pretrain together; rank 0 alone embeds, probes, writes and prints."""
    from urbanln_bench import distributed

    world = distributed.init_from_env(device)
    try:
        _run_command(method, city, city_file, task, imagery, scale, seeds, split, overwrite, tune, device, profile,
                     results, data_root, setting, cell, pretrain_city, frame, dry_run, allow_symlinks, workers, world)
    finally:
        distributed.shutdown()


def _run_command(method, city, city_file, task, imagery, scale, seeds, split, overwrite, tune, device, profile,
                 results, data_root, setting, cell, pretrain_city, frame, dry_run, allow_symlinks, workers,
                 world) -> None:
    from urbanln_bench.processes import workers_for_this_run
    from urbanln_bench.runner import RunOptions, parse_cell, parse_seeds, parse_settings, run, run_frame

    if cell is not None:
        city, one_task, one_imagery = parse_cell(cell)
        task, imagery = [one_task], [one_imagery]

    options = RunOptions(method=method, city=city, city_file=city_file, tasks=task or None,
                         imagery=imagery or None, scale=scale, seeds=parse_seeds(seeds), strategy=split,
                         overwrite=overwrite, tune=tune, device=device, profile=profile, results_dir=results,
                         data_root=data_root, settings=parse_settings(setting or []), pretrain_city=pretrain_city,
                         dry_run=dry_run, allow_symlinks=allow_symlinks)
    console = _console()
    if not world.is_main:  # the other ranks pretrain with rank 0 and stay quiet
        with workers_for_this_run(workers):
            run(options, progress=None, log=lambda m: None)
        return
    with workers_for_this_run(workers):
        outcomes = run(options, progress=_progress_factory_named(), log=lambda m: console.print(m, highlight=False))
    from urbanln_bench import distributed

    distributed.shutdown()  # the pretraining is over: rank 0 runs the frame rows and prints alone
    for o in outcomes:
        if o.record is None:
            console.print(f"{o.cell}: {o.note}", highlight=False)
    reused = sum(o.reused for o in outcomes)
    written = sum(1 for o in outcomes if o.record is not None and not o.reused)
    if dry_run:
        unknown = sum(1 for o in outcomes if o.note.startswith("would compute, or reuse"))
        todo = sum(1 for o in outcomes if o.note.startswith("would compute")) - unknown
        console.print(f"dry run: {reused} cell(s) would be reused, {todo} computed"
                      + (f", {unknown} cannot tell without rendering" if unknown else "") + f", under {results}",
                      highlight=False)
        raise typer.Exit(0)
    console.print(f"{written} record(s) written, {reused} reused, under {results}", highlight=False)
    if frame:
        run_frame(options, outcomes)
    _print_run_table([o.record for o in outcomes if o.record is not None],
                     outcomes[0].cell.split("/")[0] if outcomes else str(city), results)


@app.command("grid")
def grid_command(
    cities: Annotated[str, typer.Option("--cities", help="all (every benchmark city) or a list, e.g. NY,SZ.")] = "all",
    methods: Annotated[str, typer.Option(
        "--methods", help="paper (the leaderboard's methods: the paper's and the harness's own, ablations, mu sweep "
        "and frame rows), all, none, or a list; "
        "an item may carry settings: urbanln:mu=0.3.")] = "paper",
    transfer: Annotated[bool, typer.Option(
        "--transfer", help="Add the pretrain-city x probe-city grid (Pop) of UrbanLN, the strongest baseline and "
        "their starting weights.")] = False,
    imagery: Annotated[list[str] | None, typer.Option("--imagery", help="Only this imagery: SV, SI or SV+SI "
                                                      "(repeatable or comma-separated).")] = None,
    task: Annotated[list[str] | None, typer.Option("--task", help="Only these tasks (repeatable).")] = None,
    scale: ScaleOpt = "small",
    seeds: Annotated[str, typer.Option("--seeds", help="Probe seeds, e.g. 0-4 or 0,1,2.")] = "0-4",
    split: Annotated[str, typer.Option("--split", help="Split strategy: random or spatial-block.")] = "random",
    overwrite: Annotated[str, typer.Option("--overwrite", help="never, only-missing or always.")] = "only-missing",
    tune: Annotated[int, typer.Option("--tune", help="Optuna trials per cell on validation (0 = off).")] = 0,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
    profile: Annotated[str, typer.Option("--profile", help="Run profile: smoke (tests), cpu or paper.")] = "cpu",
    results: Annotated[Path, typer.Option("--results", help="Result store folder.")] = Path("results"),
    setting: Annotated[list[str] | None, typer.Option("--set", help="Setting KEY=VALUE for every named method "
                                                      "(repeatable).")] = None,
    frame: Annotated[bool, typer.Option("--frame/--no-frame", help="On twins, add the floor, ceiling, oracle and "
                                        "starting-weight cells of each method, as `run` does.")] = True,
    engine: Annotated[str, typer.Option("--engine", help="local (a process pool) or ray.")] = "local",
    workers: Annotated[int | None, typer.Option("--workers", help="Local worker processes (default: cores // "
                                                "--threads; 1 runs the cells in this process).")] = None,
    threads: Annotated[int, typer.Option("--threads", help="Torch threads per cell (Ray: the CPUs it "
                                         "declares).")] = 1,
    address: Annotated[str | None, typer.Option("--address", help="Ray cluster: auto, HOST:PORT or "
                                                "ray://HOST:10001 (default: RAY_ADDRESS, else a local Ray).")] = None,
    retries: Annotated[int, typer.Option("--retries", help="Run a cell again this many times when its worker "
                                         "dies (killed, out of memory).")] = 0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the cells, finished or to do, with an estimate; "
                                          "renders and fits nothing.")] = False,
    captions_first: Annotated[bool, typer.Option(
        "--captions-first/--no-captions-first", help="Local engine: build the caption sets the cells to do need "
        "before they run, one at a time on every core (docs/grid.md).")] = True,
) -> None:
    """Run many cells (cities x methods x imagery x pretrain city) as one resumable job, in parallel."""
    from rich.markup import escape as rich_escape
    from rich.table import Table

    from urbanln_bench import grid as grids
    from urbanln_bench.checks import check_count
    from urbanln_bench.runner import RunOptions, check_options, parse_seeds, parse_settings

    check_count(threads, "--threads", 1, 1024)
    check_count(retries, "--retries", 0, 100)
    if workers is not None:
        check_count(workers, "--workers", 1, 1024)
    if engine not in grids.ENGINES:
        raise UserError(f"unknown --engine '{engine}'; known: {', '.join(grids.ENGINES)}")
    if engine == "local" and address:
        raise UserError("--address is for --engine ray")
    template = RunOptions(method="", tasks=task or None, scale=scale, seeds=parse_seeds(seeds), strategy=split,
                          overwrite=overwrite, tune=tune, device=device, profile=profile, results_dir=results,
                          dry_run=dry_run)
    check_options(template)
    wanted = [i.strip() for item in imagery or [] for i in item.split(",") if i.strip()] or None
    chosen = grids.parse_methods(methods, parse_settings(setting or []))
    plan = grids.plan_grid(grids.parse_cities(cities), chosen, template, imagery=wanted, frame=frame,
                           transfer=transfer)
    console = _console()
    for note in plan.skipped:
        console.print(f"skipped {note}", highlight=False, markup=False)
    if not plan.cells:
        raise UserError("the grid has no cell: check --cities, --methods, --imagery and --task")
    # which checkout's code decides the keys (a run started inside another checkout imports that one first)
    console.print(f"code: {grids.code_origin()}", highlight=False, markup=False)
    cores = grids.usable_cores()
    parallel = (workers or grids.default_workers(threads)) if engine == "local" else max(1, cores // threads)
    if engine == "local" and parallel * threads > cores:
        console.print(f"[yellow]warning[/yellow]: {parallel} workers x {threads} threads > {cores} cores; "
                      "cells will compete for them", highlight=False)
    if dry_run:
        statuses = grids.dry_run(plan.cells, template)
        table = Table(title=f"grid: {len(plan.cells)} cells under {results} ({scale}, {profile})")
        for column in ("phase", "cell", "status", "records to compute", "estimate"):
            table.add_column(column)
        for s in statuses:
            estimate = "" if s.status in ("finished", "error") else "?" if s.estimate is None else f"{s.estimate:.0f} s"
            table.add_row(s.cell.phase, rich_escape(s.cell.label), s.status + (f" ({rich_escape(s.note)})" if s.note else ""),
                          str(s.to_compute) if s.to_compute else "", estimate)
        _console(stderr=False).print(table)
        counts = {k: sum(s.status == k for s in statuses) for k in ("finished", "to do", "cannot tell", "error")}
        known = [s.estimate for s in statuses if s.status in ("to do", "cannot tell") and s.estimate is not None]
        unknown = sum(1 for s in statuses if s.status in ("to do", "cannot tell") and s.estimate is None)
        sets = (grids.estimate_caption_builds(grids.caption_builds(plan.cells, template, statuses), template)
                if captions_first and engine == "local" else [])
        building = [e for e in sets if e.status != "cached"]
        if sets:
            phase = Table(title="captions phase (before the cells, each set on every core)")
            for column in ("caption set", "status", "images", "estimate"):
                phase.add_column(column)
            for e in sets:
                phase.add_row(rich_escape(e.build.label), e.status, "" if e.images is None else str(e.images),
                              "" if e.status == "cached" else "?" if e.seconds is None else f"{e.seconds:.0f} s")
            _console(stderr=False).print(phase)
        total = grids.dry_run_estimate([e.seconds for e in building], known, unknown, parallel)
        typer.echo(f"{counts['finished']} finished, {counts['to do']} to do, {counts['cannot tell']} cannot tell "
                   f"without rendering, {counts['error']} error(s); {total}")
        raise typer.Exit(1 if counts["error"] else 0)
    started = time.perf_counter()
    ledger = grids.GridLedger(plan.cells, template, parallel, engine)  # the wall time across resumes (docs/grid.md)
    captions: list = []
    if captions_first and engine == "local":
        builds = grids.caption_builds(plan.cells, template)
        if builds:
            console.print(f"captions phase: {len(builds)} caption set(s) for the cells to do, built before them, "
                          "each on every core", highlight=False)
        for built in grids.build_caption_sets(builds, template, progress=_progress_factory_named()):
            captions.append(built)
            ledger.caption_set(built)
            console.print(f"  {built.status} {rich_escape(built.build.label)} in {built.seconds:.0f} s"
                          + (f" ({built.workers} worker(s))" if built.workers else "")
                          + (f": {rich_escape(built.message)}" if built.message else ""), highlight=False)
    with grids.GridView(plan.cells, parallel, console) as view:
        def seen(kind: str, index: int, value) -> None:
            if kind == "done":
                ledger.cell(index, value)
            view(kind, index, value)

        report = grids.run_grid(plan.cells, template, engine=engine, workers=workers, threads=threads,
                                 address=address, retries=retries, view=seen)
    wall = time.perf_counter() - started
    ledger.end(wall, len(report.failed()))
    summary = Table(title=f"grid summary ({engine}, {wall:.0f} s wall, results under {results})")
    rows = grids.captions_row(captions) + report.phases()
    for column in rows[0]:
        summary.add_column(column, justify="left" if column == "phase" else "right")
    for row in rows:
        summary.add_row(*(str(v) for v in row.values()))
    _console(stderr=False).print(summary)
    for cell, result in report.failed():
        console.print(f"[red]failed[/red] {rich_escape(cell.label)}: {rich_escape(result.message.strip())}",
                      highlight=False)
    if report.failed():
        raise typer.Exit(1)


def _progress_factory_named():
    """progress(description, total) -> advance(n)."""

    def start(description: str, total: int):
        return _progress_factory(description)(total)

    return start


@app.command("eval")
def eval_command(
    embeddings: Annotated[Path, typer.Option("--embeddings", help=".npz with region_ids and vectors (see `export`).")],
    city: CityOpt = None, city_file: CityFileOpt = None,
    imagery: Annotated[str | None, typer.Option("--imagery", help="SV or SI (default: the file's sidecar).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Row label (default: the file name).")] = None,
    task: Annotated[list[str] | None, typer.Option("--task")] = None,
    scale: ScaleOpt = "small",
    seeds: Annotated[str, typer.Option("--seeds")] = "0-4",
    split: Annotated[str, typer.Option("--split")] = "random",
    results: Annotated[Path, typer.Option("--results")] = Path("results"),
    data_root: DataRootOpt = None,
) -> None:
    """Probe embeddings made elsewhere on a city's cells, exactly as a method's are probed."""
    from urbanln_bench.runner import RunOptions, parse_seeds, run

    if imagery is None:
        from urbanln_bench.embed import read_sidecar

        imagery = read_sidecar(embeddings).get("imagery")
        if imagery not in ("SV", "SI"):
            raise UserError(f"{embeddings}: say which imagery the embeddings are of (--imagery SV or SI)")
    from urbanln_bench.checks import check_output_dir

    check_output_dir(results)
    options = RunOptions(method="embeddings-file", city=city, city_file=city_file, tasks=task or None,
                         imagery=[imagery], scale=scale, seeds=parse_seeds(seeds), strategy=split,
                         overwrite="always", results_dir=results, data_root=data_root,
                         embeddings_file=embeddings, embeddings_label=name)
    console = _console()
    outcomes = run(options, progress=_progress_factory_named(), log=lambda m: console.print(m, highlight=False))
    _print_run_table([o.record for o in outcomes if o.record is not None],
                     outcomes[0].cell.split("/")[0] if outcomes else str(city), results)


@app.command("export")
def export_command(
    method: Annotated[str, typer.Option("--method")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the .npz (plus a .json sidecar).")],
    city: CityOpt = None, city_file: CityFileOpt = None,
    imagery: Annotated[str, typer.Option("--imagery", help="SV, SI or SV+SI.")] = "SI",
    scale: ScaleOpt = "small",
    profile: Annotated[str, typer.Option("--profile")] = "cpu",
    device: Annotated[str, typer.Option("--device")] = "cpu",
    data_root: DataRootOpt = None,
    setting: Annotated[list[str] | None, typer.Option("--set")] = None,
) -> None:
    """Export a method's region embeddings of a city (.npz + JSON sidecar). Runs under torchrun like `run`."""
    from urbanln_bench import distributed
    from urbanln_bench.checks import check_output_file
    from urbanln_bench.runner import RunOptions, export_embeddings, parse_settings

    world = distributed.init_from_env(device)
    try:
        check_output_file(out, "--out")
        options = RunOptions(method=method, city=city, city_file=city_file, scale=scale, profile=profile,
                             device=device, data_root=data_root, settings=parse_settings(setting or []))
        written = export_embeddings(options, imagery, out, progress=_progress_factory_named() if world.is_main else None)
        if world.is_main:
            typer.echo(str(written))
    finally:
        distributed.shutdown()


@app.command("case-study")
def case_study_command(
    method: Annotated[str, typer.Option("--method", help="Method name (see `urbanln-bench list methods`).")],
    city: CityOpt = None, city_file: CityFileOpt = None,
    imagery: Annotated[str, typer.Option("--imagery", help="SV (the paper's Figure 6) or SI.")] = "SV",
    task: Annotated[str, typer.Option("--task", help="The indicator shown per cluster.")] = "Pop",
    clusters: Annotated[int, typer.Option("--clusters", help="K-means clusters (the paper: 3).")] = 3,
    scale: ScaleOpt = "small",
    profile: Annotated[str, typer.Option("--profile", help="Run profile: smoke (tests), cpu or paper.")] = "cpu",
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
    results: Annotated[Path, typer.Option("--results", help="Result store folder.")] = Path("results"),
    data_root: DataRootOpt = None,
    setting: Annotated[list[str] | None, typer.Option("--set", help="Method setting KEY=VALUE (repeatable).")] = None,
    overwrite: Annotated[str, typer.Option("--overwrite", help="never, only-missing or always.")] = "only-missing",
) -> None:
    """The paper's Figure 6: PCA and k-means of a method's region embeddings (the ones `run` probes), sealed
    into the result store next to its records; `urbanln-bench leaderboard` draws it."""
    from urbanln_bench.case_study import CaseStudyOptions, make_case_study
    from urbanln_bench.runner import parse_settings

    options = CaseStudyOptions(method=method, city=city, city_file=city_file, imagery=imagery, task=task,
                               clusters=clusters, scale=scale, profile=profile, device=device, results_dir=results,
                               data_root=data_root, settings=tuple(sorted(parse_settings(setting or []).items())),
                               overwrite=overwrite)
    console = _console()
    path, reused = make_case_study(options, progress=_progress_factory_named(),
                                   log=lambda m: console.print(m, highlight=False))
    console.print(f"{'reused' if reused else 'wrote'} {path} ({path.stat().st_size / 1024:.1f} KiB); "
                  "`urbanln-bench leaderboard` draws it", highlight=False)
    typer.echo(str(path))


@app.command("leaderboard")
def leaderboard_command(
    results: Annotated[Path, typer.Option("--results", help="Result store folder.")] = Path("results"),
    out: Annotated[Path, typer.Option("--out", help="Markdown file to write.")] = Path("leaderboard.md"),
    figures: Annotated[Path | None, typer.Option(
        "--figures", help="Folder of the figures (PNG) the file links; default: `figures` next to --out.")] = None,
    check: Annotated[bool, typer.Option("--check", help="Exit 1 if the file or a figure is stale instead of writing "
                                        "them.")] = False,
    verify_keys: Annotated[bool, typer.Option(
        "--verify-keys", help="Also replay every stored twin cell as `run --dry-run` and exit 1 if the current "
        "code would not reuse its record (made by other code or settings).")] = False,
    rekey: Annotated[bool, typer.Option(
        "--rekey", help="Rewrite each stale record's key to the current code's. Only right after a change that "
        "moves identities and no numbers, on records --verify-keys passed before it (docs/identity.md).")] = False,
    seal: Annotated[bool, typer.Option(
        "--seal", help="Maintainers: add a content digest to every unsealed record, after checking them. Refused "
        "when --check fails for any other reason (docs/identity.md#tamper-evident-records).")] = False,
) -> None:
    """Regenerate leaderboard.md and its figures from result records only."""
    import os

    from urbanln_bench.cache import atomic_write_text
    from urbanln_bench.checks import check_input_dir, check_output_dir, check_output_file
    from urbanln_bench.leaderboard import build_leaderboard, render_leaderboard

    check_input_dir(results, "--results", "result records")
    figures = figures if figures is not None else out.parent / "figures"
    link = Path(os.path.relpath(figures.absolute(), out.absolute().parent)).as_posix()
    if not check:
        check_output_file(out, "--out")
        check_output_dir(figures, "--figures")

    from urbanln_bench.seal import audit_store, corrupt_store, seal_store, tampered_records

    if seal:
        audit = audit_store(results)
        if audit.problems:
            _console().print(f"[red]not sealing[/red]: {len(audit.problems)} record(s) cannot be trusted:\n  "
                             + "\n  ".join(audit.problems), highlight=False)
            raise typer.Exit(1)
        current = out.read_text() if out.exists() else ""
        if current != render_leaderboard(results, link):
            _console().print(f"[red]not sealing[/red]: {out} is stale; run `urbanln-bench leaderboard`, check and "
                             "commit it first", highlight=False)
            raise typer.Exit(1)
        sealed = seal_store(results, audit.unsealed)
        typer.echo(f"sealed {len(sealed)} record(s) under {results} ({audit.records - len(sealed)} already sealed)")
        return
    if check:
        audit = audit_store(results)
        if not audit.ok:
            lines = audit.lines()
            more = f"\n  ... and {len(lines) - 20} more" if len(lines) > 20 else ""
            _console().print(f"[red]{len(lines)} record(s) under {results} fail the content check[/red]:\n  "
                             + "\n  ".join(lines[:20]) + more, highlight=False)
            raise typer.Exit(1)
    if rekey:
        from urbanln_bench.verify import rekey_records

        rewritten = rekey_records(results, log=lambda m: _console().print(m, highlight=False))
        typer.echo(f"re-keyed {len(rewritten)} record(s) under {results}")
    if verify_keys:
        from urbanln_bench.case_study import stale_case_studies
        from urbanln_bench.data.loader import reuse_opened
        from urbanln_bench.verify import stale_records

        with reuse_opened():  # every city folder is read and verified once, not once per replayed cell
            stale = stale_records(results, log=lambda m: _console().print(m, highlight=False))
            stale += stale_case_studies(results, log=lambda m: _console().print(m, highlight=False))
        if stale:
            _console().print(f"[red]{len(stale)} stale record(s)[/red] (re-run their cells):\n  " + "\n  ".join(stale))
            raise typer.Exit(1)
        typer.echo(f"every record under {results} matches the current code")
    if not check:
        tampered = tampered_records(results)
        if tampered:  # numbers edited by hand: nothing is written until they are restored or re-run
            _console().print(f"[red]not writing {out}[/red]: {len(tampered)} record(s) were edited after they were "
                             "written:\n  " + "\n  ".join(escape(t) for t in tampered), highlight=False)
            raise typer.Exit(2)
    # a record that cannot be read is named and left out; it does not block the board of every other record
    corrupt = corrupt_store(results)
    for problem in corrupt:
        _console().print(f"[red]skipped record:[/red] {escape(problem)}", highlight=False)
    board = build_leaderboard(results, link)
    text = board.text
    if check:
        from urbanln_bench.figures import stale_figures

        current = out.read_text() if out.exists() else ""
        if corrupt:
            _console().print(f"[red]{len(corrupt)} record(s) under {results} cannot be read[/red]: fix or delete "
                             "them, or re-run their cells with --overwrite always")
            raise typer.Exit(1)
        if current != text:
            _console().print(f"[red]{out} is stale[/red]: run `urbanln-bench leaderboard` and commit it")
            raise typer.Exit(1)
        problems = stale_figures(figures, board.figures)
        if problems:
            _console().print(f"[red]{len(problems)} figure(s) of {out} are not what the records draw[/red]:\n  "
                             + "\n  ".join(escape(p) for p in problems), highlight=False)
            raise typer.Exit(1)
        typer.echo(f"{out} is up to date" + (f" ({len(board.figures)} figure(s) in {figures})" if board.figures else ""))
        return
    unsealed = audit_store(results).unsealed
    if unsealed:
        _console().print(f"[yellow]warning[/yellow]: {len(unsealed)} unsealed record(s) under {results} (no content "
                         "digest; `leaderboard --check` fails on them): check them, then run "
                         "`urbanln-bench leaderboard --seal`", highlight=False)
    from urbanln_bench.figures import write_figures

    atomic_write_text(out, text)
    typer.echo(str(out))
    written, removed = write_figures(figures, board.figures)
    for path in written:
        typer.echo(str(path))
    for path in removed:
        typer.echo(f"removed {path} (no longer given by the records)")
    if corrupt:
        _console().print(f"[red]{out} leaves out {len(corrupt)} record(s) that cannot be read[/red] (named above): "
                         "fix or delete them, or re-run their cells with --overwrite always")
        raise typer.Exit(1)


@app.command("results")
def results_command(
    fmt: Annotated[str, typer.Option("--format", help="csv, json or md.")] = "csv",
    results: Annotated[Path, typer.Option("--results", help="Result store folder.")] = Path("results"),
    out: Annotated[Path | None, typer.Option("--out", help="File to write (default: standard output).")] = None,
    city: Annotated[list[str] | None, typer.Option("--city", help="Only this city (repeatable).")] = None,
    method: Annotated[list[str] | None, typer.Option("--method", help="Only this method (repeatable).")] = None,
    task: Annotated[list[str] | None, typer.Option("--task", help="Only this task (repeatable).")] = None,
) -> None:
    """The result records as a table, one row per record and probe seed, with their provenance."""
    from urbanln_bench.cache import atomic_write_text
    from urbanln_bench.checks import check_input_dir, check_output_file
    from urbanln_bench.results import check_format, load, render

    check_format(fmt)
    check_input_dir(results, "--results", "result records")
    if out is not None:
        check_output_file(out, "--out")
    text = render(load(results, city=city or None, method=method or None, task=task or None), fmt)
    if out is None:
        sys.stdout.write(text)
        return
    atomic_write_text(out, text)
    typer.echo(str(out), err=True)


@app.command("paper-table")
def paper_table_command(city: Annotated[str, typer.Argument(help="BJ, SH, SZ or NY.")],
                        json_out: Annotated[bool, typer.Option("--json", help="Improvement records as JSON.")] = False) -> None:
    """The paper's own table for a city, with its improvement rows recomputed from its numbers."""
    from urbanln_bench.reference.paper import (
        improvement_rows,
        paper_table,
        paper_table_records,
        render_paper_table_markdown,
    )

    if json_out:
        typer.echo(json.dumps(paper_table_records(city), indent=1))
        return
    table = paper_table(city)
    typer.echo(render_paper_table_markdown(table, improvement_rows(table)))


@app.command("regress")
def regress_command(
    folder: Annotated[Path, typer.Option("--suite", help="Folder with suite.toml, reference/ and CHANGELOG.md.")] = Path("regress"),
    update: Annotated[bool, typer.Option("--update", help="Re-run and replace the references.")] = False,
    reason: Annotated[str, typer.Option("--reason", help="Changelog line for --update.")] = "",
    method: Annotated[list[str] | None, typer.Option("--method", help="Only these methods of the suite.")] = None,
) -> None:
    """Re-run the pinned tiny suite and compare with the reference records (OK / WARN / FAIL)."""
    from rich.table import Table

    from urbanln_bench.regress import regress

    console = _console()
    rows = regress(folder, update=update, reason=reason, methods=tuple(method) if method else None,
                   log=lambda m: console.print(m, highlight=False))
    if update:
        typer.echo(f"references updated under {folder / 'reference'}; changelog line added")
        return
    table = Table(title="regression suite vs reference (mean over seeds)")
    for column in ("cell", "method", "metric", "reference", "now", "grade"):
        table.add_column(column)
    colour = {"OK": "green", "WARN": "yellow", "FAIL": "red"}
    for r in rows:
        fmt = lambda v: "—" if v is None else f"{v:.4f}"  # noqa: E731
        table.add_row(r.cell, r.method, r.metric, fmt(r.reference), fmt(r.value), f"[{colour[r.grade]}]{r.grade}[/]")
    _console(stderr=False).print(table)
    counts = {g: sum(r.grade == g for r in rows) for g in ("OK", "WARN", "FAIL")}
    typer.echo(f"OK {counts['OK']}, WARN {counts['WARN']}, FAIL {counts['FAIL']}")
    if counts["FAIL"]:
        raise typer.Exit(1)


@app.command("check-method")
def check_method_command(
    names: Annotated[list[str] | None, typer.Argument(help="Method name(s) (see `urbanln-bench list methods`).")] = None,
    all_methods: Annotated[bool, typer.Option("--all", help="Check every registered method.")] = False,
    city: Annotated[str, typer.Option("--city", help="City whose tiny twin the checks run on.")] = "NY",
    imagery: Annotated[list[str] | None, typer.Option("--imagery", help="Only this imagery (repeatable); with --all, "
                                                      "where a method runs on it.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the reports as JSON.")] = False,
    setting: Annotated[list[str] | None, typer.Option("--set", help="Method setting KEY=VALUE (repeatable).")] = None,
) -> None:
    """Check that a method keeps the harness's contract on a tiny twin (smoke profile): output shape and
    finiteness, determinism, batch-size invariance, no access to labels. Exit 1 naming any failing check."""
    from rich.table import Table

    from urbanln_bench.check_method import FAIL, PASS, check_method
    from urbanln_bench.method import method_names
    from urbanln_bench.runner import parse_settings

    if all_methods == bool(names):
        raise UserError("check-method: name one or more methods, or pass --all")
    if all_methods and setting:
        raise UserError("check-method: --set applies to named methods, not to --all")
    console = _console()
    reports = []
    for name in method_names() if all_methods else names:
        console.print(f"checking {name} on the {city} tiny twin ...", highlight=False)
        reports.append(check_method(name, city=city, imagery=imagery or None, settings=parse_settings(setting or []),
                                    strict_imagery=not all_methods))
    if json_out:
        typer.echo(json.dumps([r.as_dict() for r in reports], indent=1))
    else:
        out = _console(stderr=False)
        colour = {PASS: "green", FAIL: "red"}
        for report in reports:
            table = Table(title=f"check-method {report.method} ({report.city} tiny twin, smoke profile, "
                                f"{report.seconds:.1f} s)")
            for column in ("check", "imagery", "result", "detail"):
                table.add_column(column)
            for r in report.results:
                status = f"[{colour[r.status]}]{r.status}[/]" if r.status in colour else r.status
                table.add_row(r.check, r.imagery or "—", status, r.detail)
            out.print(table)
        if len(reports) > 1:
            summary = Table(title="check-method summary")
            for column in ("method", "result", "seconds", "failing checks"):
                summary.add_column(column)
            for report in reports:
                summary.add_row(report.method, "[green]PASS[/]" if report.ok else "[red]FAIL[/]",
                                f"{report.seconds:.1f}",
                                ", ".join(f"{r.check} ({r.imagery})" if r.imagery else r.check
                                          for r in report.failed()) or "—")
            out.print(summary)
    failed = [(report.method, r) for report in reports for r in report.failed()]
    for method, r in failed:
        console.print(f"[red]FAIL[/red] {method}: {r.check}{f' ({r.imagery})' if r.imagery else ''}: {r.detail}",
                      highlight=False)
    if failed:
        raise typer.Exit(1)


@app.command("profile")
def profile_command(
    methods: Annotated[str, typer.Option("--methods", help="Comma-separated method names, or 'all'.")] = "all",
    profile: Annotated[str, typer.Option("--profile", help="Run profile: smoke (tests), cpu or paper.")] = "cpu",
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
    batch_size: Annotated[int, typer.Option("--batch-size")] = 32,
    batches: Annotated[int, typer.Option("--batches", help="Timed batches after one warm-up.")] = 4,
    json_out: Annotated[bool, typer.Option("--json")] = False,
    save: Annotated[bool, typer.Option(
        "--save", help="Store the profile, with this machine named, in the result store "
        "(<results>/profiles/<machine>/<profile>_<device>.json): `leaderboard` draws Figure 4 from it.")] = False,
    results: Annotated[Path | None, typer.Option(
        "--results", help="Result store to save into (implies --save; default with --save: results).")] = None,
) -> None:
    """Total and trainable parameters and inference images/s per method (the paper's Figure 4)."""
    from rich.table import Table

    from urbanln_bench.checks import check_count, check_device
    from urbanln_bench.method import method_names
    from urbanln_bench.profiles import check_profile
    from urbanln_bench.profiling import profile_methods

    check_profile(profile)
    check_device(device)
    check_count(batch_size, "--batch-size", 1, 65_536)
    check_count(batches, "--batches", 1, 10_000)
    names = method_names() if methods == "all" else [m.strip() for m in methods.split(",") if m.strip()]
    store = results if results is not None else (Path("results") if save else None)
    if store is not None:
        from urbanln_bench.checks import check_output_dir

        check_output_dir(store, "--results")
    rows = profile_methods(names, profile=profile, device=device, batch_size=batch_size, batches=batches)
    if store is not None:
        from urbanln_bench.measurements import profile_record, write_measurement

        record = profile_record(rows, profile=profile, device=device, batch_size=batch_size, batches=batches)
        path = write_measurement(store, record)
        _console().print(f"saved the profile of {len(rows)} method(s) on {record.machine.label} to {path}; "
                         "`urbanln-bench leaderboard` draws Figure 4 from it", highlight=False)
    if json_out:
        typer.echo(json.dumps(rows, indent=1))
        return
    table = Table(title=f"profile ({profile} profile, {device}, batch {batch_size}; random weights)")
    for column in ("method", "input", "total params", "trainable params", "images/s", "note"):
        table.add_column(column, justify="right" if column in ("input", "total params", "trainable params",
                                                               "images/s") else "left")
    for r in rows:
        def fmt(value, spec=","):
            return "—" if value is None else format(value, spec)
        table.add_row(r["method"], f"{r['input_size']} px", fmt(r["total"]), fmt(r["trainable"]),
                      fmt(r["images_per_second"], ",.1f"), r["note"])
    _console(stderr=False).print(table)


# -- captions: the caption pipeline (docs/methods.md#urbanln data level) -----------------------------------------

captions_app = typer.Typer(help="The caption pipeline: captioners, refinement, consensus, fidelity.", no_args_is_help=True)
app.add_typer(captions_app, name="captions")

CaptionerOpt = Annotated[list[str] | None, typer.Option(
    "--captioner", help="Captioner spec, repeatable: synthetic:PERSONA, transformers:DIR or file:JSONL "
    "(default: the five simulated paper captioners).")]
CaptionImageryOpt = Annotated[str, typer.Option("--imagery", help="SI (satellite) or SV (street view).")]
CandidatesOpt = Annotated[int, typer.Option("--candidates", help="Candidate captions per captioner.")]
SegmenterOpt = Annotated[str, typer.Option("--segmenter", help="colour (offline) or sam:DIR.")]
ExtractorOpt = Annotated[str, typer.Option("--phrases", help="Phrase extractor: parse (offline) or factual:DIR.")]
ScorerOpt = Annotated[str, typer.Option("--scorer", help="Phrase scorer: clip:PROFILE (offline) or owlv2:DIR.")]
ThresholdOpt = Annotated[float | None, typer.Option("--threshold", help="Keep threshold (default: calibrated for clip, "
                                                    "0.01 for owlv2).")]
RefineOpt = Annotated[bool, typer.Option("--refine/--no-refine", help="Divide-and-conquer refinement (ablation: off).")]
ConsensusOpt = Annotated[bool, typer.Option("--consensus/--random", help="Consensus selection, or seeded random choice.")]
CaptionSeedOpt = Annotated[int, typer.Option("--caption-seed", help="Seed of captioners and the random ablation.")]
LimitOpt = Annotated[int | None, typer.Option("--limit", help="Only the first N images (quick looks).")]


def _caption_city(city: str | None, city_file: Path | None, scale: str, seed: int | None, data_root: Path | None):
    from urbanln_bench.data.loader import CityData
    from urbanln_bench.synth.twin import ensure_twin

    if data_root is not None:
        return CityData.open(data_root)
    spec = _city(city, city_file, seed)
    return CityData.open(ensure_twin(spec, scale, progress_factory=_progress_factory(f"rendering {spec.name} twin ({scale})")))


def _pipeline_config(imagery, captioner, candidates, segmenter, phrases, scorer, threshold, refine, consensus,
                     caption_seed, limit):
    from urbanln_bench.captions.captioners import PAPER_CAPTIONERS
    from urbanln_bench.captions.pipeline import PipelineConfig

    return PipelineConfig(imagery=imagery.upper(), captioners=tuple(captioner) if captioner else PAPER_CAPTIONERS,
                          candidates_per_captioner=candidates, segmenter=segmenter, phrase_extractor=phrases,
                          phrase_scorer=scorer, threshold=threshold, refinement=refine, consensus=consensus,
                          seed=caption_seed, limit=limit)


@captions_app.command("build")
def captions_build(
    city: CityOpt = None, city_file: CityFileOpt = None, scale: ScaleOpt = "small", seed: SeedOpt = None,
    data_root: DataRootOpt = None, imagery: CaptionImageryOpt = "SI", captioner: CaptionerOpt = None,
    candidates: CandidatesOpt = 2, segmenter: SegmenterOpt = "colour", phrases: ExtractorOpt = "parse",
    scorer: ScorerOpt = "clip:cpu", threshold: ThresholdOpt = None, refine: RefineOpt = True,
    consensus: ConsensusOpt = True, caption_seed: CaptionSeedOpt = 0, limit: LimitOpt = None,
    workers: WorkersOpt = None,
) -> None:
    """Caption a city's images (or reuse the cached set) and print the caption set's folder."""
    from urbanln_bench.captions.pipeline import run_pipeline

    data = _caption_city(city, city_file, scale, seed, data_root)
    config = _pipeline_config(imagery, captioner, candidates, segmenter, phrases, scorer, threshold, refine,
                              consensus, caption_seed, limit)
    run = run_pipeline(data, config, progress=_progress_factory_named(), workers=workers)
    counts = run.info.get("counts", {})
    _console().print(f"{'reused' if run.reused else 'wrote'} caption set {run.key}: {counts.get('images', '?')} images, "
                     f"{counts.get('candidates', '?')} candidates, {run.info.get('seconds_total', 0)} s", highlight=False)
    typer.echo(str(run.folder))


@captions_app.command("report")
def captions_report(
    city: CityOpt = None, city_file: CityFileOpt = None, scale: ScaleOpt = "small", seed: SeedOpt = None,
    imagery: CaptionImageryOpt = "SI", captioner: CaptionerOpt = None, candidates: CandidatesOpt = 2,
    segmenter: SegmenterOpt = "colour", phrases: ExtractorOpt = "parse", scorer: ScorerOpt = "clip:cpu",
    threshold: ThresholdOpt = None, refine: RefineOpt = True, caption_seed: CaptionSeedOpt = 0,
    limit: LimitOpt = None, json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    workers: WorkersOpt = None,
    save: Annotated[bool, typer.Option(
        "--save", help="Store the per-stage numbers next to the city's records "
        "(<results>/<data tag>/<city>/captions/fidelity_<imagery>.json): `leaderboard` draws them.")] = False,
    results: Annotated[Path | None, typer.Option(
        "--results", help="Result store to save into (implies --save; default with --save: results).")] = None,
) -> None:
    """Object precision (1 − hallucination), recall and CLIP-token length of raw, refined and selected captions."""
    from rich.table import Table

    from urbanln_bench.captions.report import fidelity_report
    from urbanln_bench.processes import workers_for_this_run

    store = results if results is not None else (Path("results") if save else None)
    if store is not None:
        from urbanln_bench.checks import check_output_dir

        check_output_dir(store, "--results")
    data = _caption_city(city, city_file, scale, seed, None)
    config = _pipeline_config(imagery, captioner, candidates, segmenter, phrases, scorer, threshold, refine, True,
                              caption_seed, limit)
    with workers_for_this_run(workers):
        report = fidelity_report(data, config, progress=_progress_factory_named())
    if store is not None:
        from urbanln_bench.measurements import fidelity_record, write_measurement

        path = write_measurement(store, fidelity_record(report, data, config, scale))
        _console().print(f"saved caption fidelity of {report.city} {report.imagery} to {path}", highlight=False)
    if json_out:
        typer.echo(json.dumps(report.as_dict(), indent=1, default=str))
        return
    table = Table(title=f"caption fidelity, {report.city} {report.imagery} (synthetic twin; simulated captioners)")
    for column in ("stage", "captions", "object precision", "object recall", "CLIP tokens"):
        table.add_column(column)
    for row in report.rows:
        table.add_row(row.stage, str(row.n_captions), f"{row.object_precision:.3f}", f"{row.object_recall:.3f}",
                      f"{row.clip_tokens:.1f}")
    out = _console(stderr=False)
    out.print(table)
    speed = ", ".join(f"{name} {v['per_second']}/s" for name, v in report.speed.items())
    out.print(f"{'reused' if report.reused else 'built'} {report.folder} in {report.seconds_total} s; {speed}",
              highlight=False)


def main() -> None:
    from urbanln_bench.processes import stop_on_sigterm

    try:
        with stop_on_sigterm():  # SIGTERM unwinds like Ctrl-C: temporary folders removed, worker pools terminated
            app()
    except UserError as exc:
        from rich.markup import escape

        # escaped: messages name TOML tables ("[twin]") and lists that rich would read as markup
        _console().print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _console().print("[red]interrupted[/red]")
        sys.exit(130)


if __name__ == "__main__":
    main()
