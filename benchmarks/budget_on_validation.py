"""The `cpu` profile's images-seen budget, read on validation (issue 12; docs/architecture.md#budgets).

Every self-supervised method of the profile trains for the same number of images seen. This script reads
the records of those methods at several budgets on the same city and prints, per method and budget, the
probe's **validation** R² (``per_seed[*].val_r2``: the MLP head's R² on the validation split, the split that
chooses its early-stopping epoch), averaged over the city's tasks and the probe seeds, and the mean over
methods. The test split is not read: a budget is chosen on validation only, never on test numbers or on a
method's rank.

The committed records hold the profile's own budget; another budget is a settings variant of each method
(``--set images_seen=N``), run into a separate result store so that the leaderboard does not list it:

    urbanln-bench grid --cities NY --methods urbanln,urbanclip,urbanvlp,tile2vec,pg-simclr,musecl,caption-regression \\
        --set images_seen=4096 --no-frame --results budget-store
    python benchmarks/budget_on_validation.py --city NY results budget-store
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from pathlib import Path

from urbanln_bench.profiles import images_seen_budget
from urbanln_bench.records import iter_records

SELF_SUPERVISED = ("urbanln", "urbanclip", "urbanvlp", "tile2vec", "pg-simclr", "musecl", "caption-regression")


def validation_table(stores: list[Path], city: str, profile: str = "cpu",
                     methods: tuple[str, ...] = SELF_SUPERVISED) -> dict[str, dict[int, float]]:
    """method|imagery → images-seen budget → mean validation R² over the cell's tasks and seeds (every imagery the
    store holds, random split; variants that change anything but the budget are left out). Records keep no profile, so the
    stores must hold records of ``profile`` only (a method's unset budget is that profile's)."""
    if not images_seen_budget(profile):
        raise SystemExit(f"profile {profile!r} has no images-seen budget")
    values: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for store in stores:
        for _, record in iter_records(store, skip_corrupt=True):
            method = record.method
            if (method.name not in methods or record.cell.city != city or record.is_transfer
                    or record.split["strategy"] != "random" or set(method.overrides) - {"images_seen"}):
                continue
            # the budget, not the images seen: a pair trainer stops before the batch that would exceed it
            budget = images_seen_budget(profile, method.config.get("images_seen"))
            values[f"{method.name}|{record.cell.imagery}"][budget] += [
                float(seed["val_r2"]) for seed in record.per_seed if seed.get("val_r2") is not None]
    return {row: {budget: statistics.fmean(v) for budget, v in sorted(by.items()) if v}
            for row, by in sorted(values.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stores", nargs="+", type=Path, help="result stores to read (the committed one and others)")
    parser.add_argument("--city", default="NY")
    parser.add_argument("--profile", default="cpu", help="the profile every record was made under")
    args = parser.parse_args()
    table = validation_table(args.stores, args.city, args.profile)
    budgets = sorted({b for by in table.values() for b in by})
    print("| method | imagery | " + " | ".join(f"{b:,}" for b in budgets) + " |")
    print("|---|---|" + "---:|" * len(budgets))
    for row, by in table.items():
        name, imagery = row.split("|")
        print(f"| {name} | {imagery} | " + " | ".join(f"{by[b]:.3f}" if b in by else "—" for b in budgets) + " |")
    complete = [by for by in table.values() if all(b in by for b in budgets)]
    if not complete:
        print("no row has every budget")
        return
    means = [statistics.fmean(by[b] for by in complete) for b in budgets]
    print(f"| mean over the {len(complete)} rows with every budget | | " + " | ".join(f"{m:.3f}" for m in means)
          + " |")


if __name__ == "__main__":
    main()
