"""The typed result record: every committed record reads and writes back unchanged; bad files are
named with the field that is wrong; newer schemas are refused, older ones migrated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from urbanln_bench import records
from urbanln_bench.records import SCHEMA, CorruptRecordError, Record, load_record

REPO = Path(__file__).resolve().parents[1]


def _committed() -> list[Path]:
    return records.record_files(REPO / "results")  # stored measurements (profiles/, captions/) and case studies are not records


def test_every_committed_record_round_trips():
    paths = _committed()
    assert len(paths) > 100
    for path in paths:
        data = json.loads(path.read_text())
        record = load_record(path)
        again = record.to_json()
        # fields added within schema 1 come back with their defaults; everything else is as written
        assert record.digest == data["digest"], path  # every committed record is sealed (leaderboard --seal)
        for key, value in data.items():
            if key == "digest":
                continue  # not content: write_record seals what to_json gives with a fresh digest
            if key == "method":
                assert {k: v for k, v in again["method"].items() if k in value} == value, path
            else:
                assert again[key] == value, (path, key)
        assert Record.from_json(again, str(path)) == record


def _one() -> dict:
    return json.loads(_committed()[0].read_text())


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.pop("metrics"), "missing metrics"),
    (lambda d: d["metrics"]["r2"].update(mean="high"), "metrics.r2.mean missing or not a number"),
    (lambda d: d["method"].pop("variant"), "field 'method.variant' missing"),
    (lambda d: d.update(schema="1"), "field 'schema' missing or not an integer"),
])
def test_bad_records_name_the_file_and_the_field(change, message, tmp_path: Path):
    data = _one()
    change(data)
    path = tmp_path / "Pop_SI_random.json"
    path.write_text(json.dumps(data))
    with pytest.raises(CorruptRecordError, match=message) as info:
        load_record(path)
    assert str(path) in str(info.value)


def test_a_newer_schema_is_refused_and_an_older_one_migrated(monkeypatch):
    data = _one()
    with pytest.raises(CorruptRecordError, match="newer than this urbanln-bench reads"):
        Record.from_json({**data, "schema": SCHEMA + 1}, "x.json")
    old = {**data, "schema": 0, "outcome": data["metrics"]}
    del old["metrics"], old["digest"]  # a made-up old record: it has no digest of its own

    def to_one(record: dict) -> dict:  # e.g. a field renamed between schemas
        record["metrics"] = record.pop("outcome")
        return {**record, "schema": 1}

    monkeypatch.setitem(records.MIGRATIONS, 0, to_one)
    assert Record.from_json(old, "old.json") == Record.from_json(data, "new.json")
    monkeypatch.delitem(records.MIGRATIONS, 0)
    with pytest.raises(CorruptRecordError, match="no migration"):
        Record.from_json(old, "old.json")
