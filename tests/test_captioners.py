"""Captioner backends: simulated MLLM personas, imported caption files, local transformers models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from urbanln_bench.captions import fidelity
from urbanln_bench.captions.caption_file import (
    CaptionerUnavailableError,
    CaptionFileError,
    CaptionRecord,
    FileCaptioner,
    read_caption_jsonl,
    write_caption_jsonl,
)
from urbanln_bench.captions.captioners import (
    CAPTIONERS,
    PAPER_CAPTIONERS,
    SINGLE_CAPTIONER,
    Captioner,
    build_captioner,
)
from urbanln_bench.captions.personas import load_persona, persona_names
from urbanln_bench.captions.short_captions import short_caption
from urbanln_bench.captions.synthetic_captioner import SyntheticCaptioner
from urbanln_bench.errors import SpecError, UserError

PERSONAS = ("llama-adapter-v2", "sharegpt4v-7b", "qwen2.5-vl-7b", "deepseek-vl2-tiny", "internvl3-8b")


@pytest.fixture(scope="module")
def graphs(tiny_ny: Path) -> dict[str, dict[str, dict]]:
    from urbanln_bench.data.loader import CityData

    city = CityData.open(tiny_ny)
    return {"SI": city.scene_graphs("SI"), "SV": city.scene_graphs("SV")}


@pytest.fixture(scope="module")
def all_truths(graphs) -> dict[str, list[tuple[dict, fidelity.CaptionTruth]]]:
    """Every persona's two captions for every NY tiny image (SI and SV), with their bookkeeping."""
    out = {}
    for persona in PERSONAS:
        captioner = SyntheticCaptioner(persona, seed=0)
        out[persona] = [(graph, truth) for imagery in ("SI", "SV") for image_id, graph in sorted(graphs[imagery].items())
                        for truth in captioner.describe_with_truth(None, image_id, graph, 2)]
    return out


# -- personas ----------------------------------------------------------------------------------------


def test_five_simulated_personas_and_three_backends_are_registered():
    assert set(PERSONAS) <= set(persona_names())
    for name in PERSONAS:
        persona = load_persona(name)
        assert "simulated" in persona.display_name.lower()
        assert 100 <= persona.length.min_words <= persona.length.max_words <= 250
    assert {"synthetic", "transformers", "file"} <= set(CAPTIONERS.names())
    assert [spec.split(":")[1] for spec in PAPER_CAPTIONERS] == list(PERSONAS)
    for spec in SINGLE_CAPTIONER.values():
        assert isinstance(build_captioner(spec), Captioner)


def test_captions_are_long_and_mostly_past_clip_context(all_truths):
    pytest.importorskip("open_clip")
    for persona, rows in all_truths.items():
        lengths = [len(truth.caption.split()) for _, truth in rows]
        assert min(lengths) >= 100 and max(lengths) <= 250, persona
        tokens = [fidelity.clip_token_length(truth.caption) for _, truth in rows[::7]]
        assert np.mean(np.array(tokens) > 77) > 0.9, persona


def test_captions_are_deterministic_by_seed_and_independent_of_call_order(graphs):
    items = sorted(graphs["SV"].items())[:6]
    first = SyntheticCaptioner("sharegpt4v-7b", seed=3)
    forward = {iid: first.describe(None, iid, g, 2) for iid, g in items}
    again = SyntheticCaptioner("sharegpt4v-7b", seed=3)
    backward = {iid: again.describe(None, iid, g, 2, rng=np.random.default_rng(99)) for iid, g in reversed(items)}
    assert forward == backward
    other_seed = SyntheticCaptioner("sharegpt4v-7b", seed=4)
    assert any(other_seed.describe(None, iid, g, 2) != forward[iid] for iid, g in items)
    assert all(a != b for a, b in forward.values()), "two captions of one image must differ"


def test_different_personas_write_differently(graphs):
    image_id, graph = sorted(graphs["SI"].items())[0]
    captions = {p: SyntheticCaptioner(p).describe(None, image_id, graph, 1)[0] for p in PERSONAS}
    assert len(set(captions.values())) == len(PERSONAS)
    mean_words = {p: np.mean([len(c.split()) for iid, g in sorted(graphs["SV"].items())[:20]
                              for c in SyntheticCaptioner(p).describe(None, iid, g, 1)]) for p in PERSONAS}
    assert mean_words["deepseek-vl2-tiny"] < mean_words["sharegpt4v-7b"]


