"""Methods as plugins: the registry, a third-party package end to end, and bad plugins."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from conftest import cli, install_plugin

from urbanln_bench.registry import Registry, UnknownNameError

PLUGIN = '''
import numpy as np
import torch
from urbanln_bench.method import Method, MethodMeta

class MeanColour(Method):
    """Third-party method: mean colour per image (3-d)."""
    meta = MethodMeta(name="mean-colour", display_name="Mean colour", version="0.1", imagery="SI",
                      native_imagery=("SI",), description="mean RGB of the tile")
    def weight_source(self):
        return "none"
    def encode_images(self, pixels):
        return pixels.mean(dim=(2, 3))

class WrongShape(MeanColour):
    meta = MethodMeta(name="wrong-shape", display_name="Wrong shape", version="0.1", imagery="SI",
                      native_imagery=("SI",), description="returns one row too few")
    def encode_images(self, pixels):
        return pixels.mean(dim=(2, 3))[1:]

class Nan(MeanColour):
    meta = MethodMeta(name="nan", display_name="NaN", version="0.1", imagery="SI",
                      native_imagery=("SI",), description="returns NaN")
    def encode_images(self, pixels):
        out = pixels.mean(dim=(2, 3))
        out[0, 0] = float("nan")
        return out

class Noisy(MeanColour):
    meta = MethodMeta(name="noisy", display_name="Noisy", version="0.1", imagery="SI",
                      native_imagery=("SI",), description="not deterministic")
    def encode_images(self, pixels):
        return pixels.mean(dim=(2, 3)) + torch.rand(len(pixels), 3)

class Clash(MeanColour):
    meta = MethodMeta(name="resnet18", display_name="Fake ResNet", version="0.1", imagery="SI",
                      native_imagery=("SI",), description="clashes with the built-in")
'''

ENTRY_POINTS = {"mean-colour": "thirdparty_methods:MeanColour", "wrong-shape": "thirdparty_methods:WrongShape",
                "nan": "thirdparty_methods:Nan", "noisy": "thirdparty_methods:Noisy",
                "resnet18": "thirdparty_methods:Clash"}


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory) -> dict[str, str]:
    return install_plugin(tmp_path_factory.mktemp("site"), "thirdparty_methods", PLUGIN, ENTRY_POINTS)


def run_tiny(method: str, results: Path, env, *extra: str):
    return cli("run", "--method", method, "--city", "NY", "--scale", "tiny", "--seeds", "0-1",
               "--results", str(results), *extra, env=env)


def test_registry_suggests_and_builtin_wins():
    registry: Registry[int] = Registry("widget")
    registry.register("alpha", 1, builtin=True)
    with pytest.warns(UserWarning, match="clashes with the built-in one; the built-in wins"):
        registry.register("alpha", 2, builtin=False, origin="some plugin")
    assert registry.get("alpha") == 1
    registry.register("lazy", "json:dumps", builtin=True)
    assert registry.get("lazy") is json.dumps
    with pytest.raises(UnknownNameError, match=r"unknown widget 'alpah' \(did you mean 'alpha'"):
        registry.get("alpah")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        registry.register("beta", 3)


@pytest.mark.slow
def test_third_party_method_runs_end_to_end(plugin_env, tmp_path: Path):
    listed = cli("list", "methods", "--json", env=plugin_env)
    methods = {m["name"]: m for m in json.loads(listed.stdout)}
    assert methods["mean-colour"]["builtin"] is False
    assert methods["resnet18"]["builtin"] is True and methods["resnet18"]["display_name"] == "ResNet-18"
    result = run_tiny("mean-colour", tmp_path / "results", plugin_env)
    assert result.returncode == 0, result.stderr
    records = sorted((tmp_path / "results").rglob("mean-colour/*.json"))
    # beside them, on the same cells only: the floors, scene-graph ceiling and oracle rows of the printed table
    framed = sorted(p.name for p in (tmp_path / "results").rglob("*.json") if p.parent.name != "mean-colour")
    assert framed == sorted(["Crime_SI_random.json", "POI_SI_random.json", "Pop_SI_random.json"] * 4)
    assert [p.name for p in records] == ["Crime_SI_random.json", "POI_SI_random.json", "Pop_SI_random.json"]
    record = json.loads(records[0].read_text())
    assert record["method"]["display_name"] == "Mean colour" and record["embedding"]["dim"] == 3
    assert "Mean colour" in result.stdout


@pytest.mark.parametrize("method,message", [
    ("wrong-shape", "encode_images must return shape (64, D) for 64 inputs, got (63, 3)"),
    ("nan", "encode_images returned NaN or inf in 1 of 64 rows"),
    ("noisy", "encode_images is not deterministic"),
])
def test_bad_plugin_output_is_rejected_and_nothing_written(plugin_env, tmp_path: Path, method: str, message: str):
    result = run_tiny(method, tmp_path / "results", plugin_env)
    assert result.returncode == 2
    assert f"method '{method}': {message}" in result.stderr
    assert not (tmp_path / "results").exists() or not list((tmp_path / "results").rglob("*.json"))


def test_unknown_method_task_imagery(tmp_path: Path):
    result = run_tiny("resnet-18", tmp_path, None)
    assert result.returncode == 2 and "unknown method 'resnet-18' (did you mean 'resnet18'" in result.stderr
    result = run_tiny("oracle-latents", tmp_path, None, "--task", "Crimes")
    assert result.returncode == 2 and "city NY has no task 'Crimes' (did you mean 'Crime'" in result.stderr
    result = run_tiny("oracle-latents", tmp_path, None, "--imagery", "XX")
    assert result.returncode == 2 and "runs on imagery SV, SI, not 'XX'" in result.stderr
    result = cli("run", "--method", "oracle-latents", "--cell", "NY/Pop/SW", "--results", str(tmp_path))
    assert result.returncode == 2 and "unknown cell 'NY/Pop/SW' (did you mean 'NY/Pop/SV'" in result.stderr
    result = run_tiny("oracle-latents", tmp_path, None, "--set", "depth=3")
    assert result.returncode == 2 and "unknown setting 'depth'" in result.stderr
