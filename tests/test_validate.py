"""`data validate` and the loader on bad input: every problem named, non-zero exit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import cli

from urbanln_bench.data.loader import CityData
from urbanln_bench.data.validate import validate_city_dir
from urbanln_bench.errors import DataError


def test_valid_folder_has_no_problems(city_dir: Path):
    report = validate_city_dir(city_dir)
    assert report.problems == []
    assert report.regions == 12
    assert report.regions_without_streetview == 2  # regions 4 and 9
    assert report.labelled == {"Pop": 11, "Crime": 12}
    data = CityData.open(city_dir)
    assert data.source == "real"
    assert data.indicator("Pop").shape == (12,)


def test_validate_cli_ok_and_json(city_dir: Path):
    result = cli("data", "validate", str(city_dir), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and report["streetview_images"] == 20


def _break(city_dir: Path, problem: str) -> str:
    """Introduce one problem; return a substring the report must contain."""
    if problem == "missing satellite":
        (city_dir / "satellite" / "t002.png").unlink()
        return "region 't002' has no satellite image"
    if problem == "corrupt image":
        (city_dir / "streetview" / "t001" / "0.jpg").write_bytes(b"not a jpeg at all")
        return "t001/0.jpg: unreadable image"
    if problem == "duplicate id":
        with open(city_dir / "regions.csv", "a") as handle:
            handle.write("t005,9,9,40.0,-74.0\n")
        return "duplicate region_id 't005'"
    if problem == "unknown column":
        text = (city_dir / "indicators.csv").read_text().replace("region_id,Pop,Crime", "region_id,Pop,Crimes")
        (city_dir / "indicators.csv").write_text(text)
        return "unknown column 'Crimes' (did you mean 'Crime'"
    if problem == "missing column":
        lines = (city_dir / "indicators.csv").read_text().splitlines()
        (city_dir / "indicators.csv").write_text("\n".join(",".join(line.split(",")[:2]) for line in lines) + "\n")
        return "missing column 'Crime'"
    if problem == "nan only":
        lines = (city_dir / "indicators.csv").read_text().splitlines()
        out = [lines[0]] + [",".join(line.split(",")[:2] + ["nan"]) for line in lines[1:]]
        (city_dir / "indicators.csv").write_text("\n".join(out) + "\n")
        return "column 'Crime' has no values"
    if problem == "negative":
        text = (city_dir / "indicators.csv").read_text().replace("t007,80,81", "t007,-80,81")
        (city_dir / "indicators.csv").write_text(text)
        return "column 'Pop' of region 't007': negative indicator -80"
    if problem == "unknown region in indicators":
        with open(city_dir / "indicators.csv", "a") as handle:
            handle.write("zzz,1,2\n")
        return "region_id 'zzz' is not in regions.csv"
    if problem == "missing regions file":
        (city_dir / "regions.csv").unlink()
        return "regions.csv: missing file"
    if problem == "stray satellite":
        shutil.copy(city_dir / "satellite" / "t000.png", city_dir / "satellite" / "nowhere.png")
        return "satellite image for unknown region 'nowhere'"
    if problem == "bad mobility":
        with open(city_dir / "aux" / "mobility.csv", "a") as handle:
            handle.write("t000,t001,-3\n")
        return "trips must be a finite number ≥ 0"
    raise AssertionError(problem)


PROBLEMS = ["missing satellite", "corrupt image", "duplicate id", "unknown column", "missing column", "nan only",
            "negative", "unknown region in indicators", "missing regions file", "stray satellite", "bad mobility"]


@pytest.mark.parametrize("problem", PROBLEMS)
def test_each_problem_is_reported_by_validate_and_loader(city_dir: Path, problem: str):
    expected = _break(city_dir, problem)
    report = validate_city_dir(city_dir)
    assert any(expected in p for p in report.problems), report.problems
    result = cli("data", "validate", str(city_dir))
    assert result.returncode == 1
    assert expected in result.stdout
    if problem != "corrupt image":  # the loader reads images lazily; the validator reads them all
        with pytest.raises(DataError, match="problem"):
            CityData.open(city_dir)


def test_all_problems_reported_at_once(city_dir: Path):
    expected = [_break(city_dir, p) for p in ("missing satellite", "corrupt image", "negative", "bad mobility")]
    problems = validate_city_dir(city_dir).problems
    for text in expected:
        assert any(text in p for p in problems), (text, problems)


def test_corrupt_image_fails_when_loaded(city_dir: Path):
    _break(city_dir, "corrupt image")
    data = CityData.open(city_dir)
    with pytest.raises(DataError, match="t001/0.jpg: unreadable image"):
        data.load_image("t001/0")


def test_not_a_directory(tmp_path: Path):
    result = cli("data", "validate", str(tmp_path / "nope"))
    assert result.returncode == 1
    assert "not a directory" in result.stdout
