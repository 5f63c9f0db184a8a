"""How the CLIP baselines turn the caption pipeline's long captions into their training text.

- UrbanCLIP (and UrbanVLP's satellite branch) train on **one sentence per image**: the captioner's
  output is split on ``'. '`` (its toolkit's ``img-caption-generator.py``) and the dataset draws one
  sentence per image, once, when it is built (``CoCaDataset``; UrbanVLP's
  ``MultigranuDataset_full_preload``), not per epoch. ``one_sentence_per_image`` does that with an
  explicit seeded generator over the images in sorted id order.
- UrbanCLIP's toolkit drops images whose caption mentions a keyword (``img-filter.py``, default
  ``ocean``): ``without_keyword``.
- UrbanVLP's street-view branch trains on **one text per region**: the descriptions of the region's
  street views joined with spaces (its preprocessing script), which the 77-token tokenizer then
  truncates: ``joined_region_texts``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def split_sentences(caption: str) -> list[str]:
    """The caption split on ``'. '`` as UrbanCLIP's toolkit does (empty pieces dropped)."""
    return [s.strip() for s in caption.split(". ") if s.strip()]


def one_sentence_per_image(captions: Mapping[str, str], image_ids: Sequence[str], seed: int) -> dict[str, str]:
    """Image id → one sentence of its caption, drawn once with ``default_rng(seed)`` in sorted id order."""
    rng = np.random.default_rng(seed)
    out = {}
    for image_id in sorted(image_ids):
        sentences = split_sentences(captions[image_id]) or [captions[image_id].strip()]
        out[image_id] = sentences[int(rng.integers(len(sentences)))]
    return out


def without_keyword(captions: Mapping[str, str], image_ids: Sequence[str], keyword: str) -> list[str]:
    """The image ids whose caption does not contain ``keyword`` (case-insensitive; "" keeps all)."""
    if not keyword:
        return list(image_ids)
    return [i for i in image_ids if keyword.lower() not in captions[i].lower()]


def joined_region_texts(captions: Mapping[str, str], views_by_region: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Region id → its street views' captions joined with spaces (regions without a captioned view left out)."""
    out = {}
    for region_id, views in views_by_region.items():
        texts = [captions[v].strip() for v in views if v in captions]
        if texts:
            out[region_id] = " ".join(texts)
    return out
