"""Golden outputs of the trained components (docs/identity.md): the probe, the CLIP training loop, the
phrase grounder, the synthetic foundation's pretraining and the pair trainer.

Trained numbers are float32 and differ between CPUs in the last bits, so these pin values to a
tolerance rather than digests: tight enough that a change of what a component computes (another
learning rate schedule, loss, initialisation or early-stopping rule) moves them, loose enough for a
different CPU. A change that moves them must bump the version named in the failure message and
re-pin the values; each table is keyed by that version.
"""

from __future__ import annotations

import dataclasses
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
# per CLIP_TRAINER_VERSION (clip_training/trainer.py): mean loss over the first and last
# steps of four CLIP fine-tuning steps from a seeded tiny CLIP, and the mean |weight| after them, for
# CLIP's InfoNCE and UrbanLN's MSD (the shared training loop and both loss plugins); the two
# dispatch levels agree exactly here
CLIP_TRAINER_GOLDEN = {1: {"infonce": ([1.6001, 1.6001], 0.01915585808455944),
                                  "msd": ([1.424, 1.424], 0.019155414775013924)}}
CLIP_TOLERANCE = 2e-4
# per GROUNDING_VERSION (captions/versions.py): the number of steps of the phrase grounder's training
# loop on ten toy images of two sizes (the smoke recipe, shrunk to two epochs of batches of four), the
# loss at the first and the last step, and the mean |weight| after them, on one torch thread; the
# AVX-512 and the AVX2 dispatch of one machine agree to a relative 8e-8
GROUNDING_GOLDEN = {4: (6, [0.6437154412269592, 0.21218341588974], 0.03348343449262558)}
GROUNDING_TOLERANCE = 2e-6
# per foundation TRAINER_VERSION: the number of steps of the synthetic foundation's pretraining (its
# initial model, schedule and loss) on 16 toy pairs (the smoke recipe, shrunk to two epochs of batches
# of eight), the loss at the first and the last step, and the mean |weight| after them, on one torch
# thread; the two dispatch levels agree to a relative 1.4e-7
FOUNDATION_GOLDEN = {1: (4, [2.441944122314453, 0.8910728693008423], 0.01915151616432211)}
FOUNDATION_TOLERANCE = 2e-6
# per PAIR_TRAINER_VERSION (pair_training/trainer.py): the number of steps of two epochs of the pair
# trainer on 16 toy regions, the mean loss of each epoch and the mean |weight| after them, with each
# pair-trained method's objective, positives, negatives, augmentation and optimiser on a narrow encoder,
# on one torch thread; the two dispatch levels agree to a relative 5e-7
PAIR_TRAINER_GOLDEN = {1: {"tile2vec": (6, [10.071394443511963, 10.452722311019897], 0.08404377261182745),
                           "pg-simclr": (6, [2.2626673877239227, 2.32686510682106], 0.084118351950633),
                           "musecl": (6, [5.234723627567291, 4.571647346019745], 0.08405962959001913)}}
PAIR_TOLERANCE = 2e-6


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
    from urbanln_bench.clip_training.trainer import CLIP_TRAINER_VERSION as version

    losses, weights = _clip_run(loss_name)
    assert version in CLIP_TRAINER_GOLDEN, (f"CLIP_TRAINER_GOLDEN has no values for {version}: add "
                                            f"{{{version!r}: {{{loss_name!r}: ({losses}, {weights})}}}}")
    golden_losses, golden_weights = CLIP_TRAINER_GOLDEN[version][loss_name]
    assert np.allclose(losses, golden_losses, rtol=CLIP_TOLERANCE, atol=0) and np.isclose(
        weights, golden_weights, rtol=CLIP_TOLERANCE, atol=0), (
        f"CLIP training ({loss_name}) now gives losses {losses}, mean |w| {weights}; golden {golden_losses}, "
        f"{golden_weights}. If meant, bump CLIP_TRAINER_VERSION (urbanln_bench/clip_training/trainer.py; it is in "
        "every CLIP-backed method's key, and the foundation's TRAINER_VERSION too when the shared training_loop "
        "changed), pin the new values and re-run the UrbanLN, UrbanCLIP and UrbanVLP records")


def _mean_abs_weight(model) -> float:
    """The mean |weight| over all parameters, summed in float64 (no reduction order of float32 sums)."""
    return float(torch.cat([p.detach().abs().flatten() for p in model.parameters()]).double().mean())


