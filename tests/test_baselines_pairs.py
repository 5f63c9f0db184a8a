"""Tile2Vec, PG-SimCLR and MuseCL as plugins: metadata, profiles, end-to-end tiny runs, the POI
exclusion, MuseCL's reported POI cell and its exclusion on a city without mobility flows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from urbanln_bench.errors import UserError
from urbanln_bench.leaderboard import render_leaderboard
from urbanln_bench.method import METHODS, FitContext, MethodMeta, get_method
from urbanln_bench.profiles import IMAGES_SEEN_BUDGETS
from urbanln_bench.runner import RunOptions, run


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small models on a shared 2-core machine: one intra-op thread is faster and steadier."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_run(results: Path, method: str, city: str = "NY", **kw):
    return run(RunOptions(method=method, city=city, scale="tiny", seeds=[0], results_dir=results, profile="smoke",
                          **kw), log=lambda m: None)


def test_registered_as_plugins_with_the_papers_imagery():
    assert {"tile2vec", "pg-simclr", "musecl"} <= set(METHODS.names())
    tile2vec, pg, muse = (get_method(n).meta for n in ("tile2vec", "pg-simclr", "musecl"))
    assert tile2vec.imagery == "SI" and tile2vec.native_imagery == ("SI",) and tile2vec.uses_aux == ()
    assert pg.imagery == "SI" and pg.uses_aux == ("poi_counts",) and not pg.report_derived_cells
    assert muse.imagery == "fused" and muse.native_imagery == ("SV+SI",)
    assert muse.requires == ("poi_counts", "mobility") and muse.report_derived_cells


def test_aux_names_are_checked():
    with pytest.raises(ValueError, match="unknown modality 'poi'"):
        MethodMeta(name="x", display_name="X", version="1", imagery="SI", native_imagery=("SI",),
                   description="", uses_aux=("poi",))


def test_profiles_resolve_and_overrides_win():
    method = get_method("tile2vec")({"images_seen": "3000"})
    assert method.config["images_seen"] == 3000 and method.input_size == 64 and method.config["width"] == 32
    assert "epochs" not in method.config  # the budget, not epochs, sets the length of training
    cpu_identity = method.identity()
    method.run_profile = "smoke"
    assert method.input_size == 32 and method.config["images_seen"] == 3000  # the user's setting beats the profile
    assert method.identity() != cpu_identity and "smoke profile" in method.weight_source()
    assert method.variant_slug() == "tile2vec__images_seen=3000"
    plain = get_method("tile2vec")()
    assert plain.config["images_seen"] == IMAGES_SEEN_BUDGETS["cpu"]
    plain.run_profile = "paper"  # no budget: the paper's epochs
    assert plain.config["epochs"] == 50 and "images_seen" not in plain.config


def test_epochs_under_a_budget_are_refused_with_the_fix():
    method = get_method("musecl")({"rs_epochs": "3"})
    with pytest.raises(UserError, match="rs_epochs cannot be set under the 'cpu' profile.*images_seen=N"):
        _ = method.config
    method.run_profile = "paper"
    assert method.config["rs_epochs"] == 3


@pytest.mark.parametrize("name,share", [("tile2vec", 1.0), ("pg-simclr", 0.5), ("musecl", 0.5)])
def test_each_image_encoder_gets_its_share_of_the_budget(name, share):
    method = get_method(name)()
    method.run_profile = "smoke"
    assert method.images_budget(share) == int(IMAGES_SEEN_BUDGETS["smoke"] * share)
    method.run_profile = "paper"
    assert method.images_budget(share) == 0  # epochs


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_ny) -> tuple[Path, dict]:
    results = tmp_path_factory.mktemp("pairs") / "results"
    tile2vec = tiny_run(results, "tile2vec")
    pg = tiny_run(results, "pg-simclr")
    muse = tiny_run(results, "musecl")
    return results, {"tile2vec": tile2vec, "pg-simclr": pg, "musecl": muse}


def test_tile2vec_end_to_end(store):
    results, outcomes = store
    cells = sorted(o.cell for o in outcomes["tile2vec"])
    assert cells == ["NY/Crime/SI", "NY/POI/SI", "NY/Pop/SI"] and all(o.record for o in outcomes["tile2vec"])
    record = json.loads((results / "synthetic-tiny/NY/tile2vec/Pop_SI_random.json").read_text())
    assert record["method"]["config"]["input_size"] == 32 and record["embedding"]["dim"] == 128
    # the smoke budget: as many steps of 25 triplets (three images each) as fit in it
    budget = IMAGES_SEEN_BUDGETS["smoke"]
    assert record["pretraining"]["steps"] == budget // 75 and record["pretraining"]["parameters"] > 0
    assert record["pretraining"]["images_seen"] == budget // 75 * 75
    assert record["notes"] == [] and np.isfinite(record["metrics"]["r2"]["mean"])


def test_pg_simclr_excludes_the_poi_cell(store):
    results, outcomes = store
    by_cell = {o.cell: o for o in outcomes["pg-simclr"]}
    assert by_cell["NY/POI/SI"].record is None and "poi_counts" in by_cell["NY/POI/SI"].note
    assert by_cell["NY/Pop/SI"].record is not None and by_cell["NY/Crime/SI"].record is not None
    assert not (results / "synthetic-tiny/NY/pg-simclr/POI_SI_random.json").exists()
    record = by_cell["NY/Pop/SI"].record.to_json()
    assert record["embedding"]["dim"] == 2 * 128  # [h_POI, h_geo]
    assert set(record["pretraining"]["loss_first_last"]) == {"poi_model", "geo_model"}


def test_musecl_reports_the_poi_cell_with_a_note(store):
    results, outcomes = store
    assert sorted(o.cell for o in outcomes["musecl"]) == ["NY/Crime/SV+SI", "NY/POI/SV+SI", "NY/Pop/SV+SI"]
    poi = json.loads((results / "synthetic-tiny/NY/musecl/POI_SV+SI_random.json").read_text())
    assert poi["notes"] and "poi_counts" in poi["notes"][0] and "paper" in poi["notes"][0]
    pop = json.loads((results / "synthetic-tiny/NY/musecl/Pop_SV+SI_random.json").read_text())
    assert pop["notes"] == [] and pop["embedding"]["dim"] == 384 and pop["embedding"]["regions"] == 100
    assert set(pop["pretraining"]["loss_first_last"]) == {"rs_encoder", "sv_encoder", "fusion"}
    board = render_leaderboard(results)
    main = board[board.index("## NY"):].split("### NY — every imagery variant")[0]  # the city table, not the summary
    muse_row = next(line for line in main.splitlines() if line.startswith("| MuseCL |"))
    cells = muse_row.split(" | ")
    assert sum("†" in c for c in cells) == 1 and "† The method trains on the auxiliary data" in main
    pg_row = next(line for line in main.splitlines() if line.startswith("| PG-SimCLR |"))
    assert pg_row.rstrip(" |").endswith("— | — | —")  # POI is the last task: excluded, shown as "—"


def test_musecl_is_excluded_on_a_city_without_mobility(tmp_path: Path):
    outcomes = tiny_run(tmp_path / "results", "musecl", city="SZ")
    assert outcomes and all(o.record is None for o in outcomes)
    assert all("needs mobility" in o.note and "SZ" in o.note for o in outcomes)
    assert not list((tmp_path / "results").rglob("*.json"))


def test_musecl_fit_refuses_a_city_without_mobility(tiny_ny, tmp_path: Path):
    from urbanln_bench.data.loader import CityData
    from urbanln_bench.errors import UserError

    data = CityData.open(tiny_ny)
    data.mobility = None
    method = get_method("musecl")()
    method.run_profile = "smoke"
    context = FitContext(seed=0, device="cpu", work_dir=tmp_path, scale="tiny", profile="smoke")
    with pytest.raises(UserError, match="mobility flows"):
        method.fit(data.unlabelled(), "SV+SI", context)


def test_same_seed_same_embeddings(tiny_ny, tmp_path: Path):
    from urbanln_bench.data.loader import CityData
    from urbanln_bench.embed import preprocess

    view = CityData.open(tiny_ny).unlabelled()
    pixels = None
    out = []
    for k in range(2):
        method = get_method("tile2vec")()
        method.run_profile = "smoke"
        method.fit(view, "SI", FitContext(seed=0, device="cpu", work_dir=tmp_path / f"fit{k}", scale="tiny",
                                          profile="smoke"))
        if pixels is None:
            images = [view.load_image(i) for i in view.satellite_ids()[:8]]
            pixels = preprocess(images, method.input_size, method.mean, method.std)
        with torch.no_grad():
            out.append(method.encode_images(pixels))
    assert torch.equal(out[0], out[1])


def test_architectures_for_the_profile_command():
    counts = {name: get_method(name)().architecture() for name in ("tile2vec", "pg-simclr", "musecl")}
    assert counts["tile2vec"].total == 2_798_880  # half-width ResNet-18 (cpu profile), no head
    assert counts["pg-simclr"].total == 2 * (2_798_880 + 256 * 256 + 256 * 64)  # two models with projectors
    assert all(a.total == a.trainable > 0 for a in counts.values())  # everything trains from scratch
    pixels = torch.zeros(2, 3, 32, 32)
    assert counts["pg-simclr"].encoder.eval()(pixels).shape == (2, 512)


TRAINED = ("urbanln", "urbanclip", "urbanvlp", "tile2vec", "pg-simclr", "musecl", "caption-regression")


@pytest.mark.parametrize("name", TRAINED)
def test_every_trained_method_names_its_starting_weights(name):
    start = get_method(name).meta.starts_from
    assert start in METHODS.names(), f"{name} starts from unregistered '{start}'"
    meta = get_method(start).meta
    assert meta.role == "start" and not meta.starts_from
    assert meta.native_imagery == get_method(name).meta.native_imagery or start == "clip-start"


def test_a_starting_weights_row_trains_nothing_and_says_so(store, tmp_path):
    outcomes = tiny_run(tmp_path / "results", "tile2vec-start", tasks=["Pop"])
    record = outcomes[0].record.to_json()
    assert record["method"]["role"] == "start" and record["method"]["display_name"] == "Tile2Vec (starting weights)"
    assert record["pretraining"]["steps"] == 0 and record["pretraining"]["images_seen"] == 0
    assert "seeded initialisation" in record["method"]["weight_source"]
    trained = json.loads((store[0] / "synthetic-tiny/NY/tile2vec/Pop_SI_random.json").read_text())
    # the same architecture and initialisation; only the training differs
    assert record["embedding"]["dim"] == trained["embedding"]["dim"]
    assert record["method"]["config"] == {k: v for k, v in trained["method"]["config"].items() if k != "images_seen"} | {"epochs": 0}


def test_musecl_counts_only_its_image_encoders_in_the_budget(store):
    pop = json.loads((store[0] / "synthetic-tiny/NY/musecl/Pop_SV+SI_random.json").read_text())
    seen = pop["pretraining"]["images_seen"]  # the fusion head trains on region features, not images
    assert isinstance(seen, int) and 0 < seen <= IMAGES_SEEN_BUDGETS["smoke"] + 2 * 32 * 3
