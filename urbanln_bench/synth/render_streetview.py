"""Street-level views of a synthetic region, drawn from its latents (docs/twins.md).

A random camera heading picks the view: facing the facades across the street, or looking along
it (one-point perspective). What a latent looks like from the street, by urban semantics:
building_height and density set facade height and how closely buildings stand; land use sets the
facade (residential: balconies, doors, pitched roofs; commercial: shop fronts, signs, glass towers;
industrial: warehouses, roller doors, chimneys, fences); greenery trees and hedges; road_density
and density traffic; density and commercial pedestrians; water a river glimpse. Affluence is only
subtle (facade grime, car size and shine), nightlife only subtle (a few neon and bar signs, string
lights), deprivation absent. Sky, palette and exposure vary per image and per city.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from urbanln_bench.synth.render_satellite import capped_poisson, finish, jitter, pick, visible_latents
from urbanln_bench.synth.satellite_parts import Canvas
from urbanln_bench.synth.scene import SceneBuilder, SceneGraph, colour_name
from urbanln_bench.synth.style import RGB, CityStyle

# Bump when a street view's pixels or scene graph change for the same latents, style, size and draws;
# part of every twin's key through synth.twin.generator_identity, pinned by tests/test_twin_golden.py.
STREETVIEW_RENDERER_VERSION = 1
# sha256 of 32 views (8 seeded latents × 2 styles × 48 and 64 px: pixels and scene graphs) per version
STREETVIEW_GOLDEN = {1: "bf38c9e6bdb044febbe3910de0544afe7a6fcd57dbd08dc107dca3c149e6370f"}

_NEON: tuple[RGB, ...] = ((255, 40, 200), (40, 240, 255), (180, 255, 60), (255, 120, 40))
_CLOTHES: tuple[RGB, ...] = ((40, 40, 60), (180, 40, 40), (220, 220, 210), (60, 90, 150), (90, 70, 50), (200, 160, 60))
_SKIN: tuple[RGB, ...] = ((230, 190, 160), (190, 140, 100), (120, 80, 60))
_BUS: tuple[RGB, ...] = ((200, 40, 40), (230, 200, 50), (240, 240, 236), (40, 110, 190), (60, 150, 90))


def _shade(colour: RGB, factor: float) -> RGB:
    return (
        int(min(255, colour[0] * factor)), int(min(255, colour[1] * factor)), int(min(255, colour[2] * factor))
    )


@dataclass
class _Canvas(Canvas):
    """A street view's canvas."""

    def land_use(self) -> int:
        """0 residential, 1 commercial, 2 industrial, drawn from the region's land-use shares."""
        shares = np.array([self.lat["residential"], self.lat["commercial"], self.lat["industrial"]]) + 0.03
        return int(np.searchsorted(np.cumsum(shares / shares.sum()), self.rng.random() * 0.9999))

    def facade_colour(self, palette: tuple[RGB, ...]) -> RGB:
        # poorer upkeep: duller, darker facades (subtle affluence cue)
        colour = jitter(pick(palette, self.rng), self.rng, self.style.colour_jitter)
        dull = 0.12 * (1.0 - self.lat["affluence"])
        grey = sum(colour) / 3.0
        return tuple(int((c * (1 - dull) + grey * dull) * (1 - 0.5 * dull)) for c in colour)  # type: ignore[return-value]


def _sky(style: CityStyle, size: int, horizon: float, rng: np.random.Generator) -> np.ndarray:  # uint8 RGB
    """A vertical sky gradient (lighter toward the horizon), weather and hour jittered per image."""
    top = np.array(jitter(style.sky, rng, 1.5 * style.colour_jitter), dtype=np.float32)
    haze = np.array([225.0, 225.0, 225.0], dtype=np.float32) * 0.6 + top * 0.4
    t = np.clip(np.arange(size, dtype=np.float32) / max(1.0, horizon), 0.0, 1.0)[:, None]
    rows = (top[None, :] * (1 - t) + haze[None, :] * t).astype(np.uint8)
    return np.ascontiguousarray(np.broadcast_to(rows[:, None, :], (size, size, 3)))


def _tree(cv: _Canvas, x: float, base: float, scale: float) -> tuple[float, float, float, float]:
    u = cv.unit * scale
    crown = (3.5 + 3.0 * cv.rng.random()) * u
    trunk_h = (4.0 + 3.0 * cv.rng.random()) * u
    colour = jitter(cv.style.tree, cv.rng, cv.style.colour_jitter)
    cv.draw.rectangle((x - 0.6 * u, base - trunk_h, x + 0.6 * u, base), fill=(88, 66, 48))
    cy = base - trunk_h - crown * 0.7
    cv.draw.ellipse((x - crown, cy - crown, x + crown, cy + crown), fill=colour)
    cv.draw.ellipse((x - crown * 0.5, cy - crown * 0.8, x + crown * 0.3, cy), fill=_shade(colour, 1.25))
    return (x - crown, cy - crown, x + crown, base)


