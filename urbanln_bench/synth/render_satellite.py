"""Top-down "satellite" tiles of a synthetic region, drawn from its latents (docs/twins.md).

What a latent looks like from above, by urban semantics rather than by any method's taste:
density sets building coverage, the land-use shares set footprint type (small pitched houses,
apartment slabs, flat commercial roofs, large corrugated industrial sheds with tanks), road_density
sets the street grid, greenery parks and trees, water a river, lake or coast. building_height is
only visible through shadow length; affluence only through pools, car size and roof upkeep;
nightlife only through a few café umbrellas; deprivation not at all. Colours come from the city's
style plus per-image jitter, and roof palettes of different land uses overlap, so reading the tile
needs shape and layout, not just a colour histogram.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from urbanln_bench.synth.latents import LATENT_NAMES
from urbanln_bench.synth.satellite_parts import (
    Box,
    Pending,
    Road,
    Streets,
    Tile,
    TreeGroup,
    Water,
    bbox_of,
    mottled,
    place_water,
    shadow_polygon,
    size_word,
    union_box,
)
from urbanln_bench.synth.scene import SceneBuilder, SceneGraph, colour_name
from urbanln_bench.synth.style import RGB, CityStyle

# Bump when a satellite tile's pixels or scene graph change for the same latents, style, size and draws
# (this module, satellite_parts, or the helpers render_streetview shares with it); part of every twin's
# key through synth.twin.generator_identity, pinned by tests/test_twin_golden.py (docs/identity.md).
SATELLITE_RENDERER_VERSION = 1
# sha256 of 32 tiles (8 seeded latents × 2 styles × 64 and 96 px: pixels and scene graphs) per version
SATELLITE_GOLDEN = {1: "30fb985875cf62ffe5c5fb830617dcdd9372c97226d2941fd792541dbba2ddc3"}

# Every latent but deprivation: the renderers read only these, so deprivation cannot leak into pixels.
RENDERED_LATENTS: tuple[str, ...] = tuple(name for name in LATENT_NAMES if name != "deprivation")

_POOL: RGB = (70, 186, 206)
_SAND: RGB = (214, 200, 160)
_UMBRELLAS: tuple[RGB, ...] = ((220, 60, 60), (240, 240, 235), (240, 190, 50), (60, 150, 90))


def visible_latents(latent: Mapping[str, float]) -> dict[str, float]:
    """The latents a renderer may use, clipped to [0, 1]; ``deprivation`` is never among them."""
    missing = [name for name in RENDERED_LATENTS if name not in latent]
    if missing:
        raise ValueError(f"latent is missing {', '.join(missing)}; expected all of {', '.join(RENDERED_LATENTS)}")
    return {name: min(1.0, max(0.0, float(latent[name]))) for name in RENDERED_LATENTS}


def jitter(colour: Sequence[int], rng: np.random.Generator, amount: float) -> RGB:
    """``colour`` with a small random shift per channel (plus a shared brightness shift)."""
    s0, s1, s2, s3 = ((rng.random(4) - 0.5) * (2.0 * amount)).tolist()
    r, g, b = colour[0] + s0 + s3, colour[1] + s1 + s3, colour[2] + s2 + s3
    return (
        0 if r < 0 else 255 if r > 255 else int(r),
        0 if g < 0 else 255 if g > 255 else int(g),
        0 if b < 0 else 255 if b > 255 else int(b),
    )


def pick(palette: Sequence[RGB], rng: np.random.Generator) -> RGB:
    return palette[int(rng.random() * len(palette)) % len(palette)]


def capped_poisson(rng: np.random.Generator, lam: float, cap: int) -> int:
    return int(min(cap, rng.poisson(max(lam, 0.0))))


def finish(
    img: Image.Image, rng: np.random.Generator, haze: float, haze_tone: np.ndarray, noise: float,
    shade: np.ndarray | None = None, darkness: float = 0.0,
) -> Image.Image:
    """The camera: optional shadow darkening, haze, exposure and white-balance jitter, sensor noise."""
    size = img.size[0]
    arr = np.array(img, dtype=np.float32)
    if shade is not None:
        arr[shade] *= 1.0 - darkness
    gain = (1.0 + (rng.random(3) - 0.5) * 0.12 + (rng.random() - 0.5) * 0.16).astype(np.float32)
    arr *= gain * (1.0 - haze)
    arr += haze * haze_tone * gain - 0.5 * noise
    grain = np.frombuffer(rng.bytes(size * size), dtype=np.uint8).reshape(size, size, 1)
    arr += grain * np.float32(noise / 255.0)
    np.clip(arr, 0, 255, out=arr)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


# -- ground, water and streets --------------------------------------------------------------------------

def _ground(style: CityStyle, size: int, rng: np.random.Generator) -> Image.Image:
    """The city's ground colour, jittered per tile, with low-frequency mottling."""
    base = np.array(jitter(style.ground, rng, 2.0 * float(style.colour_jitter)), dtype=np.float32)
    return Image.fromarray(mottled(base, 20.0 * style.ground_texture, size, rng), "RGB")


