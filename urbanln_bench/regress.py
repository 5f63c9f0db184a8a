"""CI regression gate (GEO-Bench / Anserini style): re-run a pinned tiny suite and compare every
cell with committed reference records under graded tolerances (OK / WARN / FAIL).

References live in ``regress/reference/``; ``regress/CHANGELOG.md`` must end with a line naming the
hash of the current references, so a reference number cannot move without a changelog line
(``urbanln-bench regress --update --reason "..."`` writes both).

Tolerances are graded by what a cell's number depends on (docs/identity.md): a method without
trained weights (the floors, the oracle, a random network) reproduces across CPUs to the probe's
float32 rounding, so ``[method_tolerance]`` holds it to that; a trained method gets ``[tolerance]``.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import shutil
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from urbanln_bench.errors import UserError
from urbanln_bench.records import iter_records

METRICS = ("r2", "rmse", "mae")


@dataclass(frozen=True)
class Suite:
    city: str
    scale: str
    profile: str
    seeds: str
    methods: tuple[str, ...]
    tolerance: dict[str, dict[str, float]]
    method_tolerance: dict[str, dict[str, float]] = field(default_factory=dict)

    def tolerance_for(self, method: str, metric: str) -> dict[str, float]:
        """``[method_tolerance]`` (one bound for every metric) where the suite gives one, else ``[tolerance]``."""
        return self.method_tolerance.get(method) or self.tolerance[metric]


@dataclass(frozen=True)
class Comparison:
    cell: str
    method: str
    metric: str
    reference: float | None
    value: float | None
    grade: str


def load_suite(folder: Path) -> Suite:
    path = folder / "suite.toml"
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: missing (the regression suite)") from None
    try:
        suite = Suite(data["city"], data["scale"], data["profile"], data["seeds"], tuple(data["methods"]),
                      data["tolerance"], data.get("method_tolerance", {}))
    except KeyError as exc:
        raise UserError(f"{path}: missing key {exc}") from None
    unknown = sorted(set(suite.method_tolerance) - set(suite.methods))
    if unknown:
        raise UserError(f"{path}: [method_tolerance] names methods not in the suite: {', '.join(unknown)}")
    return suite


def references_hash(reference_dir: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(reference_dir.rglob("*.json")):
        record = json.loads(path.read_text())
        digest.update(path.relative_to(reference_dir).as_posix().encode())
        digest.update(json.dumps(record["metrics"], sort_keys=True).encode())
    return digest.hexdigest()[:16]


def changelog_hash(folder: Path) -> str | None:
    path = folder / "CHANGELOG.md"
    if not path.exists():
        return None
    import re

    found = re.findall(r"→ references `([0-9a-f]+)`", path.read_text())
    return found[-1] if found else None


def run_suite(suite: Suite, results: Path, methods: tuple[str, ...] | None = None, log=print) -> None:
    from urbanln_bench.runner import RunOptions, parse_seeds, run

    for method in methods or suite.methods:
        options = RunOptions(method=method, city=suite.city, scale=suite.scale, profile=suite.profile,
                             seeds=parse_seeds(suite.seeds), overwrite="always", results_dir=results)
        run(options, log=log)


def _by_cell(results: Path) -> dict[tuple[str, str], dict]:
    return {(r.method.slug, r.cell.id): r for _, r in iter_records(results)}


def grade(diff: float, tolerance: dict[str, float]) -> str:
    if diff <= tolerance["ok"]:
        return "OK"
    return "WARN" if diff <= tolerance["warn"] else "FAIL"


def compare(suite: Suite, reference_dir: Path, results: Path, methods: tuple[str, ...] | None = None) -> list[Comparison]:
    reference = _by_cell(reference_dir)
    new = _by_cell(results)
    wanted = set(methods or suite.methods)
    out = []
    for key in sorted(set(reference) | set(new)):
        slug, cell = key
        if slug not in wanted:
            continue
        for metric in METRICS:
            ref = reference[key].metric(metric).mean if key in reference else None
            val = new[key].metric(metric).mean if key in new else None
            if ref is None or val is None:
                out.append(Comparison(cell, slug, metric, ref, val, "FAIL"))
            else:
                out.append(Comparison(cell, slug, metric, ref, val, grade(abs(val - ref), suite.tolerance_for(slug, metric))))
    return out


def _replace_references(reference_dir: Path, results: Path, *, whole: bool) -> None:
    """Put the new records in place: all of them, or (``--method``) only the re-run methods' folders
    (``<tag>/<city>/<method>/``), leaving the other methods' references as they are."""
    if whole or not reference_dir.exists():
        if reference_dir.exists():
            shutil.rmtree(reference_dir)
        shutil.copytree(results, reference_dir)
        return
    for method_dir in sorted({path.parent for path in results.rglob("*.json")}):
        target = reference_dir / method_dir.relative_to(results)
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(method_dir, target)


def regress(folder: Path, *, update: bool = False, reason: str = "", methods: tuple[str, ...] | None = None,
            log=print) -> list[Comparison]:
    suite = load_suite(folder)
    reference_dir = folder / "reference"
    with tempfile.TemporaryDirectory(prefix="urbanln-regress-") as tmp:
        results = Path(tmp) / "results"
        run_suite(suite, results, methods, log=log)
        if update:
            if not reason:
                raise UserError("regress --update moves reference numbers: say why with --reason \"...\"")
            old = references_hash(reference_dir) if reference_dir.exists() else "none"
            _replace_references(reference_dir, results, whole=methods is None)
            new = references_hash(reference_dir)
            today = datetime.date.today().isoformat()
            with open(folder / "CHANGELOG.md", "a") as handle:
                handle.write(f"- {today}: {reason} — references `{old}` → references `{new}`\n")
            return []
        if not reference_dir.exists():
            raise UserError(f"{reference_dir}: no reference records; create them with `urbanln-bench regress --update`")
        recorded = changelog_hash(folder)
        actual = references_hash(reference_dir)
        if recorded != actual:
            raise UserError(f"{reference_dir}: references (hash {actual}) were changed without a line in "
                            f"{folder / 'CHANGELOG.md'} (last recorded {recorded}); use `regress --update --reason`")
        return compare(suite, reference_dir, results, methods)
