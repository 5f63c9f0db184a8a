"""ResNet-18 (torchvision) with an explicit weight source.

1. ``weights = PATH``: a local torchvision state dict (e.g. ImageNet ``resnet18-f37072fd.pth``);
2. else the torch hub cache (``$TORCH_HOME/hub/checkpoints/resnet18-f37072fd.pth``) when present;
3. else a **surrogate**: ResNet-18 trained by the harness, supervised (multi-label object presence
   from scene graphs, BCE), on the pretraining world — never on a benchmark twin — and cached under a
   key of its training config and the world's data hashes. Every result names which one it used.
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from urbanln_bench.cache import atomic_write_bytes, cache_root, config_hash, file_lock, note_build
from urbanln_bench.errors import UserError
from urbanln_bench.profiles import recipe

IMAGENET_FILE = "resnet18-f37072fd.pth"


@dataclass(frozen=True)
class SurrogateConfig:
    profile: str
    input_size: int
    epochs: int
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    # The smoke profile (tests and the regression suite) trains in float64: float32 training is chaotic
    # enough that another CPU's last-bit rounding moves the regression suite's R² by up to .4, float64 keeps
    # two CPUs' weights within 1e-12 (docs/identity.md). The saved weights are float32 either way.
    dtype: str = "float32"


SURROGATE_RECIPES = {
    "smoke": SurrogateConfig("smoke", input_size=32, epochs=2, dtype="float64"),
    "cpu": SurrogateConfig("cpu", input_size=64, epochs=4),
    "paper": SurrogateConfig("paper", input_size=224, epochs=30),
}


def file_digest(path: Path) -> str:
    """Short sha256 of a weights file (shown in weight-source labels)."""
    from urbanln_bench.data.manifest import file_sha256

    return file_sha256(path)[:16]


def local_imagenet_file(explicit: str) -> Path | None:
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise UserError(f"ResNet-18 weights file not found: {path}")
        return path
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    candidate = torch_home / "hub" / "checkpoints" / IMAGENET_FILE
    return candidate if candidate.is_file() else None


def build_resnet18(num_classes: int = 1000):
    import torchvision

    return torchvision.models.resnet18(weights=None, num_classes=num_classes)


def load_state(model, path: Path) -> None:
    """A torchvision ResNet-18 state dict (``resnet18-f37072fd.pth``; also wrapped in ``state_dict`` / with DDP
    ``module.`` prefixes, or without ``num_batches_tracked`` as the older ``resnet18-5c106cde.pth``); ``fc`` is dropped."""
    import pickle

    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        from urbanln_bench.backbones.checkpoints import needs_more_than_tensors, refused_pickle

        if needs_more_than_tensors(exc):
            raise UserError(refused_pickle(path, exc)) from None
        raise UserError(f"{path}: not a loadable torch state dict: {exc}") from None
    except Exception as exc:  # torch raises many types for a bad file
        raise UserError(f"{path}: not a loadable torch state dict: {exc}") from exc
    while isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"{path}: expected a state dict (dict of tensors), got {type(state).__name__}")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = model.state_dict()
    shapes = [f"{k} (file {tuple(v.shape)}, model {tuple(own[k].shape)})" for k, v in state.items()
              if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)]
    missing = [k for k in own if k not in state and not k.startswith("fc.") and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if shapes or missing or unexpected:
        raise UserError(f"{path}: does not fit torchvision's ResNet-18; mismatching keys: shape differs "
                        f"{shapes[:3]}, missing {missing[:3]}, unexpected {unexpected[:3]} "
                        f"({len(shapes)}, {len(missing)}, {len(unexpected)} in all). Pass a ResNet-18 state dict "
                        "such as torchvision's resnet18-f37072fd.pth")
    model.load_state_dict(state, strict=False)


def surrogate_key(config: SurrogateConfig) -> tuple[str, list[str]]:
    from urbanln_bench.backbones.world_data import world_manifests

    world = world_manifests(config.profile)
    train = asdict(config)
    if train["dtype"] == "float32":  # the default before dtype was a setting: keeps those keys
        del train["dtype"]
    return config_hash({"arch": "resnet18", "train": train, "world": world, "trainer": 1}), world


def surrogate_resnet18(profile: str, progress=None) -> tuple[Path, str]:
    """The cached surrogate checkpoint for ``profile`` (trained on first use) and its weight-source label."""
    config = recipe(SURROGATE_RECIPES, profile, "the ResNet-18 surrogate")
    key, _ = surrogate_key(config)
    path = cache_root() / "backbones" / f"resnet18-surrogate-{profile}-{key}.pt"
    source = f"surrogate: ResNet-18 supervised on the synthetic pretraining world ({profile} profile, {key})"
    if path.exists():
        return path, source
    with file_lock(path.with_suffix(".lock")):
        if not path.exists():
            started = time.perf_counter()
            train_surrogate(config, path, progress)
            note_build("surrogate", path.name, started)
    return path, source


def train_surrogate(config: SurrogateConfig, path: Path, progress=None) -> None:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from urbanln_bench.backbones.world_data import load_world_images
    from urbanln_bench.embed import preprocess

    world = load_world_images(config.profile)
    dtype = getattr(torch, config.dtype)
    torch.manual_seed(config.seed)
    model = build_resnet18(num_classes=len(world.vocabulary)).to(dtype)
    pixels = preprocess(world.images, config.input_size, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)).to(dtype)
    labels = torch.from_numpy(world.labels).to(dtype)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    n = len(pixels)
    steps = config.epochs * ((n + config.batch_size - 1) // config.batch_size)
    advance = progress("pretraining ResNet-18 surrogate on the pretraining world", steps) if progress else None
    model.train()
    for _ in range(config.epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, config.batch_size):
            idx = order[start:start + config.batch_size]
            batch = pixels[idx]
            flip = torch.rand(len(idx), generator=generator) < 0.5
            batch = torch.where(flip.view(-1, 1, 1, 1), batch.flip(-1), batch)
            loss = F.binary_cross_entropy_with_logits(model(batch), labels[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            if advance:
                advance(1)
    state = {k: v.float() if v.is_floating_point() else v
             for k, v in model.state_dict().items() if not k.startswith("fc.")}
    path.parent.mkdir(parents=True, exist_ok=True)
    # the vocabulary first: the checkpoint is what says the entry exists (a kill between the two used to
    # leave a checkpoint without its vocabulary)
    vocabulary = io.BytesIO()
    np.save(vocabulary, np.asarray(world.vocabulary))
    atomic_write_bytes(path.with_suffix(".vocab.npy"), vocabulary.getvalue())
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
