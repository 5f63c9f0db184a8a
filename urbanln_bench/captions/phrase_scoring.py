"""Phrase scoring: the hallucination filter of the divide-and-conquer refinement (PEERS §10, Stage 4).

A phrase extracted from a caption is kept when a scorer says the image region shows it
(score > threshold) and deleted otherwise. Two backends behind one protocol:

- ``clip`` (offline default): the synthetic foundation CLIP (``backbones/clip.py``) scores
  cosine(region image, ``"a photo of {phrase}"``). Its threshold is *calibrated on the pretraining
  world*, never on a benchmark twin: world images and crops are paired with phrases of objects
  their scene graphs show (true) and of kinds they do not show (hallucinated), and the threshold is
  the highest cut that keeps 90 % of the true phrases (as permissive as OWLv2's 0.01; a J-optimal
  cut wrecks recall when the small CLIP separates the two weakly, see the stored AUC). The result
  (threshold, precision and recall of the keep decisions, share of hallucinated phrases rejected,
  AUC) is cached as JSON under ``<cache>/calibration/``. Graphs are used for that calibration only,
  never at scoring time.
- ``owlv2``: OWLv2 from a local folder, CAPTURE's way: the whole image (by default), every box takes
  its best query, greedy NMS at IoU 0.1 across queries, boxes > 0.01 survive, a phrase's score is
  its best surviving box (0 when it wins none).

Scorers see pixels and text only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from urbanln_bench.captions.rectangles import Box
from urbanln_bench.errors import UserError
from urbanln_bench.registry import Registry

OWLV2_THRESHOLD = 0.01
"""PEERS §10 / DESIGN §5: boxes (and so phrases) scoring ≤ 0.01 are discarded."""
OWLV2_NMS_IOU = 0.1
OWLV2_MAX_QUERY_TOKENS = 16
DEFAULT_TEMPLATE = "a photo of {phrase}"
CALIBRATION_VERSION = 2  # bump when calibrate_clip_threshold changes what it computes
TARGET_RECALL = 0.9
"""The calibrated CLIP threshold keeps this share of true phrases on the pretraining world (like OWLv2's
permissive 0.01, it drops only what the scorer is surest is absent)."""

Progress = Callable[[str, int], Callable[[int], None]]


@dataclass(frozen=True)
class QuerySet:
    """Phrases to judge in one region (``box`` = None: the whole image).

    ``context`` holds extra queries that compete (OWLv2) but are never judged, like CAPTURE's
    whole-local-caption query.
    """

    phrases: tuple[str, ...]
    box: Box | None = None
    context: tuple[str, ...] = ()


@runtime_checkable
class PhraseScorer(Protocol):
    """Image + query sets → one score array per set; a phrase is kept when its score > ``threshold``."""

    name: str
    threshold: float

    def settings(self) -> dict[str, Any]:
        """Everything that changes the scores (for cache keys and provenance)."""
        ...

    def score(self, image: np.ndarray, query_sets: Sequence[QuerySet]) -> list[np.ndarray]:
        ...


def crop(image: np.ndarray, box: Box | None) -> np.ndarray:
    """The pixels of ``box`` (whole image for None); an empty box is an error, not a silent blank."""
    if box is None:
        return image
    x1, y1, x2, y2 = (int(v) for v in box)
    out = image[max(0, y1):y2, max(0, x1):x2]
    if out.size == 0:
        raise ValueError(f"empty crop {box} of an image of shape {image.shape}")
    return out


# --------------------------------------------------------------------------------------------------
# CLIP (offline default)


@dataclass
class ClipCalibration:
    """The calibrated keep threshold and how well it separates true from hallucinated phrases."""

    threshold: float
    precision: float  # share of kept phrases that are true
    recall: float  # share of true phrases kept (TPR)
    hallucinated_rejected: float  # share of hallucinated phrases dropped (1 − FPR)
    youden_j: float  # TPR − FPR at the threshold
    target_recall: float
    auc: float
    n_true: int
    n_hallucinated: int
    n_images: int
    profile: str
    template: str
    clip_source: str
    world_manifests: list[str] = field(default_factory=list)
    version: int = CALIBRATION_VERSION

    @property
    def keeps_everything(self) -> bool:
        return self.hallucinated_rejected <= 0.0


def recall_floor_threshold(true_scores: np.ndarray, false_scores: np.ndarray,
                           target_recall: float = TARGET_RECALL) -> tuple[float, float]:
    """(threshold, J): the highest cut that still keeps ≥ ``target_recall`` of true phrases (keep ``score > cut``).

    Among cuts meeting the floor, the highest rejects the most hallucinated phrases. J = TPR − FPR at
    that cut is returned as the separation achieved. A scorer without signal then still drops only
    ``1 − target_recall`` of the true phrases instead of wrecking recall.
    """
    true_scores = np.sort(np.asarray(true_scores, dtype=np.float64))
    false_scores = np.sort(np.asarray(false_scores, dtype=np.float64))
    if not len(true_scores) or not len(false_scores):
        raise ValueError("calibration needs both true and hallucinated phrases")
    if not 0.0 < target_recall < 1.0:
        raise ValueError(f"target_recall must be in (0, 1), got {target_recall}")
    # keep > cut: with cut just below true_scores[k], the kept true share is (n - k) / n
    k = int(np.floor((1.0 - target_recall) * len(true_scores)))
    cut = float(np.nextafter(true_scores[k], -np.inf))
    tpr = float((true_scores > cut).mean())
    fpr = float((false_scores > cut).mean())
    return cut, tpr - fpr


def _auc(true_scores: np.ndarray, false_scores: np.ndarray) -> float:
    from scipy.stats import rankdata

    scores = np.concatenate([true_scores, false_scores])
    ranks = rankdata(scores)
    n1, n0 = len(true_scores), len(false_scores)
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


class ClipPhraseScorer:
    """Cosine of the region's CLIP image feature and ``template`` with the phrase (offline default).

    ``threshold=None`` uses the calibration on the pretraining world (:func:`calibrate_clip_threshold`).
    Text features are cached per phrase; all regions of one image are encoded in one batch.
    """

    backend = "clip"

    def __init__(self, profile: str = "tiny", weights: str = "foundation", template: str = DEFAULT_TEMPLATE,
                 threshold: float | None = None, device: str = "cpu", progress: Progress | None = None) -> None:
        from urbanln_bench.backbones.clip import load_clip

        if "{phrase}" not in template:
            raise UserError(f"phrase template '{template}' must contain '{{phrase}}'")
        self.profile = profile
        self.template = template
        self.device = device
        self.model, self.tokenizer, self.preprocess, self.source = load_clip(profile, weights, progress=progress,
                                                                            device=device)
        self.name = f"clip:{profile}"
        self.calibration: ClipCalibration | None = None
        self._text_cache: dict[str, np.ndarray] = {}
        self._image: np.ndarray | None = None
        self._region_features: dict[Box | None, np.ndarray] = {}
        if threshold is None:
            self.calibration = calibrate_clip_threshold(self, progress=progress)
            threshold = self.calibration.threshold
        self.threshold = float(threshold)

    def __repr__(self) -> str:
        return f"ClipPhraseScorer({self.profile!r}, threshold={self.threshold:.4f})"

    def settings(self) -> dict[str, Any]:
        return {"backend": "clip", "profile": self.profile, "template": self.template, "clip": self.source,
                "threshold": round(self.threshold, 6),
                "calibration": asdict(self.calibration) if self.calibration else "user threshold"}

    # -- features ----------------------------------------------------------------------------------
    def image_features(self, images: Sequence[np.ndarray]) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        from urbanln_bench.embed import preprocess

        if not images:
            return np.zeros((0, self.model.visual.output_dim), np.float32)
        pixels = preprocess(list(images), self.preprocess.image_size, self.preprocess.mean, self.preprocess.std)
        with torch.no_grad():
            return F.normalize(self.model.encode_image(pixels.to(self.device)).float(), dim=-1).cpu().numpy()

    def text_features(self, phrases: Sequence[str]) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        from urbanln_bench.backbones.clip import encode_text_trimmed

        missing = [p for p in dict.fromkeys(phrases) if p not in self._text_cache]
        if missing:
            tokens = self.tokenizer([self.template.format(phrase=p) for p in missing])
            length = int((tokens != 0).sum(dim=1).max())
            with torch.no_grad():
                features = F.normalize(encode_text_trimmed(self.model, tokens[:, :length].to(self.device)).float(),
                                       dim=-1).cpu().numpy()
            self._text_cache.update(zip(missing, features, strict=True))
        dim = self.model.text_projection.shape[-1] if self.model.text_projection is not None else 0
        return np.stack([self._text_cache[p] for p in phrases]) if phrases else np.zeros((0, dim), np.float32)

    # -- protocol ----------------------------------------------------------------------------------
    def score(self, image: np.ndarray, query_sets: Sequence[QuerySet]) -> list[np.ndarray]:
        """Cosine(crop of the set's box, template(phrase)) for every phrase of every set."""
        if self._image is not image:  # region features are reused while the same image array is scored
            self._image, self._region_features = image, {}
        features = self._region_features
        boxes = [b for b in dict.fromkeys(q.box for q in query_sets if q.phrases) if b not in features]
        features.update(zip(boxes, self.image_features([crop(image, b) for b in boxes]), strict=True))
        out = []
        for query in query_sets:
            if not query.phrases:
                out.append(np.zeros(0, np.float32))
                continue
            out.append(self.text_features(list(query.phrases)) @ features[query.box])
        return out


def _world_regions(graph: dict, image_shape: tuple[int, ...], boxes: Sequence[Box],
                   rng: np.random.Generator, vocabulary: Sequence[str], attributes: Sequence[str]
                   ) -> list[tuple[Box | None, list[str], list[str]]]:
    """(region, true phrases, hallucinated phrases) for the whole image and each crop.

    True: kinds the region shows (for crops: the object overlaps it the way a local caption would
    name it). Hallucinated: kinds of ``vocabulary`` nowhere in the region. Half the phrases carry an
    adjective (true ones their own, hallucinated ones a random one), as captions' phrases do.
    """
    out: list[tuple[Box | None, list[str], list[str]]] = []
    objects = graph.get("objects", ())
    for box in [None, *boxes]:
        shown, touched = {}, set()
        for obj in objects:
            name = str(obj["name"])
            x0, y0, x1, y1 = obj["bbox"]
            if box is None:
                shown.setdefault(name, tuple(obj.get("attributes", ())))
                continue
            bx0, by0, bx1, by1 = box
            overlap = max(0.0, min(x1, bx1) - max(x0, bx0)) * max(0.0, min(y1, by1) - max(y0, by0))
            if overlap > 0:
                touched.add(name)
            area, box_area = max(1e-9, (x1 - x0) * (y1 - y0)), max(1e-9, (bx1 - bx0) * (by1 - by0))
            if overlap / area >= 0.5 or overlap / box_area >= 0.25:
                shown.setdefault(name, tuple(obj.get("attributes", ())))
        excluded = shown.keys() if box is None else touched
        absent = [v for v in vocabulary if v not in excluded]

        def phrase(name: str, own: Sequence[str]) -> str:
            if rng.random() < 0.5:
                pool = list(own) or list(attributes)
                return f"{pool[int(rng.integers(len(pool)))]} {name}"
            return name

        true = [phrase(n, a) for n, a in shown.items()]
        false = [phrase(n, ()) for n in absent]
        if true and false:
            out.append((box, true, false))
    return out


def _calibration_path(scorer: ClipPhraseScorer, world_manifests: Sequence[str], target_recall: float) -> Path:
    from urbanln_bench.cache import cache_root, config_hash

    key = config_hash({"clip": scorer.source, "profile": scorer.profile, "template": scorer.template,
                       "world": list(world_manifests), "target_recall": target_recall, "version": CALIBRATION_VERSION})
    return cache_root() / "calibration" / f"clip-phrase-threshold-{scorer.profile}-{key}.json"


def calibrate_clip_threshold(scorer: ClipPhraseScorer, progress: Progress | None = None,
                             max_images: int = 400, target_recall: float = TARGET_RECALL) -> ClipCalibration:
    """The keep threshold of ``scorer`` from the pretraining world (cached JSON; see module docstring).

    Regions are each world image and its refinement crops (same segmenter and crop pipeline as the
    refinement); hallucinated kinds are drawn from the same vocabularies the simulated captioners
    hallucinate from (``fidelity.SCENE_VOCABULARY`` and ``PLAUSIBLE_ABSENT``).
    """
    from urbanln_bench.backbones.world_data import world_scale_for
    from urbanln_bench.cache import atomic_write_text, file_lock
    from urbanln_bench.captions import fidelity
    from urbanln_bench.captions.rectangles import crops_from_masks
    from urbanln_bench.captions.segment import ColourRegionSegmenter
    from urbanln_bench.data.loader import CityData
    from urbanln_bench.specs import pretraining_world
    from urbanln_bench.synth.twin import ensure_twin

    cities = [CityData.open(ensure_twin(spec, world_scale_for(scorer.profile))) for spec in pretraining_world()]
    manifests = [c.manifest_hash for c in cities]
    path = _calibration_path(scorer, manifests, target_recall)
    if path.exists():
        return ClipCalibration(**json.loads(path.read_text()))
    with file_lock(path.with_suffix(".lock")):
        if path.exists():
            return ClipCalibration(**json.loads(path.read_text()))
        items = [(c, image_id, graph) for c in cities for imagery in ("SI", "SV")
                 for image_id, graph in sorted(c.scene_graphs(imagery).items())]
        rng = np.random.default_rng(CALIBRATION_VERSION)
        if len(items) > max_images:
            items = [items[i] for i in sorted(rng.choice(len(items), max_images, replace=False).tolist())]
        attributes = sorted({str(a) for _, _, g in items for o in g["objects"] for a in o.get("attributes", ())})
        segmenter = ColourRegionSegmenter()
        true_scores: list[float] = []
        false_scores: list[float] = []
        advance = progress(f"calibrating the CLIP '{scorer.profile}' phrase threshold on the pretraining world",
                           len(items)) if progress else None
        for city, image_id, graph in items:
            image = city.load_image(image_id)
            kind = str(graph.get("kind", "satellite"))
            vocabulary = sorted(set(fidelity.SCENE_VOCABULARY[kind]) | set(fidelity.PLAUSIBLE_ABSENT[kind]))
            boxes = crops_from_masks(segmenter.masks(image), image.shape)
            regions = _world_regions(graph, image.shape, boxes, rng, vocabulary, attributes)
            sets = [QuerySet(tuple(t + f), box) for box, t, f in regions]
            for (_, t, _), scores in zip(regions, scorer.score(image, sets), strict=True):
                true_scores += scores[:len(t)].tolist()
                false_scores += scores[len(t):].tolist()
            if advance:
                advance(1)
        t, f = np.asarray(true_scores), np.asarray(false_scores)
        threshold, j = recall_floor_threshold(t, f, target_recall)
        kept_true, kept_false = int((t > threshold).sum()), int((f > threshold).sum())
        calibration = ClipCalibration(
            threshold=threshold, precision=kept_true / max(1, kept_true + kept_false), recall=kept_true / len(t),
            hallucinated_rejected=1.0 - kept_false / len(f), youden_j=j, target_recall=target_recall, auc=_auc(t, f), n_true=len(t),
            n_hallucinated=len(f), n_images=len(items), profile=scorer.profile, template=scorer.template,
            clip_source=scorer.source, world_manifests=manifests,
        )
        atomic_write_text(path, json.dumps(asdict(calibration), indent=1) + "\n")
    return calibration


# --------------------------------------------------------------------------------------------------
# OWLv2 (the paper's detector)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box ``a`` (4,) with boxes ``b`` (n, 4), corners format."""
    x1, y1 = np.maximum(a[0], b[:, 0]), np.maximum(a[1], b[:, 1])
    x2, y2 = np.minimum(a[2], b[:, 2]), np.minimum(a[3], b[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda z: np.clip(z[..., 2] - z[..., 0], 0, None) * np.clip(z[..., 3] - z[..., 1], 0, None)  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-12)


def owlv2_phrase_scores(logits: np.ndarray, boxes: np.ndarray, n_judged: int, threshold: float = OWLV2_THRESHOLD,
                        nms_iou: float = OWLV2_NMS_IOU) -> np.ndarray:
    """CAPTURE's patched OWLv2 post-processing (PEERS §10, Stage 4) for one query set.

    ``logits`` (n_boxes, n_queries), ``boxes`` (n_boxes, 4). Each box takes its best query
    (sigmoid of the max logit); greedy NMS at ``nms_iou`` across all boxes, ignoring labels; boxes
    > ``threshold`` survive. A query's score is its best surviving box, 0 when it wins none.
    """
    probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    best, label = probs.max(axis=1), probs.argmax(axis=1)
    order = np.argsort(-best, kind="stable")
    alive = np.ones(len(order), bool)
    kept: list[int] = []
    for position, index in enumerate(order):
        if not alive[position]:
            continue
        kept.append(int(index))
        rest = order[position + 1:]
        suppress = _iou(boxes[index], boxes[rest]) > nms_iou
        alive[position + 1:] &= ~suppress
    out = np.zeros(n_judged, np.float64)
    for index in kept:
        if best[index] > threshold and label[index] < n_judged:
            out[label[index]] = max(out[label[index]], best[index])
    return out


class Owlv2PhraseScorer:
    """OWLv2 from a local folder (``Owlv2Processor`` + ``Owlv2ForObjectDetection.from_pretrained``).

    ``whole_image=True`` (CAPTURE's choice) scores every query set on the whole image; False scores
    each set on its crop. Queries are truncated to 16 tokens; each set is its own forward pass.
    """

    backend = "owlv2"

    def __init__(self, model_dir: str | Path, threshold: float = OWLV2_THRESHOLD, whole_image: bool = True,
                 device: str = "cpu") -> None:
        model_dir = Path(model_dir).expanduser()
        if not model_dir.is_dir() or not (model_dir / "config.json").is_file():
            raise UserError(f"OWLv2 folder '{model_dir}' " + ("has no config.json" if model_dir.is_dir() else
                            "does not exist") + "; pass a folder written by Owlv2ForObjectDetection.save_pretrained "
                            "with its Owlv2Processor files (nothing is downloaded), or use the offline 'clip' scorer")
        from transformers import Owlv2ForObjectDetection, Owlv2Processor

        try:
            self.processor = Owlv2Processor.from_pretrained(model_dir, local_files_only=True)
            self.model = Owlv2ForObjectDetection.from_pretrained(model_dir, local_files_only=True).to(device).eval()
        except (OSError, ValueError) as error:
            raise UserError(f"could not load OWLv2 from {model_dir}: {error}") from error
        self.model_dir = model_dir
        self.threshold = float(threshold)
        self.whole_image = whole_image
        self.device = device
        self.name = f"owlv2:{model_dir.name}"

    def settings(self) -> dict[str, Any]:
        from urbanln_bench.cache import config_hash

        config = json.loads((self.model_dir / "config.json").read_text())
        return {"backend": "owlv2", "model_dir": str(self.model_dir.resolve()), "config": config_hash(config),
                "threshold": self.threshold, "whole_image": self.whole_image, "nms_iou": OWLV2_NMS_IOU}

    def score(self, image: np.ndarray, query_sets: Sequence[QuerySet]) -> list[np.ndarray]:
        import torch
        from PIL import Image

        out = []
        for query in query_sets:
            if not query.phrases:
                out.append(np.zeros(0))
                continue
            region = image if self.whole_image else crop(image, query.box)
            texts = [*query.phrases, *query.context]
            inputs = self.processor(text=[texts], images=Image.fromarray(region), return_tensors="pt",
                                    padding="max_length", truncation=True, max_length=OWLV2_MAX_QUERY_TOKENS)
            with torch.no_grad():
                result = self.model(**{k: v.to(self.device) for k, v in inputs.items()})
            logits = result.logits[0].float().cpu().numpy()  # (n_boxes, n_queries)
            cx, cy, w, h = result.pred_boxes[0].float().cpu().numpy().T
            boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
            out.append(owlv2_phrase_scores(logits, boxes, len(query.phrases), self.threshold))
        return out


# --------------------------------------------------------------------------------------------------
# registry

PHRASE_SCORERS: Registry[Any] = Registry("phrase scorer", entry_point_group="urbanln_bench.phrase_scorers")
PHRASE_SCORERS.register("clip", "urbanln_bench.captions.phrase_scoring:ClipPhraseScorer", builtin=True,
                        origin="urbanln_bench.captions.phrase_scoring")
PHRASE_SCORERS.register("owlv2", "urbanln_bench.captions.phrase_scoring:Owlv2PhraseScorer", builtin=True,
                        origin="urbanln_bench.captions.phrase_scoring")
_SPEC_ARGUMENT = {"clip": "profile", "owlv2": "model_dir"}


def build_phrase_scorer(spec: str, threshold: float | None = None, **options: Any) -> PhraseScorer:
    """A scorer from ``"clip:PROFILE"`` or ``"owlv2:MODEL_DIR"``; ``threshold`` overrides the default."""
    backend, sep, argument = spec.partition(":")
    factory = PHRASE_SCORERS.get(backend)
    kwargs = dict(options)
    if sep:
        kwargs[_SPEC_ARGUMENT.get(backend, "argument")] = argument
    if threshold is not None:
        kwargs["threshold"] = threshold
    try:
        return factory(**kwargs)
    except TypeError as exc:
        raise UserError(f"phrase scorer spec '{spec}': {exc}") from exc
