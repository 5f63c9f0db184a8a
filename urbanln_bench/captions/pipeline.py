"""The caption pipeline for one city and imagery (docs/methods.md#urbanln, UrbanLN data level), cached with the data.

Multi-captioner long captions (``candidates_per_captioner`` per captioner) → divide-and-conquer
refinement (``refine.py``) → consensus selection by CAPTURE (``consensus.py``). The result lives
beside the city's data, ``<city>/captions/<key>/``:

- ``raw.jsonl``: every candidate as the captioner wrote it;
- ``refined.jsonl``: the same candidates after refinement (equal to raw when refinement is off),
  with the filtered overall caption and each judged phrase's score and decision;
- ``selected.jsonl``: one caption per image, with every candidate's consensus score;
- ``config.json``: the settings, what the key covers, counts and per-stage speed.

The key hashes every setting (backends and what they load, seeds, thresholds, ablation flags,
CAPTURE's settings) and the input data manifest, so a re-run with the same settings reuses the
folder and any change writes a new one. Folders are written whole or not at all.
UrbanLN, UrbanCLIP and UrbanVLP read the selection with :func:`load_selected_captions`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from urbanln_bench.captions.captioners import DEFAULT_CAPTIONS_PER_IMAGE, PAPER_CAPTIONERS, build_captioner
from urbanln_bench.captions.versions import CAPTIONER_VERSION, PIPELINE_VERSION
from urbanln_bench.errors import UserError

IMAGERY = ("SI", "SV")
FILES = ("raw", "refined", "selected")

Progress = Callable[[str, int], Callable[[int], None]]


@dataclass(frozen=True)
class PipelineConfig:
    """Every setting of the caption pipeline; all of it goes into the cache key.

    ``phrase_scorer``: ``"clip:PROFILE"`` (offline default: the phrase grounder of ``grounding.py``,
    threshold calibrated on held-out pretraining-world images), ``"clip:PROFILE@foundation"`` (the
    foundation CLIP's cosine, for comparison) or ``"owlv2:DIR"``; ``threshold`` overrides the scorer's
    own (calibrated for CLIP, 0.01 for OWLv2). ``refinement``
    False is "w/o Refinement"; ``consensus`` False is "w/o Consensus" (seeded random choice).
    ``limit`` keeps only the first N images (sorted ids): quick looks and tests.
    """

    imagery: str = "SI"
    captioners: tuple[str, ...] = PAPER_CAPTIONERS
    candidates_per_captioner: int = DEFAULT_CAPTIONS_PER_IMAGE
    segmenter: str = "colour"
    phrase_extractor: str = "parse"
    phrase_scorer: str = "clip:cpu"
    threshold: float | None = None
    refinement: bool = True
    consensus: bool = True
    seed: int = 0
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.imagery not in IMAGERY:
            raise UserError(f"imagery must be SI or SV, got '{self.imagery}'")
        if not self.captioners:
            raise UserError("the caption pipeline needs at least one captioner")
        if self.candidates_per_captioner < 1:
            raise UserError(f"candidates_per_captioner must be at least 1, got {self.candidates_per_captioner}")
        if self.limit is not None and self.limit < 1:
            raise UserError(f"limit must be at least 1, got {self.limit}")
        if self.threshold is not None and not math.isfinite(self.threshold):
            raise UserError(f"threshold must be a finite number (a phrase is kept when its score is above it), "
                            f"got {self.threshold}")
        if not 0 <= self.seed <= 2**32 - 1:
            raise UserError(f"the caption seed must be between 0 and {2**32 - 1}, got {self.seed}")
        object.__setattr__(self, "captioners", tuple(self.captioners))


@dataclass
class CaptionRun:
    """Where a caption set lives and whether this call reused it."""

    folder: Path
    key: str
    reused: bool
    info: dict[str, Any] = field(default_factory=dict)

    def read(self, name: str) -> list[dict[str, Any]]:
        """Records of ``raw``, ``refined`` or ``selected``."""
        return read_records(self.folder / f"{name}.jsonl")


def read_records(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise UserError(f"{path}: caption set file missing; delete the folder {path.parent} and run again")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# -- identity of the inputs ---------------------------------------------------------------------------


def _file_digest(path: Path) -> str:
    from urbanln_bench.data.manifest import file_sha256

    return file_sha256(path)


def _folder_identity(folder: Path) -> dict[str, Any]:
    """A local model folder: its resolved path and the hash of its config.json."""
    config = folder / "config.json"
    return {"path": str(folder.resolve()), "config": _file_digest(config) if config.is_file() else None}


def captioner_identity(spec: str, seed: int) -> dict[str, Any]:
    """What a captioner spec loads: a persona file's contents, a caption file's bytes, a model folder."""
    backend, _, argument = spec.partition(":")
    out: dict[str, Any] = {"spec": spec, "seed": seed}
    if backend == "synthetic":
        from urbanln_bench.captions.personas import load_persona

        out["persona"] = asdict(load_persona(argument or "qwen2.5-vl-7b"))
        out["version"] = CAPTIONER_VERSION
    elif backend == "file" and Path(argument).is_file():
        out["sha256"] = _file_digest(Path(argument))
    elif backend == "transformers" and Path(argument).is_dir():
        out["model"] = _folder_identity(Path(argument))
    return out


def image_ids(city: Any, imagery: str) -> list[str]:
    """Satellite ids (SI) or street-view ids (SV) of a city, sorted."""
    if imagery == "SI":
        return sorted(city.satellite_ids())
    return sorted(i for rid in city.regions.ids for i in city.streetview_ids(rid))


class _Backends:
    """The pipeline's components, built once from a config (and the key inputs they imply)."""

    def __init__(self, city: Any, config: PipelineConfig, ids: list[str], progress: Progress | None) -> None:
        from urbanln_bench.captions.refine import StageTimes

        self.times = StageTimes()
        self.captioners = []
        for spec in config.captioners:
            backend = spec.partition(":")[0]
            options: dict[str, Any] = {}
            if backend == "synthetic":
                options["seed"] = config.seed
            elif backend == "file":
                options["known_image_ids"] = ids
            self.captioners.append((spec, build_captioner(spec, **options)))
        names = [c.name for _, c in self.captioners]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise UserError(f"captioner(s) {', '.join(duplicated)} listed twice; each captioner once "
                            "(ask for more candidates with candidates_per_captioner)")
        self.refiner = None
        inputs: dict[str, Any] = {"captioners": [captioner_identity(s, config.seed) for s in config.captioners]}
        if config.refinement:
            from urbanln_bench.captions.factual import build_phrase_extractor
            from urbanln_bench.captions.phrase_scoring import build_phrase_scorer
            from urbanln_bench.captions.refine import Refiner, build_segmenter

            segmenter = build_segmenter(config.segmenter)
            extractor = build_phrase_extractor(config.phrase_extractor)
            scorer_options = {"progress": progress} if config.phrase_scorer.startswith("clip") else {}
            scorer = build_phrase_scorer(config.phrase_scorer, config.threshold, **scorer_options)
            self.refiner = Refiner(segmenter, scorer, extractor, self.times)
            inputs["segmenter"] = (_folder_identity(Path(config.segmenter.partition(":")[2]))
                                   if config.segmenter.startswith("sam:") else config.segmenter)
            inputs["phrase_extractor"] = (extractor.settings() if hasattr(extractor, "settings")
                                          else config.phrase_extractor)
            inputs["phrase_scorer"] = scorer.settings()
        self.capture = None
        if config.consensus:
            from urbanln_bench.captions.capture import CaptureScorer

            self.capture = CaptureScorer()
            inputs["capture"] = {"weights": asdict(self.capture.weights), "wordnet": self.capture.wordnet is not None,
                                 "sentence_model": str(getattr(self.capture.embedder, "directory", "none")),
                                 "empty_types": self.capture.empty_types}
        self.key_inputs = inputs


def pipeline_key(city: Any, config: PipelineConfig, key_inputs: dict[str, Any]) -> str:
    """Hash of every setting, what each backend loads and the city's data manifest."""
    from urbanln_bench.cache import config_hash

    return config_hash({"config": asdict(config), "inputs": key_inputs, "data": city.manifest_hash,
                        "version": PIPELINE_VERSION})


def captions_root(city: Any) -> Path:
    from urbanln_bench.data import layout

    return Path(city.root) / layout.CAPTIONS


# -- the run ------------------------------------------------------------------------------------------


def run_pipeline(city: Any, config: PipelineConfig = PipelineConfig(), progress: Progress | None = None,
                 force: bool = False) -> CaptionRun:
    """Build (or reuse) the caption set of ``city`` (a ``CityData``) under ``config``."""
    from urbanln_bench.cache import atomic_directory, file_lock, note_build

    ids = image_ids(city, config.imagery)
    if config.limit is not None:
        ids = ids[:config.limit]
    if not ids:
        raise UserError(f"{city.root}: no {config.imagery} images to caption")
    backends = _Backends(city, config, ids, progress)
    key = pipeline_key(city, config, backends.key_inputs)
    folder = captions_root(city) / key
    if (folder / "config.json").is_file() and not force:
        return CaptionRun(folder, key, True, json.loads((folder / "config.json").read_text()))
    with file_lock(captions_root(city) / f".{key}.lock"):
        if (folder / "config.json").is_file() and not force:
            return CaptionRun(folder, key, True, json.loads((folder / "config.json").read_text()))
        from urbanln_bench.captions.grounding import one_torch_thread

        with atomic_directory(folder) as tmp, one_torch_thread():
            info = _write_caption_set(city, config, ids, backends, tmp, key, progress)
        note_build("captions", f"{city.name}/{key}")
    return CaptionRun(folder, key, False, info)


def _write_caption_set(city: Any, config: PipelineConfig, ids: list[str], backends: _Backends, out: Path,
                       key: str, progress: Progress | None) -> dict[str, Any]:
    from urbanln_bench.captions.consensus import consensus_scores, select_at_random
    from urbanln_bench.captions.synthetic_captioner import stable_rng

    started = time.perf_counter()
    times = backends.times
    graphs = city.scene_graphs(config.imagery) if city.source == "synthetic" else {}
    advance = progress(f"captioning {len(ids)} {config.imagery} images of {city.name}", len(ids)) if progress else None
    raw_lines, refined_lines, selected_lines = [], [], []
    pairs = 0
    for image_id in ids:
        image = city.load_image(image_id)
        graph = graphs.get(image_id)
        crops = backends.refiner.crops(image) if backends.refiner else None
        candidates: list[tuple[str, int, str]] = []  # (captioner, index, final caption)
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
            if backends.refiner:
                refined = backends.refiner.refine_image(captioner, image, image_id, graph, raw, crops)
                for index, result in enumerate(refined):
                    refined_lines.append({"image_id": image_id, "captioner": captioner.name, "candidate": index,
                                          "caption": result.caption, **result.as_dict()})
                    candidates.append((captioner.name, index, result.caption))
            else:
                for index, caption in enumerate(raw):
                    refined_lines.append({"image_id": image_id, "captioner": captioner.name, "candidate": index,
                                          "caption": caption})
                    candidates.append((captioner.name, index, caption))
        texts = [c[2] for c in candidates]
        if backends.capture is not None and len(texts) > 1:
            with times.stage("consensus (CAPTURE pairs)", len(texts) * (len(texts) - 1)):
                scores = consensus_scores(backends.capture.matrix(texts))
            pairs += len(texts) * (len(texts) - 1)
            chosen, method = int(np.argmax(scores)), "consensus"
            score_list = [round(float(s), 6) for s in scores]
        elif backends.capture is not None:
            chosen, method, score_list = 0, "consensus", [1.0]
        else:
            chosen, method, score_list = select_at_random(texts, image_id, config.seed).index, "random", None
        name, index, caption = candidates[chosen]
        selected_lines.append({"image_id": image_id, "captioner": name, "candidate": index, "caption": caption,
                               "selection": method, "scores": score_list})
        if advance:
            advance(1)
    for name, lines in zip(FILES, (raw_lines, refined_lines, selected_lines), strict=True):
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines),
                                           encoding="utf-8")
    info = {
        "key": key, "city": city.name, "source": city.source, "data_manifest": city.manifest_hash,
        "imagery": config.imagery, "config": asdict(config), "key_inputs": backends.key_inputs,
        "counts": {"images": len(ids), "candidates": len(raw_lines), "capture_pairs": pairs},
        "speed": times.rates(), "seconds_total": round(time.perf_counter() - started, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "version": PIPELINE_VERSION,
    }
    (out / "config.json").write_text(json.dumps(info, indent=1, default=str) + "\n", encoding="utf-8")
    return info


def load_selected_captions(city: Any, config: PipelineConfig = PipelineConfig(),
                           progress: Progress | None = None) -> dict[str, str]:
    """Image id → the selected caption (built on first use, reused after): what UrbanLN/UrbanCLIP/UrbanVLP train on."""
    run = run_pipeline(city, config, progress)
    return {r["image_id"]: r["caption"] for r in run.read("selected")}


def with_settings(config: PipelineConfig, **changes: Any) -> PipelineConfig:
    """A copy of ``config`` with some settings changed (ablations: refinement=False, consensus=False)."""
    return replace(config, **changes)