def _lay_streets(tile: Tile, water: Water) -> Streets:
    """The street grid: spacing from road_density and the style's block size and shape; river bridges."""
    S, unit, rng, style = tile.size, tile.unit, tile.rng, tile.style
    road_density = tile.lat["road_density"]
    spacing = S * (0.62 - 0.38 * road_density) * style.block_size * (0.9 + 0.2 * rng.random())
    aspect = math.sqrt(style.block_aspect)
    width_px = max(1.0, unit * style.street_width * (1.5 + 1.6 * road_density) * (0.85 + 0.3 * rng.random()))
    roads: list[Road] = []
    for axis, step in (("v", spacing * aspect), ("h", spacing / aspect)):
        pos = rng.random() * step
        while pos < S:
            major = rng.random() < 0.3
            w = width_px * (1.6 if major else 1.0)
            centre = pos + (rng.random() - 0.5) * 0.2 * step
            if w * 0.5 < centre < S - w * 0.5:
                roads.append((axis, centre, w))
            pos += step
    streets = Streets(S, roads, jitter(style.road, rng, tile.jit), jitter(style.sidewalk, rng, tile.jit))
    streets.bridged = [water.kind == "river" and water.crosses(a, c) and rng.random() < 0.7 for a, c, _ in roads]
    return streets


def _draw_streets(tile: Tile, streets: Streets) -> None:
    """Roads on land, with sidewalks on wide ones; bridges are drawn over the water later."""
    for (axis, centre, w), is_bridge in zip(streets.roads, streets.bridged, strict=True):
        if not is_bridge:
            if w >= 3.5 * tile.unit:  # sidewalks show on wide streets
                x0, y0, x1, y1 = streets.rect(axis, centre, w + 2 * tile.unit)
                tile.draw.rectangle((x0, y0, x1, y1), fill=streets.sidewalk)
            tile.draw.rectangle(streets.rect(axis, centre, w), fill=streets.colour)


def _draw_water(tile: Tile, water: Water) -> None:
    """The beach and the water body, and their graph objects."""
    if not water.kind:
        return
    if water.beach is not None:
        tile.draw.polygon(water.beach, fill=jitter(_SAND, tile.rng, tile.jit))
        tile.graph.add("beach", bbox_of(water.beach), ("sandy",))
    water_colour = jitter(tile.style.water, tile.rng, 1.5 * tile.jit)
    tile.draw.polygon(water.outline, fill=water_colour)
    area = water.mask.mean()
    water.id = tile.graph.add(
        water.kind, bbox_of(water.outline), (size_word(area, 0.12, 0.35), colour_name(water_colour))
    )


def _add_roads(tile: Tile, streets: Streets, water: Water) -> None:
    """Every road's graph object; bridges drawn over the water, 'over' it and 'part of' their road."""
    graph = tile.graph
    for (axis, centre, w), is_bridge in zip(streets.roads, streets.bridged, strict=True):
        rect = streets.rect(axis, centre, w)
        if is_bridge:
            tile.draw.rectangle(rect, fill=streets.colour)
        streets.ids.append(graph.add("road", rect, ("wide" if w > 3.2 * tile.unit else "narrow", "paved")))
        if is_bridge:
            wet = np.flatnonzero(water.mask[:, int(centre)] if axis == "v" else water.mask[int(centre), :])
            span = (int(wet.min()), int(wet.max()))
            box = (
                (centre - w / 2, span[0], centre + w / 2, span[1] + 1)
                if axis == "v"
                else (span[0], centre - w / 2, span[1] + 1, centre + w / 2)
            )
            bridge_id = graph.add("bridge", box, ())
            graph.relate(bridge_id, "over", water.id)
            graph.relate(bridge_id, "part of", streets.ids[-1])


