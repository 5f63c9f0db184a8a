"""What more probe seeds change (issue 12 §3: "Seeds default to 10 where the probe is cheap enough").

Compares two result stores of one city made from the same embeddings with different ``--seeds`` (e.g. the
leaderboard's 5 and a side store at 10): for each task, among the competing rows of the city's table
(native imagery, random split, no ablation: ``leaderboard.native_rows``) present in both, the winner,
the rows tied with it (paired 95 % interval of the R² difference containing 0) and the median width of
those intervals; the mean ranks over the city's cells with their intervals; and whether the seeds both
stores have give the same per-seed R² (a probe seed's result must not depend on the other seeds run).

    python benchmarks/seeds_effect.py --city NY results /path/to/store-with-10-seeds
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from urbanln_bench.compare import compare_cell, mean_ranks
from urbanln_bench.leaderboard import collect, native_rows


def rows_of(store: Path, city: str) -> dict[str, dict[str, object]]:
    """label|imagery → task → record, for the city's competing rows."""
    tables = collect(store)
    out: dict[str, dict[str, object]] = {}
    for (name, _tag), rows in tables.items():
        if name != city:
            continue
        for row, metrics in native_rows(rows).items():
            if row.role != "method":
                continue
            for task, m in metrics.items():
                if "record" in m:
                    out.setdefault(f"{row.label}|{row.imagery}", {})[task] = m["record"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--city", required=True)
    parser.add_argument("stores", nargs=2, type=Path, help="the store with fewer seeds, then the one with more")
    args = parser.parse_args()
    few, many = (rows_of(store, args.city) for store in args.stores)
    labels = sorted(set(few) & set(many))
    tasks = sorted({t for label in labels for t in few[label]} & {t for label in labels for t in many[label]})
    worst = 0.0
    for label in labels:
        for task in tasks:
            a, b = few[label].get(task), many[label].get(task)
            if a is None or b is None:
                continue
            by_seed = {s["seed"]: s["r2"] for s in b.per_seed}
            for s in a.per_seed:
                if s["seed"] in by_seed:
                    worst = max(worst, abs(s["r2"] - by_seed[s["seed"]]))
    print(f"{args.city}: {len(labels)} competing rows in both stores, tasks {', '.join(tasks)}; largest per-seed R² "
          f"difference on the seeds both have: {worst:.2e}")
    cells = {name: [] for name in ("few", "many")}
    for task in tasks:
        for name, rows in (("few", few), ("many", many)):
            records = {label: rows[label][task] for label in labels if task in rows[label]}
            comparison = compare_cell(records)
            cells[name].append(records)
            diffs = [d for d in comparison.differences.values() if d is not None]
            tied = sorted(label for label in records if comparison.tied(label))
            seeds = statistics.median(len(r.per_seed) for r in records.values())
            print(f"  {task:6s} {seeds:>4.0f} seeds: winner {comparison.winner}; tied {len(tied)} "
                  f"({', '.join(tied) or 'none'}); median interval width "
                  f"{statistics.median(d.high - d.low for d in diffs):.4f}")
    for name in ("few", "many"):
        ranks = mean_ranks(cells[name])
        print(f"  mean ranks ({name} seeds): " + "; ".join(
            f"{label} {r.mean:.2f} [{r.low:.2f}, {r.high:.2f}]"
            for label, r in sorted(ranks.items(), key=lambda kv: kv[1].mean)))


if __name__ == "__main__":
    main()
