"""Region ids on a lat/lon grid, and the Chinese map datums' conversions to WGS84 (issue 16 §1).

DESIGN.md: "Region ids come from tile coordinates (x, y, zoom) or a lat/lon grid, with a table mapping
back". :mod:`urbanln_bench.data.importers` uses tiles by default (``z<zoom>_<x>_<y>``); with
``--region-grid latlon:<deg>`` it bins WGS84 points into the cells of a global grid of ``deg``-degree
squares and names each cell ``g<deg>_<row>_<col>``:

- row = ⌊(lat + 90) / deg⌋ from the south pole, col = ⌊(lon + 180) / deg⌋ from the antimeridian, so a
  cell's id does not depend on which points a release happens to hold, and two imports of one city
  with the same ``deg`` share ids;
- a cell is half-open, [south, north) × [west, east): a point on an edge belongs to the cell north
  (east) of it;
- the arithmetic is decimal, on the coordinates as written (``39.76`` is 39.76, not the nearest binary
  fraction), so a point on a cell edge never lands in the neighbour because of rounding.

Datums. China's map providers publish coordinates in GCJ-02 (the state's obfuscated datum) or Baidu's
BD-09 (GCJ-02 shifted and rotated once more), not WGS84. The conversions below are the public formulas
(as in wandergis/coordtransform and hutool's ``CoordinateUtil``) and are pinned in the tests to the
values those libraries publish for (116.404, 39.915). GCJ-02 → WGS84 is their one-step inverse
(``wgs = 2·gcj − forward(gcj)``): mapped forward again it misses by 2.4e-6° (under 0.3 m) at that point,
far inside any grid cell.
Outside China's bounding box GCJ-02 equals WGS84, as in those libraries.

Not converted, on purpose: Baidu's *Mercator* coordinates (BD09MC; the satellite tile indices
``x·256·2^(18−z)`` of UrbanCLIP and UrbanVLP) need Baidu's piecewise constant tables to become BD-09
lat/lon, and no published reference point was at hand to check them against, so
:func:`refuse_bd09_mercator` says so instead of guessing.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from urbanln_bench.errors import UserError

__all__ = ["LatLonGrid", "GridCell", "parse_region_grid", "DATUMS", "to_wgs84", "bd09_to_gcj02",
           "gcj02_to_wgs84", "wgs84_to_gcj02", "refuse_bd09_mercator"]

DATUMS = ("wgs84", "gcj02", "bd09")
_SPEC = re.compile(r"^latlon:(?P<deg>\d+(?:\.\d+)?)$")
MAX_DEGREES = Decimal(10)


@dataclass(frozen=True)
class GridCell:
    """One cell of a :class:`LatLonGrid`: its id, row, column and bounds (degrees, WGS84)."""

    id: str
    row: int
    col: int
    south: Decimal
    west: Decimal
    north: Decimal
    east: Decimal

    @property
    def center(self) -> tuple[float, float]:
        """(lat, lon) of the cell's centre."""
        return float((self.south + self.north) / 2), float((self.west + self.east) / 2)


