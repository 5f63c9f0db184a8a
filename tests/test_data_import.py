"""``data import``: the peers' released layouts, built here as tiny fixtures in exactly their formats (PEERS.md §1, §2, §11)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import cli

from urbanln_bench.data.importers import import_city, parse_coordinate, parse_poi_dict, poi_column
from urbanln_bench.errors import DataError

TILES = [(12614 + i % 4, 4690 + i // 4) for i in range(12)]  # zoom-16 Baidu tiles, a 4 × 3 block of Beijing
POI_CATEGORIES = ["Dining and Cuisine", "Leisure and Entertainment", "Sports and Fitness", " Business and Residential",
                  "Healthcare", "Financial Institutions", "Tourist Attractions", "Lifestyle Services",
                  "Shopping and Consumption", "Automobile Related", "Hotel Accommodation", "Transport Facilities",
                  "Science, Education and Culture", "Companies and Enterprises"]  # as released: note the leading space


def _jpg(path: Path, seed: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")


def _sentences(x: int, y: int) -> list[str]:
    return [f"The image depicts a large parking lot next to a highway near tile {x}",
            "There are several cars parked in the lot, with some closer to the foreground",
            f"The overall scene gives off a sense of a bustling community {y}."]


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)  # the peers' pandas to_csv: quotes "(x,y)" and the poi dict, \n lines
        writer.writerow(header)
        writer.writerows(rows)


def urbanclip_release(root: Path, *, grouped: bool = False) -> Path:
    """UrbanCLIP's data/ folder with the toolkit's caption pairs: tiles, one caption array, train/test CSVs."""
    for i, (x, y) in enumerate(TILES):
        _jpg(root / "images" / "Beijing" / f"16_{x}_{y}_s.jpg", i)
    _jpg(root / "images" / "Beijing" / "19_100918_37527_s.jpg", 99)  # another zoom, as in the toolkit's tiles/
    items = [[{"caption": s, "image": f"Beijing/16_{x}_{y}_s.jpg"} for s in _sentences(x, y)] for x, y in TILES[:10]]
    data = items if grouped else [item for group in items for item in group]  # the toolkit's pairs: one flat list
    (root / "captions").mkdir(parents=True)
    (root / "captions" / "Beijing_captions.json").write_text(json.dumps(data, indent=2))
    rows = [[f"({x},{y})" if i % 2 else f"({x}, {y})", 6.4 + i / 100, 7.5 + i / 50, 8.9 + i / 30]
            for i, (x, y) in enumerate(TILES)]
    header = ["Coordinate", "carbon", "population", "gdp"]
    _write_csv(root / "downstream_task" / "Beijing_train.csv", header, rows[:9])
    _write_csv(root / "downstream_task" / "Beijing_test.csv", header, rows[9:] + [rows[0]])  # a repeated row
    return root


def _streetview_name(k: int, x: int) -> str:
    return f"{45207 + k}_{116.25 + k / 1000:.6f},{40.04 + k / 1000:.6f}_202003_{(37.5 * k) % 360:.2f}"


def urbanvlp_release(root: Path) -> Path:
    """UrbanVLP's data/ folder: urbansat, urbansv, streetview_corresponding and downstream, as released."""
    sat = root / "urbansat"
    for i, (x, y) in enumerate(TILES):
        _jpg(sat / "satellite_images" / "Beijing" / f"16_{x}_{y}_s.jpg", i)
    groups = [[{"caption": s, "image": f"Beijing/16_{x}_{y}_s.jpg"} for s in _sentences(x, y)] for x, y in TILES]
    (sat / "satellite_texts").mkdir(parents=True)
    (sat / "satellite_texts" / "Beijing.json").write_text(json.dumps(groups, indent=4))
    sv = root / "urbansv"
    for i, (x, y) in enumerate(TILES[:6]):
        names = [_streetview_name(2 * i + j, x) for j in range(2)]
        listing = root / "streetview_corresponding" / "Beijing" / "text" / f"16_{x}_{y}_s.txt"
        listing.parent.mkdir(parents=True, exist_ok=True)
        listing.write_text("".join(f"{n}.jpg\n" for n in names) + ("download failed\n" if i == 0 else ""))
        for j, name in enumerate(names):
            _jpg(sv / "streetview_images" / "Beijing" / f"{name}.jpg", 100 + 2 * i + j)
            text = sv / "streetview_texts" / "Beijing" / f"{name}.json"
            text.parent.mkdir(parents=True, exist_ok=True)
            text.write_text(json.dumps({f"Beijing/{name}.jpg": "The image captures a bustling street in Beijing, "
                                        "China. The street is lined with lush green trees and towering buildings."},
                                       indent=4))
    rows = []
    for i, (x, y) in enumerate(TILES):
        poi = "{" + ", ".join(f"'{c}': {(i * 7 + k) % 11}" for k, c in enumerate(POI_CATEGORIES)) + "}"
        rows.append([f"({x},{y})", 6.4 + i / 100, 7.5 + i / 50, 8.9 + i / 30, poi, 10.5 + i])
    header = ["Coordinate", "carbon", "population", "gdp", "poi", "nightlight"]
    _write_csv(root / "downstream" / "Beijing_train.csv", header, rows[:8])
    _write_csv(root / "downstream" / "Beijing_test.csv", header, rows[8:])
    return root


