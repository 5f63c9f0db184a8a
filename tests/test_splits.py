"""Splits: 6:2:2, disjoint and covering, deterministic from (city, task, seed), order-independent."""

from __future__ import annotations

import numpy as np
import pytest

from urbanln_bench.splits import MIN_BLOCKS, Split, SplitError, split_regions

IDS = [f"r{i:04d}" for i in range(500)]


def _grid(side: int = 30) -> tuple[list[str], np.ndarray]:
    rows, cols = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    grid = np.stack([rows.ravel(), cols.ravel()], axis=1)
    ids = [f"g{r:02d}_{c:02d}" for r, c in grid]
    return ids, grid


def test_random_split_is_622_disjoint_and_covering():
    split = split_regions(IDS, city="NY", task="Pop", seed=0)
    assert (len(split.train), len(split.val), len(split.test)) == (300, 100, 100)
    assert set(split.train) | set(split.val) | set(split.test) == set(IDS)
    assert not set(split.train) & set(split.val)
    assert not set(split.train) & set(split.test)
    assert not set(split.val) & set(split.test)
    assert split.strategy == "random" and split.seed == 0 and split.block_size is None


@pytest.mark.parametrize("n", [5, 6, 7, 8, 11, 97])
def test_small_splits_have_every_part(n):
    split = split_regions(IDS[:n], city="NY", task="Pop", seed=1)
    sizes = [len(split.train), len(split.val), len(split.test)]
    assert sum(sizes) == n and min(sizes) >= 1
    assert abs(sizes[0] - 0.6 * n) < 1 and abs(sizes[1] - 0.2 * n) < 1 and abs(sizes[2] - 0.2 * n) < 1


def test_deterministic_and_independent_of_input_order():
    a = split_regions(IDS, city="NY", task="Pop", seed=3)
    shuffled = list(np.random.default_rng(7).permutation(IDS))
    b = split_regions(shuffled, city="NY", task="Pop", seed=3)
    assert a == b and a.digest == b.digest


def test_depends_on_seed_city_and_task():
    base = split_regions(IDS, city="NY", task="Pop", seed=0)
    for other in (split_regions(IDS, city="NY", task="Pop", seed=1),
                  split_regions(IDS, city="BJ", task="Pop", seed=0),
                  split_regions(IDS, city="NY", task="Crime", seed=0)):
        assert set(other.test) != set(base.test)
        assert other.digest != base.digest


def test_digest_is_stable_sha256_of_the_ids():
    split = split_regions(IDS[:10], city="NY", task="Pop", seed=0)
    assert len(split.digest) == 64
    assert Split.from_dict(split.to_dict()) == split
    edited = split.to_dict() | {"test": list(split.test[:-1])}
    with pytest.raises(SplitError, match="digest"):
        Split.from_dict(edited)


def test_restrict_drops_unavailable_regions_and_counts_them():
    split = split_regions(IDS, city="NY", task="Pop", seed=0)
    available = set(IDS[::2]) | {"not-in-split"}
    restricted, dropped = split.restrict(available)
    assert dropped == 250
    assert set(restricted.train) == set(split.train) & available
    assert set(restricted.test) == set(split.test) & available
    assert "not-in-split" not in restricted.train + restricted.val + restricted.test
    assert restricted.digest != split.digest
    same, none_dropped = split.restrict(IDS)
    assert none_dropped == 0 and same == split


def test_restrict_to_too_few_regions_is_a_clear_error():
    split = split_regions(IDS[:10], city="NY", task="Pop", seed=0)
    with pytest.raises(SplitError, match="empty"):
        split.restrict(split.train)


def test_indices_map_ids_to_rows():
    split = split_regions(IDS[:20], city="NY", task="Pop", seed=0)
    order = list(reversed(IDS[:20]))
    train, val, test = split.indices(order)
    assert [order[i] for i in test] == list(split.test)
    with pytest.raises(SplitError, match="no row"):
        split.indices(IDS[:5])


