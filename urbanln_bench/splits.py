"""Train/val/test splits of a cell's regions: 6:2:2, deterministic from (city, task, seed).

The paper and its baselines split 60/20/20 (MuseCL, PG-SimCLR) or 64/16/20 (UrbanCLIP, UrbanVLP),
from global or unseeded RNGs, so their numbers cannot be reproduced split for split. Here a split
is a pure function of (city, task, seed, strategy) and the *sorted* set of labelled region ids:

- it does not depend on the order the ids arrive in, nor on Python's salted ``hash()``;
- it does not depend on the imagery, so the SV and SI cells of one (city, task, seed) share a
  split; the caller then drops the regions that lack that imagery with :meth:`Split.restrict` and
  reports how many were dropped;
- its :attr:`Split.digest` goes into every result record, so two results can be checked to have
  been scored on the same regions.

Two strategies: ``"random"`` (the paper's) and ``"spatial-block"``, which assigns whole square
blocks of the region grid to one part, because neighbouring regions are alike and a random split
lets the probe interpolate from a test region's neighbours.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from urbanln_bench.errors import UserError
from urbanln_bench.registry import suggest

STRATEGIES: tuple[str, ...] = ("random", "spatial-block")
RATIOS: tuple[float, float, float] = (0.6, 0.2, 0.2)
MIN_REGIONS = 5
MIN_BLOCKS = 25
"""``spatial-block`` uses the largest square block side that still leaves at least this many
non-empty blocks, so each part gets several blocks and the 6:2:2 counts can be met closely."""


class SplitError(UserError, ValueError):
    """A split cannot be built or used as asked (too few regions, unknown strategy, bad grid)."""


@dataclass(frozen=True)
class SplitIndices:
    """A split as integer index arrays into an embedding matrix whose rows follow ``region_ids``."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def __iter__(self):  # lets callers write ``train, val, test = indices``
        return iter((self.train, self.val, self.test))


@dataclass(frozen=True)
class Split:
    """Region ids of one split, each part sorted. ``block_size`` is set for ``spatial-block``."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    strategy: str
    seed: int
    block_size: int | None = None

    def __post_init__(self) -> None:
        for name in ("train", "val", "test"):  # canonical form: each part a sorted tuple
            object.__setattr__(self, name, tuple(sorted(getattr(self, name))))
        seen: set[str] = set()
        for name, part in self.parts().items():
            overlap = seen.intersection(part)
            if overlap:
                raise SplitError(f"split part '{name}' shares {len(overlap)} ids with another part, e.g. "
                                 f"{sorted(overlap)[0]!r}; parts must be disjoint")
            seen.update(part)

    def parts(self) -> dict[str, tuple[str, ...]]:
        return {"train": self.train, "val": self.val, "test": self.test}

    @property
    def n_regions(self) -> int:
        return len(self.train) + len(self.val) + len(self.test)

    @property
    def digest(self) -> str:
        """sha256 of the canonical JSON of the three id lists, the strategy and the seed."""
        payload = {"train": list(self.train), "val": list(self.val), "test": list(self.test),
                   "strategy": self.strategy, "seed": self.seed}
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def restrict(self, available_ids: Iterable[str]) -> tuple[Split, int]:
        """Keep only the ids in ``available_ids`` (e.g. regions with street views); return the
        restricted split and how many split regions were dropped. Available ids that are not in
        the split are ignored: they have no label for this cell."""
        available = set(available_ids)
        kept = {name: tuple(r for r in part if r in available) for name, part in self.parts().items()}
        dropped = self.n_regions - sum(len(p) for p in kept.values())
        empty = [name for name, part in kept.items() if not part]
        if empty:
            raise SplitError(
                f"after keeping only the {len(available)} available regions, split part(s) "
                f"{', '.join(empty)} are empty ({dropped} of {self.n_regions} regions dropped); "
                "the cell has too few regions with this imagery to be scored"
            )
        return Split(kept["train"], kept["val"], kept["test"], self.strategy, self.seed, self.block_size), dropped

    def indices(self, region_ids: Sequence[str]) -> SplitIndices:
        """Index arrays into rows ordered like ``region_ids`` (e.g. the embedding matrix)."""
        position = {r: i for i, r in enumerate(region_ids)}
        if len(position) != len(region_ids):
            raise SplitError("region_ids contains duplicates; each region must be one row")
        arrays = {}
        for name, part in self.parts().items():
            missing = [r for r in part if r not in position]
            if missing:
                raise SplitError(f"{len(missing)} '{name}' region(s) of the split have no row, e.g. "
                                 f"{missing[0]!r}; restrict the split to the available regions first")
            arrays[name] = np.fromiter((position[r] for r in part), dtype=np.int64, count=len(part))
        return SplitIndices(arrays["train"], arrays["val"], arrays["test"])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record (a frozen split file), with the digest for checking on load."""
        return {"strategy": self.strategy, "seed": self.seed, "block_size": self.block_size,
                "train": list(self.train), "val": list(self.val), "test": list(self.test),
                "digest": self.digest}

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Split:
        split = cls(tuple(record["train"]), tuple(record["val"]), tuple(record["test"]),
                    record["strategy"], int(record["seed"]), record.get("block_size"))
        if "digest" in record and record["digest"] != split.digest:
            raise SplitError(f"split record digest {record['digest'][:12]}… does not match its ids "
                             f"({split.digest[:12]}…); the split file was edited or corrupted")
        return split


