"""`list`, `paper-table`, `--help`."""

from __future__ import annotations

import json

from conftest import cli

PAPER_CELLS = {
    "BJ": ["Pop", "GDP", "Night", "Com", "CO2"],
    "SH": ["Pop", "GDP", "Night", "CO2"],
    "SZ": ["Pop", "GDP", "Night", "Com", "CO2"],
    "NY": ["Pop", "Crime", "POI"],
}


def test_list_cells_is_exactly_the_papers_34():
    result = cli("list", "cells", "--json")
    assert result.returncode == 0
    cells = json.loads(result.stdout)
    expected = {f"{c}/{t}/{i}" for c, tasks in PAPER_CELLS.items() for t in tasks for i in ("SV", "SI")}
    assert len(cells) == 34 and set(cells) == expected


def test_list_plain_and_json():
    for what in ("methods", "tasks", "cities"):
        plain = cli("list", what)
        as_json = cli("list", what, "--json")
        assert plain.returncode == 0 and as_json.returncode == 0
        names = [row["name"] for row in json.loads(as_json.stdout)]
        assert names and all(name in plain.stdout for name in names)
    methods = {m["name"]: m for m in json.loads(cli("list", "methods", "--json").stdout)}
    assert {"resnet18", "random-features", "color-histogram", "oracle-latents"} <= set(methods)
    assert methods["resnet18"]["native_imagery"] == ["SI"] and methods["oracle-latents"]["role"] == "oracle"


def test_paper_table_json_and_markdown():
    records = json.loads(cli("paper-table", "NY", "--json").stdout)
    assert all(set(r) == {"city", "task", "variant", "metric", "percent"} for r in records)
    pop = {(r["variant"], r["metric"]): r["percent"] for r in records if r["task"] == "Pop"}
    assert pop[("UrbanLN+SV", "R2")] == 26.6  # (0.676 - 0.534) / 0.534, Table 8
    text = cli("paper-table", "BJ").stdout
    assert "| Improvement (UrbanLN+SI) | 10.8% |" in text
    bad = cli("paper-table", "NYC")
    assert bad.returncode == 2 and "did you mean 'NY'" in bad.stderr


def test_help_is_fast_to_import():
    import subprocess
    import sys

    heavy = ('torch', 'open_clip', 'transformers', 'PIL', 'pandas', 'matplotlib', 'tabulate')
    code = f"import sys, urbanln_bench.cli; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"  # heavy modules are imported by commands, never at start-up
    assert cli("--help").returncode == 0


def test_every_package_is_packaged():
    """A non-editable `pip install .` ships every subpackage (pyproject lists them explicitly)."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(root).parts) for p in (root / "urbanln_bench").rglob("__init__.py")}
    assert found <= listed, f"add to pyproject packages: {sorted(found - listed)}"
