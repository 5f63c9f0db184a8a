"""``urbanln-bench data import --from FORMAT SRC DEST``: the peers' released layouts into the native one.

Formats (facts: ../shared/PEERS.md §1, §2, §11):

- ``urbanclip``: UrbanCLIP's ``data/`` folder or its dataset toolkit. Satellite tiles
  ``<City>/<zoom>_<x>_<y>_s.jpg``; captions ``<City>_captions.json``, a JSON **array** of
  ``{"caption", "image"}`` sentences, either grouped per image or one flat list (the toolkit's
  ``caption/pairs``), regrouped here by ``image``; indicator CSVs with a stringified ``Coordinate``
  ``"(x, y)"`` (``<City>_train.csv``, ``<City>_test.csv``, ``<City>.csv``) or the toolkit's integrated
  CSV (``satellite_img_name, BD09 coordinate, WGS84 coordinate, ...``).
- ``urbanvlp``: UrbanVLP's ``data/`` folder (or the system release): ``satellite_images/<City>/``,
  ``satellite_texts/<City>.json`` (grouped per image), street views ``streetview_images/<City>/`` with
  their captions ``streetview_texts/<City>/*.json`` or ``streetview_captions/<City>/*.json``
  (``{path: paragraph}``; the point's lon, lat and date are in the file name), the per-tile lists
  ``streetview_corresponding/<City>/text/<tile>.txt`` and ``downstream/<City>_{train,test}.csv``
  (``Coordinate, carbon, population, gdp, poi, nightlight``; ``poi`` a stringified dict of 14 counts).
- ``musecl``: refused with the reason: its New York release is a Google Drive archive whose layout its
  code does not state (every data path in the code is an empty string), so nothing here could be checked.

Regions are the satellite tiles: id ``z<zoom>_<x>_<y>``, ``row = y``, ``col = x``; ``region_map.csv``
beside ``regions.csv`` maps each id back to (zoom, x, y), the source file name and, where the source
gives it (the toolkit's ``WGS84 coordinate``, or ``lat``/``lon`` columns a user adds), the tile corner's
lat/lon. Street views join the tile that lists them in ``streetview_corresponding``.

With ``region_grid="latlon:<deg>"`` (``--region-grid``) the region ids come from a lat/lon grid instead
(:mod:`urbanln_bench.data.grid`): each tile is placed by its WGS84 position into the cell
``g<deg>_<row>_<col>`` (``row``/``col`` in ``regions.csv`` are the cell's, ``lat``/``lon`` its centre),
two tiles in one cell are a problem (choose a smaller cell), and a tile without a WGS84 position is
refused, because Baidu's tile indices are Baidu Mercator (:func:`grid.refuse_bd09_mercator`). Street
views are placed by the point in their file name, converted from ``streetview_datum`` (wgs84, gcj02 or
bd09; UrbanVLP does not state its datum, so it must be given), into the cell that holds it; the tiles'
lists are not used. ``region_map.csv`` then also holds each cell's bounds. Captions are written as ``file`` captioner JSONL
(``captions/imported/SI.jsonl`` and ``SV.jsonl``), one caption per image: an image's sentences joined
in file order, as the captioner wrote them before they were split on ". ".

Strings are never evaluated: ``Coordinate`` and ``poi`` are read with regular expressions. Every
problem names the source ``file:line``; the import writes into a temporary sibling, validates it with
the same checks as ``data validate`` and renames it into place only when there is no problem.
"""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from urbanln_bench.captions.caption_file import object_lines
from urbanln_bench.data import layout
from urbanln_bench.data.grid import (
    DATUMS,
    GridCell,
    LatLonGrid,
    parse_region_grid,
    refuse_bd09_mercator,
    to_wgs84,
)
from urbanln_bench.errors import DataError, UserError

FORMATS = ("urbanclip", "urbanvlp", "musecl")
REGION_MAP = "region_map.csv"
IMPORTED_CAPTIONS = {"SI": "captions/imported/SI.jsonl", "SV": "captions/imported/SV.jsonl"}

# The peers' city folder names → the harness's city names (cities/*.toml).
CITY_NAMES = {"Beijing": "BJ", "Shanghai": "SH", "Shenzhen": "SZ", "NewYork": "NY", "New York": "NY", "NYC": "NY"}

