"""Figures for CAPTURE on real MLLM prose (docs/methods.md#capture-metric, "urban variant"; issue 16 §2).

Two measurements, on paragraphs the project did not write:

- **junk share**: of the objects CAPTURE scores, the share a person labelled as not a thing in the
  picture (abstract nouns, colours, place names, verbs read as nouns, negated things, camera talk).
  Labels are per object string (``{"object": true}`` = junk), written by hand after reading the
  object in its paragraphs; an object the labels do not cover is an error, so a changed parser
  cannot hide new junk.
- **paraphrase vs invented**: for hand-made triples (reference, faithful paraphrase, the reference
  with two or three invented objects) whether CAPTURE(paraphrase, reference) beats
  CAPTURE(invented, reference).

``python -m urbanln_bench.captions.real_prose FOLDER`` prints both for every variant; FOLDER holds
``*.jsonl`` paragraphs (``{"text": ...}``), ``labels.json`` and ``pairs.jsonl``. docs/methods.md says
how the held-out set was built; ``tests/data/real_prose`` is a small fixture in the same layout.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from urbanln_bench.captions.capture import CAPTURE_VARIANTS, CaptureScorer
from urbanln_bench.errors import UserError

__all__ = ["JunkShare", "junk_share", "pair_wins", "load_paragraphs", "load_pairs", "load_labels"]


@dataclass(frozen=True)
class JunkShare:
    """Scored objects (with repeats across paragraphs, once per paragraph), the junk among them, and which."""

    scored: int
    junk: int
    junk_objects: tuple[tuple[str, int], ...]

    @property
    def share(self) -> float:
        return self.junk / self.scored if self.scored else 0.0


def junk_share(scorer: CaptureScorer, paragraphs: Iterable[str], labels: Mapping[str, bool]) -> JunkShare:
    """The labelled junk share of the objects ``scorer`` keeps from ``paragraphs``."""
    counts: Counter[str] = Counter()
    for text in paragraphs:
        counts.update(scorer.parse(text).objects)
    missing = sorted(o for o in counts if o not in labels)
    if missing:
        raise UserError(f"objects without a junk label: {', '.join(missing)}; label each in labels.json "
                        "(true = not a thing in the picture)")
    junk = Counter({o: n for o, n in counts.items() if labels[o]})
    return JunkShare(sum(counts.values()), sum(junk.values()), tuple(junk.most_common()))


def pair_wins(scorer: CaptureScorer, pairs: Sequence[Mapping[str, str]]) -> list[tuple[float, float]]:
    """(CAPTURE(paraphrase, reference), CAPTURE(invented, reference)) per triple."""
    return [(scorer.score(p["paraphrase"], p["reference"]), scorer.score(p["invented"], p["reference"]))
            for p in pairs]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_paragraphs(folder: Path) -> list[str]:
    """Every ``text`` of every ``*.jsonl`` in ``folder`` except ``pairs.jsonl``, files in name order."""
    return [row["text"] for path in sorted(folder.glob("*.jsonl")) if path.name != "pairs.jsonl"
            for row in _jsonl(path)]


def load_pairs(folder: Path) -> list[dict]:
    return _jsonl(folder / "pairs.jsonl")


def load_labels(folder: Path) -> dict[str, bool]:
    return json.loads((folder / "labels.json").read_text(encoding="utf-8"))


def main(argv: Sequence[str]) -> None:
    folder = Path(argv[0])
    paragraphs, labels = load_paragraphs(folder), load_labels(folder)
    pairs = load_pairs(folder) if (folder / "pairs.jsonl").is_file() else []
    for name in CAPTURE_VARIANTS:
        share = junk_share(CaptureScorer(variant=name, soft_matching=False, wordnet=False), paragraphs, labels)
        print(f"{name}: {share.junk}/{share.scored} scored objects are junk ({share.share:.1%}); "
              f"{', '.join(f'{o}×{n}' for o, n in share.junk_objects[:12])}")
        for wordnet in (False, True):
            wins = pair_wins(CaptureScorer(variant=name, wordnet=wordnet), pairs)
            better = sum(p > i for p, i in wins)
            print(f"  wordnet={wordnet}: paraphrase beats invented in {better}/{len(wins)}; "
                  f"mean paraphrase {sum(p for p, _ in wins) / max(len(wins), 1):.3f}, "
                  f"invented {sum(i for _, i in wins) / max(len(wins), 1):.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
