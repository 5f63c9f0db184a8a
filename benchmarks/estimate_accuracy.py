"""How far the grid's ``--dry-run`` estimate is from the time a cell took (docs/grid.md, "--dry-run").

Each fitted cell of the timing log (``$URBANLN_BENCH_CACHE/grid/timings.jsonl``) is estimated from the log
without every timing of its method variant in its context (city, imagery, pretrain city): what the dry run
knows of a cell it never ran. A cell is measured by its own work (``grid.own_seconds``: its seconds less the
shared artefacts it built, where its line says); cells that shared a fit or only probed cached embeddings
are not estimated. Printed for ``grid.estimate_seconds`` and for the rule it replaced (the plain
median of the variant's timings over every city): the median factor between estimate and time, and the
estimated total over the measured total.

    URBANLN_BENCH_CACHE=... python benchmarks/estimate_accuracy.py
"""

from __future__ import annotations

import math
import statistics
import types

from urbanln_bench.grid import GridCell, estimate_seconds, own_seconds, read_timings
from urbanln_bench.runner import RunOptions


def plain_median(cell: GridCell, options: RunOptions, timings: list[dict]) -> float | None:
    """The rule before: the variant's fitted timings of the same context, else of every context."""
    same = [t for t in timings if t["method"] == cell.method and t["settings"] == dict(cell.settings)
            and t["scale"] == options.scale and t["profile"] == options.profile and t["device"] == options.device
            and not t.get("fit_shared") and not t.get("probe_only")]
    exact = [t for t in same if (t["city"], t["imagery"], t["pretrain_city"]) == (cell.city, cell.imagery,
                                                                                   cell.pretrain_city)]
    pool = exact or same
    return statistics.median(own_seconds(t) for t in pool) if pool else None


def main() -> None:
    log = read_timings()
    if not log:
        raise SystemExit("the timing log is empty: run some grid cells first (URBANLN_BENCH_CACHE names the cache)")
    rules = {"context ratios (grid.estimate_seconds)": estimate_seconds, "plain median over cities": plain_median}
    found: dict[str, list[tuple[float, float]]] = {name: [] for name in rules}
    for t in log:
        if t.get("fit_shared") or t.get("probe_only"):
            continue
        key = (t["method"], t["settings"], t["city"], t["imagery"], t["pretrain_city"])
        rest = [r for r in log if (r["method"], r["settings"], r["city"], r["imagery"], r["pretrain_city"]) != key]
        cell = GridCell(t["city"], t["method"], t["imagery"], tuple(sorted(t["settings"].items())), t["pretrain_city"])
        options = types.SimpleNamespace(scale=t["scale"], profile=t["profile"], device=t["device"])
        estimates = {name: rule(cell, options, rest) for name, rule in rules.items()}
        if any(e is None for e in estimates.values()):
            continue  # compare the rules on the same cells
        for name, e in estimates.items():
            found[name].append((e, own_seconds(t)))
    for name, pairs in found.items():
        factor = math.exp(statistics.median(abs(math.log(e / s)) for e, s in pairs))
        total = sum(e for e, _ in pairs) / sum(s for _, s in pairs)
        print(f"{name}: {len(pairs)} cells, median factor {factor:.2f}, estimated / measured total {total:.3f}")


if __name__ == "__main__":
    main()
