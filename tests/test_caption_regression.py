"""The caption-regression baseline: TF-IDF → SVD targets, a small CNN from scratch, a record with its budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from urbanln_bench.builtin.methods.caption_regression import build_encoder, tfidf_svd_targets

from urbanln_bench.errors import UserError


def test_targets_are_centred_scaled_and_built_from_shared_words_only():
    texts = ["a red roof and a red car", "a green park with trees", "a red car on a road", "trees in a park",
             "a unique zebra"]
    targets, info = tfidf_svd_targets(texts, dim=8)
    assert targets.shape == (5, 8) and targets.dtype == np.float32
    assert np.allclose(targets.mean(axis=0), 0.0, atol=1e-6)
    assert np.mean(targets[:, :info["components"]] ** 2) == pytest.approx(1.0, rel=1e-5)
    assert info["vocabulary"] == 4  # red, car, park, trees: each in >= 2 captions; "zebra" and "and" are not
    assert np.allclose(targets[:, info["components"]:], 0.0)
    with pytest.raises(UserError, match="share 0 words"):
        tfidf_svd_targets(["one", "two"], dim=4)


def test_the_encoder_has_the_documented_size_and_width():
    import torch

    model = build_encoder()
    assert 0.5e6 < sum(p.numel() for p in model.parameters()) < 0.7e6
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 128)


@pytest.mark.slow  # end to end through the caption pipeline and training (CI runs it)
def test_end_to_end_on_the_tiny_twin_records_its_budget(tmp_path: Path, tiny_ny):
    from urbanln_bench.runner import RunOptions, run

    # UrbanLN's tiny-test caption sets (tests/test_urbanln.py), so one run of the suite builds them once
    one_captioner = {"captioners": "synthetic:qwen2.5-vl-7b", "candidates_per_captioner": "2"}
    outcomes = run(RunOptions(method="caption-regression", city="NY", scale="tiny", imagery=["SI"], tasks=["Pop"],
                              seeds=[0], profile="smoke", results_dir=tmp_path, settings=one_captioner),
                   log=lambda m: None)
    [record] = [o.record for o in outcomes]
    fit = record.pretraining
    assert fit["images_seen"] == fit["steps"] * fit["batch_size"] <= 256
    assert fit["parameters"]["trainable"] == fit["parameters"]["total"] > 0
    assert record.method.weight_source.startswith("from scratch (caption regression")
    assert np.isfinite(record.metrics["r2"].mean) and record.embedding["dim"] == 128
