"""The parts of a satellite tile that ``render_satellite`` passes between its stages (docs/twins.md#rendering).

The shared drawing state (``Tile``, like the street-view renderer's canvas), the water body (placed
first, as a mask, so nothing is built on it), the street grid and the blocks between its roads,
what the block stage leaves for later stages (``Pending``), and the tile's geometry: water
outlines, the shadow a box casts, ground mottling, and the boxes and size words the scene graph
records. Nothing here draws on the tile or writes its scene graph.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from urbanln_bench.synth.scene import SceneBuilder
from urbanln_bench.synth.style import RGB, CityStyle

Point = tuple[float, float]
Box = tuple[float, float, float, float]
Road = tuple[str, float, float]  # (axis, centre, width); axis "v" runs north–south
TreeGroup = tuple[int | None, list[tuple[float, float, float]], str]  # (anchor id, crowns (x, y, radius), predicate)


@dataclass
class Canvas:
    """What every drawing step of either renderer needs: the image, its graph, the rng, the style and
    the latents."""

    draw: ImageDraw.ImageDraw
    graph: SceneBuilder
    rng: np.random.Generator
    style: CityStyle
    lat: dict[str, float]
    size: int
    unit: float  # drawing scale: lengths are given in pixels of a 64-px image, times ``unit``


@dataclass
class Tile(Canvas):
    """A satellite tile's canvas."""

    jit: float = 0.0  # the style's colour jitter