def test_captions_mention_counts_attributes_and_relations(graphs):
    image_id, graph = sorted(graphs["SI"].items())[0]
    text = " ".join(SyntheticCaptioner("qwen2.5-vl-7b").describe(None, image_id, graph, 2)).lower()
    attributes = {a for o in graph["objects"] for a in o["attributes"]}
    assert any(f" {a} " in text for a in attributes)
    assert any(w in text for w in ("two ", "three ", "four ", "five ", "six ", "dozen"))
    assert any(v in text for v in (" along ", " next to ", " beside ", " parked ", " driving ", " on the "))


def test_precision_tracks_configured_hallucination_rate(all_truths):
    """Text-only object precision ≈ 1 − hallucination rate, and falls as the rate rises."""
    rates, precisions, recalls = [], [], {}
    for persona, rows in all_truths.items():
        scores = np.array([fidelity.object_precision_recall(t.caption, g) for g, t in rows])
        rate = load_persona(persona).noise.hallucination_rate
        assert abs(scores[:, 0].mean() - (1 - rate)) < 0.05, (persona, scores[:, 0].mean(), rate)
        rates.append(rate)
        precisions.append(scores[:, 0].mean())
        recalls[persona] = scores[:, 1].mean()
    order = np.argsort(rates)
    assert np.all(np.diff(np.array(precisions)[order]) < 0.02)  # monotone within noise
    assert np.array(precisions)[order][0] - np.array(precisions)[order][-1] > 0.08
    assert recalls["deepseek-vl2-tiny"] < recalls["qwen2.5-vl-7b"] < recalls["internvl3-8b"]


def test_text_matcher_agrees_with_generation_bookkeeping(all_truths):
    for persona, rows in all_truths.items():
        for graph, truth in rows[::5]:
            named = set(fidelity.mentioned_objects(truth.caption, fidelity.graph_object_names(graph)))
            assert named == set(truth.truthful) | set(truth.hallucinated), (persona, truth.caption)
            assert fidelity.object_precision_recall(truth.caption, graph) == pytest.approx((truth.precision, truth.recall))


def test_small_objects_are_omitted_more_often_by_qwen(all_truths):
    from urbanln_bench.captions.grammar import entities_of

    small, large = [], []
    for graph, truth in all_truths["qwen2.5-vl-7b"]:
        for entity in entities_of(graph):
            (small if entity.small else large).append(entity.name in truth.omitted)
    assert np.mean(small) > 2 * np.mean(large)


def test_wrong_urban_knowledge_appears_at_the_configured_rate(all_truths):
    for persona, rows in all_truths.items():
        measured = np.mean([bool(fidelity.wrong_district_claims(t.caption, g)) for g, t in rows])
        configured = load_persona(persona).noise.wrong_urban_knowledge_rate
        assert abs(measured - configured) < 0.07, (persona, measured, configured)
        assert measured == pytest.approx(np.mean([t.wrong_district_claim for _, t in rows]))


def test_attribute_errors_and_filler_follow_the_persona(all_truths):
    def mean(persona, field):
        return np.mean([bool(getattr(t, field)) for _, t in all_truths[persona]])

    assert mean("llama-adapter-v2", "attribute_errors") > mean("qwen2.5-vl-7b", "attribute_errors")
    assert mean("deepseek-vl2-tiny", "filler_sentences") > mean("qwen2.5-vl-7b", "filler_sentences")


# -- fidelity from text ------------------------------------------------------------------------------


def test_object_precision_recall_handles_plurals_synonyms_and_negation():
    graph = {"kind": "streetview", "width": 10, "height": 10, "objects": [
        {"id": 0, "name": "car", "attributes": [], "bbox": [0, 0, 2, 2], "count": 3},
        {"id": 1, "name": "skyscraper", "attributes": [], "bbox": [0, 0, 5, 9], "count": 2},
        {"id": 2, "name": "pedestrian", "attributes": [], "bbox": [0, 0, 1, 1], "count": 1},
        {"id": 3, "name": "parking lot", "attributes": [], "bbox": [0, 0, 1, 1], "count": 1},
    ], "relations": []}
    caption = ("A city street with three automobiles parked in a parking lot beside two glass towers. "
               "A fountain splashes nearby, and there are no trees.")
    assert fidelity.mentioned_objects(caption) == ["car", "parking lot", "skyscraper", "fountain"]
    precision, recall = fidelity.object_precision_recall(caption, graph)
    assert precision == pytest.approx(3 / 4) and recall == pytest.approx(3 / 4)
    assert fidelity.object_precision_recall("People walk past.", graph) == (1.0, 0.25)
    assert fidelity.object_precision_recall("", graph) == (1.0, 0.0)


def test_frames_filler_and_district_phrases_name_no_object():
    for persona in PERSONAS:
        style = load_persona(persona).style
        for sentence in style.filler + style.closers + style.remarks_satellite + style.remarks_streetview:
            assert fidelity.mentioned_objects(sentence) == [], (persona, sentence)
    for phrases in fidelity.DISTRICT_PHRASES.values():
        for phrase in phrases:
            assert fidelity.mentioned_objects(phrase) == [], phrase


