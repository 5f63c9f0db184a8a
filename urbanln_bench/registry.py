"""One generic registry for every kind of component (methods, tasks, cities, captioners, metrics).

After lm-evaluation-harness's ``lm_eval/api/registry.py``: entries are registered by decorator or
as lazy ``"module:attr"`` strings, third-party packages add entries through an entry-point group
(``urbanln_bench.<kind>``), built-ins win a name clash (with a warning), and an unknown name is
answered with "did you mean" suggestions.
"""

from __future__ import annotations

import difflib
import importlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from urbanln_bench.errors import UserError

T = TypeVar("T")
OWN_DISTRIBUTION = "urbanln-bench"


class UnknownNameError(UserError):
    """A name that is not in a registry."""


def suggest(name: str, options: list[str]) -> str:
    """A ' (did you mean ...)' suffix for error messages, or '' when nothing is close."""
    lowered = {o.lower(): o for o in options}
    if name.lower() in lowered:
        return f" (did you mean '{lowered[name.lower()]}'?)"
    close = difflib.get_close_matches(name, options, n=3, cutoff=0.5)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


@dataclass
class _Entry:
    target: Any  # the object, or a "module:attr" string not yet imported
    builtin: bool
    origin: str


class Registry(Generic[T]):
    """Name → component, with lazy import and entry-point discovery."""

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, _Entry] = {}
        self._discovered = False

    def register(
        self, name: str, target: Any = None, *, builtin: bool = False, origin: str = ""
    ) -> Callable[[T], T] | None:
        """Register ``target`` (an object or a lazy ``"module:attr"``) under ``name``.

        Without ``target`` this returns a decorator.
        """
        if target is None:

            def decorator(obj: T) -> T:
                self._add(name, obj, builtin=builtin, origin=origin or getattr(obj, "__module__", ""))
                return obj

            return decorator
        self._add(name, target, builtin=builtin, origin=origin)
        return None

    def _add(self, name: str, target: Any, *, builtin: bool, origin: str) -> None:
        existing = self._entries.get(name)
        if existing is not None and existing.target is not target:
            if existing.builtin and not builtin:
                warnings.warn(
                    f"{self.kind} '{name}' from {origin or 'a plugin'} clashes with the built-in one; "
                    "the built-in wins. Rename the plugin's entry point to use it.",
                    stacklevel=3,
                )
                return
            if builtin and not existing.builtin:
                warnings.warn(
                    f"{self.kind} '{name}' from {existing.origin or 'a plugin'} clashes with the built-in one; "
                    "the built-in wins.",
                    stacklevel=3,
                )
            elif existing.builtin == builtin:
                raise ValueError(f"{self.kind} '{name}' is registered twice ({existing.origin} and {origin})")
        self._entries[name] = _Entry(target, builtin, origin)

    def discover(self) -> None:
        """Load entries advertised under the registry's entry-point group.

        Entry points of this distribution are the built-ins (they register exactly as plugins do,
        and win a clash); those of any other installed package are plugins.
        """
        if self._discovered or not self.entry_point_group:
            self._discovered = True
            return
        self._discovered = True
        eps = list(entry_points(group=self.entry_point_group))
        own = [ep for ep in eps if ep.dist is not None
               and ep.dist.name.replace("_", "-").lower() == OWN_DISTRIBUTION]
        for ep in own + [ep for ep in eps if ep not in own]:
            builtin = ep in own
            self._add(ep.name, ep.value, builtin=builtin,
                      origin=f"{'built-in' if builtin else 'plugin'} entry point {ep.value}")

    def names(self) -> list[str]:
        self.discover()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self.discover()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def is_builtin(self, name: str) -> bool:
        self.discover()
        return self._entries[name].builtin

    def get(self, name: str) -> T:
        self.discover()
        entry = self._entries.get(name)
        if entry is None:
            raise UnknownNameError(
                f"unknown {self.kind} '{name}'{suggest(name, self.names())}; "
                f"known: {', '.join(self.names()) or '(none)'}"
            )
        if isinstance(entry.target, str) and ":" in entry.target:
            module_name, _, attr = entry.target.partition(":")
            try:
                obj = getattr(importlib.import_module(module_name), attr)
            except (ImportError, AttributeError) as exc:
                raise UserError(f"{self.kind} '{name}': cannot load {entry.target}: {exc}") from exc
            except Exception as exc:  # a plugin's own code failed at import: its fault, named, not a traceback
                raise UserError(f"{self.kind} '{name}': loading {entry.target} failed: {type(exc).__name__}: {exc} "
                                f"(fix or uninstall the package that provides it)") from exc
            entry.target = obj
        return entry.target
