"""UrbanCLIP and UrbanVLP: their caption data, their fused embedding, and a tiny run of each end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from urbanln_bench.runner import RunOptions, run


def test_one_sentence_per_image_is_seeded_and_drawn_from_the_caption():
    from urbanln_bench.clip_training.caption_pairs import one_sentence_per_image, split_sentences

    captions = {"b": "A road. Two parks. Many cars", "a": "One roof", "c": "Water. Trees. Boats. Bridges"}
    first = one_sentence_per_image(captions, list(captions), seed=0)
    assert first == one_sentence_per_image(captions, ["c", "a", "b"], seed=0)  # order of the ids does not matter
    assert all(first[i] in split_sentences(captions[i]) for i in captions)
    assert split_sentences("A road. Two parks. Many cars") == ["A road", "Two parks", "Many cars"]
    draws = {one_sentence_per_image(captions, list(captions), seed=s)["c"] for s in range(20)}
    assert len(draws) > 1  # a different seed can draw another sentence


def test_joined_region_texts_and_keyword_filter():
    from urbanln_bench.clip_training.caption_pairs import joined_region_texts, without_keyword

    captions = {"r1/0.jpg": "a shop.", "r1/1.jpg": "a tree.", "r2/0.jpg": "the ocean shore."}
    texts = joined_region_texts(captions, {"r1": ["r1/0.jpg", "r1/1.jpg"], "r2": ["r2/0.jpg"], "r3": []})
    assert texts == {"r1": "a shop. a tree.", "r2": "the ocean shore."}
    assert without_keyword(captions, list(captions), "Ocean") == ["r1/0.jpg", "r1/1.jpg"]
    assert without_keyword(captions, list(captions), "") == list(captions)


def test_caption_settings_ask_for_one_cheap_caption_set_per_imagery():
    from urbanln_bench.fit_inputs import caption_configs
    from urbanln_bench.method import get_method

    clip = get_method("urbanclip")()
    configs = caption_configs(clip, "SI", "smoke")
    assert list(configs) == ["SI"]
    config = configs["SI"]
    assert config.captioners == ("synthetic:llama-adapter-v2",) and config.candidates_per_captioner == 1
    assert not config.refinement and not config.consensus
    vlp = get_method("urbanvlp")()
    configs = caption_configs(vlp, "SV+SI", "smoke")
    assert sorted(configs) == ["SI", "SV"] and all(len(c.captioners) == 1 for c in configs.values())
    assert vlp.meta.imagery == "fused" and vlp.meta.native_imagery == ("SV+SI",)
    assert clip.meta.native_imagery == ("SI",)


class _Tower(torch.nn.Module):
    """A stand-in image tower: the mean colour of the image times ``factor``."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def encode_image(self, pixels):
        return pixels.mean(dim=(2, 3)) * self.factor


def test_urbanvlp_region_feature_is_satellite_plus_mean_street_view(tiny_ny):
    from urbanln_bench.data.loader import CityData
    from urbanln_bench.embed import preprocess
    from urbanln_bench.method import FitContext, get_method

    method = get_method("urbanvlp")()
    method.run_profile = "smoke"
    method.satellite, method.streetview = _Tower(1.0), _Tower(10.0)
    view = CityData.open(tiny_ny).unlabelled()
    without = next(r for r in view.regions.ids if not view.streetview_ids(r))
    with_two = next(r for r in view.regions.ids if len(view.streetview_ids(r)) >= 2)
    context = FitContext(seed=0, device="cpu", work_dir=Path("."), scale="tiny")
    out = method.encode_regions(view, [without, with_two], context)

    def colour(image_ids):
        pixels = preprocess([view.load_image(i) for i in image_ids], method.input_size, method.mean, method.std)
        return pixels.mean(dim=(2, 3)).numpy()

    assert np.allclose(out[0], colour([without])[0], atol=1e-5)  # no street view: a zero street-view feature
    expected = colour([with_two])[0] + 10.0 * colour(view.streetview_ids(with_two)).mean(axis=0)
    assert np.allclose(out[1], expected, atol=1e-4)


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory) -> dict[str, list]:
    store = tmp_path_factory.mktemp("clip-baselines")
    options = {"city": "NY", "scale": "tiny", "tasks": ["Pop"], "seeds": [0], "profile": "smoke", "results_dir": store}
    return {"urbanclip": run(RunOptions(method="urbanclip", imagery=["SI"], **options), log=lambda m: None),
            "urbanvlp": run(RunOptions(method="urbanvlp", **options), log=lambda m: None)}


def test_urbanclip_end_to_end_on_a_tiny_twin(tiny_runs):
    outcomes = tiny_runs["urbanclip"]
    assert [o.cell for o in outcomes] == ["NY/Pop/SI"]
    record = outcomes[0].record.to_json()
    assert record["method"]["name"] == "urbanclip" and record["method"]["native_imagery"] == ["SI"]
    assert record["method"]["weight_source"].startswith("synthetic foundation: CLIP 'smoke'")
    assert record["method"]["config"]["captioner"] == "synthetic:llama-adapter-v2"
    pretraining = record["pretraining"]
    assert pretraining["weights"] == record["method"]["weight_source"]
    assert pretraining["loss"]["name"] == "coca" and pretraining["loss"]["caption_weight"] == 1.0
    assert set(pretraining["loss_first_last"]) == {"total", "contrastive", "caption"}
    assert pretraining["captions"]["SI"]["images"] == 100 and pretraining["context_length"] == 77
    assert pretraining["captions_filling_context"] == 0  # one sentence per image, not the long caption
    assert np.isfinite(record["metrics"]["r2"]["mean"])


