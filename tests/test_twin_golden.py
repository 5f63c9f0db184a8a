"""The twin generator's golden output: its version is bumped exactly when its output changes.

The twin is data (docs/identity.md): the same bytes on every CPU, and a change of what it renders
must come with a new ``TWIN_GENERATOR_VERSION`` (which moves every twin cache key) and that version's
digest in ``TWIN_GOLDEN``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from urbanln_bench.synth import libm
from urbanln_bench.synth.twin import TWIN_GENERATOR_VERSION, TWIN_GOLDEN, twin_content_digest


def test_tiny_twin_matches_the_golden_digest_of_its_version(tiny_ny: Path):
    assert TWIN_GENERATOR_VERSION in TWIN_GOLDEN, (
        f"TWIN_GENERATOR_VERSION is {TWIN_GENERATOR_VERSION} but TWIN_GOLDEN (urbanln_bench/synth/twin.py) "
        "has no digest for it: add the digest this test prints on failure")
    digest = twin_content_digest(tiny_ny)
    assert digest == TWIN_GOLDEN[TWIN_GENERATOR_VERSION], (
        f"the NY tiny twin now renders digest {digest}, not the golden "
        f"{TWIN_GOLDEN[TWIN_GENERATOR_VERSION]} of generator version {TWIN_GENERATOR_VERSION}. If the change "
        "is meant, bump TWIN_GENERATOR_VERSION in urbanln_bench/synth/twin.py and add "
        f"{{{TWIN_GENERATOR_VERSION + 1}: \"{digest}\"}} to TWIN_GOLDEN; committed records on twins then need "
        "re-running. If it is not meant (a refactor, a library upgrade, another CPU), the twin is no "
        "longer the same data: find what moved.")


def test_content_digest_reads_pixels_not_png_bytes(tmp_path: Path):
    """Two PNG encodings of the same pixels are the same twin; one changed pixel is not."""
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    for name, level in (("a", 1), ("b", 9)):
        (tmp_path / name / "satellite").mkdir(parents=True)
        Image.fromarray(pixels).save(tmp_path / name / "satellite" / "r000c000.png", compress_level=level)
    assert (tmp_path / "a/satellite/r000c000.png").read_bytes() != (tmp_path / "b/satellite/r000c000.png").read_bytes()
    assert twin_content_digest(tmp_path / "a") == twin_content_digest(tmp_path / "b")
    pixels[0, 0, 0] ^= 1
    Image.fromarray(pixels).save(tmp_path / "b" / "satellite" / "r000c000.png")
    assert twin_content_digest(tmp_path / "a") != twin_content_digest(tmp_path / "b")


@pytest.mark.parametrize(("ours", "scalar"), [(libm.exp, math.exp), (libm.expm1, math.expm1),
                                                 (libm.log1p, math.log1p)])
def test_libm_is_the_c_library_elementwise(ours, scalar):
    values = np.random.default_rng(1).uniform(-0.9, 5.0, (7, 3))
    expected = np.array([[scalar(v) for v in row] for row in values])
    assert np.array_equal(ours(values), expected)  # bit for bit, whatever NumPy's SIMD kernels do


def test_libm_edge_cases_follow_numpy():
    with np.errstate(all="ignore"):
        for ours, theirs, values in ((libm.exp, np.exp, [1e4, -1e4, np.nan]),
                                     (libm.log, np.log, [0.0, -1.0, np.inf, np.nan]),
                                     (libm.log1p, np.log1p, [-1.0, -2.0, np.nan]),
                                     (libm.expm1, np.expm1, [1e4, -np.inf])):
            assert np.array_equal(ours(values), theirs(np.array(values)), equal_nan=True)
    assert np.isnan(libm.power(np.array([-1.0]), 0.5)[0])
    assert libm.power(np.array([4.0]), 0.5)[0] == 2.0


def test_gaussian_filter_is_scipys_filter():
    """Same kernel formula and boundary handling as scipy.ndimage (to rounding of the kernel's exp)."""
    from scipy import ndimage

    field = np.random.default_rng(2).standard_normal((13, 11))
    for sigma in (1.0, 1.5, 2.0, 3.0):
        assert np.allclose(libm.gaussian_filter(field, sigma), ndimage.gaussian_filter(field, sigma, mode="reflect"),
                           rtol=0, atol=1e-13)
