"""Results as data (results.py, `urbanln-bench results`) and the leaderboard's figures (figures.py): the table
a user plots from, tabulate's tables in the leaderboard's format, figures drawn byte for byte the same and
`leaderboard --check` failing on a figure that is altered, missing or left over."""

from __future__ import annotations

import io
import json
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import cli

from urbanln_bench import results
from urbanln_bench.figures import (
    GENERATOR_KEY,
    AblationFigure,
    PredictionFigure,
    SweepFigure,
    TransferFigure,
    png_generator,
    render_png,
    stale_figures,
    versions,
)
from urbanln_bench.leaderboard import build_leaderboard, render_leaderboard
from urbanln_bench.markdown import markdown_table
from urbanln_bench.records import Record, write_record

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = json.loads((REPO / "results" / "synthetic-small" / "NY" / "color-histogram" / "Crime_SI_random.json").read_text())
TEMPLATE.pop("digest", None)
SEEDS = (0, 1)
REGIONS = 24


def _write(store: Path, slug: str, display: str, task: str, *, noise: float, ours: bool = False,
           ablation_of: str = "", overrides: dict | None = None, fit_city: str = "NY", seeds=SEEDS) -> Record:
    """A sealed record of NY/<task>/SI whose seeds keep test predictions (truth shared by every method)."""
    data = json.loads(json.dumps(TEMPLATE))
    variant = display + (f" [{','.join(f'{k}={v}' for k, v in overrides.items())}]" if overrides else "")
    data["method"].update(name=slug.split("__")[0], display_name=display, variant=variant, slug=slug, role="method",
                          ours=ours, ablation_of=ablation_of, overrides=overrides or {},
                          native_imagery=["SV", "SI"] if ours else ["SI"],
                          config={"mu": 0.5} if ours else {})
    data["cell"] = {"id": f"NY/{task}/SI", "city": "NY", "task": task, "imagery": "SI"}
    data["fit_city"] = fit_city
    data["pretraining"] = {"seconds": 12.5, "steps": 40, "parameters": {"total": 1000, "trainable": 1000}}
    per_seed = []
    for seed in seeds:
        truth = np.random.default_rng(100 + seed).normal(5.0, 1.0, REGIONS)
        pred = truth + np.random.default_rng(zlib.crc32(f"{slug}/{task}/{seed}/{fit_city}".encode())).normal(0.0, noise, REGIONS)
        r2 = 1.0 - float(((truth - pred) ** 2).sum() / ((truth - truth.mean()) ** 2).sum())
        per_seed.append({"seed": seed, "r2": r2, "rmse": 0.5 + seed, "mae": 0.25, "n_test": REGIONS,
                         "predictions": {"ids": [f"r{i:02d}" for i in range(REGIONS)], "y": truth.tolist(),
                                         "mlp": pred.tolist(), "ridge": pred.tolist()}})
    data["per_seed"] = per_seed
    r2s = [s["r2"] for s in per_seed]
    data["metrics"] = {"r2": {"mean": float(np.mean(r2s)), "std": float(np.std(r2s, ddof=1)), "n": len(seeds)},
                       "rmse": {"mean": 1.0, "std": 0.1, "n": len(seeds)}, "mae": {"mean": 0.5, "std": 0.1,
                                                                                  "n": len(seeds)}}
    data["split"] = {"strategy": "random", "seeds": list(seeds), "digests": {str(s): f"d{s}" for s in seeds}}
    record = Record.from_json(data, slug)
    folder = slug if fit_city == "NY" else f"{slug}__from-{fit_city}"
    write_record(store / "synthetic-small" / "NY" / folder / f"{task}_SI_random.json", record)
    return record


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """UrbanLN, two baselines, one ablation, a μ sweep and a transfer record (pretrained on SZ), NY SI."""
    root = tmp_path_factory.mktemp("store") / "results"
    for task in ("Pop", "Crime"):
        _write(root, "urbanln", "UrbanLN", task, noise=0.4, ours=True)
        _write(root, "tile2vec", "Tile2Vec", task, noise=0.6)
        _write(root, "resnet18", "ResNet-18", task, noise=0.9)
        _write(root, "urbanln-no-ipsi", "UrbanLN w/o IPSI", task, noise=0.5, ours=True, ablation_of="urbanln")
        for mu in (0.3, 0.7):
            _write(root, f"urbanln__mu={mu}", "UrbanLN", task, noise=0.45, ours=True, overrides={"mu": mu})
    _write(root, "urbanln", "UrbanLN", "Pop", noise=0.7, ours=True, fit_city="SZ")
    return root


# -- results as data -------------------------------------------------------------------------------------------

