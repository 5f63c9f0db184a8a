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

import numpy as np
from PIL import Image, ImageDraw

from urbanln_bench.synth.latents import LATENT_NAMES
from urbanln_bench.synth.scene import SceneBuilder, SceneGraph, colour_name
from urbanln_bench.synth.style import RGB, CityStyle

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


def _shadow_polygon(x0: float, y0: float, x1: float, y1: float, dx: float, dy: float) -> list[tuple[float, float]]:
    """Convex hull of a rectangle and its copy shifted by (dx, dy): the shadow a box casts."""
    a, b, c, d = (x0, y0), (x1, y0), (x1, y1), (x0, y1)

    def s(p: tuple[float, float]) -> tuple[float, float]:
        return (p[0] + dx, p[1] + dy)

    if dx >= 0 and dy >= 0:
        return [a, b, s(b), s(c), s(d), d]
    if dx < 0 and dy >= 0:
        return [a, b, c, s(c), s(d), s(a)]
    if dx < 0:
        return [s(a), s(b), b, c, d, s(d)]
    return [s(a), s(b), s(c), c, d, a]


def _water_polygon(
    fraction: float, size: int, rng: np.random.Generator
) -> tuple[str, list[tuple[float, float]], list[tuple[float, float]] | None]:
    """A river, lake or coast covering about ``fraction`` of the tile; also a beach outline for coasts."""
    S = float(size)
    shape = rng.random()
    if fraction > 0.3 and shape < 0.45:
        kind = "sea"
    elif shape < 0.75 or fraction > 0.45:
        kind = "river"
    else:
        kind = "lake"
    beach: list[tuple[float, float]] | None = None
    if kind == "lake":
        cx, cy = S * (0.25 + 0.5 * rng.random()), S * (0.25 + 0.5 * rng.random())
        radius = S * math.sqrt(fraction / math.pi)
        n = 10
        radii = radius * (0.8 + 0.35 * rng.random(n))
        phase = rng.random() * math.tau
        pts = [
            (cx + radii[k] * math.cos(phase + k * math.tau / n), cy + radii[k] * math.sin(phase + k * math.tau / n))
            for k in range(n)
        ]
        return kind, pts, None
    xs = np.linspace(-0.05 * S, 1.05 * S, 9)
    wobble = (rng.random(9) - 0.5) * 0.12 * S
    if kind == "sea":
        depth = fraction * S + wobble
        pts = [(x, -1.0) for x in xs[::-1]] + [(x, float(d)) for x, d in zip(xs, depth, strict=True)]
        if rng.random() < 0.6:
            band = 0.05 * S + 0.04 * S * rng.random()
            beach = [(x, -1.0) for x in xs[::-1]] + [(x, float(d + band)) for x, d in zip(xs, depth, strict=True)]
    else:
        width = fraction * S
        centre = S * (0.25 + 0.5 * rng.random()) + wobble
        amp = 0.15 * S * rng.random()
        bend = np.sin(np.linspace(0.0, math.pi * (1 + 2 * rng.random()), 9) + rng.random() * math.tau) * amp
        centre = centre + bend
        pts = [(x, float(c - width / 2)) for x, c in zip(xs, centre, strict=True)]
        pts += [(x, float(c + width / 2)) for x, c in zip(xs[::-1], centre[::-1], strict=True)]
    orientation = int(rng.random() * 4)  # rotate the canonical shape to one of four sides

    def turn(p: tuple[float, float]) -> tuple[float, float]:
        x, y = p
        return [(x, y), (S - 1 - y, x), (x, S - 1 - y), (y, x)][orientation]

    pts = [turn(p) for p in pts]
    if beach is not None:
        beach = [turn(p) for p in beach]
    return kind, pts, beach


