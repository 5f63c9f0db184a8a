"""OWLv2 and FACTUAL backends load through processor/tokenizer + from_pretrained(local_dir), as real weights do.

Tiny random models are saved to disk and loaded back by the backends; the FACTUAL T5 is trained for a
few steps to emit one known scene graph so the whole generate → parse → phrase path is checked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from urbanln_bench.captions.factual import FactualParser, parse_triples, phrases_from_triples
from urbanln_bench.captions.phrase_scoring import (
    OWLV2_THRESHOLD,
    Owlv2PhraseScorer,
    QuerySet,
    owlv2_phrase_scores,
)
from urbanln_bench.errors import UserError


def _clip_bpe_vocab() -> dict[str, int]:
    """A byte-level CLIP BPE vocabulary with no merges: every character is its own token."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = [chr(b) for b in printable] + [chr(256 + n) for n in range(256 - len(printable))]  # GPT-2 byte map
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({f"{c}</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab


@pytest.fixture(scope="module")
def tiny_owlv2_dir(tmp_path_factory) -> Path:
    from transformers import (
        CLIPTokenizer,
        Owlv2Config,
        Owlv2ForObjectDetection,
        Owlv2ImageProcessor,
        Owlv2Processor,
    )

    folder = tmp_path_factory.mktemp("owlv2")
    tokenizer = CLIPTokenizer(vocab=_clip_bpe_vocab(), merges=[])
    config = Owlv2Config(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 16},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    torch.manual_seed(0)
    Owlv2ForObjectDetection(config).save_pretrained(folder)
    processor = Owlv2Processor(image_processor=Owlv2ImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer)
    processor.save_pretrained(folder)
    return folder


def test_owlv2_scorer_loads_from_a_local_folder_and_scores_each_phrase(tiny_owlv2_dir):
    scorer = Owlv2PhraseScorer(tiny_owlv2_dir)
    assert scorer.threshold == OWLV2_THRESHOLD == 0.01
    image = np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    sets = [QuerySet(("car", "tree", "fountain"), None), QuerySet(("road",), (0, 0, 20, 20), ("a road",)),
            QuerySet((), None)]
    scores = scorer.score(image, sets)
    assert [len(s) for s in scores] == [3, 1, 0]
    assert all(((s == 0) | (s > 0.01)).all() and (s <= 1).all() for s in scores)
    # 16 patches → 16 boxes, each won by one query: with 3 queries at least one phrase wins a box
    assert (scores[0] > 0).any()
    assert scorer.settings()["threshold"] == 0.01


def test_owlv2_post_processing_follows_capture():
    """Each box takes its best query; NMS across queries; a phrase scores its best surviving box."""
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], float)
    logits = np.array([[3.0, -9.0], [-9.0, 2.0], [-9.0, -9.0]])  # box 1 (query 1) overlaps box 0 (stronger)
    scores = owlv2_phrase_scores(logits, boxes, n_judged=2)
    assert scores[0] == pytest.approx(1 / (1 + np.exp(-3.0)))
    assert scores[1] == 0.0  # suppressed by a stronger box of another query
    # a context query (index ≥ n_judged) can win boxes but is never returned
    assert owlv2_phrase_scores(np.array([[-1.0, 5.0]]), boxes[:1], n_judged=1).tolist() == [0.0]


def test_owlv2_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        Owlv2PhraseScorer(tmp_path / "nope")


# -- FACTUAL -------------------------------------------------------------------------------------------

_WORDS = ("Generate Scene Graph: a red car is on the road . ( car , on , road ) is").split()


@pytest.fixture(scope="module")
def tiny_factual_dir(tmp_path_factory) -> Path:
    """A 1-layer T5 with a word-level tokenizer, trained to map one sentence to '( car , on , road )'."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    folder = tmp_path_factory.mktemp("factual")
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for word in _WORDS:
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    from tokenizers.processors import TemplateProcessing

    backend.post_processor = TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    config = T5Config(vocab_size=len(vocab), d_model=32, d_ff=64, d_kv=16, num_layers=1, num_decoder_layers=1,
                      num_heads=2, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(config)
    source = tokenizer(["Generate Scene Graph: a red car is on the road ."], return_tensors="pt")
    target = tokenizer(["( car , on , road )"], return_tensors="pt").input_ids
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(60):
        loss = model(**source, labels=target).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_factual_parser_generates_triples_and_literal_phrases(tiny_factual_dir):
    parser = FactualParser(tiny_factual_dir, num_beams=2)
    assert parser.triples("a red car is on the road .") == [("car", "on", "road")]
    assert parser("a red car is on the road .") == ["car", "road"]


def test_triples_parse_and_phrases_are_literal_substrings():
    triples = parse_triples("( car , is , red ) , ( car , on , road ) , ( tree , next to")
    assert triples == [("car", "is", "red"), ("car", "on", "road")]
    text = "A red car drives on the wide road."
    assert phrases_from_triples(text, triples) == ["red car", "road"]
    assert phrases_from_triples("Trees line it.", [("tree", "line", "street")]) == []  # lemmas not in text


def test_factual_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        FactualParser(tmp_path / "nope")