# Indicator columns of the peers' CSVs → the harness's tasks (tasks/*.toml). "poi" is special (a dict).
COLUMN_TASKS = {
    "carbon": "CO2", "co2": "CO2", "carbon_emissions (ton)": "CO2",
    "population": "Pop", "population (unit)": "Pop",
    "gdp": "GDP", "gdp (million yuan)": "GDP",
    "nightlight": "Night", "night": "Night",
}
# Columns that are not indicators: the key, coordinates and image names.
KEY_COLUMNS = {"coordinate", "bd09 coordinate", "wgs84 coordinate", "satellite_img_name"}
# A tile's WGS84 position given as two columns (a user's CSV) instead of the toolkit's "(lat, lon)" string.
LAT_COLUMNS, LON_COLUMNS = ("lat", "latitude"), ("lon", "lng", "longitude")

TILE_NAME = re.compile(r"^(?P<zoom>\d{1,2})_(?P<x>\d+)_(?P<y>\d+)_s\.(?:jpe?g|png)$", re.IGNORECASE)
COORDINATE = re.compile(r"^\s*\(\s*(?P<a>[-+]?\d+(?:\.\d+)?)\s*,\s*(?P<b>[-+]?\d+(?:\.\d+)?)\s*\)\s*$")
_POI_ENTRY = r"""\s*(?:'[^'\\]*'|"[^"\\]*")\s*:\s*[-+]?\d+(?:\.\d+)?\s*"""
POI_DICT = re.compile(r"^\s*\{(?:" + _POI_ENTRY + r"(?:," + _POI_ENTRY + r")*,?\s*)?\}\s*$")
POI_ITEM = re.compile(r"""(?:'(?P<s>[^'\\]*)'|"(?P<d>[^"\\]*)")\s*:\s*(?P<v>[-+]?\d+(?:\.\d+)?)""")
STREETVIEW_NAME = re.compile(r"^(?P<id>[^_]+)_(?P<lon>[-+]?\d+(?:\.\d+)?),(?P<lat>[-+]?\d+(?:\.\d+)?)_(?P<date>\d{6})"
                             r"_(?P<heading>[-+]?\d+(?:\.\d+)?)$")


def region_id(zoom: int, x: int, y: int) -> str:
    """The region id of a map tile (letters, digits and ``_`` only, so it can name files)."""
    return f"z{zoom}_{x}_{y}"


def parse_coordinate(text: str) -> tuple[float, float] | None:
    """``"(12638,4740)"`` or ``"(40.09, 116.44)"`` → a pair of numbers; None for anything else (never eval)."""
    match = COORDINATE.match(text)
    return (float(match["a"]), float(match["b"])) if match else None


def parse_poi_dict(text: str) -> dict[str, float] | None:
    """UrbanVLP's stringified ``{'Dining and Cuisine': 0, ...}`` → {category: count}; None if it is not one.

    Only quoted keys and plain numbers are accepted (never eval). Keys are stripped: the release has
    ``' Business and Residential'`` with a leading space.
    """
    if not POI_DICT.match(text):
        return None
    return {(m["s"] if m["s"] is not None else m["d"]).strip(): float(m["v"]) for m in POI_ITEM.finditer(text)}


def poi_column(category: str) -> str:
    """A category name as a CSV column: ``Science, Education and Culture`` → ``science_education_and_culture``."""
    return re.sub(r"[^a-z0-9]+", "_", category.lower()).strip("_")


@dataclass
class Tile:
    zoom: int
    x: int
    y: int
    image: Path
    lat: float = math.nan
    lon: float = math.nan
    cell: GridCell | None = None  # the lat/lon grid cell this tile is the region of (``--region-grid latlon:``)

    @property
    def id(self) -> str:
        return self.cell.id if self.cell is not None else region_id(self.zoom, self.x, self.y)

    @property
    def tile_id(self) -> str:
        return region_id(self.zoom, self.x, self.y)


@dataclass
class ImportReport:
    """What an import did (or would have done): counts, notes, and every problem as ``file:line``."""

    format: str
    source: Path
    dest: Path
    city: str = ""
    source_city: str = ""
    regions: int = 0
    streetview_images: int = 0
    captions: dict[str, int] = field(default_factory=dict)
    labelled: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {"format": self.format, "source": str(self.source), "dest": str(self.dest), "city": self.city,
                "source_city": self.source_city, "ok": self.ok, "regions": self.regions,
                "streetview_images": self.streetview_images, "captions": self.captions, "labelled": self.labelled,
                "notes": self.notes, "problems": self.problems}


@dataclass
class _Plan:
    """Everything read from the source, before anything is written."""

    tiles: dict[str, Tile] = field(default_factory=dict)
    indicators: dict[str, dict[str, float]] = field(default_factory=dict)  # region → task → value
    poi: dict[str, dict[str, float]] = field(default_factory=dict)  # region → category → count
    poi_categories: list[str] = field(default_factory=list)
    streetviews: dict[str, list[Path]] = field(default_factory=dict)  # region → image files
    captions: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: {"SI": [], "SV": []})


