"""The CI regression gate: OK on the committed references, FAIL with a broken probe."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from urbanln_bench.errors import UserError
from urbanln_bench.regress import changelog_hash, references_hash, regress

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    folder = tmp_path / "regress"
    shutil.copytree(REPO / "regress", folder)
    return folder


def test_committed_references_have_a_changelog_line():
    assert changelog_hash(REPO / "regress") == references_hash(REPO / "regress" / "reference")


def test_oracle_matches_reference(suite: Path, tiny_ny):
    rows = regress(suite, methods=("oracle-latents",), log=lambda m: None)
    assert rows and {r.grade for r in rows} == {"OK"}


def test_broken_probe_fails(suite: Path, tiny_ny, monkeypatch):
    import urbanln_bench.probe as probe

    original = probe._prepare

    def broken(X, y, split_indices, region_ids):
        data = original(X, y, split_indices, region_ids)
        rng = np.random.default_rng(0)
        return type(data)(**{**data.__dict__, "t_train": rng.permutation(data.t_train)})

    monkeypatch.setattr(probe, "_prepare", broken)
    rows = regress(suite, methods=("oracle-latents",), log=lambda m: None)
    assert any(r.grade == "FAIL" for r in rows if r.metric == "r2")


def test_moved_reference_without_changelog_is_refused(suite: Path):
    path = next((suite / "reference").rglob("Pop_SI_random.json"))
    path.write_text(path.read_text().replace('"mean": 0.', '"mean": 0.1', 1))
    with pytest.raises(UserError, match="changed without a line in"):
        regress(suite, methods=("oracle-latents",), log=lambda m: None)


def _perturbed(reference: Path, out: Path, shifts: dict[str, float]) -> Path:
    """A copy of the reference records with the mean R² of every cell of some methods shifted."""
    import json

    shutil.copytree(reference, out)
    for path in out.rglob("*.json"):
        record = json.loads(path.read_text())
        shift = shifts.get(record["method"]["slug"])
        if shift:
            record["metrics"]["r2"]["mean"] += shift
            path.write_text(json.dumps(record))
    return out


def test_tolerance_follows_what_the_number_depends_on(suite: Path, tmp_path: Path):
    """A floor or the oracle is held to the probe's rounding; a trained method to [tolerance]."""
    from urbanln_bench.regress import compare, load_suite

    loaded = load_suite(suite)
    results = _perturbed(suite / "reference", tmp_path / "results",
                         {"oracle-latents": 5e-6, "color-histogram": 5e-7, "resnet18": 5e-3})
    grades = {(r.method, r.metric): r.grade for r in compare(loaded, suite / "reference", results)}
    assert grades[("oracle-latents", "r2")] == "FAIL"  # 5e-6 is far past float32 rounding
    assert grades[("color-histogram", "r2")] == "OK"
    assert grades[("resnet18", "r2")] == "OK"  # a trained method: within ok = .01
    assert grades[("oracle-latents", "rmse")] == "OK"


def test_method_tolerance_for_a_method_outside_the_suite_is_refused(suite: Path):
    from urbanln_bench.regress import load_suite

    toml = suite / "suite.toml"
    toml.write_text(toml.read_text() + 'tile2vec = { ok = 1e-6, warn = 1e-6 }\n')
    with pytest.raises(UserError, match="not in the suite: tile2vec"):
        load_suite(suite)


def test_update_of_one_method_keeps_the_other_references(suite: Path, tiny_ny):
    before = {p.relative_to(suite / "reference"): p.read_bytes() for p in (suite / "reference").rglob("*.json")}
    regress(suite, update=True, reason="test", methods=("oracle-latents",), log=lambda m: None)
    after = {p.relative_to(suite / "reference"): p.read_bytes() for p in (suite / "reference").rglob("*.json")}
    assert set(after) == set(before)  # resnet18, the floors and random-features are still there
    assert all(after[p] == before[p] for p in before if "oracle-latents" not in p.parts)
    assert changelog_hash(suite) == references_hash(suite / "reference")