@dataclass
class Water:
    """The tile's water body ("" when it has none) as outline and pixel mask; nothing is built on it."""

    kind: str
    outline: list[Point]
    beach: list[Point] | None
    mask: np.ndarray  # size × size bool
    id: int | None = None  # its scene-graph object, once drawn

    def crosses(self, axis: str, centre: float) -> bool:
        """Whether the road line ``axis`` at ``centre`` meets water anywhere."""
        S = self.mask.shape[0]
        c = int(min(S - 1, max(0, centre)))
        return bool(self.mask[:, c].any() if axis == "v" else self.mask[c, :].any())

    def covers(self, x0: float, y0: float, x1: float, y1: float) -> bool:
        """Whether a corner or the centre of the box lies on water."""
        if not self.kind:
            return False
        S = self.mask.shape[0]
        xa, ya = int(min(S - 1, max(0, x0))), int(min(S - 1, max(0, y0)))
        xb, yb = int(min(S - 1, max(0, x1))), int(min(S - 1, max(0, y1)))
        m = self.mask
        return bool(m[ya, xa] or m[ya, xb] or m[yb, xa] or m[yb, xb] or m[(ya + yb) // 2, (xa + xb) // 2])


def place_water(tile: Tile) -> Water:
    """Where the tile's water lies, if anywhere: its kind, outline and mask (drawn after the streets)."""
    S, rng, water = tile.size, tile.rng, tile.lat["water"]
    # a region with water share w shows water in about 1.6·w + 0.1 of its tiles, covering ≈ 0.8·w on average
    water_present = min(1.0, 0.1 + 1.6 * water)
    water_fraction = water / water_present * (0.6 + 0.4 * rng.random())
    if water > 0.04 and rng.random() < water_present:
        kind, outline, beach = water_polygon(max(0.06, min(0.8, water_fraction)), S, rng)
        mask_img = Image.new("L", (S, S), 0)
        ImageDraw.Draw(mask_img).polygon(outline, fill=255)
        return Water(kind, outline, beach, np.asarray(mask_img) > 0)
    return Water("", [], None, np.zeros((S, S), dtype=bool))


@dataclass
class Streets:
    """The street grid: roads, which of them bridge the river, their graph objects and their colours."""

    size: int
    roads: list[Road]
    colour: RGB
    sidewalk: RGB
    bridged: list[bool] = field(default_factory=list)
    ids: list[int | None] = field(default_factory=list)  # one graph object per road, once added

    def rect(self, axis: str, centre: float, w: float) -> Box:
        """The pixel rectangle (inclusive corners) of a road of width ``w``."""
        S = self.size
        if axis == "v":
            return (centre - w / 2, 0, centre + w / 2 - 1, S - 1)
        return (0, centre - w / 2, S - 1, centre + w / 2 - 1)

    def nearest(self, block: Box) -> int | None:
        """The graph object of the road closest to one of the block's edges."""
        x0, y0, x1, y1 = block
        best, best_d = None, float("inf")
        for (axis, centre, _), rid in zip(self.roads, self.ids, strict=True):
            d = min(abs(centre - x0), abs(centre - x1)) if axis == "v" else min(abs(centre - y0), abs(centre - y1))
            if d < best_d:
                best, best_d = rid, d
        return best

    def blocks(self, unit: float) -> list[Box]:
        """The blocks between roads (each road with a one-unit margin), row by row."""

        def cuts(axis: str) -> list[float]:
            edges = [0.0]
            for _axis, centre, w in sorted((r for r in self.roads if r[0] == axis), key=lambda r: r[1]):
                edges += [centre - w / 2 - 1.0 * unit, centre + w / 2 + 1.0 * unit]
            return edges + [float(self.size)]

        xs_cut, ys_cut = cuts("v"), cuts("h")
        return [
            (xs_cut[i], ys_cut[j], xs_cut[i + 1], ys_cut[j + 1])
            for j in range(0, len(ys_cut), 2)
            for i in range(0, len(xs_cut), 2)
        ]


@dataclass
class Pending:
    """What the block stage leaves for later stages: shadow and roof masks, trees to plant, cars to park."""

    size: int
    trees: list[TreeGroup] = field(default_factory=list)  # planted once every roof is down
    parked: list[tuple[int | None, list[Box]]] = field(default_factory=list)  # (parking lot id, cars)
    shadow_img: Image.Image = field(init=False)  # building shadows, darkened by the camera
    roof_img: Image.Image = field(init=False)  # roofs: trees, umbrellas, markings and shadows keep off them

    def __post_init__(self) -> None:
        self.shadow_img = Image.new("L", (self.size, self.size), 0)
        self.roof_img = Image.new("L", (self.size, self.size), 0)
        self.shadow = ImageDraw.Draw(self.shadow_img)
        self.roofs = ImageDraw.Draw(self.roof_img)


# -- geometry -------------------------------------------------------------------------------------------

def shadow_polygon(x0: float, y0: float, x1: float, y1: float, dx: float, dy: float) -> list[Point]:
    """Convex hull of a rectangle and its copy shifted by (dx, dy): the shadow a box casts."""
    a, b, c, d = (x0, y0), (x1, y0), (x1, y1), (x0, y1)

    def s(p: Point) -> Point:
        return (p[0] + dx, p[1] + dy)

    if dx >= 0 and dy >= 0:
        return [a, b, s(b), s(c), s(d), d]
    if dx < 0 and dy >= 0:
        return [a, b, c, s(c), s(d), s(a)]
    if dx < 0:
        return [s(a), s(b), b, c, d, s(d)]
    return [s(a), s(b), s(c), c, d, a]


def water_polygon(fraction: float, size: int, rng: np.random.Generator) -> tuple[str, list[Point], list[Point] | None]:
    """A river, lake or coast covering about ``fraction`` of the tile; also a beach outline for coasts."""
    S = float(size)
    shape = rng.random()
    if fraction > 0.3 and shape < 0.45:
        kind = "sea"
    elif shape < 0.75 or fraction > 0.45:
        kind = "river"
    else:
        kind = "lake"
    beach: list[Point] | None = None
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

    def turn(p: Point) -> Point:
        x, y = p
        return [(x, y), (S - 1 - y, x), (x, S - 1 - y), (y, x)][orientation]

    pts = [turn(p) for p in pts]
    if beach is not None:
        beach = [turn(p) for p in beach]
    return kind, pts, beach


def mottled(base: np.ndarray, amplitude: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """A ``size``² uint8 RGB field of colour ``base`` with smooth low-frequency light/dark patches."""
    knots = np.linspace(0.0, size - 1.0, 5)
    grid = np.arange(size, dtype=np.float32)
    a, b, c, d = (np.interp(grid, knots, rng.random(5) - 0.5).astype(np.float32) for _ in range(4))
    mottle = (a[None, :] + b[:, None] + 2.0 * c[None, :] * d[:, None]) * amplitude
    return np.clip(base[None, None, :] + mottle[:, :, None], 0, 255).astype(np.uint8)


def bbox_of(points: Sequence[Point]) -> Box:
    """The half-open bounding box of ``points``."""
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    return (min(xs), min(ys), max(xs) + 1, max(ys) + 1)


def union_box(boxes: Sequence[Box]) -> Box:
    """The half-open bounding box of a group of drawn ``(x0, y0, x1, y1)`` boxes."""
    return bbox_of([b[:2] for b in boxes] + [b[2:] for b in boxes])


def size_word(area: float, small: float, large: float) -> str:
    """'small' below ``small``, 'large' above ``large``, else no word."""
    return "small" if area < small else "large" if area > large else ""
