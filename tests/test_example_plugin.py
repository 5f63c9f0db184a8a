"""The README's "Add a baseline" walk-through, command by command, on the example package.

One difference from the README, so the test leaves the environment as it found it: the package is
installed with ``pip install --target`` into a temporary folder (from a copy, so no build files land
in the repository) instead of ``pip install -e`` into site-packages; the run is tiny and its records go
to a temporary store.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli_process

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "urbanln-bench-example-method"


@pytest.fixture(scope="module")
def example_env(tmp_path_factory) -> dict[str, str]:
    readme = (REPO / "README.md").read_text()
    assert "pip install -e examples/urbanln-bench-example-method" in readme
    source = tmp_path_factory.mktemp("src") / EXAMPLE.name
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__"))
    site = tmp_path_factory.mktemp("site")
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                              "--no-index", "--target", str(site), str(source)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    env = dict(os.environ)
    env["PYTHONPATH"] = str(site) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.mark.slow
def test_readme_walkthrough_with_the_example_package(example_env, tmp_path: Path):
    readme = (REPO / "README.md").read_text()
    for command in ("urbanln-bench list methods", "urbanln-bench check-method colour-edges",
                    "urbanln-bench run --method colour-edges --city NY", "urbanln-bench leaderboard"):
        assert re.search(rf"^{re.escape(command)}\b", readme, re.MULTILINE), command

    listed = cli_process("list", "methods", env=example_env)
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"^colour-edges\tColour \+ edges \(example\)\teither\tmethod\tplugin$", listed.stdout, re.MULTILINE)

    checked = cli_process("check-method", "colour-edges", env=example_env)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.count("PASS") == 11 and "FAIL" not in checked.stdout  # load + 5 checks × SV, SI

    results = tmp_path / "results"
    ran = cli_process("run", "--method", "colour-edges", "--city", "NY", "--scale", "tiny", "--seeds", "0-1",
              "--imagery", "SI", "--results", str(results), env=example_env)
    assert ran.returncode == 0, ran.stderr
    assert "Colour + edges (example)" in ran.stdout
    records = sorted(results.rglob("colour-edges/*.json"))  # beside them: the frame rows `run` adds
    assert [p.name for p in records] == ["Crime_SI_random.json", "POI_SI_random.json", "Pop_SI_random.json"]
    assert {p.parent.name for p in results.rglob("*.json")} == {"colour-edges", "color-histogram", "random-features",
                                                                "scene-graph-ceiling", "oracle-latents"}
    record = json.loads(records[0].read_text())
    assert record["method"]["name"] == "colour-edges" and record["embedding"]["dim"] == 10

    board = tmp_path / "leaderboard.md"
    rendered = cli_process("leaderboard", "--results", str(results), "--out", str(board), env=example_env)
    assert rendered.returncode == 0, rendered.stderr
    rows = [line for line in board.read_text().splitlines() if line.startswith("| Colour + edges (example) (SI) | SI")]
    assert rows and all("| none (hand-crafted features) |" in row for row in rows)
