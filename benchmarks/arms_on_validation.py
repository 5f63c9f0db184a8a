"""Two or more recipes ("arms") of the same methods, read on validation only (issue 12; docs/methods.md#cpu-tower).

Each arm is a result store made by one version of the code or one setting (a worktree with another CLIP
image tower, another foundation, ...). Per method × imagery the script prints the probe's **validation**
R² (``per_seed[*].val_r2``), averaged over the city's tasks and the probe seeds, the embedding's
participation ratio, and per arm the mean over the rows every arm has. The test split is not read: a
recipe is chosen on validation, never on test numbers or on a method's rank.

    python benchmarks/arms_on_validation.py --city NY --methods remoteclip,urbanln,urbanclip,urbanvlp \\
        vit=results rn=/path/to/rn-store

Make each arm's store with that arm's own code: ``cd <worktree> && python -m urbanln_bench grid ... --results
<store>`` (``python -m`` puts the current directory first on ``sys.path``, so running from another checkout takes that
checkout's ``urbanln_bench`` whatever ``PYTHONPATH`` says; ``methods/``, ``cities/`` and ``tasks/`` follow the
``urbanln_bench`` that was imported, ``urbanln_bench/builtin/__init__.py``). The git revision a record names is the
revision of the checkout its code came from.

With ``--settings`` the arms are instead the setting variants inside the stores (``--set lr=…`` records, one
column per setting string; "as committed" is the method's own recipe), e.g. an lr sweep run with
``urbanln-bench grid --methods "tile2vec,tile2vec:lr=0.0003,…" --no-frame --results sweep-store``:

    python benchmarks/arms_on_validation.py --settings --methods tile2vec,pg-simclr,musecl sweep=sweep-store
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from pathlib import Path

from urbanln_bench.records import iter_records


def _setting_label(overrides: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(overrides.items())) or "as committed"


def arm_table(arms: dict[str, Path], city: str, methods: tuple[str, ...],
              by_setting: bool = False) -> dict[str, dict[str, tuple[float, float]]]:
    """method|imagery → arm → (mean validation R² over tasks and seeds, mean participation ratio); random split,
    not transferred. Plain records only, or with ``by_setting`` every setting variant as its own arm."""
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    ratios: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for store_arm, store in arms.items():
        for _, record in iter_records(store, skip_corrupt=True):
            method = record.method
            if (method.name not in methods or record.cell.city != city or record.is_transfer
                    or record.split["strategy"] != "random" or (method.overrides and not by_setting)):
                continue
            row, arm = f"{method.name}|{record.cell.imagery}", store_arm
            if by_setting:
                arm = _setting_label(method.overrides)
            values[row][arm] += [float(s["val_r2"]) for s in record.per_seed if s.get("val_r2") is not None]
            ratio = (record.embedding or {}).get("participation_ratio")
            if ratio is not None:
                ratios[row][arm].append(float(ratio))
    return {row: {arm: (statistics.fmean(v), statistics.fmean(ratios[row][arm]) if ratios[row][arm] else float("nan"))
                  for arm, v in by.items() if v}
            for row, by in sorted(values.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("arms", nargs="+", help="NAME=STORE, one per arm (the first is the reference)")
    parser.add_argument("--city", default="NY")
    parser.add_argument("--methods", default="remoteclip,urbanln,urbanclip,urbanvlp")
    parser.add_argument("--settings", action="store_true", help="columns are the setting variants in the stores")
    args = parser.parse_args()
    arms = {}
    for item in args.arms:
        name, _, store = item.partition("=")
        if not store or not Path(store).is_dir():
            raise SystemExit(f"arm {item!r}: give NAME=STORE with an existing result store")
        arms[name] = Path(store)
    table = arm_table(arms, args.city, tuple(m.strip() for m in args.methods.split(",") if m.strip()), args.settings)
    names = list(arms) if not args.settings else sorted({a for by in table.values() for a in by},
                                                        key=lambda a: (a != "as committed", a))
    print(f"{args.city}: mean validation R² over tasks and probe seeds (participation ratio of the embedding)")
    print("| method | imagery | " + " | ".join(names) + " |")
    print("|---|---|" + "---:|" * len(names))
    for row, by in table.items():
        method, imagery = row.split("|")
        cells = [f"{by[a][0]:.3f} ({by[a][1]:.1f})" if a in by else "—" for a in names]
        print(f"| {method} | {imagery} | " + " | ".join(cells) + " |")
    common = [row for row, by in table.items() if all(a in by for a in names)]
    if common and not args.settings:
        means = [statistics.fmean(table[row][a][0] for row in common) for a in names]
        print(f"| mean over the {len(common)} rows every arm has | | " + " | ".join(f"{m:.3f}" for m in means) + " |")


if __name__ == "__main__":
    main()
