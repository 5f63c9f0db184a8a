"""City and task files: the declarative catalogue (docs/architecture.md#core-concepts, paper Table 5).

A city file (``cities/NY.toml``) declares the imagery, tasks and labelled counts of the paper's Table 5;
a task file (``tasks/Pop.toml``) declares the indicator, unit, transform and source. The tables that
only a synthetic twin needs (a city's ``[geo]`` grid, ``[twin]`` and ``[style]``, a task's ``[twin]``)
are optional: this module keeps ``[twin]`` and ``[style]`` as plain tables and ``urbanln_bench.synth``
parses them (``synth/sections.py``), so the catalogue knows nothing of twins and a real-data city needs
none of them. Users add their own with
``--city-file PATH`` or by dropping files into ``$URBANLN_BENCH_HOME/cities`` (default
``~/.config/urbanln-bench/cities``); entry points in group ``urbanln_bench.cities`` /
``urbanln_bench.tasks`` may name a file path too.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from urbanln_bench.errors import SpecError
from urbanln_bench.paths import name_problem
from urbanln_bench.registry import Registry, suggest
from urbanln_bench.strict import from_mapping

IMAGERY = ("SV", "SI")
# Stated maxima of a city file's sizes (docs/hostile-inputs.md): far above the paper's biggest city (SH: 80 × 80
# grid, 5,168 regions), far below what would exhaust a machine (a 100000 × 100000 grid asks for 75 GiB).
MAX_GRID_SIDE = 2_000
MAX_GRID_CELLS = 1_000_000
MAX_REGIONS = 1_000_000
MAX_STREET_VIEWS = 100_000_000
MAX_STREET_VIEWS_PER_REGION = 10_000
AUX_MODALITIES = ("poi_counts", "mobility")
CITY_KINDS = ("benchmark", "pretraining-world")


@dataclass(frozen=True)
class TaskSpec:
    """One downstream indicator."""

    name: str
    full_name: str
    unit: str
    source: str
    twin: dict[str, Any] | None = None  # the [twin] table: how a twin draws the label (synth/sections.py)
    transform: str = "log1p"  # the paper's target: ln(y + 1)
    derived_from_aux: str = ""  # an auxiliary modality the label is computed from ("" = none)
    source_file: str = ""

    def __post_init__(self) -> None:
        _check_spec_name(self.name)
        if self.transform != "log1p":
            raise ValueError(f"transform must be 'log1p' (the paper's ln(y+1)), got '{self.transform}'")
        if self.derived_from_aux and self.derived_from_aux not in AUX_MODALITIES:
            raise ValueError(
                f"derived_from_aux '{self.derived_from_aux}' is not one of {', '.join(AUX_MODALITIES)}"
            )


@dataclass(frozen=True)
class PaperStats:
    """The paper's Table 5 row for a city."""

    regions: int
    street_views: int
    satellite_images: int
    labelled: dict[str, int]

    def __post_init__(self) -> None:
        if not 1 <= self.regions <= MAX_REGIONS:
            raise ValueError(f"paper.regions must be between 1 and {MAX_REGIONS:,}, got {self.regions}")
        for what, value in (("street_views", self.street_views), ("satellite_images", self.satellite_images)):
            if not 0 <= value <= MAX_STREET_VIEWS:
                raise ValueError(f"paper.{what} must be between 0 and {MAX_STREET_VIEWS:,}, got {value}")
        for task, count in self.labelled.items():
            if not 0 <= count <= self.regions:
                raise ValueError(f"paper.labelled.{task} must be between 0 and paper.regions ({self.regions}), "
                                 f"got {count}")


@dataclass(frozen=True)
class GeoGrid:
    """The region grid: ``rows`` × ``cols`` cells, of which the twin keeps ``regions`` inside the city."""

    rows: int
    cols: int
    origin_lat: float
    origin_lon: float
    cell_deg_lat: float
    cell_deg_lon: float

    def __post_init__(self) -> None:
        if self.rows <= 0 or self.cols <= 0:
            raise ValueError("rows and cols must be positive")
        if max(self.rows, self.cols) > MAX_GRID_SIDE or self.rows * self.cols > MAX_GRID_CELLS:
            raise ValueError(f"a {self.rows}×{self.cols} grid is over the maximum ({MAX_GRID_SIDE} rows or columns, "
                             f"{MAX_GRID_CELLS:,} cells); use a coarser grid")
        if self.cell_deg_lat <= 0 or self.cell_deg_lon <= 0:
            raise ValueError("cell_deg_lat and cell_deg_lon must be positive")
        if not (-90 <= self.origin_lat <= 90 and -180 <= self.origin_lon <= 180):
            raise ValueError(f"origin ({self.origin_lat}, {self.origin_lon}) is not a latitude/longitude")