def test_load_gives_one_row_per_record_and_seed_with_its_provenance(store: Path):
    frame = results.load(store)
    assert list(frame.columns) == list(results.COLUMNS)
    assert len(frame) == 13 * len(SEEDS)  # 13 records × 2 probe seeds
    record = Record.from_json(json.loads((store / "synthetic-small/NY/tile2vec/Crime_SI_random.json").read_text()))
    row = frame[(frame.method == "tile2vec") & (frame.task == "Crime") & (frame.seed == 1)].iloc[0]
    assert row.r2 == record.per_seed[1]["r2"] and row.rmse == 1.5 and row.r2_mean == record.metrics["r2"].mean
    assert (row.city, row.data, row.scale, row.imagery, row.split_strategy, row.key, row.split_digest) == (
        "NY", "synthetic twin", "small", "SI", "random", record.key, "d1")
    assert row.pretrain_seconds == 12.5 and row.parameters == 1000 and bool(row.has_predictions)
    assert row.digest.startswith("sha256:") and row.path == "synthetic-small/NY/tile2vec/Crime_SI_random.json"
    sweep = frame[frame.settings == "mu=0.3"]
    assert len(sweep) == 4 and set(sweep.label) == {"UrbanLN+SI [mu=0.3]"} and not sweep.transfer.any()
    transfer = frame[frame.transfer]
    assert len(transfer) == 2 and set(transfer.pretrain_city) == {"SZ"} and set(transfer.city) == {"NY"}
    only = results.load(store, method=["urbanln"], task="Pop")  # the method's settings variants included
    assert len(only) == 4 * 2 and set(only.pretrain_city) == {"NY", "SZ"} and set(only.settings) == {"", "mu=0.3",
                                                                                                     "mu=0.7"}


def test_a_record_without_seeds_keeps_one_row_and_predictions_are_one_row_per_region(store: Path, tmp_path: Path):
    data = json.loads((store / "synthetic-small/NY/resnet18/Pop_SI_random.json").read_text())
    data.pop("digest")
    data["per_seed"] = []
    path = tmp_path / "synthetic-small/NY/resnet18/Pop_SI_random.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(data))
    frame = results.load(tmp_path)
    assert len(frame) == 1 and frame.seed.isna().all() and frame.r2.isna().all()
    assert frame.r2_mean.iloc[0] == data["metrics"]["r2"]["mean"] and frame.digest.isna().all()
    preds = results.predictions(store, method="tile2vec", task="Pop")
    assert len(preds) == len(SEEDS) * REGIONS and list(preds.region[:2]) == ["r00", "r01"]


@pytest.mark.parametrize("fmt", results.FORMATS)
def test_the_results_command_writes_each_format(store: Path, tmp_path: Path, fmt: str):
    import pandas as pd

    out = tmp_path / f"results.{fmt}"
    done = cli("results", "--format", fmt, "--results", str(store), "--out", str(out), "--method", "tile2vec")
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    if fmt == "csv":
        frame = pd.read_csv(io.StringIO(text))
        assert len(frame) == 4 and list(frame.columns) == list(results.COLUMNS)
        assert sorted(frame.r2) == sorted(results.load(store, method="tile2vec").r2)
    elif fmt == "json":
        rows = json.loads(text)
        assert len(rows) == 4 and set(rows[0]) == set(results.COLUMNS) and rows[0]["method"] == "tile2vec"
    else:
        lines = text.splitlines()
        assert len(lines) == 2 + 4 and lines[0].startswith("| city | data | scale |")
        assert lines[1] == "|" + "|".join(["---"] * len(results.COLUMNS)) + "|" and "| Tile2Vec |" in lines[2]
    printed = cli("results", "--format", fmt, "--results", str(store), "--method", "tile2vec")
    assert printed.returncode == 0 and printed.stdout == text


