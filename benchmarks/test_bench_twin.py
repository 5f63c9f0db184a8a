"""Twin generation time (NY and BJ at `small`) and loader throughput.

    python -m pytest benchmarks/test_bench_twin.py --benchmark-enable
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from urbanln_bench.data.loader import CityData
from urbanln_bench.specs import get_city
from urbanln_bench.synth.scales import get_scale
from urbanln_bench.synth.twin import ensure_twin, generate_twin


@pytest.mark.parametrize("city", ["NY", "BJ"])
def test_twin_generation_small(benchmark, city):
    spec = get_city(city)

    def generate():
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "twin"
            out.mkdir()
            return generate_twin(spec, get_scale("small"), out)

    meta = benchmark.pedantic(generate, rounds=1, iterations=1)
    benchmark.extra_info.update(meta["counts"])


def test_loader_images_per_second(benchmark):
    data = CityData.open(ensure_twin(get_city("NY"), "small"))
    view = data.unlabelled()
    ids = view.image_ids("SI") + view.image_ids("SV")

    def load_all():
        return sum(len(batch.ids) for batch in view.iter_images(ids, batch_size=64))

    n = benchmark.pedantic(load_all, rounds=3, iterations=1)
    benchmark.extra_info["images"] = n
    benchmark.extra_info["images_per_s"] = n / benchmark.stats.stats.mean
