"""The caption pipeline's stages, run across worker processes (docs/architecture.md#caption-workers).

A caption set is built in four stages:

1. ``captions``: per image, every captioner's candidates (``describe``) and its refinement up to the
   scoring (crops, local captions, phrases: ``Refiner.plan``);
2. ``refinement``: per image, the phrases scored, rejected ones deleted, the captions rewritten
   (``Refiner.apply``), and the candidates parsed for CAPTURE;
3. ``phrase embeddings``: every phrase CAPTURE's soft matching compares, embedded by the sentence model;
4. ``consensus``: per image, the CAPTURE matrix of its candidates and the pick (``consensus.py``).

Stages 1, 2 and 4 are per image: contiguous shards of the sorted image ids go to worker processes
(``processes.worker_pool``) and the results come back in image order, so the files are written in the
order one process writes them. Each worker builds its backends once (captioners, phrase scorer,
CAPTURE with its sentence model) and runs torch on one thread, as the single process does.

Two caches make a result depend on more than its image: the phrase scorer's text features and
CAPTURE's sentence vectors. A vector's last bits depend on the batch it was computed in (padding
length, kernel blocking), and one process computes each phrase's vector in the batch of the first
call that needed it. So the parent replays that order from the phrases stage 1 (for the scorer) and
stage 2 (for CAPTURE) found, computes exactly those batches (the scorer's small text tower here, the
sentence model's batches in the workers), and the next stage finds every vector it needs in its cache.
That is why the files are the same bytes for any number of workers, not merely close.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from urbanln_bench.captions.captioners import build_captioner
from urbanln_bench.errors import UserError

if TYPE_CHECKING:
    from urbanln_bench.captions.capture import CaptureGraph
    from urbanln_bench.captions.refine import RefinementPlan, StageTimes

Progress = Callable[[str, int], Callable[[int], None]]

# A spawned worker's start (a fresh interpreter, torch, the phrase scorer, MiniLM) costs about 6 CPU
# seconds, what one process spends on some 60 tiny-twin images; by default a worker gets at least this many.
MIN_IMAGES_PER_WORKER = 100
SHARDS_PER_WORKER = 4  # smaller shards: an even finish and a progress bar that moves
CONSENSUS_STAGE = "consensus (CAPTURE pairs)"
STEAL_WHILE_WORKERS_START = True  # see _Pool; the tests turn it off to make the workers compute their shards


class Backends:
    """The pipeline's components, built once per process from a config."""

    def __init__(self, config: Any, ids: Sequence[str], progress: Progress | None = None) -> None:
        from urbanln_bench.captions.refine import StageTimes

        self.times = StageTimes()
        self.captioners = []
        for spec in config.captioners:
            backend = spec.partition(":")[0]
            options: dict[str, Any] = {}
            if backend == "synthetic":
                options["seed"] = config.seed
            elif backend == "file":
                options["known_image_ids"] = list(ids)
            self.captioners.append((spec, build_captioner(spec, **options)))
        names = [c.name for _, c in self.captioners]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise UserError(f"captioner(s) {', '.join(duplicated)} listed twice; each captioner once "
                            "(ask for more candidates with candidates_per_captioner)")
        self.refiner = None
        if config.refinement:
            from urbanln_bench.captions.factual import build_phrase_extractor
            from urbanln_bench.captions.phrase_scoring import build_phrase_scorer
            from urbanln_bench.captions.refine import Refiner, build_segmenter

            segmenter = build_segmenter(config.segmenter)
            extractor = build_phrase_extractor(config.phrase_extractor)
            scorer_options = {"progress": progress} if config.phrase_scorer.startswith("clip") else {}
            scorer = build_phrase_scorer(config.phrase_scorer, config.threshold, **scorer_options)
            self.refiner = Refiner(segmenter, scorer, extractor, self.times)
        self.capture = None
        if config.consensus:
            from urbanln_bench.captions.capture import CaptureScorer

            self.capture = CaptureScorer()

    def timed_by(self, times: StageTimes) -> None:
        """Count the stages' seconds in ``times`` from now on (one tally per shard, summed by the parent)."""
        self.times = times
        if self.refiner is not None:
            self.refiner.times = times

    @property
    def embeds_phrases(self) -> bool:
        return self.capture is not None and self.capture.soft_matching and self.capture.embedder is not None


