"""Batch augmentations on preprocessed tensors, every random draw from an explicit ``torch.Generator``.

- ``dihedral``: Tile2Vec's random horizontal/vertical flips and 90° rotations — the 8 symmetries of a
  square tile, one drawn per image.
- ``simclr``: PG-SimCLR's SimCLR-style random resized crop (scale 0.08–1, aspect 3/4–4/3, resized back to
  the input size) plus a horizontal flip with probability ½ (``config.yaml``; no colour jitter there).
- ``flip``: horizontal flip only; ``none``: identity (MuseCL: resize then crop, no flips; the harness's
  resize stands in for it).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def no_augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return x


def horizontal_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(len(x), generator=generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)


def dihedral(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One of the 8 flips/rotations of a square image per sample."""
    rotations = torch.randint(4, (len(x),), generator=generator)
    flips = torch.rand(len(x), generator=generator) < 0.5
    out = torch.where(flips.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)
    result = out.clone()
    for k in (1, 2, 3):
        chosen = (rotations == k).nonzero().flatten().to(x.device)
        if len(chosen):
            result[chosen] = torch.rot90(out[chosen], k, dims=(-2, -1))
    return result


def random_resized_crop_boxes(n: int, size: int, generator: torch.Generator, scale=(0.08, 1.0),
                              ratio=(3 / 4, 4 / 3)) -> torch.Tensor:
    """torchvision's RandomResizedCrop box sampling (10 tries, then the whole image), vectorised."""
    area = size * size
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    boxes = torch.tensor([[0.0, 0.0, float(size), float(size)]]).repeat(n, 1)
    done = torch.zeros(n, dtype=torch.bool)
    for _ in range(10):
        target = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(n, generator=generator, dtype=torch.float64))
        aspect = torch.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * torch.rand(n, generator=generator,
                                                                                      dtype=torch.float64))
        w = torch.round(torch.sqrt(target * aspect))
        h = torch.round(torch.sqrt(target / aspect))
        fits = (w > 0) & (h > 0) & (w <= size) & (h <= size) & ~done
        top = torch.floor(torch.rand(n, generator=generator, dtype=torch.float64) * (size - h + 1))
        left = torch.floor(torch.rand(n, generator=generator, dtype=torch.float64) * (size - w + 1))
        proposal = torch.stack([left, top, left + w, top + h], dim=1).float()
        boxes[fits] = proposal[fits]
        done |= fits
    return boxes


def simclr_crop_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random resized crop back to the input size (bilinear, one affine ``grid_sample``), then a random h-flip."""
    import torch.nn.functional as F

    size = x.shape[-1]
    boxes = random_resized_crop_boxes(len(x), size, generator).to(x.device, x.dtype)
    theta = torch.zeros(len(x), 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = (boxes[:, 2] - boxes[:, 0]) / size
    theta[:, 1, 1] = (boxes[:, 3] - boxes[:, 1]) / size
    theta[:, 0, 2] = (boxes[:, 0] + boxes[:, 2]) / size - 1.0
    theta[:, 1, 2] = (boxes[:, 1] + boxes[:, 3]) / size - 1.0
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    crops = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return horizontal_flip(crops, generator)


AUGMENTATIONS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "none": no_augment,
    "flip": horizontal_flip,
    "dihedral": dihedral,
    "simclr": simclr_crop_flip,
}