# -- finding the source's files -------------------------------------------------------------------------


def _walk(src: Path) -> list[Path]:
    """Every file under ``src``, sorted; hidden folders and notebook checkpoints are skipped."""
    out = []
    for path in sorted(src.rglob("*")):
        parts = path.relative_to(src).parts
        if any(p.startswith(".") for p in parts) or not path.is_file():
            continue
        out.append(path)
    return out


def _pick(candidates: list[Path], what: str, src: Path, notes: list[str]) -> Path | None:
    """The shallowest candidate; the others are named in the notes (e.g. the toolkit's ``pairs/ocean/`` copy)."""
    if not candidates:
        return None
    candidates = sorted(candidates, key=lambda p: (len(p.relative_to(src).parts), str(p)))
    for other in candidates[1:]:
        notes.append(f"{other}: a second {what}; used {candidates[0].relative_to(src)} (the shallowest), not this one")
    return candidates[0]


def _source_city(files: list[Path], given: str | None, src: Path) -> str:
    """The peers' city folder name (``Beijing``): given, or the only city with tiles."""
    cities = sorted({p.parent.name for p in files if TILE_NAME.match(p.name)})
    if given:
        if given not in cities:
            raise DataError(f"{src}: no satellite tiles <{given}>/<zoom>_<x>_<y>_s.jpg (cities with tiles: "
                            f"{', '.join(cities) or 'none'})")
        return given
    if len(cities) != 1:
        raise DataError(f"{src}: " + (f"tiles of several cities ({', '.join(cities)}); pick one with --source-city"
                                      if cities else "no satellite tiles named <City>/<zoom>_<x>_<y>_s.jpg"))
    return cities[0]


# -- readers --------------------------------------------------------------------------------------------


def _read_tiles(files: list[Path], source_city: str, zoom: int, plan: _Plan, notes: list[str]) -> None:
    other_zoom = 0
    for path in files:
        match = TILE_NAME.match(path.name)
        if not match or path.parent.name != source_city:
            continue
        if int(match["zoom"]) != zoom:
            other_zoom += 1
            continue
        tile = Tile(zoom, int(match["x"]), int(match["y"]), path)
        if tile.id in plan.tiles:
            notes.append(f"{path}: the same tile as {plan.tiles[tile.id].image} (kept the first)")
            continue
        plan.tiles[tile.id] = tile
    if other_zoom:
        notes.append(f"{other_zoom} tile(s) of {source_city} at a zoom other than {zoom} ignored (--zoom)")



def _streetview_paragraph(text: Path | None, problems: list[str]) -> str | None:
    """The one paragraph of an UrbanVLP street-view caption file (``{path: paragraph}``); None, with a
    problem noted, when the file is unreadable or holds another shape; None when there is no file."""
    if text is None:
        return None
    data = _read_json(text, problems)
    if data is None:
        return None
    paragraphs = [v for v in data.values() if isinstance(v, str) and v.strip()] if isinstance(data, dict) else []
    if len(paragraphs) != 1:
        problems.append(f"{text}:1: expected {{\"<path>\": \"<paragraph>\"}} with one paragraph")
        return None
    return paragraphs[0].strip()

def _read_json(path: Path, problems: list[str]):
    """JSON from a file, or None with a ``file:line`` problem (a byte-order mark is accepted)."""
    raw = path.read_bytes()
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        start = exc.start + (3 if raw.startswith(b"\xef\xbb\xbf") else 0)
        line = raw[:start].count(b"\n") + 1
        problems.append(f"{path}:{line}: not UTF-8 (byte 0x{raw[start]:02x})")
    except json.JSONDecodeError as exc:
        problems.append(f"{path}:{exc.lineno}: malformed JSON ({exc.msg} at column {exc.colno})")
    return None