def test_urbanvlp_end_to_end_gives_one_fused_record_per_task(tiny_runs):
    outcomes = tiny_runs["urbanvlp"]
    assert [o.cell for o in outcomes] == ["NY/Pop/SV+SI"]
    record = outcomes[0].record.to_json()
    assert record["cell"]["imagery"] == "SV+SI" and record["method"]["native_imagery"] == ["SV+SI"]
    assert record["method"]["weight_source"].startswith("synthetic foundation: CLIP 'smoke'")
    assert record["embedding"]["regions"] == 100  # regions without street views keep their satellite feature
    pretraining = record["pretraining"]
    assert set(pretraining["captions"]) == {"SI", "SV"}
    assert pretraining["loss"]["name"] == "urbanvlp" and pretraining["loss"]["satellite_weight"] == 0.5
    assert set(pretraining["loss_first_last"]) == {"total", "satellite", "streetview"}
    assert pretraining["parameters"]["total"] == 2 * 3_388_993  # two tiny CLIPs
    assert np.isfinite(record["metrics"]["r2"]["mean"])


def test_profile_counts_both_methods():
    from typer.testing import CliRunner

    from urbanln_bench.cli import app

    result = CliRunner().invoke(app, ["profile", "--methods", "urbanclip,urbanvlp,urbanln-no-ipsi", "--profile", "smoke",
                                      "--batch-size", "2", "--batches", "1", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["method"]: r for r in json.loads(result.stdout)}
    clip = rows["urbanln-no-ipsi"]["total"]
    assert rows["urbanvlp"]["total"] == rows["urbanvlp"]["trainable"] == 2 * clip
    assert rows["urbanclip"]["total"] > clip  # plus the caption decoder
    assert all(rows[m]["images_per_second"] > 0 for m in ("urbanclip", "urbanvlp"))


def test_urbanvlp_start_is_both_towers_as_loaded_and_embeds_as_urbanvlp_does(tiny_ny, tmp_path):
    """The fused starting-weights row: UrbanVLP's two towers before any step (the loaded CLIP, twice),
    embedded by UrbanVLP's own encode_regions, so UrbanVLP − urbanvlp-start is what its pretraining added."""
    from urbanln_bench.data.loader import CityData
    from urbanln_bench.method import FitContext, get_method

    start = get_method("urbanvlp-start")()
    start.run_profile = "smoke"
    assert start.meta.role == "start" and get_method("urbanvlp").meta.starts_from == "urbanvlp-start"
    assert start.caption_settings("SV+SI") == {}  # nothing trains, so no captions are made for it
    view = CityData.open(tiny_ny).unlabelled()
    context = FitContext(seed=0, device="cpu", work_dir=tmp_path, scale="tiny", profile="smoke")
    start.fit(view, "SV+SI", context)
    assert start.report["steps"] == 0 and start.report["images_seen"] == 0
    loaded, _, _ = start.load_clip(context)
    for tower in (start.satellite, start.streetview):
        state = tower.state_dict()
        assert all(torch.equal(state[k], v) for k, v in loaded.state_dict().items())
    assert start.satellite is not start.streetview  # two towers, as UrbanVLP trains them
    assert type(start).encode_regions is get_method("urbanvlp").encode_regions


def test_fused_random_features_concatenate_the_street_view_mean_and_the_tile(tiny_ny, tmp_path):
    from urbanln_bench.data.loader import CityData
    from urbanln_bench.method import FitContext, get_method

    fused, single = get_method("random-features-fused")(), get_method("random-features")()
    view = CityData.open(tiny_ny).unlabelled()
    context = FitContext(seed=0, device="cpu", work_dir=tmp_path, scale="tiny")
    for method in (fused, single):
        method.fit(view, "SV+SI", context)
    without = next(r for r in view.regions.ids if not view.streetview_ids(r))
    with_two = next(r for r in view.regions.ids if len(view.streetview_ids(r)) >= 2)
    out = fused.encode_regions(view, [without, with_two], context)
    assert out.shape == (2, 1024)

    def features(image_ids):
        from urbanln_bench.embed import preprocess

        pixels = preprocess([view.load_image(i) for i in image_ids], single.input_size, single.mean, single.std)
        with torch.no_grad():
            return single.model(pixels).numpy()

    assert np.all(out[0, :512] == 0)  # no street view: a zero street-view half
    assert np.allclose(out[0, 512:], features([without])[0], atol=1e-5)
    assert np.allclose(out[1, :512], features(view.streetview_ids(with_two)).mean(axis=0), atol=1e-5)