def _car(cv: _Canvas, x: float, base: float, scale: float, facing: str) -> tuple[tuple[float, float, float, float], RGB, str]:
    """A car seen from the side (frontal view) or from behind (along the street)."""
    u = cv.unit * scale
    affluence = cv.lat["affluence"]
    big = cv.rng.random() < 0.25 + 0.5 * affluence  # SUVs and saloons where money is (subtle)
    colour = jitter(pick(cv.style.car_colors, cv.rng), cv.rng, cv.style.colour_jitter)
    glass = _shade(cv.style.window, 0.9)
    if facing == "side":
        length = (11.0 + (3.0 if big else 0.0)) * u
        body_h = (3.2 + (0.8 if big else 0.0)) * u
        cv.draw.rectangle((x, base - body_h - 1.2 * u, x + length, base - 1.2 * u), fill=colour)
        cv.draw.polygon(
            [
                (x + 0.2 * length, base - body_h - 1.2 * u), (x + 0.32 * length, base - body_h - 4.0 * u),
                (x + 0.72 * length, base - body_h - 4.0 * u), (x + 0.85 * length, base - body_h - 1.2 * u),
            ],
            fill=colour,
        )
        cv.draw.rectangle(
            (x + 0.35 * length, base - body_h - 3.3 * u, x + 0.7 * length, base - body_h - 1.6 * u), fill=glass
        )
        for wx in (x + 0.2 * length, x + 0.8 * length):
            cv.draw.ellipse((wx - 1.4 * u, base - 2.8 * u, wx + 1.4 * u, base), fill=(26, 26, 28))
        if affluence > 0.5 and cv.rng.random() < affluence:  # polished paint catches the light
            cv.draw.line((x + 1, base - body_h - 0.6 * u, x + length - 1, base - body_h - 0.6 * u), fill=_shade(colour, 1.35))
        box = (x, base - body_h - 4.0 * u, x + length, base)
    else:
        width = (8.0 + (1.5 if big else 0.0)) * u
        body_h = (4.0 + (1.0 if big else 0.0)) * u
        cv.draw.rectangle((x - width / 2, base - body_h, x + width / 2, base - 0.8 * u), fill=colour)
        cv.draw.rectangle(
            (x - width * 0.38, base - body_h - 2.6 * u, x + width * 0.38, base - body_h), fill=_shade(colour, 0.9)
        )
        cv.draw.rectangle(
            (x - width * 0.3, base - body_h - 2.1 * u, x + width * 0.3, base - body_h - 0.4 * u), fill=glass
        )
        for lx in (x - width * 0.42, x + width * 0.32):
            cv.draw.rectangle((lx, base - body_h + 0.8 * u, lx + width * 0.1, base - body_h + 1.8 * u), fill=(200, 30, 30))
        cv.draw.rectangle((x - width / 2, base - 0.8 * u, x + width / 2, base), fill=(26, 26, 28))
        box = (x - width / 2, base - body_h - 2.6 * u, x + width / 2, base)
    return box, colour, "large" if big else "small"


def _pedestrians(cv: _Canvas, y_lo: float, y_hi: float, x_lo: float, x_hi: float, scale_at) -> list:
    """People on the sidewalk: more with density and commercial activity."""
    lat = cv.lat
    n = capped_poisson(cv.rng, (0.3 + 4.0 * lat["density"] * (0.4 + lat["commercial"])) * cv.size / 64.0, 12)
    boxes = []
    for _ in range(n):
        x = x_lo + (x_hi - x_lo) * cv.rng.random()
        base = y_lo + (y_hi - y_lo) * cv.rng.random()
        u = cv.unit * scale_at(x, base)
        if u < 0.15:
            continue
        h = (6.0 + 1.5 * cv.rng.random()) * u
        cv.draw.rectangle((x - 0.9 * u, base - h * 0.45, x + 0.9 * u, base), fill=(40, 40, 48))  # legs
        cv.draw.rectangle((x - 1.1 * u, base - h * 0.82, x + 1.1 * u, base - h * 0.42), fill=pick(_CLOTHES, cv.rng))
        cv.draw.ellipse((x - 0.9 * u, base - h, x + 0.9 * u, base - h * 0.8), fill=pick(_SKIN, cv.rng))
        boxes.append((x - 1.1 * u, base - h, x + 1.1 * u, base))
    return boxes


