"""The phrase-grounding model behind the offline default phrase scorer (``clip:PROFILE``).

A small CLIP-style dual encoder trained from scratch on the **pretraining world** (never on a
benchmark twin) to say whether an image region shows the object a short phrase names — the job
OWLv2 does in CAPTURE's refinement (docs/methods.md#caption-pipeline, Stage 4). The synthetic foundation CLIP was trained
on whole images with whole-image captions and barely separates true from hallucinated phrases on
crops (world AUC ≈ 0.52 tiny, ≈ 0.57 cpu); this model is trained for the task itself.

- **Image tower**: a small stride-8 CNN over the whole image at its native resolution; a region's
  feature is its RoI-aligned average grid (``region_grid``²) and its RoI max of that feature map
  (the Fast R-CNN way: small objects are not lost by resizing a crop, and all regions of an image
  share one forward pass), plus the region's width and height as fractions of the image → MLP.
- **Text tower**: word embeddings (lower-cased words; unknown words share one ``<unk>`` entry), the
  mean over the phrase and the last word (the head noun) → MLP.
- **Score**: ``sigmoid(s · cos(region, phrase) + b)`` with learnt ``s`` and ``b`` (SigLIP-style),
  trained with binary cross-entropy over every (region, phrase) pair of a batch.

Training data, from the world's scene graphs (allowed there, never on a benchmark city): per image
and step the whole image and random boxes; for each object kind of the vocabulary one phrase per
step (the name, its plural, a synonym or, for "... building" names, the name without "building";
half of them with an attribute of that kind). A region's label for a kind is 1 when it shows an
object of that kind the way a local caption would name it (the object lies half inside the region,
or fills a quarter of it: the same rule the simulated captioners and the threshold calibration use),
0 when no object of that kind touches the region, and not trained on otherwise. The loss weights
each rendered kind's positives and negatives equally (:func:`_kind_weights`): unweighted, the score
was mostly the kind's base rate (frequent kinds always kept, rare ones always dropped). The
vocabulary is the world's object names plus the plausible-but-never-rendered kinds and other urban
nouns of ``fidelity`` (always 0: the world has none of them) and phrases of unknown words only
(always 0: the model grounds no object for them, as a detector fires on nothing). A fixed share of
world images (``holdout_fraction``, by a hash of the image id) is never trained on; the scorer's
threshold is calibrated, and its AUC measured, on those.

The checkpoint is cached under ``<cache>/backbones/phrase-grounder-<profile>-<key>.pt`` with a JSON
sidecar (recipe, timings, losses), the key covering the recipe, the world's content hashes, the
vocabulary sources, the torch version and this module's ``GROUNDING_VERSION``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from urbanln_bench.captions.versions import GROUNDING_VERSION
from urbanln_bench.profiles import recipe

GROUNDER_LABEL = "phrase grounder"
PAD, UNK = 0, 1
MAX_WORDS = 8
_WORD = re.compile(r"[a-z]+(?:[-'][a-z]+)*")

Progress = Callable[[str, int], Callable[[int], None]]
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class GroundingConfig:
    """The recipe of one profile's grounder (all of it is in the cache key)."""

    profile: str
    width: int  # channels of the first CNN stage (doubled per stage)
    embed_dim: int
    word_dim: int
    epochs: int
    images_per_batch: int
    lr: float
    boxes_per_image: int  # regions per training image per step (the whole image is one of them)
    region_grid: int = 3  # a region's feature: its RoI-aligned (average) grid of this size plus its RoI max
    weight_decay: float = 1e-4
    holdout_fraction: float = 0.15
    seed: int = 0


