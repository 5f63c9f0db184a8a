"""The synthetic twin as written to disk: layout, determinism, scales, the pretraining world."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from urbanln_bench.data.loader import CityData
from urbanln_bench.data.manifest import compute_manifest, manifest_hash
from urbanln_bench.data.validate import validate_city_dir
from urbanln_bench.specs import get_city, pretraining_world
from urbanln_bench.synth.scales import get_scale
from urbanln_bench.synth.twin import ensure_twin, generate_twin, twin_dir, with_seed


def test_tiny_twin_is_valid_native_layout(tiny_ny: Path):
    report = validate_city_dir(tiny_ny)
    assert report.problems == []
    assert 0 < report.regions <= 100
    data = CityData.open(tiny_ny)
    assert data.source == "synthetic" and data.name == "NY"
    assert set(data.tasks) == {"Pop", "Crime", "POI"}
    # tiny: at most 2 street views per region, images at most 64 px
    for rid in data.regions.ids:
        assert len(data.streetview_ids(rid)) <= 2
    assert max(data.load_image(data.satellite_ids()[0]).shape[:2]) <= 64
    sv = [i for rid in data.regions.ids for i in data.streetview_ids(rid)]
    assert max(data.load_image(sv[0]).shape[:2]) <= 64
    assert report.regions_without_streetview == json.loads((tiny_ny / "city.json").read_text())["counts"][
        "regions_without_streetview"]


def test_poi_label_is_the_poi_total_and_mobility_exists(tiny_ny: Path):
    data = CityData.open(tiny_ny)
    poi = data.indicator("POI")
    assert data.poi is not None and len(data.poi.categories) == 14
    labelled = ~np.isnan(poi)
    np.testing.assert_allclose(poi[labelled], data.poi.counts[labelled].sum(axis=1))
    assert data.mobility is not None and len(data.mobility.trips) > 0


def test_oracle_and_truth(tiny_ny: Path):
    data = CityData.open(tiny_ny)
    oracle = data.oracle()["cells"]
    assert set(oracle) == {f"NY/{t}/{i}" for t in ("Pop", "Crime", "POI") for i in ("SV", "SI")}
    for cell in oracle.values():
        assert 0.0 < cell["ceiling"] < 1.0
    names, latents = data.latents()
    assert latents.shape == (len(data.regions), len(names))
    graphs = data.scene_graphs("SI")
    assert set(graphs) == set(data.satellite_ids())
    assert all(graph["objects"] for graph in graphs.values())


def test_byte_identical_for_same_city_seed_scale(tmp_path: Path, tiny_ny: Path):
    spec = get_city("NY")
    out = tmp_path / "again"
    out.mkdir()
    generate_twin(spec, get_scale("tiny"), out, workers=1)
    assert compute_manifest(out) == compute_manifest(tiny_ny)
    other = tmp_path / "other-seed"
    other.mkdir()
    generate_twin(with_seed(spec, 7), get_scale("tiny"), other, workers=1)
    assert manifest_hash(compute_manifest(other)) != manifest_hash(compute_manifest(tiny_ny))


def test_cache_key_covers_seed_and_scale_and_reuses(cache_dir: Path, tiny_ny: Path):
    spec = get_city("NY")
    assert ensure_twin(spec, "tiny", root=cache_dir) == tiny_ny
    assert twin_dir(with_seed(spec, 7), get_scale("tiny"), cache_dir) != tiny_ny
    assert twin_dir(spec, get_scale("small"), cache_dir) != tiny_ny


def test_pretraining_world_is_disjoint_from_benchmark_twins(tmp_path: Path, tiny_ny: Path):
    benchmark = {h for rel, h in compute_manifest(tiny_ny).items() if rel.endswith(".png")}
    world = pretraining_world()[0]
    out = tmp_path / "world"
    out.mkdir()
    generate_twin(world, get_scale("tiny"), out, workers=1)
    data = CityData.open(out)
    assert data.source == "synthetic" and data.meta["kind"] == "pretraining-world"
    assert data.scene_graphs("SV")
    images = {h for rel, h in compute_manifest(out).items() if rel.endswith(".png")}
    assert images and not images & benchmark


def test_city_file_street_view_cap_only_lowers_counts():
    import dataclasses

    from urbanln_bench.synth.latents import LATENT_NAMES
    from urbanln_bench.synth.twin import streetview_counts

    spec = get_city("NY")
    rng = np.random.default_rng(0)
    latents = rng.random((300, len(LATENT_NAMES)))
    cells = np.stack([np.arange(300) // 20, np.arange(300) % 20], axis=1)
    small = get_scale("small")
    free = streetview_counts(spec, cells, latents, small)
    capped = streetview_counts(dataclasses.replace(spec, max_street_views={"small": 2}), cells, latents, small)
    assert free.max() == 4 and (free == 0).any() and (free > 2).any()
    assert np.array_equal(capped, np.minimum(free, 2))  # the same draws, clipped; no region gains or loses all views
    other_scale = streetview_counts(dataclasses.replace(spec, max_street_views={"full": 1}), cells, latents, small)
    assert np.array_equal(other_scale, free)


def test_a_comment_in_the_city_file_keeps_the_twin_key(tmp_path: Path):
    from urbanln_bench.specs import load_city_file

    source = Path(get_city("NY").source_file).read_text()
    plain, commented = tmp_path / "a" / "NY.toml", tmp_path / "b" / "NY.toml"
    for path, text in ((plain, source), (commented, "# my notes on this city\n" + source.replace("\n[", "\n\n[", 1))):
        path.parent.mkdir()
        path.write_text(text)
    scale = get_scale("tiny")
    assert twin_dir(load_city_file(plain), scale, tmp_path) == twin_dir(load_city_file(commented), scale, tmp_path)
    changed = tmp_path / "c" / "NY.toml"
    changed.parent.mkdir()
    changed.write_text(source.replace("seed = ", "seed = 1", 1))
    assert twin_dir(load_city_file(changed), scale, tmp_path) != twin_dir(load_city_file(plain), scale, tmp_path)
