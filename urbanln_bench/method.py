"""The method interface (docs/architecture.md#core-concepts, torchgeo-bench's sealed encoder).

A method is self-supervised pretraining on a city's *unlabelled* view, then a frozen encoder. It
implements small hooks; the harness owns everything around them (preprocessing dispatch, batching,
device placement, street-view pooling, caching, label hiding), so every method is embedded the same way:

- ``fit(city, imagery, context)``: pretrain on an ``UnlabelledCity`` (no route to the labels).
- ``encode_images(pixels)``: a batch of preprocessed images (B, 3, S, S) → (B, D) features; the harness
  mean-pools a region's street views. Used when ``meta.imagery`` is ``SV``, ``SI`` or ``either``.
- ``encode_regions(city, region_ids, context)``: (n, D) for ``fused`` methods, which see both imageries.

Built-in methods live in the repository's ``methods/`` folder and register through the same
entry-point group a third-party package uses (``urbanln_bench.methods``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from urbanln_bench.errors import UserError
from urbanln_bench.paths import check_name
from urbanln_bench.registry import Registry, suggest

if TYPE_CHECKING:
    import numpy as np
    import torch

    from urbanln_bench.data.loader import UnlabelledCity

IMAGERY_MODES = ("SV", "SI", "either", "fused")
# What a row is in a table: a competing "method"; a "floor" (hand-crafted or random features); the latent
# "oracle" (the ceiling of every representation); the scene-graph "ceiling" (what a perfect parser of the
# pixels could know); a "reference" (what the caption sets know, before any image training). Only
# "method" rows compete for winners, ranks and improvements (docs/architecture.md#roles).
ROLES = ("method", "floor", "start", "oracle", "ceiling", "reference")
TRUTH_INPUTS = ("latents", "scene_graphs")  # a twin's ground truth a method may declare (fit_inputs.py provides it)


@dataclass(frozen=True)
class SettingRange:
    """The type and range a numeric method setting accepts (``--set key=value`` is checked against it before
    anything is computed). A value equal to the method's default is always accepted: several methods use 0
    or None there for "the recipe's value"."""

    kind: type  # int or float
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself is excluded (a learning rate of 0 trains nothing)

    def describe(self) -> str:
        def show(bound: float) -> str:
            return f"{int(bound):,}" if float(bound).is_integer() else f"{bound:g}"

        low = "" if self.low is None else f"{'>' if self.low_open else '>='} {show(self.low)}"
        high = "" if self.high is None else f"<= {show(self.high)}"
        span = " and ".join(p for p in (low, high) if p)
        return f"{'an integer' if self.kind is int else 'a number'}{' ' + span if span else ''}"

    def admits(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return False
        if self.kind is int and not isinstance(value, int):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or value <= self.high


_POSITIVE_INT = SettingRange(int, 1, 1_000_000)
_RATE = SettingRange(float, 0.0, 1.0, low_open=True)
_SHARE = SettingRange(float, 0.0, 1.0)
_WEIGHT = SettingRange(float, 0.0, 1_000.0)
# The harness's ranges for settings many methods share, by name (docs/hostile-inputs.md). A method declares
# others, or different ones, in MethodMeta.setting_ranges.
SETTING_RANGES: dict[str, SettingRange] = {
    "input_size": SettingRange(int, 8, 2048),
    "batch_size": SettingRange(int, 1, 65_536), "rs_batch_size": SettingRange(int, 1, 65_536),
    "sv_batch_size": SettingRange(int, 1, 65_536), "fusion_batch_size": SettingRange(int, 1, 65_536),
    "epochs": SettingRange(float, 0.0, 10_000.0, low_open=True), "rs_epochs": SettingRange(int, 1, 10_000),
    "sv_epochs": SettingRange(int, 1, 10_000), "fusion_epochs": SettingRange(int, 1, 10_000),
    "max_steps": SettingRange(int, 1, 100_000_000), "max_images_seen": SettingRange(int, 1, 10**12),
    "lr": _RATE, "fusion_lr": _RATE, "weight_decay": _SHARE,
    "mu": _SHARE, "momentum": _SHARE, "temperature": SettingRange(float, 0.0, 100.0, low_open=True),
    "queue_size": _POSITIVE_INT, "ipsi_keep": SettingRange(int, 1, 76), "ipsi_ratio": SettingRange(int, 1, 64),
    "candidates_per_captioner": SettingRange(int, 1, 100), "text_dim": _POSITIVE_INT, "head_dim": _POSITIVE_INT,
    "projection_dim": _POSITIVE_INT, "width": SettingRange(int, 1, 4096), "margin": _WEIGHT, "l2": _WEIGHT,
    "neighbourhood": SettingRange(int, 1, 1000), "init_seed": SettingRange(int, 0, 2**32 - 1),
    "caption_weight": _WEIGHT, "contrastive_weight": _WEIGHT, "satellite_weight": _WEIGHT,
    "streetview_weight": _WEIGHT, "decoder_layers": SettingRange(int, 1, 64), "max_streetviews": SettingRange(int, 1, 10_000),
}


@dataclass(frozen=True)
class MethodMeta:
    """Validated metadata, readable before any model code runs (after MTEB's ModelMeta)."""

    name: str  # registry name, e.g. "resnet18"
    display_name: str  # label in tables, e.g. "ResNet-18"
    version: str  # bump whenever a change of the method's code can move its numbers
    imagery: str  # what it consumes: SV, SI, either (one run per imagery) or fused (both at once)
    native_imagery: tuple[str, ...]  # rows of the paper-shaped table: ("SI",), ("SV", "SI") or ("SV+SI",)
    description: str
    citation: str = ""
    uses_aux: tuple[str, ...] = ()  # auxiliary modalities it trains on; cells derived from them show "—"
    requires: tuple[str, ...] = ()  # auxiliary modalities it cannot run without; a city lacking one shows "—"
    report_derived_cells: bool = False  # run the cells derived from uses_aux anyway (the paper reports them), flagged
    role: str = "method"  # one of ROLES: every role but "method" frames the leaderboard
    synthetic_only: bool = False  # needs a twin's truth (the oracle)
    truth: tuple[str, ...] = ()  # the twin's ground-truth inputs fit receives (TRUTH_INPUTS); needs synthetic_only
    ours: bool = False  # UrbanLN variants: the improvement rows compare these with the best baseline
    ablation_of: str = ""  # an ablation of another registered method (its own row in the ablation table)
    # the registered method (role "start") that is this method's encoder frozen before ``fit`` trains it:
    # its frame row, the test that pretraining moved the encoder (docs/architecture.md#roles)
    starts_from: str = ""
    default_config: Mapping[str, Any] = field(default_factory=dict)
    # {setting: SettingRange} for settings of its own that SETTING_RANGES (the harness's table of common
    # names) does not cover or covers differently; a --set value outside its range is refused before any work
    setting_ranges: Mapping[str, SettingRange] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from urbanln_bench.records import CAPTIONS_FOLDER

        if self.name == CAPTIONS_FOLDER:  # its records' folder would be read as stored caption fidelity
            raise ValueError(f"method '{self.name}': the name is reserved for the result store's caption-fidelity "
                             "folder (records.CAPTIONS_FOLDER); choose another name")
        if self.imagery not in IMAGERY_MODES:
            raise ValueError(f"method '{self.name}': imagery must be one of {IMAGERY_MODES}, got {self.imagery!r}")
        if self.role not in ROLES:
            raise ValueError(f"method '{self.name}': role must be one of {ROLES}, got {self.role!r}")
        allowed = {"fused": {"SV+SI"}, "SV": {"SV"}, "SI": {"SI"}, "either": {"SV", "SI"}}[self.imagery]
        if not self.native_imagery or not set(self.native_imagery) <= allowed:
            raise ValueError(f"method '{self.name}': native_imagery {self.native_imagery} does not fit imagery {self.imagery}")
        unknown_truth = [n for n in self.truth if n not in TRUTH_INPUTS]
        if unknown_truth:
            raise ValueError(f"method '{self.name}': truth names unknown input {unknown_truth[0]!r}; "
                             f"known: {', '.join(TRUTH_INPUTS)}")
        if self.truth and not self.synthetic_only:
            raise ValueError(f"method '{self.name}': truth {self.truth} exists only on a synthetic twin; "
                             "set synthetic_only=True")
        from urbanln_bench.specs import AUX_MODALITIES

        for what, names in (("uses_aux", self.uses_aux), ("requires", self.requires)):
            unknown = [n for n in names if n not in AUX_MODALITIES]
            if unknown:
                raise ValueError(f"method '{self.name}': {what} names unknown modality {unknown[0]!r}; "
                                 f"known: {', '.join(AUX_MODALITIES)}")

    def runnable_imagery(self) -> tuple[str, ...]:
        return {"fused": ("SV+SI",), "SV": ("SV",), "SI": ("SI",), "either": ("SV", "SI")}[self.imagery]


@dataclass
class FitContext:
    """What the harness hands a method besides the unlabelled city."""

    seed: int
    device: str
    work_dir: Path  # a cache folder private to (method, config, city data, imagery): checkpoints go here
    scale: str
    profile: str = "cpu"  # run profile: smoke, cpu or paper
    progress: Any = None  # callable(description, total) -> advance(n), or None
    extras: dict[str, Any] = field(default_factory=dict)  # fit inputs (fit_inputs.py): captions, declared truth


class Method:
    """Base class. Subclasses set ``meta`` and implement ``fit`` plus one encode hook."""

    meta: ClassVar[MethodMeta]
    input_size: int = 64  # the harness resizes every image to input_size × input_size
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # the harness normalises with these
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    run_profile: str = "cpu"  # the run's backbone profile (smoke / cpu / paper), set by the harness

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        config = dict(config or {})
        unknown = [k for k in config if k not in self.meta.default_config]
        if unknown:
            key = unknown[0]
            raise UserError(
                f"method '{self.meta.name}': unknown setting '{key}'{suggest(key, list(self.meta.default_config))}; "
                f"settings: {', '.join(self.meta.default_config) or '(none)'}"
            )
        merged = dict(self.meta.default_config)
        for key, value in config.items():
            default = merged[key]
            merged[key] = check_setting(self.meta, key, coerce_setting(self.meta.name, key, value, default,
                                                                       self.setting_range(key)), default)
        self._settings = merged
        self.overrides = {k: merged[k] for k in sorted(config)}

    @property
    def config(self) -> dict[str, Any]:
        """The method's settings: its defaults under the user's ``--set`` overrides. A method whose
        settings depend on the run profile resolves them here from ``run_profile``, on every read."""
        return self._settings

    def setting_range(self, key: str) -> SettingRange | None:
        """The range ``--set key=...`` must fall in: the method's declared one, else the harness's for the name."""
        return self.meta.setting_ranges.get(key) or SETTING_RANGES.get(key)

    # -- hooks ------------------------------------------------------------------------------------
    def weight_source(self) -> str:
        """Where the encoder's starting weights come from (local file, surrogate, random init ...)."""
        return "none"

    def fit(self, city: UnlabelledCity, imagery: str, context: FitContext) -> None:
        """Pretrain on the unlabelled city (default: nothing to train)."""

    def prepare_fit(self, context: FitContext) -> None:
        """Build the cached artefacts ``fit`` will read (e.g. a backbone's weights); optional. Under
        torchrun rank 0 runs it before the other ranks, so that only rank 0 writes caches
        (docs/torchrun.md); a single process never calls it."""

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"method '{self.meta.name}' consumes images but has no encode_images hook")

    def encode_regions(self, city: UnlabelledCity, region_ids: list[str], context: FitContext) -> np.ndarray:
        raise NotImplementedError(f"method '{self.meta.name}' is fused but has no encode_regions hook")

    def caption_settings(self, imagery: str) -> dict[str, dict[str, Any]]:
        """Caption sets ``fit`` needs, as {caption imagery: pipeline settings} (default: none).

        The harness runs the caption pipeline (``captions/pipeline.py``) on the fit city with these
        settings over the pipeline's defaults and hands ``fit`` the selected captions in
        ``context.extras["captions"][imagery]`` (image id → caption; see ``caption_stage``). Captioners play
        MLLMs looking at the images; they never see labels.
        """
        return {}

    def caption_stage(self) -> str:
        """Which file of each caption set ``fit`` gets (``captions/pipeline.py``): ``"selected"`` (the
        default: image id → the one selected caption), or ``"raw"`` / ``"refined"`` (image id → the list of
        every captioner's candidates, in the pipeline's order: captioners as configured, candidates by index)."""
        return "selected"

    def architecture(self):
        """``profiling.Architecture`` (encoder with random weights, total / trainable parameters) or None.

        ``urbanln-bench profile`` uses it; nothing is pretrained or loaded for it.
        """
        return None

    def fit_report(self) -> dict[str, Any]:
        """What pretraining measured (steps, losses, parameter counts, seconds); stored with the embeddings."""
        return {}

    def modules(self) -> list[torch.nn.Module]:
        """Torch modules the harness moves to the device and puts in eval mode before embedding."""
        return []

    # -- identity ---------------------------------------------------------------------------------
    def variant_label(self) -> str:
        """Row label: display name plus overrides, e.g. ``UrbanLN [mu=0.3]``."""
        if not self.overrides:
            return self.meta.display_name
        return f"{self.meta.display_name} [{', '.join(f'{k}={_show(v)}' for k, v in self.overrides.items())}]"

    def variant_slug(self) -> str:
        """A folder name: ``name__key=value_key=value`` with only path-safe characters."""
        if not self.overrides:
            return self.meta.name
        text = "_".join(f"{k}={_show(v, '+')}" for k, v in self.overrides.items())
        slug = self.meta.name + "__" + re.sub(r"[^A-Za-z0-9._=+-]", "-", text)
        if len(slug) > MAX_SLUG_LENGTH:  # a folder name: file systems allow 255 bytes
            raise UserError(f"method '{self.meta.name}': the settings {text[:60]}... make a folder name of {len(slug)} "
                            f"characters (at most {MAX_SLUG_LENGTH}); set fewer or shorter values")
        return slug

    def identity(self) -> dict[str, Any]:
        """Everything about the method that can change its numbers (goes into every cache key)."""
        return {"name": self.meta.name, "version": self.meta.version, "config": self.config,
                "weights": self.weight_source(), "input_size": self.input_size,
                "mean": list(self.mean), "std": list(self.std)}


