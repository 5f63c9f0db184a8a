"""The shared pair-sampling trainer (docs/methods.md): sample (anchor, positive[, negative]) regions, turn each
into one of its images, augment, embed in one forward pass, apply the objective, step.

Deterministic by construction: the model is initialised under ``torch.manual_seed(seed)`` inside a
forked RNG (the global state is left as it was), and every sampling and augmentation draw comes from
one ``torch.Generator`` seeded with the same seed. Same seed, same machine → same weights.

One epoch = one pass over the anchor regions in a random order (``pairs_per_epoch`` > 0 instead draws
that many anchors with replacement, as MuseCL's fixed 10,000-triplet file and Tile2Vec's 100k triplets
do). There is no validation split: the paper-faithful stopping rules (MuseCL restores the best
validation-loss weights) would need held-out pairs that a few-hundred-region city cannot spare; the
last epoch's weights are kept.

Under ``torchrun`` (docs/torchrun.md) N processes train one model as one process would with the same
global batch: every rank draws the same global batch (sampling and augmentation from the same seeded
generator, so the generators stay in step), encodes its contiguous shard of each group (anchors,
positives, negatives), gathers the embeddings with gradient (``distributed.gather_rows``) and applies
the objective to the global batch; batch norm uses the global batch's statistics
(``distributed.global_batch_norm``) and the gradients are averaged before each step. ``batch_size``,
``max_images`` and the steps stay global. Rank 0 alone saves checkpoints (``cached_state``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from urbanln_bench import distributed
from urbanln_bench.pair_training.augment import AUGMENTATIONS
from urbanln_bench.pair_training.samplers import Candidates

# bump when the pair trainer (this loop, or the samplers, losses, augmentations or encoders of
# pair_training) changes what it produces; pinned by tests/test_training_golden.py (docs/identity.md)
PAIR_TRAINER_VERSION = 1


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int
    lr: float
    optimiser: str = "adam"  # adam | adamw
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    amsgrad: bool = False
    augment: str = "none"  # see augment.AUGMENTATIONS
    pairs_per_epoch: int = 0  # 0: every anchor region once per epoch
    seed: int = 0
    # the images-seen budget (profiles.IMAGES_SEEN_BUDGETS): > 0 trains epoch after epoch until the next
    # batch would exceed it, and ``epochs`` is ignored; 0 trains ``epochs`` epochs
    max_images: int = 0

    def __post_init__(self) -> None:
        if self.optimiser not in ("adam", "adamw"):
            raise ValueError(f"optimiser must be 'adam' or 'adamw', got {self.optimiser!r}")
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}, got {self.augment!r}")
        if self.epochs < 0 or self.batch_size < 2 or self.max_images < 0:
            raise ValueError("epochs and max_images must be ≥ 0 and batch_size ≥ 2")


@dataclass
class ImageSet:
    """Preprocessed images of one imagery with the region each belongs to."""

    pixels: torch.Tensor  # (N, 3, S, S), normalised as the harness does at embedding time
    owner: np.ndarray  # (N,) region index of each image
    n_regions: int

    def __post_init__(self) -> None:
        order = np.argsort(self.owner, kind="stable")
        bounds = np.searchsorted(self.owner[order], np.arange(self.n_regions + 1))
        self.by_region: list[np.ndarray] = [order[bounds[r]:bounds[r + 1]] for r in range(self.n_regions)]

    def has_images(self) -> np.ndarray:
        return np.asarray([len(i) > 0 for i in self.by_region])

    def sample(self, regions: np.ndarray, generator: torch.Generator) -> np.ndarray:
        """One image index per region, uniformly among the region's images."""
        counts = np.asarray([len(self.by_region[r]) for r in regions])
        u = torch.rand(len(regions), generator=generator, dtype=torch.float64).numpy()
        pick = np.minimum((u * counts).astype(np.int64), counts - 1)
        return np.asarray([self.by_region[r][k] for r, k in zip(regions, pick, strict=True)], dtype=np.int64)


def load_image_set(city, imagery: str, size: int, mean: Sequence[float], std: Sequence[float],
                   max_per_region: int | None = None) -> ImageSet:
    """Every ``SI`` tile, or every ``SV`` image (at most ``max_per_region`` per region, file order),
    preprocessed exactly like the harness's sealed embedding (``embed.preprocess``)."""
    from urbanln_bench.embed import preprocess

    index = city.regions.index()
    if imagery == "SI":
        image_ids = city.satellite_ids()
        owners = [index[i] for i in image_ids]
    elif imagery == "SV":
        image_ids, owners = [], []
        for rid in city.regions.ids:
            views = city.streetview_ids(rid)[:max_per_region] if max_per_region else city.streetview_ids(rid)
            image_ids += views
            owners += [index[rid]] * len(views)
    else:
        raise ValueError(f"imagery must be 'SI' or 'SV', got {imagery!r}")
    chunks = [preprocess(batch.images, size, mean, std) for batch in city.iter_images(image_ids, 256)]
    pixels = torch.cat(chunks) if chunks else torch.zeros(0, 3, size, size)
    return ImageSet(pixels, np.asarray(owners, dtype=np.int64), len(city.regions.ids))


@dataclass
class TrainLog:
    epoch_loss: list[float]
    steps: int
    seconds: float
    anchors: int
    images: int
    parameters: int
    images_seen: int = 0  # every image of every anchor, positive and negative the encoder saw (the budget)

    def as_dict(self) -> dict:
        return asdict(self)