# -- safe parsing ----------------------------------------------------------------------------------------


def test_coordinates_and_poi_dicts_are_parsed_without_eval():
    assert parse_coordinate("(12638,4740)") == (12638, 4740) and parse_coordinate(" (12677, 4730) ") == (12677, 4730)
    assert parse_coordinate("(40.09315850201147, 116.44569035648394)") == (40.09315850201147, 116.44569035648394)
    for bad in ("12638,4740", "(1,2,3)", "__import__('os').system('true')", "(1, 2) or 1", ""):
        assert parse_coordinate(bad) is None
    counts = parse_poi_dict("{'Dining and Cuisine': 0, ' Business and Residential': 12, \"Healthcare\": 9}")
    assert counts == {"Dining and Cuisine": 0, "Business and Residential": 12, "Healthcare": 9}
    for bad in ("{'a': __import__('os')}", "{'a': 1} | {}", "{'a': 1, 'b': [2]}", "dict(a=1)", "{'a' 1}"):
        assert parse_poi_dict(bad) is None
    assert parse_poi_dict("{}") == {}
    assert poi_column("Science, Education and Culture") == "science_education_and_culture"


# -- UrbanCLIP -------------------------------------------------------------------------------------------


def test_urbanclip_release_imports_validates_and_runs(tmp_path: Path):
    src = urbanclip_release(tmp_path / "UrbanCLIP" / "data")
    dest = tmp_path / "BJ"
    result = cli("data", "import", "--from", "urbanclip", str(src), str(dest))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "a JSON array of 30 caption sentences, one flat list; regrouped by 'image' into 10 captions" in out
    assert "1 tile(s) of Beijing at a zoom other than 16 ignored" in out
    assert "captions for 10 of 12 SI images" in out
    assert cli("data", "validate", str(dest)).returncode == 0
    meta = json.loads((dest / "city.json").read_text())
    assert meta["city"] == "BJ" and meta["source"] == "real" and meta["tasks"] == ["CO2", "GDP", "Pop"]
    mapping = list(csv.DictReader(open(dest / "region_map.csv")))
    assert len(mapping) == 12 and mapping[0] == {"region_id": "z16_12614_4690", "zoom": "16", "tile_x": "12614",
                                                 "tile_y": "4690", "corner_lat": "", "corner_lon": "",
                                                 "source_image": "images/Beijing/16_12614_4690_s.jpg"}
    regions = list(csv.DictReader(open(dest / "regions.csv")))
    assert regions[5] == {"region_id": "z16_12615_4691", "row": "4691", "col": "12615", "lat": "", "lon": ""}
    indicators = {r["region_id"]: r for r in csv.DictReader(open(dest / "indicators.csv"))}
    assert float(indicators["z16_12617_4692"]["Pop"]) == pytest.approx(7.5 + 11 / 50)
    from urbanln_bench.captions.caption_file import FileCaptioner
    from urbanln_bench.data.loader import CityData

    city = CityData.open(dest)
    captioner = FileCaptioner(dest / "captions/imported/SI.jsonl", known_image_ids=city.satellite_ids())
    [caption] = captioner.describe(None, "z16_12614_4690", n=2)
    assert caption.startswith("The image depicts a large parking lot next to a highway near tile 12614. There are")
    assert caption.count(".") == 3
    run = cli("run", "--method", "color-histogram", "--city", "BJ", "--data-root", str(dest), "--task", "Pop",
              "--imagery", "SI", "--seeds", "0", "--profile", "smoke", "--results", str(tmp_path / "results"))
    assert run.returncode == 0, run.stderr
    [record] = [json.loads(p.read_text()) for p in (tmp_path / "results").rglob("*.json")]
    assert record["cell"]["id"] == "BJ/Pop/SI" and record["data"]["source"] == "real"