def _lane_markings(tile: Tile, streets: Streets, water: Water) -> tuple[RGB, np.ndarray]:
    """Lane markings as a colour and a pixel mask (painted at the shadow stage), on wide enough roads only."""
    S, unit, style = tile.size, tile.unit, tile.style
    marking = jitter(style.lane_marking, tile.rng, tile.jit)
    marking_mask = np.zeros((S, S), dtype=bool)
    if style.lane_marking_style == "none":
        return marking, marking_mask
    period = max(3, int(round(4 * unit)))
    along = np.ones(S, dtype=bool)
    if style.lane_marking_style == "dashed":
        along = (np.arange(S) + int(tile.rng.random() * period)) % period <= period // 2
    for (axis, centre, w), is_bridge in zip(streets.roads, streets.bridged, strict=True):
        if w < 3.0 * unit:
            continue
        offsets = (-0.5 * unit, 0.5 * unit) if style.lane_marking_style == "double" else (0.0,)
        for off in offsets:
            c = int(min(S - 1, max(0, centre + off)))
            if axis == "v":
                marking_mask[:, c] |= along & (is_bridge | ~water.mask[:, c])
            else:
                marking_mask[c, :] |= along & (is_bridge | ~water.mask[c, :])
    return marking, marking_mask


# -- blocks: parks, open lots and buildings -------------------------------------------------------------

@dataclass
class _BlockRules:
    """How the blocks of a tile are used and lit: land-use odds, sun direction, greens, roof upkeep."""

    shares: np.ndarray  # residential, commercial, industrial
    park_p: float
    vacant_p: float
    sun_dx: float
    sun_dy: float
    grass: RGB
    tree: RGB
    roof_jit: float


@dataclass
class _Kind:
    """One block's building type: its graph name, lot size, mean floors, coverage and roof palette."""

    name: str
    lot: float
    floors_mean: float
    coverage: float
    palette: tuple[RGB, ...]


@dataclass
class _Footprints:
    """The buildings placed on one block: roof boxes and colours, floors, pools beside houses."""

    roofs: list[Box] = field(default_factory=list)
    colours: list[RGB] = field(default_factory=list)
    pools: list[Box] = field(default_factory=list)
    floors: list[float] = field(default_factory=list)


def _block_rules(tile: Tile) -> _BlockRules:
    """The tile's block rules; draws the grass and tree colours."""
    lat, style, rng, jit = tile.lat, tile.style, tile.rng, tile.jit
    density, greenery = lat["density"], lat["greenery"]
    shares = np.array([lat["residential"], lat["commercial"], lat["industrial"]]) + 0.03
    shares = shares / shares.sum()
    azimuth = math.radians(style.sun_azimuth_deg)
    return _BlockRules(
        shares=shares,
        park_p=0.55 * greenery**1.5 * (1.0 - 0.5 * density),
        vacant_p=0.45 * (1.0 - density) ** 2,
        sun_dx=math.cos(azimuth),
        sun_dy=math.sin(azimuth),
        grass=jitter(style.grass, rng, jit),
        tree=jitter(style.tree, rng, jit),
        roof_jit=jit * (1.7 - lat["affluence"]),  # worse upkeep: more patchy roofs (subtle affluence cue)
    )


