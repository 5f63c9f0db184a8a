"""Symbolic links in a data folder: refused unless they stay inside it (docs/hostile-inputs.md).

A link inside a city folder that points elsewhere (a satellite tile linked to another file, a
street-view folder linked to ``/etc``) would make the harness read — and hash into the data's
identity — files the folder does not contain. Links that resolve inside the folder are harmless and
allowed; ``--allow-symlinks`` allows every link (data assembled from a shared store, say).
"""

from __future__ import annotations

import os
from pathlib import Path

from urbanln_bench.paths import inside


def link_problems(root: Path, *, allow: bool = False) -> list[str]:
    """One line per link under ``root`` that resolves outside it (none when ``allow``)."""
    if allow:
        return []
    real_root = os.path.realpath(root)
    problems = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in sorted(dirs + files):
            path = Path(folder) / name
            if not path.is_symlink():
                continue
            target = os.path.realpath(path)
            if not inside(target, real_root):
                problems.append(f"{path}: symbolic link to {target}, outside the data folder; copy the file in, or "
                                "pass --allow-symlinks if the link is meant")
    return problems