def test_clip_token_length_counts_start_and_end():
    pytest.importorskip("open_clip")
    assert fidelity.clip_token_length("") == 2
    assert fidelity.clip_token_length("a car") == 4
    assert fidelity.clip_token_length(" ".join(["car"] * 100)) == 102  # never truncated


# -- region captions, merge, short captions --------------------------------------------------------------


def test_region_captions_are_short_and_local(graphs):
    captioner = SyntheticCaptioner("qwen2.5-vl-7b")
    for image_id, graph in sorted(graphs["SI"].items())[:15]:
        w, h = graph["width"], graph["height"]
        for box in ((0, 0, w // 2, h // 2), (w // 2, h // 2, w, h)):
            text = captioner.describe_region(None, image_id, graph, box)
            assert 1 <= len(text.split()) <= 20
            assert text == captioner.describe_region(None, image_id, graph, box)
            inside = {o["name"] for o in graph["objects"]
                      if o["bbox"][0] < box[2] and o["bbox"][2] > box[0] and o["bbox"][1] < box[3] and o["bbox"][3] > box[1]}
            named = fidelity.mentioned_objects(text)
            assert sum(n in inside for n in named) >= len(named) - 1


def test_rewrite_absorbs_new_details_once_and_keeps_the_caption(graphs):
    image_id, graph = sorted(graphs["SV"].items())[2]
    captioner = SyntheticCaptioner("internvl3-8b")
    overall = captioner.describe(None, image_id, graph, 1)[0]
    first_sentence, last_sentence = overall.split(". ")[0], overall.rsplit(". ", 1)[-1]
    details = ["a small red bicycle leaning on a railing", "a small red bicycle leaning on a railing",
               "A red bicycle", "The glowing fire hydrant is next to the door.", overall.split(". ")[1]]
    merged = captioner.rewrite(overall, details, image_id=image_id)
    assert merged.startswith(first_sentence) and merged.endswith(last_sentence)
    assert merged.count("bicycle leaning on a railing") == 1
    assert "fire hydrant" in merged and merged.count(overall.split(". ")[1]) == 1
    assert captioner.rewrite(overall, [], image_id=image_id) == overall
    assert captioner.rewrite(overall, details, image_id=image_id) == merged  # deterministic


def test_short_caption_fits_clip_context(graphs):
    pytest.importorskip("open_clip")
    rng = np.random.default_rng(0)
    for imagery in ("SI", "SV"):
        for graph in list(graphs[imagery].values())[:40]:
            text = short_caption(graph, rng)
            assert fidelity.clip_token_length(text) <= 77
            assert 1 <= text.count(".") <= 2
            precision, _ = fidelity.object_precision_recall(text, graph)
            assert precision == 1.0


def test_synthetic_captioner_without_a_scene_graph_says_why():
    with pytest.raises(UserError, match="scene graph"):
        SyntheticCaptioner("qwen2.5-vl-7b").describe(np.zeros((8, 8, 3), np.uint8), "real-001", None, 2)


def test_unknown_backend_and_persona_get_suggestions():
    with pytest.raises(UserError, match="did you mean 'synthetic'"):
        build_captioner("synthtic:qwen2.5-vl-7b")
    with pytest.raises(SpecError, match="qwen2.5-vl-7b"):
        build_captioner("synthetic:qwen2.5-vl")


def test_user_persona_file_is_checked(tmp_path):
    from urbanln_bench.captions.personas import styles_dir as _styles_dir

    source = (_styles_dir() / "deepseek-vl2-tiny.toml").read_text()
    good = tmp_path / "mine.toml"
    good.write_text(source.replace('name = "deepseek-vl2-tiny"', 'name = "mine"'))
    assert SyntheticCaptioner(str(good)).name == "mine"
    bad_filler = tmp_path / "bad_filler.toml"
    bad_filler.write_text(source.replace('"It is a bustling and dynamic place."', '"A fountain sparkles."'))
    with pytest.raises(SpecError, match="fountain"):
        load_persona(str(bad_filler))
    typo = tmp_path / "typo.toml"
    typo.write_text(source.replace("omission_rate = 0.35", "omision_rate = 0.35"))
    with pytest.raises(SpecError, match="did you mean 'omission_rate'"):
        load_persona(str(typo))


# -- file backend ------------------------------------------------------------------------------------------


def _jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_file_backend_round_trip(tmp_path):
    records = [CaptionRecord("r1", "qwen", "A long caption."), CaptionRecord("r1", "qwen", "Another one."),
               CaptionRecord("r2", "intern", "Third.")]
    path = write_caption_jsonl(tmp_path / "caps.jsonl", records)
    assert read_caption_jsonl(path, {"r1", "r2"}) == records
    captioner = build_captioner(f"file:{path}")
    assert captioner.describe(None, "r1", None, 2) == ["A long caption.", "Another one."]
    assert FileCaptioner(path, captioner="intern").describe(None, "r2", None, 5) == ["Third."]
    with pytest.raises(CaptionFileError, match="no caption for image 'r2'"):
        FileCaptioner(path, captioner="qwen").describe(None, "r2", None, 2)
    with pytest.raises(CaptionerUnavailableError, match="region captions"):
        captioner.describe_region(None, "r1", None, (0, 0, 4, 4))


def test_file_backend_reports_every_bad_line(tmp_path):
    path = _jsonl(tmp_path / "bad.jsonl", [
        json.dumps({"image_id": "r1", "captioner": "q", "caption": "fine"}),
        '{"image_id": "r1", "captioner": "q", "caption": ',
        json.dumps({"image_id": "r1", "caption": "no captioner"}),
        json.dumps({"image_id": "r1", "captioner": "q", "caption": "   "}),
        json.dumps({"image_id": "ghost", "captioner": "q", "caption": "unknown image"}),
    ])
    with pytest.raises(CaptionFileError) as info:
        read_caption_jsonl(path, known_image_ids={"r1"})
    message = str(info.value)
    assert f"{path}:2: malformed JSON" in message
    assert f"{path}:3: missing key(s) 'captioner'" in message
    assert f"{path}:4: empty caption" in message
    assert f"{path}:5: unknown image id 'ghost'" in message
    assert f"{path}:1" not in message
    with pytest.raises(CaptionFileError, match="not found"):
        FileCaptioner(tmp_path / "missing.jsonl")


def test_failed_write_leaves_nothing_behind(tmp_path):
    target = tmp_path / "out.jsonl"
    with pytest.raises(CaptionFileError, match="not written"):
        write_caption_jsonl(target, [CaptionRecord("r1", "q", "ok"), {"image_id": "r2", "captioner": "q", "caption": ""}])
    assert list(tmp_path.iterdir()) == []
    write_caption_jsonl(target, [CaptionRecord("r1", "q", "kept")])
    with pytest.raises(CaptionFileError):
        write_caption_jsonl(target, [{"image_id": "r1", "caption": "x"}])
    assert read_caption_jsonl(target) == [CaptionRecord("r1", "q", "kept")]


# -- transformers backend -------------------------------------------------------------------------------


def test_transformers_backend_missing_directory_names_the_path(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(UserError, match=str(missing)):
        build_captioner(f"transformers:{missing}")


def _tiny_llava(directory: Path) -> Path:
    """A tiny random LLaVA (CLIP vision tower + Llama text model) with a word-level tokenizer, saved."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    specials = ["<pad>", "<s>", "</s>", "<unk>", "<image>"]
    vocabulary = specials + "a the city street car tree building road park tall glass are parked along next to".split()
    vocab = {w: i for i, w in enumerate(vocabulary)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece(prefix="##")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>", extra_special_tokens={"image_token": "<image>"})
    chat = ("{% for m in messages %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image> "
            "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endfor %}{% if add_generation_prompt %} ASSISTANT:{% endif %}")
    processor = LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 16},
                                                                  crop_size={"height": 16, "width": 16}),
                               tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="full",
                               num_additional_image_tokens=1, chat_template=chat)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       image_size=16, patch_size=8, projection_dim=16),
        text_config=LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                                pad_token_id=0, bos_token_id=1, eos_token_id=2),
        image_token_index=vocab["<image>"], vision_feature_select_strategy="full", vision_feature_layer=-1,
        image_seq_length=5,
    )
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def test_transformers_backend_loads_a_local_model_and_generates(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    model_dir = _tiny_llava(tmp_path / "tiny-llava")
    captioner = build_captioner(f"transformers:{model_dir}", prompt="describe the city", max_new_tokens=6)
    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    captions = captioner.describe(image, "r1", None, 2, rng=np.random.default_rng(1))
    assert len(captions) == 2 and all(isinstance(c, str) and c for c in captions)
    again = captioner.describe(image, "r1", None, 2, rng=np.random.default_rng(1))
    assert again == captions  # sampling is seeded by the rng
    region = captioner.describe_region(image, "r1", None, (0, 0, 16, 16))
    assert 0 < len(region.split()) <= 20
    assert isinstance(captioner.rewrite("a city street", ["a tall tree"], image=image, image_id="r1"), str)
