"""ResNet-18: the paper's ImageNet CNN baseline. Frozen, no city pretraining; 512-d pooled features.

Weights: a local ImageNet file (``--set weights=PATH`` or the torch hub cache) when present; otherwise
the harness's supervised surrogate pretrained on the synthetic pretraining world (labelled as such).
"""

from __future__ import annotations

from urbanln_bench.method import FitContext, MethodMeta, TorchImageEncoder


class ResNet18(TorchImageEncoder):
    meta = MethodMeta(
        name="resnet18",
        display_name="ResNet-18",
        version="1",
        imagery="either",
        native_imagery=("SI",),
        description="ImageNet-style ResNet-18, frozen; global-average-pooled 512-d features.",
        citation="He et al., Deep Residual Learning for Image Recognition, CVPR 2016",
        default_config={"weights": "", "input_size": 64, "profile": ""},
    )

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.input_size = int(self.config["input_size"])
        self.model = None
        self._source = None

    def _resolve(self, profile: str) -> tuple[str, object]:
        from urbanln_bench.backbones.resnet import file_digest, local_imagenet_file

        path = local_imagenet_file(self.config["weights"])
        if path is not None:
            return f"file: {path.name} (sha256 {file_digest(path)})", path
        return "surrogate", None

    def weight_source(self) -> str:
        if self._source is None:
            from urbanln_bench.backbones.resnet import SURROGATE_RECIPES, surrogate_key

            profile = self.config["profile"] or self.run_profile
            label, path = self._resolve(profile)
            if path is None:
                key, _ = surrogate_key(SURROGATE_RECIPES[profile])
                label = f"surrogate: ResNet-18 supervised on the synthetic pretraining world ({profile} profile, {key})"
            self._source = label
        return self._source

    def fit(self, city, imagery: str, context: FitContext) -> None:
        from urbanln_bench.backbones.resnet import build_resnet18, load_state, surrogate_resnet18

        profile = self.config["profile"] or self.run_profile
        _, path = self._resolve(profile)
        if path is None:
            path, _ = surrogate_resnet18(profile, context.progress)
        model = build_resnet18()
        load_state(model, path)
        import torch

        model.fc = torch.nn.Identity()
        self.model = model.eval()

    def architecture(self):
        import torch

        from urbanln_bench.backbones.resnet import build_resnet18
        from urbanln_bench.profiling import Architecture

        model = build_resnet18()
        model.fc = torch.nn.Identity()
        total = sum(p.numel() for p in model.parameters())
        return Architecture(model, total, 0, "frozen; no city pretraining")