def _read_satellite_captions(path: Path, plan: _Plan, zoom: int, problems: list[str], notes: list[str]) -> None:
    """A caption array (grouped per image or flat) → one caption per tile: its sentences in file order."""
    data = _read_json(path, problems)
    if data is None:
        return
    if not isinstance(data, list):
        problems.append(f"{path}:1: expected a JSON array of {{\"caption\", \"image\"}} items, got {type(data).__name__}")
        return
    lines = object_lines(path.read_text(encoding="utf-8-sig"))
    items: list[tuple[int, object]] = []
    grouped = 0
    for entry in data:
        if isinstance(entry, list):
            grouped += 1
            items += [(len(items), item) for item in entry]
        else:
            items.append((len(items), entry))
    sentences: dict[str, list[str]] = {}
    unknown: dict[str, int] = {}
    dicts = 0
    for _, item in items:
        # each dict item starts at the next "{"; a non-dict item is reported at the last item's line
        line = lines[min(dicts, len(lines) - 1)] if lines else 1
        dicts += isinstance(item, dict)
        where = f"{path}:{line}"
        if not isinstance(item, dict) or not isinstance(item.get("caption"), str) or not isinstance(item.get("image"), str):
            problems.append(f"{where}: expected {{\"caption\": str, \"image\": str}}, got {json.dumps(item)[:80]}")
            continue
        match = TILE_NAME.match(Path(item["image"]).name)
        if not match:
            problems.append(f"{where}: image '{item['image']}' is not a tile name <City>/<zoom>_<x>_<y>_s.jpg")
            continue
        rid = region_id(int(match["zoom"]), int(match["x"]), int(match["y"]))
        if rid not in plan.tiles:
            unknown[rid] = unknown.get(rid, 0) + 1
            continue
        if item["caption"].strip():
            sentences.setdefault(rid, []).append(item["caption"].strip())
    shape = (f"grouped per image ({grouped} groups)" if grouped == len(data) else
             "one flat list" if not grouped else f"{grouped} of {len(data)} entries are groups")
    notes.append(f"{path}: a JSON array of {len(items)} caption sentences, {shape}; regrouped by 'image' into "
                 f"{len(sentences)} captions (each image's sentences joined in file order)")
    if unknown:
        notes.append(f"{path}: {sum(unknown.values())} sentences of {len(unknown)} tiles without a satellite image "
                     f"(at zoom {zoom}) skipped")
    for rid in sorted(sentences):
        plan.captions["SI"].append((rid, _join_sentences(sentences[rid])))


def _join_sentences(sentences: Iterable[str]) -> str:
    """Sentences split on ". " by the captioner's script, joined back into its paragraph."""
    out = []
    for sentence in sentences:
        out.append(sentence if sentence.endswith((".", "!", "?")) else sentence + ".")
    return " ".join(out)


