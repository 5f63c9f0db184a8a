"""Region ids on a lat/lon grid (``data import --region-grid latlon:<deg>``) and the datum conversions behind it."""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import cli
from test_data_import import TILES, _write_csv, urbanclip_release, urbanvlp_release

from urbanln_bench.data.grid import (
    LatLonGrid,
    bd09_to_gcj02,
    gcj02_to_wgs84,
    parse_region_grid,
    to_wgs84,
    wgs84_to_gcj02,
)
from urbanln_bench.data.importers import import_city
from urbanln_bench.errors import DataError, UserError

# -- datums ------------------------------------------------------------------------------------------------

# The values wandergis/coordtransform (JavaScript) and hutool's CoordinateUtil (Java) publish in their tests
# and READMEs for the point (116.404, 39.915), each conversion applied to that same input.
PUBLISHED = {
    bd09_to_gcj02: (116.39762729119315, 39.90865673957631),
    wgs84_to_gcj02: (116.41024449916938, 39.91640428150164),
    gcj02_to_wgs84: (116.39775550083061, 39.91359571849836),
}


@pytest.mark.parametrize("convert", list(PUBLISHED), ids=lambda f: f.__name__)
def test_datum_conversions_give_the_published_reference_values(convert):
    assert convert(116.404, 39.915) == pytest.approx(PUBLISHED[convert], abs=1e-12)


def test_bd09_to_wgs84_chains_the_two_steps_and_inverts_the_forward_shift():
    lon, lat = to_wgs84(116.404, 39.915, "bd09")
    assert (lon, lat) == pytest.approx(gcj02_to_wgs84(*PUBLISHED[bd09_to_gcj02]), abs=1e-12)
    back = wgs84_to_gcj02(lon, lat)
    assert back == pytest.approx(PUBLISHED[bd09_to_gcj02], abs=5e-6)  # the one-step inverse: 2.4e-6°, under 0.3 m
    assert to_wgs84(2.35, 48.85, "gcj02") == (2.35, 48.85)  # outside China GCJ-02 is WGS84
    assert to_wgs84(116.404, 39.915, "wgs84") == (116.404, 39.915)


def test_baidu_mercator_is_refused_with_the_reason():
    with pytest.raises(UserError, match="piecewise constant tables.*WGS84 coordinate"):
        to_wgs84(12958174.0, 4825923.0, "bd09mc")
    with pytest.raises(UserError, match="unknown datum 'osgb'"):
        to_wgs84(0.0, 0.0, "osgb")


# -- the grid ----------------------------------------------------------------------------------------------


def test_cells_are_numbered_from_the_south_west_and_half_open():
    grid = parse_region_grid("latlon:0.01")
    cell = grid.cell(39.76, 116.461378)  # exactly on a south edge: the cell north of it
    assert (cell.id, cell.row, cell.col) == ("g0.01_12976_29646", 12976, 29646)
    assert (cell.south, cell.west, cell.north, cell.east) == tuple(Decimal(v) for v in ("39.76", "116.46", "39.77",
                                                                                         "116.47"))
    assert grid.cell(39.759999, 116.46).row == 12975
    assert grid.cell(-33.8688, -151.2093).id == "g0.01_5613_2879"  # south and west of 0
    assert cell.center == pytest.approx((39.765, 116.465))
    assert parse_region_grid("latlon:0.50").cell(0.0, 0.0).id == "g0.5_180_360"
    assert parse_region_grid("tile") is None


@pytest.mark.parametrize("spec", ["latlon", "latlon:-1", "latlon:0", "latlon:20", "grid:0.01", "latlon:1e-2"])
def test_bad_grid_specs_are_refused(spec: str):
    with pytest.raises(UserError, match="--region-grid"):
        parse_region_grid(spec)


def test_a_point_off_the_globe_suggests_swapped_coordinates():
    with pytest.raises(UserError, match="latitude and longitude swapped"):
        LatLonGrid(Decimal("0.01")).cell(116.4, 39.9)


# -- the import ----------------------------------------------------------------------------------------------


def _positions(root: Path, places: dict[int, tuple[float, float]]) -> None:
    """A user's CSV giving each tile's WGS84 position in lat/lon columns (tile index → (lat, lon))."""
    rows = [[f"({x},{y})", *places[i]] for i, (x, y) in enumerate(TILES) if i in places]
    _write_csv(root / "positions" / "Beijing.csv", ["Coordinate", "lat", "lon"], rows)