def _union(boxes: list) -> tuple[float, float, float, float]:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def _frontal_building(cv: _Canvas, x: float, ground: float, use: int, scale: float) -> tuple[float, int | None]:
    """One building facing the camera; returns its right edge and scene id."""
    rng, style, lat, draw = cv.rng, cv.style, cv.lat, cv.draw
    u = cv.unit * scale
    density, height = lat["density"], lat["building_height"]
    floor_h = 4.2 * u
    attributes: list[str] = []
    pitched = False
    if use == 0:
        apartments = rng.random() < density**1.2 + 0.3 * height
        floors = max(1, round((3 + 13 * height if apartments else 1 + 2 * height) * (0.7 + 0.6 * rng.random()) * style.height_scale))
        width = (16 + 10 * rng.random()) * u if apartments else (11 + 7 * rng.random()) * u
        name = "apartment building" if apartments else "house"
        pitched = not apartments and rng.random() < style.pitched_roof_share + 0.2
        palette = style.facade_residential if rng.random() < 0.8 else style.facade_commercial
        attributes.append("residential")
    elif use == 1:
        floors = max(1, round((2 + 24 * height**1.3) * (0.7 + 0.6 * rng.random()) * style.height_scale))
        width = (15 + 15 * rng.random()) * u
        name = "skyscraper" if floors >= 20 else "office building" if floors >= 6 else "shop"
        palette = style.facade_commercial if rng.random() < 0.8 else style.facade_residential
        attributes.append("commercial")
    else:
        floors = 2 + int(rng.random() * 2)
        width = (26 + 22 * rng.random()) * u
        name = "factory" if rng.random() < 0.35 else "warehouse"
        palette = style.facade_industrial if rng.random() < 0.8 else style.facade_commercial
        attributes.append("industrial")
    top = ground - floors * floor_h
    colour = cv.facade_colour(palette)
    glass_tower = use == 1 and floors >= 8 and rng.random() < 0.45 + 0.3 * lat["affluence"]
    window = jitter(style.window, rng, style.colour_jitter)
    draw.rectangle((x, top, x + width, ground), fill=window if glass_tower else colour)
    attributes.append("glass" if glass_tower else colour_name(colour))
    attributes.append("tall" if floors >= 10 else "low" if floors <= 2 else "")
    if width > 30 * u:
        attributes.append("wide")
    bid = cv.graph.add(name, (x, top - (6 * u if pitched else 0), x + width, ground), attributes)

    if use == 2:  # corrugated walls, roller door, maybe a chimney with smoke
        for sx in np.arange(x + 1.5 * u, x + width, 2.5 * u)[:16]:
            draw.line((sx, top, sx, ground), fill=_shade(colour, 0.88))
        dw = min(width * 0.4, 12 * u)
        dx = x + (width - dw) * rng.random()
        draw.rectangle((dx, ground - 6.5 * u, dx + dw, ground), fill=_shade(colour, 0.7))
        for sy in np.arange(ground - 6 * u, ground, 1.5 * u):
            draw.line((dx, sy, dx + dw, sy), fill=_shade(colour, 0.6))
        cv.graph.relate(cv.graph.add("garage door", (dx, ground - 6.5 * u, dx + dw, ground), ("metal", "large")), "on", bid)
        if rng.random() < 0.45 + 0.3 * lat["industrial"]:
            cx = x + width * (0.15 + 0.7 * rng.random())
            ch = (10 + 14 * rng.random()) * u
            draw.rectangle((cx - 1.3 * u, top - ch, cx + 1.3 * u, top), fill=(130, 84, 70) if rng.random() < 0.5 else (150, 150, 150))
            chim = cv.graph.add("chimney", (cx - 1.3 * u, top - ch, cx + 1.3 * u, top), ("tall", "brick"))
            cv.graph.relate(chim, "on", bid)
            if rng.random() < 0.6:
                for k in range(3):
                    r = (2.5 + 1.5 * k) * u
                    sx, sy = cx + k * 2.5 * u, top - ch - (2 + 3.5 * k) * u
                    draw.ellipse((sx - r, sy - r, sx + r, sy + r), fill=(200, 200, 204))
                cv.graph.relate(cv.graph.add("smoke", (cx - 2.5 * u, top - ch - 16 * u, cx + 9 * u, top - ch), ("grey",)), "above", chim)
        return x + width, bid

    # windows: floor bands of glass cut by piers (few draw calls per building)
    first = 1 if use == 1 else 0  # shops take the ground floor
    col = 4.0 * u if style.window_style != "tall" else 5.0 * u
    band = {"grid": 2.2, "bands": 2.0, "tall": 3.0}[style.window_style] * u
    if not glass_tower and floors - first > 0:
        for f in range(first, floors):
            fy = ground - (f + 1) * floor_h + 1.0 * u
            draw.rectangle((x + 1.5 * u, fy, x + width - 1.5 * u, fy + band), fill=window)
        if style.window_style != "bands":
            pier = 1.6 * u if style.window_style == "grid" else 2.6 * u
            for px in np.arange(x + 1.5 * u + col - pier, x + width - 1.5 * u, col)[:20]:
                draw.rectangle((px, top, px + pier, ground - first * floor_h), fill=colour)
        wid = cv.graph.add("window", (x + 1.5 * u, top + u, x + width - 1.5 * u, ground - first * floor_h), (), count=max(1, int((floors - first) * width / col)))
        cv.graph.relate(wid, "on", bid)
    elif glass_tower:
        for f in range(1, floors, 2):
            fy = ground - f * floor_h
            draw.line((x, fy, x + width, fy), fill=_shade(window, 1.3))
    # grime streaks on poorly kept facades (subtle affluence cue)
    grime = capped_poisson(cv.rng, (1.0 - lat["affluence"]) * 3.0 * width * (ground - top) / (400 * u * u), 8)
    for _ in range(grime):
        gx, gy = x + width * rng.random(), top + (ground - top) * rng.random()
        draw.line((gx, gy, gx, gy + 4 * u), fill=_shade(colour, 0.8))
    if pitched:
        roof = jitter(pick(style.roof_residential, rng), rng, style.colour_jitter)
        draw.polygon([(x - u, top), (x + width / 2, top - 6 * u), (x + width + u, top)], fill=roof)
        cv.graph.relate(cv.graph.add("roof", (x - u, top - 6 * u, x + width + u, top), ("pitched", colour_name(roof))), "on", bid)

    if use == 0:  # door and balconies
        dx = x + (width - 3 * u) * rng.random()
        draw.rectangle((dx, ground - 5 * u, dx + 3 * u, ground), fill=_shade(colour, 0.5))
        cv.graph.relate(cv.graph.add("door", (dx, ground - 5 * u, dx + 3 * u, ground), ("wooden" if rng.random() < 0.5 else "dark",)), "on", bid)
        if name == "apartment building" and rng.random() < 0.75:
            n = 0
            rail = _shade(colour, 0.7)
            for f in range(1, floors):
                fy = ground - f * floor_h
                for bx in np.arange(x + 2 * u, x + width - 6 * u, 8 * u)[:4]:
                    draw.rectangle((bx, fy - 1.4 * u, bx + 5 * u, fy), fill=rail)
                    n += 1
            if n:
                cv.graph.relate(cv.graph.add("balcony", (x + 2 * u, top, x + width - u, ground - floor_h), (), count=n), "on", bid)
    else:  # shop front: glass, awning, sign; nightlife adds neon and string lights
        front_top = ground - floor_h
        draw.rectangle((x + u, front_top + 1.2 * u, x + width - u, ground), fill=_shade(window, 1.15))
        draw.rectangle((x + width * 0.45, front_top + 1.5 * u, x + width * 0.45 + 2.5 * u, ground), fill=_shade(colour, 0.55))
        shop = cv.graph.add("shop window", (x + u, front_top + 1.2 * u, x + width - u, ground), ("glass", "large"))
        cv.graph.relate(shop, "on", bid)
        sign_colour = jitter(pick(style.shop_sign_colors, rng), rng, style.colour_jitter)
        sy = front_top - 0.6 * u
        draw.rectangle((x + 2 * u, sy - 2.0 * u, x + width - 2 * u, sy), fill=sign_colour)
        draw.point([(tx, sy - 1.0 * u) for tx in np.arange(x + 3 * u, x + width - 3 * u, 1.6 * u)], fill=(245, 245, 240))
        bar = rng.random() < 0.6 * lat["nightlife"]
        sign = cv.graph.add("bar sign" if bar else "shop sign", (x + 2 * u, sy - 2 * u, x + width - 2 * u, sy), (colour_name(sign_colour),))
        cv.graph.relate(sign, "above", shop)
        if rng.random() < 0.45:
            awning = jitter(pick(style.shop_sign_colors, rng), rng, style.colour_jitter)
            draw.polygon([(x + u, front_top + 1.2 * u), (x + width - u, front_top + 1.2 * u), (x + width, front_top + 3.4 * u), (x, front_top + 3.4 * u)], fill=awning)
            cv.graph.relate(cv.graph.add("awning", (x, front_top + 1.2 * u, x + width, front_top + 3.4 * u), (colour_name(awning),)), "above", shop)
        n_neon = capped_poisson(rng, 1.3 * lat["nightlife"], 3)
        for _ in range(n_neon):
            nx_ = x + (width - 2.5 * u) * rng.random()
            ny_ = front_top - (3 + 8 * rng.random()) * u
            neon = pick(_NEON, rng)
            draw.rectangle((nx_, ny_ - 5 * u, nx_ + 2.2 * u, ny_), fill=neon)
            cv.graph.relate(cv.graph.add("neon sign", (nx_, ny_ - 5 * u, nx_ + 2.2 * u, ny_), ("bright", colour_name(neon))), "on", bid)
        if rng.random() < 0.5 * lat["nightlife"]:
            pts = [(tx, front_top + 0.8 * u + 0.8 * u * math.sin(tx / (2 * u))) for tx in np.arange(x, x + width, 1.8 * u)]
            draw.point(pts, fill=(255, 230, 140))
            cv.graph.relate(cv.graph.add("string lights", (x, front_top, x + width, front_top + 1.8 * u), ("glowing",)), "above", shop)
    return x + width, bid


