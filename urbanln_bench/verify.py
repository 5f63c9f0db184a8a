"""Are the stored records still what the current code would compute? (`leaderboard --verify-keys`)

A record's key covers everything that can move its number: the method's identity and settings, the
data's manifest, the split, the probe and — for caption-trained methods — the caption configuration
and the caption components' versions (docs/identity.md). A record made by other code (an older
version) keeps its numbers but no longer matches its key; re-running the cell would recompute it.
This module replays every stored cell as a ``run --dry-run`` (nothing is fitted or written) and names
the stale ones, so a committed leaderboard cannot silently drift from the code that is said to make it.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from urbanln_bench.records import iter_records


@dataclass(frozen=True)
class Replay:
    method: str
    settings: tuple[tuple[str, str], ...]
    city: str
    fit_city: str
    scale: str
    strategy: str
    seeds: tuple[int, ...]
    tune: int


def setting_text(value) -> str:
    """A stored setting as ``--set`` takes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _replay(results_dir: Path, profile: str, log: Callable[[str], None]):
    """Yield (record path or cell id, dry-run outcome, run options) for every stored twin cell the
    current code would not reuse."""
    from urbanln_bench.data.loader import reuse_opened
    from urbanln_bench.runner import RunOptions, run

    groups: dict[Replay, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    paths: dict[tuple[Replay, str, str], Path] = {}
    for path, record in iter_records(results_dir):
        if record.data.source != "synthetic":
            log(f"{path}: real data, not replayed (needs its --data-root)")
            continue
        method, cell = record.method, record.cell
        replay = Replay(method.name, tuple(sorted((k, setting_text(v)) for k, v in method.overrides.items())),
                        cell.city, record.fit_city, record.data.scale, record.split["strategy"],
                        tuple(record.split["seeds"]), int(record.probe.get("tune_trials") or 0))
        groups[replay][cell.imagery].add(cell.task)
        paths[(replay, cell.task, cell.imagery)] = path
    with reuse_opened():  # each city is read and verified once, not once per replayed cell
        for replay, by_imagery in groups.items():
            for imagery, tasks in by_imagery.items():
                options = RunOptions(method=replay.method, city=replay.city, tasks=sorted(tasks), imagery=[imagery],
                                     scale=replay.scale, seeds=list(replay.seeds), strategy=replay.strategy,
                                     tune=replay.tune, profile=profile, results_dir=results_dir,
                                     settings=dict(replay.settings), dry_run=True, render_for_keys=True,
                                     pretrain_city=replay.fit_city if replay.fit_city != replay.city else None)
                for outcome in run(options, log=lambda m: None):
                    if outcome.record is None:
                        _, task, imagery_ = outcome.cell.split("/")
                        yield paths.get((replay, task, imagery_), outcome.cell), outcome, options


def stale_records(results_dir: Path, *, profile: str = "cpu",
                  log: Callable[[str], None] = lambda m: None) -> list[str]:
    """One line per stored synthetic-twin cell whose record the current code would not reuse (the case-study
    artifacts: ``case_study.stale_case_studies``)."""
    return [f"{path}: {outcome.note.rsplit(' (', 1)[0]}" for path, outcome, _ in _replay(results_dir, profile, log)]


def rekey_records(results_dir: Path, *, profile: str = "cpu",
                  log: Callable[[str], None] = lambda m: None) -> list[Path]:
    """Rewrite every stale record's key to the key the current code computes; returns the files rewritten.

    Only sound right after a change that moves identities and no numbers (docs/identity.md: e.g. keys
    built from versions instead of source text), made on a tree where ``--verify-keys`` was clean.
    Besides the key, only the weight-source label (which names the backbone's cache key) is refreshed.
    """
    from urbanln_bench.records import load_record, write_record
    from urbanln_bench.runner import make_method

    rewritten = []
    labels: dict[int, str] = {}  # one weight-source label per replayed group (its options object)
    for path, outcome, options in list(_replay(results_dir, profile, log)):
        if not isinstance(path, Path) or not outcome.key:
            continue
        record = load_record(path)
        if id(options) not in labels:
            labels[id(options)] = make_method(options).weight_source()
        weights = labels[id(options)]
        pretraining = record.pretraining
        if pretraining and pretraining.get("weights"):
            pretraining = {**pretraining, "weights": weights}
        write_record(path, dataclasses.replace(record, key=outcome.key, pretraining=pretraining,
                                               method=dataclasses.replace(record.method, weight_source=weights)))
        rewritten.append(path)
    return rewritten
