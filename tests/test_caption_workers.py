"""Caption sets built across worker processes (docs/architecture.md#caption-workers): the same bytes as one process."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest

from urbanln_bench.captions import stages
from urbanln_bench.captions.capture import CaptureScorer
from urbanln_bench.captions.consensus import consensus_scores
from urbanln_bench.captions.pipeline import FILES, PipelineConfig, run_pipeline
from urbanln_bench.captions.stages import MIN_IMAGES_PER_WORKER, SHARDS_PER_WORKER, shards, workers_for
from urbanln_bench.data.loader import CityData
from urbanln_bench.errors import UserError
from urbanln_bench.processes import WORKERS_ENV, resolve_workers, workers_for_this_run

TWO = ("synthetic:qwen2.5-vl-7b", "synthetic:llama-adapter-v2")
# 16 street views (8 shards of two for two workers), refinement and consensus on, two candidates per
# captioner, so every image has four candidates to score against each other
CONFIG = PipelineConfig(imagery="SV", captioners=TWO, phrase_scorer="clip:smoke", limit=16)
TIMED = ("speed", "stage_seconds", "seconds_total", "created", "workers", "spawned_shards")  # config.json fields that may differ


@pytest.fixture(scope="module")
def city(tiny_ny: Path, tmp_path_factory) -> CityData:
    """A private copy of the NY tiny twin without its caption sets (the tests rebuild one in place)."""
    import shutil

    copy = tmp_path_factory.mktemp("caption-workers") / "NY"
    shutil.copytree(tiny_ny, copy, ignore=lambda folder, names: ["captions"] if Path(folder) == tiny_ny else [])
    return CityData.open(copy)


@pytest.fixture(scope="module")
def one_then_two(city):
    """The caption set built by one process, then rebuilt in place by two workers, with the two-worker run's bars."""
    one = run_pipeline(city, CONFIG, workers=1)
    files_one = {name: (one.folder / f"{name}.jsonl").read_bytes() for name in FILES}
    files_one["config"] = (one.folder / "config.json").read_bytes()
    bars: dict[str, list[int]] = {}

    def progress(description: str, total: int):
        bars[description] = [total, 0]

        def advance(n: int) -> None:
            bars[description][1] += n

        return advance

    with pytest.MonkeyPatch.context() as patch:  # the spawned worker computes its shards, however slow its start
        patch.setattr(stages, "STEAL_WHILE_WORKERS_START", False)
        two = run_pipeline(city, CONFIG, progress=progress, force=True, workers=2)
    return one, files_one, two, bars


def test_two_workers_write_the_bytes_one_process_writes(one_then_two):
    one, files_one, two, _ = one_then_two
    assert (one.info["workers"], two.info["workers"]) == (1, 2)
    assert one.info["spawned_shards"] == 0 and two.info["spawned_shards"] >= 2 * 3  # two shards of each stage
    assert two.key == one.key and two.folder == one.folder
    for name in FILES:
        assert (two.folder / f"{name}.jsonl").read_bytes() == files_one[name], f"{name}.jsonl differs"
    info_one, info_two = json.loads(files_one["config"]), json.loads((two.folder / "config.json").read_text())
    assert {k: v for k, v in info_two.items() if k not in TIMED} == {k: v for k, v in info_one.items() if k not in TIMED}
    # what the comparison covered: refined phrase scores, CAPTURE scores and a real choice among four candidates
    selected = two.read("selected")
    assert len(selected) == CONFIG.limit and all(len(line["scores"]) == 4 for line in selected)
    assert len({(line["captioner"], line["candidate"]) for line in selected}) > 1
    assert any(line["phrases"] for line in two.read("refined"))


def test_consensus_is_what_one_scorer_computes_image_after_image(one_then_two):
    """The workers embed each phrase in the batch one process would have: the scores match a single
    CAPTURE scorer going through the images in order (its sentence-vector cache filling as it goes) exactly."""
    _, _, two, _ = one_then_two
    refined = two.read("refined")
    scorer = CaptureScorer()
    for line in two.read("selected"):
        candidates = [r for r in refined if r["image_id"] == line["image_id"]]
        scores = consensus_scores(scorer.matrix([c["caption"] for c in candidates]))
        assert line["scores"] == [round(float(s), 6) for s in scores]
        best = candidates[int(np.argmax(scores))]
        assert (line["captioner"], line["candidate"]) == (best["captioner"], best["candidate"])


def test_each_stage_shows_a_progress_bar_that_completes(one_then_two):
    _, _, _, bars = one_then_two
    stages = {d.split(" ")[0]: d for d in bars}
    assert set(stages) == {"captioning", "refining", "embedding", "choosing"}, sorted(bars)
    assert bars[stages["captioning"]][0] == bars[stages["refining"]][0] == bars[stages["choosing"]][0] == CONFIG.limit
    assert all(total == done for total, done in bars.values()), bars
    assert "(2 workers)" in stages["captioning"]


def test_shards_are_contiguous_and_cover_every_image_once():
    ids = [f"i{k:03d}" for k in range(37)]
    assert [list(part) for part in shards(ids, 1)] == [[i] for i in ids]  # one process: a bar step per image
    for workers in (2, 3, 8):
        parts = shards(ids, workers)
        assert [i for part in parts for i in part] == ids
        assert workers <= len(parts) <= workers * SHARDS_PER_WORKER
    # left to the cores, a worker needs MIN_IMAGES_PER_WORKER images; asked for, as many as there are images
    assert workers_for(8, 3) == 1 and workers_for(8, 2 * MIN_IMAGES_PER_WORKER) == 2 and workers_for(1, 500) == 1
    assert workers_for(2, 16, chosen=True) == 2 and workers_for(8, 3, chosen=True) == 3


def test_worker_count_comes_from_the_argument_the_run_the_environment_or_the_cores(monkeypatch):
    monkeypatch.delenv(WORKERS_ENV, raising=False)
    from urbanln_bench.processes import available_cores, workers_chosen

    assert resolve_workers() == available_cores() and not workers_chosen() and workers_chosen(1)
    monkeypatch.setenv(WORKERS_ENV, "3")
    assert resolve_workers() == 3 and workers_chosen()
    with workers_for_this_run(5):
        assert resolve_workers() == 5 and resolve_workers(2) == 2
    assert resolve_workers() == 3
    for bad in ("two", "0"):
        monkeypatch.setenv(WORKERS_ENV, bad)
        with pytest.raises(UserError, match=WORKERS_ENV):
            resolve_workers()
    with pytest.raises(UserError, match="at least 1"), workers_for_this_run(0):
        pass


def test_a_pool_worker_starts_no_pool_of_its_own(monkeypatch):
    monkeypatch.setattr(multiprocessing.current_process(), "daemon", True, raising=False)
    assert resolve_workers(4) == 1