GROUNDING_RECIPES = {
    # tests and CI: the world at scale tiny (721 images), well under a minute on two shared cores
    "smoke": GroundingConfig("smoke", width=16, embed_dim=64, word_dim=48, epochs=8, images_per_batch=32, lr=3e-3,
                            boxes_per_image=8),
    # the CPU default: the small world (4,381 images)
    "cpu": GroundingConfig("cpu", width=16, embed_dim=64, word_dim=48, epochs=6, images_per_batch=32, lr=3e-3,
                           boxes_per_image=8),
    # the paper profile's offline fallback (OWLv2 is the paper's scorer): wider and longer, on the small world
    "paper": GroundingConfig("paper", width=32, embed_dim=128, word_dim=64, epochs=10, images_per_batch=32,
                             lr=3e-3, boxes_per_image=8),
}


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run torch on one intra-op thread inside the block (restored after).

    The grounder's and the pipeline's kernels are small: on the two shared cores this harness targets,
    a second thread mostly spins and waits, and under load one thread is several times faster.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def grounding_config(profile: str) -> GroundingConfig:
    return recipe(GROUNDING_RECIPES, profile, "the phrase grounder",
                  "use 'clip:PROFILE@foundation' for the CLIP-cosine scorer or owlv2:DIR")


# --------------------------------------------------------------------------------------------------
# The world: which regions show which kinds


def is_holdout(uid: str, fraction: float) -> bool:
    """Whether a world image (``"<city>/<image id>"``) is held out of grounder training (stable hash)."""
    return (zlib.crc32(uid.encode()) % 10_000) < fraction * 10_000


def region_kinds(objects: Sequence[Mapping[str, Any]], box: Sequence[float] | None) -> tuple[dict[str, tuple[str, ...]],
                                                                                          set[str]]:
    """(kinds the region shows → the first such object's attributes, kinds touching it at all).

    A crop shows an object when half the object lies inside it or the object fills a quarter of it
    (the rule the simulated captioners use to caption a crop); the whole image (``box`` None) shows
    every object.
    """
    shown: dict[str, tuple[str, ...]] = {}
    touched: set[str] = set()
    for obj in objects:
        name = str(obj["name"])
        if box is None:
            shown.setdefault(name, tuple(obj.get("attributes", ())))
            touched.add(name)
            continue
        x0, y0, x1, y1 = obj["bbox"]
        bx0, by0, bx1, by1 = box
        overlap = max(0.0, min(x1, bx1) - max(x0, bx0)) * max(0.0, min(y1, by1) - max(y0, by0))
        if overlap > 0:
            touched.add(name)
        area, box_area = max(1e-9, (x1 - x0) * (y1 - y0)), max(1e-9, (bx1 - bx0) * (by1 - by0))
        if overlap / area >= 0.5 or overlap / box_area >= 0.25:
            shown.setdefault(name, tuple(obj.get("attributes", ())))
    return shown, touched


@dataclass
class WorldImage:
    uid: str
    image: np.ndarray
    graph: dict


def world_images(profile: str) -> tuple[list[WorldImage], list[str]]:
    """Every satellite and street-view image of the pretraining world at the profile's scale, and the
    world's content hashes."""
    from urbanln_bench.backbones.world_data import world_scale_for
    from urbanln_bench.data.loader import CityData
    from urbanln_bench.specs import pretraining_world
    from urbanln_bench.synth.twin import ensure_twin

    out, manifests = [], []
    for spec in pretraining_world():
        data = CityData.open(ensure_twin(spec, world_scale_for(profile)))
        manifests.append(data.manifest_hash)
        for imagery in ("SI", "SV"):
            for image_id, graph in sorted(data.scene_graphs(imagery).items()):
                out.append(WorldImage(f"{spec.name}/{image_id}", data.load_image(image_id), graph))
    return out, manifests


# --------------------------------------------------------------------------------------------------
# Phrases


@dataclass(frozen=True)
class PhraseVocabulary:
    """The object kinds, their surface forms and attributes, and the word list of the text tower."""

    kinds: tuple[str, ...]
    rendered: tuple[bool, ...]  # whether the world ever shows the kind
    forms: tuple[tuple[str, ...], ...]  # per kind: surface forms (name, plural, synonyms, ...)
    attributes: tuple[tuple[str, ...], ...]  # per kind: attributes it is described with
    words: tuple[str, ...]  # index 0 = <pad>, 1 = <unk>

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PhraseVocabulary:
        return cls(**{k: tuple(tuple(x) if isinstance(x, list) else x for x in v) for k, v in data.items()})


