"""Paired comparisons (compare.py): bootstrap intervals that find real differences and call noise a tie."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from urbanln_bench.compare import compare_cell, mean_ranks, paired_difference, predictions
from urbanln_bench.metrics import regression_metrics
from urbanln_bench.records import Record

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = json.loads((REPO / "results" / "synthetic-small" / "NY" / "color-histogram" / "Crime_SI_random.json").read_text())
TEMPLATE.pop("digest", None)  # the tests edit copies of it: made-up records, unsealed


def _record(label: str, per_seed_pred: dict[int, np.ndarray], y: dict[int, np.ndarray]) -> Record:
    """A record of one cell whose seeds carry the given test predictions (and the R² they give)."""
    data = json.loads(json.dumps(TEMPLATE))
    data["method"]["variant"] = label
    data["cell"] = {"id": "NY/Crime/SI", "city": "NY", "task": "Crime", "imagery": "SI"}
    per_seed = []
    for seed, pred in per_seed_pred.items():
        r2 = regression_metrics(y[seed], pred)["r2"]
        ids = [f"r{seed:03d}c{i:03d}" for i in range(len(pred))]
        per_seed.append({"seed": seed, "r2": r2, "rmse": 1.0, "mae": 1.0, "predictions": {
            "ids": ids, "y": y[seed].tolist(), "mlp": pred.tolist(), "ridge": pred.tolist()}})
    data["per_seed"] = per_seed
    r2s = [s["r2"] for s in per_seed]
    data["metrics"]["r2"] = {"mean": float(np.mean(r2s)), "std": float(np.std(r2s, ddof=1)), "n": len(r2s)}
    return Record.from_json(data, label)


@pytest.fixture(scope="module")
def truth():
    rng = np.random.default_rng(0)
    return {seed: rng.normal(5.0, 1.0, 90) for seed in range(5)}


def _noisy(truth, sd: float, seed: int) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {s: y + rng.normal(0.0, sd, len(y)) for s, y in truth.items()}


def test_identical_predictions_differ_by_exactly_zero(truth):
    pred = _noisy(truth, 0.5, 1)
    diff = paired_difference(_record("a", pred, truth), _record("b", pred, truth))
    assert diff.diff == 0.0 and diff.low == 0.0 and diff.high == 0.0 and diff.tied
    assert diff.seeds == 5 and diff.regions == 450


def test_a_clearly_better_method_is_not_tied_and_the_point_estimate_is_the_mean_r2_difference(truth):
    good, bad = _record("good", _noisy(truth, 0.3, 1), truth), _record("bad", _noisy(truth, 0.9, 2), truth)
    diff = paired_difference(good, bad)
    assert diff.low > 0.2 and not diff.tied
    assert diff.diff == pytest.approx(good.metrics["r2"].mean - bad.metrics["r2"].mean, abs=1e-12)
    assert paired_difference(bad, good).high < -0.2


def _jittered(preds: dict[int, np.ndarray], sd: float, seed: int) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {s: p + rng.normal(0.0, sd, len(p)) for s, p in preds.items()}


def test_two_nearly_identical_methods_are_tied(truth):
    pred = _noisy(truth, 0.6, 1)
    a, b = _record("a", pred, truth), _record("b", _jittered(pred, 0.05, 2), truth)
    assert paired_difference(a, b).tied


def test_the_interval_is_deterministic_and_narrower_when_paired(truth):
    a, b = _record("a", _noisy(truth, 0.5, 1), truth), _record("b", _noisy(truth, 0.55, 2), truth)
    assert paired_difference(a, b) == paired_difference(a, b)


def test_records_without_predictions_or_on_other_splits_are_not_compared(truth):
    a = _record("a", _noisy(truth, 0.5, 1), truth)
    data = json.loads(json.dumps(TEMPLATE))
    data.pop("digest", None)
    for seed in data["per_seed"]:
        seed.pop("predictions", None)  # a record made before records kept their test predictions
    bare = Record.from_json(data, "bare")
    assert predictions(bare) == {} and paired_difference(a, bare) is None
    shifted = {s: np.roll(y, 1) for s, y in truth.items()}  # other test regions' targets: another split
    assert paired_difference(a, _record("b", _noisy(shifted, 0.5, 2), shifted)) is None


def test_compare_cell_names_the_winner_and_its_ties(truth):
    best = _noisy(truth, 0.3, 1)
    records = {"best": _record("best", best, truth),
               "close": _record("close", _jittered(best, 0.03, 2), truth),
               "far": _record("far", _noisy(truth, 1.0, 3), truth)}
    cell = compare_cell(records)
    assert cell.winner == min(("best", "close"), key=lambda k: -records[k].metrics["r2"].mean)
    other = "close" if cell.winner == "best" else "best"
    assert cell.tied(other) and not cell.tied("far")


def test_mean_ranks_order_methods_and_give_intervals(truth):
    cells = []
    for k in range(4):
        cells.append({"best": _record("best", _noisy(truth, 0.3, 10 + k), truth),
                      "mid": _record("mid", _noisy(truth, 0.7, 20 + k), truth),
                      "worst": _record("worst", _noisy(truth, 1.5, 30 + k), truth)})
    ranks = mean_ranks(cells, n_bootstrap=500)
    assert ranks["best"].mean == 1.0 and ranks["mid"].mean == 2.0 and ranks["worst"].mean == 3.0
    assert ranks["best"].high < ranks["mid"].low and ranks["best"].cells == 4


def test_the_leaderboard_marks_the_winner_its_ties_and_ranks(truth, tmp_path: Path):
    from urbanln_bench.leaderboard import render_leaderboard
    from urbanln_bench.records import write_record

    best = _noisy(truth, 0.3, 1)
    for label, pred in (("Alpha", best), ("Beta", _jittered(best, 0.03, 2)), ("Gamma", _noisy(truth, 1.0, 3))):
        record = _record(label, pred, truth)
        data = record.to_json()
        data["method"].update(role="method", name=label.lower(), slug=label.lower(), display_name=label,
                              native_imagery=["SI"])
        write_record(tmp_path / "synthetic-small" / "NY" / label.lower() / "Crime_SI_random.json",
                     Record.from_json(data, label))
    text = render_leaderboard(tmp_path)
    rows: dict[str, str] = {}  # the city's first table (native imagery) only
    for line in text[text.index("## NY"):].splitlines():
        if line.startswith(("| Alpha", "| Beta", "| Gamma")):
            rows.setdefault(line.split(" |")[0].strip("| "), line)
    winner = "Alpha" if "**" in rows["Alpha"] else "Beta"
    other = "Beta" if winner == "Alpha" else "Alpha"
    assert "**" in rows[winner] and "≈" in rows[other] and "≈" not in rows["Gamma"] and "**" not in rows["Gamma"]
    assert "Compared on 1 of 3 tasks" in text
    overall = text[text.index("## All cities — summary (`synthetic-small`"):text.index("## NY")]
    gamma = next(line for line in overall.splitlines() if line.startswith("| Gamma |"))
    assert [c.strip() for c in gamma.strip("|").split("|")][2:] == ["3.00", "[3.00, 3.00]", "0", "0", "1", "NY"]
    leader = next(line for line in overall.splitlines() if line.startswith(f"| {winner} |"))
    assert [c.strip() for c in leader.strip("|").split("|")][4:7] == ["1", "0", "1"]  # 1 win, no tie, 1 cell


def _named(name: str, role: str, pred: dict[int, np.ndarray], truth: dict[int, np.ndarray]) -> Record:
    data = _record(name, pred, truth).to_json()
    data["method"].update({"name": name, "slug": name, "role": role})
    data.pop("digest", None)
    return Record.from_json(data, name)


def test_the_learning_check_counts_cells_won_against_the_starting_weights_and_random_features(truth):
    from urbanln_bench.leaderboard import Row, _learning_check

    trained = _named("tile2vec", "method", _noisy(truth, 0.4, 1), truth)
    start = _named("tile2vec-start", "start", _noisy(truth, 0.9, 2), truth)  # clearly worse: a win
    random = _named("random-features", "floor", _noisy(truth, 0.4, 1), truth)  # the same predictions: a tie

    def row(label: str, role: str) -> Row:
        return Row(label, "SI", role, False, "", "random", True)

    def metrics(record: Record) -> dict:
        return {"Crime": {"r2": {"mean": record.metrics["r2"].mean}, "record": record}}

    rows = {row("Tile2Vec", "method"): metrics(trained), row("Tile2Vec (starting weights)", "start"): metrics(start),
            row("Random features", "floor"): metrics(random)}
    methods = {r: v for r, v in rows.items() if r.role == "method"}
    lines = _learning_check(rows, methods, ["Crime"])
    line = next(x for x in lines if x.startswith("| Tile2Vec |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2] == "1 / 1" and cells[3] == "0 / 1"
    expected = paired_difference(trained, start)
    assert cells[4] == expected.text() and expected.low > 0


def test_the_split_agreement_is_the_rank_correlation_of_the_two_strategies():
    from urbanln_bench.leaderboard import Row, _split_agreement

    def rows_for(strategy: str, values: dict[str, float]) -> dict:
        return {Row(label, "SI", "method", False, "", strategy, True): {"Pop": {"r2": {"mean": v}}}
                for label, v in values.items()}

    random = rows_for("random", {"A": 0.5, "B": 0.4, "C": 0.3})
    same_order = rows_for("spatial-block", {"A": 0.3, "B": 0.2, "C": 0.1})
    lines = _split_agreement({**random, **same_order}, ["Pop"])
    assert lines[-1] == "| Pop | +1.00 (3) | +0.200 |"
    reversed_order = rows_for("spatial-block", {"A": 0.1, "B": 0.2, "C": 0.3})
    assert _split_agreement({**random, **reversed_order}, ["Pop"])[-1] == "| Pop | -1.00 (3) | +0.200 |"
    assert _split_agreement(random, ["Pop"]) == []  # no spatial-block records: no table


def _subset(record: Record, keep: int) -> Record:
    """The record as a street-view method would have it: the first ``keep`` test regions of every seed."""
    data = record.to_json()
    data.pop("digest", None)
    for seed in data["per_seed"]:
        stored = seed["predictions"]
        for field in ("ids", "y", "mlp", "ridge"):
            stored[field] = stored[field][:keep]
        seed["r2"] = regression_metrics(np.asarray(stored["y"]), np.asarray(stored["mlp"]))["r2"]
    r2s = [seed["r2"] for seed in data["per_seed"]]
    data["metrics"]["r2"] = {"mean": float(np.mean(r2s)), "std": float(np.std(r2s, ddof=1)), "n": len(r2s)}
    return Record.from_json(data, "subset")


def test_methods_on_overlapping_test_regions_are_compared_and_scored_on_their_own(truth):
    """A street-view method's test regions are a subset of the satellite method's: the comparison draws
    from their union, so each keeps its own full-data R² and the shared regions are paired."""
    good, bad = _record("good", _noisy(truth, 0.3, 1), truth), _record("bad", _noisy(truth, 0.9, 2), truth)
    sub = _subset(bad, 80)
    diff = paired_difference(good, sub)
    assert diff is not None and diff.low > 0.2 and diff.regions == 450 and diff.shared == 400
    assert diff.diff == pytest.approx(good.metrics["r2"].mean - sub.metrics["r2"].mean, abs=1e-12)
    same = paired_difference(good, _subset(good, 80))  # the same predictions on fewer regions: a tie
    assert same.tied
    ranks = mean_ranks([{"good": good, "sub": sub}], n_bootstrap=200)
    assert ranks["good"].mean == 1.0 and ranks["sub"].mean == 2.0 and ranks["sub"].cells == 1
    shifted = {s: np.roll(y, 1) for s, y in truth.items()}  # the same region ids, other targets: another split
    other = _record("other", _noisy(shifted, 0.5, 3), shifted)
    assert paired_difference(good, other) is None
    assert set(mean_ranks([{"good": good, "other": other, "sub": sub}], n_bootstrap=50)) == {"good", "sub"}


def test_kept_draws_give_the_intervals_of_fresh_ones(truth, monkeypatch):
    """paired_difference keeps each seed's draw by the chain of union sizes before it (compare._DRAWS) and each
    record's score on it (compare._SCORES): the interval is the same whether its draws were computed here,
    kept from an earlier pair, or replayed after the generator's state was evicted; against a plain generator
    drawing seed after seed as before."""
    from urbanln_bench import compare

    def fresh_interval(a: Record, b: Record) -> tuple[float, float]:
        pa, pb = predictions(a), predictions(b)
        rng = np.random.default_rng(compare.BOOTSTRAP_SEED)
        replicates = np.zeros(compare.N_BOOTSTRAP)
        for s in sorted(pa):
            draw = compare._SeedDraw([pa[s], pb[s]])
            draw.draw(rng, compare.N_BOOTSTRAP)
            replicates += draw.score(pa[s]) - draw.score(pb[s])
        low, high = np.quantile(replicates / len(pa), [0.025, 0.975])
        return float(low), float(high)

    short = {s: y[: 60 + s] for s, y in truth.items()}  # another union size per seed: a chain of its own
    cases = [(_record("a", _noisy(t, 0.5, 1), t), _record("b", _noisy(t, 0.7, 2), t)) for t in (truth, short)]
    expected = [fresh_interval(a, b) for a, b in cases]
    for limit in (512 * 2**20, 1):  # everything kept; nothing but the last draw kept
        monkeypatch.setattr(compare, "_DRAWS", compare._Kept(limit, size=lambda kept: kept[0].nbytes))
        monkeypatch.setattr(compare, "_SCORES", compare._Kept(4096))  # kept scores would skip the draws
        for _ in range(2):  # computed, then kept (or replayed)
            for (a, b), (low, high) in zip(cases, expected, strict=True):
                diff = paired_difference(a, b)
                assert (diff.low, diff.high) == (low, high)
    assert len(compare._DRAWS.items) == 1