def _spread(first: dict[int, tuple[float, float]]) -> dict[int, tuple[float, float]]:
    """Every tile in a cell of its own (0.01°), the given ones where they are said to be."""
    return {i: first.get(i, (39.905 + 0.01 * (i // 4), 116.305 + 0.01 * (i % 4))) for i in range(len(TILES))}


def test_urbanvlp_street_views_join_the_cell_of_their_own_position(tmp_path: Path):
    src = urbanvlp_release(tmp_path / "src")  # street views at lon 116.250 + k/1000, lat 40.040 + k/1000, k < 12
    _positions(src, _spread({0: (40.045, 116.255), 1: (40.055, 116.265)}))
    dest = tmp_path / "BJ"
    result = cli("data", "import", "--from", "urbanvlp", "--region-grid", "latlon:0.01", "--streetview-datum", "wgs84",
                 "--json", str(src), str(dest))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert (report["regions"], report["streetview_images"], report["captions"]) == (12, 12, {"SI": 12, "SV": 12})
    assert report["labelled"]["Pop"] == 12
    from urbanln_bench.data.loader import CityData

    city = CityData.open(dest)
    assert len(city.streetview_ids("g0.01_13004_29625")) == 10 and len(city.streetview_ids("g0.01_13005_29626")) == 2
    mapping = {r["region_id"]: r for r in csv.DictReader(open(dest / "region_map.csv"))}
    assert mapping["g0.01_13004_29625"] == {
        "region_id": "g0.01_13004_29625", "grid_degrees": "0.01", "south": "40.04", "west": "116.25", "north": "40.05",
        "east": "116.26", "zoom": "16", "tile_x": "12614", "tile_y": "4690", "corner_lat": "40.045",
        "corner_lon": "116.255", "source_image": "urbansat/satellite_images/Beijing/16_12614_4690_s.jpg"}
    regions = {r["region_id"]: r for r in csv.DictReader(open(dest / "regions.csv"))}
    assert regions["g0.01_13004_29625"] == {"region_id": "g0.01_13004_29625", "row": "13004", "col": "29625",
                                            "lat": "40.045", "lon": "116.255"}
    indicators = {r["region_id"]: r for r in csv.DictReader(open(dest / "indicators.csv"))}
    assert float(indicators["g0.01_13005_29626"]["Night"]) == 11.5  # tile 1's label followed it into its cell
    assert json.loads((dest / "city.json").read_text())["imported"]["region_grid"] == "latlon:0.01"


def test_bd09_street_views_are_converted_before_they_are_binned(tmp_path: Path):
    src = urbanvlp_release(tmp_path / "src")
    # BD-09 sits about +0.0126° lon, +0.0074° lat from WGS84 in Beijing: the street views' true cells
    lon, lat = to_wgs84(116.250, 40.040, "bd09")
    grid = LatLonGrid(Decimal("0.01"))
    true_cell = grid.cell(lat, lon)
    assert true_cell.id != grid.cell(40.040, 116.250).id
    _positions(src, _spread({0: true_cell.center}))
    report = import_city("urbanvlp", src, tmp_path / "BJ", region_grid="latlon:0.01", streetview_datum="bd09")
    assert report.ok, report.problems
    points = [(float(f"{116.25 + k / 1000:.6f}"), float(f"{40.04 + k / 1000:.6f}")) for k in range(12)]  # file names
    cells = [grid.cell(*to_wgs84(lon, lat, "bd09")[::-1]).id for lon, lat in points]
    assert report.streetview_images == cells.count(true_cell.id) > 0


def test_street_views_need_a_stated_datum(tmp_path: Path):
    src = urbanvlp_release(tmp_path / "src")
    _positions(src, _spread({}))
    report = import_city("urbanvlp", src, tmp_path / "BJ", region_grid="latlon:0.01")
    assert len(report.problems) == 1 and "give --streetview-datum (wgs84 | gcj02 | bd09" in report.problems[0]
    assert not (tmp_path / "BJ").exists()
    with pytest.raises(DataError, match="--streetview-datum bd09mc: choose one of wgs84, gcj02, bd09"):
        import_city("urbanvlp", src, tmp_path / "BJ", region_grid="latlon:0.01", streetview_datum="bd09mc")


def test_tiles_without_a_wgs84_position_are_refused_not_guessed(tmp_path: Path):
    src = urbanclip_release(tmp_path / "src")  # Baidu tile indices only
    with pytest.raises(DataError, match=r"12 of 12 tiles have no WGS84 position \(z16_12614_4690, .*Baidu Mercator"):
        import_city("urbanclip", src, tmp_path / "BJ", region_grid="latlon:0.01")


def test_two_tiles_in_one_cell_are_a_problem_naming_both(tmp_path: Path):
    src = urbanclip_release(tmp_path / "src")
    # the toolkit's integrated CSV: its WGS84 coordinate column is "(lat, lon)"
    rows = [[f"16_{x}_{y}_s.jpg", f"({x * 1000}, {y * 1000})", f"({39.9 + i / 100:.3f}, {116.3 + (i % 3) / 1000})"]
            for i, (x, y) in enumerate(TILES)]
    _write_csv(src / "integrate" / "Beijing.csv", ["satellite_img_name", "BD09 coordinate", "WGS84 coordinate"], rows)
    coarse = import_city("urbanclip", src, tmp_path / "coarse", region_grid="latlon:0.1")
    assert len(coarse.problems) == 10 and "both lie in grid cell g0.1_1299_2963" in coarse.problems[0]
    assert "tiles z16_12614_4690 and z16_12614_4691" in coarse.problems[0] and "choose a smaller cell" in coarse.problems[0]
    fine = import_city("urbanclip", src, tmp_path / "fine", region_grid="latlon:0.005")
    assert fine.ok, fine.problems
    assert fine.regions == 12 and fine.captions == {"SI": 10}