def _grounding_run() -> tuple[int, list[float], float]:
    from urbanln_bench.captions.grounding import (
        GROUNDING_RECIPES,
        PhraseVocabulary,
        WorldImage,
        fit_grounder,
        grounder_training_set,
        one_torch_thread,
    )

    rng = np.random.default_rng(0)
    colours = {"tree": (40, 160, 60), "swimming pool": (40, 120, 220), "house": (200, 60, 50)}
    world = []
    for i, (height, width) in enumerate([(32, 32)] * 6 + [(24, 40)] * 4):
        image = rng.integers(90, 130, (height, width, 3)).astype(np.uint8)
        objects = []
        for name, colour in colours.items():
            if rng.random() < 0.6:
                w, h = (int(v) for v in rng.integers(5, 14, 2))
                x0, y0 = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
                image[y0:y0 + h, x0:x0 + w] = colour
                objects.append({"name": name, "bbox": [x0, y0, x0 + w, y0 + h], "attributes": ["small"]})
        world.append(WorldImage(f"toy/{i}", image, {"objects": objects}))
    vocab = PhraseVocabulary(
        kinds=("fountain", "house", "swimming pool", "tree"), rendered=(False, True, True, True),
        forms=(("fountain", "fountains"), ("house", "houses", "home"), ("swimming pool", "swimming pools", "pool"),
               ("tree", "trees")),
        attributes=(("stone",), ("small",), ("small",), ("small",)),
        words=("<pad>", "<unk>", "fountain", "fountains", "home", "house", "houses", "pool", "pools", "small", "stone",
               "swimming", "tree", "trees"))
    config = dataclasses.replace(GROUNDING_RECIPES["smoke"], epochs=2, images_per_batch=4)
    with one_torch_thread():
        fit = fit_grounder(config, vocab, *grounder_training_set(world, vocab))
    steps = [loss for epoch in fit.step_losses for loss in epoch]
    return len(steps), [steps[0], steps[-1]], _mean_abs_weight(fit.model)


def test_phrase_grounder_training_matches_its_golden_values():
    from urbanln_bench.captions.versions import GROUNDING_VERSION

    now = _grounding_run()
    assert GROUNDING_VERSION in GROUNDING_GOLDEN, (f"GROUNDING_GOLDEN has no values for GROUNDING_VERSION "
                                                   f"{GROUNDING_VERSION}: add {{{GROUNDING_VERSION}: {now}}}")
    golden = GROUNDING_GOLDEN[GROUNDING_VERSION]
    assert now[0] == golden[0] and np.allclose(now[1], golden[1], rtol=GROUNDING_TOLERANCE, atol=0) and np.isclose(
        now[2], golden[2], rtol=GROUNDING_TOLERANCE, atol=0), (
        f"the phrase grounder's training now gives (steps, first and last loss, mean |w|) {now}, not {golden}. "
        "If meant, bump GROUNDING_VERSION (urbanln_bench/captions/versions.py) and pin the new values")


def _foundation_run() -> tuple[int, list[float], float]:
    from urbanln_bench.backbones.clip import trim_tokens
    from urbanln_bench.backbones.foundation import (
        FOUNDATION_RECIPES,
        initial_foundation_model,
        pretrain_foundation,
    )
    from urbanln_bench.captions.grounding import one_torch_thread

    images, captions = toy_pairs(16, lambda name, i: f"{name} roofs along a {name} street, block {i}")
    config = dataclasses.replace(FOUNDATION_RECIPES["smoke"], epochs=2, batch_size=8)
    with one_torch_thread():
        model, tokenizer, preprocess = initial_foundation_model(config)
        result = pretrain_foundation(model, images, trim_tokens(tokenizer(captions)), preprocess, config)
    steps = result.history["total"]
    return len(steps), [steps[0], steps[-1]], _mean_abs_weight(model)


def test_foundation_pretraining_matches_its_golden_values():
    from urbanln_bench.backbones.foundation import TRAINER_VERSION

    now = _foundation_run()
    assert TRAINER_VERSION in FOUNDATION_GOLDEN, (f"FOUNDATION_GOLDEN has no values for TRAINER_VERSION "
                                                  f"{TRAINER_VERSION}: add {{{TRAINER_VERSION}: {now}}}")
    golden = FOUNDATION_GOLDEN[TRAINER_VERSION]
    assert now[0] == golden[0] and np.allclose(now[1], golden[1], rtol=FOUNDATION_TOLERANCE, atol=0) and np.isclose(
        now[2], golden[2], rtol=FOUNDATION_TOLERANCE, atol=0), (
        f"the foundation's pretraining now gives (steps, first and last loss, mean |w|) {now}, not {golden}. "
        "If meant, bump TRAINER_VERSION (urbanln_bench/backbones/foundation.py) and pin the new values here and "
        "in CLIP_TRAINER_GOLDEN")


