"""The native on-disk layout of one city. Real data and synthetic twins share it (docs/architecture.md#core-concepts).

::

    <city>/
      city.json                 {"city": "NY", "source": "real" | "synthetic", "tasks": [...], ...}
      regions.csv               region_id,row,col,lat,lon   (row/col or lat/lon may be empty)
      satellite/<region_id>.png one tile per region (.png, .jpg or .jpeg)
      streetview/<region_id>/*.png   0..u street views per region (a region may have none)
      indicators.csv            region_id,<Task>,...   raw units; empty or NaN = missing label
      aux/poi_counts.csv        region_id,<14 POI categories>   counts
      aux/mobility.csv          origin_id,destination_id,trips  (an origin-destination matrix)
      captions/                 caption sets, written by the caption pipeline
      truth/                    synthetic twins only: latents.csv, oracle.json, scene_graphs/*.jsonl
      manifest.json             sha256 of every data file (not captions/ or city.json); written last
      region_map.csv            imported data only (``data/importers.py``): region id → source tile and file
                                (and the cell's bounds when ids come from a lat/lon grid, ``data/grid.py``)

Region ids are strings of letters, digits, ``_``, ``-`` and ``.`` so they can name files.
"""

from __future__ import annotations

import re

CITY_META = "city.json"
REGIONS = "regions.csv"
SATELLITE = "satellite"
STREETVIEW = "streetview"
INDICATORS = "indicators.csv"
AUX = "aux"
POI_COUNTS = "aux/poi_counts.csv"
MOBILITY = "aux/mobility.csv"
CAPTIONS = "captions"
TRUTH = "truth"
LATENTS = "truth/latents.csv"
ORACLE = "truth/oracle.json"
SCENE_GRAPHS = {"SI": "truth/scene_graphs/satellite.jsonl", "SV": "truth/scene_graphs/streetview.jsonl"}
MANIFEST = "manifest.json"

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
REGION_COLUMNS = ("region_id", "row", "col", "lat", "lon")
MOBILITY_COLUMNS = ("origin_id", "destination_id", "trips")
SOURCES = ("real", "synthetic")
REGION_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]+$")

# Folders and files that are not data: excluded from the manifest hash.
NOT_IN_MANIFEST = (MANIFEST, CITY_META, CAPTIONS + "/")