def _fill_block(
    tile: Tile, block: Box, streets: Streets, water: Water, rules: _BlockRules, pending: Pending
) -> None:
    """One block: a park, an open lot, or buildings with their roofs, pools, yard and trees."""
    S, unit, rng = tile.size, tile.unit, tile.rng
    x0, y0, x1, y1 = block
    bw, bh = x1 - x0, y1 - y0
    if bw < 3 * unit or bh < 3 * unit or water.covers(x0, y0, x1 - 1, y1 - 1) and water.mask[
        int(min(S - 1, (y0 + y1) / 2)), int(min(S - 1, (x0 + x1) / 2))
    ]:
        return
    road_id = streets.nearest(block)
    r = rng.random()
    if r < rules.park_p and bw * bh > 60 * unit * unit:
        _park(tile, block, road_id, rules.grass, streets.sidewalk, pending)
        return
    if r < rules.park_p + rules.vacant_p:
        _open_lot(tile, block)
        return
    kind = _building_kind(tile, block, road_id, rules.shares)
    placed = _place_buildings(tile, block, kind, water, rules, pending)
    if not placed.roofs:
        return
    _draw_roofs(tile, kind.name, placed, pending)
    building_id = _add_buildings(tile, kind.name, placed, road_id, water)
    if placed.pools:
        pool_colour = jitter(_POOL, rng, tile.jit)
        for p in placed.pools:
            tile.draw.rectangle(p, fill=pool_colour)
        tile.graph.relate(
            tile.graph.add("swimming pool", union_box(placed.pools), ("blue", "small"), len(placed.pools)),
            "next to",
            building_id,
        )
    if kind.name == "warehouse":
        _industrial_yard(tile, block, placed.roofs, building_id, water)
    elif kind.name in ("shop", "office building", "skyscraper") and tile.lat["density"] < 0.7 and rng.random() < 0.5:
        _parking_lot(tile, block, building_id, streets.colour, water, pending)
    # a few trees in yards, where greenery allows
    greenery = tile.lat["greenery"]
    n_yard = capped_poisson(rng, greenery * bw * bh / (40 * unit * unit), 25)
    if n_yard:
        yard = [(x0 + bw * rng.random(), y0 + bh * rng.random(), unit * (0.9 + 0.9 * rng.random())) for _ in range(n_yard)]
        pending.trees.append((building_id, yard, "next to"))


def _park(tile: Tile, block: Box, road_id: int | None, grass: RGB, sidewalk: RGB, pending: Pending) -> None:
    """A lawn with an optional footpath and trees (planted with the others, after the roofs)."""
    S, unit, rng, graph = tile.size, tile.unit, tile.rng, tile.graph
    x0, y0, x1, y1 = block
    bw, bh = x1 - x0, y1 - y0
    tile.draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=grass)
    park_id = graph.add("park", (x0, y0, x1, y1), ("green", size_word(bw * bh / (S * S), 0.05, 0.2)))
    graph.relate(park_id, "next to", road_id)
    if rng.random() < 0.5:  # a footpath across the park
        px = x0 + bw * (0.2 + 0.6 * rng.random())
        tile.draw.line((px, y0, px + (rng.random() - 0.5) * bw, y1), fill=sidewalk, width=max(1, int(unit)))
        graph.relate(graph.add("footpath", (min(px, x1 - 2), y0, x1, y1), ("narrow",)), "in", park_id)
    n = capped_poisson(rng, bw * bh / (30 * unit * unit) * (0.4 + tile.lat["greenery"]), 60)
    trees = [(x0 + bw * rng.random(), y0 + bh * rng.random(), unit * (1.1 + 1.0 * rng.random())) for _ in range(n)]
    pending.trees.append((park_id, trees, "in"))


def _open_lot(tile: Tile, block: Box) -> None:
    """A vacant block: a grassy field where greenery allows, else a bare empty lot."""
    x0, y0, x1, y1 = block
    if tile.rng.random() < tile.lat["greenery"]:
        tile.draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=jitter(tile.style.grass, tile.rng, 2 * tile.jit))
        tile.graph.add("field", (x0, y0, x1, y1), ("grassy", "open"))
    else:
        tile.graph.add("empty lot", (x0, y0, x1, y1), ("bare",))