def _frontal(cv: _Canvas, horizon: float) -> None:
    """Facing the facades across the street: sidewalk and road in the foreground."""
    rng, style, lat, draw, graph, S, u = cv.rng, cv.style, cv.lat, cv.draw, cv.graph, cv.size, cv.unit
    ground = S * (0.64 + 0.08 * rng.random())
    walk_bottom = ground + (4.5 + 1.5 * style.street_width) * u
    road_colour = jitter(style.road, rng, style.colour_jitter)
    draw.rectangle((0, ground, S, walk_bottom), fill=jitter(style.sidewalk, rng, style.colour_jitter))
    draw.rectangle((0, walk_bottom, S, S), fill=road_colour)
    draw.line((0, walk_bottom, S, walk_bottom), fill=_shade(style.sidewalk, 0.75))
    walk = graph.add("sidewalk", (0, ground, S, walk_bottom), ("paved",))
    road = graph.add("road", (0, walk_bottom, S, S), ("wide" if style.street_width > 1.2 else "", "asphalt"))
    graph.relate(walk, "along", road)
    lane_y = walk_bottom + (S - walk_bottom) * 0.55
    _lane_marking(cv, lane_y, road)

    buildings: list[tuple[float, float, int | None]] = []
    waterfront = rng.random() < 0.9 * lat["water"] ** 1.2
    if waterfront:  # a river between us and the far bank
        bank = ground - (5 + 4 * rng.random()) * u
        water = jitter(style.water, rng, style.colour_jitter)
        x = -rng.random() * 8 * u
        while x < S:
            x, bid = _frontal_building(cv, x, bank, cv.land_use(), 0.45)
            x += (1 - lat["density"]) * 6 * u * rng.random()
        draw.rectangle((0, bank, S, ground), fill=water)
        for ry in np.arange(bank + 1.5 * u, ground, 1.8 * u):
            draw.line((rng.random() * S * 0.5, ry, S * (0.5 + 0.5 * rng.random()), ry), fill=_shade(water, 1.2))
        river = graph.add("river", (0, bank, S, ground), (colour_name(water), "calm"))
        draw.line((0, ground - 2.5 * u, S, ground - 2.5 * u), fill=(60, 60, 64))
        draw.point([(px, ground - k * u) for px in np.arange(0, S, 3 * u) for k in (0.5, 1.5)], fill=(60, 60, 64))
        graph.relate(graph.add("railing", (0, ground - 2.5 * u, S, ground), ("metal",)), "along", river)
        graph.relate(river, "behind", walk)
    else:
        x = -rng.random() * 10 * u
        gap_scale = (1.0 - lat["density"]) ** 1.5 * 22 * u
        while x < S:
            x_right, bid = _frontal_building(cv, x, ground, cv.land_use(), 1.0)
            if buildings:
                graph.relate(bid, "next to", buildings[-1][2])
            graph.relate(bid, "along", walk)
            buildings.append((x, x_right, bid))
            gap = gap_scale * rng.random()
            if gap > 6 * u:  # open ground between buildings: lawn, hedge or fence
                if rng.random() < 0.3 + lat["greenery"]:
                    draw.rectangle((x_right, ground - 2.5 * u, x_right + gap, ground), fill=jitter(style.grass, rng, style.colour_jitter))
                    graph.relate(graph.add("hedge", (x_right, ground - 2.5 * u, x_right + gap, ground), ("green", "low")), "next to", bid)
                elif lat["industrial"] > 0.3:
                    draw.line((x_right, ground - 4 * u, x_right + gap, ground - 4 * u), fill=(110, 110, 112))
                    draw.point([(px, ground - k * u) for px in np.arange(x_right, x_right + gap, 2.5 * u) for k in (1, 2, 3)], fill=(110, 110, 112))
                    graph.relate(graph.add("fence", (x_right, ground - 4 * u, x_right + gap, ground), ("metal", "chain-link")), "next to", bid)
            x = x_right + gap

    # street furniture, trees, people, traffic (front to back order: lamps, trees, people, cars)
    if rng.random() < 0.4 + 0.4 * lat["road_density"]:
        lx = S * rng.random()
        draw.rectangle((lx, ground - 22 * u, lx + 0.8 * u, walk_bottom - u), fill=(58, 58, 62))
        draw.rectangle((lx - 1.5 * u, ground - 22.5 * u, lx + 2.3 * u, ground - 21.5 * u), fill=(58, 58, 62))
        graph.relate(graph.add("street lamp", (lx - 1.5 * u, ground - 22.5 * u, lx + 2.3 * u, walk_bottom), ("tall", "metal")), "on", walk)
    n_trees = capped_poisson(rng, (0.2 + 3.2 * lat["greenery"]) * S / 64.0 * 0.8, 6)
    for _ in range(n_trees):
        tx = S * rng.random()
        box = _tree(cv, tx, walk_bottom - (0.5 + 2 * rng.random()) * u, 1.0 + 0.5 * lat["greenery"])
        tid = graph.add("tree", box, ("green", "leafy", "tall" if box[3] - box[1] > 20 * u else ""))
        graph.relate(tid, "on", walk)
        front = [b for b in buildings if b[0] <= tx <= b[1]]
        if front:
            graph.relate(tid, "in front of", front[0][2])
    people = _pedestrians(cv, ground + 2 * u, walk_bottom, 0, S, lambda x, y: 1.0)
    if people:
        graph.relate(graph.add("pedestrian", _union(people), ("walking",), count=len(people)), "on", walk)
    if rng.random() < 0.5 * lat["road_density"]:
        cx = S * rng.random()
        for k in range(6):
            draw.rectangle((cx + k * 2.6 * u, walk_bottom + u, cx + k * 2.6 * u + 1.4 * u, S), fill=(230, 230, 226))
        graph.relate(graph.add("crosswalk", (cx, walk_bottom + u, cx + 15 * u, S), ("striped", "white")), "on", road)
    _traffic(cv, road, lambda: (S * 1.1 * rng.random() - 0.1 * S, walk_bottom + (S - walk_bottom) * (0.45 + 0.5 * rng.random()), 1.0), "side")