def _read_indicator_csv(path: Path, plan: _Plan, columns: dict[str, str], zoom: int, problems: list[str],
                        notes: list[str], seen: dict[tuple[str, str], tuple[float, str]]) -> None:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[:exc.start].count(b"\n") + 1
        problems.append(f"{path}:{line}: not UTF-8 (byte 0x{path.read_bytes()[exc.start]:02x})")
        return
    except (OSError, csv.Error) as exc:
        problems.append(f"{path}: unreadable: {exc}")
        return
    if not rows:
        problems.append(f"{path}:1: empty file (expected a header line)")
        return
    header = [h.strip() for h in rows[0]]
    lower = [h.lower() for h in header]
    if "satellite_img_name" in lower:
        key = lower.index("satellite_img_name")
    elif "coordinate" in lower:
        key = lower.index("coordinate")
    elif "bd09 coordinate" in lower:
        key = lower.index("bd09 coordinate")
    else:
        problems.append(f"{path}:1: no 'Coordinate' or 'satellite_img_name' column (has: {', '.join(header)})")
        return
    wgs84 = lower.index("wgs84 coordinate") if "wgs84 coordinate" in lower else None
    lat_col = next((lower.index(c) for c in LAT_COLUMNS if c in lower), None)
    lon_col = next((lower.index(c) for c in LON_COLUMNS if c in lower), None)
    if (lat_col is None) != (lon_col is None):
        problems.append(f"{path}:1: a latitude column needs a longitude column and the other way round "
                        f"({', '.join(LAT_COLUMNS)} / {', '.join(LON_COLUMNS)})")
        lat_col = lon_col = None
    tasks: dict[int, str] = {}
    poi_col = None
    for j, name in enumerate(header):
        if lower[j] in KEY_COLUMNS or j in (lat_col, lon_col):
            continue
        if name in columns or lower[j] in columns:
            task = columns.get(name, columns.get(lower[j], ""))
            if task:
                tasks[j] = task
            continue
        if lower[j] == "poi":
            poi_col = j
        elif lower[j] in COLUMN_TASKS:
            tasks[j] = COLUMN_TASKS[lower[j]]
        else:
            problems.append(f"{path}:1: column '{name}' is not a known indicator (known: "
                            f"{', '.join(sorted(set(COLUMN_TASKS)))}, poi); map it with --column '{name}=TASK' or "
                            f"drop it with --column '{name}='")
    missing_tiles = []
    for line_no, row in enumerate(rows[1:], start=2):
        if not row or not any(c.strip() for c in row):
            continue
        where = f"{path}:{line_no}"
        if len(row) != len(header):
            problems.append(f"{where}: {len(row)} fields, header has {len(header)}")
            continue
        cell = row[key].strip()
        tile_match = TILE_NAME.match(Path(cell).name)
        if tile_match:
            if int(tile_match["zoom"]) != zoom:
                continue
            x, y = int(tile_match["x"]), int(tile_match["y"])
        else:
            pair = parse_coordinate(cell)
            if pair is None or not all(v.is_integer() for v in pair):
                problems.append(f"{where}: column '{header[key]}': {cell!r} is not a tile coordinate \"(x, y)\"")
                continue
            x, y = int(pair[0]), int(pair[1])
        rid = region_id(zoom, x, y)
        if rid not in plan.tiles:
            missing_tiles.append(f"{where} ({x}, {y})")
            continue
        if wgs84 is not None:
            latlon = parse_coordinate(row[wgs84])
            if latlon is None:
                problems.append(f"{where}: column '{header[wgs84]}': {row[wgs84]!r} is not \"(lat, lon)\"")
            else:
                plan.tiles[rid].lat, plan.tiles[rid].lon = latlon
        if lat_col is not None and lon_col is not None:
            try:
                lat, lon = float(row[lat_col]), float(row[lon_col])
            except ValueError:
                problems.append(f"{where}: columns '{header[lat_col]}', '{header[lon_col]}': "
                                f"{row[lat_col]!r}, {row[lon_col]!r} are not numbers")
            else:
                plan.tiles[rid].lat, plan.tiles[rid].lon = lat, lon
        for j, task in tasks.items():
            text = row[j].strip()
            try:
                value = float(text) if text else math.nan
            except ValueError:
                problems.append(f"{where}: column '{header[j]}': not a number: {text!r}")
                continue
            if math.isinf(value):
                problems.append(f"{where}: column '{header[j]}': infinite value")
                continue
            before = seen.get((rid, task))
            if before is not None and not (before[0] == value or (math.isnan(before[0]) and math.isnan(value))):
                problems.append(f"{where}: tile ({x}, {y}) has {task} {value:g} here but {before[0]:g} on {before[1]}")
                continue
            seen[(rid, task)] = (value, where)
            plan.indicators.setdefault(rid, {})[task] = value
        if poi_col is not None:
            counts = parse_poi_dict(row[poi_col])
            if counts is None:
                problems.append(f"{where}: column '{header[poi_col]}': not a dict of category counts "
                                f"{{'Category': n, ...}}: {row[poi_col][:60]!r}")
                continue
            if not plan.poi_categories:
                plan.poi_categories = list(counts)
            elif list(counts) != plan.poi_categories:
                problems.append(f"{where}: column '{header[poi_col]}': categories {sorted(counts)} differ from the "
                                f"first row's {sorted(plan.poi_categories)}")
                continue
            if any(v < 0 for v in counts.values()):
                problems.append(f"{where}: column '{header[poi_col]}': a negative count")
                continue
            plan.poi[rid] = counts
            plan.indicators.setdefault(rid, {})["POI"] = sum(counts.values())
    if missing_tiles:
        notes.append(f"{path}: {len(missing_tiles)} row(s) name tiles without a satellite image at zoom {zoom} and "
                     f"were skipped: {', '.join(missing_tiles[:5])}" + (" ..." if len(missing_tiles) > 5 else ""))


