"""An example baseline for urbanln-bench: colour statistics and edge density per image.

Hand-crafted, no training: for each image, the mean and standard deviation of R, G and B, and the
fraction of pixels whose grey-level gradient (Sobel) exceeds each of four thresholds — dense streets,
facades and rooftops have many edges, parks and water few. 10 numbers per image; the harness
mean-pools a region's street views and probes the result exactly as it probes every other method.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from urbanln_bench.method import Method, MethodMeta

EDGE_THRESHOLDS = (0.05, 0.1, 0.2, 0.4)  # gradient magnitude of grey values in [0, 1]


class ColourEdges(Method):
    meta = MethodMeta(
        name="colour-edges",
        display_name="Colour + edges (example)",
        version="0.1.0",  # bump when a code change can move the numbers: it is part of every cache key
        imagery="either",  # one run per imagery: street view (SV) and satellite (SI)
        native_imagery=("SV", "SI"),
        description="Per-channel colour mean/std and Sobel edge density at 4 thresholds (10-d). No training.",
        default_config={"input_size": 64},  # settings a user may change with --set input_size=96
    )

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.input_size = int(self.config["input_size"])  # the harness resizes every image to this

    def weight_source(self) -> str:
        return "none (hand-crafted features)"

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised with self.mean / self.std → (B, 10) features."""
        mean = torch.tensor(self.mean, device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=pixels.device).view(1, 3, 1, 1)
        rgb = (pixels.float() * std + mean).clamp(0, 1)
        grey = rgb.mean(dim=1, keepdim=True)
        sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=pixels.device) / 4
        gx = F.conv2d(grey, sobel.view(1, 1, 3, 3))
        gy = F.conv2d(grey, sobel.t().reshape(1, 1, 3, 3))
        magnitude = (gx.square() + gy.square()).sqrt().flatten(1)
        edges = torch.stack([(magnitude > t).float().mean(dim=1) for t in EDGE_THRESHOLDS], dim=1)
        return torch.cat([rgb.mean(dim=(2, 3)), rgb.std(dim=(2, 3)), edges], dim=1)
