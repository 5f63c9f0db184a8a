"""Phrase scoring: the hallucination filter of the divide-and-conquer refinement (docs/methods.md#caption-pipeline, Stage 4).

A phrase extracted from a caption is kept when a scorer says the image region shows it
(score > threshold) and deleted otherwise. Two backends behind one protocol:

- ``clip`` (offline default, ``clip:PROFILE``): the **phrase grounder** (``grounding.py``), a small
  CLIP-style dual encoder trained from scratch on pretraining-world crops with object phrases from
  the world's scene graphs; the score is its probability that the region shows the phrase's object.
  ``clip:PROFILE@foundation`` is the older scorer, the synthetic foundation CLIP's cosine(region,
  ``"a photo of {phrase}"``), kept for comparison: it barely separates true from hallucinated phrases
  (AUC ≈ 0.52 tiny, ≈ 0.57 cpu). Either way the threshold is *calibrated on the pretraining world*,
  never on a benchmark twin: held-out world images (never trained on) and their refinement crops
  are paired with phrases of objects their scene graphs show (true) and of kinds they do not show
  (hallucinated), and the threshold is the highest cut that keeps 90 % of the true phrases (as
  permissive as OWLv2's 0.01: it drops only what the scorer is surest is absent). The result
  (threshold, precision and recall of the keep decisions, share of hallucinated phrases rejected,
  AUC, and both split into hallucinated kinds the world renders and kinds it never renders) is
  cached as JSON under ``<cache>/calibration/``. Graphs are used for training and calibration on the
  pretraining world only, never at scoring time.
- ``owlv2``: OWLv2 from a local folder, CAPTURE's way: the whole image (by default), every box takes
  its best query, greedy NMS at IoU 0.1 across queries, boxes > 0.01 survive, a phrase's score is
  its best surviving box (0 when it wins none).

Scorers see pixels and text only.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from urbanln_bench.captions.rectangles import Box
from urbanln_bench.captions.versions import CALIBRATION_VERSION
from urbanln_bench.errors import UserError
from urbanln_bench.registry import Registry

OWLV2_THRESHOLD = 0.01
"""docs/methods.md#caption-pipeline / docs/methods.md#urbanln: boxes (and so phrases) scoring ≤ 0.01 are discarded."""
OWLV2_NMS_IOU = 0.1
OWLV2_MAX_QUERY_TOKENS = 16
DEFAULT_TEMPLATE = "a photo of {phrase}"
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
# CLIP-style scorers (offline default)


@dataclass
class ClipCalibration:
    """The calibrated keep threshold and how well the scorer separates true from hallucinated phrases.

    Measured on held-out pretraining-world images (never trained on by the grounder). ``auc_scene_kinds``
    and ``hallucinated_rejected_scene_kinds`` count only hallucinated kinds the world does render (so
    only pixels can tell they are absent); ``..._never_rendered`` only the plausible kinds no world
    image shows (text alone can learn to doubt those).
    """

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
    auc_scene_kinds: float | None = None
    auc_never_rendered: float | None = None
    hallucinated_rejected_scene_kinds: float | None = None
    hallucinated_rejected_never_rendered: float | None = None
    n_hallucinated_scene_kinds: int = 0
    n_hallucinated_never_rendered: int = 0
    auc_within_kind_mean: float | None = None  # mean over kinds of AUC(true vs hallucinated phrases of that kind)
    per_kind: dict[str, dict[str, float]] = field(default_factory=dict)
    images: str = "held-out pretraining-world images (satellite and street view), whole image and refinement crops"
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


WEIGHTS = ("grounding", "foundation")