def test_too_few_regions_and_unknown_strategy_raise_value_errors():
    with pytest.raises(ValueError, match="at least 5"):
        split_regions(IDS[:4], city="NY", task="Pop", seed=0)
    with pytest.raises(ValueError, match="did you mean 'spatial-block'"):
        split_regions(IDS, city="NY", task="Pop", seed=0, strategy="spatial_block")
    with pytest.raises(ValueError, match="duplicates"):
        split_regions(IDS[:10] + IDS[:1], city="NY", task="Pop", seed=0)
    with pytest.raises(ValueError, match="grid"):
        split_regions(IDS, city="NY", task="Pop", seed=0, strategy="spatial-block")


def test_spatial_blocks_are_whole_contiguous_squares():
    ids, grid = _grid(30)
    split = split_regions(ids, city="NY", task="Pop", seed=0, strategy="spatial-block", grid=grid)
    side = split.block_size
    assert side is not None and side > 1
    part_of = {r: k for k, part in enumerate((split.train, split.val, split.test)) for r in part}
    assert len(part_of) == len(ids)  # covering and (dict) disjoint
    blocks: dict[tuple[int, int], set[int]] = {}
    for r, (row, col) in zip(ids, grid, strict=True):
        blocks.setdefault((row // side, col // side), set()).add(part_of[r])
    assert all(len(parts) == 1 for parts in blocks.values())  # a block never straddles parts
    assert len(blocks) >= MIN_BLOCKS
    sizes = np.array([len(split.train), len(split.val), len(split.test)]) / len(ids)
    assert np.allclose(sizes, [0.6, 0.2, 0.2], atol=0.05)


def test_spatial_split_leaks_fewer_neighbours_than_random():
    ids, grid = _grid(30)
    index = {(r, c): i for i, (r, c) in enumerate(grid)}

    def cross_pairs(split: Split) -> int:
        part = {r: k for k, p in enumerate((split.train, split.val, split.test)) for r in p}
        return sum(part[ids[i]] != part[ids[index[(r + 1, c)]]]
                   for i, (r, c) in enumerate(grid) if (r + 1, c) in index)

    spatial = split_regions(ids, city="NY", task="Pop", seed=0, strategy="spatial-block", grid=grid)
    random = split_regions(ids, city="NY", task="Pop", seed=0)
    assert cross_pairs(spatial) < cross_pairs(random) / 2


def test_spatial_split_is_order_independent_and_seeded():
    ids, grid = _grid(20)
    perm = np.random.default_rng(0).permutation(len(ids))
    a = split_regions(ids, city="SZ", task="GDP", seed=2, strategy="spatial-block", grid=grid)
    b = split_regions([ids[i] for i in perm], city="SZ", task="GDP", seed=2, strategy="spatial-block",
                      grid=grid[perm])
    c = split_regions(ids, city="SZ", task="GDP", seed=3, strategy="spatial-block", grid=grid)
    assert a == b
    assert a.digest != c.digest


def test_spatial_block_size_override_and_too_large_block():
    ids, grid = _grid(20)
    split = split_regions(ids, city="NY", task="Pop", seed=0, strategy="spatial-block", grid=grid, block_size=2)
    assert split.block_size == 2
    with pytest.raises(ValueError, match="too few blocks"):
        split_regions(ids, city="NY", task="Pop", seed=0, strategy="spatial-block", grid=grid, block_size=20)


def test_split_parts_are_canonical_sorted_tuples():
    a = Split(("b", "a", "c"), ("e",), ("d",), "random", 0)
    b = Split(("c", "b", "a"), ("e",), ("d",), "random", 0)
    assert a.train == ("a", "b", "c") and a == b and a.digest == b.digest
    with pytest.raises(ValueError, match="disjoint"):
        Split(("a", "b"), ("b",), ("c",), "random", 0)