def _lane_marking(cv: _Canvas, y: float, road: int | None) -> None:
    style, draw, u, S = cv.style, cv.draw, cv.unit, cv.size
    if style.lane_marking_style == "none":
        return
    colour = jitter(style.lane_marking, cv.rng, style.colour_jitter)
    if style.lane_marking_style == "dashed":
        start = -cv.rng.random() * 8 * u
        for dx in np.arange(start, S, 8 * u):
            draw.rectangle((dx, y, dx + 4.5 * u, y + 0.7 * u), fill=colour)
    else:
        offsets = (-0.8 * u, 0.8 * u) if style.lane_marking_style == "double" else (0.0,)
        for off in offsets:
            draw.rectangle((0, y + off, S, y + off + 0.6 * u), fill=colour)
    cv.graph.relate(
        cv.graph.add("lane marking", (0, y - u, S, y + 1.5 * u), (style.lane_marking_style, colour_name(colour))), "on", road
    )


def _traffic(cv: _Canvas, road: int | None, place, facing: str) -> None:
    """Cars (road_density, density), sometimes a bus or, where industry is, a truck."""
    rng, lat, graph, draw = cv.rng, cv.lat, cv.graph, cv.draw
    n = capped_poisson(rng, 0.3 + 2.2 * lat["road_density"] * (0.4 + lat["density"]), 5)
    slots = sorted((place() for _ in range(n)), key=lambda p: p[1])  # far first
    if rng.random() < 0.6 * lat["density"] * lat["road_density"] + 0.3 * lat["industrial"] * lat["road_density"]:
        x, base, scale = place()
        u = cv.unit * scale
        truck = rng.random() < lat["industrial"] / (lat["industrial"] + lat["commercial"] + 0.2)
        colour = jitter((236, 236, 232) if truck else pick(_BUS, rng), rng, cv.style.colour_jitter)
        length, tall = ((26 if truck else 34) * u, 11 * u) if facing == "side" else (12 * u, 13 * u)
        x0 = x if facing == "side" else x - length / 2
        draw.rectangle((x0, base - tall, x0 + length, base - 1.5 * u), fill=colour)
        if not truck:
            draw.rectangle((x0 + u, base - tall + 1.5 * u, x0 + length - u, base - tall + 4.5 * u), fill=_shade(cv.style.window, 0.9))
        draw.rectangle((x0 + 2 * u, base - 2.5 * u, x0 + length - 2 * u, base), fill=(26, 26, 28))
        big = graph.add("truck" if truck else "bus", (x0, base - tall, x0 + length, base), ("large", colour_name(colour)))
        graph.relate(big, "on", road)
    for x, base, scale in slots:
        if scale * cv.unit < 0.12:
            continue
        box, colour, size_word = _car(cv, x, base, scale, facing)
        graph.relate(graph.add("car", box, (colour_name(colour), size_word)), "on", road)


