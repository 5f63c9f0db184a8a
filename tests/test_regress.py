"""The CI regression gate: OK on the committed references, FAIL with a broken probe (issue 3 item 10)."""

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
