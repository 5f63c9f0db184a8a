"""The ``transformers`` captioner backend: a local image-text-to-text model directory (a real MLLM).

The paper captions with LLaMA-Adapter V2, ShareGPT4V-7B, Qwen2.5-VL-7B, DeepSeek-VL2-tiny and
InternVL3-8B; any of them (or another model) that ``AutoModelForImageTextToText`` can load from a
local folder works here. Nothing is downloaded: the folder must hold the weights and processor.
The prompt is configurable; when the processor has a chat template it wraps the prompt, else the
processor's image token is put in front of the prompt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from urbanln_bench.errors import UserError

DEFAULT_PROMPT = ("Describe this urban image in detail: the buildings, roads, vehicles, vegetation, water and "
                  "other objects, their numbers, colours, sizes and positions, and how they relate.")
DEFAULT_REGION_PROMPT = "Describe this part of the image in one short phrase."
DEFAULT_REWRITE_PROMPT = ("Rewrite the following description into one long, fluent description, adding these "
                          "details without repeating anything.\nDescription: {caption}\nDetails: {details}")


class TransformersCaptioner:
    """Captions from a local transformers MLLM (CPU by default); ``rng`` seeds the sampling."""

    backend = "transformers"

    def __init__(self, model_dir: str | Path, prompt: str = DEFAULT_PROMPT, max_new_tokens: int = 256,
                 region_prompt: str = DEFAULT_REGION_PROMPT, rewrite_prompt: str = DEFAULT_REWRITE_PROMPT,
                 temperature: float = 0.7, device: str = "cpu", name: str | None = None) -> None:
        self.model_dir = Path(model_dir).expanduser()
        if not self.model_dir.is_dir():
            raise UserError(f"captioner model directory '{self.model_dir}' does not exist"
                            + (" (it is a file)" if self.model_dir.exists() else "")
                            + "; point 'transformers:<dir>' at a local folder holding the model's config, weights "
                            "and processor files (nothing is downloaded)")
        if not (self.model_dir / "config.json").is_file():
            raise UserError(f"captioner model directory '{self.model_dir}' has no config.json; "
                            "it must be a folder saved with save_pretrained (model and processor)")
        self.prompt = prompt
        self.region_prompt = region_prompt
        self.rewrite_prompt = rewrite_prompt
        self.max_new_tokens = int(max_new_tokens)
        self.temperature = float(temperature)
        self.device = device
        self.name = name or self.model_dir.name

    def __repr__(self) -> str:
        return f"TransformersCaptioner({str(self.model_dir)!r})"

    @cached_property
    def _loaded(self) -> tuple[Any, Any]:
        """(processor, model), loaded once, offline, from the local folder only."""
        try:
            from transformers import AutoModelForImageTextToText, AutoProcessor
        except ImportError as exc:
            raise UserError("the 'transformers' captioner needs the transformers package: pip install transformers") from exc
        try:
            processor = AutoProcessor.from_pretrained(self.model_dir, local_files_only=True)
            model = AutoModelForImageTextToText.from_pretrained(self.model_dir, local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(f"cannot load an image-text-to-text model from '{self.model_dir}': {exc}") from exc
        model.to(self.device).eval()
        return processor, model

    def _text(self, prompt: str, with_image: bool) -> str:
        processor, _ = self._loaded
        if getattr(processor, "chat_template", None):
            content: list[dict[str, str]] = [{"type": "image"}] if with_image else []
            content.append({"type": "text", "text": prompt})
            return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
        token = getattr(processor, "image_token", None)
        if with_image and token and token not in prompt:
            return f"{token} {prompt}"
        return prompt

    def _generate(self, prompt: str, image: np.ndarray | None, n: int, seed: int, max_new_tokens: int) -> list[str]:
        import torch
        from PIL import Image

        processor, model = self._loaded
        text = self._text(prompt, image is not None)
        kwargs: dict[str, Any] = {"text": text, "return_tensors": "pt"}
        if image is not None:
            kwargs["images"] = Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
        inputs = processor(**kwargs).to(self.device)
        sample = n > 1
        outputs = []
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            torch.manual_seed(seed)
            for _ in range(n):
                generated = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=sample,
                                           temperature=self.temperature if sample else None,
                                           top_p=0.9 if sample else None)
                new = generated[:, inputs["input_ids"].shape[1]:]
                outputs.append(processor.batch_decode(new, skip_special_tokens=True)[0].strip())
        return outputs

    @staticmethod
    def _seed(rng: np.random.Generator | None, *parts: object) -> int:
        if rng is not None:
            return int(rng.integers(0, 2**31 - 1))
        from urbanln_bench.captions.synthetic_captioner import stable_rng

        return int(stable_rng(*parts).integers(0, 2**31 - 1))

    def describe(self, image: np.ndarray | None, image_id: str, graph: Mapping[str, Any] | None = None, n: int = 2,
                 rng: np.random.Generator | None = None) -> list[str]:
        """``n`` captions (sampled when n > 1, greedy for one); the scene graph is not used."""
        if image is None:
            raise UserError(f"captioner '{self.name}' needs the image itself for '{image_id}'")
        return self._generate(self.prompt, image, n, self._seed(rng, self.name, image_id), self.max_new_tokens)

    def describe_region(self, image: np.ndarray | None, image_id: str, graph: Mapping[str, Any] | None,
                        box: Sequence[float], rng: np.random.Generator | None = None) -> str:
        """The crop captioned with the region prompt, cut to 20 words."""
        if image is None:
            raise UserError(f"captioner '{self.name}' needs the image itself for '{image_id}'")
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        crop = np.asarray(image)[max(0, y0):max(y0 + 1, y1), max(0, x0):max(x0 + 1, x1)]
        text = self._generate(self.region_prompt, crop, 1, self._seed(rng, self.name, image_id, *box), 40)[0]
        return " ".join(text.split()[:20])

    def rewrite(self, overall: str, local_details: Sequence[str], image: np.ndarray | None = None,
                image_id: str = "", rng: np.random.Generator | None = None) -> str:
        """The same model merges the details (the paper's merge step); empty output keeps ``overall``."""
        if not local_details:
            return overall
        prompt = self.rewrite_prompt.format(caption=overall, details="; ".join(local_details))
        text = self._generate(prompt, image, 1, self._seed(rng, self.name, image_id, overall),
                              max(self.max_new_tokens, 2 * len(overall.split())))[0]
        return text or overall
