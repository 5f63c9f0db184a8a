"""The caption pipeline for one city and imagery (docs/methods.md#urbanln, UrbanLN data level), cached with the data.

Multi-captioner long captions (``candidates_per_captioner`` per captioner) → divide-and-conquer
refinement (``refine.py``) → consensus selection by CAPTURE (``consensus.py``). The result lives
beside the city's data, ``<city>/captions/<key>/``:

- ``raw.jsonl``: every candidate as the captioner wrote it;
- ``refined.jsonl``: the same candidates after refinement (equal to raw when refinement is off),
  with the filtered overall caption and each judged phrase's score and decision;
- ``selected.jsonl``: one caption per image, with every candidate's consensus score;
- ``config.json``: the settings, what the key covers, counts, per-stage speed and the worker processes used.

The stages run in ``stages.py``, across worker processes; the files are the same bytes for any number
of workers, so the number is not in the key.

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

from urbanln_bench.captions.captioners import DEFAULT_CAPTIONS_PER_IMAGE, PAPER_CAPTIONERS
from urbanln_bench.captions.stages import Backends, run_stages, workers_for
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


def key_inputs(config: PipelineConfig, backends: Backends) -> dict[str, Any]:
    """What the backends load, for the key: persona files, caption files, model folders, the scorer's settings."""
    inputs: dict[str, Any] = {"captioners": [captioner_identity(s, config.seed) for s in config.captioners]}
    if backends.refiner is not None:
        extractor = backends.refiner.extractor
        inputs["segmenter"] = (_folder_identity(Path(config.segmenter.partition(":")[2]))
                               if config.segmenter.startswith("sam:") else config.segmenter)
        inputs["phrase_extractor"] = (extractor.settings() if hasattr(extractor, "settings")
                                      else config.phrase_extractor)
        inputs["phrase_scorer"] = backends.refiner.scorer.settings()
    if backends.capture is not None:
        capture = backends.capture
        inputs["capture"] = {"weights": asdict(capture.weights), "wordnet": capture.wordnet is not None,
                             "sentence_model": str(getattr(capture.embedder, "directory", "none")),
                             "empty_types": capture.empty_types}
    return inputs


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
                 force: bool = False, workers: int | None = None) -> CaptionRun:
    """Build (or reuse) the caption set of ``city`` (a ``CityData``) under ``config``.

    ``workers``: processes that caption and score the images (default: ``processes.resolve_workers``,
    every core, where the set is large enough to pay for their start, ``stages.workers_for``); the files
    are the same bytes whatever the number (``stages.py``).
    """
    from urbanln_bench.cache import atomic_directory, file_lock, note_build

    ids = image_ids(city, config.imagery)
    if config.limit is not None:
        ids = ids[:config.limit]
    if not ids:
        raise UserError(f"{city.root}: no {config.imagery} images to caption")
    backends = Backends(config, ids, progress)
    key = pipeline_key(city, config, key_inputs(config, backends))
    folder = captions_root(city) / key
    if (folder / "config.json").is_file() and not force:
        return CaptionRun(folder, key, True, json.loads((folder / "config.json").read_text()))
    with file_lock(captions_root(city) / f".{key}.lock"):
        if (folder / "config.json").is_file() and not force:
            return CaptionRun(folder, key, True, json.loads((folder / "config.json").read_text()))
        from urbanln_bench.captions.grounding import one_torch_thread
        from urbanln_bench.processes import resolve_workers, workers_chosen

        started = time.perf_counter()
        processes = workers_for(resolve_workers(workers), len(ids), chosen=workers_chosen(workers))
        if config.refinement and config.phrase_extractor.startswith("factual:"):
            processes = 1  # the FACTUAL parser batches and caches sentences across images (stages.py)
        with atomic_directory(folder) as tmp, one_torch_thread():
            info = _write_caption_set(city, config, ids, backends, tmp, key, progress, processes)
        note_build("captions", f"{city.name}/{key}", started)
    return CaptionRun(folder, key, False, info)


def _write_caption_set(city: Any, config: PipelineConfig, ids: list[str], backends: Backends, out: Path,
                       key: str, progress: Progress | None, workers: int = 1) -> dict[str, Any]:
    started = time.perf_counter()
    result = run_stages(city, config, ids, backends, workers, progress)
    for name, lines in zip(FILES, (result.raw, result.refined, result.selected), strict=True):
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines),
                                           encoding="utf-8")
    info = {
        "key": key, "city": city.name, "source": city.source, "data_manifest": city.manifest_hash,
        "imagery": config.imagery, "config": asdict(config), "key_inputs": key_inputs(config, backends),
        "counts": {"images": len(ids), "candidates": len(result.raw), "capture_pairs": result.capture_pairs},
        "speed": result.times.rates(), "workers": result.workers, "spawned_shards": result.spawned_shards,
        "stage_seconds": result.wall_seconds,
        "seconds_total": round(time.perf_counter() - started, 2),
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