def _building_kind(tile: Tile, block: Box, road_id: int | None, shares: np.ndarray) -> _Kind:
    """The block's land use, drawn from the shares, and the building type it gets (a house may get a lawn)."""
    unit, rng, style = tile.unit, tile.rng, tile.style
    density, height, greenery = tile.lat["density"], tile.lat["building_height"], tile.lat["greenery"]
    use = int(np.searchsorted(np.cumsum(shares), rng.random() * 0.9999))
    coverage = min(0.9, 0.18 + 0.72 * density * (0.85 + 0.3 * rng.random()))
    if use == 0:  # residential: houses in low density, apartment slabs in high
        apartments = rng.random() < density**1.3 + 0.3 * height
        lot = (13.0 if apartments else 6.5) * unit * style.footprint_scale * (0.85 + 0.3 * rng.random())
        floors_mean = 4 + 22 * height if apartments else 1.5 + 1.5 * height
        name = "apartment building" if apartments else "house"
        palette = style.roof_residential if rng.random() < 0.75 else style.roof_commercial
        if not apartments and rng.random() < 0.6 * greenery:
            x0, y0, x1, y1 = block
            tile.draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=jitter(style.grass, rng, 2 * tile.jit))
            tile.graph.relate(tile.graph.add("lawn", (x0, y0, x1, y1), ("green",)), "next to", road_id)
    elif use == 1:  # commercial: flat roofs with rooftop units, taller with building_height
        lot = 12.0 * unit * style.footprint_scale * (0.8 + 0.5 * rng.random())
        floors_mean = 2 + 40 * height**1.5
        name = "skyscraper" if floors_mean > 25 else "office building" if floors_mean > 8 else "shop"
        palette = style.roof_commercial if rng.random() < 0.7 else style.roof_residential
    else:  # industrial: large flat sheds with corrugated roofs, tanks and trucks in the yard
        lot = 21.0 * unit * style.footprint_scale * (0.8 + 0.5 * rng.random())
        floors_mean = 1.5 + 2.0 * height
        coverage = min(coverage, 0.65)
        name = "warehouse"
        palette = style.roof_industrial if rng.random() < 0.75 else style.roof_commercial
    return _Kind(name, lot, floors_mean, coverage, palette)


def _place_buildings(
    tile: Tile, block: Box, kind: _Kind, water: Water, rules: _BlockRules, pending: Pending
) -> _Footprints:
    """Footprints on a grid of lots, each casting its shadow; pools beside some houses."""
    S, unit, rng, style = tile.size, tile.unit, tile.rng, tile.style
    density, affluence = tile.lat["density"], tile.lat["affluence"]
    x0, y0, x1, y1 = block
    bw, bh = x1 - x0, y1 - y0
    nx, ny = max(1, round(bw / kind.lot)), max(1, round(bh / kind.lot))
    cw, ch = bw / nx, bh / ny
    occupancy = min(1.0, 0.35 + 0.9 * density)
    side = math.sqrt(min(0.92, kind.coverage / occupancy))
    out = _Footprints()
    main_colour = pick(kind.palette, rng)
    for j in range(ny):
        for i in range(nx):
            if rng.random() > occupancy:
                continue
            stretch = 1.0 + (1.2 if kind.name == "apartment building" else 0.4) * rng.random()
            ratio = stretch if rng.random() < 0.5 else 1.0 / stretch
            area = cw * ch * side * side
            fw = max(2.0 * unit, min(cw - 1, math.sqrt(area * ratio)))
            fh = max(2.0 * unit, min(ch - 1, math.sqrt(area / ratio)))
            bx = x0 + i * cw + (cw - fw) * rng.random()
            by = y0 + j * ch + (ch - fh) * rng.random()
            if water.covers(bx, by, bx + fw, by + fh):
                continue
            floors = max(1.0, kind.floors_mean * (0.6 + 0.8 * rng.random()))
            out.floors.append(floors)
            length = min(0.3 * S, floors * 0.55 * unit * style.height_scale)
            pending.shadow.polygon(
                shadow_polygon(bx, by, bx + fw - 1, by + fh - 1, rules.sun_dx * length, rules.sun_dy * length), fill=255
            )
            colour = main_colour if rng.random() < 0.7 else pick(kind.palette, rng)
            colour = jitter(colour, rng, rules.roof_jit)
            out.roofs.append((bx, by, bx + fw - 1, by + fh - 1))
            out.colours.append(colour)
            if kind.name == "house" and rng.random() < 0.5 * affluence * (1.0 - density) + 0.02:
                px = bx + fw + 0.5 * unit if bx + fw + 3 * unit < x0 + (i + 1) * cw else bx - 2.5 * unit
                py = by + fh * rng.random() * 0.5
                if x0 <= px and px + 2 * unit < x1 and not water.covers(px, py, px + 2 * unit, py + 1.5 * unit):
                    out.pools.append((px, py, px + 2 * unit, py + 1.5 * unit))
    return out


