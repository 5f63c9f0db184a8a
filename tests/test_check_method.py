"""``urbanln-bench check-method``: each check passes an honest plugin and fails the plugin built to break it."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import cli, install_plugin

PLUGINS = '''
import csv
import numpy as np
import torch
from urbanln_bench.method import Method, MethodMeta


def _meta(name, description):
    return MethodMeta(name=name, display_name=name, version="0.1", imagery="either", native_imagery=("SI",),
                      description=description)


class Honest(Method):
    meta = _meta("honest", "mean colour per image")

    def encode_images(self, pixels):
        return pixels.mean(dim=(2, 3))


class _Supervised(Honest):
    """Fits a least-squares map from mean colour to ln(Pop + 1) and appends its prediction: a method
    trained on the downstream labels."""

    def labels(self, city, context):
        raise NotImplementedError

    def fit(self, city, imagery, context):
        ids = city.satellite_ids()
        colour = np.stack([city.load_image(i).reshape(-1, 3).mean(0) / 255 for i in ids])
        by_region = self.labels(city, context)
        y = np.array([by_region.get(i, np.nan) for i in ids])
        keep = np.isfinite(y)
        X = np.c_[colour[keep], np.ones(keep.sum())]
        self.w = torch.tensor(np.linalg.lstsq(X, np.log1p(y[keep]), rcond=None)[0], dtype=torch.float32)

    def encode_images(self, pixels):
        colour = pixels.mean(dim=(2, 3)) * 0.25 + 0.5
        return torch.cat([colour, colour @ self.w[:3, None] + self.w[3]], dim=1)


class CheatByName(_Supervised):
    meta = _meta("cheat-by-name", "re-opens the city's twin through the harness and reads Pop")

    def labels(self, city, context):
        from urbanln_bench.data.loader import CityData
        from urbanln_bench.specs import get_city
        from urbanln_bench.synth.twin import ensure_twin

        data = CityData.open(ensure_twin(get_city(city.name), context.scale))
        return dict(zip(data.regions.ids, data.indicator("Pop")))


class CheatByPath(_Supervised):
    meta = _meta("cheat-by-path", "walks from a private image path to indicators.csv")

    def labels(self, city, context):
        tile = next(iter(city._images._satellite.values()))
        with open(tile.parent.parent / "indicators.csv") as handle:
            return {row["region_id"]: float(row["Pop"] or "nan") for row in csv.DictReader(handle)}


class Unseeded(Honest):
    meta = _meta("unseeded", "random projection from numpy's global, unseeded generator")

    def fit(self, city, imagery, context):
        self.projection = torch.tensor(np.random.randn(3, 4), dtype=torch.float32)

    def encode_images(self, pixels):
        return pixels.mean(dim=(2, 3)) @ self.projection


class BatchStatistics(Honest):
    meta = _meta("batch-statistics", "centres features on the first images of each batch")

    def encode_images(self, pixels):
        features = pixels.mean(dim=(2, 3))
        return features - features[:8].mean(dim=0, keepdim=True)


class NotFinite(Honest):
    meta = _meta("not-finite", "returns inf for dark images")

    def encode_images(self, pixels):
        features = pixels.mean(dim=(2, 3))
        return torch.where(features < 0, torch.full_like(features, float("inf")), features)
'''

NAMES = {"honest": "Honest", "cheat-by-name": "CheatByName", "cheat-by-path": "CheatByPath",
         "unseeded": "Unseeded", "batch-statistics": "BatchStatistics", "not-finite": "NotFinite"}


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory) -> dict[str, str]:
    return install_plugin(tmp_path_factory.mktemp("site"), "checked_methods", PLUGINS,
                          {name: f"checked_methods:{cls}" for name, cls in NAMES.items()})


@pytest.fixture(scope="module")
def reports(plugin_env) -> dict[str, dict]:
    result = cli("check-method", *NAMES, "--imagery", "SI", "--json", env=plugin_env)
    assert result.returncode == 1, result.stderr  # some plugins fail: exit 1
    return {r["method"]: r for r in json.loads(result.stdout)}


def status(report: dict, check: str) -> str:
    (row,) = [r for r in report["results"] if r["check"] == check and r["imagery"] in ("SI", "")]
    return row["status"]


def test_honest_plugin_passes_every_check(reports):
    report = reports["honest"]
    assert report["ok"]
    assert {r["check"]: r["status"] for r in report["results"]} == {
        "load": "PASS", "output": "PASS", "embed determinism": "PASS", "batch-size invariance": "PASS",
        "fit determinism": "PASS", "labels unseen": "PASS"}


@pytest.mark.parametrize("method", ["cheat-by-name", "cheat-by-path"])
def test_method_that_reads_labels_fails_labels_unseen(reports, method: str):
    report = reports[method]
    assert not report["ok"]
    assert status(report, "labels unseen") == "FAIL" and status(report, "fit determinism") == "PASS"
    assert status(report, "output") == "PASS"  # its output is fine; only its training data is not


@pytest.mark.parametrize("method, check, other_passes", [
    ("unseeded", "fit determinism", "embed determinism"),
    ("batch-statistics", "batch-size invariance", "fit determinism"),
    ("not-finite", "output", "load"),
])
def test_each_check_can_fail(reports, method: str, check: str, other_passes: str):
    report = reports[method]
    assert status(report, check) == "FAIL" and status(report, other_passes) == "PASS"
    assert [r["check"] for r in report["results"] if r["status"] == "FAIL"] == [check]


@pytest.mark.slow
def test_table_on_success_and_failing_check_named(plugin_env):
    ok = cli("check-method", "honest", "--imagery", "SI", env=plugin_env)
    assert ok.returncode == 0, ok.stderr
    for check in ("load", "output", "embed determinism", "batch-size invariance", "fit determinism", "labels unseen"):
        assert check in ok.stdout
    assert "FAIL" not in ok.stdout
    bad = cli("check-method", "cheat-by-path", "--imagery", "SI", env=plugin_env)
    assert bad.returncode == 1
    assert "FAIL cheat-by-path: labels unseen (SI): the embeddings change when the indicators" in bad.stderr


def test_usage_errors(plugin_env):
    unknown = cli("check-method", "honset", env=plugin_env)
    assert unknown.returncode == 2 and "unknown method 'honset' (did you mean 'honest'" in unknown.stderr
    both = cli("check-method", "honest", "--all", env=plugin_env)
    assert both.returncode == 2 and "name one or more methods, or pass --all" in both.stderr
    imagery = cli("check-method", "honest", "--imagery", "SV+SI", env=plugin_env)
    assert imagery.returncode == 2 and "runs on imagery SV, SI, not 'SV+SI'" in imagery.stderr


def test_scrambled_twin_differs_only_in_labels(tiny_ny: Path, tmp_path: Path):
    from urbanln_bench.check_method import SCRAMBLED_FILES, scramble_labels
    from urbanln_bench.data.loader import CityData
    from urbanln_bench.errors import DataError

    copy = tmp_path / tiny_ny.name
    shutil.copytree(tiny_ny, copy)
    scramble_labels(copy, seed=0)
    with pytest.raises(DataError, match="stale or forged manifest"):  # only the harness may keep its identity
        CityData.open(copy)
    before, after = CityData.open(tiny_ny), CityData.open(copy, exempt=SCRAMBLED_FILES)
    assert after.manifest_hash == before.manifest_hash  # the data's identity is unchanged
    for task in before.tasks:
        old, new = before.indicator(task), after.indicator(task)
        assert np.array_equal(np.isnan(old), np.isnan(new))  # the same regions are labelled
        assert np.corrcoef(old[~np.isnan(old)], new[~np.isnan(new)])[0, 1] < 0.5
    with open(copy / "truth" / "latents.csv") as a, open(tiny_ny / "truth" / "latents.csv") as b:
        assert list(csv.reader(a))[1] != list(csv.reader(b))[1]
    for folder in ("satellite", "streetview"):
        assert sorted(p.name for p in (copy / folder).rglob("*")) == sorted(p.name for p in (tiny_ny / folder).rglob("*"))
