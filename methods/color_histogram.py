"""Colour histogram: a joint 4×4×4 RGB histogram plus per-channel mean and std of each image — no
learning at all. A floor: a twin on which this comes close to the ceiling is too easy (docs/twins.md).
The features are those of the twin's own difficulty check (``urbanln_bench.synth.floors``)."""

from __future__ import annotations

from urbanln_bench.method import Method, MethodMeta


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
        import torch

        from urbanln_bench.synth.floors import color_histogram_features

        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        rgb = (pixels.float().cpu() * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()
        return torch.from_numpy(color_histogram_features(rgb)).float()
