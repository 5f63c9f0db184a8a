"""CAPTURE (docs/methods.md#capture-metric) and its offline parser: behaviour a caller relies on, on hand-written captions."""

from __future__ import annotations

import os

import numpy as np
import pytest

from urbanln_bench.captions.capture import (
    CaptureScorer,
    CaptureWeights,
    SentenceEmbedder,
    SentenceModelNotFound,
    load_stop_words,
)
from urbanln_bench.captions.parse import extract_phrases, lemmatize_noun, parse_caption

os.environ.setdefault("HF_HUB_OFFLINE", "1")

STREET = ("A busy street lined with tall glass office towers; several yellow taxis wait at a crosswalk "
          "while pedestrians cross.")
AERIAL = ("An aerial view of a dense residential neighbourhood with red-roofed houses, narrow roads and a "
          "small park with trees beside a river.")
KITCHEN = "A kitchen with a white refrigerator, a wooden table and a stove with pots and pans on the counter."
LONG_STREET = (
    "The image shows a busy downtown street on a sunny afternoon. Tall glass office towers rise on both "
    "sides of the road, their windows reflecting the blue sky. Several yellow taxis wait at a crosswalk "
    "while a crowd of pedestrians crosses toward a small plaza with wooden benches and potted plants. "
    "A red double-decker bus is parked next to the curb in front of a coffee shop with a green awning. "
    "Street lights and traffic signals line the sidewalk, and a cyclist in a black jacket rides along a "
    "painted bike lane. People walking along the street carry shopping bags, and a man in a gray suit "
    "talks on his phone near a newsstand. The road is wide and freshly paved.")


@pytest.fixture(scope="module")
def embedder() -> SentenceEmbedder:
    """The packaged all-MiniLM-L6-v2, loaded once for the module."""
    return SentenceEmbedder()


@pytest.fixture(scope="module")
def scorer(embedder) -> CaptureScorer:
    """WordNet off, so results do not depend on whether the machine has its data."""
    return CaptureScorer(embedder=embedder, wordnet=False)


# --- parser -------------------------------------------------------------------------------------------

def test_parser_street_caption():
    graph = parse_caption(STREET)
    assert graph.objects == ["street", "office tower", "taxi", "crosswalk", "pedestrian"]
    assert {("office tower", "tall"), ("office tower", "glass"), ("taxi", "yellow"),
            ("street", "busy")} <= set(graph.attributes)
    assert ("street", "lined with", "office tower") in graph.relations
    assert ("taxi", "wait at", "crosswalk") in graph.relations
    assert not any(attribute == "several" for _, attribute in graph.attributes)  # quantity, not attribute


def test_parser_satellite_caption():
    graph = parse_caption(AERIAL)
    assert {"neighborhood", "house", "road", "park", "tree", "river"} <= set(graph.objects)
    assert {("house", "red-roofed"), ("road", "narrow"), ("park", "small"),
            ("neighborhood", "residential")} <= set(graph.attributes)
    assert {("neighborhood", "with", "house"), ("neighborhood", "with", "road"),
            ("park", "with", "tree")} <= set(graph.relations)


@pytest.mark.parametrize(("caption", "relation"), [
    ("A car parked on the road next to a tree.", ("car", "parked on", "road")),
    ("A car parked on the road next to a tree.", ("road", "next to", "tree")),
    ("People walking along the street.", ("people", "walking along", "street")),
    ("Street lights line the road, and cars park along the curb.", ("street light", "line", "road")),
    ("Street lights line the road, and cars park along the curb.", ("car", "park along", "curb")),
    ("In the distance, a church sits between two apartment blocks.", ("church", "sits between", "apartment block")),
    ("A bridge that carries a highway crosses the river.", ("bridge", "carries", "highway")),
])
def test_parser_relations(caption, relation):
    assert relation in parse_caption(caption).relations


def test_parser_predicative_adjectives_and_quantities():
    graph = parse_caption("The buildings are tall and modern. A row of trees stands in front of the church.")
    assert {("building", "tall"), ("building", "modern")} <= set(graph.attributes)
    assert "row" not in graph.objects and "tree" in graph.objects