def words_of(phrase: str) -> list[str]:
    return _WORD.findall(phrase.lower())


def build_vocabulary(world: Sequence[WorldImage]) -> PhraseVocabulary:
    """Kinds = the world's object names ∪ fidelity's scene, never-rendered and extra urban nouns."""
    from urbanln_bench.captions import fidelity
    from urbanln_bench.captions.synthetic_captioner import FAKE_ATTRIBUTES

    seen: dict[str, set[str]] = {}
    for item in world:
        for obj in item.graph.get("objects", ()):
            seen.setdefault(str(obj["name"]), set()).update(str(a) for a in obj.get("attributes", ()))
    names = set(seen)
    for pool in (*fidelity.SCENE_VOCABULARY.values(), *fidelity.PLAUSIBLE_ABSENT.values(), fidelity.EXTRA_OBJECT_NOUNS):
        names.update(pool)
    kinds = tuple(sorted(names))
    synonyms: dict[str, list[str]] = {}
    for surface, canonical in sorted(fidelity.SYNONYMS.items()):
        if surface != canonical and surface not in names:
            synonyms.setdefault(canonical, []).append(surface)
    forms, attributes = [], []
    for kind in kinds:
        variants = [kind, fidelity.plural(kind)]
        for surface in synonyms.get(kind, ()):
            variants += [surface, fidelity.plural(surface)]
        if kind.endswith(" building"):
            variants.append(kind[: -len(" building")])  # "tall office" (a parser cut of "tall office building")
        forms.append(tuple(dict.fromkeys(variants)))
        attributes.append(tuple(sorted(seen.get(kind, ()))) or tuple(FAKE_ATTRIBUTES.get(kind, ())))
    vocabulary = sorted({w for f in forms for v in f for w in words_of(v)} | {w for a in attributes for v in a
                                                                             for w in words_of(v)})
    return PhraseVocabulary(kinds, tuple(k in seen for k in kinds), tuple(forms), tuple(attributes),
                            ("<pad>", "<unk>", *vocabulary))


def tokenize(phrases: Sequence[str], words: Sequence[str] | Mapping[str, int]):
    """(n, MAX_WORDS) long tensor of word ids (the last MAX_WORDS words; <unk> for unknown words)."""
    import torch

    index = words if isinstance(words, Mapping) else {w: i for i, w in enumerate(words)}
    out = torch.zeros((len(phrases), MAX_WORDS), dtype=torch.long)
    for row, phrase in enumerate(phrases):
        ids = [index.get(w, UNK) for w in words_of(phrase)][-MAX_WORDS:] or [UNK]
        out[row, :len(ids)] = torch.tensor(ids)
    return out


# --------------------------------------------------------------------------------------------------
# The model


