"""Golden outputs of the caption components, one per version in ``captions/versions.py``.

Records and caption sets are keyed by these versions, not by source text (docs/identity.md), so a
change of what a component computes must bump its version: these tests fail until it does, and
until the new version has its golden entry. A refactor that computes the same passes untouched.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from urbanln_bench.captions import versions

# sha256 of the golden texts per CAPTIONER_VERSION (the five paper personas' long, local and merged
# captions and the short caption of four NY tiny scene graphs).
CAPTIONER_GOLDEN = {1: "8992e52d7b6fac8e2029fa65fccd246b78e17879e1e9025e5ba72a7a9d61e85e"}
# sha256 of the phrases CAPTURE's parser extracts from those captions, per PIPELINE_VERSION.
PIPELINE_PARSE_GOLDEN = {2: "5bf669f66042013b91246d210a1464d566dfd497d383ec2edb6eb74d6637c111"}
# CAPTURE (α, β, γ = 5, 5, 2; no WordNet) of the first persona's caption against each other persona's,
# per PIPELINE_VERSION: float32 sentence embeddings, so pinned to a tolerance, not to the bit.
PIPELINE_CAPTURE_GOLDEN: dict[int, list[float]] = {2: [0.590393, 0.676359, 0.675868, 0.702594]}
CAPTURE_TOLERANCE = 1e-5


def _graphs(twin: Path) -> list[tuple[str, dict]]:
    out = []
    for kind in ("satellite", "streetview"):
        with open(twin / "truth" / "scene_graphs" / f"{kind}.jsonl") as handle:
            for line, _ in zip(handle, range(2), strict=False):
                entry = json.loads(line)
                out.append((entry["image_id"], entry["graph"]))
    return out


def _golden_texts(twin: Path) -> list[str]:
    from urbanln_bench.captions.captioners import PAPER_CAPTIONERS, build_captioner
    from urbanln_bench.captions.short_captions import short_caption
    from urbanln_bench.captions.synthetic_captioner import stable_rng

    texts = []
    for image_id, graph in _graphs(twin):
        box = (0.0, 0.0, graph["width"] / 2, graph["height"] / 2)
        for spec in PAPER_CAPTIONERS:
            captioner = build_captioner(spec, seed=0)
            long_captions = captioner.describe(None, image_id, graph, n=2)
            local = captioner.describe_region(None, image_id, graph, box)
            texts += [*long_captions, local, captioner.rewrite(long_captions[0], [local], image_id=image_id)]
        texts.append(short_caption(graph, stable_rng("golden", image_id)))
    return texts


def _digest(items) -> str:
    return hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()


def _check(name: str, golden: dict, version: int, value: str) -> None:
    assert version in golden, (f"{name} is {version} but its golden table in tests/test_caption_golden.py has "
                               f"no entry for it: add {{{version}: {value!r}}}")
    assert golden[version] == value, (
        f"the golden output of {name} {version} moved (now {value!r}). If the change is meant, bump {name} in "
        f"urbanln_bench/captions/versions.py, add {{{version + 1}: {value!r}}} to the golden table and re-run "
        "the caption-trained records; if not (a refactor), find what moved.")


@pytest.fixture(scope="module")
def golden_texts(tiny_ny: Path) -> list[str]:
    return _golden_texts(tiny_ny)


def test_captioners_match_their_golden_output(golden_texts: list[str]):
    assert len(golden_texts) == 4 * (5 * 4 + 1)
    _check("CAPTIONER_VERSION", CAPTIONER_GOLDEN, versions.CAPTIONER_VERSION, _digest(golden_texts))


def test_capture_parser_matches_its_golden_output(golden_texts: list[str]):
    from urbanln_bench.captions.capture import CaptureScorer

    scorer = CaptureScorer(soft_matching=False, wordnet=False)
    phrases = [scorer.parse(text).phrases() for text in golden_texts]
    _check("PIPELINE_VERSION", PIPELINE_PARSE_GOLDEN, versions.PIPELINE_VERSION, _digest(phrases))


def test_capture_scores_match_their_golden_values(golden_texts: list[str]):
    from urbanln_bench.captions.capture import CaptureScorer

    scorer = CaptureScorer(wordnet=False)
    first, others = golden_texts[0], golden_texts[4:20:4]  # persona 1's caption against personas 2–5
    scores = [round(scorer.score(first, other), 6) for other in others]
    golden = PIPELINE_CAPTURE_GOLDEN.get(versions.PIPELINE_VERSION)
    assert golden, (f"PIPELINE_CAPTURE_GOLDEN has no values for PIPELINE_VERSION {versions.PIPELINE_VERSION}: "
                    f"add {{{versions.PIPELINE_VERSION}: {scores}}}")
    assert np.allclose(scores, golden, rtol=0, atol=CAPTURE_TOLERANCE), (
        f"CAPTURE moved beyond {CAPTURE_TOLERANCE} (now {scores}, golden {golden}): bump PIPELINE_VERSION "
        "if meant")


def test_caption_versions_are_what_keys_carry():
    from urbanln_bench.fit_inputs import caption_identity
    from urbanln_bench.runner import RunOptions, make_method

    identity = caption_identity(make_method(RunOptions(method="urbanln", city="NY")), "SI", "smoke")
    assert identity["versions"] == versions.caption_versions()
    assert identity["styles"] == versions.styles_digest()
    assert "code" not in identity  # never the source text


def test_persona_comments_do_not_move_the_styles_digest(tmp_path, monkeypatch):
    """A persona file is an input: its parsed values count, its comments do not."""
    from importlib import resources

    source = resources.files("urbanln_bench.captions").joinpath("styles")
    copy = tmp_path / "captions" / "styles"
    copy.mkdir(parents=True)
    for entry in source.iterdir():
        if entry.name.endswith(".toml"):
            (copy / entry.name).write_text(entry.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setattr(versions.resources, "files", lambda package: tmp_path / "captions")
    before = versions.styles_digest()
    first = sorted(copy.glob("*.toml"))[0]
    first.write_text("# a new comment\n" + first.read_text(encoding="utf-8"), encoding="utf-8")
    assert versions.styles_digest() == before
    first.write_text(first.read_text(encoding="utf-8") + "\n[extra_for_test]\nvalue = 1\n", encoding="utf-8")
    assert versions.styles_digest() != before