def _draw_roofs(tile: Tile, name: str, placed: _Footprints, pending: Pending) -> None:
    """Roofs by type: pitched houses (one half in shade), corrugated sheds, flat roofs with rooftop units."""
    unit, rng, draw = tile.unit, tile.rng, tile.draw
    for (bx0, by0, bx1, by1), colour in zip(placed.roofs, placed.colours, strict=True):
        draw.rectangle((bx0, by0, bx1, by1), fill=colour)
        pending.roofs.rectangle((bx0, by0, bx1, by1), fill=255)
        w_, h_ = bx1 - bx0, by1 - by0
        if name == "house" and rng.random() < tile.style.pitched_roof_share:  # ridge: one half in shade
            dark = (int(colour[0] * 0.78), int(colour[1] * 0.78), int(colour[2] * 0.78))
            if w_ >= h_:
                draw.rectangle((bx0, by0 + h_ / 2, bx1, by1), fill=dark)
            else:
                draw.rectangle((bx0 + w_ / 2, by0, bx1, by1), fill=dark)
        elif name == "warehouse":  # corrugation / skylight stripes across the short side
            stripe = (min(255, colour[0] + 22), min(255, colour[1] + 22), min(255, colour[2] + 22))
            step = max(2.0, 3.0 * unit)
            if w_ >= h_:
                for sx in np.arange(bx0 + step / 2, bx1, step)[:12]:
                    draw.line((sx, by0, sx, by1), fill=stripe)
            else:
                for sy in np.arange(by0 + step / 2, by1, step)[:12]:
                    draw.line((bx0, sy, bx1, sy), fill=stripe)
        elif name != "house":  # flat roof: parapet edge and rooftop units
            edge = (int(colour[0] * 0.8), int(colour[1] * 0.8), int(colour[2] * 0.8))
            draw.rectangle((bx0, by0, bx1, by1), outline=edge)
            if w_ > 4 * unit and h_ > 4 * unit:
                ux, uy = bx0 + 1 + (w_ - 3 * unit) * rng.random(), by0 + 1 + (h_ - 3 * unit) * rng.random()
                draw.rectangle((ux, uy, ux + 1.5 * unit, uy + 1.5 * unit), fill=(200, 200, 198))


def _add_buildings(tile: Tile, name: str, placed: _Footprints, road_id: int | None, water: Water) -> int:
    """The block's buildings as one graph object with height, colour and use words; 'along' its road."""
    unit, roofs = tile.unit, placed.roofs
    bbox = (
        min(r[0] for r in roofs), min(r[1] for r in roofs), max(r[2] for r in roofs) + 1, max(r[3] for r in roofs) + 1
    )
    mean_floors = float(np.mean(placed.floors))
    attributes = [
        "tall" if mean_floors >= 12 else "low-rise" if mean_floors <= 3 else "mid-rise",
        colour_name(placed.colours[0]),
    ]
    if name == "house":
        attributes.append("residential")
    elif name == "apartment building":
        attributes += ["residential", "flat-roofed"]
    elif name == "warehouse":
        attributes += ["industrial", "large", "flat-roofed"]
    else:
        attributes += ["commercial", "flat-roofed"]
    building_id = tile.graph.add(name, bbox, attributes, count=len(roofs))
    tile.graph.relate(building_id, "along", road_id)
    if water.id is not None and water.covers(bbox[0] - 3 * unit, bbox[1] - 3 * unit, bbox[2] + 3 * unit, bbox[3] + 3 * unit):
        tile.graph.relate(building_id, "next to", water.id)
    return building_id


def _industrial_yard(tile: Tile, block: Box, roofs: list[Box], building_id: int, water: Water) -> None:
    """A warehouse yard: a storage tank clear of the roofs, or a parked truck."""
    unit, rng = tile.unit, tile.rng
    x0, y0, x1, y1 = block
    bw, bh = x1 - x0, y1 - y0
    yard_x, yard_y = x0 + bw * rng.random(), y0 + bh * rng.random()
    if rng.random() < 0.5:
        rad = (1.5 + 1.5 * rng.random()) * unit
        tank = (yard_x - rad, yard_y - rad, yard_x + rad, yard_y + rad)
        clear = not any(r[0] - rad <= yard_x <= r[2] + rad and r[1] - rad <= yard_y <= r[3] + rad for r in roofs)
        if clear and not water.covers(*tank):
            tile.draw.ellipse(tank, fill=(214, 214, 210), outline=(150, 150, 146))
            tile.graph.relate(tile.graph.add("storage tank", tank, ("round", "white")), "next to", building_id)
    else:
        truck = (yard_x, yard_y, yard_x + 4 * unit, yard_y + 1.6 * unit)
        if not water.covers(*truck):
            tile.draw.rectangle(truck, fill=jitter((228, 228, 224), rng, tile.jit))
            tile.graph.relate(tile.graph.add("truck", truck, ("white",)), "next to", building_id)