@pytest.mark.parametrize(("plural", "singular"), [
    ("houses", "house"), ("cities", "city"), ("benches", "bench"), ("buses", "bus"), ("taxis", "taxi"),
    ("women", "woman"), ("leaves", "leaf"), ("glass", "glass"), ("office towers", "office tower"),
])
def test_lemmatize_noun(plural, singular):
    assert lemmatize_noun(plural) == singular


def test_extract_phrases_are_literal_and_ordered():
    phrases = extract_phrases(AERIAL)
    assert phrases == ["aerial view", "dense residential neighbourhood", "red-roofed houses", "narrow roads",
                       "small park", "trees", "river"]
    assert all(p in AERIAL for p in phrases)


def test_parser_long_caption():
    graph = parse_caption(LONG_STREET)
    assert {"taxi", "bus", "cyclist", "bike lane", "coffee shop", "newsstand", "man"} <= set(graph.objects)
    assert ("cyclist", "rides along", "bike lane") in graph.relations
    assert ("road", "wide") in graph.attributes


def test_parser_is_deterministic():
    assert parse_caption(LONG_STREET) == parse_caption(LONG_STREET)


# --- metric -------------------------------------------------------------------------------------------

def test_stop_words_file_kept_exactly():
    words = load_stop_words()
    assert len(words) == 317 and {"urban setting", "Moment", "Atmosphäre", "scene"} <= words


def test_stop_word_objects_dropped(scorer):
    assert scorer.parse("a city scene with a car").objects == ("car",)
    assert "view" not in scorer.parse(AERIAL).objects  # "view" is listed; its attribute stays
    assert "aerial" in scorer.parse(AERIAL).attributes


def test_identical_captions_score_one(scorer):
    for caption in (STREET, AERIAL, LONG_STREET):
        assert scorer.score(caption, caption) > 0.95


def test_unrelated_caption_scores_low(scorer):
    assert scorer.score(KITCHEN, STREET) < 0.4
    assert scorer.score(KITCHEN, STREET) < scorer.score(STREET.replace("busy", "quiet"), STREET)


def test_hallucinated_object_lowers_score(scorer):
    clean = "A red car parked on the road next to a tall tree."
    hallucinated = "A red car parked on the road next to a tall tree and a blue helicopter."
    reference = "A red car is parked on the road beside a tall tree."
    assert scorer.score(hallucinated, reference) < scorer.score(clean, reference)
    details = scorer.details(hallucinated, reference)
    assert details.objects.precision < scorer.details(clean, reference).objects.precision


def test_substring_synonym_match_counts_whole(scorer):
    details = scorer.details("A tall office tower.", "A tall tower.")
    assert details.objects.matched == 1 and details.objects.f1 > 0.99


def test_soft_match_gives_fractional_credit(scorer):
    details = scorer.details("An automobile.", "A car.")
    assert details.objects.matched == 0
    assert 0.3 < details.objects.candidate_match < 1.0
    assert scorer.details("An automobile.", "A banana.").objects.f1 < details.objects.f1


def test_wordnet_synonyms_when_present(embedder):
    wordnet_scorer = CaptureScorer(embedder=embedder)
    if wordnet_scorer.wordnet is None:
        pytest.skip("no WordNet data on this machine (synonym matching is substring-only)")
    assert wordnet_scorer.details("An automobile.", "A car.").objects.matched == 1


def test_empty_types_excluded_or_zero(embedder, scorer):
    caption = "A red car."  # no relations on either side
    assert scorer.details(caption, caption).included == ("objects", "attributes")
    assert scorer.score(caption, caption) > 0.99
    original = CaptureScorer(embedder=embedder, wordnet=False, empty_types="zero")
    assert original.score(caption, caption) == pytest.approx(10 / 12, abs=1e-4)


def test_weights_normalised(embedder):
    a, b = STREET, STREET.replace("taxis", "buses")
    base = CaptureScorer(embedder=embedder, wordnet=False)
    original = CaptureScorer(embedder=embedder, wordnet=False, weights=CaptureWeights(0.5, 0.5, 0.2))
    assert original.score(a, b) == pytest.approx(base.score(a, b), abs=1e-9)


