"""Elementwise exp, expm1, log, log1p, power and a Gaussian filter that give the same bits on every CPU.

NumPy picks its transcendental kernels at run time by CPU: on a CPU with AVX-512 ``np.exp``,
``np.log``, ``np.log1p`` and ``np.power`` run SIMD kernels that round differently in the last bit
from the scalar C-library functions NumPy calls on an AVX2 CPU (about 5 % of ``np.exp`` results
differ). The twin must be the same data on every machine (docs/identity.md), and a last-bit
difference in a latent can flip a tie in a renderer's geometry, so every transcendental in the
generator goes through these functions instead: each element is passed to Python's ``math`` module,
which calls the C library's scalar function, the same one NumPy's baseline loops call. They return
NumPy's values for the edge cases (``exp`` overflow → inf, ``log(0)`` → −inf, ``log`` of a negative
number → nan) instead of raising.

SciPy's ``gaussian_filter`` builds its kernel with ``np.exp`` too, so :func:`gaussian_filter` rebuilds
SciPy's kernel here and lets ``ndimage.correlate1d`` (plain C, no run-time dispatch) apply it.

Cost: about 60 ns per element, which is nothing next to rendering.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np


def _elementwise(scalar: Callable[[float], float]) -> Callable[[np.ndarray | float], np.ndarray]:
    def apply(x: np.ndarray | float) -> np.ndarray:
        values = np.asarray(x, dtype=np.float64)
        flat = values.ravel().tolist()
        return np.fromiter(map(scalar, flat), dtype=np.float64, count=len(flat)).reshape(values.shape)

    apply.__name__ = scalar.__name__.lstrip("_")
    apply.__doc__ = f"Elementwise C-library ``{apply.__name__}``, float64, the same bits on every CPU."
    return apply


def _exp(v: float) -> float:
    try:
        return math.exp(v)
    except OverflowError:
        return math.inf


def _expm1(v: float) -> float:
    try:
        return math.expm1(v)
    except OverflowError:
        return math.inf


def _log(v: float) -> float:
    if v > 0 or v != v:
        return math.log(v)
    return -math.inf if v == 0 else math.nan


def _log1p(v: float) -> float:
    if v > -1 or v != v:
        return math.log1p(v)
    return -math.inf if v == -1 else math.nan


exp = _elementwise(_exp)
expm1 = _elementwise(_expm1)
log = _elementwise(_log)
log1p = _elementwise(_log1p)


def power(base: np.ndarray | float, exponent: float) -> np.ndarray:
    """``base ** exponent`` elementwise for ``base`` ≥ 0 (C-library ``pow``); nan for a negative base."""

    def one(v: float) -> float:
        if v < 0:
            return math.nan
        try:
            return math.pow(v, exponent)
        except OverflowError:
            return math.inf

    return _elementwise(one)(base)


def gaussian_kernel(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """The normalised 1-D Gaussian weights ``scipy.ndimage.gaussian_filter1d`` uses, with C-library exp.

    SciPy builds its kernel with ``np.exp``, so its filter's output depends on the CPU; the weights
    here are SciPy's formula term for term (radius ``int(truncate·σ + 0.5)``).
    """
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1)
    phi = exp(-0.5 / (sigma * sigma) * x**2)
    return phi / phi.sum()


def gaussian_filter1d(values: np.ndarray, sigma: float, axis: int = -1, mode: str = "reflect") -> np.ndarray:
    """``scipy.ndimage.gaussian_filter1d`` (order 0) with the CPU-independent :func:`gaussian_kernel`."""
    from scipy import ndimage

    return ndimage.correlate1d(np.asarray(values, dtype=np.float64), gaussian_kernel(sigma)[::-1], axis, mode=mode)


def gaussian_filter(values: np.ndarray, sigma: float, mode: str = "reflect") -> np.ndarray:
    """``scipy.ndimage.gaussian_filter`` (order 0, one σ for every axis), CPU-independent."""
    out = np.asarray(values, dtype=np.float64)
    for axis in range(out.ndim):
        out = gaussian_filter1d(out, sigma, axis, mode)
    return out
