"""What more probe seeds change (issue 12 §3: "Seeds default to 10 where the probe is cheap enough").

Reads a result store whose records have many probe seeds (e.g. ``grid --seeds 0-9 --results STORE``) and
compares, per task of the city, among the competing rows of its table (native imagery, random split, no
ablation: ``leaderboard.native_rows``): the records cut to their first ``--few`` seeds against the whole
records. Same embeddings, same splits for the seeds both have (a probe seed's result does not depend on
the other seeds run; ``--against`` checks it): only the number of seeds differs. Per task: the winner, the
rows tied with it (paired 95 % interval of the R² difference containing 0), the median width of those
intervals; then the mean ranks over the city's cells with their intervals.

``--against OTHER`` also compares each row with the same row of another store (e.g. the leaderboard's
``results``) on the seeds both have: the largest per-seed R² difference and the difference of their means
in units of the row's seed std. Rows probed on the same cached embeddings agree exactly; rows fitted again
(another CPU, another thread count) show what pretraining's float32 chaos moves (docs/identity.md), which
no probe-seed interval covers.

    python benchmarks/seeds_effect.py --city NY STORE [--few 5] [--against results]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from urbanln_bench.compare import compare_cell, mean_ranks
from urbanln_bench.leaderboard import collect, native_rows
from urbanln_bench.metrics import aggregate


def rows_of(store: Path, city: str) -> dict[str, dict[str, object]]:
    """label|imagery → task → record, for the city's competing rows."""
    out: dict[str, dict[str, object]] = {}
    for (name, _tag), rows in collect(store).items():
        if name != city:
            continue
        for row, metrics in native_rows(rows).items():
            if row.role != "method":
                continue
            for task, m in metrics.items():
                if "record" in m:
                    out.setdefault(f"{row.label}|{row.imagery}", {})[task] = m["record"]
    return out


def cut_store(store: Path, city: str, seeds: int, into: Path) -> None:
    """A copy of the city's records under ``store`` keeping their first ``seeds`` probe seeds, the summary
    metrics recomputed from those (``metrics.aggregate``); the content digest dropped (it no longer matches)."""
    for path in sorted(store.glob(f"*/{city}/*/*.json")):
        data = json.loads(path.read_text())
        kept = sorted(data["per_seed"], key=lambda s: s["seed"])[:seeds]
        data["per_seed"] = kept
        data["split"]["seeds"] = [s["seed"] for s in kept]
        names = [n for n in data["metrics"] if all(n in s for s in kept)]
        data["metrics"] = aggregate([{n: s[n] for n in names} for s in kept])
        data.pop("digest", None)
        target = into / path.relative_to(store)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(data))


def cell_lines(rows: dict[str, dict[str, object]], tasks: list[str], what: str) -> list[dict[str, object]]:
    cells = []
    for task in tasks:
        records = {label: by_task[task] for label, by_task in rows.items() if task in by_task}
        comparison = compare_cell(records)
        cells.append(records)
        diffs = [d for d in comparison.differences.values() if d is not None]
        tied = sorted(label for label in records if comparison.tied(label))
        print(f"  {task:6s} {what}: winner {comparison.winner}; tied {len(tied)} ({', '.join(tied) or 'none'}); "
              f"median interval width {statistics.median(d.high - d.low for d in diffs):.4f}")
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--city", required=True)
    parser.add_argument("--few", type=int, default=5)
    parser.add_argument("--against", type=Path, help="another store: per-row differences on shared seeds")
    parser.add_argument("store", type=Path)
    args = parser.parse_args()
    many = rows_of(args.store, args.city)
    with tempfile.TemporaryDirectory() as tmp:
        cut_store(args.store, args.city, args.few, Path(tmp))
        few = rows_of(Path(tmp), args.city)
        tasks = sorted({t for by_task in many.values() for t in by_task})
        seeds = statistics.median(len(r.per_seed) for by_task in many.values() for r in by_task.values())
        print(f"{args.city}: {len(many)} competing rows, tasks {', '.join(tasks)}; first {args.few} seeds vs "
              f"all {seeds:.0f}")
        cells = {"few": cell_lines(few, tasks, f"{args.few:>2d} seeds"), "many": cell_lines(many, tasks, f"{seeds:>2.0f} seeds")}
        for name, label in (("few", f"{args.few} seeds"), ("many", f"{seeds:.0f} seeds")):
            ranks = mean_ranks(cells[name])
            print(f"  mean ranks ({label}): " + "; ".join(
                f"{row} {r.mean:.2f} [{r.low:.2f}, {r.high:.2f}] (width {r.high - r.low:.2f})"
                for row, r in sorted(ranks.items(), key=lambda kv: kv[1].mean)))
    if args.against:
        other = rows_of(args.against, args.city)
        print(f"against {args.against}, on the seeds both have:")
        for label in sorted(set(many) & set(other)):
            worst, shifts = 0.0, []
            for task, record in many[label].items():
                theirs = other[label].get(task)
                if theirs is None:
                    continue
                ours = {s["seed"]: s["r2"] for s in record.per_seed}
                shared = [(s["r2"], ours[s["seed"]]) for s in theirs.per_seed if s["seed"] in ours]
                worst = max([worst] + [abs(a - b) for a, b in shared])
                std = statistics.stdev(a for a, _ in shared) if len(shared) > 1 else 0.0
                diff = statistics.mean(b for _, b in shared) - statistics.mean(a for a, _ in shared)
                shifts.append(f"{task} {diff:+.3f} ({diff / std:+.1f} std)" if std else f"{task} {diff:+.3f}")
            print(f"  {label:40s} largest per-seed |ΔR²| {worst:.1e}; mean ΔR² {'; '.join(shifts)}")


if __name__ == "__main__":
    main()
