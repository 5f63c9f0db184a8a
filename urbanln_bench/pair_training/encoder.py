"""A ResNet-18-style image encoder trained from scratch, with an optional projection head.

All three pair-trained baselines use a ResNet-18 trunk from random initialisation: Tile2Vec's TileNet
(a ResNet-18-like net, z = 512), PG-SimCLR (ResNet-18 from scratch, 512-d ``h`` + 64-d projection) and
MuseCL's remote-sensing encoder (ResNet-18 + 128-d head). ``width=64`` is torchvision's ResNet-18
exactly (``backbones.resnet.build_resnet18``); a smaller ``width`` keeps the depth and block layout
([2, 2, 2, 2] basic blocks, ImageNet stem) with ``width·(1, 2, 4, 8)`` channels — the CPU profiles use
it to pretrain in minutes on two cores (FLOPs fall with width²).
"""

from __future__ import annotations

import torch
from torch import nn


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


def resnet18_trunk(width: int = 64) -> nn.Module:
    """ResNet-18 without its classifier: (B, 3, S, S) → (B, 8·width) global-average-pooled features."""
    if width == 64:
        from urbanln_bench.backbones.resnet import build_resnet18

        model = build_resnet18()
        model.fc = nn.Identity()
        return model
    layers: list[nn.Module] = [nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                               nn.MaxPool2d(3, 2, 1)]
    channels = width
    for stage, multiple in enumerate((1, 2, 4, 8)):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            layers.append(_BasicBlock(channels, width * multiple, stride))
            channels = width * multiple
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    trunk = nn.Sequential(*layers)
    for module in trunk.modules():  # torchvision's initialisation
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return trunk


class PairEncoder(nn.Module):
    """Trunk → ``h`` (8·width) → head → ``z``. ``forward`` gives what the loss sees (``z``);
    ``embed`` gives what the method hands the harness (``h`` or ``z``, per ``embed_from``).

    Heads: ``none`` (z = h; Tile2Vec's TileNet), ``linear`` (one Linear to ``out_dim``; MuseCL's 128-d
    head), ``simclr`` (Linear(d, d, no bias), ReLU, Linear(d, out_dim, no bias); SimCLR's projector).
    """

    def __init__(self, width: int = 64, head: str = "none", out_dim: int = 0, embed_from: str = "z") -> None:
        super().__init__()
        self.trunk = resnet18_trunk(width)
        features = 8 * width
        if head == "none":
            self.head: nn.Module = nn.Identity()
            out_dim = features
        elif head == "linear":
            self.head = nn.Linear(features, out_dim)
        elif head == "simclr":
            self.head = nn.Sequential(nn.Linear(features, features, bias=False), nn.ReLU(),
                                      nn.Linear(features, out_dim, bias=False))
        else:
            raise ValueError(f"head must be none, linear or simclr, got {head!r}")
        if embed_from not in ("h", "z"):
            raise ValueError(f"embed_from must be 'h' or 'z', got {embed_from!r}")
        self.embed_from = embed_from
        self.feature_dim = features
        self.out_dim = out_dim

    @property
    def embed_dim(self) -> int:
        return self.feature_dim if self.embed_from == "h" else self.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        h = self.trunk(x)
        return h if self.embed_from == "h" else self.head(h)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
