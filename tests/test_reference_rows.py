"""Reference rows of a twin table (docs/methods.md#scene-graph-ceiling, docs/methods.md#caption-text): ground
truth declared in ``MethodMeta.truth`` and provided by ``fit_inputs``, the scene-graph ceiling (SV, SI and
fused) and the caption-text rows, on the NY tiny twin with the smoke profile."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from urbanln_bench.errors import UserError
from urbanln_bench.method import MethodMeta, get_method
from urbanln_bench.runner import RunOptions, run

SCENE_GRAPH = ("scene-graph-ceiling", "scene-graph-ceiling-fused")
CAPTION_TEXT = ("caption-text-raw", "caption-text-refined", "caption-text-consensus")
# one captioner, one candidate, SI: the smallest caption sets (each MiniLM fit embeds ~100 captions)
ONE_CAPTIONER = {"captioners": "synthetic:qwen2.5-vl-7b", "candidates_per_captioner": "1"}


def _record(store: Path, method: str, cell: str) -> dict:
    return json.loads((store / "synthetic-tiny" / "NY" / method / f"{cell}_random.json").read_text())


def _fitted(tiny_ny: Path, name: str, imagery: str):
    """The method fitted the way the runner fits it, on the tiny twin's own fit inputs."""
    from urbanln_bench.data.loader import CityData
    from urbanln_bench.fit_inputs import needed_fit_inputs
    from urbanln_bench.method import FitContext

    data = CityData.open(tiny_ny)
    method = get_method(name)({})
    extras = {p.name: p.provide(method, data, data, imagery, "smoke", None)[0]
              for p in needed_fit_inputs(method, imagery, "smoke")}
    context = FitContext(seed=0, device="cpu", work_dir=tiny_ny / "unused", scale="tiny", profile="smoke",
                         extras=extras)
    method.fit(data.unlabelled(), imagery, context)
    return method, data, context


# -- declared truth ---------------------------------------------------------------------------------


