"""Twin scales: how much of a city the synthetic twin renders (docs/twins.md, ``--scale``).

- ``tiny``: tests and CI — a window of at most 100 regions, at most 2 street views per region, 48–64 px.
- ``small``: the default — the paper's region counts and labelled shares, 2–4 street views per
  region, 96-px satellite tiles and 64-px street views.
- ``full``: ``small`` plus the paper's street-view counts (Table 5: e.g. NY ≈ 86 per region).

In every scale a share of regions has no street view at all (parks, water, regions the car never
drove through); they are kept, counted and drop out of street-view cells only.
"""

from __future__ import annotations

from dataclasses import dataclass

from urbanln_bench.errors import UserError
from urbanln_bench.registry import suggest


@dataclass(frozen=True)
class Scale:
    name: str
    max_regions: int  # 0 = all regions of the city
    min_street_views: int  # per region that has street views at all
    max_street_views: int  # 0 = draw around the paper's mean count (full scale)
    satellite_px: int
    streetview_px: int


SCALES: dict[str, Scale] = {
    "tiny": Scale("tiny", max_regions=100, min_street_views=1, max_street_views=2, satellite_px=64, streetview_px=48),
    "small": Scale("small", max_regions=0, min_street_views=2, max_street_views=4, satellite_px=96, streetview_px=64),
    "full": Scale("full", max_regions=0, min_street_views=1, max_street_views=0, satellite_px=96, streetview_px=64),
}


def get_scale(name: str, where: str = "") -> Scale:
    """The scale named ``name``; a UserError (prefixed with ``where``, e.g. a file) for an unknown name."""
    try:
        return SCALES[name]
    except KeyError:
        prefix = f"{where} names " if where else ""
        raise UserError(f"{prefix}unknown scale '{name}'{suggest(name, list(SCALES))}; "
                        f"known: {', '.join(SCALES)}") from None
