"""The shared pair-sampling trainer: losses on hand-computed examples, samplers, augmentations,
determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from urbanln_bench.data.tables import Regions
from urbanln_bench.pair_training.augment import dihedral, random_resized_crop_boxes, simclr_crop_flip
from urbanln_bench.pair_training.encoder import PairEncoder, parameter_count
from urbanln_bench.pair_training.losses import (
    NTXentObjective,
    TripletObjective,
    margin_triplet_loss,
    nt_xent_loss,
    tile2vec_triplet_loss,
)
from urbanln_bench.pair_training.samplers import (
    Candidates,
    DistantNegatives,
    most_similar_mobility_regions,
    nearest_poi_regions,
    spatial_neighbours,
)
from urbanln_bench.pair_training.trainer import ImageSet, TrainConfig, init_model, train_pairs


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small models on a shared 2-core machine: one intra-op thread is faster and steadier."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


# -- losses ------------------------------------------------------------------------------------------

def test_tile2vec_triplet_on_a_hand_computed_example():
    # ‖a−n‖ = 5, ‖a−d‖ = 1 (unsquared): hinge 5 − 1 + 0.1 = 4.1; penalty 0.01·(0 + 5 + 1)
    loss = tile2vec_triplet_loss(t([[0, 0]]), t([[3, 4]]), t([[0, 1]]), margin=0.1, l2=0.01)
    assert float(loss) == pytest.approx(4.1 + 0.06)
    # squared distances would give 25 − 1; the hinge clips a satisfied triplet to 0; Frobenius penalty
    a, n, d = t([[0, 0], [1, 0]]), t([[3, 4], [1, 0]]), t([[0, 1], [1, 10]])
    expected = (4.1 + 0.0) / 2 + 0.01 * (1.0 + math.sqrt(26) + math.sqrt(102))
    assert float(tile2vec_triplet_loss(a, n, d, margin=0.1, l2=0.01)) == pytest.approx(expected)
    assert float(tile2vec_triplet_loss(a, n, d, margin=0.1, l2=0.0)) == pytest.approx(2.05)


def test_tile2vec_defaults_are_the_notebooks_margin_and_penalty():
    loss = tile2vec_triplet_loss(t([[0, 0]]), t([[0, 0]]), t([[0, 0]]))
    assert float(loss) == pytest.approx(10.0)  # margin 10, zero embeddings: no penalty


def test_margin_triplet_equals_margin_ranking_loss_on_l2_distances():
    generator = torch.Generator().manual_seed(0)
    a, p, n = (torch.randn(7, 5, generator=generator, dtype=torch.float64) for _ in range(3))
    reference = torch.nn.MarginRankingLoss(margin=5.0)(torch.norm(a - n, dim=1), torch.norm(a - p, dim=1),
                                                       torch.ones(7, dtype=torch.float64))
    assert float(margin_triplet_loss(a, p, n, 5.0)) == pytest.approx(float(reference))


def test_triplet_gradient_is_finite_when_anchor_equals_positive():
    a = torch.zeros(2, 3, requires_grad=True)
    loss = tile2vec_triplet_loss(a, torch.zeros(2, 3), torch.ones(2, 3))
    loss.backward()
    assert torch.isfinite(a.grad).all()


def nt_xent_reference(z_a: np.ndarray, z_p: np.ndarray, tau: float, groups=None) -> float:
    """SimCLR Eq. (1) written out with loops: −log exp(s_ij/τ) / Σ_{k≠i, k allowed} exp(s_ik/τ)."""
    z = np.concatenate([z_a, z_p])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n2 = len(z)
    n = n2 // 2
    total = 0.0
    for i in range(n2):
        j = (i + n) % n2
        denominator = 0.0
        for k in range(n2):
            if k == i:
                continue
            if groups is not None and k != j and groups[k] in (groups[i], groups[j]):
                continue
            denominator += math.exp(z[i] @ z[k] / tau)
        total += -math.log(math.exp(z[i] @ z[j] / tau) / denominator)
    return total / n2


@pytest.mark.parametrize("n", [1, 3, 5])
def test_nt_xent_equals_the_reference_for_any_batch_size(n: int):
    rng = np.random.default_rng(n)
    z_a, z_p = rng.normal(size=(n, 4)), rng.normal(size=(n, 4))
    got = float(nt_xent_loss(torch.from_numpy(z_a), torch.from_numpy(z_p), temperature=0.5))
    assert got == pytest.approx(nt_xent_reference(z_a, z_p, 0.5), rel=1e-9)


def test_nt_xent_masks_other_copies_of_the_same_region():
    rng = np.random.default_rng(7)
    z_a, z_p = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    g_a, g_p = np.array([10, 11, 12, 13]), np.array([11, 10, 14, 15])  # 10 and 11 appear twice each
    got = float(nt_xent_loss(torch.from_numpy(z_a), torch.from_numpy(z_p), 0.5, torch.from_numpy(g_a),
                             torch.from_numpy(g_p)))
    assert got == pytest.approx(nt_xent_reference(z_a, z_p, 0.5, np.concatenate([g_a, g_p])), rel=1e-9)
    assert got != pytest.approx(nt_xent_reference(z_a, z_p, 0.5))
    distinct = torch.arange(4), torch.arange(4, 8)  # all regions distinct: exactly the plain loss
    plain = nt_xent_loss(torch.from_numpy(z_a), torch.from_numpy(z_p), 0.5)
    assert float(nt_xent_loss(torch.from_numpy(z_a), torch.from_numpy(z_p), 0.5, *distinct)) == pytest.approx(float(plain))


def test_objectives_dispatch_to_their_losses():
    a, p, n = t([[0, 0]]), t([[3, 4]]), t([[0, 1]])
    regions = [torch.tensor([0]), torch.tensor([1]), torch.tensor([2])]
    assert float(TripletObjective(0.1, 0.01)([a, p, n], regions)) == pytest.approx(4.16)
    assert float(TripletObjective(5.0)([a, p, n], regions)) == pytest.approx(9.0)
    objective = NTXentObjective(0.5)
    assert objective.arity == 2 and float(objective([a, p], regions[:2])) == pytest.approx(
        float(nt_xent_loss(a, p, 0.5)))


# -- samplers ----------------------------------------------------------------------------------------

def grid_regions(cells: list[tuple[int, int]]) -> Regions:
    n = len(cells)
    return Regions(tuple(f"r{i}" for i in range(n)), np.asarray([c[0] for c in cells], float),
                   np.asarray([c[1] for c in cells], float), np.full(n, np.nan), np.full(n, np.nan))


def test_spatial_neighbours_are_the_8_neighbourhood_and_never_the_anchor():
    cells = [(r, c) for r in range(3) for c in range(3)] + [(10, 10)]  # a 3×3 block and an island
    neighbours = spatial_neighbours(grid_regions(cells), radius=1)
    at = {cell: i for i, cell in enumerate(cells)}
    assert sorted(cells[j] for j in neighbours.of(at[(0, 0)])) == [(0, 1), (1, 0), (1, 1)]
    assert len(neighbours.of(at[(1, 1)])) == 8
    assert [cells[j] for j in neighbours.of(at[(10, 10)])] == [(2, 2)]  # island: its nearest region
    for i in range(len(cells)):
        assert i not in neighbours.of(i)
    draws = neighbours.sample(np.repeat(at[(0, 0)], 300), torch.Generator().manual_seed(0))
    assert set(draws.tolist()) == {at[(0, 1)], at[(1, 0)], at[(1, 1)]}  # uniform over all of them


def test_spatial_neighbours_without_a_grid_use_the_nearest_regions_by_distance():
    lat = np.array([40.0, 40.001, 40.002, 40.5, 41.0, 41.001, 41.002, 41.003, 41.004, 41.005])
    regions = Regions(tuple(f"r{i}" for i in range(10)), np.full(10, np.nan), np.full(10, np.nan), lat, np.zeros(10))
    neighbours = spatial_neighbours(regions)
    assert len(neighbours.of(0)) == 8 and 0 not in neighbours.of(0)
    assert {1, 2} <= set(neighbours.of(0).tolist()) and 9 not in neighbours.of(0)


def test_distant_negatives_lie_outside_the_window():
    cells = [(r, c) for r in range(6) for c in range(6)]
    regions = grid_regions(cells)
    generator = torch.Generator().manual_seed(0)
    anchors = np.repeat(np.arange(len(cells)), 20)
    negatives = DistantNegatives(regions, radius=1).sample(anchors, generator)
    for a, n in zip(anchors, negatives, strict=True):
        assert max(abs(cells[a][0] - cells[n][0]), abs(cells[a][1] - cells[n][1])) > 1
    valid = np.zeros(len(cells), bool)
    valid[[0, 35]] = True
    any_other = DistantNegatives(regions, radius=0, valid=valid).sample(np.repeat([0, 35], 30), generator)
    assert (any_other[:30] == 35).all() and (any_other[30:] == 0).all()  # only valid regions, never itself


def test_nearest_poi_regions_keep_ties_and_skip_regions_without_poi():
    counts = np.array([[0, 0], [1, 0], [10, 10], [10, 11], [1, 0], [np.nan, np.nan]])
    nearest = nearest_poi_regions(counts)
    assert sorted(nearest.of(0).tolist()) == [1, 4]  # both at distance 1: a tie, drawn at random
    assert nearest.of(1).tolist() == [4] and nearest.of(4).tolist() == [1]  # identical vectors, never itself
    assert nearest.of(2).tolist() == [3] and nearest.of(3).tolist() == [2]
    assert nearest.count[5] == 0 and all(5 not in nearest.of(i) for i in range(5))
    draws = nearest.sample(np.zeros(200, int), torch.Generator().manual_seed(1))
    assert set(draws.tolist()) == {1, 4}
    cosine = nearest_poi_regions(np.array([[1, 0], [5, 0], [0, 1], [1, 1.1]]), "cosine")
    assert cosine.of(0).tolist() == [1] and cosine.of(2).tolist() == [3]  # the mix, not the total
    only = nearest_poi_regions(counts, eligible=np.array([True, False, True, True, True, True]))
    assert only.of(0).tolist() == [4] and only.count[1] == 0


def test_most_similar_mobility_regions():
    # regions 0 and 1 send their trips to 3 (and a little to 4); region 2 sends to 4; region 5 has no trips
    origin = np.array([0, 0, 1, 1, 2, 0])
    destination = np.array([3, 4, 3, 4, 4, 0])
    trips = np.array([90.0, 10.0, 80.0, 20.0, 50.0, 1000.0])  # 0 → 0: intra-region trips are ignored
    similar = most_similar_mobility_regions(origin, destination, trips, 6)
    assert similar.of(0).tolist() == [1] and similar.of(1).tolist() == [0]
    assert similar.count[5] == 0 and all(5 not in similar.of(i) for i in range(5))
    for i in range(5):
        assert i not in similar.of(i)


def test_candidates_restrict_drops_regions_without_images():
    candidates = Candidates.from_lists([[1, 2], [0], [0]])
    restricted = candidates.restrict(np.array([True, False, True]))
    assert restricted.of(0).tolist() == [2] and restricted.count[1] == 0 and restricted.of(2).tolist() == [0]
    with pytest.raises(ValueError, match="itself"):
        Candidates.from_lists([[0]])


# -- augmentations -------------------------------------------------------------------------------------

def test_dihedral_is_a_symmetry_of_each_image():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    y = dihedral(x, torch.Generator().manual_seed(0))
    symmetries = [torch.rot90(v, k, dims=(-2, -1)) for v in (x, x.flip(-1)) for k in range(4)]
    for i in range(2):
        assert any(torch.equal(y[i], s[i]) for s in symmetries)


def test_random_resized_crop_boxes_stay_inside_and_follow_the_generator():
    boxes = random_resized_crop_boxes(50, 32, torch.Generator().manual_seed(0))
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 32).all() and (boxes[:, 2] > boxes[:, 0]).all()
    assert torch.equal(boxes, random_resized_crop_boxes(50, 32, torch.Generator().manual_seed(0)))
    x = torch.randn(3, 3, 16, 16)
    assert simclr_crop_flip(x, torch.Generator().manual_seed(0)).shape == x.shape


def test_simclr_crop_resizes_the_box_to_the_full_image(monkeypatch):
    import urbanln_bench.pair_training.augment as augment

    x = torch.arange(64, dtype=torch.float32).view(1, 1, 8, 8).repeat(1, 3, 1, 1)
    monkeypatch.setattr(augment, "horizontal_flip", lambda images, generator: images)
    monkeypatch.setattr(augment, "random_resized_crop_boxes", lambda n, size, generator: torch.tensor([[0.0, 0, 8, 8]]))
    assert torch.allclose(augment.simclr_crop_flip(x, None), x, atol=1e-5)  # the whole image: unchanged
    monkeypatch.setattr(augment, "random_resized_crop_boxes", lambda n, size, generator: torch.tensor([[4.0, 0, 8, 4]]))
    crop = augment.simclr_crop_flip(x, None)[0, 0]  # the top-right quadrant (values 4..31), upsampled ×2
    quadrant = torch.nn.functional.interpolate(x[:, :, 0:4, 4:8], size=8, mode="bilinear", align_corners=False)
    assert float((crop - quadrant[0, 0]).abs().max()) <= 2.0 and abs(float(crop.mean()) - 17.5) < 0.5


# -- trainer -------------------------------------------------------------------------------------------

def tiny_images(n_regions: int = 16, per_region: int = 1, size: int = 16) -> ImageSet:
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(n_regions * per_region, 3, size, size, generator=generator)
    return ImageSet(pixels, np.repeat(np.arange(n_regions), per_region), n_regions)


def train_once(seed: int, objective=None, epochs: int = 2) -> tuple[torch.Tensor, list[float]]:
    cells = [(r, c) for r in range(4) for c in range(4)]
    regions = grid_regions(cells)
    images = tiny_images()
    model = init_model(lambda: PairEncoder(width=4, head="linear", out_dim=8), seed)
    config = TrainConfig(epochs=epochs, batch_size=6, lr=1e-3, augment="dihedral", seed=seed)
    log = train_pairs(model, images, objective or TripletObjective(1.0, 0.01), spatial_neighbours(regions),
                      DistantNegatives(regions, 1), config)
    with torch.no_grad():
        return model.embed(images.pixels), log.epoch_loss


def test_same_seed_same_weights_and_the_global_rng_is_untouched():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first, losses = train_once(seed=0)
    after = torch.rand(1)
    second, _ = train_once(seed=0)
    assert torch.equal(first, second)
    assert torch.equal(before, after)  # training drew nothing from the global generator
    assert not torch.equal(first, train_once(seed=1)[0])
    assert len(losses) == 2 and all(np.isfinite(losses))


def test_nt_xent_training_runs_with_region_groups():
    embeddings, losses = train_once(seed=0, objective=NTXentObjective(0.5), epochs=1)
    assert embeddings.shape == (16, 8) and np.isfinite(losses).all()


def test_street_view_images_are_drawn_from_their_own_region():
    images = tiny_images(n_regions=5, per_region=3)
    drawn = images.sample(np.array([0, 4, 4, 2]), torch.Generator().manual_seed(0))
    assert images.owner[drawn].tolist() == [0, 4, 4, 2]


def test_encoder_heads_and_widths():
    assert parameter_count(PairEncoder(width=64)) == 11176512  # torchvision's ResNet-18 without fc
    encoder = PairEncoder(width=8, head="simclr", out_dim=16, embed_from="h")  # SimCLR: loss on z, features h
    x = torch.randn(2, 3, 32, 32)
    assert encoder(x).shape == (2, 16) and encoder.embed(x).shape == (2, 64) and encoder.embed_dim == 64
    assert PairEncoder(width=8, head="linear", out_dim=128).embed(x).shape == (2, 128)
