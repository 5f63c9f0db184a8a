"""Caption pipeline speed on CPU: captions/s of each stage and CAPTURE pairs/s (issue item 8).

One tiny-twin run (two simulated captioners, two candidates each, the tiny phrase grounder as the
``clip:tiny`` scorer, refinement and consensus on) with one process and with two workers; the
per-stage rates come from the run's own timers and land in ``extra_info``. The timed run builds its
backends afresh (cold CAPTURE embedding cache), so on 16 images the consensus rate is mostly
sentence-embedding time, and two workers pay their start-up (a fresh interpreter and its models each).
``benchmarks/caption_workers.py`` measures whole twins. Run: pytest benchmarks/test_bench_captions.py --benchmark-enable
"""

from __future__ import annotations

import pytest

from urbanln_bench.captions.pipeline import PipelineConfig, run_pipeline
from urbanln_bench.data.loader import CityData
from urbanln_bench.specs import get_city
from urbanln_bench.synth.twin import ensure_twin

CONFIG = PipelineConfig(captioners=("synthetic:qwen2.5-vl-7b", "synthetic:llama-adapter-v2"),
                        phrase_scorer="clip:smoke", limit=16)


@pytest.mark.parametrize("workers", [1, 2])
def test_caption_pipeline_stage_rates(benchmark, workers):
    city = CityData.open(ensure_twin(get_city("NY"), "tiny"))
    run_pipeline(city, CONFIG)  # warm: phrase grounder, its calibration, CAPTURE models

    def build():
        return run_pipeline(city, CONFIG, force=True, workers=workers)  # rebuilt in place, atomically

    run = benchmark.pedantic(build, rounds=1, iterations=1)
    assert not run.reused
    for stage, rate in run.info["speed"].items():
        benchmark.extra_info[f"{stage} per s"] = rate["per_second"]
    for stage, seconds in run.info["stage_seconds"].items():
        benchmark.extra_info[f"{stage} images per s"] = round(run.info["counts"]["images"] / seconds, 2)
    benchmark.extra_info["workers"] = run.info["workers"]
    benchmark.extra_info["images"] = run.info["counts"]["images"]
    benchmark.extra_info["capture_pairs"] = run.info["counts"]["capture_pairs"]
