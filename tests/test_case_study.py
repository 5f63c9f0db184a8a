"""The case study (the paper's Figure 6, case_study.py): `urbanln-bench case-study` seals the PCA and k-means of
the embeddings `run` probes into the result store, the same bytes every time; the leaderboard draws it from
the store alone and `leaderboard --check` fails when the artifact changes; bad input writes nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import cli

from urbanln_bench.case_study import (
    CaseStudyOptions,
    TamperedCaseStudyError,
    decode_thumbnail,
    load_case_study,
    project,
)
from urbanln_bench.figures import CaseStudyFigure, render_png, scott_kde
from urbanln_bench.leaderboard import build_leaderboard
from urbanln_bench.records import corrupt_records, iter_records

REPO = Path(__file__).resolve().parents[1]
TINY = ("--city", "NY", "--scale", "tiny", "--profile", "smoke")
METHOD = "color-histogram"
ARTIFACT = Path("synthetic-tiny/NY/color-histogram/case_study_SV.json")


def _make(results: Path, *extra: str):
    return cli("case-study", "--method", METHOD, *TINY, "--results", str(results), *extra)


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """A store holding one case study of the colour-histogram floor on the NY tiny twin (SV, 3 clusters)."""
    results = tmp_path_factory.mktemp("case-study") / "results"
    done = _make(results)
    assert done.returncode == 0, done.stderr
    return results


def test_the_artifact_holds_the_figure_and_is_the_same_bytes_when_made_again(made: Path, tmp_path: Path):
    path = made / ARTIFACT
    first = path.read_bytes()
    study = load_case_study(path).data
    regions, clusters = study["regions"], study["clusters"]
    n = study["embedding"]["regions"]
    assert 50 < n <= 100 and all(len(regions[c]) == n for c in ("id", "row", "col", "pc1", "pc2", "cluster", "y", "ln_y"))
    assert [c["cluster"] for c in clusters] == [0, 1, 2] and sum(c["size"] for c in clusters) == n
    assert sorted(set(regions["cluster"])) == [0, 1, 2]
    assert [c["mean_pc1"] for c in clusters] == sorted(c["mean_pc1"] for c in clusters)  # numbered by mean PC1
    y, ln_y = np.array(regions["y"], dtype=float), np.array(regions["ln_y"], dtype=float)
    assert np.allclose(np.log1p(y), ln_y, rtol=1e-4, equal_nan=True)
    assert 0 < study["pca"]["explained_variance"][1] <= study["pca"]["explained_variance"][0] < 1
    for c in clusters:
        members = [i for i, k in enumerate(regions["cluster"]) if k == c["cluster"]]
        assert c["mean_y"] == pytest.approx(np.nanmean(y[members]), rel=1e-3)
        assert len(c["samples"]) == 3 and {s["region"] for s in c["samples"]} <= {regions["id"][i] for i in members}
        import base64

        assert all(decode_thumbnail(base64.b64decode(s["png"])).shape == (64, 64, 3) for s in c["samples"])
    assert study["data"]["synthetic"] and study["data"]["label"] == "synthetic twin, not real data"
    assert study["key"] and study["digest"].startswith("sha256:") and len(first) < 300_000
    assert list(iter_records(made)) == [] and corrupt_records(made) == []  # not a record: record readers skip it

    again = _make(made)  # same key: reused, untouched
    assert again.returncode == 0 and "reused" in again.stderr and path.read_bytes() == first
    fresh = tmp_path / "results"
    remade = _make(fresh, "--overwrite", "always")  # made anew, from the cached embeddings
    assert remade.returncode == 0, remade.stderr
    assert (fresh / ARTIFACT).read_bytes() == first
    changed = _make(fresh, "--clusters", "4")  # another setting: another key, so made again
    assert changed.returncode == 0 and "wrote" in changed.stderr
    assert len(load_case_study(fresh / ARTIFACT).data["clusters"]) == 4


def test_the_case_study_uses_the_embeddings_run_probes(made: Path, tmp_path: Path, monkeypatch):
    log = tmp_path / "builds.log"
    monkeypatch.setenv("URBANLN_BENCH_BUILD_LOG", str(log))
    done = cli("run", "--method", METHOD, *TINY, "--imagery", "SV", "--task", "Pop", "--seeds", "0", "--no-frame",
               "--results", str(tmp_path / "results"))
    assert done.returncode == 0, done.stderr
    builds = [line.split("\t")[0] for line in log.read_text().splitlines()]
    assert builds == ["record"]  # the case study's embeddings were the run's: none built again


def test_the_figure_is_drawn_the_same_twice_and_check_fails_when_the_artifact_changes(made: Path, tmp_path: Path):
    import shutil

    results = tmp_path / "results"
    shutil.copytree(made, results)
    board = build_leaderboard(results)
    [figure] = board.figures
    assert isinstance(figure, CaseStudyFigure) and len(figure.thumbnails) == 3
    data = render_png(figure)
    assert data == render_png(figure) and data.startswith(b"\x89PNG")
    assert "## Case study (Figure 6)" in board.text and f"](figures/{figure.name})" in board.text
    study = load_case_study(results / ARTIFACT).data
    first = study["clusters"][0]
    assert f"| 1 | {first['size']} | {first['labelled']} | {first['mean_y']:.5g} | {first['median_y']:.5g} |" in board.text
    assert f"PC1 holds {100 * study['pca']['explained_variance'][0]:.1f} %" in board.text

    out = tmp_path / "leaderboard.md"
    check = ("leaderboard", "--results", str(results), "--out", str(out), "--check")
    assert cli("leaderboard", "--results", str(results), "--out", str(out)).returncode == 0
    png = tmp_path / "figures" / figure.name
    assert png.read_bytes() == data and cli(*check).returncode == 0

    changed = _make(results, "--clusters", "4")  # the artifact changes: the table and the figure are stale
    assert changed.returncode == 0, changed.stderr
    stale = cli(*check)
    assert stale.returncode == 1 and f"{out} is stale" in stale.stderr
    assert cli("leaderboard", "--results", str(results), "--out", str(out)).returncode == 0
    assert png.read_bytes() != data and cli(*check).returncode == 0
    png.write_bytes(data)  # the old figure beside the new table
    stale = cli(*check)
    assert stale.returncode == 1 and f"{png}: stale" in stale.stderr

    path = results / ARTIFACT  # a number edited by hand, digest kept
    edited = json.loads(path.read_text())
    edited["clusters"][0]["mean_y"] = 1.0
    path.write_text(json.dumps(edited))
    with pytest.raises(TamperedCaseStudyError, match="does not match its digest"):
        load_case_study(path)
    tampered = cli(*check)
    assert tampered.returncode == 1 and "case_study_SV.json: the case study's content does not match" in tampered.stderr
    refused = cli("leaderboard", "--results", str(results), "--out", str(out))
    assert refused.returncode == 2 and "not writing" in refused.stderr


def test_verify_keys_replays_the_case_studys_key(made: Path, tmp_path: Path):
    import shutil

    from urbanln_bench.case_study import stale_case_studies, write_case_study

    results = tmp_path / "results"
    shutil.copytree(made, results)
    verify = ("leaderboard", "--results", str(results), "--out", str(tmp_path / "leaderboard.md"), "--verify-keys")
    assert stale_case_studies(results) == [] and cli(*verify).returncode == 0
    path = results / ARTIFACT
    study = load_case_study(path).data
    write_case_study(path, {**study, "key": "0" * 64})  # made by other code: sealed, but another key
    [stale] = stale_case_studies(results)
    assert stale.startswith(f"{path}: the current code computes another key")
    done = cli(*verify)
    assert done.returncode == 1 and "1 stale record(s)" in done.stderr and "case_study_SV.json" in done.stderr


def _city_without_streetview(tmp_path: Path) -> Path:
    text = (REPO / "cities" / "NY.toml").read_text().replace('imagery = ["SV", "SI"]', 'imagery = ["SI"]', 1)
    path = tmp_path / "NY-si.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("args, message", [
    (("--method", "colour-histogram", *TINY), "did you mean"),
    (("--method", METHOD, *TINY, "--clusters", "1"), "--clusters must be an integer of at least 2"),
    (("--method", METHOD, *TINY, "--clusters", "500"), "is more than the"),
    (("--method", METHOD, *TINY, "--task", "GDP"), "has no task 'GDP'"),
    (("--method", METHOD, *TINY, "--imagery", "SV+SI"), "--imagery must be SV or SI"),
    (("--method", METHOD, "--city", "NY", "--scale", "tiny", "--profile", "laptop"), "laptop"),
    (("--method", METHOD, "--city-file", "CITY-WITHOUT-SV", "--scale", "tiny", "--profile", "smoke"),
     "has no SV imagery"),
])
def test_bad_input_fails_cleanly_and_writes_nothing(tmp_path: Path, args: tuple[str, ...], message: str):
    args = tuple(str(_city_without_streetview(tmp_path)) if a == "CITY-WITHOUT-SV" else a for a in args)
    results = tmp_path / "results"
    done = cli("case-study", *args, "--results", str(results))
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not results.exists()


def test_projection_and_density_are_what_they_say(tmp_path: Path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5)) * np.array([5.0, 2.0, 1.0, 1.0, 0.0])  # a constant dimension too
    z, scores, explained = project(x)
    assert np.allclose(z[:, :4].std(axis=0), 1.0) and np.allclose(z[:, 4], 0.0)
    again = project(-x)[1]  # the sign convention: the same picture for a mirrored embedding
    assert np.allclose(np.abs(scores), np.abs(again)) and sum(explained) <= 1.0
    expected = np.linalg.eigvalsh(np.cov(z[:, :4].T, bias=True))[::-1][:2] / 4.0
    assert np.allclose(explained, expected)
    values = rng.normal(3.0, 0.5, 400)
    grid = np.linspace(-2, 8, 2001)
    density = scott_kde(values, grid)
    assert abs(float(density.sum() * (grid[1] - grid[0])) - 1.0) < 1e-3
    assert abs(float(grid[np.argmax(density)]) - 3.0) < 0.2
    assert CaseStudyOptions(method="x").clusters == 3
    assert os.environ.get("URBANLN_BENCH_CACHE")  # the tests' cache, never the user's
