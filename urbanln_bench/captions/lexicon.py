"""The word lists behind CAPTURE's ``urban`` variant (docs/methods.md#capture-metric, "urban variant").

The original CAPTURE keeps an object only if spaCy/NLTK tag it NN* and it is not on the stop list,
and it decides synonyms with WordNet. None of those can be downloaded here, so the urban variant
reads two packaged files instead:

- ``reference/concrete_nouns.txt``: every single-word WordNet 3.0 noun whose *first* (most frequent)
  sense is concrete (lexicographer files animal, artifact, body, food, object, person, plant,
  substance) and that is sense-tagged at least as often as a noun as in any other part of speech. It is the noun check: "sense", "blend", "testament", "blue", "china", "emphasize" are
  not on it, "sidewalk", "tarp" and "overpass" are. Rebuilt by :func:`build_concrete_nouns` from any
  WordNet 3.0 directory (Debian's ``wordnet-base`` was used); WordNet's licence allows redistribution
  with its notice, which heads the file.
- ``reference/urban_lexicon.toml``: hand-written urban exceptions (objects to keep or drop, stop-list
  exceptions such as "soccer field", quantity nouns such as "a touch of", synonym groups).
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

__all__ = ["UrbanLexicon", "urban_lexicon", "concrete_nouns", "build_concrete_nouns", "CONCRETE_LEXICOGRAPHER_FILES"]

# WordNet lexicographer file numbers (lexnames): 05 animal, 06 artifact, 08 body, 13 food,
# 17 object, 18 person, 20 plant, 27 substance.
CONCRETE_LEXICOGRAPHER_FILES = {5: "animal", 6: "artifact", 8: "body", 13: "food", 17: "object", 18: "person",
                                20: "plant", 27: "substance"}
_WORDNET_NOTICE = """\
# Single-word WordNet 3.0 nouns whose first sense is concrete (lexicographer files: {files}),
# and tagged at least as often as a noun as as a verb, adjective or adverb.
# Built by urbanln_bench.captions.lexicon.build_concrete_nouns; the noun check of CAPTURE's urban variant.
# WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved. Permission to use, copy,
# modify and distribute this software and database and its documentation for any purpose and without
# fee or royalty is hereby granted, provided that you agree to comply with the following copyright
# notice and statements, including the disclaimer, and that the same appear on ALL copies of the
# software, database and documentation, including modifications that you make for internal use or for
# distribution. THIS SOFTWARE AND DATABASE IS PROVIDED "AS IS" AND PRINCETON UNIVERSITY MAKES NO
# REPRESENTATIONS OR WARRANTIES, EXPRESS OR IMPLIED. The name of Princeton University or Princeton
# may not be used in advertising or publicity pertaining to distribution of the software and/or database.
"""


def build_concrete_nouns(wordnet_dir: Path) -> str:
    """The text of ``concrete_nouns.txt`` from a WordNet 3.0 directory (``index.noun``, ``data.noun``)."""
    data = (wordnet_dir / "data.noun").read_bytes()
    other_uses: dict[str, int] = {}  # lemma → its most sense-tagged use as a verb, adjective or adverb
    for pos in ("verb", "adj", "adv"):
        for line in (wordnet_dir / f"index.{pos}").read_text(encoding="utf-8").splitlines():
            if line and not line.startswith(" "):
                fields = line.split()
                tagged = int(fields[-int(fields[2]) - 1])
                other_uses[fields[0]] = max(other_uses.get(fields[0], 0), tagged)
    words = []
    for line in (wordnet_dir / "index.noun").read_text(encoding="utf-8").splitlines():
        if not line or line.startswith(" "):  # the licence header lines start with spaces
            continue
        fields = line.split()
        lemma, count = fields[0], int(fields[2])
        if not all(c.isalpha() or c == "-" for c in lemma) or not lemma[0].isalpha():
            continue
        first = int(fields[-count])
        lexicographer_file = int(data[first:data.index(b"\n", first)].split()[1])
        # A word tagged more often as a verb, adjective or adverb than as a noun is not read as a
        # noun ("overall", "relative", "stretch"): the frequencies are SemCor's, in the index files.
        if lexicographer_file in CONCRETE_LEXICOGRAPHER_FILES and int(fields[-count - 1]) >= other_uses.get(lemma, 0):
            words.append(lemma)
    header = _WORDNET_NOTICE.format(files=", ".join(CONCRETE_LEXICOGRAPHER_FILES.values()))
    return header + "\n".join(sorted(words)) + "\n"


@functools.cache
def concrete_nouns() -> frozenset[str]:
    """The packaged noun check (see the module docstring)."""
    text = resources.files("urbanln_bench.reference").joinpath("concrete_nouns.txt").read_text(encoding="utf-8")
    return frozenset(line for line in text.splitlines() if line and not line.startswith("#"))


@dataclass(frozen=True)
class UrbanLexicon:
    """``reference/urban_lexicon.toml``: what each list is for is written in the file."""

    keep: frozenset[str]
    stop_exceptions: frozenset[str]
    deny: frozenset[str]
    quantity_nouns: frozenset[str]
    synonyms: tuple[frozenset[str], ...]
    attribute_deny: frozenset[str] = frozenset()
    attribute_synonyms: tuple[frozenset[str], ...] = ()
    predicate_synonyms: tuple[frozenset[str], ...] = ()

    @functools.cached_property
    def synonym_groups(self) -> dict[str, frozenset[int]]:
        """Word → the indexes of the synonym groups it belongs to."""
        groups: dict[str, set[int]] = {}
        for index, group in enumerate((*self.synonyms, *self.attribute_synonyms, *self.predicate_synonyms)):
            for word in group:
                groups.setdefault(word, set()).add(index)
        return {word: frozenset(ids) for word, ids in groups.items()}

    def synonymous(self, a: str, b: str) -> bool:
        """Whether a table group holds both (each a whole object, e.g. "parking lot" and "car park")."""
        groups = self.synonym_groups
        return not groups.get(a, frozenset()).isdisjoint(groups.get(b, frozenset()))


@functools.cache
def urban_lexicon() -> UrbanLexicon:
    text = resources.files("urbanln_bench.reference").joinpath("urban_lexicon.toml").read_text(encoding="utf-8")
    raw = tomllib.loads(text)
    return UrbanLexicon(frozenset(raw["keep"]), frozenset(raw["stop_exceptions"]), frozenset(raw["deny"]),
                        frozenset(raw["quantity_nouns"]), tuple(frozenset(g) for g in raw["synonyms"]),
                        frozenset(raw["attribute_deny"]), tuple(frozenset(g) for g in raw["attribute_synonyms"]),
                        tuple(frozenset(g) for g in raw["predicate_synonyms"]))
