"""The FACTUAL scene-graph parser as a phrase extractor (docs/methods.md#capture-metric step 1 and §10 Stage 4).

CAPTURE parses captions with ``lizhuang144/flan-t5-base-VG-factual-sg``, a FLAN-T5 that turns a
sentence into ``( subject , predicate , object )`` triples (attributes as ``( car , is , red )``),
prompt ``"Generate Scene Graph: "``, beam 5, at most 64 input and 128 output tokens. Here it loads
from a local folder only (``AutoTokenizer`` / ``AutoModelForSeq2SeqLM.from_pretrained``). The
default phrase extractor stays the offline ``parse.extract_phrases``; both return literal phrases
(substrings of the caption) so rejected ones can be deleted from it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from urbanln_bench.errors import UserError

FACTUAL_PROMPT = "Generate Scene Graph: "
FACTUAL_MAX_INPUT_TOKENS = 64
FACTUAL_MAX_OUTPUT_TOKENS = 128
FACTUAL_BEAMS = 5
_TRIPLE = re.compile(r"\(\s*([^(),]+?)\s*,\s*([^(),]+?)\s*(?:,\s*([^()]*?)\s*)?\)")
_ATTRIBUTE_PREDICATES = frozenset({"is", "are", "has attribute"})
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@runtime_checkable
class PhraseExtractor(Protocol):
    """Caption → literal phrases to judge (each a substring of the caption)."""

    name: str

    def __call__(self, text: str) -> list[str]:
        ...


class RuleParserExtractor:
    """Offline default: ``parse.extract_phrases`` ("adj noun" spans, else bare heads)."""

    name = "parse"

    def __call__(self, text: str) -> list[str]:
        from urbanln_bench.captions.parse import extract_phrases

        return extract_phrases(text)


def parse_triples(generated: str) -> list[tuple[str, str, str]]:
    """``"( car , on , road ) , ( car , is , red )"`` → [("car", "on", "road"), ("car", "is", "red")].

    Malformed pieces are skipped (a generator can stop mid-triple); a two-element tuple has an empty object.
    """
    return [(s.strip(), p.strip(), (o or "").strip()) for s, p, o in _TRIPLE.findall(generated)]


def _find(text: str, phrase: str) -> int:
    match = re.search(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])", text, flags=re.IGNORECASE)
    return match.start() if match else -1


def phrases_from_triples(text: str, triples: Sequence[tuple[str, str, str]]) -> list[str]:
    """Literal phrases of ``text`` named by ``triples``, in text order (CAPTURE's query rule, docs/methods.md#caption-pipeline).

    Entities are subjects and (non-attribute) objects; where "attribute entity" occurs literally it
    is the phrase, else the bare entity when that occurs. Phrases not in the text are skipped: the
    parser lemmatises and a non-literal phrase could not be deleted.
    """
    entities: dict[str, list[str]] = {}
    for subject, predicate, obj in triples:
        entities.setdefault(subject.lower(), [])
        if predicate.lower() in _ATTRIBUTE_PREDICATES and obj:
            entities[subject.lower()].append(obj.lower())
        elif obj:
            entities.setdefault(obj.lower(), [])
    found: dict[str, int] = {}
    for entity, attributes in entities.items():
        if not entity:
            continue
        spans = [f"{a} {entity}" for a in attributes] + [entity]
        for span in spans:
            start = _find(text, span)
            if start >= 0:
                literal = text[start:start + len(span)]
                found.setdefault(literal, start)
                break
    return sorted(found, key=lambda p: found[p])


class FactualParser:
    """FACTUAL T5 from a local folder; ``triples`` per sentence and literal ``phrases`` of a caption."""

    backend = "factual"

    def __init__(self, model_dir: str | Path, num_beams: int = FACTUAL_BEAMS, device: str = "cpu",
                 batch_size: int = 16) -> None:
        model_dir = Path(model_dir).expanduser()
        if not model_dir.is_dir() or not (model_dir / "config.json").is_file():
            raise UserError(f"FACTUAL parser folder '{model_dir}' " + ("has no config.json" if model_dir.is_dir()
                            else "does not exist") + "; pass a folder holding a save_pretrained copy of "
                            "lizhuang144/flan-t5-base-VG-factual-sg (model and tokenizer; nothing is downloaded), "
                            "or use the offline 'parse' extractor")
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
            self.model = AutoModelForSeq2SeqLM.from_pretrained(model_dir, local_files_only=True).to(device).eval()
        except (OSError, ValueError) as error:
            raise UserError(f"could not load the FACTUAL parser from {model_dir}: {error}") from error
        self.model_dir = model_dir
        self.num_beams = int(num_beams)
        self.device = device
        self.batch_size = int(batch_size)
        self.name = f"factual:{model_dir.name}"
        self._cache: dict[str, list[tuple[str, str, str]]] = {}

    def settings(self) -> dict[str, Any]:
        return {"backend": "factual", "model_dir": str(self.model_dir.resolve()), "beams": self.num_beams}

    def generate(self, sentences: Sequence[str]) -> list[str]:
        """The parser's raw output for each sentence (prompted, truncated to 64 tokens, beam search)."""
        import torch

        out: list[str] = []
        for start in range(0, len(sentences), self.batch_size):
            batch = [FACTUAL_PROMPT + s for s in sentences[start:start + self.batch_size]]
            inputs = self.tokenizer(batch, return_tensors="pt", padding=True, truncation=True,
                                    max_length=FACTUAL_MAX_INPUT_TOKENS)
            with torch.no_grad():
                ids = self.model.generate(**{k: v.to(self.device) for k, v in inputs.items()},
                                          num_beams=self.num_beams, max_length=FACTUAL_MAX_OUTPUT_TOKENS,
                                          do_sample=False)
            out += self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        return out

    def triples(self, text: str) -> list[tuple[str, str, str]]:
        """Triples of every sentence of ``text`` (sentences parsed once, cached)."""
        sentences = [s for s in _SENTENCE_END.split(text.strip()) if s]
        missing = [s for s in dict.fromkeys(sentences) if s not in self._cache]
        if missing:
            self._cache.update(zip(missing, (parse_triples(g) for g in self.generate(missing)), strict=True))
        return [t for s in sentences for t in self._cache[s]]

    def __call__(self, text: str) -> list[str]:
        return phrases_from_triples(text, self.triples(text))


def build_phrase_extractor(spec: str) -> PhraseExtractor:
    """``"parse"`` (offline default) or ``"factual:MODEL_DIR"``."""
    backend, _, argument = spec.partition(":")
    if backend == "parse" and not argument:
        return RuleParserExtractor()
    if backend == "factual":
        if not argument:
            raise UserError("phrase extractor 'factual' needs a folder: 'factual:/path/to/flan-t5-base-VG-factual-sg'")
        return FactualParser(argument)
    raise UserError(f"unknown phrase extractor '{spec}'; use 'parse' (offline) or 'factual:MODEL_DIR'")
