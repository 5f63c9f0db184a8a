"""Strict construction of dataclasses from parsed TOML: missing and unknown keys are errors.

City and task files are data a user writes by hand; a typo must not silently fall back to a
default, so every table is checked against the dataclass it describes.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from urbanln_bench.errors import SpecError

T = TypeVar("T")


def _suggest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _convert(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except SpecError as exc:
                errors.append(str(exc))
        raise SpecError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, Mapping):
            raise SpecError(f"{where}: expected a table, got {type(value).__name__} {value!r}")
        return from_mapping(annotation, value, where)
    if origin in (list, tuple) or annotation in (list, tuple):
        if not isinstance(value, list | tuple):
            raise SpecError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise SpecError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
        item = args[0] if args else Any
        return tuple(_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (dict, Mapping) or annotation in (dict,):
        if not isinstance(value, Mapping):
            raise SpecError(f"{where}: expected a table, got {type(value).__name__} {value!r}")
        key_type, value_type = args if args else (Any, Any)
        return {
            _convert(k, key_type, where): _convert(v, value_type, f"{where}.{k}") for k, v in value.items()
        }
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SpecError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):  # TOML has nan and inf; no parameter of a city or task means them
            raise SpecError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise SpecError(f"{where}: expected true or false, got {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise SpecError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_mapping(cls: type[T], data: Mapping[str, Any], where: str) -> T:
    """Build dataclass ``cls`` from ``data``; ``where`` names the file and table in errors."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        raise SpecError(
            f"{where}: unknown key '{key}'{_suggest(key, list(fields))}; allowed keys: {', '.join(fields)}"
        )
    kwargs = {}
    for name, field in fields.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], f"{where}.{name}")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise SpecError(f"{where}: missing required key '{name}'")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise SpecError(f"{where}: {exc}") from exc