@dataclass
class ImageDraft:
    """Stage 1's result for one image: the raw lines and, per captioner, its candidates and refinement plan."""

    image_id: str
    raw: list[dict[str, Any]]
    captioners: list[tuple[list[str], RefinementPlan | None]]  # per backends.captioners entry

    def text_queries(self) -> list[tuple[str, ...]]:
        """The phrase lists stage 2 hands the phrase scorer's text encoder, in order."""
        return [q for _, plan in self.captioners if plan is not None for q in plan.text_queries()]


@dataclass
class ImageCaptions:
    """Stage 2's result for one image: the raw and refined lines, the candidates, their CAPTURE parses."""

    image_id: str
    raw: list[dict[str, Any]]
    refined: list[dict[str, Any]]
    candidates: list[tuple[str, int, str]]  # (captioner, index, final caption)
    graphs: list[CaptureGraph] | None  # parsed candidates, when consensus compares two or more

    def phrases(self) -> list[str]:
        """What CAPTURE's soft matching embeds for this image (every element of every candidate)."""
        return [p for g in self.graphs or () for p in g.phrases()]


# -- stage 1: captions -------------------------------------------------------------------------------


def draft_image(backends: Backends, config: Any, image: np.ndarray, image_id: str,
                graph: dict[str, Any] | None) -> ImageDraft:
    """Every captioner's candidates of one image, and its refinement up to the phrase scoring."""
    from urbanln_bench.captions.synthetic_captioner import stable_rng

    times = backends.times
    crops = backends.refiner.crops(image) if backends.refiner else None
    raw_lines: list[dict[str, Any]] = []
    drafts: list[tuple[list[str], RefinementPlan | None]] = []
    for spec, captioner in backends.captioners:
        rng = stable_rng(spec, image_id, config.seed)
        with times.stage("describe", config.candidates_per_captioner):
            raw = captioner.describe(image, image_id, graph, config.candidates_per_captioner, rng)
        raw = [str(c).strip() for c in raw]
        if not raw or not all(raw):
            raise UserError(f"captioner '{spec}' returned {'no' if not raw else 'an empty'} caption for image "
                            f"'{image_id}'; every candidate must be non-empty")
        for index, caption in enumerate(raw):
            raw_lines.append({"image_id": image_id, "captioner": captioner.name, "candidate": index,
                              "caption": caption})
        plan = backends.refiner.plan(captioner, image, image_id, graph, raw, crops) if backends.refiner else None
        drafts.append((raw, plan))
    return ImageDraft(image_id, raw_lines, drafts)


# -- stage 2: refinement ------------------------------------------------------------------------------


def text_batches(backends: Backends, drafts: Iterable[ImageDraft]) -> list[list[str]]:
    """The phrase scorer's text batches one process would run, image after image (none for a scorer
    whose features do not depend on the order, such as OWLv2, which encodes each image's queries alone)."""
    scorer = backends.refiner.scorer if backends.refiner is not None else None
    if scorer is None or not hasattr(scorer, "text_batches"):
        return []
    return scorer.text_batches((q for draft in drafts for q in draft.text_queries()),
                               scorer.cached_text_features())


def refine_image(backends: Backends, config: Any, image: np.ndarray | None, draft: ImageDraft) -> ImageCaptions:
    """One image's candidates refined (scored, filtered, rewritten) and parsed for CAPTURE."""
    refined_lines: list[dict[str, Any]] = []
    candidates: list[tuple[str, int, str]] = []
    for (_, captioner), (raw, plan) in zip(backends.captioners, draft.captioners, strict=True):
        if backends.refiner is not None and plan is not None:
            for index, result in enumerate(backends.refiner.apply(captioner, image, draft.image_id, plan)):
                refined_lines.append({"image_id": draft.image_id, "captioner": captioner.name, "candidate": index,
                                      "caption": result.caption, **result.as_dict()})
                candidates.append((captioner.name, index, result.caption))
        else:
            for index, caption in enumerate(raw):
                refined_lines.append({"image_id": draft.image_id, "captioner": captioner.name, "candidate": index,
                                      "caption": caption})
                candidates.append((captioner.name, index, caption))
    graphs = None
    if backends.capture is not None and len(candidates) > 1:
        with backends.times.stage(CONSENSUS_STAGE, 0):  # parsing is CAPTURE's first step; pairs count in stage 4
            graphs = [backends.capture.parse(c[2]) for c in candidates]
    return ImageCaptions(draft.image_id, draft.raw, refined_lines, candidates, graphs)


