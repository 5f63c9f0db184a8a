"""A grid's wall time from its run ledger, across every run that resumed it (docs/grid.md, "The run ledger").

Each ``urbanln-bench grid`` run appends its events to ``$URBANLN_BENCH_CACHE/grid/runs.jsonl``
(``grid.GridLedger``). For a cache that started empty, the whole grid's wall time is the sum of its runs'
walls, however often it was stopped and resumed; this prints each run (start, wall, workers, caption sets
built and their seconds, cells computed per phase with their summed seconds) and the totals.

    URBANLN_BENCH_CACHE=/path/to/the/cache python benchmarks/grid_wall.py [--since YYYY-MM-DD]
"""

from __future__ import annotations

import argparse
import datetime as dt

from urbanln_bench.grid import PHASES, ledger_runs, read_ledger


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--since", help="only runs started on or after this date (UTC, YYYY-MM-DD)")
    args = parser.parse_args()
    runs = ledger_runs(read_ledger())
    if args.since:
        since = dt.datetime.fromisoformat(args.since).replace(tzinfo=dt.UTC).timestamp()
        runs = [r for r in runs if r["started"] >= since]
    if not runs:
        raise SystemExit("no grid run in the ledger (URBANLN_BENCH_CACHE names the cache)")
    total = {"wall": 0.0, "captions": 0.0, "sets": 0}
    phases: dict[str, list[float]] = {}
    for r in runs:
        start = dt.datetime.fromtimestamp(r["started"], dt.UTC).strftime("%Y-%m-%d %H:%M")
        done = ", ".join(f"{p} {v['cells']} ({v['seconds'] / 60:.1f} cell-min)" for p, v in r["phases"].items())
        print(f"{start} run {r['run']} ({r['git']}, {r['workers']} workers, {r['seeds']} seeds): "
              f"{r['wall'] / 60:.1f} min wall{'' if r['ended'] else ' (stopped before its end)'}; "
              f"captions {r['captions']['built']} set(s), {r['captions']['seconds'] / 60:.1f} min; "
              f"cells computed: {done or 'none'}")
        total["wall"] += r["wall"]
        total["captions"] += r["captions"]["seconds"]
        total["sets"] += r["captions"]["built"]
        for p, v in r["phases"].items():
            cells, seconds = phases.setdefault(p, [0, 0.0])
            phases[p] = [cells + v["cells"], seconds + v["seconds"]]
    print(f"total: {len(runs)} run(s), {total['wall'] / 60:.1f} min wall; captions phase {total['sets']} set(s), "
          f"{total['captions'] / 60:.1f} min; cells by phase: " + ", ".join(
              f"{p} {phases[p][0]} ({phases[p][1] / 60:.1f} cell-min)" for p in PHASES if p in phases))


if __name__ == "__main__":
    main()
