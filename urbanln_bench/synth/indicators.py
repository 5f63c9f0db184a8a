"""Indicators of a synthetic twin as documented functions of the latents (placeholder)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IndicatorModel:
    noise_sd: float = 0.3
