"""A contact sheet PNG of a city: per row one region's satellite tile and its street views."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from urbanln_bench.data.loader import CityData


def pick_regions(data: CityData, n_regions: int) -> list[str]:
    """Regions spread over the city: every k-th region in file order, preferring ones with street views."""
    with_sv = data.regions_with_streetview() or list(data.regions.ids)
    step = max(1, len(with_sv) // max(1, n_regions))
    return with_sv[::step][:n_regions]


def contact_sheet(data: CityData, out: Path, *, n_regions: int = 8, max_streetviews: int = 4, cell: int = 128) -> Path:
    from PIL import Image, ImageDraw

    regions = pick_regions(data, n_regions)
    label_w, pad = 150, 6
    width = label_w + (1 + max_streetviews) * (cell + pad) + pad
    height = 28 + len(regions) * (cell + pad) + pad
    sheet = Image.new("RGB", (width, height), (250, 250, 250))
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 8), f"{data.name} ({data.source}{', ' + data.meta.get('scale', '') if data.source == 'synthetic' else ''})"
              f" - satellite | street views", fill=(0, 0, 0))
    latents = None
    if data.source == "synthetic":
        names, matrix = data.latents()
        latents = {name: matrix[:, i] for i, name in enumerate(names)}
    index = data.regions.index()
    for r, rid in enumerate(regions):
        y = 28 + r * (cell + pad)
        lines = [rid]
        if latents is not None:
            i = index[rid]
            lines += [f"{k[:10]} {latents[k][i]:.2f}" for k in ("density", "greenery", "water", "commercial", "industrial")
                      if k in latents]
        draw.multiline_text((pad, y + 2), "\n".join(lines), fill=(30, 30, 30), spacing=2)
        images = [rid] + data.streetview_ids(rid)[:max_streetviews]
        for j, image_id in enumerate(images):
            array = data.load_image(image_id)
            tile = Image.fromarray(np.asarray(array)).resize((cell, cell), Image.NEAREST)
            sheet.paste(tile, (label_w + j * (cell + pad), y))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