class ClipPhraseScorer:
    """The offline phrase scorer: a CLIP-style dual encoder scores (region, phrase) pairs.

    ``weights="grounding"`` (default): the phrase grounder (:mod:`urbanln_bench.captions.grounding`),
    a dual encoder trained for this task on pretraining-world crops; the score is its probability that
    the region shows the phrase's object, and the phrase is used as it is (``template`` "{phrase}").
    ``weights="foundation"``: the synthetic foundation CLIP (``backbones/foundation.py``), cosine(region,
    ``"a photo of {phrase}"``): kept for comparison; it barely separates true from hallucinated
    phrases (see its calibration's AUC). The spec ``clip:PROFILE@foundation`` selects it.

    ``threshold=None`` uses the calibration on held-out pretraining-world images
    (:func:`calibrate_clip_threshold`). Text features are cached per phrase string for the life of the
    scorer; all regions of one image are encoded in one batch, once per image array.
    """

    backend = "clip"

    def __init__(self, profile: str = "smoke", weights: str = "grounding", template: str | None = None,
                 threshold: float | None = None, device: str = "cpu", progress: Progress | None = None) -> None:
        profile, _, suffix = profile.partition("@")
        weights = suffix or weights
        if weights not in WEIGHTS:
            raise UserError(f"CLIP phrase scorer weights must be one of {', '.join(WEIGHTS)}, got '{weights}'")
        self.profile = profile
        self.weights = weights
        self.device = device
        self.grounder = None
        if weights == "grounding":
            from urbanln_bench.captions.grounding import load_grounder

            if template not in (None, "{phrase}"):
                raise UserError("the phrase grounder reads bare phrases; a template applies to weights='foundation'")
            self.template = "{phrase}"
            self.grounder = load_grounder(profile, progress=progress)
            self.source = self.grounder.source
            self._word_index = {w: i for i, w in enumerate(self.grounder.vocabulary.words)}
        else:
            from urbanln_bench.backbones.clip_weights import load_clip

            self.template = DEFAULT_TEMPLATE if template is None else template
            if "{phrase}" not in self.template:
                raise UserError(f"phrase template '{self.template}' must contain '{{phrase}}'")
            self.model, self.tokenizer, self.preprocess, self.source = load_clip(profile, weights, progress=progress,
                                                                                device=device)
        self.name = f"clip:{profile}" + ("" if weights == "grounding" else f"@{weights}")
        self.calibration: ClipCalibration | None = None
        self._text_cache: dict[str, np.ndarray] = {}
        self._image: np.ndarray | None = None
        self._region_features: dict[Box | None, np.ndarray] = {}
        if threshold is None:
            from urbanln_bench.captions.grounding import one_torch_thread

            with one_torch_thread():
                self.calibration = calibrate_clip_threshold(self, progress=progress)
            threshold = self.calibration.threshold
        self.threshold = float(threshold)

    def __repr__(self) -> str:
        return f"ClipPhraseScorer({self.profile!r}, weights={self.weights!r}, threshold={self.threshold:.4f})"

    def settings(self) -> dict[str, Any]:
        model = ("phrase grounder: P(region shows phrase) from a dual encoder trained on pretraining-world crops"
                 if self.grounder is not None else "foundation CLIP cosine(region, template(phrase))")
        return {"backend": "clip", "profile": self.profile, "weights": self.weights, "model": model,
                "template": self.template, "clip": self.source, "threshold": round(self.threshold, 6),
                "calibration": asdict(self.calibration) if self.calibration else "user threshold"}

    # -- features ----------------------------------------------------------------------------------
    def region_features(self, image: np.ndarray, boxes: Sequence[Box | None]) -> np.ndarray:
        """L2-normalised features of ``boxes`` of ``image`` (None: the whole image), one batch."""
        import torch
        import torch.nn.functional as F

        if not boxes:
            dim = (self.grounder.config.embed_dim if self.grounder is not None else self.model.visual.output_dim)
            return np.zeros((0, dim), np.float32)
        if self.grounder is None:
            from urbanln_bench.embed import preprocess

            pixels = preprocess([crop(image, b) for b in boxes], self.preprocess.image_size, self.preprocess.mean,
                                self.preprocess.std)
            with torch.no_grad():
                return F.normalize(self.model.encode_image(pixels.to(self.device)).float(), dim=-1).cpu().numpy()
        from urbanln_bench.captions.grounding import to_tensor

        height, width = image.shape[:2]
        for box in boxes:
            crop(image, box)  # an empty box is an error here too
        rows = torch.tensor([[0, *(b if b is not None else (0, 0, width, height))] for b in boxes], dtype=torch.float32)
        with torch.no_grad():
            return F.normalize(self.grounder.model.image(to_tensor(image)[None], rows), dim=-1).numpy()

    def text_features(self, phrases: Sequence[str]) -> np.ndarray:
        """L2-normalised phrase features, cached per phrase string."""
        for missing in self.text_batches([phrases], self._text_cache):
            self._text_cache.update(zip(missing, self.embed_text_batch(missing), strict=True))
        if not phrases:
            dim = next(iter(self._text_cache.values())).shape[0] if self._text_cache else 0
            return np.zeros((0, dim), np.float32)
        return np.stack([self._text_cache[p] for p in phrases])

    @staticmethod
    def text_batches(queries: Iterable[Sequence[str]], known: Container[str]) -> list[list[str]]:
        """The batches :meth:`text_features` encodes for these calls, one after another, when ``known`` are
        cached (``known`` is not changed). A feature's last bits depend on its batch, so the caption
        pipeline's workers replay this to get the features one process computes (``stages.py``)."""
        seen: set[str] = set()
        out = []
        for phrases in queries:
            missing = [p for p in dict.fromkeys(phrases) if p not in known and p not in seen]
            if missing:
                out.append(missing)
                seen.update(missing)
        return out

    def embed_text_batch(self, batch: Sequence[str]) -> np.ndarray:
        """L2-normalised features of exactly this batch of phrases, in one forward pass (no cache)."""
        import torch
        import torch.nn.functional as F

        with torch.no_grad():
            if self.grounder is not None:
                from urbanln_bench.captions.grounding import tokenize

                return F.normalize(self.grounder.model.text(tokenize(list(batch), self._word_index)), dim=-1).numpy()
            from urbanln_bench.backbones.clip import encode_text_trimmed

            tokens = self.tokenizer([self.template.format(phrase=p) for p in batch])
            length = int((tokens != 0).sum(dim=1).max())
            return F.normalize(encode_text_trimmed(self.model, tokens[:, :length].to(self.device)).float(),
                               dim=-1).cpu().numpy()

    def cached_text_features(self) -> dict[str, np.ndarray]:
        """The features cached so far (calibration's, when it ran in this process)."""
        return dict(self._text_cache)

    def remember_text(self, features: Mapping[str, np.ndarray]) -> None:
        """Cache features computed elsewhere (by :meth:`embed_text_batch` in another process)."""
        self._text_cache.update(features)

    def _scores(self, text: np.ndarray, region: np.ndarray) -> np.ndarray:
        cosine = text @ region
        if self.grounder is None:
            return cosine
        model = self.grounder.model
        logits = float(model.scale.detach().exp()) * cosine.astype(np.float64) + float(model.bias.detach())
        return 1.0 / (1.0 + np.exp(-logits))

    # -- protocol ----------------------------------------------------------------------------------
    def score(self, image: np.ndarray, query_sets: Sequence[QuerySet]) -> list[np.ndarray]:
        """The score of every phrase of every set against its set's region (the whole image for box None)."""
        if self._image is not image:  # region features are reused while the same image array is scored
            self._image, self._region_features = image, {}
        features = self._region_features
        boxes = [b for b in dict.fromkeys(q.box for q in query_sets if q.phrases) if b not in features]
        features.update(zip(boxes, self.region_features(image, boxes), strict=True))
        out = []
        for query in query_sets:
            if not query.phrases:
                out.append(np.zeros(0, np.float32))
                continue
            out.append(self._scores(self.text_features(list(query.phrases)), features[query.box]))
        return out