def _along(cv: _Canvas, horizon: float) -> None:
    """Looking down the street: road converging to a vanishing point, facades on both sides."""
    rng, style, lat, draw, graph, S, u = cv.rng, cv.style, cv.lat, cv.draw, cv.graph, cv.size, cv.unit
    vx = S * (0.5 + 0.3 * (rng.random() - 0.5))
    drop = S - horizon  # height of the ground below the horizon at the image bottom
    half_road = S * 0.28 * math.sqrt(style.street_width) * (0.8 + 0.4 * lat["road_density"])
    walk = half_road + S * 0.18
    road_colour = jitter(style.road, rng, style.colour_jitter)
    draw.polygon([(vx, horizon), (vx - walk * 1.8, S), (vx + walk * 1.8, S)], fill=jitter(style.sidewalk, rng, style.colour_jitter))
    draw.polygon([(vx, horizon), (vx - half_road, S), (vx + half_road, S)], fill=road_colour)
    road = graph.add("road", (vx - half_road, horizon, vx + half_road, S), ("straight", "asphalt"))
    walk_id = graph.add("sidewalk", (0, horizon, S, S), ("paved",))
    graph.relate(walk_id, "along", road)
    if style.lane_marking_style != "none":
        colour = jitter(style.lane_marking, rng, style.colour_jitter)
        if style.lane_marking_style == "dashed":
            for k in range(5):  # dashes shrink toward the vanishing point
                t0, t1 = 1.0 / (1.5 + 1.4 * k), 1.0 / (1.9 + 1.4 * k)
                draw.line((vx, horizon + drop * t1, vx, horizon + drop * t0), fill=colour, width=max(1, int(1.5 * u * t0 * 2)))
        else:
            for off in ((-0.04, 0.04) if style.lane_marking_style == "double" else (0.0,)):
                draw.line((vx, horizon, vx + off * S, S), fill=colour, width=max(1, int(u)))
        graph.relate(graph.add("lane marking", (vx - 2 * u, horizon, vx + 2 * u, S), (style.lane_marking_style, colour_name(colour))), "on", road)

    waterside = rng.random() < 0.9 * lat["water"] ** 1.2
    sides = ("left", "right")
    for side in sides:
        sign = -1 if side == "left" else 1
        edge = vx if side == "left" else S - vx  # horizontal distance from the vanishing point to the image edge
        if waterside and side == ("right" if vx < S / 2 else "left"):
            water = jitter(style.water, rng, style.colour_jitter)
            far = horizon - 2 * u
            pts = [(vx + sign * 2 * u, far), (vx + sign * edge, far), (vx + sign * edge, horizon + drop * 0.55), (vx + sign * walk * 1.3, horizon + drop * 0.55)]
            draw.polygon(pts, fill=water)
            river = graph.add("river", (min(p[0] for p in pts), far, max(p[0] for p in pts), horizon + drop * 0.55), (colour_name(water),))
            graph.relate(river, "next to", road)
            continue
        # walk along the street in depth z (1 = at the image edge), buildings of varying length
        z = 1.0 - 0.4 * rng.random()
        previous = None
        facade_drop = drop * 0.55  # where facades meet the sidewalk at z = 1
        while z < 9.0:
            use = cv.land_use()
            length = (1.0 + 1.0 * rng.random()) * (2.0 if use == 2 else 1.0)
            z_far = z + length * 0.5 * z  # far edge (perspective stretch)
            xa, xb = vx + sign * edge / z, vx + sign * edge / z_far
            floors = {
                0: (3 + 13 * lat["building_height"]) if rng.random() < lat["density"] else (1 + 2 * lat["building_height"]),
                1: 2 + 24 * lat["building_height"] ** 1.3,
                2: 2.5,
            }[use] * (0.7 + 0.6 * rng.random()) * style.height_scale
            floor_px = 4.2 * u * 1.4  # per floor at z = 1
            roof_a, roof_b = horizon - floors * floor_px / z, horizon - floors * floor_px / z_far
            base_a, base_b = horizon + facade_drop / z, horizon + facade_drop / z_far
            palette = (style.facade_residential, style.facade_commercial, style.facade_industrial)[use]
            colour = cv.facade_colour(palette)
            quad = [(xa, roof_a), (xb, roof_b), (xb, base_b), (xa, base_a)]
            draw.polygon(quad, fill=colour)
            window = jitter(style.window, rng, style.colour_jitter)
            if use != 2:
                n_bands = int(min(floors, 18))
                for f in range(1 if use == 1 else 0, n_bands):
                    t0 = (f + 0.3) / floors
                    t1 = (f + 0.75) / floors
                    ya0 = base_a - (base_a - roof_a) * t0
                    ya1 = base_a - (base_a - roof_a) * t1
                    yb0 = base_b - (base_b - roof_b) * t0
                    yb1 = base_b - (base_b - roof_b) * t1
                    draw.polygon([(xa, ya1), (xb, yb1), (xb, yb0), (xa, ya0)], fill=window)
                for k in range(1, 5):  # piers, spaced evenly in depth
                    zk = z + (z_far - z) * k / 5
                    px = vx + sign * edge / zk
                    draw.line((px, horizon - floors * floor_px / zk, px, horizon + facade_drop / zk), fill=colour, width=max(1, int(1.5 * u / zk)))
            name = ("house" if floors < 4 else "apartment building", "skyscraper" if floors >= 20 else "office building" if floors >= 6 else "shop", "warehouse")[use]
            bid = graph.add(
                name,
                (min(xa, xb), min(roof_a, roof_b), max(xa, xb), max(base_a, base_b)),
                (("residential", "commercial", "industrial")[use], colour_name(colour), "tall" if floors >= 10 else "low" if floors <= 2 else ""),
            )
            graph.relate(bid, "along", road)
            graph.relate(bid, "next to", previous)
            if use == 1:  # a sign band over the shop front
                sign_colour = jitter(pick(style.shop_sign_colors, rng), rng, style.colour_jitter)
                t0, t1 = 1.0 / floors, 1.35 / floors
                sa0, sa1 = base_a - (base_a - roof_a) * t0, base_a - (base_a - roof_a) * t1
                sb0, sb1 = base_b - (base_b - roof_b) * t0, base_b - (base_b - roof_b) * t1
                draw.polygon([(xa, sa1), (xb, sb1), (xb, sb0), (xa, sa0)], fill=sign_colour)
                bar = rng.random() < 0.6 * lat["nightlife"]
                graph.relate(graph.add("bar sign" if bar else "shop sign", (min(xa, xb), min(sa1, sb1), max(xa, xb), max(sa0, sb0)), (colour_name(sign_colour),)), "on", bid)
                if rng.random() < 0.6 * lat["nightlife"]:
                    neon = pick(_NEON, rng)
                    nx_ = xa + (xb - xa) * 0.3
                    draw.rectangle((nx_ - 1.2 * u / z, sa1 - 6 * u / z, nx_ + 1.2 * u / z, sa1), fill=neon)
                    graph.relate(graph.add("neon sign", (nx_ - 1.2 * u / z, sa1 - 6 * u / z, nx_ + 1.2 * u / z, sa1), ("bright", colour_name(neon))), "on", bid)
            previous = bid
            gap = (1.0 - lat["density"]) ** 1.5 * 1.5 * rng.random()
            z = z_far + gap * z_far * 0.5

    # trees, people and cars at depth: scale 1/z
    def depth_point(lateral: float) -> tuple[float, float, float]:
        z = 1.0 + 5.0 * rng.random() ** 1.5
        return vx + lateral * edge_scale / z, horizon + drop / z, 1.0 / z

    edge_scale = 1.0
    n_trees = capped_poisson(rng, 0.3 + 4.0 * lat["greenery"], 8)
    trees = []
    for _ in range(n_trees):
        side = -1 if rng.random() < 0.5 else 1
        x, base, scale = depth_point(side * (half_road + S * 0.06))
        trees.append((base, x, scale))
    for base, x, scale in sorted(trees):
        box = _tree(cv, x, base, 1.6 * scale)
        graph.relate(graph.add("tree", box, ("green", "leafy")), "along", road)
    people = _pedestrians(
        cv, horizon + drop * 0.2, S, 0, S, lambda x, y: 1.4 * (y - horizon) / drop if abs(x - vx) > half_road * (y - horizon) / drop else 0.0
    )
    if people:
        graph.relate(graph.add("pedestrian", _union(people), ("walking",), count=len(people)), "on", walk_id)

    def place() -> tuple[float, float, float]:
        x, base, scale = depth_point((rng.random() - 0.5) * 1.2 * half_road)
        return x, base, 1.4 * scale

    _traffic(cv, road, place, "rear")


