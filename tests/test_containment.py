"""Containment (issue 15): names that come from files — cities, regions, methods, variants — are checked
as path components, and every path the harness writes stays under its root. A city named
``../../escaped/X`` is refused before anything is written. Each hostile input asserts the exit code,
the message, no traceback and nothing written (docs/hostile-inputs.md)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import cli, install_plugin, write_city_dir

from urbanln_bench.errors import UserError
from urbanln_bench.paths import MAX_NAME_LENGTH, check_name, contained, name_problem

REPO = Path(__file__).resolve().parents[1]
NY_FILE = (REPO / "cities" / "NY.toml").read_text()


def _files(*roots: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for root in roots if root.exists() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.endswith(".lock")}


def _own_cache(tmp_path: Path, env: dict | None = None) -> dict[str, str]:
    """The environment with a cache under ``tmp_path``: what a command writes there shows in ``_files``,
    what other tests write to the shared cache does not."""
    return {**(env or os.environ), "URBANLN_BENCH_CACHE": str(tmp_path / "cache")}


def _assert_refused(done, code: int, *messages: str) -> None:
    for message in messages:
        assert message in done.stderr + done.stdout, done.stderr
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr + done.stdout


CITY_NAMES = {
    "../../escaped/X": "contains a path separator",
    "NY/../../X": "contains a path separator",
    "..": "starts with a dot",
    ".hidden": "starts with a dot",
    "a" * 300: "is 300 characters long",
    "N\\u0000Y": "contains a NUL or control character",
    "N\\nY": "contains a NUL or control character",
    "C:\\\\escaped": "contains a path separator",
    "": "must be a non-empty string",
}


@pytest.mark.parametrize("name", list(CITY_NAMES))
@pytest.mark.parametrize("command", ["run", "data synth"])
def test_a_city_file_name_that_is_not_a_file_name_is_refused(name: str, command: str, tmp_path: Path):
    city_file = tmp_path / "work" / "evil.toml"
    city_file.parent.mkdir()
    city_file.write_text(NY_FILE.replace('name = "NY"', f'name = "{name}"', 1))
    before = _files(tmp_path)
    args = (["run", "--method", "color-histogram", "--results", str(tmp_path / "work" / "results"), "--no-frame"]
            if command == "run" else ["data", "synth"])
    done = cli(*args, "--city-file", str(city_file), "--scale", "tiny", cwd=tmp_path / "work", env=_own_cache(tmp_path))
    _assert_refused(done, 2, f"{city_file}: name ", CITY_NAMES[name], "use letters, digits")
    assert _files(tmp_path) == before  # no twin in the (own) cache, no record, nothing outside
    assert not list(tmp_path.rglob("escaped*")) and not (tmp_path / "work" / "results").exists()


def _data_city_named(root: Path, name: str) -> str:
    (root / "city.json").write_text(f'{{"city": "{name}", "source": "real", "tasks": ["Pop", "Crime"]}}')
    return f"{root / 'city.json'}: city '{name}'"


def _region_named(root: Path, name: str) -> str:
    for table in ("regions.csv", "indicators.csv", "aux/poi_counts.csv"):
        path = root / table
        path.write_text(path.read_text().replace("\nt000,", f"\n{name},", 1))
    return f"{root / 'regions.csv'}:2: region_id '{name[:MAX_NAME_LENGTH]}' must use only letters"


DATA_NAMES = {"city.json city '../x'": (_data_city_named, "../x"),
              "city.json city '.NY'": (_data_city_named, ".NY"),
              "region id '..'": (_region_named, ".."),
              "region id '.hidden'": (_region_named, ".hidden"),
              "region id of 150 characters": (_region_named, "r" * 150),
              "region id '../../x'": (_region_named, "../../x")}


@pytest.mark.parametrize("case", list(DATA_NAMES))
def test_names_in_a_data_folder_are_checked(case: str, tmp_path: Path):
    change, name = DATA_NAMES[case]
    root = write_city_dir(tmp_path / "NY")
    message = change(root, name)
    results = tmp_path / "results"
    before = _files(tmp_path)
    done = cli("run", "--method", "color-histogram", "--city", "NY", "--data-root", str(root), "--seeds", "0",
               "--results", str(results), "--no-frame", env=_own_cache(tmp_path))
    _assert_refused(done, 2, message)
    _assert_refused(cli("data", "validate", str(root)), 1, message)
    assert not results.exists() and _files(tmp_path) == before


PLUGIN = '''
from urbanln_bench.method import Method, MethodMeta

class Escaping(Method):
    meta = MethodMeta(name="../../escaped", display_name="Escaping", version="0.1", imagery="SI",
                      native_imagery=("SI",), description="a name that is a path")
    def weight_source(self):
        return "none"
    def encode_images(self, pixels):
        return pixels.mean(dim=(2, 3))
'''


def test_a_plugin_method_named_like_a_path_is_refused(tmp_path: Path):
    env = install_plugin(tmp_path / "site", "escaping_methods", PLUGIN, {"../../escaped": "escaping_methods:Escaping"})
    results = tmp_path / "work" / "results"
    results.parent.mkdir()
    before = _files(tmp_path)
    done = cli("run", "--method", "../../escaped", "--city", "NY", "--scale", "tiny", "--results", str(results),
               "--no-frame", env=_own_cache(tmp_path, env), cwd=tmp_path / "work")
    _assert_refused(done, 2, "method name '../../escaped' contains a path separator")
    assert _files(tmp_path) == before
    assert not list(tmp_path.rglob("escaped"))


def test_settings_that_make_an_absurd_folder_name_are_refused_before_any_work(tmp_path: Path):
    results = tmp_path / "results"
    done = cli("run", "--method", "urbanln", "--city", "NY", "--scale", "tiny", "--profile", "smoke",
               "--set", "captioners=synthetic:" + "x" * 300, "--results", str(results), "--no-frame",
               env=_own_cache(tmp_path))
    _assert_refused(done, 2, "make a folder name of", "(at most 200)")
    assert _files(tmp_path) == {}  # no result store, nothing in the (own) cache


def test_every_written_path_is_checked_against_its_root(tmp_path: Path):
    """The second guard: a name that reached a path builder by another route is still refused there."""
    from urbanln_bench.records import RecordPath

    ok = RecordPath(tmp_path, "synthetic-tiny", "NY", "resnet18", "Pop", "SI", "random").path
    assert ok.parent.parent.parent.parent == tmp_path
    for city, slug in (("../../x", "resnet18"), ("NY", "../../../../x"), ("/etc", "resnet18")):
        with pytest.raises(UserError, match="would be written outside"):
            _ = RecordPath(tmp_path, "synthetic-tiny", city, slug, "Pop", "SI", "random").path
    with pytest.raises(UserError, match="would be written outside"):
        contained(tmp_path / "cache" / "twins" / ".." / ".." / "x", tmp_path / "cache" / "twins", "twin folder")
    assert contained(tmp_path / "a" / "b", tmp_path, "x") == tmp_path / "a" / "b"


@pytest.mark.parametrize(("name", "ok"), [("NY", True), ("r001c002", True), ("a.b-c_d", True), ("a" * 100, True),
                                          ("a" * 101, False), ("..", False), ("a/b", False), ("a\\b", False),
                                          ("", False), ("a\0b", False), (".x", False), (None, False)])
def test_name_rules(name, ok: bool):
    assert (name_problem(name) is None) == ok
    if not ok:
        with pytest.raises(UserError, match="use letters, digits"):
            check_name(name, "city", "here")
