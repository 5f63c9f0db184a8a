"""City and task files: the catalogue, user cities, and bad files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from urbanln_bench.errors import SpecError, UserError
from urbanln_bench.registry import UnknownNameError
from urbanln_bench.specs import city_names, get_city, get_task, load_city_file, pretraining_world, task_names
from urbanln_bench.synth.fields import twin_params
from urbanln_bench.synth.twin import check_twin_tables

PAPER_TABLE5 = {  # the paper's Table 5 (urbanln_bench/reference/paper/dataset_stats.csv)
    "BJ": (4584, 29814, {"Pop": 3168, "GDP": 2056, "Night": 3181, "Com": 2188, "CO2": 2704}),
    "SH": (5168, 37469, {"Pop": 3726, "GDP": 2876, "Night": 3730, "CO2": 3513}),
    "SZ": (3383, 33897, {"Pop": 1450, "GDP": 1274, "Night": 1484, "Com": 1052, "CO2": 1444}),
    "NY": (517, 44617, {"Pop": 506, "Crime": 422, "POI": 516}),
}


def test_catalogue_is_the_papers():
    assert city_names() == ["BJ", "NY", "SH", "SZ"]
    assert task_names() == sorted(["Pop", "GDP", "Night", "Com", "CO2", "Crime", "POI"])
    for name, (regions, street_views, labelled) in PAPER_TABLE5.items():
        spec = get_city(name)
        assert spec.n_regions == regions
        assert spec.paper.street_views == street_views
        assert spec.paper.labelled == labelled
        assert set(spec.tasks) == set(labelled)
    assert get_task("POI").derived_from_aux == "poi_counts"


def test_pretraining_world_is_separate():
    world = pretraining_world()
    assert len(world) >= 2
    names = {c.name for c in world}
    assert not names & set(city_names())
    seeds = {twin_params(c).seed for c in world}
    assert not seeds & {twin_params(get_city(n)).seed for n in city_names()}
    assert all(c.kind == "pretraining-world" for c in world)


def _user_city(path: Path, **replace: str) -> Path:
    text = Path(get_city("NY").source_file).read_text().replace('name = "NY"', 'name = "Gotham"')
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    path.write_text(text)
    return path


def test_user_city_file(tmp_path: Path):
    spec = get_city(city_file=_user_city(tmp_path / "gotham.toml"))
    assert spec.name == "Gotham" and spec.tasks == ("Pop", "Crime", "POI")


def test_user_city_folder(tmp_path: Path):
    home = tmp_path / "home"
    (home / "cities").mkdir(parents=True)
    _user_city(home / "cities" / "Gotham.toml")
    code = "from urbanln_bench.specs import city_names, get_city; print(city_names()); print(get_city('Gotham').name)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"URBANLN_BENCH_HOME": str(home), "PATH": "/usr/bin:/bin"}, check=True).stdout
    assert "'Gotham'" in out and out.strip().endswith("Gotham")


def test_missing_key(tmp_path: Path):
    path = _user_city(tmp_path / "bad.toml", **{'full_name = "New York"\n': ""})
    with pytest.raises(SpecError, match=r"bad.toml: missing required key 'full_name'"):
        load_city_file(path)


def test_unknown_key_with_suggestion(tmp_path: Path):
    path = _user_city(tmp_path / "bad.toml", **{"rows = 26": "rowz = 26"})
    with pytest.raises(SpecError, match=r"bad.toml.geo: unknown key 'rowz' \(did you mean 'rows'\?\)"):
        load_city_file(path)


def test_wrong_type_and_unknown_task(tmp_path: Path):
    path = _user_city(tmp_path / "bad.toml", **{"rows = 26": 'rows = "many"'})
    with pytest.raises(SpecError, match=r"geo.rows: expected an integer"):
        load_city_file(path)
    path = _user_city(tmp_path / "bad2.toml", **{'"Crime", "POI"]': '"Crimes", "POI"]'})
    with pytest.raises(SpecError, match=r"unknown task 'Crimes' \(did you mean 'Crime'\?\)"):
        load_city_file(path)


def test_not_toml_and_missing_file(tmp_path: Path):
    bad = tmp_path / "x.toml"
    bad.write_text("name = [unclosed")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_city_file(bad)
    with pytest.raises(SpecError, match="file not found"):
        load_city_file(tmp_path / "nothing.toml")


def test_unknown_city_suggests():
    with pytest.raises(UnknownNameError, match=r"unknown city 'NYC' \(did you mean 'NY'"):
        get_city("NYC")
    with pytest.raises(UnknownNameError, match=r"did you mean 'NY'"):
        get_city("ny")


def test_cli_unknown_city_and_bad_file_exit_nonzero(tmp_path: Path):
    result = subprocess.run([sys.executable, "-m", "urbanln_bench.cli", "data", "synth", "--city", "Beijing"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "unknown city 'Beijing'" in result.stderr
    bad = _user_city(tmp_path / "bad.toml", **{"rows = 26": "rowz = 26"})
    result = subprocess.run([sys.executable, "-m", "urbanln_bench.cli", "data", "synth", "--city-file", str(bad)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "unknown key 'rowz'" in result.stderr


def test_street_view_cap_is_checked(tmp_path: Path):
    path = _user_city(tmp_path / "cap.toml", **{'kind = "benchmark"\n': 'kind = "benchmark"\nmax_street_views = { small = 2 }\n'})
    assert load_city_file(path).max_street_views == {"small": 2}
    path = _user_city(tmp_path / "bad.toml", **{'kind = "benchmark"\n': 'kind = "benchmark"\nmax_street_views = { smal = 2 }\n'})
    with pytest.raises(UserError, match=r"bad.toml: max_street_views names unknown scale 'smal'"):
        check_twin_tables(load_city_file(path))
    path = _user_city(tmp_path / "zero.toml", **{'kind = "benchmark"\n': 'kind = "benchmark"\nmax_street_views = { small = 0 }\n'})
    with pytest.raises(SpecError, match=r"max_street_views.small must be between 1 and"):
        load_city_file(path)
    assert get_city("SZ").max_street_views == {"small": 2}
