"""Random features: a randomly initialised ResNet-18 (fixed seed), frozen — the floor every learned
representation must beat (random conv features already carry colour and texture statistics)."""

from __future__ import annotations

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