class TorchImageEncoder(Method):
    """A method whose frozen encoder is one torch module, ``self.model``, set in ``fit``."""

    model = None

    def modules(self) -> list:
        return [self.model]

    def encode_images(self, pixels):
        return self.model(pixels)


MAX_SLUG_LENGTH = 200


def _show(value: Any, sep: str = ",") -> str:
    """A setting as a user typed it: lists joined (``a,b``), scalars as str."""
    if isinstance(value, (list, tuple)):
        return sep.join(str(v) for v in value)
    return str(value)


def coerce_setting(method: str, key: str, value: Any, default: Any, declared: SettingRange | None = None) -> Any:
    """Convert a ``--set key=value`` string to the type of the default (or of the declared range when the
    default is None, "the recipe's")."""
    if not isinstance(value, str) or isinstance(default, str):
        return value
    try:
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(value)
            return value.lower() in ("true", "1")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, list) and not value.lstrip().startswith("["):
            return [item.strip() for item in value.split(",") if item.strip()]  # a,b → ["a", "b"]
        return json.loads(value)
    except (ValueError, json.JSONDecodeError):
        if declared is not None:
            raise UserError(f"method '{method}': setting {key}={value!r} is not {declared.describe()}; "
                            f"fix --set {key}=...") from None
        raise UserError(f"method '{method}': setting {key}={value!r} is not a {type(default).__name__}") from None


def check_setting(meta: MethodMeta, key: str, value: Any, default: Any) -> Any:
    """``value`` if it lies in the setting's declared range (or equals the default); else a UserError that
    says the range. Checked when the method is made, so before any twin is rendered or model trained."""
    declared = meta.setting_ranges.get(key) or SETTING_RANGES.get(key)
    if declared is None or value == default or value is None:
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"method '{meta.name}': setting {key}={value} is not a finite number; --set {key}=<number>")
        return value
    if not declared.admits(value):
        raise UserError(f"method '{meta.name}': setting {key}={value!r} is out of range: it must be "
                        f"{declared.describe()} (default {default!r}); fix --set {key}=...")
    return value


METHODS: Registry[type[Method]] = Registry("method", entry_point_group="urbanln_bench.methods")
def get_method(name: str) -> type[Method]:
    cls = METHODS.get(name)
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise UserError(f"method '{name}' ({cls!r}) is not a urbanln_bench.method.Method subclass")
    if cls.meta.name != name:
        raise UserError(f"method '{name}' declares meta.name '{cls.meta.name}'; they must agree")
    check_name(name, "method name", f"method '{name}' ({cls.__module__})")  # it names result and cache folders
    return cls


def method_names() -> list[str]:
    return METHODS.names()
