"""One loader for real data and synthetic twins (docs/architecture.md#core-concepts: CityData).

``CityData.open(root)`` reads a city directory in the native layout (``data/layout.py``): the
regions, indicators and auxiliary tables are read and checked at once, images lazily. Methods never
get a ``CityData``: they get ``CityData.unlabelled()``, an ``UnlabelledCity`` that carries imagery,
regions and auxiliary modalities only — no indicator, no latent, no path to them (see that class).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from urbanln_bench.data import layout
from urbanln_bench.data.links import link_problems
from urbanln_bench.data.manifest import verified_manifest_hash
from urbanln_bench.data.tables import Regions, read_csv_rows, read_region_matrix, read_regions
from urbanln_bench.errors import DataError
from urbanln_bench.paths import name_problem


def _raise_problems(root: Path, problems: list[str]) -> None:
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise DataError(
            f"{root}: {len(problems)} problem(s) in the city data:\n  {shown}{more}\n"
            f"Run `urbanln-bench data validate {root}` for the full report."
        )


# Largest image the harness decodes: Pillow's own default (≈ 89.5 Mpx, 256 MiB as RGB), set explicitly
# so that no other library lifts it; $URBANLN_BENCH_MAX_IMAGE_PIXELS raises it for data that needs more.
MAX_IMAGE_PIXELS = 89_478_485
MAX_IMAGE_PIXELS_ENV = "URBANLN_BENCH_MAX_IMAGE_PIXELS"


def max_image_pixels() -> int:
    text = os.environ.get(MAX_IMAGE_PIXELS_ENV)
    if not text:
        return MAX_IMAGE_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise DataError(f"${MAX_IMAGE_PIXELS_ENV} must be a positive number of pixels, got {text!r}")
    return value


def load_image(path: Path) -> np.ndarray:
    """An image file as an (H, W, 3) uint8 array; a corrupt file, or one whose header claims more pixels
    than ``max_image_pixels()`` (checked before anything is decoded), raises DataError naming it."""
    from PIL import Image, UnidentifiedImageError

    limit = max_image_pixels()
    Image.MAX_IMAGE_PIXELS = limit  # Pillow refuses at open past twice this; the header check below past once
    try:
        with warnings.catch_warnings():  # Pillow warns past the limit; the check below refuses instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)  # reads the header only
        with image:
            width, height = image.size
            if width * height > limit:
                raise DataError(f"{path}: image header claims {width} × {height} pixels, more than the "
                                f"{limit:,} the harness decodes; resize the image (or raise "
                                f"${MAX_IMAGE_PIXELS_ENV} if it is real)")
            return np.asarray(image.convert("RGB"))
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path}: image header claims more than twice the {limit:,} pixels the harness decodes "
                        f"({exc}); resize the image (or raise ${MAX_IMAGE_PIXELS_ENV} if it is real)") from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: unreadable image: {exc}") from exc


class _ImageIndex:
    """Image id → image file. Holds paths of image files only (never the data root)."""

    def __init__(self, satellite: dict[str, Path], streetview: dict[str, list[tuple[str, Path]]]) -> None:
        self._satellite = satellite
        self._streetview = streetview

    def satellite_ids(self, region_ids: Sequence[str]) -> list[str]:
        return [rid for rid in region_ids if rid in self._satellite]

    def streetview_ids(self, region_id: str) -> list[str]:
        return [image_id for image_id, _ in self._streetview.get(region_id, [])]

    def path(self, image_id: str) -> Path:
        if "/" in image_id:
            region_id = image_id.split("/", 1)[0]
            for candidate, path in self._streetview.get(region_id, []):
                if candidate == image_id:
                    return path
        elif image_id in self._satellite:
            return self._satellite[image_id]
        raise KeyError(f"unknown image id '{image_id}'")

    def load(self, image_id: str) -> np.ndarray:
        return load_image(self.path(image_id))


def scan_images(root: Path, region_ids: Sequence[str]) -> tuple[dict[str, Path], dict[str, list[tuple[str, Path]]], list[str]]:
    """Find the satellite and street-view files of every region; stray files are problems."""
    known = set(region_ids)
    problems: list[str] = []
    satellite: dict[str, Path] = {}
    sat_dir = root / layout.SATELLITE
    if not sat_dir.is_dir():
        problems.append(f"{sat_dir}: missing folder (one satellite image per region)")
    else:
        for path in sorted(sat_dir.iterdir()):
            if path.name.startswith("."):
                continue
            if not path.is_file() or path.suffix.lower() not in layout.IMAGE_SUFFIXES:
                problems.append(f"{path}: not an image file ({', '.join(layout.IMAGE_SUFFIXES)})")
                continue
            if path.stem not in known:
                problems.append(f"{path}: satellite image for unknown region '{path.stem}'")
                continue
            if path.stem in satellite:
                problems.append(f"{path}: second satellite image for region '{path.stem}' (also {satellite[path.stem].name})")
                continue
            satellite[path.stem] = path
        for rid in region_ids:
            if rid not in satellite:
                problems.append(f"{sat_dir}: region '{rid}' has no satellite image")
    streetview: dict[str, list[tuple[str, Path]]] = {}
    sv_dir = root / layout.STREETVIEW
    if sv_dir.is_dir():
        for folder in sorted(sv_dir.iterdir()):
            if folder.name.startswith("."):
                continue
            if not folder.is_dir():
                problems.append(f"{folder}: expected a folder per region (streetview/<region_id>/)")
                continue
            if folder.name not in known:
                problems.append(f"{folder}: street views for unknown region '{folder.name}'")
                continue
            images = []
            for path in sorted(folder.iterdir()):
                if path.name.startswith("."):
                    continue
                if not path.is_file() or path.suffix.lower() not in layout.IMAGE_SUFFIXES:
                    problems.append(f"{path}: not an image file ({', '.join(layout.IMAGE_SUFFIXES)})")
                    continue
                images.append((f"{folder.name}/{path.stem}", path))
            if images:
                streetview[folder.name] = images
    return satellite, streetview, problems


@dataclass(frozen=True)
class Mobility:
    """Origin–destination flows between regions (indices into the region order)."""

    origin: np.ndarray
    destination: np.ndarray
    trips: np.ndarray

    def matrix(self, n_regions: int) -> np.ndarray:
        out = np.zeros((n_regions, n_regions))
        np.add.at(out, (self.origin, self.destination), self.trips)
        return out


@dataclass(frozen=True)
class PoiCounts:
    categories: tuple[str, ...]
    counts: np.ndarray  # (n_regions, n_categories), NaN where a region has no row


def read_mobility(path: Path, region_index: dict[str, int], problems: list[str]) -> Mobility:
    header, rows = read_csv_rows(path, problems)
    origin, destination, trips = [], [], []
    if header and list(header) != list(layout.MOBILITY_COLUMNS):
        problems.append(f"{path}: columns must be {','.join(layout.MOBILITY_COLUMNS)}, got {','.join(header)}")
        return Mobility(np.zeros(0, int), np.zeros(0, int), np.zeros(0))
    for line_no, (o, d, t) in enumerate(rows, start=2):
        for rid in (o, d):
            if rid not in region_index:
                problems.append(f"{path}:{line_no}: region_id '{rid}' is not in {layout.REGIONS}")
        try:
            value = float(t)
        except ValueError:
            problems.append(f"{path}:{line_no}: trips is not a number: {t!r}")
            continue
        if not np.isfinite(value) or value < 0:
            problems.append(f"{path}:{line_no}: trips must be a finite number ≥ 0, got {t!r}")
            continue
        if o in region_index and d in region_index:
            origin.append(region_index[o])
            destination.append(region_index[d])
            trips.append(value)
    return Mobility(np.asarray(origin, int), np.asarray(destination, int), np.asarray(trips, float))


def read_meta(root: Path, problems: list[str]) -> dict:
    path = root / layout.CITY_META
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        problems.append(f"{path}: missing file (write {{\"city\": \"NAME\", \"source\": \"real\"}})")
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(f"{path}: unreadable: {exc}")
        return {}
    except RecursionError:
        problems.append(f"{path}: not a usable JSON object (nested too deeply)")
        return {}
    if not isinstance(meta, dict):
        problems.append(f"{path}: expected a JSON object")
        return {}
    for key in ("city", "source"):
        if key not in meta:
            problems.append(f"{path}: missing key '{key}'")
    city = meta.get("city")
    if "city" in meta and (not isinstance(city, str) or not city.strip()):
        problems.append(f"{path}: 'city' must be the city's name (a non-empty string), got {city!r}")
        meta = {k: v for k, v in meta.items() if k != "city"}
    tasks = meta.get("tasks")
    if "tasks" in meta and (not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks)):
        problems.append(f"{path}: 'tasks' must be a list of task names, e.g. [\"Pop\", \"GDP\"], got {tasks!r}")
        meta = {k: v for k, v in meta.items() if k != "tasks"}
    if "city" in meta and name_problem(meta["city"]):
        problems.append(f"{path}: city {meta['city']!r} {name_problem(meta['city'])}; it names folders and files, so "
                        "use letters, digits, _ - . (not first)")
    if meta.get("source") not in (None, *layout.SOURCES):
        problems.append(f"{path}: source must be one of {', '.join(layout.SOURCES)}, got {meta.get('source')!r}")
    return meta


def known_task_names() -> list[str]:
    from urbanln_bench.specs import task_names

    return task_names()


# Cities already opened inside ``reuse_opened()`` blocks (None outside them): (folder, options) → (the
# folder's stamp when it was opened, the CityData).
_REUSED: dict[tuple, tuple[tuple, CityData]] | None = None


def _stamp(root: Path) -> tuple:
    """A cheap sign that a folder was rewritten: the size and mtime of the folder, its manifest and its
    metadata (a re-render or ``data manifest --write`` changes at least one)."""
    out = []
    for path in (root, root / layout.MANIFEST, root / layout.CITY_META):
        try:
            stat = path.stat()
            out.append((stat.st_size, stat.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


@contextmanager
def reuse_opened():
    """Within this block, ``CityData.open`` reads and checks each city folder once: a second open of the
    same folder with the same options returns the city already opened, as long as the folder, its
    manifest and its metadata keep their size and mtime.

    For read-only passes that open the same cities many times in one process — ``leaderboard
    --verify-keys`` replays every stored cell, and each replay opens its city and the pretraining
    world's (docs/identity.md). Opening is what costs there: walking the files, checking the links and
    verifying the manifest. Code that changes a folder's files while the block is open must not use it.
    Blocks nest; the cities are dropped when the outermost one ends.
    """
    global _REUSED
    if _REUSED is not None:  # inside another block: share its cities
        yield
        return
    _REUSED = {}
    try:
        yield
    finally:
        _REUSED = None


class CityData:
    """A loaded city (real or synthetic), with labels. Only the harness holds one."""

    def __init__(self, root: Path, meta: dict, regions: Regions, indicators: dict[str, np.ndarray],
                 images: _ImageIndex, poi: PoiCounts | None, mobility: Mobility | None) -> None:
        self.root = root
        self.meta = meta
        self.regions = regions
        self._indicators = indicators
        self._images = images
        self.poi = poi
        self.mobility = mobility

    @classmethod
    def open(cls, root: str | Path, *, allow_symlinks: bool = False, exempt: frozenset[str] = frozenset()) -> CityData:
        """Read and check a city folder: its tables, its links (none may lead outside it unless
        ``allow_symlinks``) and its manifest against the files (``data/manifest.py``; ``exempt``: files
        the harness rewrote on purpose, see ``verify_manifest``). Inside ``reuse_opened()`` a folder
        opened before is not read again."""
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"{root}: not a directory (expected a city folder in the native layout)")
        if _REUSED is None:
            return cls._read(root, allow_symlinks=allow_symlinks, exempt=exempt)
        key = (str(root.resolve()), allow_symlinks, exempt)
        stamp = _stamp(root)
        if key in _REUSED and _REUSED[key][0] == stamp:
            return _REUSED[key][1]
        data = cls._read(root, allow_symlinks=allow_symlinks, exempt=exempt)
        _REUSED[key] = (stamp, data)
        return data

    @classmethod
    def _read(cls, root: Path, *, allow_symlinks: bool, exempt: frozenset[str]) -> CityData:
        problems: list[str] = link_problems(root, allow=allow_symlinks)
        _raise_problems(root, problems)  # before anything is read through a link
        meta = read_meta(root, problems)
        regions = read_regions(root / layout.REGIONS, problems)
        index = regions.index()
        tasks = known_task_names()
        columns, matrix = read_region_matrix(
            root / layout.INDICATORS, index, problems, allowed_columns=tasks,
            required_columns=list(meta.get("tasks", [])), what="indicator",
        )
        indicators = {col: matrix[:, j] for j, col in enumerate(columns)}
        satellite, streetview, image_problems = scan_images(root, regions.ids)
        problems += image_problems
        poi = None
        if (root / layout.POI_COUNTS).exists():
            categories, counts = read_region_matrix(root / layout.POI_COUNTS, index, problems, what="POI count")
            poi = PoiCounts(tuple(categories), counts)
        mobility = read_mobility(root / layout.MOBILITY, index, problems) if (root / layout.MOBILITY).exists() else None
        _raise_problems(root, problems)
        data = cls(root, meta, regions, indicators, _ImageIndex(satellite, streetview), poi, mobility)
        data.manifest_hash = verified_manifest_hash(root, exempt=exempt)
        return data

    # -- identity -----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.meta["city"]

    @property
    def source(self) -> str:
        """'real' or 'synthetic': shown with every number computed from this data."""
        return self.meta["source"]

    manifest_hash: str = ""  # the data's identity, set by ``open`` once the manifest is verified

    # -- labels (harness only) ----------------------------------------------------------------
    @property
    def tasks(self) -> list[str]:
        return list(self._indicators)

    def indicator(self, task: str) -> np.ndarray:
        """Raw indicator values aligned with ``regions.ids`` (NaN = missing label)."""
        if task not in self._indicators:
            raise DataError(f"{self.root / layout.INDICATORS}: no column '{task}' (has: {', '.join(self._indicators)})")
        return self._indicators[task]

    # -- images ---------------------------------------------------------------------------------
    def satellite_ids(self) -> list[str]:
        return self._images.satellite_ids(self.regions.ids)

    def streetview_ids(self, region_id: str) -> list[str]:
        return self._images.streetview_ids(region_id)

    def image_path(self, image_id: str) -> Path:
        return self._images.path(image_id)

    def load_image(self, image_id: str) -> np.ndarray:
        return self._images.load(image_id)

    def regions_with_streetview(self) -> list[str]:
        return [rid for rid in self.regions.ids if self._images.streetview_ids(rid)]

    # -- synthetic truth -----------------------------------------------------------------------
    def _require_synthetic(self, what: str) -> None:
        if self.source != "synthetic":
            raise DataError(f"{self.root}: {what} exist for synthetic twins only (this data is {self.source})")

    def latents(self) -> tuple[list[str], np.ndarray]:
        """The twin's true latents (names, (n_regions, L) array aligned with regions)."""
        self._require_synthetic("latents")
        problems: list[str] = []
        names, matrix = read_region_matrix(self.root / layout.LATENTS, self.regions.index(), problems, what="latent")
        _raise_problems(self.root, problems)
        return names, matrix

    def oracle(self) -> dict:
        """The analytic ceiling per cell, as the twin stored it (truth/oracle.json)."""
        self._require_synthetic("oracle ceilings")
        return json.loads((self.root / layout.ORACLE).read_text())

    def scene_graphs(self, imagery: str) -> dict[str, dict]:
        """Image id → ground-truth scene graph (as a dict) for 'SI' or 'SV' images."""
        self._require_synthetic("scene graphs")
        out = {}
        with open(self.root / layout.SCENE_GRAPHS[imagery]) as handle:
            for line in handle:
                record = json.loads(line)
                out[record["image_id"]] = record["graph"]
        return out

    # -- the view methods get ------------------------------------------------------------------
    def unlabelled(self) -> UnlabelledCity:
        return UnlabelledCity(
            name=self.name,
            source=self.source,
            manifest_hash=self.manifest_hash,
            regions=self.regions,
            images=self._images,
            poi=self.poi,
            mobility=self.mobility,
        )