def test_matrix_equals_pairwise(scorer):
    captions = [STREET, AERIAL, KITCHEN, LONG_STREET]
    matrix = scorer.matrix(captions)
    expected = np.array([[scorer.score(a, b) for b in captions] for a in captions])
    np.testing.assert_allclose(matrix, expected, atol=1e-5)
    assert matrix.shape == (4, 4) and np.all(np.diag(matrix) > 0.95)


def test_matrix_is_exactly_the_pairwise_scores(embedder):
    """The batched matrix (ids, synonym tables, sliced embeddings) gives the pairwise scores bit for bit,
    synonym matching on (WordNet when present), repeated elements included."""
    captions = [STREET, AERIAL, LONG_STREET, KITCHEN, STREET.replace("taxis", "cabs"),
                AERIAL.replace("houses", "homes"),
                "A car parked on the road next to a car. A red car and a white car wait by the road near a tree.",
                "Cars wait by the road. A tree stands beside a road next to a car."]
    matrix = CaptureScorer(embedder=embedder).matrix(captions)
    pairwise = CaptureScorer(embedder=embedder)
    expected = np.array([[pairwise.score(a, b) for b in captions] for a in captions])
    assert np.array_equal(matrix, expected)


def test_scores_deterministic(embedder):
    first = CaptureScorer(embedder=embedder, wordnet=False).score(LONG_STREET, AERIAL)
    second = CaptureScorer(embedder=SentenceEmbedder(), wordnet=False).score(LONG_STREET, AERIAL)
    assert first == pytest.approx(second, abs=1e-6)


def test_missing_model_directory_is_a_clear_error(tmp_path):
    with pytest.raises(SentenceModelNotFound, match="not a sentence-transformer directory"):
        SentenceEmbedder(tmp_path)
    with pytest.raises(SentenceModelNotFound, match="pass a model directory"):
        SentenceEmbedder(str(tmp_path / "missing-model"))


@pytest.mark.slow  # spawns two worker processes that load torch and the sentence model (CI runs it)
def test_encode_across_processes_gives_the_bits_of_one_process():
    """The caption-text rows embed their sentences on every core they are given: each batch is the one
    ``encode`` runs, computed on one torch thread wherever it runs, so the bits cannot depend on how many
    processes computed them (docs/methods.md#caption-text)."""
    from urbanln_bench.captions.grounding import one_torch_thread

    sentences = [s.strip() + "." for text in (STREET, AERIAL, KITCHEN, LONG_STREET) for s in text.split(".") if s.strip()]
    phrases = [f"{s} ({i})" if i else s for i in range(12) for s in sentences]  # 168 phrases, many lengths
    with one_torch_thread():
        expected = SentenceEmbedder(batch_size=16).encode(phrases)
    done: list[int] = []
    got = SentenceEmbedder(batch_size=16).encode_across(phrases, 3, done.append)  # 11 batches, 2 spawned workers
    assert got.dtype == np.float32 and got.shape == (len(phrases), 384)
    assert np.array_equal(got, expected), "three processes changed the vectors"
    assert sum(done) == len(set(phrases))
    # in this process alone, and the cached phrases are not embedded again
    embedder = SentenceEmbedder(batch_size=16)
    embedder.encode_across(phrases[:20], 1)
    again: list[int] = []
    assert np.array_equal(embedder.encode_across(phrases, 1, again.append), expected)
    assert sum(again) == len(set(phrases)) - len(set(phrases[:20]))


def test_loading_the_sentence_model_draws_no_progress_bar_and_leaves_the_setting_as_it_was(capfd):
    """transformers' "Loading weights" bar is off while the model loads (a grid loads it in every cell and
    worker), and a caller's own setting is back afterwards, whichever it was."""
    from transformers.utils import logging as hf_logging

    for enabled in (True, False):
        (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()
        capfd.readouterr()
        SentenceEmbedder()
        assert "Loading weights" not in capfd.readouterr().err
        assert hf_logging.is_progress_bar_enabled() is enabled
    hf_logging.enable_progress_bar()