def _parking_lot(tile: Tile, block: Box, building_id: int, paving: RGB, water: Water, pending: Pending) -> None:
    """A parking lot in the leftover corner of a commercial block; its cars are drawn with the traffic."""
    unit, rng, density = tile.unit, tile.rng, tile.lat["density"]
    x0, y0, x1, y1 = block
    bw = x1 - x0
    lx, ly = x0 + 0.5 * unit, y1 - 5.5 * unit
    lot_box = (lx, ly, lx + min(bw - unit, 12 * unit), ly + 5 * unit)
    if not water.covers(*lot_box) and lot_box[2] > lot_box[0] + 4 * unit:
        tile.draw.rectangle(lot_box, fill=paving)
        lot_id = tile.graph.add("parking lot", lot_box, ("paved",))
        tile.graph.relate(lot_id, "next to", building_id)
        cars = [
            (cx, ly + 0.6 * unit + row * 2.5 * unit, cx + 1.2 * unit, ly + 0.6 * unit + row * 2.5 * unit + 1.8 * unit)
            for row in (0, 1)
            for cx in np.arange(lx + 0.5 * unit, lot_box[2] - 1.5 * unit, 1.8 * unit)
            if rng.random() < 0.3 + 0.5 * density
        ]
        pending.parked.append((lot_id, cars))


# -- trees, traffic, umbrellas, camera ------------------------------------------------------------------

def _street_trees(tile: Tile, streets: Streets, pending: Pending) -> None:
    """Rows of street trees along roads, with gaps; more and denser rows with greenery."""
    S, unit, rng, greenery = tile.size, tile.unit, tile.rng, tile.lat["greenery"]
    for (axis, centre, w), rid in zip(streets.roads, streets.ids, strict=True):
        if rng.random() > greenery:
            continue
        gap = (3.5 + 2.0 * rng.random()) * unit
        row = []
        for t in np.arange(rng.random() * gap, S, gap):
            for side in (-1, 1):
                if rng.random() > 0.4 + 0.6 * greenery:  # gaps in the row
                    continue
                off = centre + side * (w / 2 + 1.2 * unit)
                row.append((off, t, unit * (0.9 + 0.5 * rng.random())) if axis == "v" else (t, off, unit * (0.9 + 0.5 * rng.random())))
        pending.trees.append((rid, row, "along"))


def _plant_trees(tile: Tile, groups: list[TreeGroup], blocked: np.ndarray, colour: RGB) -> None:
    """Tree crowns not on water or roofs, one graph object per group related to its anchor; then highlights."""
    S, draw, graph = tile.size, tile.draw, tile.graph
    light = (min(255, colour[0] + 25), min(255, colour[1] + 30), min(255, colour[2] + 15))
    highlights = []
    for anchor, spots, predicate in groups:
        kept = []
        for x, y, rad in spots:
            xi, yi = int(x), int(y)
            if not (0 <= xi < S and 0 <= yi < S) or blocked[yi, xi]:
                continue
            draw.ellipse((x - rad, y - rad, x + rad, y + rad), fill=colour)
            highlights.append((x - rad * 0.3, y - rad * 0.3))
            kept.append((x - rad, y - rad, x + rad, y + rad))
        if kept:
            tid = graph.add("tree", union_box(kept), ("green", "leafy"), len(kept))
            graph.relate(tid, predicate, anchor)
    if highlights:
        draw.point(highlights, fill=light)


def _traffic(tile: Tile, streets: Streets, water: Water, parked: list[tuple[int | None, list[Box]]]) -> None:
    """Cars on roads (more with density and road density), then the parked cars in lots."""
    S, unit, rng, style, graph = tile.size, tile.unit, tile.rng, tile.style, tile.graph
    density, road_density = tile.lat["density"], tile.lat["road_density"]
    car_len = (2.4 + 0.7 * tile.lat["affluence"]) * unit  # bigger cars in richer areas (subtle)
    car_wid = 1.3 * unit
    for (axis, centre, w), rid, is_bridge in zip(streets.roads, streets.ids, streets.bridged, strict=True):
        n = capped_poisson(rng, S / (10 * unit) * (0.15 + 0.9 * density * (0.3 + road_density)), 14)
        boxes = []
        for _ in range(n):
            t = rng.random() * (S - car_len)
            lane = centre + (0.25 if rng.random() < 0.5 else -0.25) * w - car_wid / 2
            box = (lane, t, lane + car_wid, t + car_len) if axis == "v" else (t, lane, t + car_len, lane + car_wid)
            if not is_bridge and water.covers(*box):
                continue
            tile.draw.rectangle(box, fill=jitter(pick(style.car_colors, rng), rng, tile.jit))
            boxes.append(box)
        if boxes:
            cid = graph.add("car", union_box(boxes), ("moving",), len(boxes))
            graph.relate(cid, "on", rid)
    for lot_id, cars in parked:
        for box in cars:
            tile.draw.rectangle(box, fill=jitter(pick(style.car_colors, rng), rng, tile.jit))
        if cars:
            graph.relate(graph.add("car", union_box(cars), ("parked",), len(cars)), "in", lot_id)