def _world_regions(graph: dict, boxes: Sequence[Box], rng: np.random.Generator, vocabulary: Sequence[str],
                   attributes: Sequence[str]) -> list[tuple[Box | None, list[str], list[str], list[str], list[str]]]:
    """(region, true phrases, hallucinated phrases, true kinds, hallucinated kinds) for the whole image and each crop.

    True: kinds the region shows (for crops: ``grounding.region_kinds``, the rule a local caption
    names objects by). Hallucinated: kinds of ``vocabulary`` nowhere in the region. Half the phrases
    carry an adjective (true ones their own, hallucinated ones a random one), as captions' phrases do.
    """
    from urbanln_bench.captions.grounding import region_kinds

    out: list[tuple[Box | None, list[str], list[str], list[str], list[str]]] = []
    objects = graph.get("objects", ())
    for box in [None, *boxes]:
        shown, touched = region_kinds(objects, box)
        absent = [v for v in vocabulary if v not in touched]

        def phrase(name: str, own: Sequence[str]) -> str:
            if rng.random() < 0.5:
                pool = list(own) or list(attributes)
                return f"{pool[int(rng.integers(len(pool)))]} {name}"
            return name

        true = [phrase(n, a) for n, a in shown.items()]
        false = [phrase(n, ()) for n in absent]
        if true and false:
            out.append((box, true, false, list(shown), absent))
    return out


