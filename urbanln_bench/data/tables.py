"""Strict readers for the layout's CSV tables: every problem names the file, line and column."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from urbanln_bench.data import layout
from urbanln_bench.paths import MAX_NAME_LENGTH


@dataclass(frozen=True)
class Regions:
    """The regions of a city, in file order: ids plus grid row/col and lat/lon (NaN where absent)."""

    ids: tuple[str, ...]
    row: np.ndarray
    col: np.ndarray
    lat: np.ndarray
    lon: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def index(self) -> dict[str, int]:
        return {rid: i for i, rid in enumerate(self.ids)}

    @property
    def grid(self) -> np.ndarray:
        """(n, 2) float row/col; NaN for regions given by lat/lon only."""
        return np.stack([self.row, self.col], axis=1)


def _float(text: str) -> float:
    text = text.strip()
    if text == "" or text.lower() in ("nan", "na", "null", "none"):
        return math.nan
    return float(text)


def read_csv_rows(path: Path, problems: list[str]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a CSV file; unreadable files and ragged rows are reported to ``problems``."""
    try:
        # utf-8-sig: a byte-order mark (spreadsheets write one) is not part of the first column's name
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                problems.append(f"{path}: empty file (expected a header line)")
                return [], []
            header = [h.strip() for h in header]
            if len(header) == 1:
                for delimiter in (";", "\t", "|"):
                    if delimiter in header[0]:
                        shown = "tab" if delimiter == "\t" else f"'{delimiter}'"
                        problems.append(f"{path}: the header is one column separated by {shown}; the layout's "
                                        "tables are comma-separated (save as CSV with ',' as the delimiter)")
                        return [], []
            rows = []
            for line_no, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) != len(header):
                    problems.append(f"{path}:{line_no}: {len(row)} fields, header has {len(header)}")
                    continue
                rows.append(row)
            return header, rows
    except FileNotFoundError:
        problems.append(f"{path}: missing file")
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        problems.append(f"{path}: unreadable: {exc}")
    return [], []


def read_regions(path: Path, problems: list[str]) -> Regions:
    header, rows = read_csv_rows(path, problems)
    if not header:
        return Regions((), *(np.zeros(0) for _ in range(4)))
    for col in header:
        if col not in layout.REGION_COLUMNS:
            problems.append(f"{path}: unknown column '{col}' (allowed: {', '.join(layout.REGION_COLUMNS)})")
    if "region_id" not in header:
        problems.append(f"{path}: missing column 'region_id'")
        return Regions((), *(np.zeros(0) for _ in range(4)))
    has_grid = "row" in header and "col" in header
    has_geo = "lat" in header and "lon" in header
    if not (has_grid or has_geo):
        problems.append(f"{path}: needs columns row,col or lat,lon (or both)")
    position = {name: header.index(name) for name in header}
    ids: list[str] = []
    seen: dict[str, int] = {}
    values = {name: [] for name in ("row", "col", "lat", "lon")}
    for line_no, row in enumerate(rows, start=2):
        rid = row[position["region_id"]].strip()
        if not layout.REGION_ID_PATTERN.match(rid) or rid.startswith(".") or len(rid) > MAX_NAME_LENGTH:
            problems.append(f"{path}:{line_no}: region_id '{rid[:MAX_NAME_LENGTH]}' must use only letters, digits, "
                            f"_ - . (not first), at most {MAX_NAME_LENGTH} characters: it names image files")
        if rid in seen:
            problems.append(f"{path}:{line_no}: duplicate region_id '{rid}' (first on line {seen[rid]})")
            continue
        seen[rid] = line_no
        ids.append(rid)
        for name in values:
            if name not in position:
                values[name].append(math.nan)
                continue
            try:
                values[name].append(_float(row[position[name]]))
            except ValueError:
                problems.append(f"{path}:{line_no}: column '{name}' of region '{rid}': not a number: {row[position[name]]!r}")
                values[name].append(math.nan)
    return Regions(tuple(ids), *(np.asarray(values[n], dtype=float) for n in ("row", "col", "lat", "lon")))


def read_region_matrix(
    path: Path, region_index: dict[str, int], problems: list[str], *, allowed_columns: list[str] | None = None,
    required_columns: list[str] | None = None, what: str = "value", non_negative: bool = True,
) -> tuple[list[str], np.ndarray]:
    """A ``region_id,<col>...`` table as an (n_regions, n_cols) float array aligned with the regions (NaN = absent)."""
    header, rows = read_csv_rows(path, problems)
    if not header:
        return [], np.full((len(region_index), 0), np.nan)
    if "region_id" not in header:
        problems.append(f"{path}: missing column 'region_id'")
        return [], np.full((len(region_index), 0), np.nan)
    columns = [h for h in header if h != "region_id"]
    if allowed_columns is not None:
        for col in columns:
            if col not in allowed_columns:
                from urbanln_bench.registry import suggest

                problems.append(
                    f"{path}: unknown column '{col}'{suggest(col, allowed_columns)}; allowed: {', '.join(allowed_columns)}"
                )
    for col in required_columns or []:
        if col not in columns:
            problems.append(f"{path}: missing column '{col}'")
    matrix = np.full((len(region_index), len(columns)), np.nan)
    id_pos = header.index("region_id")
    seen: dict[str, int] = {}
    for line_no, row in enumerate(rows, start=2):
        rid = row[id_pos].strip()
        if rid not in region_index:
            problems.append(f"{path}:{line_no}: region_id '{rid}' is not in {layout.REGIONS}")
            continue
        if rid in seen:
            problems.append(f"{path}:{line_no}: duplicate region_id '{rid}' (first on line {seen[rid]})")
            continue
        seen[rid] = line_no
        j = 0
        for pos, col in enumerate(header):
            if col == "region_id":
                continue
            text = row[pos]
            try:
                value = _float(text)
            except ValueError:
                problems.append(f"{path}:{line_no}: column '{col}' of region '{rid}': not a number: {text!r}")
                value = math.nan
            if math.isinf(value):
                problems.append(f"{path}:{line_no}: column '{col}' of region '{rid}': infinite {what}")
                value = math.nan
            elif non_negative and value < 0:
                problems.append(f"{path}:{line_no}: column '{col}' of region '{rid}': negative {what} {value:g}")
            matrix[region_index[rid], j] = value
            j += 1
    for j, col in enumerate(columns):
        if matrix.shape[0] and np.all(np.isnan(matrix[:, j])):
            problems.append(f"{path}: column '{col}' has no values (NaN or empty in every row)")
    return columns, matrix