def test_the_results_command_refuses_a_bad_format_or_store(tmp_path: Path):
    bad = cli("results", "--format", "xlsx", "--results", str(tmp_path))
    assert bad.returncode == 2 and "--format must be one of csv, json, md" in bad.stderr
    missing = cli("results", "--results", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "no such folder" in missing.stderr and "Traceback" not in missing.stderr


# -- tables ----------------------------------------------------------------------------------------------------

def test_markdown_tables_keep_the_leaderboards_compact_format():
    text = markdown_table(["Method", "", "Pop R²"], [["A", "", "0.400"], ["Bee (long)", "x", "1e3"]], "llr")
    assert text == "| Method |  | Pop R² |\n|---|---|---:|\n| A |  | 0.400 |\n| Bee (long) | x | 1e3 |"
    with pytest.raises(ValueError, match="a row of 2 cells"):
        markdown_table(["a", "b", "c"], [["1", "2"]], "lll")


def test_the_committed_leaderboard_and_figures_are_what_the_committed_records_give():
    board = build_leaderboard(REPO / "results")
    assert board.text == (REPO / "leaderboard.md").read_text()
    assert stale_figures(REPO / "figures", board.figures) == []
    for figure in board.figures:
        assert f"](figures/{figure.name})" in board.text


# -- figures ---------------------------------------------------------------------------------------------------

def test_each_figure_appears_with_its_records_and_draws_the_same_bytes_twice(store: Path):
    board = build_leaderboard(store)
    kinds = {type(f): f for f in board.figures}
    assert set(kinds) == {PredictionFigure, AblationFigure, SweepFigure, TransferFigure}
    predictions = kinds[PredictionFigure]
    assert [p.task for p in predictions.panels] == ["Pop", "Crime"]
    assert [label for label, _, _ in predictions.panels[0].series] == ["UrbanLN+SI", "Tile2Vec"]  # best baseline
    sweep = kinds[SweepFigure]
    (imagery, points), = sweep.panels
    assert imagery == "SI" and [x for x, _ in points] == [0.3, 0.5, 0.7] and points[1][1][0].value == 0.0
    mu_03 = points[0][1][0]  # Pop, μ = 0.3: the ablation table's Δ cell, interval included
    assert f"{mu_03.value:+.3f} [{mu_03.low:+.3f}, {mu_03.high:+.3f}]" in board.text
    transfer = kinds[TransferFigure]
    assert transfer.sources == transfer.targets == ("SZ", "NY")  # the table's order (CITY_ORDER)
    assert transfer.values[0][0] is None and transfer.values[0][1] is not None and transfer.values[1][1] is not None
    for figure in board.figures:
        data = render_png(figure)
        assert data == render_png(figure) and data.startswith(b"\x89PNG")
        assert png_generator(data) == versions() and b"Software" not in data
        assert f"![{figure.caption}](figures/{figure.name})" in board.text
    assert render_leaderboard(store) == board.text


def test_figures_without_their_records_do_not_appear(store: Path, tmp_path: Path):
    import shutil

    shutil.copytree(store / "synthetic-small/NY/tile2vec", tmp_path / "synthetic-small/NY/tile2vec")
    shutil.copytree(store / "synthetic-small/NY/urbanln", tmp_path / "synthetic-small/NY/urbanln")
    board = build_leaderboard(tmp_path)
    assert [type(f) for f in board.figures] == [PredictionFigure] and "— ablations" not in board.text


def test_check_fails_on_a_figure_altered_missing_left_over_or_drawn_by_another_version(store: Path, tmp_path: Path):
    from PIL import Image, PngImagePlugin

    out = tmp_path / "leaderboard.md"
    done = cli("leaderboard", "--results", str(store), "--out", str(out))
    assert done.returncode == 0, done.stderr
    figures = sorted((tmp_path / "figures").glob("*.png"))
    assert len(figures) == 4 and "](figures/" in out.read_text()
    check = ["leaderboard", "--results", str(store), "--out", str(out), "--check"]
    assert cli(*check).returncode == 0
    target = figures[0]
    original = target.read_bytes()

    target.write_bytes(original[:-20] + bytes(20))  # altered
    result = cli(*check)
    assert result.returncode == 1 and f"{target}: stale" in result.stderr
    target.unlink()  # missing
    result = cli(*check)
    assert result.returncode == 1 and f"{target}: missing" in result.stderr
    info = PngImagePlugin.PngInfo()
    info.add_text(GENERATOR_KEY, "matplotlib 0.0, Pillow 0.0")
    Image.open(io.BytesIO(original)).save(target, format="PNG", pnginfo=info)  # drawn by another matplotlib
    result = cli(*check)
    assert result.returncode == 1 and "was drawn with matplotlib 0.0, Pillow 0.0 while this is matplotlib" in result.stderr
    target.write_bytes(original)
    (tmp_path / "figures" / "old-figure.png").write_bytes(original)  # no longer given by the records
    (tmp_path / "figures" / "mine.png").write_bytes(original.replace(GENERATOR_KEY.encode(), b"somebody else!!!!!!!"))
    result = cli(*check)
    assert result.returncode == 1 and "old-figure.png: no longer given by the records" in result.stderr
    assert "mine.png" not in result.stderr  # not drawn by the leaderboard: not its business
    assert cli("leaderboard", "--results", str(store), "--out", str(out)).returncode == 0
    assert not (tmp_path / "figures" / "old-figure.png").exists() and (tmp_path / "figures" / "mine.png").exists()
    assert cli(*check).returncode == 0
