"""Tamper-evident records (issue 15): a record edited by hand, key kept, is named by `leaderboard --check`
and refused by every reader; unsealed records fail `--check`; `--seal` refuses while anything else is wrong.
Each hostile input asserts the exit code, the message, no traceback and nothing written
(docs/hostile-inputs.md)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import cli

from urbanln_bench.records import DIGEST_FIELD, TamperedRecordError, load_record, record_digest, write_record

REPO = Path(__file__).resolve().parents[1]
NY_RECORDS = REPO / "results" / "synthetic-small" / "NY"


def _store(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A small sealed store (NY's floors and ResNet-18) and its leaderboard, written by the CLI."""
    results = tmp_path / "results"
    for slug in ("color-histogram", "resnet18"):
        shutil.copytree(NY_RECORDS / slug, results / "synthetic-small" / "NY" / slug)
    out = tmp_path / "leaderboard.md"
    done = cli("leaderboard", "--results", str(results), "--out", str(out))
    assert done.returncode == 0, done.stderr
    return results, out, results / "synthetic-small" / "NY" / "resnet18" / "Pop_SI_random.json"


def _snapshot(*roots: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for root in roots for p in sorted(root.rglob("*")) if p.is_file()} if roots else {}


def _edit(path: Path, change: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def _shift_r2(data: dict) -> None:
    data["metrics"]["r2"]["mean"] += 0.05


def _shift_seed(data: dict) -> None:
    data["per_seed"][0]["r2"] = 0.99


def _relabel(data: dict) -> None:
    data["method"]["display_name"] = "ResNet-18 (better)"


def _new_key(data: dict) -> None:
    data["key"] = "0" * 64


TAMPERS = {"R² mean raised, key kept": _shift_r2, "one seed's R² changed": _shift_seed,
           "row label changed": _relabel, "key replaced": _new_key}


@pytest.mark.parametrize("name", list(TAMPERS))
def test_check_names_a_record_edited_by_hand(name: str, tmp_path: Path):
    results, out, record = _store(tmp_path)
    _edit(record, TAMPERS[name])
    before = _snapshot(results, out)
    check = cli("leaderboard", "--results", str(results), "--out", str(out), "--check")
    assert check.returncode == 1
    assert f"{record}: the record's content does not match its digest" in check.stderr
    assert "1 record(s)" in check.stderr and "Traceback" not in check.stderr + check.stdout
    write = cli("leaderboard", "--results", str(results), "--out", str(out))  # the plain command refuses too
    assert write.returncode == 2 and "edited after it was written" in write.stderr
    assert "Traceback" not in write.stderr + write.stdout
    assert _snapshot(results, out) == before  # nothing written


def test_an_unsealed_record_fails_check_and_seal_seals_it(tmp_path: Path):
    results, out, record = _store(tmp_path)
    _edit(record, lambda data: data.pop(DIGEST_FIELD))
    before = _snapshot(results, out)
    check = cli("leaderboard", "--results", str(results), "--out", str(out), "--check")
    assert check.returncode == 1 and f"{record}: unsealed record (no content digest)" in check.stderr
    assert "leaderboard --seal" in check.stderr and "Traceback" not in check.stderr
    assert _snapshot(results, out) == before
    seal = cli("leaderboard", "--results", str(results), "--out", str(out), "--seal")
    assert seal.returncode == 0 and "sealed 1 record(s)" in seal.stdout, seal.stderr
    assert cli("leaderboard", "--results", str(results), "--out", str(out), "--check").returncode == 0
    assert _snapshot(results, out) == before | {str(record): _snapshot(results)[str(record)]}
    assert json.loads(record.read_text())[DIGEST_FIELD] == record_digest(json.loads(record.read_text()))


@pytest.mark.parametrize("problem", ["a tampered record", "a stale leaderboard"])
def test_seal_refuses_while_check_fails_for_another_reason(problem: str, tmp_path: Path):
    results, out, record = _store(tmp_path)
    other = record.with_name("Crime_SI_random.json")
    _edit(other, lambda data: data.pop(DIGEST_FIELD))  # something to seal
    if problem == "a tampered record":
        _edit(record, _shift_r2)
        message = "not sealing: 1 record(s) cannot be trusted"
    else:
        out.write_text(out.read_text() + "edited\n")
        message = f"not sealing: {out} is stale"
    before = _snapshot(results, out)
    seal = cli("leaderboard", "--results", str(results), "--out", str(out), "--seal")
    assert seal.returncode == 1 and message in seal.stderr and "Traceback" not in seal.stderr
    assert _snapshot(results, out) == before  # nothing sealed


def test_a_malformed_digest_is_named(tmp_path: Path):
    results, out, record = _store(tmp_path)
    _edit(record, lambda data: data.update(digest="abc"))
    before = _snapshot(results, out)
    check = cli("leaderboard", "--results", str(results), "--out", str(out), "--check")
    assert check.returncode == 1 and f"{record}: corrupted result record (field 'digest'" in check.stderr
    assert _snapshot(results, out) == before


def test_a_run_refuses_to_reuse_a_tampered_record(tiny_ny: Path, tmp_path: Path):
    """The cell's stored record was edited: the run names it instead of reusing (or silently replacing) it."""
    results = tmp_path / "results"
    path = results / "synthetic-tiny" / "NY" / "color-histogram" / "Pop_SI_random.json"
    path.parent.mkdir(parents=True)
    shutil.copy(NY_RECORDS / "color-histogram" / "Pop_SI_random.json", path)
    _edit(path, _shift_r2)
    before = _snapshot(results)
    done = cli("run", "--method", "color-histogram", "--cell", "NY/Pop/SI", "--scale", "tiny", "--seeds", "0",
               "--results", str(results), "--no-frame")
    assert done.returncode == 2 and f"{path}: the record's content does not match its digest" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert _snapshot(results) == before


def test_the_digest_covers_the_content_and_not_the_key_parts(tmp_path: Path):
    """write_record seals what it writes; the seal is not content (to_json, equality) and a copy with
    the same content gets the same digest wherever it lies."""
    record = load_record(NY_RECORDS / "resnet18" / "Pop_SI_random.json")
    assert record.digest is not None and DIGEST_FIELD not in record.to_json()
    write_record(tmp_path / "a.json", record)
    again = load_record(tmp_path / "a.json")  # written with the defaults of fields added since: other content
    assert again == record and again.digest is not None
    write_record(tmp_path / "copy" / "a.json", again)
    assert load_record(tmp_path / "copy" / "a.json").digest == again.digest
    edited = json.loads((tmp_path / "a.json").read_text())
    edited["metrics"]["rmse"]["mean"] *= 1.0000001
    (tmp_path / "b.json").write_text(json.dumps(edited))
    with pytest.raises(TamperedRecordError, match="b.json"):
        load_record(tmp_path / "b.json")


def test_every_committed_record_is_sealed():
    """What `leaderboard --check` refuses first, without building the leaderboard (the text and figures are
    test_results_and_figures' and CI's): every record and every other sealed file of `results/` reads back
    with a digest that matches its content."""
    from urbanln_bench.seal import audit_store

    audit = audit_store(REPO / "results")
    assert audit.records > 100
    assert audit.ok, "\n".join(audit.lines()[:10])
