"""The twin generator's golden output: its version is bumped exactly when its output changes.

The twin is data (docs/identity.md): the same bytes on every CPU, and a change of what it renders
must come with a new ``TWIN_GENERATOR_VERSION`` or renderer version (each moves every twin cache key)
and the new versions' digest in ``TWIN_GOLDEN``; each renderer has a golden of its own.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from urbanln_bench.synth import libm
from urbanln_bench.synth.latents import LATENT_NAMES
from urbanln_bench.synth.style import CityStyle
from urbanln_bench.synth.twin import TWIN_GOLDEN, twin_content_digest, twin_versions


def test_tiny_twin_matches_the_golden_digest_of_its_versions(tiny_ny: Path):
    versions = twin_versions()
    assert versions in TWIN_GOLDEN, (
        f"the twin's (generator, satellite renderer, street-view renderer) versions are {versions} but "
        "TWIN_GOLDEN (urbanln_bench/synth/twin.py) has no digest for them: add the digest this test prints "
        "on failure")
    digest = twin_content_digest(tiny_ny)
    assert digest == TWIN_GOLDEN[versions], (
        f"the NY tiny twin now renders digest {digest}, not the golden {TWIN_GOLDEN[versions]} of versions "
        f"{versions}. If the change is meant, bump the version of what changed (TWIN_GENERATOR_VERSION in "
        "urbanln_bench/synth/twin.py, or a renderer's version, whose own golden below fails too) and add "
        f"{{NEW_VERSIONS: \"{digest}\"}} to TWIN_GOLDEN; committed records on twins then need re-running. If it "
        "is not meant (a refactor, a library upgrade, another CPU), the twin is no longer the same data: find "
        "what moved.")


def _render_digest(render, sizes: tuple[int, int]) -> str:
    """sha256 of 32 renders: 8 seeded latents × 2 styles × 2 sizes (pixels and scene graphs)."""
    h = hashlib.sha256()
    styles = (CityStyle(), CityStyle(street_width=1.6, lane_marking_style="double", window_style="bands",
                                     cloudiness=0.3))
    for k in range(8):
        latent = dict(zip(LATENT_NAMES, np.random.default_rng([7, k]).random(len(LATENT_NAMES)), strict=True))
        for s, style in enumerate(styles):
            for size in sizes:
                image, graph = render(latent, style, size, np.random.default_rng([k, s, size]))
                h.update(f"{image.mode}{image.size}".encode() + image.tobytes())
                h.update(json.dumps(graph.to_dict(), sort_keys=True).encode())
    return h.hexdigest()


@pytest.mark.parametrize("renderer", ["satellite", "streetview"])
def test_each_renderer_matches_the_golden_digest_of_its_version(renderer):
    from urbanln_bench.synth import render_satellite, render_streetview

    module, render, sizes = {
        "satellite": (render_satellite, render_satellite.render_satellite, (64, 96)),
        "streetview": (render_streetview, render_streetview.render_streetview, (48, 64)),
    }[renderer]
    name = f"{renderer.upper()}_RENDERER_VERSION"
    version, golden = getattr(module, name), getattr(module, f"{renderer.upper()}_GOLDEN")
    digest = _render_digest(render, sizes)
    assert version in golden, f"{name} is {version} but its golden table has no digest for it: add {digest!r}"
    assert digest == golden[version], (
        f"the {renderer} renderer now gives digest {digest}, not the golden {golden[version]} of {name} "
        f"{version}. If meant, bump {name} ({module.__name__}), add {{{version + 1}: {digest!r}}} to its golden "
        "table and the twin's new digest to TWIN_GOLDEN.")


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
