"""Hostile and careless inputs through the CLI (docs/hostile-inputs.md, issue 15: validation before work).

Each case builds one bad input in a fresh folder and runs the command a user would. It must exit non-zero
with a message naming what is wrong (the excerpt below), print no traceback, and write nothing: the
folder the case works in and the cache are byte-for-byte as before (no record, no twin, no embedding,
no partial file). The table in docs/hostile-inputs.md lists the same cases; a test checks they agree.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import cli, install_plugin, write_city_dir

ROOT = Path(__file__).resolve().parents[1]
RUN = ("run", "--method", "color-histogram", "--city", "NY", "--scale", "tiny", "--profile", "smoke",
       "--seeds", "0", "--task", "Pop", "--imagery", "SI", "--no-frame")
SYNTH = ("data", "synth", "--scale", "tiny")


@dataclass(frozen=True)
class Hostile:
    """One hostile input: ``build(folder, store)`` writes what it needs under ``folder`` (``store`` is a
    folder of valid records to copy) and returns the CLI arguments; the message must match ``expect``."""

    cls: str
    name: str
    build: Callable[[Path, Path], list[str]]
    expect: str


CASES: list[Hostile] = []
STATE: dict[str, Path] = {}  # the module's private cache (set by the hostile_cache fixture)


def case(cls: str, name: str, expect: str):
    def register(build):
        CASES.append(Hostile(cls, name, build, expect))
        return build
    return register


def options(cls: str, name: str, args: tuple[str, ...], expect: str, base: tuple[str, ...] = RUN) -> None:
    """A case that is only command-line options (results under the case's folder)."""
    CASES.append(Hostile(cls, name, lambda folder, store: [*base, *args, "--results", str(folder / "results")]
                         if base == RUN else [*base, *args], expect))


# -- options ----------------------------------------------------------------------------------------------------
options("option", "--seeds 5-1", ("--seeds", "5-1"), r"empty \(descending\) range")
options("option", "--seeds 0-999999999", ("--seeds", "0-999999999"), r"more than 1000 seeds")
options("option", "--seeds 4294967296", ("--seeds", "4294967296"), r"over the maximum 4294967295")
options("option", "--seeds abc", ("--seeds", "abc"), r"--seeds must look like '0-4'")
options("option", "--seeds -1", ("--seeds", "-1"), r"--seeds must look like '0-4'")
options("option", "--seeds 0,0", ("--seeds", "0,0"), r"names seed 0 twice")
options("option", "--seeds ,", ("--seeds", ","), r"names no seed")
options("option", "--tune -1", ("--tune", "-1"), r"--tune -1 is out of range")
options("option", "--tune 100000", ("--tune", "100000"), r"--tune 100000 is out of range")
options("option", "--profile huge", ("--profile", "huge"), r"unknown profile 'huge'")
options("option", "--device tpu9 (embeddings cached)", ("--device", "tpu9"), r"--device 'tpu9' is not a device")
options("option", "--device cuda:99", ("--device", "cuda:99"), r"--device cuda:99: (CUDA is not available|this machine has)")
options("option", "--scale huge", ("--scale", "huge"), r"unknown scale 'huge'")
options("option", "--split diagonal", ("--split", "diagonal"), r"unknown split strategy 'diagonal'")
options("option", "--overwrite sometimes", ("--overwrite", "sometimes"), r"--overwrite must be one of")
options("option", "--method unknown", ("--method", "colour-histogram"), r"unknown method 'colour-histogram'.*did you mean")
options("option", "--city unknown", ("--city", "NYC"), r"unknown city 'NYC'")
options("option", "--task unknown", ("--task", "Popp"), r"has no task 'Popp'")
options("option", "--imagery unknown", ("--imagery", "SW"), r"runs on imagery .* not 'SW'")
options("option", "--cell unknown", ("--cell", "NY/Pop/SW"), r"unknown cell 'NY/Pop/SW'")
options("option", "--pretrain-city unknown", ("--pretrain-city", "BJJ"), r"unknown city 'BJJ'")
options("option", "--set input_size=0", ("--set", "input_size=0"), r"input_size=0 is out of range: it must be an integer >= 8")
options("option", "--set input_size=abc", ("--set", "input_size=abc"), r"input_size='abc' is not an integer >= 8")
options("option", "--set unknown key", ("--set", "input_sise=32"), r"unknown setting 'input_sise'.*did you mean 'input_size'")
options("option", "--set without =", ("--set", "input_size"), r"--set expects KEY=VALUE")
options("option", "--set mu=7", ("--method", "urbanln", "--set", "mu=7"), r"mu=7.0 is out of range: it must be a number >= 0 and <= 1")
options("option", "--set mu=nan", ("--method", "urbanln", "--set", "mu=nan"), r"mu=nan is out of range")
options("option", "--set lr=-1 (recipe default)", ("--method", "urbanln", "--set", "lr=-1"), r"lr=-1 is out of range: it must be a number > 0")
options("option", "--set lr=fast (recipe default)", ("--method", "urbanln", "--set", "lr=fast"), r"lr='fast' is not a number")
options("option", "--set init_seed=1.5", ("--method", "random-features", "--set", "init_seed=1.5"),
        r"init_seed='1.5' is not an integer >= 0 and <= 4,294,967,295")
options("option", "data synth --seed -5", ("--city", "NY", "--seed", "-5"), r"--seed -5 is out of range", base=SYNTH)
options("option", "profile --profile huge", ("--methods", "color-histogram", "--profile", "huge"),
        r"unknown profile 'huge'", base=("profile",))
options("option", "profile --device tpu9", ("--methods", "color-histogram", "--device", "tpu9"),
        r"'tpu9' is not a device", base=("profile",))
options("option", "profile --batch-size 0", ("--methods", "color-histogram", "--batch-size", "0"),
        r"--batch-size 0 is out of range", base=("profile",))
options("option", "check-method names and --all", ("color-histogram", "--all"), r"name one or more methods, or pass --all",
        base=("check-method",))


@case("output", "--results is a file", r"--results .* is a file, not a folder")
def _results_file(folder: Path, store: Path) -> list[str]:
    (folder / "results").write_text("not a folder\n")
    return [*RUN, "--results", str(folder / "results")]


@case("output", "--results not writable", r"not writable")
def _results_read_only(folder: Path, store: Path) -> list[str]:
    return [*RUN, "--results", "/proc/urbanln-results"]  # /proc takes no new files, even from root


@case("output", "--results under a file", r"is a file, so the folder cannot be made")
def _results_under_file(folder: Path, store: Path) -> list[str]:
    (folder / "plain").write_text("x\n")
    return [*RUN, "--results", str(folder / "plain" / "results")]


@case("output", "leaderboard --results missing", r"--results .*: no such folder")
def _leaderboard_missing(folder: Path, store: Path) -> list[str]:
    return ["leaderboard", "--results", str(folder / "nowhere"), "--out", str(folder / "lb.md")]


@case("output", "leaderboard --out is a folder", r"--out .* is a folder")
def _leaderboard_out_dir(folder: Path, store: Path) -> list[str]:
    shutil.copytree(store, folder / "store")
    (folder / "lb").mkdir()
    return ["leaderboard", "--results", str(folder / "store"), "--out", str(folder / "lb")]


@case("output", "export --out is a folder", r"--out .* is a folder")
def _export_out_dir(folder: Path, store: Path) -> list[str]:
    (folder / "out").mkdir()
    return ["export", "--method", "color-histogram", "--city", "NY", "--scale", "tiny", "--out", str(folder / "out")]


@case("output", "data show --out is a folder", r"--out .* is a folder")
def _show_out_dir(folder: Path, store: Path) -> list[str]:
    (folder / "sheet.png").mkdir()
    return ["data", "show", "--city", "NY", "--scale", "tiny", "--out", str(folder / "sheet.png")]


options("option", "data show --regions 0", ("--city", "NY", "--regions", "0"), r"--regions 0 is out of range",
        base=("data", "show", "--scale", "tiny"))


@case("option", "export --device tpu9", r"--device 'tpu9' is not a device")
def _export_device(folder: Path, store: Path) -> list[str]:
    return ["export", "--method", "color-histogram", "--city", "NY", "--scale", "tiny", "--device", "tpu9",
            "--out", str(folder / "out.npz")]


@case("output", "eval --results is a file", r"--results .* is a file, not a folder")
def _eval_results_file(folder: Path, store: Path) -> list[str]:
    (folder / "results").write_text("x\n")
    return ["eval", "--embeddings", str(_good_embeddings(folder)), "--imagery", "SI", "--city", "NY", "--scale",
            "tiny", "--seeds", "0", "--results", str(folder / "results")]


# -- city files -------------------------------------------------------------------------------------------------
def city_file_case(name: str, expect: str, edit: Callable[[str], str], command: str = "run") -> None:
    def build(folder: Path, store: Path) -> list[str]:
        path = folder / "city.toml"
        path.write_text(edit((ROOT / "cities" / "NY.toml").read_text()))
        if command == "synth":
            return [*SYNTH, "--city-file", str(path)]
        return [*RUN[:3], "--city-file", str(path), *RUN[5:], "--results", str(folder / "results")]
    CASES.append(Hostile("city file", name, build, expect))


def set_key(text: str, table: str | None, key: str, value: str) -> str:
    """``text`` with ``key = value`` in ``table`` (None: the top level), replacing the key if present."""
    start = 0 if table is None else text.index(f"[{table}]")
    end = text.find("\n[", start + 1) if table is not None else text.find("\n[")
    end = len(text) if end < 0 else end
    section = text[start:end]
    pattern = re.compile(rf"^{re.escape(key)} = .*$", re.MULTILINE)
    section = pattern.sub(f"{key} = {value}", section, count=1) if pattern.search(section) else \
        section.rstrip("\n") + f"\n{key} = {value}\n"
    return text[:start] + section + text[end:]


city_file_case("not TOML", r"not valid TOML", lambda t: t + "\nthis is = = not toml\n")
city_file_case("deeply nested TOML", r"nested too deeply", lambda t: "deep = " + "[" * 5000 + "]" * 5000 + "\n" + t)


@case("city file", "not UTF-8", r"not valid TOML")
def _city_file_latin1(folder: Path, store: Path) -> list[str]:
    (folder / "city.toml").write_bytes((ROOT / "cities" / "NY.toml").read_bytes().replace(b"New York", b"New York \xff"))
    return [*SYNTH, "--city-file", str(folder / "city.toml")]


city_file_case("tasks a string", r"\.tasks: expected a list", lambda t: set_key(t, None, "tasks", '"Pop"'))
city_file_case("tasks empty", r"tasks is empty", lambda t: set_key(t, None, "tasks", "[]"))
city_file_case("unknown task", r"unknown task 'Popp'", lambda t: set_key(t, None, "tasks", '["Popp"]'))
city_file_case("empty city name", r"name .. must be a non-empty string", lambda t: set_key(t, None, "name", '""'))
city_file_case("unknown key", r"unknown key 'ful_name'.*did you mean 'full_name'",
               lambda t: set_key(t, None, "ful_name", '"x"'))
city_file_case("paper.regions = 0", r"paper.regions must be between 1 and", lambda t: set_key(t, "paper", "regions", "0"))
city_file_case("paper.labelled negative", r"paper.labelled.Pop must be between 0 and",
               lambda t: t.replace("Pop = 506", "Pop = -1"))
city_file_case("paper.labelled over regions", r"paper.labelled.Pop must be between 0 and paper.regions",
               lambda t: t.replace("Pop = 506", "Pop = 9999"))
city_file_case("paper.street_views NaN", r"expected a finite number|expected an integer",
               lambda t: set_key(t, "paper", "street_views", "nan"))
city_file_case("regions negative", r"regions must be between 0", lambda t: set_key(t, None, "regions", "-5"))
city_file_case("street_views_per_region inf", r"expected a finite number",
               lambda t: set_key(t, None, "street_views_per_region", "inf"))
city_file_case("grid 100000 × 100000", r"grid is over the maximum", lambda t: set_key(
    set_key(t, "geo", "rows", "100000"), "geo", "cols", "100000"))
city_file_case("grid rows = 0", r"rows and cols must be positive", lambda t: set_key(t, "geo", "rows", "0"))
city_file_case("grid cell size negative", r"cell_deg_lat and cell_deg_lon must be positive",
               lambda t: set_key(t, "geo", "cell_deg_lat", "-0.01"))
city_file_case("grid origin off the globe", r"is not a latitude/longitude",
               lambda t: set_key(t, "geo", "origin_lat", "123.0"))
city_file_case("more regions than grid cells", r"do not fit a", lambda t: set_key(t, "geo", "rows", "2"))
city_file_case("twin seed negative", r"seed must be between 0 and 4294967295", lambda t: set_key(t, "twin", "seed", "-1"))
city_file_case("twin seed huge", r"seed must be between 0 and 4294967295",
               lambda t: set_key(t, "twin", "seed", "99999999999999"))
city_file_case("twin parameter NaN", r"twin.noise_amplitude: expected a finite number",
               lambda t: set_key(t, "twin", "noise_amplitude", "nan"))
city_file_case("twin parameter inf", r"twin.density_gain: expected a finite number",
               lambda t: set_key(t, "twin", "density_gain", "inf"))
city_file_case("twin count negative", r"mobility_trips_per_region must not be negative",
               lambda t: set_key(t, "twin", "mobility_trips_per_region", "-100.0"))
city_file_case("twin parameter wrong type", r"twin.correlation_length: expected a number",
               lambda t: set_key(t, "twin", "correlation_length", '"long"'))
city_file_case("twin centres empty", r"at least one urban centre", lambda t: re.sub(
    r"centres = \[.*?\n\]", "centres = []", t, flags=re.DOTALL))
city_file_case("centre radius negative", r"radius must be positive", lambda t: t.replace("radius = 0.10", "radius = -0.1"))
city_file_case("max_street_views = 0", r"max_street_views.small must be between 1",
               lambda t: set_key(t, None, "max_street_views", "{ small = 0 }"))
city_file_case("seed via data synth", r"seed must be between 0", lambda t: set_key(t, "twin", "seed", "-3"), "synth")


@case("city file", "missing file", r"file not found")
def _city_file_missing(folder: Path, store: Path) -> list[str]:
    return [*SYNTH, "--city-file", str(folder / "nope.toml")]


# -- data folders (--data-root) ---------------------------------------------------------------------------------
def data_case(name: str, expect: str, edit: Callable[[Path], None], command: str = "run") -> None:
    def build(folder: Path, store: Path) -> list[str]:
        root = write_city_dir(folder / "NY")
        edit(root)
        if command == "validate":
            return ["data", "validate", str(root)]
        return ["run", "--method", "color-histogram", "--city", "NY", "--data-root", str(root), "--profile", "smoke",
                "--seeds", "0", "--task", "Pop", "--imagery", "SI", "--results", str(folder / "results")]
    CASES.append(Hostile("data folder", name, build, expect))


def _write(rel: str, text: str | bytes) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    return edit


def _rewrite(rel: str, change: Callable[[str], str]) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        (root / rel).write_text(change((root / rel).read_text()))
    return edit


data_case("manifest.json not JSON", r"manifest.json: not a readable manifest \(Expecting", _write("manifest.json", "{oops"))
data_case("manifest.json without files", r"not a manifest", _write("manifest.json", '{"version": 1}'))
data_case("city.json not JSON", r"city.json: unreadable", _write("city.json", "{city: NY"))
data_case("city.json a list", r"city.json: expected a JSON object", _write("city.json", "[1, 2]"))
data_case("city.json tasks a string", r"'tasks' must be a list of task names",
          _write("city.json", json.dumps({"city": "NY", "source": "real", "tasks": "Pop"})))
data_case("city.json empty city name", r"'city' must be the city's name",
          _write("city.json", json.dumps({"city": "", "source": "real", "tasks": ["Pop"]})))
data_case("city.json unknown source", r"source must be one of",
          _write("city.json", json.dumps({"city": "NY", "source": "guess", "tasks": ["Pop"]})))
data_case("city.json names another city", r"names city 'BJ', but the run is for 'NY'",
          _write("city.json", json.dumps({"city": "BJ", "source": "real", "tasks": ["Pop"]})))
data_case("semicolon CSV", r"separated by ';'.*comma-separated", _rewrite("regions.csv", lambda t: t.replace(",", ";")))
data_case("tab-separated CSV", r"separated by tab", _rewrite("indicators.csv", lambda t: t.replace(",", "\t")))
data_case("regions.csv empty", r"regions.csv: empty file", _write("regions.csv", ""))
data_case("regions.csv not UTF-8", r"regions.csv: unreadable", _write("regions.csv", b"region_id,row\n\xff\xfe,1\n"))
data_case("ragged CSV row", r"regions.csv:3: 2 fields, header has 5", _rewrite(
    "regions.csv", lambda t: t.replace("t001,0,1,", "t001,0,", 1).replace(",40.0100,-73.9900", "", 1)))
data_case("duplicate region id", r"duplicate region_id 't000'",
          _rewrite("regions.csv", lambda t: t.replace("t001,", "t000,", 1)))
data_case("region id with a slash", r"region_id '\.\./x' must use only", _rewrite(
    "regions.csv", lambda t: t.replace("t001,", "../x,", 1)))
data_case("indicator negative", r"negative indicator", _rewrite("indicators.csv", lambda t: t.replace("\nt002,30", "\nt002,-30")))
data_case("indicator infinite", r"infinite indicator", _rewrite("indicators.csv", lambda t: t.replace("\nt002,30", "\nt002,inf")))
data_case("indicator not a number", r"not a number: 'lots'",
          _rewrite("indicators.csv", lambda t: t.replace("\nt002,30", "\nt002,lots")))
data_case("unknown indicator column", r"unknown column 'Popp'.*did you mean 'Pop'",
          _rewrite("indicators.csv", lambda t: t.replace("region_id,Pop", "region_id,Popp")))
data_case("indicator for unknown region", r"region_id 'ghost' is not in regions.csv",
          _rewrite("indicators.csv", lambda t: t + "ghost,1,2\n"))
data_case("coordinate not a number", r"column 'lat' of region 't000': not a number",
          _rewrite("regions.csv", lambda t: t.replace("40.0000", "north", 1)))
data_case("satellite tile missing", r"t000", lambda root: (root / "satellite" / "t000.png").unlink())
data_case("satellite tile not an image", r"t000", _write("satellite/t000.png", b"not a png at all"))
data_case("negative POI count", r"negative POI count", _rewrite("aux/poi_counts.csv", lambda t: t.replace("\nt001,1,", "\nt001,-1,")))
data_case("mobility not a number", r"mobility.csv", _rewrite("aux/mobility.csv", lambda t: t.replace(",1\n", ",many\n", 1)))
data_case("city.json tasks a string (validate)", r"'tasks' must be a list of task names",
          _write("city.json", json.dumps({"city": "NY", "source": "real", "tasks": "Pop"})), command="validate")


@case("data folder", "--data-root missing", r"not a directory")
def _data_root_missing(folder: Path, store: Path) -> list[str]:
    return ["run", "--method", "color-histogram", "--city", "NY", "--data-root", str(folder / "NY"),
            "--results", str(folder / "results")]


# -- caption files ----------------------------------------------------------------------------------------------
def caption_case(name: str, expect: str, text: str | None) -> None:
    def build(folder: Path, store: Path) -> list[str]:
        root = write_city_dir(folder / "NY")
        path = folder / "captions.jsonl"
        if text is not None:
            path.write_text(text)
        return ["captions", "build", "--city", "NY", "--data-root", str(root), "--limit", "2", "--no-refine",
                "--captioner", f"file:{path}"]
    CASES.append(Hostile("caption file", name, build, expect))


_LINE = {"image_id": "t000", "captioner": "mine", "caption": "a street with trees"}
caption_case("file missing", r"caption file not found", None)
caption_case("line not JSON", r"captions.jsonl:1: malformed JSON", "{not json\n")
caption_case("line deeply nested", r"captions.jsonl:1: malformed JSON \(nested too deeply\)", "[" * 100000 + "]" * 100000 + "\n")
caption_case("line not an object", r"captions.jsonl:1: expected a JSON object, got int", "42\n")
caption_case("missing key", r"missing key\(s\) 'caption'", json.dumps({"image_id": "t000", "captioner": "mine"}) + "\n")
caption_case("caption not a string", r"'caption' must be string", json.dumps({**_LINE, "caption": 42}) + "\n")
caption_case("empty caption", r"empty caption for image 't000'", json.dumps({**_LINE, "caption": "  "}) + "\n")
caption_case("unknown image id", r"unknown image id 'ghost'", json.dumps({**_LINE, "image_id": "ghost"}) + "\n")
caption_case("empty file", r"no captions in the file", "")


@case("caption file", "unknown captioner backend", r"unknown captioner 'telepathy'; known: file")
def _captioner_backend(folder: Path, store: Path) -> list[str]:
    root = write_city_dir(folder / "NY")
    return ["captions", "build", "--city", "NY", "--data-root", str(root), "--limit", "2", "--captioner", "telepathy:x"]


@case("caption file", "--candidates 0", r"candidates_per_captioner must be at least 1")
def _candidates_zero(folder: Path, store: Path) -> list[str]:
    root = write_city_dir(folder / "NY")
    return ["captions", "build", "--city", "NY", "--data-root", str(root), "--candidates", "0"]


@case("caption file", "--threshold nan", r"threshold must be a finite number")
def _threshold_nan(folder: Path, store: Path) -> list[str]:
    root = write_city_dir(folder / "NY")
    return ["captions", "build", "--city", "NY", "--data-root", str(root), "--limit", "1", "--threshold", "nan"]


@case("caption file", "--caption-seed -1", r"caption seed must be between 0 and 4294967295")
def _caption_seed(folder: Path, store: Path) -> list[str]:
    root = write_city_dir(folder / "NY")
    return ["captions", "build", "--city", "NY", "--data-root", str(root), "--limit", "1", "--caption-seed", "-1"]


# -- embeddings files (eval --embeddings) -----------------------------------------------------------------------
def _good_embeddings(folder: Path) -> Path:
    from urbanln_bench.data.loader import CityData
    from urbanln_bench.specs import get_city
    from urbanln_bench.synth.scales import get_scale
    from urbanln_bench.synth.twin import twin_dir

    ids = CityData.open(twin_dir(get_city("NY"), get_scale("tiny"), root=STATE["cache"])).satellite_ids()
    path = folder / "good.npz"
    np.savez(path, region_ids=np.asarray(ids), vectors=np.random.default_rng(0).normal(size=(len(ids), 4)))
    return path


def embeddings_case(name: str, expect: str, make: Callable[[Path], Path], imagery: bool = True) -> None:
    def build(folder: Path, store: Path) -> list[str]:
        path = make(folder)
        return ["eval", "--embeddings", str(path), *(["--imagery", "SI"] if imagery else []), "--city", "NY",
                "--scale", "tiny", "--seeds", "0", "--results", str(folder / "results")]
    CASES.append(Hostile("embeddings file", name, build, expect))


def _npz(name: str, **arrays) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        good = np.load(_good_embeddings(folder))
        path = folder / name
        np.savez(path, **{"region_ids": good["region_ids"], "vectors": good["vectors"], **arrays})
        return path
    return make


def _raw(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        (folder / name).write_bytes(data)
        return folder / name
    return make


def _truncated(folder: Path) -> Path:
    data = _good_embeddings(folder).read_bytes()
    (folder / "cut.npz").write_bytes(data[: len(data) // 2])
    return folder / "cut.npz"


def _with_sidecar(text: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = _good_embeddings(folder)
        path.with_suffix(".json").write_text(text)
        return path
    return make


def _vectors(transform: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        good = np.load(_good_embeddings(folder))
        np.savez(folder / "bad.npz", region_ids=good["region_ids"], vectors=transform(good["vectors"]))
        return folder / "bad.npz"
    return make


def _pickled(folder: Path) -> Path:
    good = np.load(_good_embeddings(folder))
    np.savez(folder / "bad.npz", region_ids=np.asarray(list(good["region_ids"]), dtype=object), vectors=good["vectors"])
    return folder / "bad.npz"


def _missing_array(folder: Path) -> Path:
    good = np.load(_good_embeddings(folder))
    np.savez(folder / "bad.npz", region_ids=good["region_ids"])
    return folder / "bad.npz"


def _npy(folder: Path) -> Path:
    np.save(folder / "bad.npz", np.zeros((3, 3)))
    (folder / "bad.npz.npy").rename(folder / "bad.npz") if (folder / "bad.npz.npy").exists() else None
    return folder / "bad.npz"


def _zip_of_text(folder: Path) -> Path:
    with zipfile.ZipFile(folder / "bad.npz", "w") as z:
        z.writestr("region_ids.npy", "hello")
    return folder / "bad.npz"


embeddings_case("file missing", r"embeddings file not found", lambda folder: folder / "none.npz")
embeddings_case("a folder", r"a folder, not an embeddings file", lambda folder: (folder / "d.npz").mkdir() or folder / "d.npz")
embeddings_case("empty file", r"empty file, not an embeddings file", _raw("empty.npz", b""))
embeddings_case("truncated .npz", r"not an embeddings file", _truncated)
embeddings_case("text file", r"not an embeddings file", _raw("text.npz", b"region_id,x\nt1,0.5\n"))
embeddings_case("single .npy array", r"not an embeddings file", _npy)
embeddings_case("zip with a broken array", r"not an embeddings file", _zip_of_text)
embeddings_case("vectors array missing", r"not an embeddings file", _missing_array)
embeddings_case("pickled object array", r"not an embeddings file", _pickled)
embeddings_case("broken JSON sidecar", r"good.json: the embeddings' sidecar is not JSON", _with_sidecar("{imagery: SI"),
                imagery=False)
embeddings_case("sidecar not an object", r"sidecar must be a JSON object", _with_sidecar("[1]"), imagery=False)
embeddings_case("sidecar without imagery", r"say which imagery", _with_sidecar("{}"), imagery=False)
embeddings_case("D = 0 vectors", r"vectors have 0 dimensions", _vectors(lambda v: v[:, :0]))
embeddings_case("complex vectors", r"vectors are complex", _vectors(lambda v: v + 1j * v))
embeddings_case("string vectors", r"vectors must be numbers", _vectors(lambda v: v.astype(str)))
embeddings_case("1-d vectors", r"vectors must be \(n_regions, D\)", _vectors(lambda v: v[:, 0]))
embeddings_case("NaN rows", r"rows are not finite", _vectors(lambda v: np.where(np.arange(len(v))[:, None] == 2, np.nan, v)))
embeddings_case("region ids not ids", r"region_ids must be a 1-d array", _npz("bad.npz", region_ids=np.zeros((2, 2))))
embeddings_case("duplicate region id", r"duplicate region id", lambda folder: _dup(folder))
embeddings_case("regions missing", r"region\(s\) of NY missing", lambda folder: _subset(folder))


def _dup(folder: Path) -> Path:
    good = np.load(_good_embeddings(folder))
    ids = list(good["region_ids"])
    ids[1] = ids[0]
    np.savez(folder / "bad.npz", region_ids=np.asarray(ids), vectors=good["vectors"])
    return folder / "bad.npz"


def _subset(folder: Path) -> Path:
    good = np.load(_good_embeddings(folder))
    np.savez(folder / "bad.npz", region_ids=good["region_ids"][:5], vectors=good["vectors"][:5])
    return folder / "bad.npz"


# -- records (leaderboard --check) ------------------------------------------------------------------------------
def record_case(name: str, expect: str, edit: Callable[[dict], object], raw: str | None = None) -> None:
    def build(folder: Path, store: Path) -> list[str]:
        copy = folder / "store"
        shutil.copytree(store, copy)
        path = next(copy.rglob("*.json"))
        if raw is not None:
            path.write_text(raw)
        else:
            data = json.loads(path.read_text())
            edit(data)
            path.write_text(json.dumps(data))
        return ["leaderboard", "--results", str(copy), "--out", str(folder / "lb.md"), "--check"]
    CASES.append(Hostile("record", name, build, expect))


def _set(path: str, value) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        *parents, last = path.split(".")
        for key in parents:
            data = data[key]
        data[last] = value
    return edit


record_case("not JSON", r"corrupted result record \(not JSON", None, raw="{broken")
record_case("deeply nested JSON", r"corrupted result record \(not JSON", None, raw="[" * 100000 + "]" * 100000)
record_case("not an object", r"not a JSON object", None, raw="[]")
record_case("schema newer", r"newer than this urbanln-bench reads", _set("schema", 99))
record_case("field missing", r"missing per_seed", lambda d: d.pop("per_seed"))
record_case("metrics.r2.mean a string", r"metrics.r2.mean missing or not a number", _set("metrics.r2.mean", "0.5"))
record_case("metrics.r2.std a string", r"metrics.r2.std must be a number or null", _set("metrics.r2.std", "abc"))
record_case("metrics.r2.n a string", r"metrics.r2.n must be a positive integer", _set("metrics.r2.n", "five"))
record_case("cell.task a number", r"field 'cell.task' must be a string", _set("cell.task", 5))
record_case("method.native_imagery a string", r"field 'method.native_imagery' must be a list of strings",
            _set("method.native_imagery", "SV"))
record_case("method.ours a string", r"field 'method.ours' must be true or false", _set("method.ours", "yes"))
record_case("method an array", r"field 'method' must be an object", _set("method", []))
record_case("data.scale a number", r"field 'data.scale' must be a string or null", _set("data.scale", 3))
record_case("per_seed an object", r"field 'per_seed' must be a list", _set("per_seed", {}))
record_case("split a string", r"field 'split' must be an object", _set("split", "random"))
record_case("unknown field in cell", r"unknown field 'cell.colour'", _set("cell.colour", "red"))


# -- plugins ----------------------------------------------------------------------------------------------------
PLUGIN_BASE = '''
from urbanln_bench.method import Method, MethodMeta, SettingRange

class Good(Method):
    meta = MethodMeta(name="hostile-good", display_name="Good", version="1", imagery="SI", native_imagery=("SI",),
                      description="x", default_config={"alpha": 0.5},
                      setting_ranges={"alpha": SettingRange(float, 0.0, 1.0)})

    def encode_images(self, pixels):
        return pixels.mean(dim=(2, 3))
'''


def plugin_case(name: str, expect: str, code: str, method: str, extra: tuple[str, ...] = ()) -> None:
    def build(folder: Path, store: Path) -> list[str]:
        env = install_plugin(folder / "site", "hostile_plugin", code, {method: f"hostile_plugin:{_class(code)}"})
        return [*RUN[:2], method, *RUN[3:], *extra, "--results", str(folder / "results")], env["PYTHONPATH"]
    CASES.append(Hostile("plugin", name, build, expect))


def _class(code: str) -> str:
    return re.findall(r"^class (\w+)", code, re.MULTILINE)[-1]


plugin_case("import fails", r"method 'hostile-broken': cannot load hostile_plugin:Broken: No module named 'nowhere'",
            "import nowhere\nclass Broken: pass\n", "hostile-broken")
plugin_case("raises at import", r"loading hostile_plugin:Boom failed: RuntimeError: no GPU here",
            "raise RuntimeError('no GPU here')\nclass Boom: pass\n", "hostile-boom")
plugin_case("invalid metadata", r"loading hostile_plugin:BadMeta failed: ValueError: method 'hostile-badmeta': imagery",
            PLUGIN_BASE + '''
class BadMeta(Good):
    meta = MethodMeta(name="hostile-badmeta", display_name="B", version="1", imagery="XX", native_imagery=("SI",),
                      description="x")
''', "hostile-badmeta")
plugin_case("not a Method subclass", r"is not a urbanln_bench.method.Method subclass",
            "class NotMethod:\n    pass\n", "hostile-notmethod")
plugin_case("name mismatch", r"declares meta.name 'hostile-good'; they must agree", PLUGIN_BASE, "hostile-other")
plugin_case("setting out of its declared range", r"alpha=5.0 is out of range: it must be a number >= 0 and <= 1",
            PLUGIN_BASE, "hostile-good", ("--set", "alpha=5"))
plugin_case("unknown setting", r"unknown setting 'alpah'.*did you mean 'alpha'", PLUGIN_BASE, "hostile-good",
            ("--set", "alpah=0.1"))


# -- the harness ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hostile_cache(tmp_path_factory) -> tuple[Path, Path]:
    """A cache private to this module (so "nothing written" is exact) with the NY tiny twin and the colour
    histogram's SI embeddings, and a store with one valid record."""
    cache = tmp_path_factory.mktemp("hostile-cache")
    store = tmp_path_factory.mktemp("hostile-store") / "results"
    env = {**os.environ, "URBANLN_BENCH_CACHE": str(cache)}
    done = cli(*RUN, "--results", str(store), env=env)
    assert done.returncode == 0, done.stderr
    STATE["cache"] = cache
    return cache, store


def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``roots`` with its size and modification time. Not counted: a cache entry's lock file
    (coordination between runs, not an artefact; a run that fails while computing an entry leaves it, empty)
    and a plugin's compiled module."""
    out = {}
    for root in roots:
        for path in root.rglob("*"):
            if "__pycache__" in path.parts or path.suffix == ".lock" or path.is_dir():
                continue
            stat = path.lstat()
            out[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return out


@pytest.mark.parametrize("hostile", CASES, ids=[f"{c.cls}: {c.name}" for c in CASES])
def test_hostile_input_is_refused_cleanly(hostile: Hostile, hostile_cache, tmp_path: Path) -> None:
    cache, store = hostile_cache
    args = hostile.build(tmp_path, store)
    env = {**os.environ, "URBANLN_BENCH_CACHE": str(cache)}
    if isinstance(args, tuple):  # a plugin case: (args, PYTHONPATH under which the plugin is installed)
        args, env["PYTHONPATH"] = args
    before = snapshot(tmp_path, cache)
    result = cli(*args, env=env)
    after = snapshot(tmp_path, cache)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    assert re.search(hostile.expect, " ".join(output.split()), re.DOTALL), output
    assert after == before, f"written: {sorted(set(after) ^ set(before))[:5]}"


def test_docs_table_lists_every_case() -> None:
    """docs/hostile-inputs.md has one row per case here (class and input), so the table cannot drift."""
    text = (ROOT / "docs" / "hostile-inputs.md").read_text()
    rows = {(cells[0], cells[1]) for line in text.splitlines() if line.startswith("| ") and "test_hostile" in line
            for cells in [[c.strip().strip("`") for c in line.strip("|").split(" | ")]]}
    missing = [(c.cls, c.name) for c in CASES if (c.cls, c.name) not in rows]
    assert not missing, missing
    assert len(CASES) >= 60


# -- edge inputs that must be accepted, and the dry run -------------------------------------------------------
def test_csv_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    """Spreadsheets save UTF-8 CSVs with a byte-order mark; it is not part of the first column's name."""
    from urbanln_bench.data.loader import CityData

    root = write_city_dir(tmp_path / "NY")
    for name in ("regions.csv", "indicators.csv"):
        (root / name).write_bytes(b"\xef\xbb\xbf" + (root / name).read_bytes())
    data = CityData.open(root)
    assert data.regions.ids[0] == "t000" and len(data.regions) == 12
    assert cli("data", "validate", str(root)).returncode == 0


def test_dry_run_renders_and_fits_nothing(hostile_cache, tmp_path: Path) -> None:
    """`run --dry-run` reports from keys only: a twin (or the pretraining world a surrogate backbone's key
    names) that is not in the cache is not rendered; its cells are reported as undecidable."""
    cache, _ = hostile_cache
    empty = tmp_path / "empty-cache"
    fresh = cli("run", "--method", "color-histogram", "--city", "NY", "--scale", "tiny", "--dry-run",
                "--results", str(tmp_path / "results"), env={**os.environ, "URBANLN_BENCH_CACHE": str(empty)})
    assert fresh.returncode == 0, fresh.stderr
    assert "the NY twin (tiny) is not rendered in the cache yet" in fresh.stderr
    assert "6 cannot tell without rendering" in " ".join(fresh.stderr.split())
    assert not empty.exists()
    before = snapshot(cache)
    world = cli("run", "--method", "resnet18", "--city", "NY", "--scale", "tiny", "--profile", "smoke", "--dry-run",
                "--results", str(tmp_path / "results"), env={**os.environ, "URBANLN_BENCH_CACHE": str(cache)})
    assert world.returncode == 0, world.stderr
    assert re.search(r"the PW-\w+ twin \(\w+\) is not rendered", world.stderr)
    assert snapshot(cache) == before and not (tmp_path / "results").exists()


def test_setting_ranges_admit_every_value_the_builtins_use() -> None:
    """A range must never refuse a value a built-in method's defaults or recipes use (so `--set` of a recipe's
    own value works on every profile), and must refuse something: ranges that admit anything are no check."""
    from urbanln_bench.method import SETTING_RANGES, get_method, method_names

    checked = 0
    for name in method_names():
        cls = get_method(name)
        tables = [dict(cls.meta.default_config), *getattr(cls, "RECIPES", {}).values()]
        for table in tables:
            for key, value in table.items():
                declared = cls.meta.setting_ranges.get(key) or SETTING_RANGES.get(key)
                if declared is None or value is None or value == 0 or isinstance(value, bool | str | list):
                    continue
                assert declared.admits(value), (name, key, value, declared.describe())
                checked += 1
    assert checked > 50
    assert not SETTING_RANGES["mu"].admits(7.0) and not SETTING_RANGES["input_size"].admits(0)
    assert not SETTING_RANGES["lr"].admits(float("nan")) and not SETTING_RANGES["batch_size"].admits(1.5)
