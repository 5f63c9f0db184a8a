"""Built-in declarative files (cities/, tasks/ at the repository top level) and built-in methods (methods/),
shipped as package data under ``urbanln_bench.builtin.{cities,tasks,methods}``.

In a source checkout they are the top-level folders of *the checkout this file is in*. An editable install
maps these names onto the folders of the checkout it was installed from; without the line below, a run that
imports ``urbanln_bench`` from another checkout (``PYTHONPATH=<worktree> python -m urbanln_bench ...``, as
the recipe comparisons in docs/methods.md do) took that checkout's code with the installed checkout's city
files and methods, and its records (which name the worktree's git revision) mixed two trees. Putting the
checkout on this package's ``__path__`` makes the path finder, which Python asks before the editable
install's finder, resolve them here. An installed wheel has the folders under this package and no
``pyproject.toml`` two levels up, and keeps the default lookup.
"""

from pathlib import Path

_CHECKOUT = Path(__file__).parents[2]
if (_CHECKOUT / "pyproject.toml").is_file() and all(
        (_CHECKOUT / name / "__init__.py").is_file() for name in ("cities", "tasks", "methods")):
    __path__ = [str(_CHECKOUT)]