def test_urbanclip_grouped_captions_say_so(tmp_path: Path):
    src = urbanclip_release(tmp_path / "src", grouped=True)
    report = import_city("urbanclip", src, tmp_path / "BJ")
    assert report.ok, report.problems
    assert any("a JSON array of 30 caption sentences, grouped per image (10 groups)" in n for n in report.notes)
    assert report.captions == {"SI": 10}


def test_every_problem_is_named_by_file_and_line_and_nothing_is_written(tmp_path: Path):
    src = urbanclip_release(tmp_path / "src")
    train = src / "downstream_task" / "Beijing_train.csv"
    lines = train.read_text().splitlines()
    lines[0] += ",O3"
    lines[1:] = [line + ",1.0" for line in lines[1:]]
    lines[2] = lines[2].replace('"(12615,4690)"', '"__import__(\'os\').getcwd()"')
    lines[3] = lines[3].replace("7.54", "seven")
    train.write_text("\n".join(lines) + "\n")
    test = src / "downstream_task" / "Beijing_test.csv"
    test.write_text(test.read_text().replace("6.4,7.5,8.9", "6.4,9.9,8.9"))  # conflicts with the train row
    captions = src / "captions" / "Beijing_captions.json"
    captions.write_text(captions.read_text().replace('"caption": "There are', '"caption": 3, "x": "There are', 1))
    dest = tmp_path / "BJ"
    result = cli("data", "import", "--from", "urbanclip", str(src), str(dest))
    assert result.returncode == 1
    out = " ".join(result.stdout.split())
    assert f"{train}:1: column 'O3' is not a known indicator" in out and "--column 'O3=TASK'" in out
    assert f"{train}:3: column 'Coordinate': \"__import__('os').getcwd()\" is not a tile coordinate" in out
    assert f"{train}:4: column 'population': not a number: 'seven'" in out
    assert f"{train}:2: tile (12614, 4690) has Pop 7.5 here but 9.9 on {test}:5" in out
    assert f"{captions}:6: expected {{\"caption\": str, \"image\": str}}" in out
    assert "5 problem(s); nothing was written" in out
    assert not dest.exists() and not list(tmp_path.glob(".BJ*"))
    fixed = cli("data", "import", "--from", "urbanclip", "--column", "O3=", "--json", str(src), str(dest))
    report = json.loads(fixed.stdout)
    assert not any("O3" in p for p in report["problems"]) and len(report["problems"]) == 4


# -- UrbanVLP ----------------------------------------------------------------------------------------------