def _pair_run(kind: str) -> tuple[int, list[float], float]:
    from urbanln_bench.captions.grounding import one_torch_thread
    from urbanln_bench.data.tables import Regions
    from urbanln_bench.pair_training.encoder import PairEncoder
    from urbanln_bench.pair_training.losses import NTXentObjective, TripletObjective
    from urbanln_bench.pair_training.samplers import (
        DistantNegatives,
        most_similar_mobility_regions,
        nearest_poi_regions,
        spatial_neighbours,
    )
    from urbanln_bench.pair_training.trainer import ImageSet, TrainConfig, init_model, train_pairs

    n = 16
    regions = Regions(tuple(f"r{i}" for i in range(n)), np.arange(n) // 4 * 1.0, np.arange(n) % 4 * 1.0,
                      np.full(n, np.nan), np.full(n, np.nan))
    rng = np.random.default_rng(0)
    per_region = 2 if kind == "musecl" else 1  # MuseCL's street views: several images per region
    images = ImageSet(torch.from_numpy(rng.standard_normal((n * per_region, 3, 32, 32)).astype(np.float32)),
                      np.repeat(np.arange(n), per_region), n)
    if kind == "tile2vec":
        head, objective = {}, TripletObjective(10.0, 0.01)
        positives, negatives = spatial_neighbours(regions, 1), DistantNegatives(regions, 1)
        config = TrainConfig(epochs=2, batch_size=6, lr=1e-3, betas=(0.5, 0.999), augment="dihedral")
    elif kind == "pg-simclr":
        head, objective = {"head": "simclr", "out_dim": 8, "embed_from": "h"}, NTXentObjective(0.5)
        positives, negatives = nearest_poi_regions(rng.integers(0, 4, (n, 3)).astype(float), "euclidean"), None
        config = TrainConfig(epochs=2, batch_size=6, lr=1e-3, augment="simclr")
    else:
        head, objective = {"head": "linear", "out_dim": 8}, TripletObjective(5.0)
        origin, destination = rng.integers(0, n, 64), rng.integers(0, n, 64)
        positives = most_similar_mobility_regions(origin, destination, rng.uniform(1, 10, 64), n)
        negatives = DistantNegatives(regions, 0)
        config = TrainConfig(epochs=2, batch_size=6, lr=5e-4, amsgrad=True)
    model = init_model(lambda: PairEncoder(width=4, **head), 0)
    with one_torch_thread():
        log = train_pairs(model, images, objective, positives, negatives, config)
    return log.steps, log.epoch_loss, _mean_abs_weight(model)


@pytest.mark.parametrize("kind", ["tile2vec", "pg-simclr", "musecl"])
def test_pair_training_matches_its_golden_values(kind):
    from urbanln_bench.pair_training.trainer import PAIR_TRAINER_VERSION

    now = _pair_run(kind)
    assert PAIR_TRAINER_VERSION in PAIR_TRAINER_GOLDEN, (
        f"PAIR_TRAINER_GOLDEN has no values for PAIR_TRAINER_VERSION {PAIR_TRAINER_VERSION}: add "
        f"{{{PAIR_TRAINER_VERSION}: {{{kind!r}: {now}}}}}")
    golden = PAIR_TRAINER_GOLDEN[PAIR_TRAINER_VERSION][kind]
    assert now[0] == golden[0] and np.allclose(now[1], golden[1], rtol=PAIR_TOLERANCE, atol=0) and np.isclose(
        now[2], golden[2], rtol=PAIR_TOLERANCE, atol=0), (
        f"pair training ({kind}) now gives (steps, epoch losses, mean |w|) {now}, not {golden}. If meant, bump "
        "PAIR_TRAINER_VERSION (urbanln_bench/pair_training/trainer.py; it is in every pair-trained record's key), "
        "pin the new values and re-run the Tile2Vec, PG-SimCLR and MuseCL records")