def init_model(build: Callable[[], torch.nn.Module], seed: int) -> torch.nn.Module:
    """Build a model with weights drawn from ``seed``, leaving the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _optimiser(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimiser == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay,
                                 amsgrad=config.amsgrad)
    return torch.optim.Adam(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay,
                            amsgrad=config.amsgrad)


def train_pairs(model: torch.nn.Module, images: ImageSet, objective, positives: Candidates, negatives,
                config: TrainConfig, *, device: str = "cpu", progress: Callable | None = None,
                description: str = "pair training") -> TrainLog:
    """Train ``model`` in place on sampled pairs/triplets and return the log.

    ``objective``: callable(list of embeddings, list of region-id tensors) → loss, with ``arity`` 2
    (anchor, positive) or 3 (anchor, positive, negative). ``positives``: :class:`Candidates` over regions;
    ``negatives``: an object with ``sample(anchors, generator)`` (needed for arity 3). Anchors are the
    regions with images and at least one positive that has images.
    """
    has_images = images.has_images()
    positives = positives.restrict(has_images)
    anchors = positives.anchors()
    if len(anchors) < 2:
        raise ValueError(f"{description}: fewer than two regions have both images and a positive to pair with")
    if objective.arity == 3 and negatives is None:
        raise ValueError(f"{description}: a triplet objective needs a negative sampler")
    augment = AUGMENTATIONS[config.augment]
    generator = torch.Generator().manual_seed(config.seed)
    optimiser = _optimiser(model, config)
    per_epoch = config.pairs_per_epoch or len(anchors)
    batches = (per_epoch + config.batch_size - 1) // config.batch_size
    if config.max_images:  # the budget fixes the number of steps in advance (every batch but an epoch's
        # last holds batch_size anchors; arity images each)
        advance = progress(description, config.max_images // (config.batch_size * objective.arity)) if progress else None
    else:
        advance = progress(description, config.epochs * batches) if progress else None
    model.to(device).train()
    world = distributed.current()
    distributed.broadcast_module(model, world)  # one starting model on every rank
    # a batch must give every rank a row (one process: two, for in-batch negatives and batch norm)
    smallest = max(2, world.size)
    started = time.perf_counter()
    with distributed.global_batch_norm(model, world):
        steps, seen, epoch_loss = _train_epochs(model, images, objective, positives, negatives, config, anchors,
                                                generator, optimiser, augment, device, advance, world, smallest)
    model.eval()
    return TrainLog(epoch_loss, steps, time.perf_counter() - started, int(len(anchors)), int(len(images.pixels)),
                    sum(p.numel() for p in model.parameters()), seen)


def _train_epochs(model, images: ImageSet, objective, positives: Candidates, negatives, config: TrainConfig,
                  anchors: np.ndarray, generator: torch.Generator, optimiser, augment, device: str,
                  advance: Callable | None, world: distributed.World, smallest: int) -> tuple[int, int, list[float]]:
    """The epochs of ``train_pairs``: (steps, images seen, mean loss per epoch), all global."""
    per_epoch = config.pairs_per_epoch or len(anchors)
    epoch_loss: list[float] = []
    steps = seen = 0
    epoch = 0
    exhausted = False
    while not exhausted and (config.max_images or epoch < config.epochs):
        epoch += 1
        if config.pairs_per_epoch:
            order = anchors[torch.randint(len(anchors), (per_epoch,), generator=generator).numpy()]
        else:
            order = anchors[torch.randperm(len(anchors), generator=generator).numpy()]
        total, count = 0.0, 0
        for start in range(0, per_epoch, config.batch_size):
            batch = order[start:start + config.batch_size]
            if len(batch) < smallest:  # a batch of one has no in-batch negatives and breaks batch norm
                continue
            if config.max_images and steps and seen + len(batch) * objective.arity > config.max_images:
                exhausted = True
                break
            regions = [batch, positives.sample(batch, generator)]
            if objective.arity == 3:
                regions.append(negatives.sample(batch, generator))
            image_index = np.concatenate([images.sample(r, generator) for r in regions])
            pixels = augment(images.pixels[torch.from_numpy(image_index)], generator)
            seen += len(image_index)
            sizes = world.shard_sizes(len(batch))
            if world.active:  # this rank's rows of each group (anchors, positives[, negatives])
                pixels = pixels.reshape(len(regions), len(batch), *pixels.shape[1:])[:, world.shard(len(batch))]
                pixels = pixels.reshape(-1, *pixels.shape[2:])
            embeddings = [distributed.gather_rows(part, world, sizes)
                          for part in model(pixels.to(device)).split(sizes[world.rank])]
            loss = objective(embeddings, [torch.from_numpy(r) for r in regions])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            distributed.average_gradients(list(model.parameters()), world)
            optimiser.step()
            total += float(loss.detach()) * len(batch)
            count += len(batch)
            steps += 1
            if advance:
                advance(1)
        if count or not config.max_images:  # an epoch the budget ended before its first step has no loss
            epoch_loss.append(total / max(count, 1))
    return steps, seen, epoch_loss


def cached_state(path: Path, model: torch.nn.Module, train: Callable[[], dict]) -> dict:
    """Load ``model``'s weights from ``path`` when a previous fit saved them there; otherwise run ``train``
    (which returns a JSON-able log) and save weights + log atomically. ``path`` lives in the fit's private
    work folder, whose key covers the method config, data and seed.

    Under torchrun every rank trains (``train`` is collective) and rank 0 alone saves; rank 0 decides
    whether the checkpoint exists, so all ranks either load or train together."""
    world = distributed.current()
    log_path = path.with_suffix(".json")
    if distributed.broadcast_object(path.exists() and log_path.exists(), world):
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        model.eval()
        return json.loads(log_path.read_text())
    log = train()
    if world.is_main:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, path)
        from urbanln_bench.cache import atomic_write_text

        atomic_write_text(log_path, json.dumps(log, indent=1, sort_keys=True) + "\n")
    distributed.barrier(world)
    return log