def _umbrellas(tile: Tile, streets: Streets, blocked: np.ndarray) -> None:
    """Nightlife, subtly: café umbrellas along one street, more with nightlife, commerce and density."""
    S, unit, rng, lat = tile.size, tile.unit, tile.rng, tile.lat
    n_umbrellas = capped_poisson(rng, 6 * lat["nightlife"] * lat["commercial"] * lat["density"], 10)
    if not (n_umbrellas and streets.roads):
        return
    k = int(rng.random() * len(streets.roads))
    axis, centre, w = streets.roads[k]
    off = centre + w / 2 + 1.5 * unit
    spots = []
    for _ in range(n_umbrellas):
        t = rng.random() * S
        x, y = (off, t) if axis == "v" else (t, off)
        if 0 <= x < S and 0 <= y < S and not blocked[int(y), int(x)]:
            tile.draw.ellipse((x - 0.8 * unit, y - 0.8 * unit, x + 0.8 * unit, y + 0.8 * unit), fill=pick(_UMBRELLAS, rng))
            spots.append((x - 0.8 * unit, y - 0.8 * unit, x + 0.8 * unit, y + 0.8 * unit))
    if spots:
        uid = tile.graph.add("umbrella", union_box(spots), ("colourful",), len(spots))
        tile.graph.relate(uid, "along", streets.ids[k])


# -- the tile -------------------------------------------------------------------------------------------

def render_satellite(
    latent: Mapping[str, float], style: CityStyle, size: int, rng: np.random.Generator
) -> tuple[Image.Image, SceneGraph]:
    """A ``size``×``size`` RGB top-down tile of a region with latents ``latent``, and its scene graph.

    A pure function of (latent, style, size, rng state); ``deprivation`` is never read. The stages
    run in a fixed order, and each draws from ``rng`` in turn.
    """
    if size < 48:  # below ~40 px a lot can be narrower than a pixel and a footprint gets a negative width
        raise ValueError(f"satellite tiles must be at least 48 pixels, got {size}")
    lat = visible_latents(latent)
    graph = SceneBuilder("satellite", size, size, view="top-down")
    img = _ground(style, size, rng)
    tile = Tile(ImageDraw.Draw(img), graph, rng, style, lat, size, size / 64.0, float(style.colour_jitter))
    water = place_water(tile)
    streets = _lay_streets(tile, water)
    _draw_streets(tile, streets)
    _draw_water(tile, water)
    _add_roads(tile, streets, water)
    marking, marking_mask = _lane_markings(tile, streets, water)
    rules = _block_rules(tile)
    pending = Pending(size)
    for block in streets.blocks(tile.unit):
        _fill_block(tile, block, streets, water, rules, pending)
    _street_trees(tile, streets, pending)
    roof_mask = np.asarray(pending.roof_img) > 0
    blocked = water.mask | roof_mask
    _plant_trees(tile, pending.trees, blocked, rules.tree)
    _traffic(tile, streets, water, pending.parked)
    _umbrellas(tile, streets, blocked)
    # lane markings, then shadows: they darken ground, roads, trees and cars but not roofs
    if marking_mask.any():
        ys, xs = np.nonzero(marking_mask & ~roof_mask)
        tile.draw.point(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=marking)
    shade = (np.asarray(pending.shadow_img) > 0) & ~roof_mask
    tone = np.array([200.0, 200.0, 200.0], dtype=np.float32)
    return finish(img, rng, 0.5 * style.haze, tone, 10.0, shade, style.shadow_darkness), graph.build()
