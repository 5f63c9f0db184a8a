"""RemoteCLIP (Liu et al., IEEE TGRS 2024): a CLIP continually pretrained on remote-sensing image–text
pairs with CLIP's InfoNCE. Here it is what the paper uses it as: a frozen image encoder, no city
pretraining; the region embedding is ``model.encode_image`` of the tile, L2-normalised as RemoteCLIP's
own evaluation does it (``clip_benchmark``'s feature extractor normalises image features before its
linear probe and retrieval; ``--set normalize=false`` gives the raw projection).

Weights (docs/methods.md#remoteclip), in this order:

1. ``--set weights=PATH``: an open_clip-format checkpoint, e.g. ``RemoteCLIP-ViT-B-32.pt`` from the
   Hugging Face repo ``chendelong/RemoteCLIP``. The architecture is ``--set arch=NAME`` (``RN50``,
   ``ViT-B-32`` or ``ViT-L-14``: embedding sizes 1024, 512, 768), else read from the file name
   ``RemoteCLIP-<arch>.pt``. Loaded as RemoteCLIP's README does: the plain open_clip config of that
   name (no pretrained tag, no QuickGELU), then the state dict, strictly.
2. ``--set weights=hf-hub:chendelong/RemoteCLIP``, or no ``weights`` at all: ``RemoteCLIP-<arch>.pt``
   (arch default ``ViT-B-32``) from the offline Hugging Face cache when it is there; never a download.
3. Otherwise a **surrogate**: the synthetic-foundation CLIP of the run's profile (smoke / cpu / paper,
   or ``--set arch=smoke|cpu|paper``), pretrained by the harness on the synthetic pretraining world.
   It is *not* RemoteCLIP: the row is labelled "RemoteCLIP (surrogate)" and the weight source says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from urbanln_bench.errors import UserError
from urbanln_bench.method import FitContext, Method, MethodMeta
from urbanln_bench.profiles import PROFILES

HUB_REPO = "chendelong/RemoteCLIP"
RELEASED_ARCHS = {"RN50": 1024, "ViT-B-32": 512, "ViT-L-14": 768}  # architecture → embedding size
DEFAULT_ARCH = "ViT-B-32"


@dataclass(frozen=True)
class _Resolved:
    """Where the weights come from, decided before anything is loaded or trained."""

    arch: str  # CLIP profile or open_clip model name that is built
    path: Path | None  # a checkpoint file; None for the surrogate
    label: str  # the weight source every record carries

    @property
    def surrogate(self) -> bool:
        return self.path is None


class RemoteCLIP(Method):
    meta = MethodMeta(
        name="remoteclip",
        display_name="RemoteCLIP",
        version="1",
        imagery="either",
        native_imagery=("SI",),  # the paper's tables have one RemoteCLIP row: the remote-sensing model on tiles
        description="Frozen RemoteCLIP image encoder (open_clip RN50 / ViT-B-32 / ViT-L-14), L2-normalised "
                    "image features; a synthetic-foundation CLIP surrogate when no checkpoint is given.",
        citation="Liu et al., RemoteCLIP: A Vision Language Foundation Model for Remote Sensing, IEEE TGRS 2024",
        default_config={"weights": "", "arch": "", "normalize": True},
    )

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.model = None
        self._resolved: _Resolved | None = None
        self._resolved_for: str | None = None

    # -- weights ----------------------------------------------------------------------------------
    def _arch_for_file(self, path: Path) -> str:
        if self.config["arch"]:
            return self.config["arch"]
        match = re.search(r"RemoteCLIP-(RN50|ViT-B-32|ViT-L-14)", path.name)
        if match:
            return match.group(1)
        raise UserError(f"method 'remoteclip': cannot tell the architecture of {path.name}; say it with "
                        f"--set arch=NAME ({', '.join(RELEASED_ARCHS)} for the released checkpoints)")

    def _hub_file(self, arch: str) -> Path | None:
        from urbanln_bench.backbones.clip_weights import hf_cached_file

        return hf_cached_file(HUB_REPO, f"RemoteCLIP-{arch}.pt")

    def resolve(self) -> _Resolved:
        """The weight source for this run's profile (cached per profile; nothing is loaded or trained)."""
        if self._resolved is not None and self._resolved_for == self.run_profile:
            return self._resolved
        from urbanln_bench.backbones.clip import clip_config
        from urbanln_bench.backbones.resnet import file_digest

        weights, arch = self.config["weights"].strip(), self.config["arch"].strip()
        if arch:
            clip_config(arch)  # an unknown architecture gets the backbone's "did you mean" error
        if weights.startswith("hf-hub:"):
            if weights[len("hf-hub:"):].strip("/") != HUB_REPO:
                raise UserError(f"method 'remoteclip': weights={weights}: the RemoteCLIP checkpoints are on "
                                f"hf-hub:{HUB_REPO}; pass that or a local file")
            arch = arch or DEFAULT_ARCH
            path = self._hub_file(arch)
            if path is None:
                raise UserError(f"method 'remoteclip': RemoteCLIP-{arch}.pt of {HUB_REPO} is not in the offline "
                                "Hugging Face cache and nothing is downloaded here; fetch it on a connected machine "
                                f"(`huggingface-cli download {HUB_REPO} RemoteCLIP-{arch}.pt`) or pass the file "
                                "with --set weights=PATH")
            resolved = _Resolved(arch, path, f"hf-hub cache: {HUB_REPO}@{path.parent.name[:12]} ({path.name})")
        elif weights:
            path = Path(weights).expanduser()
            if not path.is_file():
                raise UserError(f"method 'remoteclip': weights file not found: {path} (an open_clip-format "
                                f"checkpoint such as RemoteCLIP-ViT-B-32.pt from {HUB_REPO})")
            arch = self._arch_for_file(path)
            resolved = _Resolved(arch, path, f"local checkpoint: {path.name} (sha256 {file_digest(path)})")
        else:
            hub = self._hub_file(arch or DEFAULT_ARCH) if arch in ("", *RELEASED_ARCHS) else None
            if hub is not None:
                arch = arch or DEFAULT_ARCH
                resolved = _Resolved(arch, hub, f"hf-hub cache: {HUB_REPO}@{hub.parent.name[:12]} ({hub.name})")
            else:
                profile = arch or self.run_profile
                if profile not in PROFILES:
                    raise UserError(f"method 'remoteclip': no RemoteCLIP-{profile}.pt weights: pass the checkpoint "
                                    f"with --set weights=PATH (from {HUB_REPO}), or leave arch unset for the "
                                    f"synthetic-foundation surrogate (architectures {', '.join(PROFILES)})")
                resolved = _Resolved(profile, None, self._surrogate_label(profile, "cpu"))
        self._resolved, self._resolved_for = resolved, self.run_profile
        return resolved

    @staticmethod
    def _surrogate_label(profile: str, device: str) -> str:
        from urbanln_bench.backbones.foundation import FOUNDATION_RECIPES, foundation_key, foundation_label

        key, _ = foundation_key(FOUNDATION_RECIPES[profile], device)
        return (f"surrogate: synthetic-foundation CLIP '{profile}', not RemoteCLIP's weights "
                f"({foundation_label(profile, key)})")

    def weight_source(self) -> str:
        return self.resolve().label

    # -- preprocessing: the CLIP's own ------------------------------------------------------------
    def _preprocess(self):
        from urbanln_bench.backbones.clip import clip_config

        config = clip_config(self.resolve().arch)
        size = config["vision_cfg"]["image_size"]
        meta = config.get("urbanln", {})
        openai_mean, openai_std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
        return (int(size if isinstance(size, int) else size[0]), tuple(meta.get("mean", openai_mean)),
                tuple(meta.get("std", openai_std)))

    @property
    def input_size(self) -> int:  # type: ignore[override]
        return self._preprocess()[0]

    @property
    def mean(self) -> tuple[float, float, float]:  # type: ignore[override]
        return self._preprocess()[1]

    @property
    def std(self) -> tuple[float, float, float]:  # type: ignore[override]
        return self._preprocess()[2]

    # -- the hooks --------------------------------------------------------------------------------
    def fit(self, city, imagery: str, context: FitContext) -> None:
        """No city pretraining: load the frozen encoder."""
        from urbanln_bench.backbones.clip import build_clip
        from urbanln_bench.backbones.clip_weights import load_clip, load_clip_state, read_clip_checkpoint

        resolved = self.resolve()
        if resolved.surrogate:
            model, _, _, source = load_clip(resolved.arch, "foundation", progress=context.progress,
                                            device=context.device)
            if context.device != "cpu":  # the foundation's key includes its training precision
                self._resolved = _Resolved(resolved.arch, None, self._surrogate_label(resolved.arch, context.device))
        else:
            state = read_clip_checkpoint(resolved.path)
            model, _, _ = build_clip(resolved.arch)
            try:
                load_clip_state(model, state, resolved.path, resolved.arch)
            except UserError as exc:
                raise UserError(f"method 'remoteclip': {str(exc).rstrip('.')}. RemoteCLIP's checkpoints are "
                                f"{', '.join(f'RemoteCLIP-{a}.pt (--set arch={a})' for a in RELEASED_ARCHS)}"
                                ) from None
        self.model = model.eval()

    def modules(self) -> list:
        return [self.model]

    def architecture(self):
        """The resolved CLIP (the surrogate's profile CLIP or the checkpoint's architecture), random weights:
        frozen, so nothing trains; the total counts both towers, as for the other CLIP methods."""
        from urbanln_bench.backbones.clip import build_clip
        from urbanln_bench.clip_training.clip_method import normalised_image_encoder
        from urbanln_bench.profiling import Architecture

        model, _, _ = build_clip(self.resolve().arch)
        encoder = normalised_image_encoder(model.visual) if self.config["normalize"] else model.visual
        total = sum(p.numel() for p in model.parameters())
        return Architecture(encoder, total, 0, "image + text towers; frozen (no city pretraining)")

    def encode_images(self, pixels):
        import torch.nn.functional as F

        features = self.model.encode_image(pixels).float()
        return F.normalize(features, dim=-1) if self.config["normalize"] else features

    # -- identity ---------------------------------------------------------------------------------
    def _shown_overrides(self) -> dict[str, object]:
        return {k: v for k, v in self.overrides.items() if k != "weights"}

    def variant_label(self) -> str:
        """"RemoteCLIP (surrogate)" without real weights; "RemoteCLIP [ViT-B-32]" with them."""
        resolved = self.resolve()
        shown = self._shown_overrides()
        if resolved.surrogate:
            base = f"{self.meta.display_name} (surrogate)"
        else:
            shown.pop("arch", None)
            base = f"{self.meta.display_name} [{resolved.arch}]"
            if shown:
                return base[:-1] + ", " + ", ".join(f"{k}={v}" for k, v in shown.items()) + "]"
            return base
        return base + (f" [{', '.join(f'{k}={v}' for k, v in shown.items())}]" if shown else "")

    def variant_slug(self) -> str:
        """A folder name: never a path (the weights file is named by its stem; the key holds its digest)."""
        resolved = self.resolve()
        parts = [f"{k}={v}" for k, v in self._shown_overrides().items()]
        if resolved.path is not None:
            parts.append(f"weights={resolved.path.stem}")
        base = self.meta.name + ("-surrogate" if resolved.surrogate else f"-{resolved.arch}")
        slug = base + ("__" + "_".join(parts) if parts else "")
        return re.sub(r"[^A-Za-z0-9._=+-]", "_", slug)
