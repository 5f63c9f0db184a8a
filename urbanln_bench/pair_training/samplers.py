"""Who pairs with whom: positive and negative region samplers (docs/methods.md).

Every sampler works on region *indices* (positions in ``UnlabelledCity.regions``); the trainer turns a
sampled region into one of its images. Positives are precomputed as :class:`Candidates` (per region,
the regions it may be paired with); one is drawn uniformly per anchor and step, so ties are broken at
random every time (PG-SimCLR breaks them at random once, when it writes its pair file: the same
distribution). A region is never its own positive or negative.

- :func:`spatial_neighbours` — grid adjacency (Tile2Vec's neighbour tile, PG-SimCLR's geo-guided pair).
- :func:`nearest_poi_regions` — the region(s) with the closest POI-category vector (PG-SimCLR: Euclidean
  distance of 14-d first-level category counts; MuseCL: "most similar" by POI, here cosine).
- :func:`most_similar_mobility_regions` — the region(s) with the most similar mobility profile (MuseCL's
  street-view positives; its similarity code is not released, the profile is defined below).
- :class:`DistantNegatives` — a region outside the anchor's neighbourhood (Tile2Vec's distant tile);
  with ``radius=0`` any other region (MuseCL's negative).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from urbanln_bench.data.tables import Regions
from urbanln_bench.errors import UserError

CHUNK = 1024  # rows of a pairwise distance/similarity matrix computed at once (memory bound for large cities)
LATLON_NEIGHBOURS = 8  # without a grid, the "adjacent" regions are the 8 nearest (a grid cell's 8-neighbourhood)


@dataclass(frozen=True)
class Candidates:
    """Per anchor region, the regions it may be paired with: a padded (n, K) index matrix and counts."""

    index: np.ndarray  # (n, K) int64, padded with -1
    count: np.ndarray  # (n,) int64; 0 = this region cannot be an anchor

    @classmethod
    def from_lists(cls, lists: Sequence[Sequence[int]]) -> Candidates:
        width = max((len(c) for c in lists), default=0)
        index = np.full((len(lists), max(width, 1)), -1, dtype=np.int64)
        for i, members in enumerate(lists):
            members = sorted(int(m) for m in members)
            if i in members:
                raise ValueError(f"region {i} lists itself as a candidate")
            index[i, :len(members)] = members
        return cls(index, np.asarray([len(c) for c in lists], dtype=np.int64))

    def __len__(self) -> int:
        return len(self.count)

    def of(self, region: int) -> np.ndarray:
        return self.index[region, :self.count[region]]

    def restrict(self, valid: np.ndarray) -> Candidates:
        """Drop candidates that are not ``valid`` (e.g. regions without images); invalid anchors get none."""
        valid = np.asarray(valid, dtype=bool)
        return Candidates.from_lists([[int(j) for j in self.of(i) if valid[j]] if valid[i] else []
                                      for i in range(len(self))])

    def anchors(self) -> np.ndarray:
        """Regions that have at least one candidate."""
        return np.flatnonzero(self.count > 0)

    def sample(self, anchors: np.ndarray, generator) -> np.ndarray:
        """One candidate per anchor, uniformly (``generator``: a ``torch.Generator``)."""
        import torch

        anchors = np.asarray(anchors, dtype=np.int64)
        counts = self.count[anchors]
        if (counts == 0).any():
            bad = int(anchors[np.argmax(counts == 0)])
            raise ValueError(f"region {bad} has no candidate to pair with")
        u = torch.rand(len(anchors), generator=generator, dtype=torch.float64).numpy()
        pick = np.minimum((u * counts).astype(np.int64), counts - 1)
        return self.index[anchors, pick]


# -- positions ---------------------------------------------------------------------------------------

def region_positions(regions: Regions) -> tuple[np.ndarray, str]:
    """(n, 2) positions and their kind: grid row/col when every region has them ("grid"), else
    lat/lon projected to kilometres ("km"). A region with neither is an error naming it."""
    grid = np.stack([regions.row, regions.col], axis=1).astype(float)
    if np.isfinite(grid).all():
        return grid, "grid"
    lat, lon = np.asarray(regions.lat, float), np.asarray(regions.lon, float)
    missing = ~(np.isfinite(lat) & np.isfinite(lon))
    if missing.any():
        rid = regions.ids[int(np.argmax(missing))]
        raise UserError(f"region '{rid}' has neither grid row/col nor lat/lon in regions.csv; spatial pair "
                        "sampling needs every region's position")
    km_per_deg = 111.32
    y = lat * km_per_deg
    x = lon * km_per_deg * np.cos(np.deg2rad(np.nanmean(lat)))
    return np.stack([y, x], axis=1), "km"


def _chebyshev_rows(positions: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return np.abs(positions[rows, None, :] - positions[None, :, :]).max(axis=2)


def _euclidean_rows(positions: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return np.sqrt(((positions[rows, None, :] - positions[None, :, :]) ** 2).sum(axis=2))


def spatial_neighbours(regions: Regions, radius: int = 1) -> Candidates:
    """Regions within ``radius`` grid cells (Chebyshev: radius 1 is the 8-neighbourhood).

    A region with no other region in its window (an island of the grid) takes its nearest region(s)
    instead, so every region can be an anchor. Without a grid, the ``LATLON_NEIGHBOURS`` nearest regions
    by distance are its neighbours.
    """
    positions, kind = region_positions(regions)
    n = len(positions)
    lists: list[list[int]] = []
    for start in range(0, n, CHUNK):
        rows = np.arange(start, min(start + CHUNK, n))
        if kind == "grid":
            cheb = _chebyshev_rows(positions, rows)
            eucl = _euclidean_rows(positions, rows)
        else:
            eucl = cheb = _euclidean_rows(positions, rows)
        for k, i in enumerate(rows):
            dist = eucl[k].copy()
            dist[i] = np.inf
            if kind == "grid":
                inside = np.flatnonzero((cheb[k] <= radius) & (np.arange(n) != i))
                if len(inside) == 0 and n > 1:
                    inside = np.flatnonzero(dist == dist.min())
            else:
                inside = np.argsort(dist, kind="stable")[:min(LATLON_NEIGHBOURS, n - 1)]
            lists.append(inside.tolist())
    return Candidates.from_lists(lists)


class DistantNegatives:
    """Tile2Vec's distant tile: a uniformly drawn region outside the anchor's neighbourhood window
    (Chebyshev distance > ``radius`` grid cells; in km without a grid: farther than the anchor's farthest
    neighbour). ``radius=0``: any other region (MuseCL's negative). Only ``valid`` regions are drawn."""

    def __init__(self, regions: Regions, radius: int = 1, valid: np.ndarray | None = None) -> None:
        self.positions, self.kind = region_positions(regions)
        n = len(self.positions)
        self.radius = radius
        self.valid = np.ones(n, bool) if valid is None else np.asarray(valid, bool)
        self.pool = np.flatnonzero(self.valid)
        self.reach = np.zeros(n)
        if self.kind == "km" and radius > 0:
            neighbours = spatial_neighbours(regions)
            self.reach = np.asarray([_euclidean_rows(self.positions, np.asarray([i]))[0, neighbours.of(i)].max(initial=0)
                                     for i in range(n)])
        if len(self.pool) < 2:
            raise UserError("negative sampling needs at least two regions with images")

    def allowed(self, anchor: int, other: np.ndarray) -> np.ndarray:
        other = np.asarray(other)
        if self.radius == 0:
            return other != anchor
        if self.kind == "grid":
            return np.abs(self.positions[other] - self.positions[anchor]).max(axis=-1) > self.radius
        return np.sqrt(((self.positions[other] - self.positions[anchor]) ** 2).sum(-1)) > self.reach[anchor]

    def sample(self, anchors: np.ndarray, generator) -> np.ndarray:
        """One negative per anchor: draw uniformly from the valid pool, redraw those inside the window."""
        import torch

        anchors = np.asarray(anchors, dtype=np.int64)
        out = np.full(len(anchors), -1, dtype=np.int64)
        todo = np.arange(len(anchors))
        for _ in range(64):
            if len(todo) == 0:
                return out
            draw = torch.randint(len(self.pool), (len(todo),), generator=generator).numpy()
            picked = self.pool[draw]
            ok = np.asarray([self.allowed(int(anchors[t]), p) for t, p in zip(todo, picked, strict=True)], bool)
            out[todo[ok]] = picked[ok]
            todo = todo[~ok]
        for t in todo:  # rare: most of the pool lies inside the window; choose among the allowed ones
            allowed = self.pool[self.allowed(int(anchors[t]), self.pool)]
            if len(allowed) == 0:
                raise UserError(f"region index {int(anchors[t])}: every region lies within its neighbourhood; "
                                "the city is too small for distant negatives (lower the radius)")
            out[t] = allowed[int(torch.randint(len(allowed), (1,), generator=generator))]
        return out


# -- similarity positives -------------------------------------------------------------------------------

def _eligible(eligible: np.ndarray | None, n: int) -> np.ndarray:
    return np.ones(n, bool) if eligible is None else np.asarray(eligible, bool)


def _argbest(scores: np.ndarray, higher_is_better: bool, tolerance: float = 1e-9) -> list[int]:
    finite = np.isfinite(scores)
    if not finite.any():
        return []
    best = scores[finite].max() if higher_is_better else scores[finite].min()
    close = np.abs(scores - best) <= tolerance * max(1.0, abs(best))
    return np.flatnonzero(close & finite).tolist()


def nearest_poi_regions(counts: np.ndarray, metric: str = "euclidean", eligible: np.ndarray | None = None) -> Candidates:
    """Per region, the other region(s) with the nearest POI-category vector; ties are all kept.

    ``euclidean``: PG-SimCLR's rule (``constructing_contrastive_sample_POI.py``: smallest Euclidean
    distance between first-level category count vectors). ``cosine``: most similar category *mix*
    (MuseCL's POI similarity, whose code is unreleased). Regions without a POI row (NaN) get none and
    are never candidates; with ``cosine``, neither are regions without any POI. ``eligible``: only these
    regions may be anchors or candidates (e.g. regions with images).
    """
    if metric not in ("euclidean", "cosine"):
        raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")
    counts = np.asarray(counts, dtype=float)
    valid = np.isfinite(counts).all(axis=1) & _eligible(eligible, len(counts))
    vectors = np.where(valid[:, None], counts, 0.0)
    if metric == "cosine":
        norms = np.linalg.norm(vectors, axis=1)
        valid &= norms > 0
        vectors = vectors / np.where(norms > 0, norms, 1.0)[:, None]
    n = len(vectors)
    lists: list[list[int]] = []
    for start in range(0, n, CHUNK):
        rows = np.arange(start, min(start + CHUNK, n))
        if metric == "euclidean":
            block = np.sqrt(np.maximum(((vectors[rows, None, :] - vectors[None, :, :]) ** 2).sum(-1), 0.0))
        else:
            block = vectors[rows] @ vectors.T
        for k, i in enumerate(rows):
            if not valid[i]:
                lists.append([])
                continue
            scores = block[k].astype(float)
            scores[~valid] = np.nan
            scores[i] = np.nan
            lists.append(_argbest(scores, higher_is_better=metric == "cosine"))
    return Candidates.from_lists(lists)


def mobility_profiles(origin: np.ndarray, destination: np.ndarray, trips: np.ndarray, n_regions: int) -> np.ndarray:
    """(n, 2n) mobility profile per region: where its trips go and where its arrivals come from.

    Each half is the region's outgoing (incoming) trips to (from) every *other* region, normalised to sum
    1 (intra-region trips are dropped: they say nothing about how a region relates to others). A region
    without trips has an all-zero profile.
    """
    flows = np.zeros((n_regions, n_regions))
    np.add.at(flows, (np.asarray(origin, int), np.asarray(destination, int)), np.asarray(trips, float))
    np.fill_diagonal(flows, 0.0)

    def normalise(m: np.ndarray) -> np.ndarray:
        total = m.sum(axis=1, keepdims=True)
        return np.divide(m, total, out=np.zeros_like(m), where=total > 0)

    return np.concatenate([normalise(flows), normalise(flows.T)], axis=1)


def most_similar_mobility_regions(origin: np.ndarray, destination: np.ndarray, trips: np.ndarray,
                                  n_regions: int, eligible: np.ndarray | None = None) -> Candidates:
    """Per region, the other region(s) whose mobility profile (:func:`mobility_profiles`) has the highest
    cosine similarity with its own — MuseCL's "region most similar by mobility" for street-view
    positives. Regions without any trip get none and are never candidates; ``eligible`` as in
    :func:`nearest_poi_regions`."""
    profiles = mobility_profiles(origin, destination, trips, n_regions)
    norms = np.linalg.norm(profiles, axis=1)
    valid = (norms > 0) & _eligible(eligible, n_regions)
    unit = profiles / np.where(valid, norms, 1.0)[:, None]
    lists: list[list[int]] = []
    for start in range(0, n_regions, CHUNK):
        rows = np.arange(start, min(start + CHUNK, n_regions))
        block = unit[rows] @ unit.T
        for k, i in enumerate(rows):
            if not valid[i]:
                lists.append([])
                continue
            scores = block[k].astype(float)
            scores[~valid] = np.nan
            scores[i] = np.nan
            lists.append(_argbest(scores, higher_is_better=True))
    return Candidates.from_lists(lists)