# -- stage 3: the phrase embeddings ------------------------------------------------------------------


def embedding_batches(backends: Backends, images: Iterable[ImageCaptions]) -> list[list[str]]:
    """The sentence-model batches one process would run, image after image from an empty cache."""
    if not backends.embeds_phrases:
        return []
    embedder = backends.capture.embedder
    seen: set[str] = set()
    out: list[list[str]] = []
    for image in images:
        if image.graphs is None:
            continue
        batches = embedder.batches(image.phrases(), seen)
        for batch in batches:
            seen.update(batch)
        out += batches
    return out


# -- stage 4: consensus ------------------------------------------------------------------------------


def select_image(backends: Backends, config: Any, image: ImageCaptions) -> tuple[dict[str, Any], int]:
    """The selected line of one image, and the CAPTURE pairs it took."""
    from urbanln_bench.captions.consensus import consensus_scores, select_at_random

    texts = [c[2] for c in image.candidates]
    pairs = 0
    if backends.capture is not None and image.graphs is not None:
        pairs = len(texts) * (len(texts) - 1)
        with backends.times.stage(CONSENSUS_STAGE, pairs):
            scores = consensus_scores(backends.capture.graph_matrix(image.graphs))
        chosen, method = int(np.argmax(scores)), "consensus"
        score_list = [round(float(s), 6) for s in scores]
    elif backends.capture is not None:
        chosen, method, score_list = 0, "consensus", [1.0]
    else:
        chosen, method, score_list = select_at_random(texts, image.image_id, config.seed).index, "random", None
    name, index, caption = image.candidates[chosen]
    return ({"image_id": image.image_id, "captioner": name, "candidate": index, "caption": caption,
             "selection": method, "scores": score_list}, pairs)


# -- running the stages, in this process or across workers -------------------------------------------


@dataclass
class StagesResult:
    """The three files' lines in image order, with the counts and the stages' timings."""

    raw: list[dict[str, Any]]
    refined: list[dict[str, Any]]
    selected: list[dict[str, Any]]
    capture_pairs: int
    times: StageTimes
    wall_seconds: dict[str, float]
    workers: int
    spawned_shards: int = 0  # shards computed by spawned workers (the rest by the calling process)


def shards(items: Sequence[Any], workers: int) -> list[Sequence[Any]]:
    """Contiguous runs of ``items``, about ``SHARDS_PER_WORKER`` per worker (one item each in this process)."""
    size = 1 if workers <= 1 else max(1, math.ceil(len(items) / (workers * SHARDS_PER_WORKER)))
    return [items[start:start + size] for start in range(0, len(items), size)]


