"""Containment: names that come from files become path components, and every path the harness writes
stays under its root (the cache, the result store). docs/hostile-inputs.md lists what is refused.

A city named ``../../escaped/X`` in a city file would otherwise place its twin, its embeddings and its
records outside the cache and the result store. Two guards: ``check_name`` refuses such a name where
it is read (city and task files, a data folder's ``city.json``, a method's declared name), and
``contained`` re-checks each path where it is built, so a name that reaches it by another route is
still refused. Containment is checked on the normalised path (``..`` folded), not through links:
the harness itself links shared caches into a private one (``check_method.private_cache``).
"""

from __future__ import annotations

import os
from pathlib import Path

from urbanln_bench.errors import UserError

MAX_NAME_LENGTH = 100  # a name is one folder or file name; file systems allow 255 bytes with the suffixes


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot be one path component, or None when it can."""
    if not isinstance(name, str) or not name:
        return "must be a non-empty string"
    if len(name) > MAX_NAME_LENGTH:
        return f"is {len(name)} characters long (at most {MAX_NAME_LENGTH})"
    if "\0" in name or any(ord(c) < 32 for c in name):
        return "contains a NUL or control character"
    if "/" in name or "\\" in name:
        return "contains a path separator (/ or \\)"
    if name.startswith("."):
        return "starts with a dot (hidden file, or '..')"
    return None


def check_name(name: object, what: str, where: str, error: type[UserError] = UserError) -> str:
    """``name`` when it is usable as one path component; else ``error`` naming what, where and the fix."""
    problem = name_problem(name)
    if problem:
        raise error(f"{where}: {what} {name!r} {problem}; it names folders and files, so use letters, digits, "
                    f"_ - . (not first) and at most {MAX_NAME_LENGTH} characters")
    return name  # type: ignore[return-value]


def inside(path: str | Path, root: str | Path) -> bool:
    """Whether ``path`` is ``root`` or lies under it, both normalised as given (resolve them first where
    links matter)."""
    normal, base = os.path.normpath(os.path.abspath(path)), os.path.normpath(os.path.abspath(root))
    return normal == base or normal.startswith(base.rstrip(os.sep) + os.sep)


def contained(path: Path, root: Path, what: str) -> Path:
    """``path`` when, normalised, it lies under ``root``; else a UserError (nothing is written)."""
    if not inside(path, root):
        raise UserError(f"{what} {path} would be written outside {root}; a name in a city file, data folder "
                        "or plugin is not a plain file name")
    return path
