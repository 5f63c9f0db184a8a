"""The caption components' versions: what caption sets, caption-trained records and the synthetic
foundation are keyed by (docs/identity.md), instead of the components' source text.

Bump a component's version when what it computes changes for the same settings and inputs. Each
version is guarded by a golden output (tests/test_caption_golden.py for the captioners, the pipeline
and the calibration's scorer; tests/test_training_golden.py for the phrase grounder), which fails when the output
moves without a bump (and when a bump comes without a new golden entry), saying which constant to
change. A refactor that computes the same leaves every key, and so every committed record, valid.

Light on purpose: the runner reads these to key records before any backend loads.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from importlib import resources

# The simulated MLLM captioners (synthetic_captioner, grammar, short_captions): long captions, local
# captions, and the pretraining world's short captions.
CAPTIONER_VERSION = 1
# The data-level pipeline: segmentation, maximal rectangles, phrase extraction, refinement, CAPTURE
# consensus, and the caption files it writes.
PIPELINE_VERSION = 2
# 2: the offline phrase scorer is the phrase grounder; torch runs on one thread while captioning
# The phrase grounder (grounding): its training and model.
GROUNDING_VERSION = 4
# The grounder's threshold calibration (phrase_scoring.calibrate_clip_threshold).
CALIBRATION_VERSION = 3


def caption_versions() -> dict[str, int]:
    return {"pipeline": PIPELINE_VERSION, "captioners": CAPTIONER_VERSION, "grounding": GROUNDING_VERSION,
            "calibration": CALIBRATION_VERSION}


def styles_digest() -> str:
    """sha256 of the captioner persona files' parsed contents (``captions/styles/*.toml``): inputs, not
    code; their comments and layout do not count."""
    styles = resources.files("urbanln_bench.captions").joinpath("styles")
    parsed = {entry.name: tomllib.loads(entry.read_text(encoding="utf-8"))
              for entry in sorted(styles.iterdir(), key=lambda e: e.name) if entry.name.endswith(".toml")}
    return hashlib.sha256(json.dumps(parsed, sort_keys=True).encode()).hexdigest()[:16]