def workers_for(requested: int, images: int, chosen: bool = False) -> int:
    """The workers for ``images``: no more than images; left to the default (``chosen`` False), no more
    than sets of ``MIN_IMAGES_PER_WORKER`` worth a worker's start."""
    return max(1, min(requested, images if chosen else images // MIN_IMAGES_PER_WORKER))


class _Here:
    """The stages in this process, on the backends the pipeline built for its key."""

    def __init__(self, backends: Backends, config: Any, city: Any) -> None:
        self.backends, self.config, self.city = backends, config, city

    def map(self, function: Callable[..., Any], tasks: Sequence[Any]) -> Iterator[Any]:
        for task in tasks:
            yield function(task, self)


def run_stages(city: Any, config: Any, ids: Sequence[str], backends: Backends, workers: int,
               progress: Progress | None = None) -> StagesResult:
    """Stages 1–3 over ``ids`` with ``workers`` processes (1: here, on ``backends``)."""
    from urbanln_bench.captions.refine import StageTimes

    graphs = city.scene_graphs(config.imagery) if city.source == "synthetic" else {}
    times = StageTimes()
    wall: dict[str, float] = {}
    what = f"{len(ids)} {config.imagery} images of {city.name}" + (f" ({workers} workers)" if workers > 1 else "")

    def bar(description: str, total: int) -> Callable[[int], None] | None:
        return progress(description, total) if progress and total else None

    def run(name: str, description: str, function: Callable[..., Any], tasks: Sequence[Any], runner: Any,
            sizes: Callable[[Any], int]) -> list[Any]:
        started = time.perf_counter()
        advance = bar(description, sum(sizes(t) for t in tasks))
        out = []
        for task, (result, task_times) in zip(tasks, runner.map(function, tasks), strict=True):
            out.append(result)
            _add_times(times, task_times)
            if advance:
                advance(sizes(task))
        wall[name] = round(time.perf_counter() - started, 3)
        return out

    def stages(runner: Any) -> StagesResult:
        draft_tasks = [[(i, graphs.get(i)) for i in shard] for shard in shards(ids, workers)]
        drafts = [d for shard in run("captions", f"captioning {what}", _draft_shard, draft_tasks, runner, len)
                  for d in shard]
        text = _embed_text(backends, text_batches(backends, drafts), times)
        refine_tasks = [[(d, {p: text[p] for q in d.text_queries() for p in q} if text else None) for d in shard]
                        for shard in shards(drafts, workers)]
        captioned = [image for shard in run("refinement", f"refining the captions of {what}", _refine_shard,
                                            refine_tasks, runner, len) for image in shard]
        batches = embedding_batches(backends, captioned)
        vectors: dict[str, np.ndarray] = {}
        if batches:
            embedded = run("phrase embeddings", f"embedding the CAPTURE phrases of {what}", _embed_batch, batches,
                           runner, len)
            for batch, batch_vectors in zip(batches, embedded, strict=True):
                vectors.update(zip(batch, batch_vectors, strict=True))
        consensus_tasks = [[(image, {p: vectors[p] for p in image.phrases()} if batches else None) for image in shard]
                           for shard in shards(captioned, workers)]
        selected = [line for shard in run("consensus", f"choosing captions by CAPTURE consensus for {what}",
                                          _select_shard, consensus_tasks, runner, len) for line in shard]
        return StagesResult([r for image in captioned for r in image.raw],
                            [r for image in captioned for r in image.refined],
                            [line for line, _ in selected], sum(pairs for _, pairs in selected), times, wall,
                            workers)

    here = _Here(backends, config, city)
    if workers <= 1:
        return stages(here)
    from urbanln_bench.processes import worker_pool

    with worker_pool(workers - 1) as pool:
        runner = _Pool(pool, workers - 1, (city, config, list(ids)), here)
        result = stages(runner)
        result.spawned_shards = runner.delivered
        pool.terminate()  # what is left in its queue are shards this process took over
    return result


class _Pool:
    """The stages in ``spawned`` worker processes and in this one, which is the last worker.

    This process has its backends loaded already (the key needed them) and works while the spawned
    workers start up (a fresh interpreter, torch and the models each: seconds, more on a loaded
    machine). The workers take shards from the front of the queue, two each in flight; this process
    takes the next one whenever it is free. While no worker has delivered anything yet (still
    starting), this process also takes over the shards queued for them instead of waiting: the result
    is the same whoever computes it. Results are yielded in shard order.
    """

    def __init__(self, pool: Any, spawned: int, setup: tuple[Any, Any, list[str]], here: _Here) -> None:
        self.pool, self.spawned, self.setup, self.here = pool, spawned, setup, here
        self.delivered = 0  # shards the spawned workers computed

    def map(self, function: Callable[..., Any], tasks: Sequence[Any]) -> Iterator[Any]:
        results: dict[int, Any] = {}
        in_flight: dict[int, Any] = {}
        next_task = emitted = 0
        while emitted < len(tasks):
            while next_task < len(tasks) and len(in_flight) < 2 * self.spawned:
                in_flight[next_task] = self.pool.apply_async(_in_worker, ((function, tasks[next_task], self.setup),))
                next_task += 1
            if next_task < len(tasks):
                results[next_task] = function(tasks[next_task], self.here)
                next_task += 1
            elif emitted not in results:
                if STEAL_WHILE_WORKERS_START and not self.delivered and not in_flight[emitted].ready():
                    del in_flight[emitted]  # its late result is dropped
                    results[emitted] = function(tasks[emitted], self.here)
                else:
                    in_flight[emitted].wait()
            for index in [i for i, result in in_flight.items() if result.ready()]:
                results[index] = in_flight.pop(index).get()
                self.delivered += 1
            while emitted in results:
                yield results.pop(emitted)
                emitted += 1


def _add_times(total: StageTimes, part: StageTimes) -> None:
    for name, seconds in part.seconds.items():
        total.seconds[name] = total.seconds.get(name, 0.0) + seconds
        total.items[name] = total.items.get(name, 0) + part.items[name]


# -- the worker side ---------------------------------------------------------------------------------

# A worker process's backends, built on its first task and kept for the next ones (models load once
# per worker, not per image). It lives as long as the worker, which serves one caption set.
_WORKER_BACKENDS: dict[str, Backends] = {}


def _in_worker(job: tuple[Callable[..., Any], Any, tuple[Any, Any, list[str]]]) -> Any:
    function, task, setup = job
    city, config, ids = setup
    backends = _WORKER_BACKENDS.get("backends")
    if backends is None:
        import torch

        torch.set_num_threads(1)  # as the single process (pipeline.run_pipeline): same kernels, same bits
        backends = _WORKER_BACKENDS["backends"] = Backends(config, ids)
    return function(task, _Here(backends, config, city))


def _tally(here: _Here) -> StageTimes:
    from urbanln_bench.captions.refine import StageTimes

    times = StageTimes()
    here.backends.timed_by(times)
    return times


def _draft_shard(task: list[tuple[str, dict | None]], here: _Here) -> tuple[list[ImageDraft], StageTimes]:
    times = _tally(here)
    return [draft_image(here.backends, here.config, here.city.load_image(image_id), image_id, graph)
            for image_id, graph in task], times


def _embed_text(backends: Backends, batches: list[list[str]], times: StageTimes) -> dict[str, np.ndarray]:
    """The phrase scorer's text features of every batch, here: a small text tower, cheaper than shipping
    the work out (with what the scorer had cached before, from its calibration)."""
    if not batches:
        return {}
    scorer = backends.refiner.scorer
    out = scorer.cached_text_features()
    with times.stage("phrase scoring", 0):
        for batch in batches:
            out.update(zip(batch, scorer.embed_text_batch(batch), strict=True))
    return out


def _refine_shard(task: list[tuple[ImageDraft, dict[str, np.ndarray] | None]], here: _Here
                  ) -> tuple[list[ImageCaptions], StageTimes]:
    times = _tally(here)
    out = []
    for draft, text in task:
        if text:
            here.backends.refiner.scorer.remember_text(text)
        image = here.city.load_image(draft.image_id) if here.backends.refiner is not None else None
        out.append(refine_image(here.backends, here.config, image, draft))
    return out, times


def _embed_batch(batch: list[str], here: _Here) -> tuple[np.ndarray, StageTimes]:
    times = _tally(here)
    with times.stage(CONSENSUS_STAGE, 0):
        return here.backends.capture.embedder.embed_batch(batch), times


def _select_shard(task: list[tuple[ImageCaptions, dict[str, np.ndarray] | None]], here: _Here
                  ) -> tuple[list[tuple[dict[str, Any], int]], StageTimes]:
    times = _tally(here)
    out = []
    for image, vectors in task:
        if vectors:
            here.backends.capture.embedder.remember(vectors)
        out.append(select_image(here.backends, here.config, image))
    return out, times