def _read_streetviews(files: list[Path], source_city: str, plan: _Plan, problems: list[str], notes: list[str]) -> None:
    """UrbanVLP's street views: images, the per-tile lists that place them, and their ``{path: paragraph}`` captions."""
    images = {p.name: p for p in files if p.parent.name == source_city and p.suffix.lower() in layout.IMAGE_SUFFIXES
              and STREETVIEW_NAME.match(p.stem) and "streetview" in str(p.parent.parent.name)}
    lists = [p for p in files if p.suffix == ".txt" and p.parent.name == "text" and p.parent.parent.name == source_city
             and "streetview_corresponding" in p.parts]
    texts = {p.stem: p for p in files if p.suffix == ".json" and p.parent.name == source_city
             and STREETVIEW_NAME.match(p.stem)}
    if images and not lists:
        notes.append(f"{len(images)} street views of {source_city} but no streetview_corresponding/{source_city}/text/"
                     "<tile>.txt lists to place them in tiles: street views skipped")
        return
    placed: dict[str, str] = {}
    for path in lists:
        match = TILE_NAME.match(path.stem + ".jpg")
        if not match:
            problems.append(f"{path}:1: file name is not a tile <zoom>_<x>_<y>_s.txt")
            continue
        rid = region_id(int(match["zoom"]), int(match["x"]), int(match["y"]))
        if rid not in plan.tiles:
            notes.append(f"{path}: a tile without a satellite image; its street views skipped")
            continue
        for line_no, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
            name = Path(line.strip()).name
            if not name or "download" in line:  # UrbanVLP's reader skips these lines too
                continue
            if name not in images:
                problems.append(f"{path}:{line_no}: street view '{name}' is not among the street-view images")
                continue
            if name in placed:
                problems.append(f"{path}:{line_no}: street view '{name}' is also listed for tile {placed[name]}")
                continue
            placed[name] = rid
            plan.streetviews.setdefault(rid, []).append(images[name])
    unplaced = len(set(images) - set(placed))
    if unplaced:
        notes.append(f"{unplaced} street view(s) of {source_city} are in no tile's list: skipped")
    for name, rid in sorted(placed.items()):
        paragraph = _streetview_paragraph(texts.get(Path(name).stem), problems)
        if paragraph is not None:
            plan.captions["SV"].append((f"{rid}/{Path(name).stem}", paragraph))
    if texts and not plan.captions["SV"] and not placed:
        notes.append(f"{len(texts)} street-view caption files but no placed street-view image: captions skipped")


# -- regions on a lat/lon grid ---------------------------------------------------------------------------


def _regrid(plan: _Plan, grid: LatLonGrid, problems: list[str]) -> None:
    """Re-key the tiles (and what was read per tile) by the grid cell holding each tile's WGS84 position."""
    unplaced = [t.tile_id for t in plan.tiles.values() if math.isnan(t.lat) or math.isnan(t.lon)]
    if unplaced:
        raise DataError(refuse_bd09_mercator(
            f"--region-grid latlon:{grid.label}: {len(unplaced)} of {len(plan.tiles)} tiles have no WGS84 position "
            f"({', '.join(unplaced[:3])}{' ...' if len(unplaced) > 3 else ''}). "))
    renamed: dict[str, str] = {}
    by_cell: dict[str, Tile] = {}
    for old, tile in plan.tiles.items():
        try:
            tile.cell = grid.cell(tile.lat, tile.lon)
        except UserError as exc:
            problems.append(f"tile {old}: {exc}")
            continue
        other = by_cell.get(tile.id)
        if other is not None:
            problems.append(f"tiles {other.tile_id} and {old} ({other.image.name}, {tile.image.name}) both lie in grid "
                            f"cell {tile.id} (a region has one satellite image); choose a smaller cell than "
                            f"latlon:{grid.label}, or --region-grid tile")
            continue
        by_cell[tile.id] = tile
        renamed[old] = tile.id
    plan.tiles = by_cell
    plan.indicators = {renamed[r]: v for r, v in plan.indicators.items() if r in renamed}
    plan.poi = {renamed[r]: v for r, v in plan.poi.items() if r in renamed}
    plan.captions["SI"] = [(renamed[r], c) for r, c in plan.captions["SI"] if r in renamed]


def _place_streetviews(files: list[Path], source_city: str, plan: _Plan, grid: LatLonGrid, datum: str | None,
                       problems: list[str], notes: list[str]) -> None:
    """Street views into the grid cell of the point in their file name (``<id>_<lon>,<lat>_<date>_<heading>``)."""
    images = sorted((p for p in files if p.parent.name == source_city and p.suffix.lower() in layout.IMAGE_SUFFIXES
                     and STREETVIEW_NAME.match(p.stem) and "streetview" in str(p.parent.parent.name)),
                    key=lambda p: p.name)
    if not images:
        return
    if datum is None:
        problems.append(f"{images[0].parent}: {len(images)} street views are placed by the lon,lat in their file "
                        f"names, whose datum the release does not state; give --streetview-datum "
                        f"({' | '.join(DATUMS)}; Baidu street views are usually bd09)")
        return
    texts = {p.stem: p for p in files if p.suffix == ".json" and p.parent.name == source_city
             and STREETVIEW_NAME.match(p.stem)}
    outside = 0
    for path in images:
        match = STREETVIEW_NAME.match(path.stem)
        lon, lat = to_wgs84(float(match["lon"]), float(match["lat"]), datum)
        try:
            rid = grid.cell(lat, lon).id
        except UserError as exc:
            problems.append(f"{path}: {exc}")
            continue
        if rid not in plan.tiles:
            outside += 1
            continue
        plan.streetviews.setdefault(rid, []).append(path)
        paragraph = _streetview_paragraph(texts.get(path.stem), problems)
        if paragraph is not None:
            plan.captions["SV"].append((f"{rid}/{path.stem}", paragraph))
    plan.captions["SV"].sort()
    notes.append(f"{len(images) - outside} street view(s) of {source_city} placed by their {datum} position into "
                 f"{len(plan.streetviews)} grid cells")
    if outside:
        notes.append(f"{outside} street view(s) lie in grid cells without a satellite tile: skipped")