@dataclass(frozen=True)
class CitySpec:
    """One city: catalogue facts, plus (optional) the grid and tables of its synthetic twin."""

    name: str
    full_name: str
    tasks: tuple[str, ...]
    geo: GeoGrid | None = None  # the region grid a twin places its regions on
    twin: dict[str, Any] | None = None  # the [twin] table (seed, centres, coast, ...): synth/sections.py
    style: dict[str, Any] | None = None  # the [style] table (palette, drawing rules): synth/sections.py
    kind: str = "benchmark"
    imagery: tuple[str, ...] = IMAGERY
    aux: tuple[str, ...] = ("poi_counts",)
    paper: PaperStats | None = None
    regions: int = 0  # number of regions of the twin at scale small/full; 0 = paper.regions
    street_views_per_region: float = 0.0  # full-scale mean; 0 = paper.street_views / paper.regions
    # per-scale cap on street views per region, e.g. {small = 2}: a big city's twin stays affordable on a
    # CPU; the cap is part of the city file, so of the twin's key, and the leaderboard states it
    max_street_views: dict[str, int] = field(default_factory=dict)
    source_file: str = ""
    digest: str = field(default="", compare=False)  # sha256 of the file's bytes (provenance; keys use the values)

    def __post_init__(self) -> None:
        _check_spec_name(self.name)
        if not self.name.strip():
            raise ValueError("name is empty; give the city a name, e.g. name = \"NY\"")
        if not self.tasks and self.kind == "benchmark":
            raise ValueError("tasks is empty; name at least one task, e.g. tasks = [\"Pop\"]")
        if not 0 <= self.regions <= MAX_REGIONS:
            raise ValueError(f"regions must be between 0 (= paper.regions) and {MAX_REGIONS:,}, got {self.regions}")
        if not 0 <= self.street_views_per_region <= MAX_STREET_VIEWS_PER_REGION:
            raise ValueError(f"street_views_per_region must be between 0 (= the paper's mean) and "
                             f"{MAX_STREET_VIEWS_PER_REGION:,}, got {self.street_views_per_region}")
        if self.kind not in CITY_KINDS:
            raise ValueError(f"kind must be one of {', '.join(CITY_KINDS)}, got '{self.kind}'")
        for imagery in self.imagery:
            if imagery not in IMAGERY:
                raise ValueError(f"imagery '{imagery}' is not one of {', '.join(IMAGERY)}")
        for aux in self.aux:
            if aux not in AUX_MODALITIES:
                raise ValueError(f"aux '{aux}' is not one of {', '.join(AUX_MODALITIES)}")
        if self.paper is not None:
            for task in self.paper.labelled:
                if task not in self.tasks:
                    raise ValueError(f"paper.labelled names task '{task}' that is not in tasks")
        for scale_name, cap in self.max_street_views.items():  # scale names are checked by synth/sections.py
            if not 1 <= cap <= MAX_STREET_VIEWS_PER_REGION:
                raise ValueError(f"max_street_views.{scale_name} must be between 1 and "
                                 f"{MAX_STREET_VIEWS_PER_REGION:,}, got {cap}")
        if self.geo is not None and self.n_regions > self.geo.rows * self.geo.cols:
            raise ValueError(
                f"{self.n_regions} regions do not fit a {self.geo.rows}×{self.geo.cols} grid"
            )

    @property
    def n_regions(self) -> int:
        if self.regions:
            return self.regions
        if self.paper is not None:
            return self.paper.regions
        return self.geo.rows * self.geo.cols if self.geo is not None else 0

    @property
    def mean_street_views(self) -> float:
        if self.street_views_per_region:
            return self.street_views_per_region
        if self.paper is not None and self.paper.regions:
            return self.paper.street_views / self.paper.regions
        return 3.0

    def labelled_share(self, task: str) -> float:
        """Share of regions that carry a label for ``task`` (paper Table 5; 1.0 when not stated)."""
        if self.paper is None or task not in self.paper.labelled:
            return 1.0
        return self.paper.labelled[task] / self.paper.regions


