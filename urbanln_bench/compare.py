"""Paired comparisons of methods on the same cells: R² differences with bootstrap confidence intervals,
each cell's winner and the methods statistically tied with it, and mean ranks with their intervals
(docs/architecture.md#comparisons).

Two records of one cell share their splits (a split is a function of city, task, seed and strategy), so
their test predictions can be compared region by region. For one seed, a bootstrap replicate draws the
test regions with replacement and scores both methods on the same draw; a replicate's difference is the
mean over the seeds both records have of R²(a) − R²(b) on that seed's draw. The 95 % interval is the
2.5th and 97.5th percentile of ``N_BOOTSTRAP`` replicates (percentile bootstrap, a fixed generator
seed: the same records give the same interval). A difference whose interval contains 0 is a tie.

This accounts for the test-set sampling noise of each split, paired, and averages over the seeds' splits
and probe fits; it does not re-fit the probe per replicate. Records made before the harness stored test
predictions have none: they are left out of every comparison, and the tables say so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

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
    """R²(a) − R²(b) over the seeds both have (full test sets), and its bootstrap interval."""

    diff: float
    low: float
    high: float
    seeds: int
    regions: int  # test regions per seed, summed over the seeds used

    @property
    def tied(self) -> bool:
        return self.low <= 0.0 <= self.high

    def text(self) -> str:
        return f"{self.diff:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


def predictions(record: Record, probe: str = "mlp") -> dict[int, SeedPredictions]:
    """Seed → the record's stored test predictions of ``probe`` ('mlp' or 'ridge'); {} when it has none."""
    if probe not in PROBES:
        raise ValueError(f"probe must be one of {PROBES}, got {probe!r}")
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


def _pairs(a: Mapping[int, SeedPredictions], b: Mapping[int, SeedPredictions]) -> list[int]:
    """Seeds both have, on the same test regions (same split)."""
    return sorted(s for s in set(a) & set(b) if a[s].ids == b[s].ids and np.array_equal(a[s].y, b[s].y))


def paired_difference(a: Record, b: Record, probe: str = "mlp", n_bootstrap: int = N_BOOTSTRAP,
                      seed: int = BOOTSTRAP_SEED) -> PairedDifference | None:
    """R²(a) − R²(b) with its paired bootstrap interval; None when the records share no seed with stored
    predictions on the same split."""
    pa, pb = predictions(a, probe), predictions(b, probe)
    seeds = _pairs(pa, pb)
    if not seeds:
        return None
    rng = np.random.default_rng(seed)
    replicates = np.zeros(n_bootstrap)
    full = []
    for s in seeds:
        y, ya, yb = pa[s].y, pa[s].pred, pb[s].pred
        full.append(float(_r2_rows(y, ya) - _r2_rows(y, yb)))
        draw = rng.integers(0, len(y), size=(n_bootstrap, len(y)))
        replicates += _r2_rows(y[draw], ya[draw]) - _r2_rows(y[draw], yb[draw])
    replicates /= len(seeds)
    tail = (1.0 - CI_LEVEL) / 2
    low, high = np.quantile(replicates, [tail, 1.0 - tail])
    return PairedDifference(float(np.mean(full)), float(low), float(high), len(seeds),
                            sum(len(pa[s].ids) for s in seeds))


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
    """GEO-Bench-style aggregate: each method's rank per cell (1 = highest R²; ties share the mean rank),
    averaged over the cells it has, with a bootstrap interval from resampling every cell's test regions
    (one draw per cell and seed, shared by all methods of the cell). Cells where fewer than two methods
    have comparable predictions are left out."""
    rng = np.random.default_rng(seed)
    point: dict[str, list[float]] = {}
    boot: dict[str, list[np.ndarray]] = {}
    for cell in cells:
        preds = {label: predictions(record, probe) for label, record in cell.items()}
        preds = {label: p for label, p in preds.items() if p}
        if len(preds) < 2:
            continue
        labels = sorted(preds)
        seeds = sorted(set.intersection(*(set(_pairs(preds[labels[0]], preds[label])) for label in labels)))
        if not seeds:
            continue
        full = np.zeros(len(labels))
        reps = np.zeros((n_bootstrap, len(labels)))
        for s in seeds:
            y = preds[labels[0]][s].y
            draw = rng.integers(0, len(y), size=(n_bootstrap, len(y)))
            for j, label in enumerate(labels):
                pred = preds[label][s].pred
                full[j] += float(_r2_rows(y, pred))
                reps[:, j] += _r2_rows(y[draw], pred[draw])
        full_ranks = _ranks_desc(full[None, :])[0]
        rep_ranks = _ranks_desc(reps)
        for j, label in enumerate(labels):
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
