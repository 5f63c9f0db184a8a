"""Colour histogram: a joint 4×4×4 RGB histogram plus per-channel mean and std of each image — no
learning at all. A floor: a twin on which this comes close to the ceiling is too easy (DESIGN §4)."""

from __future__ import annotations

from urbanln_bench.method import Method, MethodMeta


def histogram_features(pixels, mean, std, bins: int = 4):
    """(B, 3, H, W) normalised pixels → (B, bins³ + 6) features."""
    import torch

    rgb = (pixels * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)).clamp(0, 1)
    q = (rgb * bins).long().clamp(max=bins - 1)
    index = (q[:, 0] * bins + q[:, 1]) * bins + q[:, 2]
    flat = index.flatten(1)
    hist = torch.zeros(len(pixels), bins ** 3).scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float32))
    hist = hist / flat.shape[1]
    return torch.cat([hist, rgb.mean(dim=(2, 3)), rgb.std(dim=(2, 3))], dim=1)


class ColorHistogram(Method):
    meta = MethodMeta(
        name="color-histogram",
        display_name="Colour histogram",
        version="1",
        imagery="either",
        native_imagery=("SV", "SI"),
        description="Joint 4×4×4 RGB histogram + channel mean/std (70-d). A floor: no learning.",
        role="floor",
        default_config={"input_size": 64},
    )

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.input_size = int(self.config["input_size"])

    def weight_source(self) -> str:
        return "none (hand-crafted features)"

    def encode_images(self, pixels):
        return histogram_features(pixels, self.mean, self.std)