# -- the import -----------------------------------------------------------------------------------------


def _write_plan(plan: _Plan, out: Path, city: str, fmt: str, source_city: str, src: Path,
                grid: LatLonGrid | None = None) -> list[str]:
    """Write the native layout into ``out``; returns the tasks written."""
    out.mkdir(parents=True)
    tasks = sorted({t for values in plan.indicators.values() for t in values})
    meta = {"city": city, "source": "real", "tasks": tasks,
            "imported": {"from": fmt, "source_city": source_city, "source": str(src.resolve())}}
    if grid is not None:
        meta["imported"]["region_grid"] = f"latlon:{grid.label}"
    (out / layout.CITY_META).write_text(json.dumps(meta, indent=1) + "\n")
    gridded = grid is not None
    if gridded:
        ids = sorted(plan.tiles, key=lambda r: (plan.tiles[r].cell.row, plan.tiles[r].cell.col))
    else:
        ids = sorted(plan.tiles, key=lambda r: (plan.tiles[r].y, plan.tiles[r].x))

    def num(v: float) -> str:
        return "" if math.isnan(v) else repr(float(v))

    with open(out / layout.REGIONS, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(layout.REGION_COLUMNS)
        for rid in ids:
            t = plan.tiles[rid]
            if t.cell is not None:
                lat, lon = t.cell.center
                writer.writerow([rid, t.cell.row, t.cell.col, num(lat), num(lon)])
            else:
                writer.writerow([rid, t.y, t.x, num(t.lat), num(t.lon)])
    with open(out / REGION_MAP, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        cell_columns = ["grid_degrees", "south", "west", "north", "east"] if gridded else []
        writer.writerow(["region_id", *cell_columns, "zoom", "tile_x", "tile_y", "corner_lat", "corner_lon",
                         "source_image"])
        for rid in ids:
            t = plan.tiles[rid]
            cell = ([grid.label, *(format(v, "f") for v in (t.cell.south, t.cell.west, t.cell.north, t.cell.east))]
                    if grid is not None and t.cell is not None else [])
            writer.writerow([rid, *cell, t.zoom, t.x, t.y, num(t.lat), num(t.lon),
                             t.image.relative_to(src).as_posix()])
    (out / layout.SATELLITE).mkdir()
    for rid in ids:
        shutil.copyfile(plan.tiles[rid].image, out / layout.SATELLITE / f"{rid}{plan.tiles[rid].image.suffix.lower()}")
    for rid, images in plan.streetviews.items():
        folder = out / layout.STREETVIEW / rid
        folder.mkdir(parents=True)
        for image in images:
            shutil.copyfile(image, folder / f"{image.stem}{image.suffix.lower()}")
    if tasks:
        with open(out / layout.INDICATORS, "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["region_id", *tasks])
            for rid in ids:
                values = plan.indicators.get(rid, {})
                writer.writerow([rid, *(num(values.get(t, math.nan)) for t in tasks)])
    if plan.poi:
        (out / layout.AUX).mkdir()
        with open(out / layout.POI_COUNTS, "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["region_id", *(poi_column(c) for c in plan.poi_categories)])
            for rid in ids:
                if rid in plan.poi:
                    writer.writerow([rid, *(num(plan.poi[rid][c]) for c in plan.poi_categories)])
    captioner = {"SI": f"{fmt}-satellite", "SV": f"{fmt}-streetview"}
    for imagery, items in plan.captions.items():
        if items:
            path = out / IMPORTED_CAPTIONS[imagery]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps({"image_id": i, "captioner": captioner[imagery], "caption": c},
                                               ensure_ascii=False) + "\n" for i, c in items), encoding="utf-8")
    return tasks


def import_city(fmt: str, src: str | Path, dest: str | Path, *, city: str | None = None,
                source_city: str | None = None, zoom: int = 16, columns: dict[str, str] | None = None,
                region_grid: str = "tile", streetview_datum: str | None = None) -> ImportReport:
    """Convert a peer's release at ``src`` into the native layout at ``dest`` (which must not exist).

    ``region_grid`` is ``"tile"`` (regions are the satellite tiles) or ``"latlon:<deg>"`` (grid cells; see
    the module docstring); ``streetview_datum`` is the datum of the street views' file-name points, needed
    only on a lat/lon grid. Returns the report; ``dest`` is written only when the report has no problem.
    """
    from urbanln_bench.data.manifest import write_manifest
    from urbanln_bench.data.validate import validate_city_dir

    src, dest = Path(src), Path(dest)
    if fmt not in FORMATS:
        from urbanln_bench.registry import suggest

        raise DataError(f"--from {fmt}: unknown format{suggest(fmt, list(FORMATS))}; formats: {', '.join(FORMATS)}")
    if fmt == "musecl":
        raise DataError("--from musecl: MuseCL's New York release is a Google Drive archive whose file layout its code "
                        "does not state (every data path in its scripts is an empty string, PEERS.md §3), so there is "
                        "no format to check an import against. Arrange the regions, images, POI counts and mobility "
                        "flows in the native layout by hand (README, 'Data layout') and run `urbanln-bench data "
                        "validate`")
    grid = parse_region_grid(region_grid)
    if streetview_datum is not None and streetview_datum not in DATUMS:
        raise DataError(f"--streetview-datum {streetview_datum}: choose one of {', '.join(DATUMS)} (BD-09 lat/lon, "
                        "not Baidu Mercator)")
    if not src.is_dir():
        raise DataError(f"{src}: not a directory (give the peer's data folder)")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DataError(f"{dest}: already exists and is not empty; import into a new folder")
    files = _walk(src)
    source_city = _source_city(files, source_city, src)
    report = ImportReport(fmt, src, dest, source_city=source_city)
    report.city = city or CITY_NAMES.get(source_city, "")
    if not report.city:
        raise DataError(f"{src}: city '{source_city}' has no harness name; give one with --city NAME (the city "
                        "file's name, e.g. BJ)")
    plan = _Plan()
    problems, notes = report.problems, report.notes
    _read_tiles(files, source_city, zoom, plan, notes)
    if not plan.tiles:
        raise DataError(f"{src}: no satellite tiles of {source_city} at zoom {zoom} (pass --zoom)")
    names = {f"{source_city}_captions.json", f"{source_city}.json"}
    caption_files = [p for p in files if p.name in names and p.parent.name in ("captions", "pairs", "satellite_texts")]
    caption_file = _pick(caption_files, "satellite caption file", src, notes)
    if caption_file is not None:
        _read_satellite_captions(caption_file, plan, zoom, problems, notes)
    csv_names = {f"{source_city}_train.csv", f"{source_city}_test.csv", f"{source_city}.csv"}
    csvs = [p for p in files if p.name in csv_names]
    by_name: dict[str, list[Path]] = {}
    for path in csvs:
        by_name.setdefault(path.name, []).append(path)
    seen: dict[tuple[str, str], tuple[float, str]] = {}
    for name in sorted(by_name):
        chosen = _pick(by_name[name], f"indicator file {name}", src, notes)
        if chosen is not None:
            _read_indicator_csv(chosen, plan, columns or {}, zoom, problems, notes, seen)
    if not csvs:
        notes.append(f"no indicator CSV ({', '.join(sorted(csv_names))}): the city has no labels")
    if grid is not None:
        _regrid(plan, grid, problems)
        notes.append(f"{len(plan.tiles)} tiles placed by their WGS84 position into grid cells of {grid.label}°")
    if fmt == "urbanvlp":
        if grid is None:
            _read_streetviews(files, source_city, plan, problems, notes)
        else:
            _place_streetviews(files, source_city, plan, grid, streetview_datum, problems, notes)
    report.regions = len(plan.tiles)
    report.streetview_images = sum(len(v) for v in plan.streetviews.values())
    report.captions = {k: len(v) for k, v in plan.captions.items() if v}
    for imagery, n in report.captions.items():
        total = len(plan.tiles) if imagery == "SI" else report.streetview_images
        if n < total:
            notes.append(f"captions for {n} of {total} {imagery} images: a caption-consuming method needs one per "
                         "image (run it with --limit, or caption the rest)")
    if problems:
        return report
    tmp = dest.parent / f".{dest.name}.importing"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tasks = _write_plan(plan, tmp, report.city, fmt, source_city, src, grid)
        checked = validate_city_dir(tmp)
        problems += [p.replace(str(tmp), str(dest)) for p in checked.problems]
        report.labelled = {t: checked.labelled.get(t, 0) for t in tasks}
        if problems:
            return report
        write_manifest(tmp)
        if dest.exists():
            dest.rmdir()
        tmp.rename(dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return report