def render_streetview(
    latent: Mapping[str, float], style: CityStyle, size: int, rng: np.random.Generator
) -> tuple[Image.Image, SceneGraph]:
    """A ``size``×``size`` RGB street-level view of a region with latents ``latent``, and its scene graph.

    A pure function of (latent, style, size, rng state); ``deprivation`` is never read.
    """
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    lat = visible_latents(latent)
    heading = rng.random() * 360.0
    facing = abs(math.sin(math.radians(heading))) >= 0.6
    horizon = size * (0.5 + 0.08 * (rng.random() - 0.5))
    img = Image.fromarray(_sky(style, size, horizon, rng), "RGB")
    draw = ImageDraw.Draw(img)
    view = f"facing the facades, heading {heading:.0f}°" if facing else f"along the street, heading {heading:.0f}°"
    graph = SceneBuilder("streetview", size, size, view=view)
    cv = _Canvas(draw, graph, rng, style, lat, size, size / 64.0)
    sky = graph.add("sky", (0, 0, size, horizon), (colour_name(style.sky),))
    n_clouds = capped_poisson(rng, 3.0 * style.cloudiness, 4)
    for _ in range(n_clouds):
        cx, cy = size * rng.random(), horizon * 0.6 * rng.random()
        w, h = size * (0.1 + 0.12 * rng.random()), size * (0.03 + 0.04 * rng.random())
        draw.ellipse((cx - w, cy - h, cx + w, cy + h), fill=(238, 238, 240))
        graph.relate(graph.add("cloud", (cx - w, cy - h, cx + w, cy + h), ("white",)), "in", sky)
    if facing:
        _frontal(cv, horizon)
    else:
        _along(cv, horizon)

    sky_tone = np.array(style.sky, dtype=np.float32) * 0.5 + 110.0
    return finish(img, rng, 0.45 * style.haze, sky_tone, 8.0), graph.build()
