"""Random features: a randomly initialised ResNet-18 (fixed seed), frozen — the floor every learned
representation must beat (random conv features already carry colour and texture statistics)."""

from __future__ import annotations

import numpy as np

from urbanln_bench.method import FitContext, MethodMeta, TorchImageEncoder


class RandomFeatures(TorchImageEncoder):
    meta = MethodMeta(
        name="random-features",
        display_name="Random features",
        version="1",
        imagery="either",
        native_imagery=("SV", "SI"),
        description="Randomly initialised ResNet-18 (seed 0), frozen; 512-d pooled features. A floor.",
        role="floor",
        default_config={"input_size": 64, "init_seed": 0},
    )

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.input_size = int(self.config["input_size"])
        self.model = None

    def weight_source(self) -> str:
        return f"random init (torch seed {self.config['init_seed']})"

    def fit(self, city, imagery: str, context: FitContext) -> None:
        import torch

        from urbanln_bench.backbones.resnet import build_resnet18

        torch.manual_seed(int(self.config["init_seed"]))
        model = build_resnet18()
        model.fc = torch.nn.Identity()
        self.model = model.eval()

    def architecture(self):
        import torch

        from urbanln_bench.backbones.resnet import build_resnet18
        from urbanln_bench.profiling import Architecture

        model = build_resnet18()
        model.fc = torch.nn.Identity()
        return Architecture(model, sum(p.numel() for p in model.parameters()), 0, "random init, frozen")


class RandomFeaturesFused(RandomFeatures):
    """The SV+SI floor for the fused methods' "beats random features" check: the same frozen random
    ResNet-18's satellite feature and mean street-view feature (≤ the harness cap) concatenated per region,
    zeros for the imagery a region lacks (as the fused scene-graph ceiling does)."""

    meta = MethodMeta(
        name="random-features-fused",
        display_name="Random features (SV+SI)",
        version="1",
        imagery="fused",
        native_imagery=("SV+SI",),
        description="Randomly initialised ResNet-18 (seed 0), frozen; the tile's 512-d feature and the mean "
                    "street-view feature concatenated per region (1024-d). The SV+SI floor.",
        role="floor",
        default_config={"input_size": 64, "init_seed": 0},
    )

    def encode_regions(self, city, region_ids: list[str], context: FitContext) -> np.ndarray:
        from urbanln_bench.embed import DEFAULT_BATCH_SIZE, encode_image_ids, mean_per_region, streetviews_of

        position = {rid: i for i, rid in enumerate(region_ids)}
        width = 512
        out = np.zeros((len(region_ids), 2 * width), np.float64)
        tiles = [rid for rid in city.satellite_ids() if rid in position]
        if tiles:
            out[[position[r] for r in tiles], width:] = encode_image_ids(self, city, tiles, context.device,
                                                                          DEFAULT_BATCH_SIZE, None)
        view_ids, owners = streetviews_of(city, region_ids)
        if view_ids:
            per_view = encode_image_ids(self, city, view_ids, context.device, DEFAULT_BATCH_SIZE, None)
            out[:, :width] = mean_per_region(per_view, owners, len(region_ids))
        return out.astype(np.float32)
