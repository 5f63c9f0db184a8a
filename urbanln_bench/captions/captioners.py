"""Captioner backends behind one protocol and one registry (docs/methods.md#urbanln, data level).

A captioner writes long captions for an image (``describe``), short captions for crops
(``describe_region``, the refinement's local captions) and merges kept local details back into
one long caption (``rewrite``, the refinement's last step; the same captioner does both, as in
the paper). Built-in backends:

- ``synthetic``: simulated MLLM personas writing from the twins' scene graphs (offline default);
- ``transformers``: any local image-text-to-text model directory (real MLLMs, where weights exist);
- ``file``: captions produced elsewhere, imported from JSONL.

Specs are ``"backend:argument"`` strings, e.g. ``"synthetic:qwen2.5-vl-7b"``,
``"transformers:/models/Qwen2.5-VL-7B-Instruct"``, ``"file:captions.jsonl"``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from urbanln_bench.errors import UserError
from urbanln_bench.registry import Registry

DEFAULT_CAPTIONS_PER_IMAGE = 2
"""UrbanLN asks each MLLM for more than one caption per image; consensus selection picks among them."""

PAPER_CAPTIONERS: tuple[str, ...] = (
    "synthetic:llama-adapter-v2",
    "synthetic:sharegpt4v-7b",
    "synthetic:qwen2.5-vl-7b",
    "synthetic:deepseek-vl2-tiny",
    "synthetic:internvl3-8b",
)
"""Simulated stand-ins for the five MLLMs the paper captions with (UrbanLN's multi-captioner set)."""

SINGLE_CAPTIONER: dict[str, str] = {
    # UrbanCLIP's captions came from LLaMA-Adapter V2 (docs/methods.md#urbanclip).
    "urbanclip": "synthetic:llama-adapter-v2",
    # UrbanVLP's street-view texts are long single paragraphs (docs/methods.md#urbanvlp); its MLLM is not named in
    # our notes, so the long, flowing ShareGPT4V-style persona stands in.
    "urbanvlp": "synthetic:sharegpt4v-7b",
}
"""The captioner each single-captioner baseline uses, so the choice is stated, not implicit."""


@runtime_checkable
class Captioner(Protocol):
    """What the caption pipeline needs from any backend."""

    name: str

    def describe(self, image: np.ndarray | None, image_id: str, graph: Mapping[str, Any] | None, n: int,
                 rng: np.random.Generator | None = None) -> list[str]:
        """``n`` long captions of one image (``graph``: its scene graph dict, synthetic twins only)."""
        ...

    def describe_region(self, image: np.ndarray | None, image_id: str, graph: Mapping[str, Any] | None,
                        box: Sequence[float], rng: np.random.Generator | None = None) -> str:
        """A short caption (≤ 20 words) of the crop ``box`` = (x0, y0, x1, y1) in pixels."""
        ...

    def rewrite(self, overall: str, local_details: Sequence[str], image: np.ndarray | None = None,
                image_id: str = "", rng: np.random.Generator | None = None) -> str:
        """One long caption: ``overall`` with the kept local details absorbed, no duplicates."""
        ...


CAPTIONERS: Registry[Any] = Registry("captioner", entry_point_group="urbanln_bench.captioners")

_BUILTINS = {
    "synthetic": "urbanln_bench.captions.synthetic_captioner:SyntheticCaptioner",
    "transformers": "urbanln_bench.captions.transformers_captioner:TransformersCaptioner",
    "file": "urbanln_bench.captions.caption_file:FileCaptioner",
}
# the argument after "backend:" in a spec, per backend
_SPEC_ARGUMENT = {"synthetic": "persona", "transformers": "model_dir", "file": "path"}


def _register_builtins() -> None:
    """Register the built-ins unless this distribution's entry points already did (no double entry)."""
    CAPTIONERS.discover()
    for name, target in _BUILTINS.items():
        if name not in CAPTIONERS or not CAPTIONERS.is_builtin(name):
            CAPTIONERS.register(name, target, builtin=True, origin="urbanln_bench.captions.captioners")


_register_builtins()


def build_captioner(spec: str, **options: Any) -> Captioner:
    """A captioner from ``"backend:argument"`` (or a bare backend name) plus keyword options."""
    backend, sep, argument = spec.partition(":")
    factory = CAPTIONERS.get(backend)
    kwargs = dict(options)
    if sep:
        key = _SPEC_ARGUMENT.get(backend)
        if key is None:
            raise UserError(f"captioner spec '{spec}': backend '{backend}' takes no ':argument'; "
                            "pass options as keywords instead")
        kwargs[key] = argument
    try:
        return factory(**kwargs)
    except TypeError as exc:
        raise UserError(f"captioner spec '{spec}': {exc}") from exc
