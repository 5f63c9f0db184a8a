"""Paired comparisons of methods on the same cells: R² differences with bootstrap confidence intervals,
each cell's winner and the methods statistically tied with it, and mean ranks with their intervals
(docs/architecture.md#comparisons).

Two records of one cell share their splits (a split is a function of city, task, seed and strategy), so
their test predictions can be compared region by region. Methods on different imageries of one cell are
scored on the test regions their imagery has: a street-view method's test regions are the split's test
regions that have street views, a subset of the satellite method's (NY small: 92 of 101). So for one seed,
a bootstrap replicate draws from the *union* of the records' test regions with replacement, and every
record is scored on the drawn regions it has: on shared regions the draw is the same for both (paired),
and each record's full-data score is its own R², the one its table shows. A replicate's difference is the
mean over the seeds both records have of R²(a) − R²(b) on that seed's draw. The 95 % interval is the
2.5th and 97.5th percentile of ``N_BOOTSTRAP`` replicates (percentile bootstrap, a fixed generator
seed: the same records give the same interval). A difference whose interval contains 0 is a tie. Two
records are comparable on a seed when their test regions overlap and their targets agree on every shared
region (the same split); records on other splits or cities are not compared.

This accounts for the test-set sampling noise of each split, paired where the regions are shared, and
averages over the seeds' splits and probe fits; it does not re-fit the probe per replicate. Records made
before the harness stored test predictions have none: they are left out of every comparison, and the tables
say so.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from urbanln_bench.records import Record

N_BOOTSTRAP = 2000
BOOTSTRAP_SEED = 0
CI_LEVEL = 0.95
PROBES = ("mlp", "ridge")


@dataclass(frozen=True)
class SeedPredictions:
    ids: tuple[str, ...]
    y: np.ndarray  # ln(y+1) of the test regions
    pred: np.ndarray  # the probe's predictions, same order


@dataclass(frozen=True)
class PairedDifference:
    """R²(a) − R²(b) over the seeds both have (each on its full test set), and its bootstrap interval."""

    diff: float
    low: float
    high: float
    seeds: int
    regions: int  # test regions of either record per seed (their union), summed over the seeds used
    shared: int = -1  # of those, the regions both records have (-1: not counted)

    @property
    def tied(self) -> bool:
        return self.low <= 0.0 <= self.high

    def text(self) -> str:
        return f"{self.diff:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


def predictions(record: Record, probe: str = "mlp") -> dict[int, SeedPredictions]:
    """Seed → the record's stored test predictions of ``probe`` ('mlp' or 'ridge'); {} when it has none.
    The same objects for the same record while it is among the last ones asked for (``_PREDICTIONS``), so that
    scores on a kept draw can be kept too (``_score``); read-only."""
    if probe not in PROBES:
        raise ValueError(f"probe must be one of {PROBES}, got {probe!r}")
    kept = _PREDICTIONS.get((id(record), probe))
    if kept is not None and kept[0] is record:
        return kept[1]
    out = _read_predictions(record, probe)
    _PREDICTIONS.put((id(record), probe), (record, out))  # the record is held, so its id names it while kept
    return out


def _read_predictions(record: Record, probe: str) -> dict[int, SeedPredictions]:
    out = {}
    for seed in record.per_seed:
        stored = seed.get("predictions")
        if not stored or probe not in stored:
            continue
        out[int(seed["seed"])] = SeedPredictions(tuple(stored["ids"]), np.asarray(stored["y"], dtype=np.float64),
                                                 np.asarray(stored[probe], dtype=np.float64))
    return out


def _r2_rows(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """R² per row of (replicates, regions) arrays; a replicate with no target variance scores 0."""
    centred = y - y.mean(axis=-1, keepdims=True)
    sst = (centred**2).sum(axis=-1)
    sse = ((y - pred) ** 2).sum(axis=-1)
    return np.where(sst > 0, 1.0 - sse / np.where(sst > 0, sst, 1.0), 0.0)


def _weighted_r2(y: np.ndarray, pred: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """R² per replicate, each region counted ``weights[replicate, region]`` times (a bootstrap draw as counts);
    a replicate with no target variance among its drawn regions scores 0."""
    total = weights.sum(axis=1)
    mean = (weights * y).sum(axis=1) / np.where(total > 0, total, 1.0)
    sst = (weights * (y - mean[:, None]) ** 2).sum(axis=1)
    sse = (weights * (y - pred) ** 2).sum(axis=1)
    return np.where(sst > 0, 1.0 - sse / np.where(sst > 0, sst, 1.0), 0.0)


class _Kept:
    """The last values put, least recently used out first once their summed ``size`` passes ``limit``."""

    def __init__(self, limit: int, size: Callable[[Any], int] = lambda value: 1):
        self.items: OrderedDict[tuple, Any] = OrderedDict()
        self.limit, self.size, self.total = limit, size, 0

    def get(self, key: tuple) -> Any:
        value = self.items.get(key)
        if value is not None:
            self.items.move_to_end(key)
        return value

    def put(self, key: tuple, value: Any) -> None:
        if key not in self.items:
            self.items[key] = value
            self.total += self.size(value)
        while self.total > self.limit and len(self.items) > 1:
            self.total -= self.size(self.items.popitem(last=False)[1])


# Kept across calls, by the functions below: each record's predictions (8192 records); each draw of
# ``_SeedDraw.draw_chain`` with its generator's state after it (512 MiB of counts); each score on a kept
# draw (4096 of N_BOOTSTRAP floats: 64 MiB). The same values every time, computed once.
_PREDICTIONS = _Kept(8192)
_DRAWS = _Kept(512 * 2**20, size=lambda kept: kept[0].nbytes)
_SCORES = _Kept(4096)


class _SeedDraw:
    """One seed's bootstrap draw over the union of some records' test regions, as counts per region.

    The union lists the first record's regions in its order, then each further record's new ones; the draw
    is ``rng.integers(0, len(union), (n, len(union)))``. Records that all have the same regions therefore
    get the draws a plain resampling of those regions would."""

    def __init__(self, seeds: Sequence[SeedPredictions]):
        self.counts: np.ndarray | None = None
        self.comparable = True
        first = seeds[0]
        if first.ids and all(p.ids == first.ids and np.array_equal(p.y, first.y) for p in seeds[1:]):
            # the common case, records of one imagery on one split: the same regions and targets, in order;
            # what the loop below would find, unless a region were listed twice (then the loop decides)
            self.position = dict(zip(first.ids, range(len(first.ids)), strict=True))
            self.target = first.y.tolist()
            if len(self.position) == len(first.ids):
                return
        self.position, self.target = {}, []
        for k, p in enumerate(seeds):
            overlap = False
            for region, y in zip(p.ids, p.y, strict=True):
                at = self.position.get(region)
                if at is None:
                    self.position[region] = len(self.target)
                    self.target.append(float(y))
                elif self.target[at] != float(y):
                    self.comparable = False  # another target for the same region: another split
                else:
                    overlap = True
            if k > 0 and not overlap:
                self.comparable = False  # no region in common with the records before: not the same split

    def draw(self, rng: np.random.Generator, n_bootstrap: int) -> None:
        n = len(self.target)
        draw = rng.integers(0, n, size=(n_bootstrap, n))
        flat = (draw + np.arange(n_bootstrap)[:, None] * n).ravel()
        counts = np.bincount(flat, minlength=n_bootstrap * n).reshape(n_bootstrap, n)
        # a count is an integer ≤ n: kept small, and made float64 only for the regions scored (same values)
        self.counts = counts.astype(np.uint16 if n < 2**16 else np.int64)

    def draw_chain(self, chain: tuple[int, ...], seed: int, n_bootstrap: int) -> None:
        """The draw ``paired_difference`` makes for its ``len(chain)``-th seed: that of a generator seeded with
        ``seed`` that drew before for unions of the sizes ``chain[:-1]`` (``chain[-1]`` is this union's). The
        same chain gives the same counts, so they are kept (``_DRAWS``): every pair of records of one cell has
        the same test regions, hence the same chain, and the leaderboard compares hundreds of such pairs."""
        kept = _DRAWS.get((seed, n_bootstrap, chain))
        if kept is not None:
            self.counts = kept[0]
            return
        rng = np.random.default_rng(seed)
        before = _DRAWS.get((seed, n_bootstrap, chain[:-1])) if len(chain) > 1 else None
        if before is not None:
            rng.bit_generator.state = before[1]
        else:
            for n in chain[:-1]:  # the draws before this one were not kept: replay the generator through them
                rng.integers(0, n, size=(n_bootstrap, n))
        self.draw(rng, n_bootstrap)
        _DRAWS.put((seed, n_bootstrap, chain), (self.counts, rng.bit_generator.state))

    def score(self, p: SeedPredictions) -> np.ndarray:
        """R² of ``p`` on every replicate: on the drawn regions it has."""
        at = np.fromiter((self.position[region] for region in p.ids), dtype=np.int64, count=len(p.ids))
        return _weighted_r2(p.y, p.pred, self.counts[:, at].astype(np.float64))


def _score(draw: _SeedDraw, drawn: tuple, p: SeedPredictions) -> np.ndarray:
    """``draw.score(p)`` for the draw ``drawn`` (``draw_chain``'s key), kept (``_SCORES``) by that key, the
    draw's union of regions in its order and ``p``: a cell's winner, random features or starting weights is
    compared with many records of the same test regions, so on the same draw. ``p`` is held with its score,
    so its id names it."""
    key = (drawn, tuple(draw.position), id(p))
    kept = _SCORES.get(key)
    if kept is not None:
        return kept[0]
    score = draw.score(p)
    _SCORES.put(key, (score, p))
    return score


def _pairs(a: Mapping[int, SeedPredictions], b: Mapping[int, SeedPredictions]) -> dict[int, _SeedDraw]:
    """Seed → its draw, for the seeds both have on the same split (overlapping test regions, the same target on
    each shared one), in seed order."""
    draws = {s: _SeedDraw([a[s], b[s]]) for s in sorted(set(a) & set(b))}
    return {s: draw for s, draw in draws.items() if draw.comparable}


def paired_difference(a: Record, b: Record, probe: str = "mlp", n_bootstrap: int = N_BOOTSTRAP,
                      seed: int = BOOTSTRAP_SEED) -> PairedDifference | None:
    """R²(a) − R²(b) with its paired bootstrap interval; None when the records share no seed with stored
    predictions on the same split."""
    pa, pb = predictions(a, probe), predictions(b, probe)
    draws = _pairs(pa, pb)
    if not draws:
        return None
    replicates = np.zeros(n_bootstrap)
    full, regions, shared = [], 0, 0
    chain: tuple[int, ...] = ()
    for s, draw in draws.items():
        full.append(float(_r2_rows(pa[s].y, pa[s].pred) - _r2_rows(pb[s].y, pb[s].pred)))
        chain += (len(draw.target),)
        draw.draw_chain(chain, seed, n_bootstrap)
        drawn = (seed, n_bootstrap, chain)
        replicates += _score(draw, drawn, pa[s]) - _score(draw, drawn, pb[s])
        regions += len(draw.target)
        shared += len(set(pa[s].ids) & set(pb[s].ids))
    replicates /= len(draws)
    tail = (1.0 - CI_LEVEL) / 2
    low, high = np.quantile(replicates, [tail, 1.0 - tail])
    return PairedDifference(float(np.mean(full)), float(low), float(high), len(draws), regions, shared)


@dataclass(frozen=True)
class CellComparison:
    """One cell: the winner (highest mean R²) and every other method's difference from it."""

    winner: str
    differences: dict[str, PairedDifference | None]  # label → R²(label) − R²(winner); None: not comparable

    def tied(self, label: str) -> bool:
        diff = self.differences.get(label)
        return diff is not None and diff.tied


def compare_cell(records: Mapping[str, Record], probe: str = "mlp") -> CellComparison | None:
    """The winner among ``records`` (label → record of one cell) by mean test R² of ``probe``, and the
    paired difference of every other record from it. None without records."""
    if not records:
        return None
    metric = "r2" if probe == "mlp" else "ridge_r2"

    def score(label: str) -> float:
        entry = records[label].metrics.get(metric)
        return entry.mean if entry is not None else float("-inf")

    winner = min(records, key=lambda label: (-score(label), label))
    return CellComparison(winner, {label: paired_difference(record, records[winner], probe)
                                   for label, record in records.items() if label != winner})


@dataclass(frozen=True)
class MeanRank:
    mean: float  # mean over cells of the method's rank (1 = best) by R²
    low: float
    high: float
    cells: int


def mean_ranks(cells: Sequence[Mapping[str, Record]], probe: str = "mlp", n_bootstrap: int = N_BOOTSTRAP,
               seed: int = BOOTSTRAP_SEED) -> dict[str, MeanRank]:
    """GEO-Bench-style aggregate: each method's rank per cell (1 = highest R², the mean over its seeds of its
    own test R²; ties share the mean rank), averaged over the cells it has, with a bootstrap interval from
    resampling every cell's test regions (one draw per cell and seed over the union of the methods' test
    regions, shared by all methods of the cell; each scored on the drawn regions it has). A method whose
    targets disagree with the others' on a shared region (another split) is left out of that cell; cells
    where fewer than two methods have comparable predictions are left out."""
    rng = np.random.default_rng(seed)
    point: dict[str, list[float]] = {}
    boot: dict[str, list[np.ndarray]] = {}
    for cell in cells:
        preds = {label: predictions(record, probe) for label, record in cell.items()}
        preds = {label: p for label, p in preds.items() if p}
        labels = sorted(preds)
        if len(labels) < 2:
            continue
        # a label joins the cell when it is comparable, on every seed it has, with the labels before it
        kept: list[str] = []
        for label in labels:
            if all(_SeedDraw([*(preds[k][s] for k in kept if s in preds[k]), preds[label][s]]).comparable
                   for s in preds[label]):
                kept.append(label)
        if len(kept) < 2:
            continue
        full = np.zeros(len(kept))
        reps = np.zeros((n_bootstrap, len(kept)))
        for s in sorted({s for label in kept for s in preds[label]}):
            having = [label for label in kept if s in preds[label]]
            draw = _SeedDraw([preds[label][s] for label in having])
            draw.draw(rng, n_bootstrap)
            for label in having:
                j, p = kept.index(label), preds[label][s]
                full[j] += float(_r2_rows(p.y, p.pred)) / len(preds[label])
                reps[:, j] += draw.score(p) / len(preds[label])
        full_ranks = _ranks_desc(full[None, :])[0]
        rep_ranks = _ranks_desc(reps)
        for j, label in enumerate(kept):
            point.setdefault(label, []).append(float(full_ranks[j]))
            boot.setdefault(label, []).append(rep_ranks[:, j])
    tail = (1.0 - CI_LEVEL) / 2
    out = {}
    for label, ranks in point.items():
        per_replicate = np.mean(np.stack(boot[label], axis=1), axis=1)
        low, high = np.quantile(per_replicate, [tail, 1.0 - tail])
        out[label] = MeanRank(float(np.mean(ranks)), float(low), float(high), len(ranks))
    return out


def _ranks_desc(scores: np.ndarray) -> np.ndarray:
    """Rank per row, 1 = highest score; equal scores share their mean rank."""
    greater = (scores[:, None, :] > scores[:, :, None]).sum(axis=2)  # how many beat each column
    equal = (scores[:, None, :] == scores[:, :, None]).sum(axis=2)  # including itself
    return greater + (equal + 1) / 2.0
