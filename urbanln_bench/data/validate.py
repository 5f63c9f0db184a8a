"""``urbanln-bench data validate PATH``: every problem of a city directory, in one report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from urbanln_bench.data import layout
from urbanln_bench.data.links import link_problems
from urbanln_bench.data.loader import load_image, read_meta, read_mobility, scan_images
from urbanln_bench.data.manifest import read_manifest, verify_manifest
from urbanln_bench.data.tables import read_region_matrix, read_regions
from urbanln_bench.errors import DataError


@dataclass
class ValidationReport:
    root: Path
    problems: list[str] = field(default_factory=list)
    regions: int = 0
    satellite_images: int = 0
    streetview_images: int = 0
    regions_without_streetview: int = 0
    labelled: dict[str, int] = field(default_factory=dict)
    source: str = "?"

    @property
    def ok(self) -> bool:
        return not self.problems


def validate_city_dir(root: str | Path, *, check_images: bool = True, check_manifest: bool = True,
                      verify: bool = False, allow_symlinks: bool = False) -> ValidationReport:
    """Check a city directory against the native layout; never stops at the first problem.

    Links that lead outside the folder are problems unless ``allow_symlinks`` (nothing is read through
    them). The manifest, when there is one, is checked against the files (``check_manifest``): by size
    and mtime, hashing the files that differ, or hashing every file with ``verify``."""
    from urbanln_bench.data.loader import known_task_names

    root = Path(root)
    report = ValidationReport(root)
    problems = report.problems
    if not root.is_dir():
        problems.append(f"{root}: not a directory")
        return report
    problems += link_problems(root, allow=allow_symlinks)
    if problems:
        return report
    if check_manifest:
        problems += _manifest_problems(root, verify)
    meta = read_meta(root, problems)
    report.source = str(meta.get("source", "?"))
    regions = read_regions(root / layout.REGIONS, problems)
    report.regions = len(regions)
    index = regions.index()
    tasks = known_task_names()
    expected = [t for t in meta.get("tasks", []) if isinstance(t, str)]
    for task in expected:
        if task not in tasks:
            problems.append(f"{root / layout.CITY_META}: tasks: unknown task '{task}'")
    columns, matrix = read_region_matrix(
        root / layout.INDICATORS, index, problems, allowed_columns=tasks, required_columns=expected, what="indicator"
    )
    for j, col in enumerate(columns):
        report.labelled[col] = int((~_isnan(matrix[:, j])).sum())
    satellite, streetview, image_problems = scan_images(root, regions.ids)
    problems += image_problems
    report.satellite_images = len(satellite)
    report.streetview_images = sum(len(v) for v in streetview.values())
    report.regions_without_streetview = sum(1 for rid in regions.ids if rid not in streetview)
    if check_images:
        paths = list(satellite.values()) + [p for images in streetview.values() for _, p in images]
        for path in paths:
            try:
                load_image(path)
            except DataError as exc:
                problems.append(str(exc))
    if (root / layout.POI_COUNTS).exists():
        read_region_matrix(root / layout.POI_COUNTS, index, problems, what="POI count")
    if (root / layout.MOBILITY).exists():
        read_mobility(root / layout.MOBILITY, index, problems)
    return report


def _manifest_problems(root: Path, verify: bool) -> list[str]:
    try:
        manifest = read_manifest(root)
    except DataError as exc:
        return [str(exc)]
    if manifest is None:
        return []
    where = root / layout.MANIFEST
    return [f"{where}: stale or forged: {line}" for line in verify_manifest(root, manifest, full=verify)]


def _isnan(values):
    import numpy as np

    return np.isnan(values)
