"""Tamper-evident result stores: audit the records' content digests and seal the unsealed ones.

Every record is written with a digest of its own content (``records.record_digest``), so a number
edited by hand with the key kept no longer matches and every reader refuses the file, naming it.
``leaderboard --check`` also refuses records without a digest (unsealed: written before digests, or
hand-made), because nothing shows that their numbers are what a run wrote. ``leaderboard --seal``
adds the digest to such records once a maintainer has checked them (docs/identity.md#tamper-evident-records).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from urbanln_bench.cache import atomic_write_text
from urbanln_bench.records import (
    DIGEST_FIELD,
    CorruptRecordError,
    TamperedRecordError,
    corrupt_records,
    load_record,
    record_digest,
    record_files,
    record_text,
)


@dataclass
class StoreAudit:
    """What ``audit_store`` found: records that cannot be trusted (tampered or corrupt) and unsealed ones."""

    records: int = 0
    problems: list[str] = field(default_factory=list)  # one message per bad file, naming it
    unsealed: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.unsealed

    def lines(self) -> list[str]:
        return self.problems + [f"{path}: unsealed record (no content digest); check it, then run "
                                "`urbanln-bench leaderboard --seal`" for path in self.unsealed]


def sealed_artifacts(results: Path) -> list[tuple[Path, Callable[[Path], object]]]:
    """Every sealed file of ``results`` besides its records, with the loader that verifies it: case-study
    artifacts (``case_study.py``) and stored measurements (``measurements.py``). Both are written sealed, so
    one that cannot be read, or was edited, is a problem of the store as a record would be."""
    from urbanln_bench.case_study import case_study_files, load_case_study
    from urbanln_bench.measurements import load_measurement, measurement_files

    return ([(path, load_case_study) for path in case_study_files(results)]
            + [(path, load_measurement) for path in measurement_files(results)])


def _failures(files: list[tuple[Path, Callable[[Path], object]]], error: type[CorruptRecordError]) -> list[str]:
    """One message per file whose loader raises ``error``; other unreadable files are someone else's count."""
    problems = []
    for path, load in files:
        try:
            load(path)
        except error as exc:
            problems.append(str(exc))
        except CorruptRecordError:
            continue
    return problems


def audit_store(results: Path) -> StoreAudit:
    """Read every record of ``results`` and every other sealed file (``sealed_artifacts``); never stops at the
    first bad one."""
    audit = StoreAudit()
    audit.problems += _failures(sealed_artifacts(results), CorruptRecordError)
    for path in record_files(results):
        audit.records += 1
        try:
            record = load_record(path)
        except CorruptRecordError as exc:
            audit.problems.append(str(exc))
            continue
        if record.digest is None:
            audit.unsealed.append(path)
    return audit


def corrupt_store(results: Path) -> list[str]:
    """One message per file of ``results`` that cannot be read: records (which the leaderboard then leaves
    out) and the other sealed files."""
    return corrupt_records(results) + _failures(sealed_artifacts(results), CorruptRecordError)


def tampered_records(results: Path) -> list[str]:
    """One message per record or other sealed file of ``results`` edited after it was written (its digest no
    longer matches): unlike a file that cannot be read, which the leaderboard names and leaves out, an edited
    one stops it."""
    files = [(path, load_record) for path in record_files(results)]
    return _failures(sealed_artifacts(results) + files, TamperedRecordError)


def seal_record(path: Path) -> None:
    """Add the content digest to one valid, unsealed record; its other bytes stay as they were written."""
    data = json.loads(path.read_text())
    data[DIGEST_FIELD] = record_digest(data)
    atomic_write_text(path, record_text(data))


def seal_store(results: Path, unsealed: list[Path]) -> list[Path]:
    """Seal ``unsealed`` (from ``audit_store``); returns them."""
    for path in unsealed:
        if not path.resolve().is_relative_to(results.resolve()):
            raise CorruptRecordError(f"{path}: not under the result store {results}")
        seal_record(path)
    return list(unsealed)