def test_truth_is_declared_validated_and_drives_the_providers():
    from urbanln_bench.fit_inputs import FIT_INPUTS, needed_fit_inputs
    from urbanln_bench.method import TRUTH_INPUTS

    assert set(TRUTH_INPUTS) <= set(FIT_INPUTS.names())  # every declarable truth has a provider
    base = dict(name="x", display_name="X", version="1", imagery="SI", native_imagery=("SI",), description="")
    with pytest.raises(ValueError, match="truth names unknown input 'labels'"):
        MethodMeta(**base, truth=("labels",), synthetic_only=True)
    with pytest.raises(ValueError, match="set synthetic_only=True"):
        MethodMeta(**base, truth=("latents",))

    def providers(name: str, imagery: str = "SI") -> list[str]:
        return [p.name for p in needed_fit_inputs(get_method(name)({}), imagery, "smoke")]

    assert providers("oracle-latents") == ["latents"]
    assert providers("scene-graph-ceiling") == ["scene_graphs"]
    assert providers("scene-graph-ceiling-fused", "SV+SI") == ["scene_graphs"]
    assert providers("caption-text-consensus") == ["captions"]
    assert providers("color-histogram") == []
    for name in SCENE_GRAPH:
        meta = get_method(name).meta
        assert meta.role == "ceiling" and meta.synthetic_only and meta.truth == ("scene_graphs",)
    for name in CAPTION_TEXT:
        meta = get_method(name).meta
        assert meta.role == "reference" and not meta.truth and not meta.synthetic_only
    oracle = get_method("oracle-latents")
    assert oracle.meta.truth == ("latents",) and oracle.meta.role == "oracle"
    # the oracle's identity (hence its embedding cache and record keys) is what it was before `truth`
    assert oracle({}).identity() == {"name": "oracle-latents", "version": "1", "config": {},
                                     "weights": "none (ground truth)", "input_size": 64,
                                     "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


# -- scene-graph ceiling --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_ny) -> Path:
    results = tmp_path_factory.mktemp("reference-rows") / "results"
    for method in ("scene-graph-ceiling", "scene-graph-ceiling-fused", "color-histogram"):
        run(RunOptions(method=method, city="NY", scale="tiny", profile="smoke", seeds=[0, 1], results_dir=results),
            log=lambda m: None)
    return results


def test_scene_graph_ceiling_beats_the_colour_floor(store: Path):
    for cell in ("Pop_SI", "POI_SV"):
        ceiling = _record(store, "scene-graph-ceiling", cell)
        floor = _record(store, "color-histogram", cell)
        assert ceiling["metrics"]["r2"]["mean"] > floor["metrics"]["r2"]["mean"], cell
        assert ceiling["method"]["role"] == "ceiling"
        assert ceiling["method"]["weight_source"] == "none (ground-truth scene graphs)"


def test_scene_graph_features_have_the_documented_width_and_names(store: Path, tiny_ny: Path):
    from urbanln_bench.captions.grammar import entities_of

    widths = {}
    for imagery in ("SV", "SI"):
        method, data, context = _fitted(tiny_ny, "scene-graph-ceiling", imagery)
        vocabulary = method.vocabularies[imagery]
        names = method.feature_names()
        assert len(names) == len(set(names)) == vocabulary.width == (
            2 * len(vocabulary.objects) + len(vocabulary.pairs) + len(vocabulary.predicates))
        blocks = [n.split(":", 1)[0] for n in names]
        assert blocks == sorted(blocks, key=["count", "attribute", "relation", "area"].index)
        for block in ("count", "attribute", "relation", "area"):
            terms = [n.split(":", 1)[1] for n in names if n.startswith(block + ":")]
            assert terms == sorted(terms) and terms
        assert _record(store, "scene-graph-ceiling", f"Pop_{imagery}")["embedding"]["dim"] == vocabulary.width
        widths[imagery] = vocabulary.width
        # one image by hand: counts (groups count `count` times), attribute pairs, predicates, area shares
        graphs = data.scene_graphs(imagery)
        image_id = next(i for i in sorted(graphs) if graphs[i]["relations"])
        graph = graphs[image_id]
        vector = dict(zip(names, vocabulary.encode(graph), strict=True))
        for entity in entities_of(graph):
            assert vector[f"count:{entity.name}"] == pytest.approx(np.log1p(entity.count))
            assert vector[f"area:{entity.name}"] == pytest.approx(entity.area)
        obj = next(o for o in graph["objects"] if o["attributes"])
        pair = sum(o.get("count", 1) for o in graph["objects"]
                   if o["name"] == obj["name"] and obj["attributes"][0] in o["attributes"])
        assert vector[f"attribute:{obj['name']}|{obj['attributes'][0]}"] == pytest.approx(np.log1p(pair))
        predicate = graph["relations"][0]["predicate"]
        assert vector[f"relation:{predicate}"] == pytest.approx(
            np.log1p(sum(r["predicate"] == predicate for r in graph["relations"])))
        absent = [n for n in names if n.startswith("count:") and n[6:] not in {e.name for e in entities_of(graph)}]
        assert absent and all(vector[n] == 0 for n in absent)
        embedded = method.encode_regions(data.unlabelled(), [image_id.split("/")[0]], context)
        assert embedded.dtype == np.float32 and np.isfinite(embedded).all()
    fused = _record(store, "scene-graph-ceiling-fused", "Pop_SV+SI")
    assert fused["embedding"]["dim"] == widths["SV"] + widths["SI"] == 325  # NY tiny: 191 + 134
    assert fused["embedding"]["regions"] == 100  # every region, with or without street views


def test_fused_ceiling_concatenates_sv_and_si_with_zeros_for_missing_views(tiny_ny: Path):
    fused, data, context = _fitted(tiny_ny, "scene-graph-ceiling-fused", "SV+SI")
    view = data.unlabelled()
    ids = list(view.regions.ids)
    vectors = fused.encode_regions(view, ids, context)
    sv, _, _ = _fitted(tiny_ny, "scene-graph-ceiling", "SV")
    si, _, _ = _fitted(tiny_ny, "scene-graph-ceiling", "SI")
    width_sv = sv.vocabularies["SV"].width
    assert vectors.shape == (len(ids), width_sv + si.vocabularies["SI"].width)
    assert fused.feature_names() == [f"SV/{n}" for n in sv.feature_names()] + [f"SI/{n}" for n in si.feature_names()]
    with_views = [i for i, rid in enumerate(ids) if view.streetview_ids(rid)]
    without = [i for i in range(len(ids)) if i not in with_views]
    assert without and np.all(vectors[without, :width_sv] == 0)
    np.testing.assert_array_equal(vectors[with_views, :width_sv],
                                  sv.encode_regions(view, [ids[i] for i in with_views], context))
    np.testing.assert_array_equal(vectors[:, width_sv:], si.encode_regions(view, ids, context))


@pytest.mark.parametrize("method", SCENE_GRAPH)
def test_scene_graph_ceiling_refuses_real_data(method: str, city_dir: Path, tmp_path: Path):
    with pytest.raises(UserError, match="needs a synthetic twin's truth"):
        run(RunOptions(method=method, city="NY", data_root=city_dir, seeds=[0], results_dir=tmp_path),
            log=lambda m: None)


# -- caption text -------------------------------------------------------------------------------------


def test_sentences_and_caption_stages():
    from urbanln_bench.builtin.methods.caption_text import sentences_of

    assert sentences_of(" A red car. Two trees!  Is it a park? no end ") == [
        "A red car.", "Two trees!", "Is it a park?", "no end"]
    settings = {name: get_method(name)({}).caption_settings("SI") for name in CAPTION_TEXT}
    assert settings == {"caption-text-raw": {"SI": {"refinement": False, "consensus": False}},
                        "caption-text-refined": {"SI": {"refinement": True, "consensus": False}},
                        "caption-text-consensus": {"SI": {"refinement": True, "consensus": True}}}
    assert [get_method(n)({}).caption_stage() for n in CAPTION_TEXT] == ["raw", "refined", "selected"]
    # the consensus row reads the caption sets UrbanLN trains on
    assert settings["caption-text-consensus"] == get_method("urbanln")({}).caption_settings("SI")
    assert get_method("caption-text-consensus")({}).weight_source() == (
        "all-MiniLM-L6-v2 sentence model (frozen), on the consensus caption sets")


@pytest.fixture(scope="module")
def caption_records(tmp_path_factory, tiny_ny) -> dict[str, dict]:
    """NY/Pop/SI records of the raw and the consensus row (one captioner, seed 0)."""
    results = tmp_path_factory.mktemp("caption-text") / "results"
    out = {}
    for method in ("caption-text-raw", "caption-text-consensus"):
        [outcome] = run(RunOptions(method=method, city="NY", scale="tiny", profile="smoke", seeds=[0], imagery=["SI"],
                                   tasks=["Pop"], results_dir=results, settings=dict(ONE_CAPTIONER)),
                        log=lambda m: None)
        out[method] = outcome.record.to_json()
    return out


@pytest.mark.slow  # end to end through two caption pipelines and the sentence model (CI runs it)
def test_caption_text_rows_embed_their_own_caption_sets(caption_records: dict, tiny_ny: Path):
    from urbanln_bench.runner import embedding_cache_path, make_method

    raw, consensus = caption_records["caption-text-raw"], caption_records["caption-text-consensus"]
    for record in (raw, consensus):
        assert record["embedding"]["dim"] == 384 and record["embedding"]["regions"] == 100
        assert np.isfinite(record["metrics"]["r2"]["mean"])
        assert record["pretraining"]["captions"]["SI"]["images"] == 100
    assert raw["pretraining"]["captions"]["SI"]["key"] != consensus["pretraining"]["captions"]["SI"]["key"]
    assert raw["method"]["weight_source"].endswith("on the raw caption sets")
    from urbanln_bench.data.loader import CityData
    from urbanln_bench.embed import Embeddings

    data = CityData.open(tiny_ny)
    vectors = {}
    for name in ("caption-text-raw", "caption-text-consensus"):
        options = RunOptions(method=name, city="NY", scale="tiny", profile="smoke", settings=dict(ONE_CAPTIONER))
        embeddings = Embeddings.load(embedding_cache_path(make_method(options), data, "SI", data, "smoke"))
        vectors[name] = embeddings.vectors
        assert embeddings.vectors.dtype == np.float32 and np.isfinite(embeddings.vectors).all()
        report = embeddings.meta["fit"]["report"]
        assert report["sentences_over_window"] == 0 and report["images"] == 100
        assert report["captions"] == 100 and report["sentences"] > report["captions"]
    assert not np.allclose(vectors["caption-text-raw"], vectors["caption-text-consensus"], atol=1e-4)


@pytest.mark.slow  # end to end through two caption pipelines and the sentence model (CI runs it)
def test_raw_stage_hands_fit_every_candidate(caption_records: dict, tiny_ny: Path):
    from urbanln_bench.data.loader import CityData
    from urbanln_bench.fit_inputs import method_captions

    data = CityData.open(tiny_ny)
    two = {**ONE_CAPTIONER, "candidates_per_captioner": "2"}
    captions, info = method_captions(get_method("caption-text-raw")(two), data, "SI", "smoke", None)
    assert len(captions["SI"]) == 100 and all(isinstance(c, list) and len(c) == 2 for c in captions["SI"].values())
    # the consensus row and UrbanLN read the same caption set, the one selected caption per image
    urbanln, reused = (method_captions(get_method(name)(dict(ONE_CAPTIONER)), data, "SI", "smoke", None)
                       for name in ("urbanln", "caption-text-consensus"))
    assert urbanln[1]["SI"]["reused"] and urbanln[1]["SI"]["key"] == reused[1]["SI"]["key"]
    assert urbanln[0] == reused[0] and all(isinstance(c, str) for c in urbanln[0]["SI"].values())
