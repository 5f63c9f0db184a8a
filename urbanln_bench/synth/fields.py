"""Smooth spatial latent fields of a synthetic city (placeholder: to be replaced)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TwinParams:
    seed: int