def test_urbanvlp_release_imports_street_views_poi_and_captions(tmp_path: Path):
    src = urbanvlp_release(tmp_path / "UrbanVLP" / "data")
    dest = tmp_path / "BJ"
    report = import_city("urbanvlp", src, dest)
    assert report.ok, report.problems
    assert (report.regions, report.streetview_images, report.captions) == (12, 12, {"SI": 12, "SV": 12})
    assert report.labelled == {"CO2": 12, "GDP": 12, "Night": 12, "POI": 12, "Pop": 12}
    from urbanln_bench.captions.caption_file import FileCaptioner
    from urbanln_bench.data.loader import CityData
    from urbanln_bench.data.validate import validate_city_dir

    assert validate_city_dir(dest).ok
    city = CityData.open(dest)
    assert city.streetview_ids("z16_12614_4690") == [f"z16_12614_4690/{_streetview_name(k, 0)}" for k in range(2)]
    assert len(city.regions_with_streetview()) == 6
    assert city.poi.categories[3] == "business_and_residential" and len(city.poi.categories) == 14
    row = list(city.regions.ids).index("z16_12615_4690")
    assert city.poi.counts[row, 3] == (7 + 3) % 11 and city.indicator("POI")[row] == sum((7 + k) % 11 for k in range(14))
    assert city.indicator("Night")[row] == 11.5
    sv_ids = [i for rid in city.regions.ids for i in city.streetview_ids(rid)]
    captioner = FileCaptioner(dest / "captions/imported/SV.jsonl", known_image_ids=sv_ids)
    assert captioner.describe(None, sv_ids[0], n=1)[0].startswith("The image captures a bustling street in Beijing")
    assert captioner.name == "file:SV.jsonl"
    built = cli("captions", "build", "--city", "BJ", "--data-root", str(dest), "--imagery", "SV", "--captioner",
                f"file:{dest / 'captions/imported/SV.jsonl'}", "--no-refine", "--random", "--candidates", "1")
    assert built.returncode == 0, built.stderr
    selected = Path(built.stdout.strip())
    assert selected.parent == dest / "captions" and "12 images, 12 candidates" in built.stderr


def test_urbanvlp_bad_poi_and_listing_are_problems(tmp_path: Path):
    src = urbanvlp_release(tmp_path / "src")
    train = src / "downstream" / "Beijing_train.csv"
    train.write_text(train.read_text().replace("'Healthcare': 7", "'Healthcare': __import__('os')", 1))
    [bad] = [n for n, line in enumerate(train.read_text().splitlines(), start=1) if "__import__" in line]
    listing = src / "streetview_corresponding" / "Beijing" / "text" / "16_12615_4690_s.txt"
    listing.write_text(listing.read_text() + "missing_116.1,40.1_202001_1.00.jpg\n")
    report = import_city("urbanvlp", src, tmp_path / "BJ")
    assert report.problems == [
        f"{train}:{bad}: column 'poi': not a dict of category counts {{'Category': n, ...}}: "
        + repr(train.read_text().splitlines()[bad - 1].split('"')[3][:60]),
        f"{listing}:3: street view 'missing_116.1,40.1_202001_1.00.jpg' is not among the street-view images",
    ]
    assert not (tmp_path / "BJ").exists()


def test_musecl_and_unknown_formats_are_refused_with_the_reason(tmp_path: Path):
    with pytest.raises(DataError, match="MuseCL's New York release is a Google Drive archive"):
        import_city("musecl", tmp_path, tmp_path / "NY")
    with pytest.raises(DataError, match=r"unknown format \(did you mean 'urbanclip'"):
        import_city("urbanclp", tmp_path, tmp_path / "NY")
    src = urbanclip_release(tmp_path / "src")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("")
    with pytest.raises(DataError, match="already exists and is not empty"):
        import_city("urbanclip", src, tmp_path / "taken")
    with pytest.raises(DataError, match="city 'Beijing' has no harness name|no satellite tiles <Wuhan>"):
        import_city("urbanclip", src, tmp_path / "W", source_city="Wuhan")
