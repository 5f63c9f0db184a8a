"""The caption pipeline (docs/methods.md#urbanln data level): caching, keys, consensus, the ablation, the scorer, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import cli

from urbanln_bench.captions import pipeline as pipeline_module
from urbanln_bench.captions.capture import CaptureScorer
from urbanln_bench.captions.consensus import consensus_scores, random_index, select_at_random
from urbanln_bench.captions.fidelity import graph_object_names, mentioned_objects
from urbanln_bench.captions.pipeline import (
    PipelineConfig,
    captions_root,
    load_selected_captions,
    run_pipeline,
)
from urbanln_bench.data.loader import CityData

TWO = ("synthetic:qwen2.5-vl-7b", "synthetic:llama-adapter-v2")
BASE = PipelineConfig(captioners=TWO, phrase_scorer="clip:smoke", limit=3)


@pytest.fixture(scope="module")
def city(tiny_ny: Path, tmp_path_factory) -> CityData:
    """A private copy of the NY tiny twin without its caption sets: the tests here check what a run
    builds, reuses or leaves behind in the twin's captions/ folder, which no other test (nor another
    pytest-xdist worker) writes into meanwhile."""
    import shutil

    copy = tmp_path_factory.mktemp("caption-pipeline") / "NY"
    shutil.copytree(tiny_ny, copy, ignore=lambda folder, names: ["captions"] if Path(folder) == tiny_ny else [])
    return CityData.open(copy)


@pytest.fixture(scope="module")
def built(city):
    return run_pipeline(city, BASE)


def _key_dirs(city: CityData) -> list[Path]:
    root = captions_root(city)
    return [p for p in root.iterdir() if p.is_dir()] if root.exists() else []


def test_rerun_reuses_the_cached_caption_set(city, built, monkeypatch):
    assert not built.reused and (built.folder / "config.json").is_file()
    assert {p.name for p in built.folder.iterdir()} == {"raw.jsonl", "refined.jsonl", "selected.jsonl", "config.json"}
    monkeypatch.setattr(pipeline_module, "_write_caption_set", lambda *a, **k: pytest.fail("captions rebuilt"))
    again = run_pipeline(city, BASE)
    assert again.reused and again.folder == built.folder
    selected = load_selected_captions(city, BASE)
    assert sorted(selected) == sorted(r["image_id"] for r in built.read("selected")) and all(selected.values())


def test_key_changes_when_any_setting_changes(city, built):
    info = json.loads((built.folder / "config.json").read_text())
    assert info["config"]["phrase_scorer"] == "clip:smoke" and info["data_manifest"] == city.manifest_hash
    assert "threshold" in info["key_inputs"]["phrase_scorer"]
    keys = {built.key}
    for change in ({"seed": 1}, {"threshold": 0.3}, {"consensus": False}, {"candidates_per_captioner": 1}):
        run = run_pipeline(city, PipelineConfig(**{**BASE.__dict__, **change, "limit": 2}))
        keys.add(run.key)
    assert len(keys) == 5


def test_consensus_keeps_the_candidate_with_the_highest_mean_capture(built):
    refined = built.read("refined")
    scorer = CaptureScorer()
    for chosen in built.read("selected"):
        candidates = [r for r in refined if r["image_id"] == chosen["image_id"]]
        assert len(candidates) == 4
        scores = consensus_scores(scorer.matrix([c["caption"] for c in candidates]))
        best = candidates[int(np.argmax(scores))]
        assert (chosen["captioner"], chosen["candidate"]) == (best["captioner"], best["candidate"])
        assert chosen["scores"] == pytest.approx(scores.tolist(), abs=1e-6)


def test_consensus_scores_exclude_self_and_ties_go_to_the_lowest_index():
    matrix = np.array([[1.0, 0.5, 0.3], [0.5, 1.0, 0.3], [0.1, 0.1, 1.0]])
    assert consensus_scores(matrix).tolist() == pytest.approx([0.4, 0.4, 0.1])
    assert int(np.argmax(consensus_scores(matrix))) == 0


def test_random_ablation_is_seeded_and_deterministic(city):
    picks = [random_index(10, f"img{i}", 0) for i in range(40)]
    assert picks == [random_index(10, f"img{i}", 0) for i in range(40)]
    assert len(set(picks)) > 3 and picks != [random_index(10, f"img{i}", 1) for i in range(40)]
    config = PipelineConfig(captioners=TWO, refinement=False, consensus=False, limit=4)
    run = run_pipeline(city, config)
    raw = run.read("raw")
    for chosen in run.read("selected"):
        candidates = [r for r in raw if r["image_id"] == chosen["image_id"]]
        assert chosen["selection"] == "random"
        assert chosen["caption"] == candidates[select_at_random([c["caption"] for c in candidates],
                                                                chosen["image_id"], 0).index]["caption"]


def test_clip_scorer_does_not_keep_everything(city):
    from urbanln_bench.captions.fidelity import PLAUSIBLE_ABSENT
    from urbanln_bench.captions.phrase_scoring import ClipPhraseScorer, QuerySet

    scorer = ClipPhraseScorer("smoke")
    calibration = scorer.calibration
    assert calibration is not None and not calibration.keeps_everything
    assert 0.85 <= calibration.recall <= 0.95 and calibration.hallucinated_rejected > 0.0
    graphs = city.scene_graphs("SI")
    dropped_absent = kept_true = n_true = 0
    for image_id in sorted(graphs)[:5]:
        truth = graph_object_names(graphs[image_id])
        absent = PLAUSIBLE_ABSENT["satellite"]
        true_scores, absent_scores = scorer.score(city.load_image(image_id), [QuerySet(tuple(truth)), QuerySet(absent)])
        dropped_absent += int((absent_scores <= scorer.threshold).sum())
        kept_true += int((true_scores > scorer.threshold).sum())
        n_true += len(truth)
    assert dropped_absent >= 1 and kept_true >= n_true // 2


def test_grounder_separates_true_from_hallucinated_phrases_on_held_out_world_images():
    """The default scorer's calibration (held-out pretraining-world images) shows real separation, also on
    hallucinated kinds the world does render (only pixels can rule those out)."""
    from urbanln_bench.captions.phrase_scoring import ClipPhraseScorer

    scorer = ClipPhraseScorer("smoke")
    calibration = scorer.calibration
    assert scorer.grounder is not None and scorer.settings()["weights"] == "grounding"
    assert "phrase grounder" in scorer.settings()["clip"] and scorer.template == "{phrase}"
    assert calibration.auc >= 0.75 and calibration.auc_scene_kinds >= 0.65 and calibration.auc_within_kind_mean >= 0.62
    assert calibration.hallucinated_rejected >= 0.4 and calibration.hallucinated_rejected_scene_kinds >= 0.2
    assert calibration.hallucinated_rejected_never_rendered >= 0.9
    report = scorer.grounder.report()
    assert report["n_holdout_images"] > 0 and report["seconds"]["train"] < 120


def test_grounder_never_trains_on_benchmark_twins():
    from urbanln_bench.captions.grounding import grounder_key, grounding_config
    from urbanln_bench.data.loader import CityData
    from urbanln_bench.specs import get_city
    from urbanln_bench.synth.twin import ensure_twin

    _, inputs = grounder_key(grounding_config("smoke"))
    ny = CityData.open(ensure_twin(get_city("NY"), "tiny")).manifest_hash
    assert inputs["world"] and ny not in inputs["world"]


def test_refinement_drops_hallucinated_kinds_more_often_than_true_ones(city, built):
    graphs = city.scene_graphs("SI")
    lost = {"true": [0, 0], "hallucinated": [0, 0]}
    for raw, refined in zip(built.read("raw"), built.read("refined"), strict=True):
        truth = set(graph_object_names(graphs[raw["image_id"]]))
        before = set(mentioned_objects(raw["caption"], truth))
        after = set(mentioned_objects(refined["overall_filtered"], truth))
        for kind, names in (("true", before & truth), ("hallucinated", before - truth)):
            lost[kind][0] += len(names - after)
            lost[kind][1] += len(names)
    assert lost["hallucinated"][1] > 0
    assert lost["hallucinated"][0] / lost["hallucinated"][1] > lost["true"][0] / lost["true"][1]


def test_a_failing_run_leaves_nothing_half_written(city, monkeypatch):
    from urbanln_bench.captions.synthetic_captioner import SyntheticCaptioner

    before = set(_key_dirs(city))
    calls = {"n": 0}
    original = SyntheticCaptioner.describe

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:
            raise RuntimeError("captioner crashed")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SyntheticCaptioner, "describe", flaky)
    with pytest.raises(RuntimeError):
        run_pipeline(city, PipelineConfig(captioners=TWO, refinement=False, consensus=False, seed=99, limit=3))
    assert set(_key_dirs(city)) == before
    assert not [p for p in captions_root(city).iterdir() if p.name.endswith(".partial")]


# -- bad input through the CLI (issue item 9) ----------------------------------------------------------


def _captions_cli(city: CityData, *args: str):
    return cli("captions", "build", "--city", "NY", "--data-root", str(city.root), "--limit", "3", "--no-refine",
               "--random", *args)


@pytest.mark.parametrize("lines, message", [
    (['{"image_id": "r000", "captioner": "x", "caption": "A road."}', "{not json"], "malformed JSON"),
    (['{"image_id": "no-such-image", "captioner": "x", "caption": "A road."}'], "unknown image id 'no-such-image'"),
    (['{"image_id": "IMAGE", "captioner": "x", "caption": "   "}'], "empty caption"),
])
def test_bad_caption_files_are_clear_errors_and_write_nothing(city, tmp_path, lines, message):
    before = set(_key_dirs(city))
    path = tmp_path / "captions.jsonl"
    path.write_text("\n".join(line.replace("IMAGE", sorted(city.satellite_ids())[0]) for line in lines) + "\n")
    result = _captions_cli(city, "--captioner", f"file:{path}")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and str(path) in result.stderr
    assert set(_key_dirs(city)) == before


@pytest.mark.parametrize("option", [["--captioner", "transformers:/no/such/mllm"], ["--scorer", "owlv2:/no/such/owl"],
                                    ["--segmenter", "sam:/no/such/sam"], ["--phrases", "factual:/no/such/t5"]])
def test_missing_backend_folders_are_clear_errors(city, option):
    before = set(_key_dirs(city))
    args = [a for a in ("--captioner", "synthetic:qwen2.5-vl-7b") if option[0] != "--captioner"] + option
    result = cli("captions", "build", "--city", "NY", "--data-root", str(city.root), "--limit", "2", *args)
    assert result.returncode == 2, result.stderr
    assert "/no/such/" in result.stderr and "does not exist" in result.stderr
    assert set(_key_dirs(city)) == before