def build_grounder(config: GroundingConfig, n_words: int):
    """The dual encoder (randomly initialised)."""
    import torch
    from torch import nn

    class ImageTower(nn.Module):
        """A stride-8 CNN feature map of the whole image, pooled per region (the Fast R-CNN way)."""

        def __init__(self) -> None:
            super().__init__()
            w = config.width
            layers: list[nn.Module] = []
            channels = 3
            for out_channels, stride in ((w, 2), (2 * w, 2), (4 * w, 2), (4 * w, 1)):
                layers += [nn.Conv2d(channels, out_channels, 3, stride, 1, bias=False), nn.BatchNorm2d(out_channels),
                           nn.ReLU(inplace=True)]
                channels = out_channels
            self.features = nn.Sequential(*layers)
            pooled = channels * (config.region_grid ** 2 + 1) + 2
            self.head = nn.Sequential(nn.Linear(pooled, 2 * config.embed_dim), nn.ReLU(inplace=True),
                                      nn.Linear(2 * config.embed_dim, config.embed_dim))

        def forward(self, images, boxes):
            """``images`` (N, 3, H, W) normalised; ``boxes`` (R, 5) rows (image index, x1, y1, x2, y2) in pixel
            corners (x2, y2 exclusive). One feature per region, unnormalised."""
            from torchvision.ops import roi_align, roi_pool

            maps = self.features(images)
            scale = maps.shape[-1] / images.shape[-1]
            grid = config.region_grid
            average = roi_align(maps, boxes, output_size=(grid, grid), spatial_scale=scale, sampling_ratio=-1,
                                aligned=True)
            peak = roi_pool(maps, boxes, output_size=(1, 1), spatial_scale=scale)
            height, width = images.shape[2], images.shape[3]
            geometry = torch.stack([(boxes[:, 3] - boxes[:, 1]) / width, (boxes[:, 4] - boxes[:, 2]) / height], dim=1)
            return self.head(torch.cat([average.flatten(1), peak.flatten(1), geometry], dim=1))

    class TextTower(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.words = nn.Embedding(n_words, config.word_dim, padding_idx=PAD)
            self.heads = nn.Embedding(n_words, config.word_dim, padding_idx=PAD)
            self.mlp = nn.Sequential(nn.Linear(2 * config.word_dim, 2 * config.embed_dim), nn.ReLU(inplace=True),
                                     nn.Linear(2 * config.embed_dim, config.embed_dim))

        def forward(self, tokens):
            mask = (tokens != PAD).float()
            mean = (self.words(tokens) * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
            last = tokens.gather(1, (mask.sum(1).long() - 1).clamp(min=0)[:, None])[:, 0]
            return self.mlp(torch.cat([mean, self.heads(last)], dim=1))

    class Grounder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.image = ImageTower()
            self.text = TextTower()
            self.scale = nn.Parameter(torch.tensor(math.log(10.0)))
            self.bias = nn.Parameter(torch.tensor(-3.0))

        def logits(self, image_features, text_features):
            """(n_regions, n_phrases) logits from L2-normalised features."""
            return self.scale.exp() * image_features @ text_features.T + self.bias

    return Grounder()


def to_tensor(image: np.ndarray):
    """uint8 (H, W, 3) → float (3, H, W), centred and scaled."""
    import torch

    return (torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1).float() / 255.0 - 0.5) / 0.25


# --------------------------------------------------------------------------------------------------
# Training


def _sample_boxes(rng: np.random.Generator, width: int, height: int, n: int) -> list[Box | None]:
    """The whole image and ``n − 1`` random boxes (sides 15–100 % of the image's, anywhere in it)."""
    out: list[Box | None] = [None]
    for _ in range(n - 1):
        w = max(2, int(round(width * rng.uniform(0.15, 1.0))))
        h = max(2, int(round(height * rng.uniform(0.15, 1.0))))
        x0, y0 = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        out.append((x0, y0, x0 + w, y0 + h))
    return out


def _object_arrays(graph: Mapping[str, Any], kind_index: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
    objects = graph.get("objects", ())
    boxes = np.array([o["bbox"] for o in objects], np.float64).reshape(-1, 4)
    return boxes, np.array([kind_index[str(o["name"])] for o in objects], np.int64)


def _labels(objects: tuple[np.ndarray, np.ndarray], box: Box | None, n_kinds: int) -> np.ndarray:
    """1 shown, 0 absent (touches nowhere), −1 not trained on (touches but is not shown): ``region_kinds``, vectorised."""
    boxes, kinds = objects
    out = np.zeros(n_kinds, np.float32)
    if box is None:
        out[kinds] = 1.0
        return out
    bx0, by0, bx1, by1 = box
    overlap = (np.clip(np.minimum(boxes[:, 2], bx1) - np.maximum(boxes[:, 0], bx0), 0, None)
               * np.clip(np.minimum(boxes[:, 3], by1) - np.maximum(boxes[:, 1], by0), 0, None))
    area = np.maximum(1e-9, (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    shown = (overlap / area >= 0.5) | (overlap / max(1e-9, (bx1 - bx0) * (by1 - by0)) >= 0.25)
    out[kinds[overlap > 0]] = -1.0
    out[kinds[shown]] = 1.0
    return out


def _sample_phrases(vocab: PhraseVocabulary, rng: np.random.Generator, n_junk: int) -> list[str]:
    """One phrase per kind (a random surface form, half with one of the kind's attributes) and ``n_junk``
    phrases of words the text tower does not know."""
    phrases = []
    for forms, attributes in zip(vocab.forms, vocab.attributes, strict=True):
        phrase = forms[int(rng.integers(len(forms)))]
        if attributes and rng.random() < 0.5:
            phrase = f"{attributes[int(rng.integers(len(attributes)))]} {phrase}"
        phrases.append(phrase)
    for _ in range(n_junk):
        phrases.append(" ".join(f"xq{int(rng.integers(10**6))}" for _ in range(int(rng.integers(1, 4)))))
    return phrases


def _kind_weights(config: GroundingConfig, samples_by_shape: Mapping[tuple[int, ...], list[int]],
                  objects: Sequence[tuple[np.ndarray, np.ndarray]], n_kinds: int, max_weight: float = 20.0):
    """Per-kind loss weights that give each rendered kind's positives and negatives equal total weight.

    Without them the score is mostly the kind's base rate (common kinds always kept, rare ones always
    dropped); balanced, it measures the evidence in the region. Counted on one epoch's worth of
    regions drawn like the training ones; kinds the world never shows keep weight 1 (negatives only).
    """
    import torch

    rng = np.random.default_rng(config.seed + 1)
    positives, negatives = np.zeros(n_kinds), np.zeros(n_kinds)
    for shape, members in samples_by_shape.items():
        for index in members:
            for box in _sample_boxes(rng, shape[1], shape[0], config.boxes_per_image):
                labels = _labels(objects[index], box, n_kinds)
                positives += labels > 0
                negatives += labels == 0
    total = positives + negatives
    with np.errstate(divide="ignore", invalid="ignore"):
        positive = np.where(positives > 0, total / (2 * positives), 1.0)
        negative = np.where(positives > 0, total / (2 * np.maximum(negatives, 1)), 1.0)
    scale = np.clip(np.stack([positive, negative]), 0.0, max_weight)
    return torch.tensor(scale[0], dtype=torch.float32), torch.tensor(scale[1], dtype=torch.float32)


def _steps_per_epoch(config: GroundingConfig, samples_by_shape: Mapping[tuple[int, ...], list[int]]) -> int:
    return sum(math.ceil(len(m) / config.images_per_batch) for m in samples_by_shape.values())


def grounder_training_set(items: Sequence[WorldImage], vocab: PhraseVocabulary) -> tuple[
        dict[tuple[int, ...], Any], dict[tuple[int, ...], list[int]], list[tuple[np.ndarray, np.ndarray]]]:
    """What :func:`fit_grounder` trains on: the images stacked per image size (normalised tensors), each
    size's members (indices into ``items``, in order) and each image's objects as (boxes, kind ids)."""
    import torch

    kind_index = {k: i for i, k in enumerate(vocab.kinds)}
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, item in enumerate(items):
        by_shape.setdefault(item.image.shape, []).append(i)
    images = {shape: torch.stack([to_tensor(items[i].image) for i in members]) for shape, members in by_shape.items()}
    objects = [_object_arrays(item.graph, kind_index) for item in items]
    return images, by_shape, objects


@dataclass
class GrounderFit:
    """A trained grounder (eval mode) and its training losses, per epoch and step."""

    model: Any
    step_losses: list[list[float]]

    def epoch_mean_loss(self) -> list[float]:
        return [round(float(np.mean(epoch)), 4) for epoch in self.step_losses]


def fit_grounder(config: GroundingConfig, vocab: PhraseVocabulary, images: Mapping[tuple[int, ...], Any],
                 samples_by_shape: Mapping[tuple[int, ...], list[int]],
                 objects: Sequence[tuple[np.ndarray, np.ndarray]], progress: Progress | None = None) -> GrounderFit:
    """The training loop, from a model initialised from ``config.seed`` (inputs from
    :func:`grounder_training_set`): each epoch every image once, with ``boxes_per_image`` regions; batches
    of one image size. Deterministic on CPU (run it under :func:`one_torch_thread`, as the cache does)."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(config.seed)
    n_junk = 4
    word_index = {w: i for i, w in enumerate(vocab.words)}
    positive_weight, negative_weight = _kind_weights(config, samples_by_shape, objects, len(vocab.kinds))
    junk = torch.ones(n_junk)
    total_steps = config.epochs * _steps_per_epoch(config, samples_by_shape)
    warmup = max(1, total_steps // 20)
    losses: list[list[float]] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_grounder(config, len(vocab.words))
        model.train()
        optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: min(
            (step + 1) / warmup, 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total_steps - warmup))))))
        advance = progress(f"training the '{config.profile}' phrase grounder on the pretraining world",
                           total_steps) if progress else None
        for _ in range(config.epochs):
            batches = []
            for shape, members in samples_by_shape.items():
                order = rng.permutation(len(members))
                batches += [(shape, order[s:s + config.images_per_batch].tolist())
                            for s in range(0, len(members), config.images_per_batch)]
            epoch_losses = []
            for b in rng.permutation(len(batches)):
                shape, slots = batches[int(b)]
                if len(slots) < 2:
                    continue
                height, width = shape[0], shape[1]
                pixels = images[shape][slots]
                flip = rng.random(len(slots)) < 0.5  # horizontal flips: the image and its boxes
                pixels = torch.where(torch.from_numpy(flip).view(-1, 1, 1, 1), pixels.flip(-1), pixels)
                rows, labels = [], []
                for position, slot in enumerate(slots):
                    index = samples_by_shape[shape][slot]
                    for box in _sample_boxes(rng, width, height, config.boxes_per_image):
                        labels.append(_labels(objects[index], box, len(vocab.kinds)))
                        x0, y0, x1, y1 = box or (0, 0, width, height)
                        rows.append([position, width - x1, y0, width - x0, y1] if flip[position]
                                    else [position, x0, y0, x1, y1])
                rows_t = torch.tensor(rows, dtype=torch.float32)
                labels_t = torch.from_numpy(np.concatenate([np.stack(labels),
                                                            np.zeros((len(labels), n_junk), np.float32)], 1))
                tokens = tokenize(_sample_phrases(vocab, rng, n_junk), word_index)
                # modifiers dropped to <unk> now and then: an unknown adjective must not decide the score
                drop = torch.from_numpy(rng.random(tuple(tokens.shape)) < 0.1) & (tokens != PAD)
                drop &= torch.arange(MAX_WORDS)[None, :] < (tokens != PAD).sum(1, keepdim=True) - 1
                tokens = torch.where(drop, torch.full_like(tokens, UNK), tokens)
                image_features = F.normalize(model.image(pixels, rows_t), dim=-1)
                text_features = F.normalize(model.text(tokens), dim=-1)
                logits = model.logits(image_features, text_features)
                weights = torch.where(labels_t > 0, torch.cat([positive_weight, junk]),
                                      torch.cat([negative_weight, junk]))
                mask = labels_t >= 0
                loss = F.binary_cross_entropy_with_logits(logits[mask], labels_t[mask], weight=weights[mask])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                schedule.step()
                epoch_losses.append(float(loss.detach()))
                if advance:
                    advance(1)
            losses.append(epoch_losses)
    model.eval()
    return GrounderFit(model, losses)


def train_grounder(config: GroundingConfig, path: Path, progress: Progress | None = None,
                   provenance: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Train ``config``'s grounder on the pretraining world's training images and write it atomically.

    Deterministic on CPU for a given recipe and world (fixed seeds, one thread).
    """
    import torch

    from urbanln_bench.cache import atomic_write_text

    started = time.perf_counter()
    world, manifests = world_images(config.profile)
    vocab = build_vocabulary(world)
    train = [w for w in world if not is_holdout(w.uid, config.holdout_fraction)]
    images, by_shape, objects = grounder_training_set(train, vocab)
    loaded = time.perf_counter()
    with one_torch_thread():
        fit = fit_grounder(config, vocab, images, by_shape, objects, progress)
    model, losses = fit.model, fit.epoch_mean_loss()
    trained = time.perf_counter()
    report = {
        **(provenance or {}),
        "profile": config.profile,
        "n_world_images": len(world), "n_train_images": len(train), "n_holdout_images": len(world) - len(train),
        "n_kinds": len(vocab.kinds), "n_rendered_kinds": int(sum(vocab.rendered)), "n_words": len(vocab.words),
        "steps": config.epochs * _steps_per_epoch(config, by_shape),
        "epoch_mean_loss": losses,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "seconds": {"load": round(loaded - started, 1), "train": round(trained - loaded, 1),
                    "total": round(time.perf_counter() - started, 1)},
        "world_manifests": manifests,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path.with_suffix(".json"), json.dumps(report, indent=1, sort_keys=True, default=str) + "\n")
    tmp = path.with_suffix(".pt.tmp")
    torch.save({"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "config": asdict(config), "vocabulary": vocab.as_dict(), "key": report.get("key", "")}, tmp)
    os.replace(tmp, path)
    return report


# --------------------------------------------------------------------------------------------------
# Cache


def grounder_key(config: GroundingConfig) -> tuple[str, dict[str, Any]]:
    """Key over everything that changes the checkpoint: recipe, world content, vocabulary sources, code version."""
    import torch

    from urbanln_bench.backbones.world_data import world_manifests
    from urbanln_bench.cache import config_hash
    from urbanln_bench.captions import fidelity
    from urbanln_bench.captions.synthetic_captioner import FAKE_ATTRIBUTES

    inputs = {
        "train": asdict(config),
        "world": world_manifests(config.profile),
        "vocabulary_sources": {"scene": fidelity.SCENE_VOCABULARY, "absent": fidelity.PLAUSIBLE_ABSENT,
                               "extra": fidelity.EXTRA_OBJECT_NOUNS, "synonyms": fidelity.SYNONYMS,
                               "fake_attributes": FAKE_ATTRIBUTES},
        "torch": torch.__version__.split("+")[0],
        "version": GROUNDING_VERSION,
    }
    return config_hash(inputs), inputs


def grounder_label(profile: str, key: str) -> str:
    return (f"{GROUNDER_LABEL}: '{profile}' dual encoder (CNN regions, word-embedding phrases) trained from scratch "
            f"on pretraining-world crops with object phrases from the world's scene graphs ({key})")


@dataclass
class Grounder:
    """A loaded grounder: model (eval mode), vocabulary, recipe, label."""

    model: Any
    vocabulary: PhraseVocabulary
    config: GroundingConfig
    source: str
    key: str
    path: Path

    def report(self) -> dict[str, Any]:
        sidecar = self.path.with_suffix(".json")
        return json.loads(sidecar.read_text()) if sidecar.exists() else {}


def grounder_path(profile: str) -> tuple[Path, str, dict[str, Any]]:
    from urbanln_bench.cache import cache_root

    config = grounding_config(profile)
    key, inputs = grounder_key(config)
    return cache_root() / "backbones" / f"phrase-grounder-{profile}-{key}.pt", key, inputs


def load_grounder(profile: str, progress: Progress | None = None) -> Grounder:
    """The cached grounder of ``profile`` (trained on first use)."""
    import torch

    from urbanln_bench.cache import file_lock, note_build

    config = grounding_config(profile)
    path, key, inputs = grounder_path(profile)
    label = grounder_label(profile, key)
    if not path.exists():
        with file_lock(path.with_suffix(".lock")):
            if not path.exists():
                started = time.perf_counter()
                train_grounder(config, path, progress=progress, provenance={"key": key, "source": label, **inputs})
                note_build("grounder", path.name, started)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    vocabulary = PhraseVocabulary.from_dict(checkpoint["vocabulary"])
    model = build_grounder(config, len(vocabulary.words))
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()
    return Grounder(model, vocabulary, config, label, key, path)
