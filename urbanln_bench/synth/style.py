"""A city's visual style for the renderers (placeholder: to be replaced)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CityStyle:
    name: str = "default"
