"""What a method's ``fit`` gets besides the unlabelled city: fit inputs (docs/architecture.md#core-concepts).

Some methods need more than images: caption sets (UrbanLN, UrbanCLIP, UrbanVLP, the caption-text rows),
or, for a method that declares it in ``MethodMeta.truth``, a twin's ground truth: its true latents (the
oracle) or its per-image scene graphs (the scene-graph ceiling). Each such input is a provider with a
name (the key of ``FitContext.extras`` and of the record key part), an identity (what the input depends
on besides the data, for cache and record keys; None when it adds nothing to them) and ``provide`` (the
value, and provenance for the embedding's metadata). The runner loops over the providers a method
needs and knows none of them; auxiliary tables (POI counts, mobility) reach a method through the
unlabelled city itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from urbanln_bench.data.loader import CityData
from urbanln_bench.errors import UserError
from urbanln_bench.method import Method
from urbanln_bench.registry import Registry

SMOKE_CAPTIONERS = 2  # captioners asked under the smoke profile (see caption_configs)


class FitInput(Protocol):
    name: str
    # whether ``provide`` reads the probe city (``data``) rather than only the fit city: such an input ties
    # a fit to its probe city, so the runner does not share the fit with another probe city (runner.fit_memo_key)
    reads_probe_city: bool

    def needed(self, method: Method, imagery: str, profile: str) -> bool: ...

    def identity(self, method: Method, imagery: str, profile: str) -> Any | None: ...

    def provide(self, method: Method, fit_data: CityData, data: CityData, imagery: str, profile: str,
                progress: Callable | None) -> tuple[Any, dict[str, Any] | None]: ...

    def summarise(self, provenance: dict[str, Any]) -> Any:
        """What the result record keeps of the provenance ``provide`` returned."""
        ...


def caption_request(settings: Mapping[str, Any], *, refinement: bool, consensus: bool) -> dict[str, Any]:
    """The pipeline settings a caption-consuming method asks for (its ``caption_settings``): the refinement
    and consensus flags plus the method's ``captioners`` (a list or "a,b"; empty = the pipeline's) and
    ``candidates_per_captioner`` (0 = the pipeline's) settings."""
    request: dict[str, Any] = {"refinement": refinement, "consensus": consensus}
    captioners = settings["captioners"]
    if isinstance(captioners, str):
        captioners = [c.strip() for c in captioners.split(",") if c.strip()]
    if captioners:
        request["captioners"] = tuple(captioners)
    if int(settings["candidates_per_captioner"]) > 0:
        request["candidates_per_captioner"] = int(settings["candidates_per_captioner"])
    return request


def caption_configs(method: Method, imagery: str, profile: str) -> dict[str, Any]:
    """{caption imagery: PipelineConfig} of the caption sets the method's ``fit`` needs (none for most).

    The pipeline's defaults overridden by the method's own settings. The ``smoke`` profile (tests, CI,
    ``check-method``) scores phrases with the smoke models and, unless the method names its captioners,
    asks two of the five captioners for two candidates each (4 instead of 10): the same pipeline, a
    fifth of the CAPTURE pairs. Records carry the configuration either way.
    """
    requests = method.caption_settings(imagery)
    if not requests:
        return {}
    from urbanln_bench.captions.pipeline import PipelineConfig

    out = {}
    for caption_imagery, settings in requests.items():
        defaults: dict[str, Any] = {}
        if profile == "smoke":
            default = PipelineConfig()
            if ":" in default.phrase_scorer:
                defaults["phrase_scorer"] = default.phrase_scorer.rsplit(":", 1)[0] + ":smoke"
            defaults["captioners"] = default.captioners[:SMOKE_CAPTIONERS]
        out[caption_imagery] = PipelineConfig(imagery=caption_imagery, **{**defaults, **settings})
    return out


def caption_identity(method: Method, imagery: str, profile: str) -> dict[str, Any] | None:
    """What the method's caption sets depend on besides the data (goes into cache and record keys)."""
    configs = caption_configs(method, imagery, profile)
    if not configs:
        return None
    from urbanln_bench.captions.versions import caption_versions, styles_digest

    return {"versions": caption_versions(), "styles": styles_digest(),
            "configs": {k: dataclasses.asdict(v) for k, v in configs.items()}}


def method_captions(method: Method, data: CityData, imagery: str, profile: str,
                    progress: Callable | None) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Run (or reuse) the caption pipeline on ``data`` for the method; (captions, provenance).

    Captions per caption imagery: image id → the selected caption, or, for a method whose
    ``caption_stage()`` is ``raw`` or ``refined``, image id → the list of every candidate."""
    from urbanln_bench.captions.pipeline import FILES, run_pipeline

    stage = method.caption_stage()
    if stage not in FILES:
        raise UserError(f"method '{method.meta.name}': caption_stage() must be one of {', '.join(FILES)}, got {stage!r}")
    captions: dict[str, Any] = {}
    info = {}
    for caption_imagery, config in caption_configs(method, imagery, profile).items():
        run_ = run_pipeline(data, config, progress)
        if stage == "selected":
            captions[caption_imagery] = {r["image_id"]: r["caption"] for r in run_.read("selected")}
        else:  # every candidate, in the pipeline's order
            per_image: dict[str, list[str]] = {}
            for r in run_.read(stage):
                per_image.setdefault(r["image_id"], []).append(r["caption"])
            captions[caption_imagery] = per_image
        info[caption_imagery] = {"city": data.name, "key": run_.key, "reused": run_.reused,
                                 "images": len(captions[caption_imagery]),
                                 "seconds": run_.info.get("seconds_total")}
    return captions, info


class CaptionSets:
    """The caption sets a method asks for with ``caption_settings`` (the caption pipeline on the fit city)."""

    name = "captions"
    reads_probe_city = False  # the fit city's caption sets

    def needed(self, method: Method, imagery: str, profile: str) -> bool:
        return bool(method.caption_settings(imagery))

    def identity(self, method: Method, imagery: str, profile: str) -> Any | None:
        return caption_identity(method, imagery, profile)

    def provide(self, method, fit_data, data, imagery, profile, progress):
        return method_captions(method, fit_data, imagery, profile, progress)

    def summarise(self, provenance):
        return {k: {"key": v["key"], "images": v["images"]} for k, v in provenance.items()}


class TrueLatents:
    """The twin's latents of the embedded city, for a method that declares ``truth=("latents",)`` (the
    oracle); no other method gets them. They are a function of the data, whose manifest every key already
    carries, so they add no identity."""

    name = "latents"
    reads_probe_city = True

    def needed(self, method: Method, imagery: str, profile: str) -> bool:
        return self.name in method.meta.truth

    def identity(self, method: Method, imagery: str, profile: str) -> Any | None:
        return None

    def provide(self, method, fit_data, data, imagery, profile, progress):
        _, matrix = data.latents()
        return dict(zip(data.regions.ids, matrix, strict=True)), None

    def summarise(self, provenance):
        return None


class SceneGraphs:
    """The twin's ground-truth scene graphs of the embedded city, for a method that declares
    ``truth=("scene_graphs",)`` (the scene-graph ceiling): {"SI" / "SV": image id → graph dict} for the
    cell's imagery (both for ``SV+SI``), as ``truth/scene_graphs/*.jsonl`` stores them
    (``synth/scene.py``). Files of the data, so no identity beyond its manifest."""

    name = "scene_graphs"
    reads_probe_city = True

    def needed(self, method: Method, imagery: str, profile: str) -> bool:
        return self.name in method.meta.truth

    def identity(self, method: Method, imagery: str, profile: str) -> Any | None:
        return None

    def provide(self, method, fit_data, data, imagery, profile, progress):
        kinds = ("SV", "SI") if imagery == "SV+SI" else (imagery,)
        return {kind: data.scene_graphs(kind) for kind in kinds}, None

    def summarise(self, provenance):
        return None


FIT_INPUTS: Registry[FitInput] = Registry("fit input")
FIT_INPUTS.register("captions")(CaptionSets())
FIT_INPUTS.register("latents")(TrueLatents())
FIT_INPUTS.register("scene_graphs")(SceneGraphs())


def needed_fit_inputs(method: Method, imagery: str, profile: str) -> list[FitInput]:
    return [provider for name in FIT_INPUTS.names() if (provider := FIT_INPUTS.get(name)).needed(method, imagery, profile)]


def fit_input_identities(method: Method, imagery: str, profile: str) -> dict[str, Any]:
    """{input name: identity} of the inputs the method needs that add to its keys."""
    out = {}
    for provider in needed_fit_inputs(method, imagery, profile):
        identity = provider.identity(method, imagery, profile)
        if identity is not None:
            out[provider.name] = identity
    return out


def reads_probe_city(method: Method, imagery: str, profile: str) -> bool:
    """Whether a fit input the method needs reads the probe city (a provider that does not say is assumed to)."""
    return any(getattr(provider, "reads_probe_city", True) for provider in needed_fit_inputs(method, imagery, profile))


def fit_input_summaries(meta: dict[str, Any]) -> dict[str, Any]:
    """{input name: summary} for the record, from an embedding's metadata (the provenance each provided)."""
    out = {}
    for name in FIT_INPUTS.names():
        if meta.get(name):
            out[name] = FIT_INPUTS.get(name).summarise(meta[name])
    return out