@dataclass(frozen=True)
class ImageBatch:
    ids: list[str]
    images: list[np.ndarray]

    def stack(self) -> np.ndarray:
        return np.stack(self.images)


class UnlabelledCity:
    """What a method's ``fit`` sees: imagery, regions, auxiliary modalities — never labels.

    It is built from copies of the pieces it needs and holds no reference to the ``CityData`` it
    came from, to the data root, to the indicators table or to the synthetic truth. Image files are
    reached by image id through a private index that holds image paths only; images are returned as
    arrays, never as paths. ``tests/test_unlabelled_view.py`` checks each route.
    """

    __slots__ = ("name", "source", "manifest_hash", "regions", "_images", "poi", "mobility")

    def __init__(self, *, name: str, source: str, manifest_hash: str, regions: Regions,
                 images: _ImageIndex, poi: PoiCounts | None, mobility: Mobility | None) -> None:
        self.name = name
        self.source = source
        self.manifest_hash = manifest_hash
        self.regions = regions
        self._images = images
        self.poi = poi
        self.mobility = mobility

    def satellite_ids(self) -> list[str]:
        return self._images.satellite_ids(self.regions.ids)

    def streetview_ids(self, region_id: str) -> list[str]:
        return self._images.streetview_ids(region_id)

    def image_ids(self, imagery: str) -> list[str]:
        """Every image id of one imagery ('SI' or 'SV'), in region order."""
        if imagery == "SI":
            return self.satellite_ids()
        if imagery == "SV":
            return [i for rid in self.regions.ids for i in self._images.streetview_ids(rid)]
        raise ValueError(f"imagery must be 'SI' or 'SV', got {imagery!r}")

    def load_image(self, image_id: str) -> np.ndarray:
        return self._images.load(image_id)

    def iter_images(self, image_ids: Sequence[str], batch_size: int = 64) -> Iterator[ImageBatch]:
        """Images in batches, loaded lazily from disk."""
        for start in range(0, len(image_ids), batch_size):
            ids = list(image_ids[start:start + batch_size])
            yield ImageBatch(ids, [self._images.load(i) for i in ids])