def _holdout_fraction(profile: str) -> float:
    from urbanln_bench.captions.grounding import GROUNDING_RECIPES

    config = GROUNDING_RECIPES.get(profile)
    return config.holdout_fraction if config is not None else 0.15


def _calibration_path(scorer: ClipPhraseScorer, world_manifests: Sequence[str], target_recall: float) -> Path:
    from urbanln_bench.cache import cache_root, config_hash

    key = config_hash({"clip": scorer.source, "profile": scorer.profile, "weights": scorer.weights,
                       "template": scorer.template, "world": list(world_manifests), "target_recall": target_recall,
                       "holdout": _holdout_fraction(scorer.profile), "version": CALIBRATION_VERSION})
    stem = "grounding" if scorer.weights == "grounding" else "clip"
    return cache_root() / "calibration" / f"{stem}-phrase-threshold-{scorer.profile}-{key}.json"


def calibrate_clip_threshold(scorer: ClipPhraseScorer, progress: Progress | None = None,
                             max_images: int = 400, target_recall: float = TARGET_RECALL) -> ClipCalibration:
    """The keep threshold of ``scorer`` from held-out pretraining-world images (cached JSON; module docstring).

    Images: the world images the grounder never trains on (``grounding.is_holdout``), at most
    ``max_images`` of them; regions: each image and its refinement crops (the refinement's segmenter,
    maximal rectangles and dilation). Hallucinated kinds come from the vocabularies the simulated
    captioners hallucinate from (``fidelity.SCENE_VOCABULARY`` and ``PLAUSIBLE_ABSENT``).
    """
    from urbanln_bench.backbones.world_data import world_scale_for
    from urbanln_bench.cache import atomic_write_text, file_lock, note_build
    from urbanln_bench.captions import fidelity
    from urbanln_bench.captions.grounding import is_holdout
    from urbanln_bench.captions.rectangles import dilate_box
    from urbanln_bench.captions.segment import ColourRegionSegmenter, crops_from_masks
    from urbanln_bench.data.loader import CityData
    from urbanln_bench.specs import pretraining_world
    from urbanln_bench.synth.twin import ensure_twin

    specs = pretraining_world()
    cities = [CityData.open(ensure_twin(spec, world_scale_for(scorer.profile))) for spec in specs]
    manifests = [c.manifest_hash for c in cities]
    path = _calibration_path(scorer, manifests, target_recall)
    if path.exists():
        return ClipCalibration(**json.loads(path.read_text()))
    with file_lock(path.with_suffix(".lock")):
        if path.exists():
            return ClipCalibration(**json.loads(path.read_text()))
        started = time.perf_counter()
        fraction = _holdout_fraction(scorer.profile)
        items = [(c, image_id, graph) for spec, c in zip(specs, cities, strict=True) for imagery in ("SI", "SV")
                 for image_id, graph in sorted(c.scene_graphs(imagery).items())
                 if is_holdout(f"{spec.name}/{image_id}", fraction)]
        rng = np.random.default_rng(CALIBRATION_VERSION)
        if len(items) > max_images:
            items = [items[i] for i in sorted(rng.choice(len(items), max_images, replace=False).tolist())]
        attributes = sorted({str(a) for _, _, g in items for o in g["objects"] for a in o.get("attributes", ())})
        segmenter = ColourRegionSegmenter()
        true_scores: list[float] = []
        false_scores: list[float] = []
        false_rendered: list[bool] = []
        true_kinds: list[str] = []
        false_kinds: list[str] = []
        advance = progress(f"calibrating the '{scorer.name}' phrase threshold on held-out pretraining-world images",
                           len(items)) if progress else None
        for city, image_id, graph in items:
            image = city.load_image(image_id)
            kind = str(graph.get("kind", "satellite"))
            scene = set(fidelity.SCENE_VOCABULARY[kind])
            vocabulary = sorted(scene | set(fidelity.PLAUSIBLE_ABSENT[kind]))
            height, width = image.shape[:2]
            boxes = [b for b in (dilate_box(tuple(int(v) for v in box), width, height)
                                 for box in crops_from_masks(segmenter.masks(image), image.shape)) if b is not None]
            regions = _world_regions(graph, boxes, rng, vocabulary, attributes)
            sets = [QuerySet(tuple(t + f), box) for box, t, f, _, _ in regions]
            for (_, t, _, true_names, names), scores in zip(regions, scorer.score(image, sets), strict=True):
                true_scores += scores[:len(t)].tolist()
                false_scores += scores[len(t):].tolist()
                false_rendered += [name in scene for name in names]
                true_kinds += true_names
                false_kinds += names
            if advance:
                advance(1)
        t, f = np.asarray(true_scores), np.asarray(false_scores)
        rendered = np.asarray(false_rendered, bool)
        threshold, j = recall_floor_threshold(t, f, target_recall)
        kept_true, kept_false = int((t > threshold).sum()), int((f > threshold).sum())

        def split(mask: np.ndarray) -> tuple[float | None, float | None]:
            if not mask.any():
                return None, None
            return _auc(t, f[mask]), float((f[mask] <= threshold).mean())

        auc_scene, rejected_scene = split(rendered)
        auc_never, rejected_never = split(~rendered)
        per_kind = {}
        true_kind, false_kind = np.asarray(true_kinds), np.asarray(false_kinds)
        for name in sorted(set(true_kinds)):
            k_true, k_false = t[true_kind == name], f[false_kind == name]
            if len(k_true) >= 20 and len(k_false) >= 20:
                per_kind[name] = {"auc": round(_auc(k_true, k_false), 4), "n_true": len(k_true),
                                  "n_hallucinated": len(k_false), "kept_true": round(float((k_true > threshold).mean()), 4),
                                  "kept_hallucinated": round(float((k_false > threshold).mean()), 4)}
        calibration = ClipCalibration(
            threshold=threshold, precision=kept_true / max(1, kept_true + kept_false), recall=kept_true / len(t),
            hallucinated_rejected=1.0 - kept_false / len(f), youden_j=j, target_recall=target_recall, auc=_auc(t, f),
            n_true=len(t), n_hallucinated=len(f), n_images=len(items), profile=scorer.profile,
            template=scorer.template, clip_source=scorer.source, world_manifests=manifests,
            auc_scene_kinds=auc_scene, auc_never_rendered=auc_never, hallucinated_rejected_scene_kinds=rejected_scene,
            hallucinated_rejected_never_rendered=rejected_never, n_hallucinated_scene_kinds=int(rendered.sum()),
            n_hallucinated_never_rendered=int((~rendered).sum()),
            auc_within_kind_mean=float(np.mean([v["auc"] for v in per_kind.values()])) if per_kind else None,
            per_kind=per_kind,
        )
        atomic_write_text(path, json.dumps(asdict(calibration), indent=1) + "\n")
        note_build("calibration", path.name, started)
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
    """CAPTURE's patched OWLv2 post-processing (docs/methods.md#caption-pipeline, Stage 4) for one query set.

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