def split_regions(
    region_ids: Sequence[str],
    *,
    city: str,
    task: str,
    seed: int,
    strategy: str = "random",
    grid: np.ndarray | None = None,
    block_size: int | None = None,
) -> Split:
    """Split the labelled regions of (city, task) 6:2:2 into train/val/test.

    ``grid`` is an (n, 2) integer array of (row, col) per id, in the order of ``region_ids``;
    required for ``"spatial-block"``. ``block_size`` overrides the automatic block side (the
    largest side leaving ≥ ``MIN_BLOCKS`` non-empty blocks).
    """
    if strategy not in STRATEGIES:
        raise SplitError(f"unknown split strategy '{strategy}'{suggest(strategy, list(STRATEGIES))}; "
                         f"known: {', '.join(STRATEGIES)}")
    ids = list(region_ids)
    bad = [r for r in ids if not isinstance(r, str)]
    if bad:
        raise SplitError(f"region ids must be strings; got {type(bad[0]).__name__} {bad[0]!r}")
    if len(set(ids)) != len(ids):
        dup = next(r for r in sorted(ids) if ids.count(r) > 1)
        raise SplitError(f"region ids contain duplicates, e.g. {dup!r}")
    if len(ids) < MIN_REGIONS:
        raise SplitError(f"{city}/{task}: only {len(ids)} labelled regions; a 6:2:2 split needs at least "
                         f"{MIN_REGIONS} so that train, val and test are all non-empty")
    order = sorted(range(len(ids)), key=ids.__getitem__)
    sorted_ids = [ids[i] for i in order]
    rng = np.random.default_rng(_stable_seed(city, task, seed, strategy))
    targets = _target_counts(len(ids))

    if strategy == "random":
        perm = rng.permutation(len(sorted_ids))
        cuts = np.cumsum(targets)[:2]
        labels = np.empty(len(ids), dtype=np.int64)
        labels[perm[: cuts[0]]] = 0
        labels[perm[cuts[0]: cuts[1]]] = 1
        labels[perm[cuts[1]:]] = 2
        used_block = None
    else:
        if grid is None:
            raise SplitError("strategy 'spatial-block' needs grid=(n, 2) row/col per region id")
        cells = _check_grid(grid, len(ids))[order]
        used_block = block_size if block_size is not None else _auto_block_size(cells)
        if used_block < 1:
            raise SplitError(f"block_size must be >= 1, got {used_block}")
        labels = _assign_blocks(cells, used_block, targets, rng)
        counts = np.bincount(labels, minlength=3)
        if (counts == 0).any():
            raise SplitError(f"{city}/{task}: block side {used_block} leaves too few blocks to fill "
                             "train, val and test; use a smaller block_size")

    parts = [tuple(r for r, lab in zip(sorted_ids, labels, strict=True) if lab == k) for k in range(3)]
    return Split(parts[0], parts[1], parts[2], strategy, int(seed), used_block)


def _stable_seed(city: str, task: str, seed: int, strategy: str) -> int:
    """A 64-bit seed from sha256, identical across processes and Python versions."""
    key = json.dumps([city, task, int(seed), strategy], separators=(",", ":"))
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "little")


def _target_counts(n: int) -> np.ndarray:
    """6:2:2 counts by largest remainder (ties to train, then val), summing to n."""
    quotas = np.array(RATIOS) * n
    counts = np.floor(quotas).astype(np.int64)
    remainders = quotas - counts
    for k in sorted(range(3), key=lambda k: (-remainders[k], k))[: n - int(counts.sum())]:
        counts[k] += 1
    return counts


def _check_grid(grid: np.ndarray, n: int) -> np.ndarray:
    arr = np.asarray(grid)
    if arr.shape != (n, 2):
        raise SplitError(f"grid must have shape ({n}, 2) (row, col per region id), got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or not np.isfinite(arr).all():
        raise SplitError("grid must hold finite numeric row/col values")
    if not np.array_equal(arr, np.round(arr)):
        raise SplitError("grid row/col values must be integers (grid cell indices)")
    return arr.astype(np.int64)


def _block_keys(cells: np.ndarray, side: int) -> np.ndarray:
    return (cells - cells.min(axis=0)) // side


def _auto_block_size(cells: np.ndarray) -> int:
    """Largest square side with at least MIN_BLOCKS non-empty blocks (1 if even that has fewer)."""
    extent = int((cells.max(axis=0) - cells.min(axis=0)).max()) + 1
    best = 1
    for side in range(1, extent + 1):
        if len(np.unique(_block_keys(cells, side), axis=0)) >= MIN_BLOCKS:
            best = side
        else:
            break
    return best


def _assign_blocks(cells: np.ndarray, side: int, targets: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Visit blocks in a seeded random order; give each to the part furthest below its 6:2:2 target."""
    keys = _block_keys(cells, side)
    uniq, block_of = np.unique(keys, axis=0, return_inverse=True)
    block_of = block_of.reshape(-1)
    sizes = np.bincount(block_of, minlength=len(uniq))
    block_part = np.empty(len(uniq), dtype=np.int64)
    filled = np.zeros(3, dtype=np.int64)
    for b in rng.permutation(len(uniq)):
        k = int(np.argmax(targets - filled))  # ties go to train, then val
        block_part[b] = k
        filled[k] += sizes[b]
    return block_part[block_of]
