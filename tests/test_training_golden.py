"""Golden outputs of the trained components: the probe and the CLIP training loop (docs/identity.md).

Trained numbers are float32 and differ between CPUs in the last bits, so these pin values to a
tolerance rather than digests: tight enough that a change of what a component computes (another
learning rate schedule, loss, initialisation or early-stopping rule) moves them, loose enough for a
different CPU. A change that moves them must bump the version named in the failure message and
re-pin the values; each table is keyed by that version.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from conftest import toy_pairs

from urbanln_bench.probe_inputs import PROBE_VERSION

# per PROBE_VERSION: test R², RMSE, MAE and the best epoch of the probe on fixed features (seed 0);
# the AVX-512 and the AVX2 dispatch of one machine agree to 2e-9
PROBE_GOLDEN = {"2": (0.621939995471221, 0.7558867829223861, 0.5561554404567409, 41)}
PROBE_TOLERANCE = 1e-5
# per (UrbanLN's MethodMeta.version, foundation TRAINER_VERSION): mean loss over the first and last
# steps of four CLIP fine-tuning steps from a seeded tiny CLIP, and the mean |weight| after them, for
# CLIP's InfoNCE and UrbanLN's MSD (the shared training loop and both loss plugins); the two
# dispatch levels agree exactly here
CLIP_TRAINER_GOLDEN = {("1", 1): {"infonce": ([1.6001, 1.6001], 0.01915585808455944),
                                  "msd": ([1.424, 1.424], 0.019155414775013924)}}
CLIP_TOLERANCE = 2e-4


def _fixed_features(n: int = 240, dim: int = 12):
    rng = np.random.default_rng(7)
    X = rng.standard_normal((n, dim)).astype(np.float32)
    y = np.expm1(np.clip(X[:, 0] + 0.5 * X[:, 1] ** 2 + 0.5 * rng.standard_normal(n) + 3.0, 0, None))
    order = rng.permutation(n)
    return X, y, (order[:144], order[144:192], order[192:])


def test_probe_on_fixed_features_matches_its_golden_values():
    from urbanln_bench.probe import fit_probe

    X, y, split = _fixed_features()
    result = fit_probe(X, y, split, seed=0)
    now = (result.metrics["r2"], result.metrics["rmse"], result.metrics["mae"], result.best_epoch)
    assert PROBE_VERSION in PROBE_GOLDEN, f"PROBE_GOLDEN has no values for PROBE_VERSION {PROBE_VERSION}: add {now}"
    golden = PROBE_GOLDEN[PROBE_VERSION]
    assert now[3] == golden[3] and np.allclose(now[:3], golden[:3], rtol=0, atol=PROBE_TOLERANCE), (
        f"the probe now gives {now}, not {golden}: if meant, bump PROBE_VERSION (urbanln_bench/probe_inputs.py), "
        "pin the new values and re-run the records")


def _clip_run(loss_name: str) -> tuple[list[float], float]:
    from urbanln_bench.backbones.clip import build_clip
    from urbanln_bench.clip_training.trainer import ClipTrainConfig, build_clip_loss, train_clip

    images, captions = toy_pairs(16, lambda name, i: f"a {name} tile with {name} roofs and {name} streets number {i}")
    torch.manual_seed(0)
    model, tokenizer, preprocess = build_clip("smoke")
    options = {"queue_size": 16} if loss_name == "msd" else {}
    report = train_clip(model, images, captions, functools.partial(tokenizer, context_length=77), preprocess,
                        ClipTrainConfig(steps=4, batch_size=8, lr=1e-3), build_clip_loss(loss_name, **options))
    weights = float(torch.cat([p.detach().abs().flatten() for p in model.parameters()]).mean())
    return report["loss_first_last"]["total"], weights


@pytest.mark.parametrize("loss_name", ["infonce", "msd"])
def test_clip_training_matches_its_golden_values(loss_name):
    from urbanln_bench.backbones.foundation import TRAINER_VERSION
    from urbanln_bench.method import get_method

    version = (get_method("urbanln").meta.version, TRAINER_VERSION)
    losses, weights = _clip_run(loss_name)
    assert version in CLIP_TRAINER_GOLDEN, (f"CLIP_TRAINER_GOLDEN has no values for {version}: add "
                                            f"{{{version!r}: {{{loss_name!r}: ({losses}, {weights})}}}}")
    golden_losses, golden_weights = CLIP_TRAINER_GOLDEN[version][loss_name]
    assert np.allclose(losses, golden_losses, rtol=CLIP_TOLERANCE, atol=0) and np.isclose(
        weights, golden_weights, rtol=CLIP_TOLERANCE, atol=0), (
        f"CLIP training ({loss_name}) now gives losses {losses}, mean |w| {weights}; golden {golden_losses}, "
        f"{golden_weights}. If meant, bump the version of every method that trains with it (and the foundation's "
        "TRAINER_VERSION when the shared loop changed) and pin the new values")
