"""ResNet-18 weight sources and runs on real-data folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import cli

from urbanln_bench.errors import UserError
from urbanln_bench.method import get_method


def test_resnet18_local_weights_file(tmp_path: Path):
    import torch

    from urbanln_bench.backbones.resnet import build_resnet18

    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(build_resnet18().state_dict(), path)
    method = get_method("resnet18")({"weights": str(path)})
    assert method.weight_source().startswith("file: resnet18-imagenet.pth (sha256 ")
    method.fit(None, "SI", context=None)
    out = method.encode_images(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, 512)


def test_resnet18_bad_weights(tmp_path: Path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="bad.pth: not a loadable torch state dict"):
        get_method("resnet18")({"weights": str(bad)}).fit(None, "SI", context=None)
    with pytest.raises(UserError, match="weights file not found"):
        get_method("resnet18")({"weights": str(tmp_path / "missing.pth")}).weight_source()


def test_resnet18_without_weights_names_the_surrogate():
    method = get_method("resnet18")()
    method.run_profile = "smoke"
    assert method.weight_source().startswith("surrogate: ResNet-18 supervised on the synthetic pretraining world")


def test_run_on_real_data_folder(city_dir: Path, tmp_path: Path):
    result = cli("run", "--method", "color-histogram", "--city", "NY", "--data-root", str(city_dir), "--task", "Pop",
                 "--imagery", "SI", "--seeds", "0", "--results", str(tmp_path / "results"))
    assert result.returncode == 0, result.stderr
    [path] = list((tmp_path / "results").rglob("*.json"))
    record = json.loads(path.read_text())
    assert record["data"]["source"] == "real" and record["data"]["tag"].startswith("real-")
    assert path.relative_to(tmp_path / "results").parts[0] == record["data"]["tag"]


def test_oracle_refuses_real_data(city_dir: Path, tmp_path: Path):
    result = cli("run", "--method", "oracle-latents", "--city", "NY", "--data-root", str(city_dir),
                 "--results", str(tmp_path / "results"))
    assert result.returncode == 2 and "needs a synthetic twin's truth" in result.stderr


def test_data_root_environment_variable(city_dir: Path, tmp_path: Path):
    import os

    env = dict(os.environ, URBANLN_BENCH_DATA_ROOT=str(city_dir.parent))
    result = cli("run", "--method", "color-histogram", "--city", "NY", "--task", "Crime", "--imagery", "SI",
                 "--seeds", "0", "--results", str(tmp_path / "results"), env=env)
    assert result.returncode == 0, result.stderr
    assert next((tmp_path / "results").rglob("*.json")).relative_to(tmp_path / "results").parts[0].startswith("real-")


def test_a_real_data_city_file_needs_no_twin_tables(tmp_path: Path):
    """A city file with only catalogue facts runs on its data folder; asked for a twin, it says what is missing."""
    from conftest import write_city_dir

    city_file = tmp_path / "Metro.toml"
    city_file.write_text('name = "Metro"\nfull_name = "Metro (real data)"\ntasks = ["Pop", "Crime"]\nimagery = ["SI", "SV"]\n')
    data = write_city_dir(tmp_path / "Metro", city="Metro")
    result = cli("run", "--method", "color-histogram", "--city-file", str(city_file), "--data-root", str(data),
                 "--task", "Pop", "--imagery", "SI", "--seeds", "0", "--results", str(tmp_path / "results"))
    assert result.returncode == 0, result.stderr
    [path] = list((tmp_path / "results").rglob("*.json"))
    assert json.loads(path.read_text())["cell"]["id"] == "Metro/Pop/SI"
    result = cli("run", "--method", "color-histogram", "--city-file", str(city_file), "--task", "Pop",
                 "--imagery", "SI", "--seeds", "0", "--results", str(tmp_path / "results"))
    assert result.returncode == 2
    assert "Metro.toml: no [geo] table, so city 'Metro' has no synthetic twin; give its data with --data-root" in result.stderr
