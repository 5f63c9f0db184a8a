"""The ``urbanln-bench`` command line. Heavy modules are imported inside commands so ``--help`` is fast."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from urbanln_bench.errors import UserError

app = typer.Typer(
    name="urbanln-bench",
    help="Benchmark harness for urban region representation learning from imagery (UrbanLN and baselines).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="City data: synthesise twins, validate real data, look at it.", no_args_is_help=True)
list_app = typer.Typer(help="List the catalogue: cities, tasks.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(list_app, name="list")

CityOpt = Annotated[str | None, typer.Option("--city", help="City name (see `urbanln-bench list cities`).")]
CityFileOpt = Annotated[Path | None, typer.Option("--city-file", help="Your own city file (TOML); wins over --city.")]
ScaleOpt = Annotated[str, typer.Option("--scale", help="Twin scale: tiny, small (default) or full.")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Override the twin seed of the city file.")]
DataRootOpt = Annotated[Path | None, typer.Option("--data-root", help="A city folder with real data in the native layout.")]


def _console(stderr: bool = True):
    from rich.console import Console

    return Console(stderr=stderr, soft_wrap=True)


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
    from urbanln_bench.specs import get_city
    from urbanln_bench.synth.twin import with_seed

    return with_seed(get_city(city, city_file), seed)


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
                  write_manifest: Annotated[bool, typer.Option("--write-manifest", help="Write manifest.json when valid.")] = False) -> None:
    """Report every problem of a city folder; exit 1 if there is any."""
    from urbanln_bench.data.validate import validate_city_dir

    report = validate_city_dir(path)
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


@data_app.command("show")
def data_show(city: CityOpt = None, city_file: CityFileOpt = None, scale: ScaleOpt = "small", seed: SeedOpt = None,
              data_root: DataRootOpt = None,
              out: Annotated[Path | None, typer.Option("--out", help="PNG path (default ./<CITY>-contact-sheet.png).")] = None,
              regions: Annotated[int, typer.Option("--regions", help="How many regions to show.")] = 8) -> None:
    """Write a contact sheet PNG: satellite tile and street views of a few regions."""
    from urbanln_bench.data.contact_sheet import contact_sheet
    from urbanln_bench.data.sources import open_city

    spec = _city(city, city_file, seed)
    data = open_city(spec, scale=scale, data_root=data_root, progress_factory=_progress_factory(f"rendering {spec.name} twin"))
    out = out or Path(f"{spec.name}-contact-sheet.png")
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

    table = Table(title=f"{spec.name} twin ({scale}, synthetic): ceiling vs colour-histogram ridge, test R² (seed 0)")
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


def main() -> None:
    try:
        app()
    except UserError as exc:
        _console().print(f"[bold red]error:[/bold red] {exc}", highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _console().print("[red]interrupted[/red]")
        sys.exit(130)


if __name__ == "__main__":
    main()
