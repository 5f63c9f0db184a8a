"""Harness overheads:

- embedding throughput of the sealed embed vs the raw model forward, both from the same files on disk;
- probe time per cell for 5 seeds;
- wall time to re-run a finished cell (CLI, start-up dominated).

    python -m pytest benchmarks/test_bench_harness.py --benchmark-enable
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from urbanln_bench.data.loader import CityData
from urbanln_bench.embed import embed_city, preprocess
from urbanln_bench.method import FitContext, get_method
from urbanln_bench.specs import get_city
from urbanln_bench.synth.twin import ensure_twin


@pytest.fixture(scope="module")
def ny_small() -> CityData:
    return CityData.open(ensure_twin(get_city("NY"), "small"))


@pytest.fixture(scope="module")
def random_resnet(ny_small):
    method = get_method("random-features")()
    context = FitContext(seed=0, device="cpu", work_dir=Path("/tmp"), scale="small")
    method.fit(ny_small.unlabelled(), "SI", context)
    return method, context


def test_embed_harness_si(benchmark, ny_small, random_resnet):
    method, context = random_resnet
    result = benchmark.pedantic(lambda: embed_city(method, ny_small, "SI", context), rounds=3, iterations=1)
    benchmark.extra_info["images_per_s"] = len(result.region_ids) / benchmark.stats.stats.mean


def test_embed_raw_forward_si(benchmark, ny_small, random_resnet):
    """The same images, read from the same files, through the bare model: the floor for the harness."""
    import torch
    from PIL import Image

    method, _ = random_resnet
    paths = [ny_small.image_path(i) for i in ny_small.satellite_ids()]

    def raw():
        out = []
        with torch.no_grad():
            for start in range(0, len(paths), 64):
                images = [np.asarray(Image.open(p).convert("RGB")) for p in paths[start:start + 64]]
                out.append(method.model(preprocess(images, method.input_size, method.mean, method.std)))
        return torch.cat(out)

    result = benchmark.pedantic(raw, rounds=3, iterations=1)
    benchmark.extra_info["images_per_s"] = len(result) / benchmark.stats.stats.mean


def test_probe_cell_five_seeds(benchmark, ny_small, random_resnet):
    from urbanln_bench.probe import fit_probe
    from urbanln_bench.splits import split_regions

    method, context = random_resnet
    emb = embed_city(method, ny_small, "SI", context)
    y = ny_small.indicator("Pop")
    labelled = [r for r, v in zip(ny_small.regions.ids, y, strict=True) if np.isfinite(v)]

    def five_seeds():
        for seed in range(5):
            split = split_regions(labelled, city="NY", task="Pop", seed=seed)
            fit_probe(emb.vectors, y, split.indices(emb.region_ids), seed=seed)

    benchmark.pedantic(five_seeds, rounds=1, iterations=1)


def test_rerun_finished_cell(benchmark, tmp_path):
    args = [sys.executable, "-m", "urbanln_bench.cli", "run", "--method", "color-histogram", "--city", "NY",
            "--task", "Pop", "--imagery", "SI", "--results", str(tmp_path / "results")]
    subprocess.run(args, check=True, capture_output=True)
    result = benchmark.pedantic(lambda: subprocess.run(args, check=True, capture_output=True, text=True),
                                rounds=3, iterations=1)
    assert "0 record(s) written, 1 reused" in result.stderr
