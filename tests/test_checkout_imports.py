"""A run takes its city files, task files and built-in methods from the checkout its ``urbanln_bench`` comes
from (``urbanln_bench/builtin/__init__.py``), not from the checkout an editable install points at."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_a_worktree_on_pythonpath_uses_its_own_cities_tasks_and_methods(tmp_path: Path) -> None:
    other = tmp_path / "other-checkout"
    other.mkdir()
    shutil.copy(REPO / "pyproject.toml", other / "pyproject.toml")
    for name in ("urbanln_bench", "tasks", "methods"):
        (other / name).symlink_to(REPO / name, target_is_directory=True)
    shutil.copytree(REPO / "cities", other / "cities", ignore=shutil.ignore_patterns("__pycache__"))
    aster = other / "cities" / "pretraining_world" / "PW-Aster.toml"
    text = aster.read_text()
    assert "regions = 400\n" in text
    aster.write_text(text.replace("regions = 400\n", "regions = 123\n"))

    probe = ("import json, urbanln_bench.builtin.cities as c, urbanln_bench.builtin.methods as m, "
             "urbanln_bench.builtin.tasks as t\n"
             "from urbanln_bench.specs import pretraining_world\n"
             "print(json.dumps({'cities': c.__file__, 'methods': m.__file__, 'tasks': t.__file__, "
             "'aster_regions': [s.n_regions for s in pretraining_world() if s.name == 'PW-Aster'][0]}))")
    env = {**os.environ, "PYTHONPATH": str(other)}
    done = subprocess.run([sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    for name in ("cities", "methods", "tasks"):
        assert Path(seen[name]).parent == other / name, (name, seen[name])
    assert seen["aster_regions"] == 123