def _mottled(base: np.ndarray, amplitude: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """A ``size``² uint8 RGB field of colour ``base`` with smooth low-frequency light/dark patches."""
    knots = np.linspace(0.0, size - 1.0, 5)
    grid = np.arange(size, dtype=np.float32)
    a, b, c, d = (np.interp(grid, knots, rng.random(5) - 0.5).astype(np.float32) for _ in range(4))
    mottle = (a[None, :] + b[:, None] + 2.0 * c[None, :] * d[:, None]) * amplitude
    return np.clip(base[None, None, :] + mottle[:, :, None], 0, 255).astype(np.uint8)


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


def _bbox_of(points: Sequence[tuple[float, float]]) -> tuple[float, float, float, float]:
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    return (min(xs), min(ys), max(xs) + 1, max(ys) + 1)


def _size_word(area: float, small: float, large: float) -> str:
    return "small" if area < small else "large" if area > large else ""


def render_satellite(
    latent: Mapping[str, float], style: CityStyle, size: int, rng: np.random.Generator
) -> tuple[Image.Image, SceneGraph]:
    """A ``size``×``size`` RGB top-down tile of a region with latents ``latent``, and its scene graph.

    A pure function of (latent, style, size, rng state); ``deprivation`` is never read.
    """
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    lat = visible_latents(latent)
    S = size
    unit = S / 64.0  # drawing scale: all lengths below are in pixels of a 64-px tile
    jit = float(style.colour_jitter)
    density, greenery, road_density = lat["density"], lat["greenery"], lat["road_density"]
    height, affluence = lat["building_height"], lat["affluence"]
    graph = SceneBuilder("satellite", S, S, view="top-down")

    # --- ground: the city's ground colour, jittered per tile, with low-frequency mottling
    base = np.array(jitter(style.ground, rng, 2.0 * jit), dtype=np.float32)
    img = Image.fromarray(_mottled(base, 20.0 * style.ground_texture, S, rng), "RGB")
    draw = ImageDraw.Draw(img)

    # --- water first as a mask, so nothing is built on it
    # a region with water share w shows water in about 1.6·w + 0.1 of its tiles, covering ≈ 0.8·w on average
    water_present = min(1.0, 0.1 + 1.6 * lat["water"])
    water_fraction = lat["water"] / water_present * (0.6 + 0.4 * rng.random())
    water_mask = np.zeros((S, S), dtype=bool)
    water_kind, water_pts, beach_pts = "", [], None
    if lat["water"] > 0.04 and rng.random() < water_present:
        water_kind, water_pts, beach_pts = _water_polygon(max(0.06, min(0.8, water_fraction)), S, rng)
        mask_img = Image.new("L", (S, S), 0)
        ImageDraw.Draw(mask_img).polygon(water_pts, fill=255)
        water_mask = np.asarray(mask_img) > 0

    # --- street grid: spacing from road_density and the style's block size and shape
    spacing = S * (0.62 - 0.38 * road_density) * style.block_size * (0.9 + 0.2 * rng.random())
    aspect = math.sqrt(style.block_aspect)
    width_px = max(1.0, unit * style.street_width * (1.5 + 1.6 * road_density) * (0.85 + 0.3 * rng.random()))
    roads: list[tuple[str, float, float]] = []  # (axis, centre, width); axis "v" runs north–south
    for axis, step in (("v", spacing * aspect), ("h", spacing / aspect)):
        pos = rng.random() * step
        while pos < S:
            major = rng.random() < 0.3
            w = width_px * (1.6 if major else 1.0)
            centre = pos + (rng.random() - 0.5) * 0.2 * step
            if w * 0.5 < centre < S - w * 0.5:
                roads.append((axis, centre, w))
            pos += step
    road_colour = jitter(style.road, rng, jit)
    sidewalk_colour = jitter(style.sidewalk, rng, jit)

    def road_rect(axis: str, centre: float, w: float) -> tuple[float, float, float, float]:
        if axis == "v":
            return (centre - w / 2, 0, centre + w / 2 - 1, S - 1)
        return (0, centre - w / 2, S - 1, centre + w / 2 - 1)

    def crosses_water(axis: str, centre: float) -> bool:
        c = int(min(S - 1, max(0, centre)))
        return bool(water_mask[:, c].any() if axis == "v" else water_mask[c, :].any())

    bridged = [water_kind == "river" and crosses_water(a, c) and rng.random() < 0.7 for a, c, _ in roads]
    for (axis, centre, w), is_bridge in zip(roads, bridged, strict=True):
        if not is_bridge:
            if w >= 3.5 * unit:  # sidewalks show on wide streets
                x0, y0, x1, y1 = road_rect(axis, centre, w + 2 * unit)
                draw.rectangle((x0, y0, x1, y1), fill=sidewalk_colour)
            draw.rectangle(road_rect(axis, centre, w), fill=road_colour)

    water_id = None
    if water_kind:
        if beach_pts is not None:
            draw.polygon(beach_pts, fill=jitter(_SAND, rng, jit))
            graph.add("beach", _bbox_of(beach_pts), ("sandy",))
        water_colour = jitter(style.water, rng, 1.5 * jit)
        draw.polygon(water_pts, fill=water_colour)
        area = water_mask.mean()
        water_id = graph.add(
            water_kind, _bbox_of(water_pts), (_size_word(area, 0.12, 0.35), colour_name(water_colour))
        )
    road_ids: list[int | None] = []
    for (axis, centre, w), is_bridge in zip(roads, bridged, strict=True):
        rect = road_rect(axis, centre, w)
        if is_bridge:
            draw.rectangle(rect, fill=road_colour)
        road_ids.append(graph.add("road", rect, ("wide" if w > 3.2 * unit else "narrow", "paved")))
        if is_bridge:
            wet = np.flatnonzero(water_mask[:, int(centre)] if axis == "v" else water_mask[int(centre), :])
            span = (int(wet.min()), int(wet.max()))
            box = (
                (centre - w / 2, span[0], centre + w / 2, span[1] + 1)
                if axis == "v"
                else (span[0], centre - w / 2, span[1] + 1, centre + w / 2)
            )
            bridge_id = graph.add("bridge", box, ())
            graph.relate(bridge_id, "over", water_id)
            graph.relate(bridge_id, "part of", road_ids[-1])

    # lane markings as a pixel mask (painted at the shadow stage), only on roads wide enough to carry them
    marking = jitter(style.lane_marking, rng, jit)
    marking_mask = np.zeros((S, S), dtype=bool)
    if style.lane_marking_style != "none":
        period = max(3, int(round(4 * unit)))
        along = np.ones(S, dtype=bool)
        if style.lane_marking_style == "dashed":
            along = (np.arange(S) + int(rng.random() * period)) % period <= period // 2
        for (axis, centre, w), is_bridge in zip(roads, bridged, strict=True):
            if w < 3.0 * unit:
                continue
            offsets = (-0.5 * unit, 0.5 * unit) if style.lane_marking_style == "double" else (0.0,)
            for off in offsets:
                c = int(min(S - 1, max(0, centre + off)))
                if axis == "v":
                    marking_mask[:, c] |= along & (is_bridge | ~water_mask[:, c])
                else:
                    marking_mask[c, :] |= along & (is_bridge | ~water_mask[c, :])

    # --- blocks between roads
    def cuts(axis: str) -> list[float]:
        edges = [0.0]
        for _axis, centre, w in sorted((r for r in roads if r[0] == axis), key=lambda r: r[1]):
            edges += [centre - w / 2 - 1.0 * unit, centre + w / 2 + 1.0 * unit]
        return edges + [float(S)]

    xs_cut, ys_cut = cuts("v"), cuts("h")
    blocks = [
        (xs_cut[i], ys_cut[j], xs_cut[i + 1], ys_cut[j + 1])
        for j in range(0, len(ys_cut), 2)
        for i in range(0, len(xs_cut), 2)
    ]

    def nearest_road(block: tuple[float, float, float, float]) -> int | None:
        x0, y0, x1, y1 = block
        best, best_d = None, float("inf")
        for (axis, centre, _), rid in zip(roads, road_ids, strict=True):
            d = min(abs(centre - x0), abs(centre - x1)) if axis == "v" else min(abs(centre - y0), abs(centre - y1))
            if d < best_d:
                best, best_d = rid, d
        return best

    def on_water(x0: float, y0: float, x1: float, y1: float) -> bool:
        if not water_kind:
            return False
        xa, ya = int(min(S - 1, max(0, x0))), int(min(S - 1, max(0, y0)))
        xb, yb = int(min(S - 1, max(0, x1))), int(min(S - 1, max(0, y1)))
        return bool(
            water_mask[ya, xa] or water_mask[ya, xb] or water_mask[yb, xa] or water_mask[yb, xb]
            or water_mask[(ya + yb) // 2, (xa + xb) // 2]
        )

    shares = np.array([lat["residential"], lat["commercial"], lat["industrial"]]) + 0.03
    shares = shares / shares.sum()
    park_p = 0.55 * greenery**1.5 * (1.0 - 0.5 * density)
    vacant_p = 0.45 * (1.0 - density) ** 2
    shadow_img = Image.new("L", (S, S), 0)
    shadow_draw = ImageDraw.Draw(shadow_img)
    roof_img = Image.new("L", (S, S), 0)
    roof_draw = ImageDraw.Draw(roof_img)
    azimuth = math.radians(style.sun_azimuth_deg)
    sun_dx, sun_dy = math.cos(azimuth), math.sin(azimuth)
    grass_colour = jitter(style.grass, rng, jit)
    tree_colour = jitter(style.tree, rng, jit)
    roof_jit = jit * (1.7 - affluence)  # worse upkeep: more patchy roofs (subtle affluence cue)
    pending_trees: list[tuple[int | None, list[tuple[float, float, float]], str]] = []
    parked: list[tuple[int | None, list[tuple[float, float, float, float]]]] = []

    for block in blocks:
        x0, y0, x1, y1 = block
        bw, bh = x1 - x0, y1 - y0
        if bw < 3 * unit or bh < 3 * unit or on_water(x0, y0, x1 - 1, y1 - 1) and water_mask[
            int(min(S - 1, (y0 + y1) / 2)), int(min(S - 1, (x0 + x1) / 2))
        ]:
            continue
        road_id = nearest_road(block)
        r = rng.random()
        if r < park_p and bw * bh > 60 * unit * unit:
            draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=grass_colour)
            park_id = graph.add("park", (x0, y0, x1, y1), ("green", _size_word(bw * bh / (S * S), 0.05, 0.2)))
            graph.relate(park_id, "next to", road_id)
            if rng.random() < 0.5:  # a footpath across the park
                px = x0 + bw * (0.2 + 0.6 * rng.random())
                draw.line((px, y0, px + (rng.random() - 0.5) * bw, y1), fill=sidewalk_colour, width=max(1, int(unit)))
                graph.relate(graph.add("footpath", (min(px, x1 - 2), y0, x1, y1), ("narrow",)), "in", park_id)
            n = capped_poisson(rng, bw * bh / (30 * unit * unit) * (0.4 + greenery), 60)
            trees = [
                (x0 + bw * rng.random(), y0 + bh * rng.random(), unit * (1.1 + 1.0 * rng.random())) for _ in range(n)
            ]
            pending_trees.append((park_id, trees, "in"))
            continue
        if r < park_p + vacant_p:
            if rng.random() < greenery:
                draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=jitter(style.grass, rng, 2 * jit))
                graph.add("field", (x0, y0, x1, y1), ("grassy", "open"))
            else:
                graph.add("empty lot", (x0, y0, x1, y1), ("bare",))
            continue
        use = int(np.searchsorted(np.cumsum(shares), rng.random() * 0.9999))
        coverage = min(0.9, 0.18 + 0.72 * density * (0.85 + 0.3 * rng.random()))
        if use == 0:  # residential: houses in low density, apartment slabs in high
            apartments = rng.random() < density**1.3 + 0.3 * height
            lot = (13.0 if apartments else 6.5) * unit * style.footprint_scale * (0.85 + 0.3 * rng.random())
            floors_mean = 4 + 22 * height if apartments else 1.5 + 1.5 * height
            name = "apartment building" if apartments else "house"
            palette = style.roof_residential if rng.random() < 0.75 else style.roof_commercial
            if not apartments and rng.random() < 0.6 * greenery:
                draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=jitter(style.grass, rng, 2 * jit))
                graph.relate(graph.add("lawn", (x0, y0, x1, y1), ("green",)), "next to", road_id)
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
        nx, ny = max(1, round(bw / lot)), max(1, round(bh / lot))
        cw, ch = bw / nx, bh / ny
        occupancy = min(1.0, 0.35 + 0.9 * density)
        side = math.sqrt(min(0.92, coverage / occupancy))
        roofs: list[tuple[float, float, float, float]] = []
        roof_colours: list[RGB] = []
        pools: list[tuple[float, float, float, float]] = []
        floors_seen: list[float] = []
        main_colour = pick(palette, rng)
        for j in range(ny):
            for i in range(nx):
                if rng.random() > occupancy:
                    continue
                stretch = 1.0 + (1.2 if name == "apartment building" else 0.4) * rng.random()
                ratio = stretch if rng.random() < 0.5 else 1.0 / stretch
                area = cw * ch * side * side
                fw = max(2.0 * unit, min(cw - 1, math.sqrt(area * ratio)))
                fh = max(2.0 * unit, min(ch - 1, math.sqrt(area / ratio)))
                bx = x0 + i * cw + (cw - fw) * rng.random()
                by = y0 + j * ch + (ch - fh) * rng.random()
                if on_water(bx, by, bx + fw, by + fh):
                    continue
                floors = max(1.0, floors_mean * (0.6 + 0.8 * rng.random()))
                floors_seen.append(floors)
                length = min(0.3 * S, floors * 0.55 * unit * style.height_scale)
                shadow_draw.polygon(
                    _shadow_polygon(bx, by, bx + fw - 1, by + fh - 1, sun_dx * length, sun_dy * length), fill=255
                )
                colour = main_colour if rng.random() < 0.7 else pick(palette, rng)
                colour = jitter(colour, rng, roof_jit)
                roofs.append((bx, by, bx + fw - 1, by + fh - 1))
                roof_colours.append(colour)
                if name == "house" and rng.random() < 0.5 * affluence * (1.0 - density) + 0.02:
                    px = bx + fw + 0.5 * unit if bx + fw + 3 * unit < x0 + (i + 1) * cw else bx - 2.5 * unit
                    py = by + fh * rng.random() * 0.5
                    if x0 <= px and px + 2 * unit < x1 and not on_water(px, py, px + 2 * unit, py + 1.5 * unit):
                        pools.append((px, py, px + 2 * unit, py + 1.5 * unit))
        if not roofs:
            continue
        for (bx0, by0, bx1, by1), colour in zip(roofs, roof_colours, strict=True):
            draw.rectangle((bx0, by0, bx1, by1), fill=colour)
            roof_draw.rectangle((bx0, by0, bx1, by1), fill=255)
            w_, h_ = bx1 - bx0, by1 - by0
            if name == "house" and rng.random() < style.pitched_roof_share:  # ridge: one half in shade
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
        bbox = (
            min(r[0] for r in roofs), min(r[1] for r in roofs), max(r[2] for r in roofs) + 1, max(r[3] for r in roofs) + 1
        )
        mean_floors = float(np.mean(floors_seen))
        attributes = [
            "tall" if mean_floors >= 12 else "low-rise" if mean_floors <= 3 else "mid-rise",
            colour_name(roof_colours[0]),
        ]
        if name == "house":
            attributes.append("residential")
        elif name == "apartment building":
            attributes += ["residential", "flat-roofed"]
        elif name == "warehouse":
            attributes += ["industrial", "large", "flat-roofed"]
        else:
            attributes += ["commercial", "flat-roofed"]
        building_id = graph.add(name, bbox, attributes, count=len(roofs))
        graph.relate(building_id, "along", road_id)
        if water_id is not None and on_water(bbox[0] - 3 * unit, bbox[1] - 3 * unit, bbox[2] + 3 * unit, bbox[3] + 3 * unit):
            graph.relate(building_id, "next to", water_id)
        if pools:
            pool_colour = jitter(_POOL, rng, jit)
            for p in pools:
                draw.rectangle(p, fill=pool_colour)
            graph.relate(
                graph.add("swimming pool", _bbox_of([q[:2] for q in pools] + [q[2:] for q in pools]), ("blue", "small"), len(pools)),
                "next to",
                building_id,
            )
        if name == "warehouse":  # yard: storage tanks or a parked truck
            yard_x, yard_y = x0 + bw * rng.random(), y0 + bh * rng.random()
            if rng.random() < 0.5:
                rad = (1.5 + 1.5 * rng.random()) * unit
                tank = (yard_x - rad, yard_y - rad, yard_x + rad, yard_y + rad)
                clear = not any(r[0] - rad <= yard_x <= r[2] + rad and r[1] - rad <= yard_y <= r[3] + rad for r in roofs)
                if clear and not on_water(*tank):
                    draw.ellipse(tank, fill=(214, 214, 210), outline=(150, 150, 146))
                    graph.relate(graph.add("storage tank", tank, ("round", "white")), "next to", building_id)
            else:
                truck = (yard_x, yard_y, yard_x + 4 * unit, yard_y + 1.6 * unit)
                if not on_water(*truck):
                    draw.rectangle(truck, fill=jitter((228, 228, 224), rng, jit))
                    graph.relate(graph.add("truck", truck, ("white",)), "next to", building_id)
        elif name in ("shop", "office building", "skyscraper") and density < 0.7 and rng.random() < 0.5:
            # a parking lot in the leftover corner of the block
            lx, ly = x0 + 0.5 * unit, y1 - 5.5 * unit
            lot_box = (lx, ly, lx + min(bw - unit, 12 * unit), ly + 5 * unit)
            if not on_water(*lot_box) and lot_box[2] > lot_box[0] + 4 * unit:
                draw.rectangle(lot_box, fill=road_colour)
                lot_id = graph.add("parking lot", lot_box, ("paved",))
                graph.relate(lot_id, "next to", building_id)
                cars = [
                    (cx, ly + 0.6 * unit + row * 2.5 * unit, cx + 1.2 * unit, ly + 0.6 * unit + row * 2.5 * unit + 1.8 * unit)
                    for row in (0, 1)
                    for cx in np.arange(lx + 0.5 * unit, lot_box[2] - 1.5 * unit, 1.8 * unit)
                    if rng.random() < 0.3 + 0.5 * density
                ]
                parked.append((lot_id, cars))
        # a few trees in yards, where greenery allows
        n_yard = capped_poisson(rng, greenery * bw * bh / (40 * unit * unit), 25)
        if n_yard:
            yard = [(x0 + bw * rng.random(), y0 + bh * rng.random(), unit * (0.9 + 0.9 * rng.random())) for _ in range(n_yard)]
            pending_trees.append((building_id, yard, "next to"))

    # --- street trees along roads
    for (axis, centre, w), rid in zip(roads, road_ids, strict=True):
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
        pending_trees.append((rid, row, "along"))

    roof_mask = np.asarray(roof_img) > 0

    light = (min(255, tree_colour[0] + 25), min(255, tree_colour[1] + 30), min(255, tree_colour[2] + 15))
    blocked = water_mask | roof_mask
    highlights = []
    for anchor, spots, predicate in pending_trees:
        kept = []
        for x, y, rad in spots:
            xi, yi = int(x), int(y)
            if not (0 <= xi < S and 0 <= yi < S) or blocked[yi, xi]:
                continue
            draw.ellipse((x - rad, y - rad, x + rad, y + rad), fill=tree_colour)
            highlights.append((x - rad * 0.3, y - rad * 0.3))
            kept.append((x - rad, y - rad, x + rad, y + rad))
        if kept:
            tid = graph.add(
                "tree", _bbox_of([k[:2] for k in kept] + [k[2:] for k in kept]), ("green", "leafy"), len(kept)
            )
            graph.relate(tid, predicate, anchor)

    if highlights:
        draw.point(highlights, fill=light)

    # --- traffic: cars on roads (more with density and road density), parked cars in lots
    car_len = (2.4 + 0.7 * affluence) * unit  # bigger cars in richer areas (subtle)
    car_wid = 1.3 * unit
    for (axis, centre, w), rid, is_bridge in zip(roads, road_ids, bridged, strict=True):
        n = capped_poisson(rng, S / (10 * unit) * (0.15 + 0.9 * density * (0.3 + road_density)), 14)
        boxes = []
        for _ in range(n):
            t = rng.random() * (S - car_len)
            lane = centre + (0.25 if rng.random() < 0.5 else -0.25) * w - car_wid / 2
            box = (lane, t, lane + car_wid, t + car_len) if axis == "v" else (t, lane, t + car_len, lane + car_wid)
            if not is_bridge and on_water(*box):
                continue
            draw.rectangle(box, fill=jitter(pick(style.car_colors, rng), rng, jit))
            boxes.append(box)
        if boxes:
            cid = graph.add("car", _bbox_of([b[:2] for b in boxes] + [b[2:] for b in boxes]), ("moving",), len(boxes))
            graph.relate(cid, "on", rid)
    for lot_id, cars in parked:
        for box in cars:
            draw.rectangle(box, fill=jitter(pick(style.car_colors, rng), rng, jit))
        if cars:
            graph.relate(
                graph.add("car", _bbox_of([b[:2] for b in cars] + [b[2:] for b in cars]), ("parked",), len(cars)),
                "in",
                lot_id,
            )

    # nightlife, subtly: café umbrellas along a commercial street
    n_umbrellas = capped_poisson(rng, 6 * lat["nightlife"] * lat["commercial"] * density, 10)
    if n_umbrellas and roads:
        k = int(rng.random() * len(roads))
        axis, centre, w = roads[k]
        off = centre + w / 2 + 1.5 * unit
        spots = []
        for _ in range(n_umbrellas):
            t = rng.random() * S
            x, y = (off, t) if axis == "v" else (t, off)
            if 0 <= x < S and 0 <= y < S and not water_mask[int(y), int(x)] and not roof_mask[int(y), int(x)]:
                draw.ellipse((x - 0.8 * unit, y - 0.8 * unit, x + 0.8 * unit, y + 0.8 * unit), fill=pick(_UMBRELLAS, rng))
                spots.append((x - 0.8 * unit, y - 0.8 * unit, x + 0.8 * unit, y + 0.8 * unit))
        if spots:
            uid = graph.add("umbrella", _bbox_of([s[:2] for s in spots] + [s[2:] for s in spots]), ("colourful",), len(spots))
            graph.relate(uid, "along", road_ids[k])

    # --- lane markings, then shadows: they darken ground, roads, trees and cars but not roofs
    if marking_mask.any():
        ys, xs = np.nonzero(marking_mask & ~roof_mask)
        draw.point(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=marking)
    shade = (np.asarray(shadow_img) > 0) & ~roof_mask
    tone = np.array([200.0, 200.0, 200.0], dtype=np.float32)
    return finish(img, rng, 0.5 * style.haze, tone, 10.0, shade, style.shadow_darkness), graph.build()
