"""The renderers: deterministic, latent-driven, deprivation-blind, with consistent scene graphs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from urbanln_bench.synth.latents import LATENT_NAMES
from urbanln_bench.synth.render_satellite import render_satellite
from urbanln_bench.synth.render_streetview import render_streetview
from urbanln_bench.synth.scene import SceneGraph, colour_name
from urbanln_bench.synth.style import CityStyle

RENDERERS = [(render_satellite, 96), (render_streetview, 64)]
STYLE = CityStyle()
BUILDINGS = ("house", "apartment building", "office building", "skyscraper", "shop", "warehouse", "factory")


def latent(**overrides: float) -> dict[str, float]:
    values = dict.fromkeys(LATENT_NAMES, 0.3)
    values["water"] = 0.0
    values.update(overrides)
    return values


def pixels(image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def green_fraction(image) -> float:
    a = pixels(image)
    return float(((a[..., 1] > a[..., 0] + 25) & (a[..., 1] > a[..., 2] + 20)).mean())


def blue_fraction(image, water: tuple[int, int, int]) -> float:
    a = pixels(image)
    return float((np.abs(a - np.array(water)).sum(axis=2) < 45).mean())


@pytest.mark.parametrize(("render", "size"), RENDERERS)
def test_same_seed_same_bytes_and_graph(render, size) -> None:
    a_img, a_graph = render(latent(), STYLE, size, np.random.default_rng(5))
    b_img, b_graph = render(latent(), STYLE, size, np.random.default_rng(5))
    assert a_img.tobytes() == b_img.tobytes()
    assert a_graph == b_graph


@pytest.mark.parametrize(("render", "size"), RENDERERS)
def test_different_seeds_differ(render, size) -> None:
    a_img, _ = render(latent(), STYLE, size, np.random.default_rng(1))
    b_img, _ = render(latent(), STYLE, size, np.random.default_rng(2))
    assert a_img.tobytes() != b_img.tobytes()


@pytest.mark.parametrize("render", [render_satellite, render_streetview])
@pytest.mark.parametrize("size", [48, 64, 96, 128])
def test_shape_mode_and_boxes_inside(render, size) -> None:
    rng = np.random.default_rng(0)
    for k in range(6):
        values = dict(zip(LATENT_NAMES, rng.random(len(LATENT_NAMES)).tolist(), strict=True))
        image, graph = render(values, STYLE, size, np.random.default_rng(k))
        assert image.mode == "RGB" and image.size == (size, size)
        assert graph.width == graph.height == size
        assert graph.kind == ("satellite" if render is render_satellite else "streetview")
        assert len(graph.objects) >= 5
        for obj in graph.objects:
            x0, y0, x1, y1 = obj.bbox
            assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size, obj
            assert obj.name and obj.count >= 1


@pytest.mark.parametrize(("render", "size"), RENDERERS)
def test_scene_graph_round_trips_through_json(render, size) -> None:
    _, graph = render(latent(water=0.7, nightlife=0.9), STYLE, size, np.random.default_rng(3))
    data = json.loads(json.dumps(graph.to_dict()))
    assert SceneGraph.from_dict(data) == graph
    assert list(data) == ["kind", "width", "height", "view", "objects", "relations"]


@pytest.mark.parametrize(("render", "size"), RENDERERS)
def test_deprivation_is_never_rendered(render, size) -> None:
    low_img, low_graph = render(latent(deprivation=0.0), STYLE, size, np.random.default_rng(9))
    high_img, high_graph = render(latent(deprivation=1.0), STYLE, size, np.random.default_rng(9))
    assert low_img.tobytes() == high_img.tobytes()
    assert low_graph == high_graph


@pytest.mark.parametrize(("render", "size"), RENDERERS)
def test_missing_latent_is_an_error(render, size) -> None:
    values = latent()
    del values["greenery"]
    with pytest.raises(ValueError, match="greenery"):
        render(values, STYLE, size, np.random.default_rng(0))


def mean_over_seeds(render, size, values, measure, n=16) -> float:
    return float(np.mean([measure(*render(values, STYLE, size, np.random.default_rng(s))) for s in range(n)]))


@pytest.mark.parametrize(("render", "size"), RENDERERS)
def test_greenery_shows(render, size) -> None:
    def measure(image, graph):
        return green_fraction(image)

    bare = mean_over_seeds(render, size, latent(greenery=0.0), measure, n=24)
    green = mean_over_seeds(render, size, latent(greenery=1.0), measure, n=24)
    assert green > bare + 0.04


@pytest.mark.parametrize(("render", "size"), RENDERERS)
def test_density_adds_buildings(render, size) -> None:
    def measure(image, graph):
        return sum(graph.count(name) for name in BUILDINGS)

    sparse = mean_over_seeds(render, size, latent(density=0.05), measure)
    dense = mean_over_seeds(render, size, latent(density=0.95), measure)
    assert dense > 1.3 * sparse


@pytest.mark.parametrize(("render", "size"), RENDERERS)
def test_water_shows(render, size) -> None:
    def measure(image, graph):
        return blue_fraction(image, STYLE.water)

    dry = mean_over_seeds(render, size, latent(water=0.0), measure)
    wet = mean_over_seeds(render, size, latent(water=0.9), measure)
    assert wet > 2 * dry and wet > dry + 0.03  # street views show glimpses, tiles show a river or coast


def test_satellite_water_in_graph() -> None:
    names = set()
    for s in range(10):
        names |= set(render_satellite(latent(water=0.9), STYLE, 96, np.random.default_rng(s))[1].names())
    assert names & {"river", "lake", "sea"}


def test_height_lengthens_satellite_shadows() -> None:
    """Height is visible from above only through shadows: more shadow area when buildings are taller."""
    unlit = CityStyle(shadow_darkness=0.0)  # same draws, no shadows: the pixels that differ are shadow

    def shadow_area(values: dict[str, float]) -> float:
        areas = []
        for s in range(16):
            lit = pixels(render_satellite(values, STYLE, 96, np.random.default_rng(s))[0])
            flat = pixels(render_satellite(values, unlit, 96, np.random.default_rng(s))[0])
            areas.append((np.abs(lit - flat).sum(axis=2) > 30).mean())
        return float(np.mean(areas))

    mix = {"density": 0.6, "commercial": 0.9, "residential": 0.1, "industrial": 0.0}
    assert shadow_area(latent(building_height=0.95, **mix)) > 1.5 * shadow_area(latent(building_height=0.05, **mix))


def test_land_use_changes_building_kinds() -> None:
    def kinds(values):
        out: dict[str, int] = {}
        for s in range(12):
            for render, size in RENDERERS:
                graph = render(values, STYLE, size, np.random.default_rng(s))[1]
                for name in ("house", "apartment building", "warehouse", "factory", "shop sign"):
                    out[name] = out.get(name, 0) + graph.count(name)
        return out

    industrial = kinds(latent(industrial=1.0, residential=0.0, commercial=0.0))
    residential = kinds(latent(industrial=0.0, residential=1.0, commercial=0.0))
    assert industrial["warehouse"] + industrial["factory"] > 5 * (residential["warehouse"] + residential["factory"] + 1)
    assert residential["house"] + residential["apartment building"] > 5 * (
        industrial["house"] + industrial["apartment building"] + 1
    )


def test_city_styles_parse_and_differ() -> None:
    from urbanln_bench.specs import get_city, pretraining_world
    from urbanln_bench.synth.style import city_style

    cities = [get_city(name) for name in ("NY", "BJ", "SH", "SZ")] + pretraining_world()
    styles = [city_style(c) for c in cities]
    assert len({s.name for s in styles}) == len(styles)
    assert len({(s.ground, s.road, s.street_width) for s in styles}) == len(styles)
    images = {
        s.name: render_satellite(latent(), s, 64, np.random.default_rng(0))[0].tobytes() for s in styles
    }
    assert len(set(images.values())) == len(styles)


def test_style_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="lane_marking_style"):
        CityStyle(lane_marking_style="zigzag")
    with pytest.raises(ValueError, match="street_width"):
        CityStyle(street_width=0.0)
    with pytest.raises(ValueError, match="ground"):
        CityStyle(ground=(300, 0, 0))


def test_colour_names_are_plain_words() -> None:
    assert colour_name((200, 30, 30)) == "red"
    assert colour_name((240, 240, 240)) == "white"
    assert colour_name((60, 130, 60)) == "green"


def test_satellite_tiles_below_48_pixels_are_refused():
    # at 32 px about one tile in twenty used to crash inside Pillow (a lot narrower than a pixel)
    with pytest.raises(ValueError, match="at least 48 pixels, got 32"):
        render_satellite(latent(), STYLE, 32, np.random.default_rng(0))