@dataclass(frozen=True)
class LatLonGrid:
    """A global grid of ``degrees``-sided cells (see the module docstring for the numbering)."""

    degrees: Decimal

    def __post_init__(self) -> None:
        if not Decimal(0) < self.degrees <= MAX_DEGREES:
            raise UserError(f"--region-grid latlon:{self.degrees}: the cell size must be in (0, {MAX_DEGREES}] degrees")

    @property
    def label(self) -> str:
        """The cell size as written in ids: ``0.01``, ``0.5``, ``1`` (no exponent, no trailing zeros)."""
        text = format(self.degrees.normalize(), "f")
        return text

    def cell(self, lat: float | str | Decimal, lon: float | str | Decimal) -> GridCell:
        """The cell holding the WGS84 point (lat, lon); a point outside [-90, 90) × [-180, 180) is an error."""
        lat_d, lon_d = _decimal(lat), _decimal(lon)
        if not (Decimal(-90) <= lat_d < Decimal(90) and Decimal(-180) <= lon_d < Decimal(180)):
            raise UserError(f"({lat}, {lon}) is not a WGS84 (lat, lon) point in [-90, 90) × [-180, 180); are "
                            "latitude and longitude swapped?")
        row = int((lat_d + 90) // self.degrees)
        col = int((lon_d + 180) // self.degrees)
        return self.cell_at(row, col)

    def cell_at(self, row: int, col: int) -> GridCell:
        south = Decimal(-90) + row * self.degrees
        west = Decimal(-180) + col * self.degrees
        return GridCell(f"g{self.label}_{row}_{col}", row, col, south, west,
                        min(south + self.degrees, Decimal(90)), min(west + self.degrees, Decimal(180)))


def parse_region_grid(spec: str) -> LatLonGrid | None:
    """``"tile"`` → None (regions are the satellite tiles); ``"latlon:<deg>"`` → the grid; anything else is an error."""
    if spec == "tile":
        return None
    match = _SPEC.match(spec.strip())
    if not match:
        raise UserError(f"--region-grid {spec!r}: expected 'tile' or 'latlon:<degrees>' (e.g. latlon:0.01, about 1 km)")
    return LatLonGrid(Decimal(match["deg"]))


def _decimal(value: float | str | Decimal) -> Decimal:
    """A coordinate as the decimal it was written as (a float by its shortest repr, so 39.76 stays 39.76)."""
    if isinstance(value, Decimal):
        return value
    try:
        out = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
    except InvalidOperation:
        raise UserError(f"{value!r} is not a number") from None
    if not out.is_finite():
        raise UserError(f"{value!r} is not a finite coordinate")
    return out


# -- datums -------------------------------------------------------------------------------------------

_A = 6378245.0  # Krasovsky 1940 semi-major axis, as GCJ-02 uses
_EE = 0.00669342162296594323  # its first eccentricity squared
_X_PI = math.pi * 3000.0 / 180.0


def _outside_china(lon: float, lat: float) -> bool:
    """The bounding box outside which GCJ-02 is WGS84 (the public libraries' test)."""
    return not (72.004 <= lon <= 137.8347 and 0.8293 <= lat <= 55.8271)


def _shift_lat(x: float, y: float) -> float:
    ret = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * math.sqrt(abs(x))
    ret += (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2.0 / 3.0
    ret += (20.0 * math.sin(y * math.pi) + 40.0 * math.sin(y / 3.0 * math.pi)) * 2.0 / 3.0
    ret += (160.0 * math.sin(y / 12.0 * math.pi) + 320 * math.sin(y * math.pi / 30.0)) * 2.0 / 3.0
    return ret


def _shift_lon(x: float, y: float) -> float:
    ret = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * math.sqrt(abs(x))
    ret += (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2.0 / 3.0
    ret += (20.0 * math.sin(x * math.pi) + 40.0 * math.sin(x / 3.0 * math.pi)) * 2.0 / 3.0
    ret += (150.0 * math.sin(x / 12.0 * math.pi) + 300.0 * math.sin(x / 30.0 * math.pi)) * 2.0 / 3.0
    return ret


def _gcj02_offset(lon: float, lat: float) -> tuple[float, float]:
    """GCJ-02 minus WGS84 at a point, in degrees (the published forward formula)."""
    dlat = _shift_lat(lon - 105.0, lat - 35.0)
    dlon = _shift_lon(lon - 105.0, lat - 35.0)
    radlat = lat / 180.0 * math.pi
    magic = 1 - _EE * math.sin(radlat) ** 2
    sqrtmagic = math.sqrt(magic)
    dlat = (dlat * 180.0) / ((_A * (1 - _EE)) / (magic * sqrtmagic) * math.pi)
    dlon = (dlon * 180.0) / (_A / sqrtmagic * math.cos(radlat) * math.pi)
    return dlon, dlat


def wgs84_to_gcj02(lon: float, lat: float) -> tuple[float, float]:
    """WGS84 → GCJ-02 (lon, lat); unchanged outside China."""
    if _outside_china(lon, lat):
        return lon, lat
    dlon, dlat = _gcj02_offset(lon, lat)
    return lon + dlon, lat + dlat


def gcj02_to_wgs84(lon: float, lat: float) -> tuple[float, float]:
    """GCJ-02 → WGS84 (lon, lat), the published one-step inverse; unchanged outside China."""
    if _outside_china(lon, lat):
        return lon, lat
    dlon, dlat = _gcj02_offset(lon, lat)
    return lon * 2 - (lon + dlon), lat * 2 - (lat + dlat)


def bd09_to_gcj02(lon: float, lat: float) -> tuple[float, float]:
    """BD-09 lat/lon → GCJ-02 (lon, lat): Baidu's shift and rotation undone (the published formula)."""
    x, y = lon - 0.0065, lat - 0.006
    z = math.sqrt(x * x + y * y) - 0.00002 * math.sin(y * _X_PI)
    theta = math.atan2(y, x) - 0.000003 * math.cos(x * _X_PI)
    return z * math.cos(theta), z * math.sin(theta)


def to_wgs84(lon: float, lat: float, datum: str) -> tuple[float, float]:
    """A (lon, lat) point in ``datum`` (wgs84, gcj02, bd09: BD-09 *lat/lon*, not Baidu Mercator) → WGS84 (lon, lat)."""
    if datum == "wgs84":
        return lon, lat
    if datum == "gcj02":
        return gcj02_to_wgs84(lon, lat)
    if datum == "bd09":
        return gcj02_to_wgs84(*bd09_to_gcj02(lon, lat))
    if datum in ("bd09mc", "bd09-mercator"):
        raise UserError(refuse_bd09_mercator())
    raise UserError(f"unknown datum {datum!r}; choose one of {', '.join(DATUMS)}")


def refuse_bd09_mercator(where: str = "") -> str:
    """Why Baidu Mercator coordinates (and so Baidu tile indices) are not placed on a lat/lon grid."""
    return (f"{where}Baidu Mercator coordinates (BD09MC, e.g. the satellite tile indices x·256·2^(18−z)) are not "
            "converted: turning them into BD-09 lat/lon needs Baidu's piecewise constant tables, which the harness "
            "does not ship because no published reference point was available to check them. Give each tile's WGS84 "
            "position (the UrbanCLIP toolkit's integrated CSV has a 'WGS84 coordinate' column, from Baidu's geoconv "
            "API), or import with --region-grid tile")