def _check_spec_name(name: str) -> None:
    """A city's or task's name names folders and files (twins, embeddings, records): one path component."""
    problem = name_problem(name)
    if problem:
        raise ValueError(f"name {name!r} {problem}; it names folders and files, so use letters, digits, _ - . "
                         "(not first)")


def _read_toml(path: Path) -> tuple[dict, bytes]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(f"{path}: file not found") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc}") from exc
    try:
        return tomllib.loads(raw.decode("utf-8")), raw
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: not valid TOML: {exc}") from exc
    except RecursionError:
        raise SpecError(f"{path}: not a usable TOML file: arrays or tables nested too deeply") from None


def load_task_file(path: str | Path) -> TaskSpec:
    path = Path(path)
    data, _ = _read_toml(path)
    data["source_file"] = str(path)
    return from_mapping(TaskSpec, data, str(path))


def load_city_file(path: str | Path) -> CitySpec:
    path = Path(path)
    data, raw = _read_toml(path)
    data["source_file"] = str(path)
    data["digest"] = hashlib.sha256(raw).hexdigest()
    _ensure_loaded()
    tasks = data.get("tasks", [])
    for task in tasks if isinstance(tasks, list) else []:
        if task not in TASKS:
            raise SpecError(f"{path}: tasks: unknown task '{task}'{suggest(str(task), TASKS.names())}")
    return from_mapping(CitySpec, data, str(path))


def user_home() -> Path:
    """Folder for a user's own city and task files."""
    env = os.environ.get("URBANLN_BENCH_HOME")
    return Path(env) if env else Path.home() / ".config" / "urbanln-bench"


CITIES: Registry[CitySpec] = Registry("city", entry_point_group="urbanln_bench.cities")
TASKS: Registry[TaskSpec] = Registry("task", entry_point_group="urbanln_bench.tasks")


class _LazyFile:
    """Registry target that parses its file on first use (keeps `list` and `--help` fast)."""

    def __init__(self, loader, path: Path) -> None:
        self.loader, self.path = loader, path


def _register_folder(registry: Registry, folder: Path, loader, *, builtin: bool) -> None:
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.toml")):
        registry.register(path.stem, _LazyFile(loader, path), builtin=builtin, origin=str(path))


def _builtin_folder(package: str) -> Path:
    return Path(str(resources.files(package)))


_loaded = False


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    _register_folder(TASKS, _builtin_folder("urbanln_bench.builtin.tasks"), load_task_file, builtin=True)
    _register_folder(TASKS, user_home() / "tasks", load_task_file, builtin=False)
    _register_folder(CITIES, _builtin_folder("urbanln_bench.builtin.cities"), load_city_file, builtin=True)
    _register_folder(CITIES, user_home() / "cities", load_city_file, builtin=False)


def _resolve(registry: Registry, name: str, loader):
    _ensure_loaded()
    target = registry.get(name)
    if isinstance(target, _LazyFile):
        return target.loader(target.path)
    if isinstance(target, str | Path):  # an entry point that names a file
        return loader(Path(target))
    return target


def get_task(name: str) -> TaskSpec:
    return _resolve(TASKS, name, load_task_file)


def get_city(name: str | None = None, city_file: str | Path | None = None) -> CitySpec:
    """A city by registered name, or from ``city_file`` (which wins)."""
    if city_file is not None:
        return load_city_file(city_file)
    if name is None:
        raise SpecError("name a city (--city NAME) or a city file (--city-file PATH)")
    return _resolve(CITIES, name, load_city_file)


def city_names(include_worlds: bool = False) -> list[str]:
    _ensure_loaded()
    names = CITIES.names()
    if include_worlds:
        return names
    return [n for n in names if not n.startswith("_")]


def pretraining_world() -> list[CitySpec]:
    """The cities of the pretraining world (docs/twins.md): own seeds and styles, never a benchmark twin."""
    folder = _builtin_folder("urbanln_bench.builtin.cities") / "pretraining_world"
    specs = [load_city_file(p) for p in sorted(folder.glob("*.toml"))]
    for spec in specs:
        if spec.kind != "pretraining-world":
            raise SpecError(f"{spec.source_file}: kind must be 'pretraining-world' in the pretraining world")
    return specs


def task_names() -> list[str]:
    _ensure_loaded()
    return TASKS.names()
