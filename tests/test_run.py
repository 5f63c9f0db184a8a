"""`run`, records, re-use, `eval`, the leaderboard."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import cli

from urbanln_bench.errors import UserError
from urbanln_bench.leaderboard import render_leaderboard
from urbanln_bench.records import CorruptRecordError
from urbanln_bench.runner import RunOptions, run


def options(results: Path, method: str = "oracle-latents", **kw) -> RunOptions:
    base = dict(method=method, city="NY", scale="tiny", seeds=[0, 1], results_dir=results)
    base.update(kw)
    return RunOptions(**base)


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_ny) -> Path:
    results = tmp_path_factory.mktemp("store") / "results"
    run(options(results), log=lambda m: None)
    run(options(results, method="color-histogram"), log=lambda m: None)
    return results


def test_records_are_complete_and_self_describing(store: Path):
    paths = sorted(store.rglob("*.json"))
    assert len(paths) == 12  # 2 methods × 3 tasks × 2 imagery
    record = json.loads((store / "synthetic-tiny/NY/oracle-latents/Pop_SV_random.json").read_text())
    assert record["cell"] == {"id": "NY/Pop/SV", "city": "NY", "task": "Pop", "imagery": "SV"}
    assert record["data"]["source"] == "synthetic" and len(record["data"]["manifest"]) == 64
    assert record["method"]["weight_source"] == "none (ground truth)"
    assert [s["seed"] for s in record["per_seed"]] == [0, 1]
    assert set(record["split"]["digests"]) == {"0", "1"}
    assert record["split"]["dropped_without_imagery"] > 0  # regions without street views
    r2 = [s["r2"] for s in record["per_seed"]]
    assert record["metrics"]["r2"]["mean"] == pytest.approx(np.mean(r2))
    assert record["probe"]["target"].startswith("ln(y+1)")
    # the machine that embedded and the one that probed (here the same), as docs/identity.md asks of trained numbers
    from urbanln_bench.measurements import cpu_model
    for part in ("embedding", "probe"):
        machine = record["machine"][part]
        assert machine["cpu"] == cpu_model() and machine["device"] == cpu_model()
        assert machine["isa"] and machine["torch"] and machine["numpy"] == np.__version__
    from urbanln_bench import results
    frame = results.load(store)
    assert set(frame.machine) == {f"{cpu_model()} ({record['machine']['probe']['isa']})"}


def test_records_keep_ridge_scores_and_each_seeds_test_predictions(store: Path):
    from urbanln_bench.compare import paired_difference
    from urbanln_bench.metrics import regression_metrics
    from urbanln_bench.records import load_record

    oracle = load_record(store / "synthetic-tiny/NY/oracle-latents/Pop_SI_random.json")
    hist = load_record(store / "synthetic-tiny/NY/color-histogram/Pop_SI_random.json")
    for seed in oracle.per_seed:
        stored = seed["predictions"]
        assert len(stored["ids"]) == len(stored["y"]) == len(stored["mlp"]) == len(stored["ridge"]) == seed["n_test"]
        for probe, key in (("mlp", "r2"), ("ridge", "ridge_r2")):  # the stored predictions give the stored R²
            assert regression_metrics(np.array(stored["y"]), np.array(stored[probe]))["r2"] == pytest.approx(
                seed[key], abs=1e-5)
        assert seed["ridge_alpha"] > 0
    assert oracle.metrics["ridge_r2"].n == 2 and oracle.probe["ridge"]["selection"] == "validation MSE"
    diff = paired_difference(oracle, hist)  # same splits: comparable region by region
    assert diff is not None and diff.seeds == 2
    assert diff.diff == pytest.approx(oracle.metrics["r2"].mean - hist.metrics["r2"].mean, abs=1e-5)


def test_spectrum_summary_measures_collapse():
    from urbanln_bench.runner import spectrum_summary

    rng = np.random.default_rng(0)
    full = spectrum_summary(rng.normal(size=(400, 8)))
    assert 7.0 < full["participation_ratio"] <= 8.0 and full["components_99"] == 8
    collapsed = spectrum_summary(np.outer(rng.normal(size=400), rng.normal(size=8)) + 1e-6 * rng.normal(size=(400, 8)))
    assert collapsed["participation_ratio"] < 1.01 and collapsed["components_90"] == 1
    assert spectrum_summary(np.ones((5, 3)))["participation_ratio"] == 0.0


def test_same_split_for_sv_and_si(store: Path):
    sv = json.loads((store / "synthetic-tiny/NY/oracle-latents/Pop_SV_random.json").read_text())
    si = json.loads((store / "synthetic-tiny/NY/oracle-latents/Pop_SI_random.json").read_text())
    # SV drops regions without street views from the same underlying split, so SI has more test regions
    assert si["per_seed"][0]["n_test"] >= sv["per_seed"][0]["n_test"]
    assert si["split"]["labelled_regions"] == sv["split"]["labelled_regions"]


def test_oracle_beats_colour_histogram(store: Path):
    oracle = json.loads((store / "synthetic-tiny/NY/oracle-latents/Pop_SI_random.json").read_text())
    hist = json.loads((store / "synthetic-tiny/NY/color-histogram/Pop_SI_random.json").read_text())
    assert oracle["metrics"]["r2"]["mean"] > hist["metrics"]["r2"]["mean"]


def test_rerun_reuses_and_overwrite_policies(store: Path):
    outcomes = run(options(store), log=lambda m: None)
    assert all(o.reused for o in outcomes)
    outcomes = run(options(store, seeds=[0, 1, 2]), log=lambda m: None)  # another config: recomputed
    assert not any(o.reused for o in outcomes)
    with pytest.raises(UserError, match="--overwrite never forbids replacing it"):
        run(options(store, seeds=[0, 1], overwrite="never"), log=lambda m: None)
    run(options(store, seeds=[0, 1]), log=lambda m: None)  # back to the module's config


def test_corrupted_record_is_named(store: Path, tmp_path: Path):
    results = tmp_path / "results"
    run(options(results, tasks=["Pop"], imagery=["SI"]), log=lambda m: None)
    path = results / "synthetic-tiny/NY/oracle-latents/Pop_SI_random.json"
    path.write_text(path.read_text()[:100])
    with pytest.raises(CorruptRecordError, match="Pop_SI_random.json: corrupted result record"):
        run(options(results, tasks=["Pop"], imagery=["SI"]), log=lambda m: None)
    # the leaderboard names it and leaves it out instead of failing on it: the board of the other records is
    # written, and the exit status says it is incomplete
    result = cli("leaderboard", "--results", str(results), "--out", str(tmp_path / "lb.md"))
    assert result.returncode == 1 and "skipped record" in result.stderr and "Pop_SI_random.json" in result.stderr
    assert (tmp_path / "lb.md").exists()
    check = cli("leaderboard", "--results", str(results), "--out", str(tmp_path / "lb.md"), "--check")
    assert check.returncode == 1 and "Pop_SI_random.json: corrupted result record" in check.stderr


def test_leaderboard_is_deterministic_and_check_detects_staleness(store: Path, tmp_path: Path):
    text = render_leaderboard(store)
    assert text == render_leaderboard(store)
    assert "## NY — synthetic twin (`synthetic-tiny`)" in text
    assert "Oracle (true latents) (SI) *(latent oracle)*" in text and "Colour histogram (SV) *(floor)*" in text
    assert "ResNet-18 *(paper-reported)*" in text and "| — |" in text  # PG-SimCLR on NY POI
    out = tmp_path / "leaderboard.md"
    assert cli("leaderboard", "--results", str(store), "--out", str(out)).returncode == 0
    assert out.read_text() == text
    assert cli("leaderboard", "--results", str(store), "--out", str(out), "--check").returncode == 0
    out.write_text(text + "edited by hand\n")
    result = cli("leaderboard", "--results", str(store), "--out", str(out), "--check")
    assert result.returncode == 1 and "stale" in result.stderr


def test_eval_external_embeddings(store: Path, tmp_path: Path, tiny_ny: Path):
    from urbanln_bench.data.loader import CityData

    data = CityData.open(tiny_ny)
    ids = list(data.regions.ids)
    rng = np.random.default_rng(0)
    good = tmp_path / "mine.npz"
    np.savez(good, region_ids=np.asarray(ids), vectors=rng.normal(size=(len(ids), 8)).astype(np.float32))
    result = cli("eval", "--embeddings", str(good), "--imagery", "SI", "--city", "NY", "--scale", "tiny",
                 "--seeds", "0-1", "--results", str(tmp_path / "r"), "--name", "my-encoder")
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "r/synthetic-tiny/NY/file-my-encoder/Pop_SI_random.json").read_text())
    assert record["method"]["display_name"] == "my-encoder" and "external embeddings" in record["method"]["weight_source"]
    missing = tmp_path / "missing.npz"
    np.savez(missing, region_ids=np.asarray(ids[5:]), vectors=rng.normal(size=(len(ids) - 5, 8)))
    result = cli("eval", "--embeddings", str(missing), "--imagery", "SI", "--city", "NY", "--scale", "tiny",
                 "--results", str(tmp_path / "r2"))
    assert result.returncode == 2 and "5 SI region(s) of NY missing" in result.stderr
    extra = tmp_path / "extra.npz"
    np.savez(extra, region_ids=np.asarray(ids + ["nowhere"]), vectors=rng.normal(size=(len(ids) + 1, 8)))
    result = cli("eval", "--embeddings", str(extra), "--imagery", "SI", "--city", "NY", "--scale", "tiny",
                 "--results", str(tmp_path / "r3"))
    assert result.returncode == 2 and "1 region id(s) not in NY's SI regions (e.g. nowhere)" in result.stderr
    assert not (tmp_path / "r2").exists() and not (tmp_path / "r3").exists()


def test_tune_and_spatial_block_are_recorded(tmp_path: Path, tiny_ny):
    results = tmp_path / "results"
    [outcome] = run(options(results, tasks=["Pop"], imagery=["SI"], seeds=[0], tune=2), log=lambda m: None)
    record = outcome.record.to_json()
    assert record["probe"]["tune_trials"] == 2 and set(record["probe"]["tuned"]["best_params"]) == {
        "lr", "weight_decay", "dropout", "hidden"}
    [block] = run(options(results, tasks=["Pop"], imagery=["SI"], seeds=[0], strategy="spatial-block"),
                  log=lambda m: None)
    assert block.record.split["strategy"] == "spatial-block"
    assert (results / "synthetic-tiny/NY/oracle-latents/Pop_SI_spatial-block.json").exists()
    assert block.record.key != record["key"]


def test_dry_run_names_stale_and_missing_records_and_writes_nothing(store: Path):
    before = {p: p.read_bytes() for p in store.rglob("*.json")}
    outcomes = run(options(store, dry_run=True), log=lambda m: None)
    assert outcomes and all(o.reused for o in outcomes)
    outcomes = run(options(store, seeds=[0, 1, 2], dry_run=True), log=lambda m: None)  # another key: stale
    assert all(o.record is None and "would compute: a stored record has another key (stale)" in o.note for o in outcomes)
    outcomes = run(options(store, method="random-features", dry_run=True), log=lambda m: None)
    assert all(o.note.startswith("would compute: no stored record") for o in outcomes)
    assert {p: p.read_bytes() for p in store.rglob("*.json")} == before
    result = cli("run", "--method", "oracle-latents", "--city", "NY", "--scale", "tiny", "--seeds", "0,1,2",
                 "--results", str(store), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "dry run: 0 cell(s) would be reused, 6 computed" in result.stdout + result.stderr
    assert {p: p.read_bytes() for p in store.rglob("*.json")} == before


def test_verify_keys_names_records_the_current_code_would_not_reuse(store: Path, tmp_path: Path):
    import shutil

    from urbanln_bench.records import record_digest
    from urbanln_bench.verify import stale_records

    copy = tmp_path / "results"
    shutil.copytree(store, copy)
    assert stale_records(copy, profile="smoke") == []
    path = next(copy.rglob("Pop_SI_random.json"))
    record = json.loads(path.read_text())
    record["key"] = "0" * 64  # as if made by other code (which seals what it writes)
    path.write_text(json.dumps({**record, "digest": record_digest(record)}))
    assert stale_records(copy, profile="smoke") == [f"{path}: would compute: a stored record has another key (stale)"]
    result = cli("leaderboard", "--results", str(copy), "--out", str(tmp_path / "lb.md"), "--verify-keys")
    assert result.returncode == 1 and "1 stale record(s)" in result.stdout + result.stderr


def test_rekey_rewrites_only_the_key_of_a_stale_record(store: Path, tmp_path: Path):
    import shutil

    from urbanln_bench.records import record_digest
    from urbanln_bench.verify import rekey_records, stale_records

    copy = tmp_path / "results"
    shutil.copytree(store, copy)
    path = next(copy.rglob("Pop_SI_random.json"))
    original = json.loads(path.read_text())
    older = {**original, "key": "0" * 64}  # as if keyed (and sealed) by an older identity model
    path.write_text(json.dumps({**older, "digest": record_digest(older)}))
    untouched = {p: p.read_bytes() for p in copy.rglob("*.json") if p != path}
    assert rekey_records(copy, profile="smoke") == [path]
    assert json.loads(path.read_text()) == original  # the current key; metrics and the rest as they were
    assert {p: p.read_bytes() for p in copy.rglob("*.json") if p != path} == untouched
    assert stale_records(copy, profile="smoke") == []


def test_python_users_get_the_cli_frame_and_table(tmp_path: Path):
    """run_frame adds the floor, the scene-graph ceiling and the latent oracle on the run's cells; run_table is
    the table `run` prints."""
    from urbanln_bench.leaderboard import run_table
    from urbanln_bench.runner import run_frame

    results = tmp_path / "results"
    opts = options(results, method="random-features", tasks=["Pop"], imagery=["SI"], seeds=[0])
    outcomes = run(opts, log=lambda m: None)
    framed = run_frame(opts, outcomes)
    assert sorted((o.record.method.name, o.cell) for o in framed) == [
        ("color-histogram", "NY/Pop/SI"), ("oracle-latents", "NY/Pop/SI"), ("scene-graph-ceiling", "NY/Pop/SI")]
    table = run_table([o.record for o in outcomes], "NY", results)
    roles = {row.label: (row.role, row.this_run) for row in table.rows}
    assert roles["Random features (SI)"] == ("floor", True)
    assert ("oracle", False) in roles.values() and ("ceiling", False) in roles.values() and table.tasks == ["Pop"]
    oracle = next(row for row in table.rows if row.role == "oracle")
    by_name = {o.record.method.name: o.record for o in framed}
    assert oracle.r2["Pop"]["mean"] == by_name["oracle-latents"].metric("r2").mean
    assert run_frame(dataclasses.replace(opts, pretrain_city="SZ"), outcomes) == []  # transfer: no frame
    fused = options(results, method="scene-graph-ceiling-fused", tasks=["Pop"], seeds=[0])
    framed = run_frame(fused, run(fused, log=lambda m: None))  # a fused run: both imageries and the fused floor
    assert sorted((o.record.method.name, o.cell) for o in framed) == sorted(
        [(name, f"NY/Pop/{imagery}") for name in ("color-histogram", "random-features", "scene-graph-ceiling",
                                                  "oracle-latents") for imagery in ("SV", "SI")]
        + [("random-features-fused", "NY/Pop/SV+SI")])
