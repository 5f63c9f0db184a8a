"""A city's visual style: the palette and street geometry its renderers draw with (docs/twins.md).

Cities differ in look (palette, street width, block shape, how tall a given ``building_height``
reads), so transfer between cities is a real test. Every field has a default so a city file may set
only what makes its city distinctive; the ``[style]`` table is parsed strictly (unknown keys fail).

Colours are ``(r, g, b)`` with 0–255 channels. Palettes are lists of colours; roofs and facades of
different land uses deliberately share some hues, so colour alone does not give land use away.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from urbanln_bench.strict import from_mapping

if TYPE_CHECKING:
    from urbanln_bench.specs import CitySpec

RGB = tuple[int, int, int]
LANE_MARKING_STYLES: tuple[str, ...] = ("dashed", "solid", "double", "none")
WINDOW_STYLES: tuple[str, ...] = ("grid", "bands", "tall")


_COLOUR_FIELDS = frozenset(
    {"ground", "grass", "tree", "water", "sky", "road", "sidewalk", "lane_marking", "window"}
)
_PALETTE_FIELDS = frozenset(
    {
        "roof_residential", "roof_commercial", "roof_industrial", "facade_residential",
        "facade_commercial", "facade_industrial", "shop_sign_colors", "car_colors",
    }
)


@dataclass(frozen=True)
class CityStyle:
    """How one city looks; read by ``render_satellite`` and ``render_streetview``."""

    name: str = "default"
    # ground and open space
    ground: RGB = (186, 180, 164)          # bare ground, yards, plazas (seen from above)
    ground_texture: float = 0.5            # 0–1: strength of low-frequency ground mottling
    grass: RGB = (104, 142, 72)            # lawns and parks
    tree: RGB = (58, 98, 50)               # tree crowns
    water: RGB = (58, 92, 124)
    sky: RGB = (150, 186, 224)             # clear-sky colour of street views (top of the gradient)
    cloudiness: float = 0.3                # 0–1: expected cloud cover in street views
    haze: float = 0.1                      # 0–1: atmospheric haze (washes colours toward grey)
    # streets
    road: RGB = (88, 88, 92)
    sidewalk: RGB = (164, 160, 152)
    lane_marking: RGB = (232, 228, 210)
    lane_marking_style: str = "dashed"     # one of LANE_MARKING_STYLES
    street_width: float = 1.0              # road width multiplier (1.0 ≈ 2.5 px per 64 px of tile)
    block_size: float = 1.0                # spacing between roads multiplier
    block_aspect: float = 1.0              # > 1: blocks longer east–west than north–south
    # buildings
    footprint_scale: float = 1.0           # building footprint size multiplier
    height_scale: float = 1.0              # how tall a given building_height looks
    roof_residential: tuple[RGB, ...] = ((150, 84, 66), (120, 110, 104), (170, 150, 130))
    roof_commercial: tuple[RGB, ...] = ((140, 140, 146), (176, 172, 166), (110, 116, 126))
    roof_industrial: tuple[RGB, ...] = ((196, 198, 200), (150, 164, 178), (132, 132, 128))
    pitched_roof_share: float = 0.6        # share of low residential roofs drawn with a ridge
    facade_residential: tuple[RGB, ...] = ((196, 176, 150), (170, 96, 74), (214, 206, 190))
    facade_commercial: tuple[RGB, ...] = ((190, 190, 186), (140, 150, 160), (214, 206, 190))
    facade_industrial: tuple[RGB, ...] = ((160, 160, 156), (120, 136, 150), (176, 164, 140))
    window: RGB = (70, 90, 112)            # glass
    window_style: str = "grid"             # one of WINDOW_STYLES
    shop_sign_colors: tuple[RGB, ...] = ((200, 40, 40), (30, 90, 170), (230, 180, 40), (40, 140, 80))
    car_colors: tuple[RGB, ...] = (
        (200, 200, 204), (30, 30, 34), (160, 30, 30), (40, 60, 120), (230, 230, 226), (110, 110, 114),
    )
    # light
    sun_azimuth_deg: float = 45.0          # direction shadows fall in a tile: 0 = right, 90 = down
    shadow_darkness: float = 0.45          # 0–1: how much a shadow darkens the ground
    colour_jitter: int = 10                # per-element random colour jitter (0–255 scale)

    def __post_init__(self) -> None:
        if self.lane_marking_style not in LANE_MARKING_STYLES:
            raise ValueError(
                f"lane_marking_style must be one of {', '.join(LANE_MARKING_STYLES)}, "
                f"got '{self.lane_marking_style}'"
            )
        if self.window_style not in WINDOW_STYLES:
            raise ValueError(
                f"window_style must be one of {', '.join(WINDOW_STYLES)}, got '{self.window_style}'"
            )
        for field_name in ("street_width", "block_size", "block_aspect", "footprint_scale", "height_scale"):
            if getattr(self, field_name) <= 0:
                raise ValueError(f"{field_name} must be positive, got {getattr(self, field_name)}")
        for field_name in ("ground_texture", "cloudiness", "haze", "pitched_roof_share", "shadow_darkness"):
            value = getattr(self, field_name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{field_name} must be in [0, 1], got {value}")
        for field_name in sorted(_PALETTE_FIELDS):
            if not getattr(self, field_name):
                raise ValueError(f"{field_name} must list at least one colour")
        for field_name, value in vars(self).items():
            colours = value if field_name in _PALETTE_FIELDS else (value,) if field_name in _COLOUR_FIELDS else ()
            for colour in colours:
                if len(colour) != 3 or not all(0 <= channel <= 255 for channel in colour):
                    raise ValueError(f"{field_name}: colour {colour} must be three channels in 0–255")
        if self.colour_jitter < 0:
            raise ValueError(f"colour_jitter must be >= 0, got {self.colour_jitter}")


def city_style(spec: CitySpec) -> CityStyle:
    """The city file's ``[style]`` table as :class:`CityStyle` (every key optional: defaults above)."""
    return from_mapping(CityStyle, spec.style or {}, f"{spec.source_file or spec.name}.style")
