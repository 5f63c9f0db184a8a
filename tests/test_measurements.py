"""Stored measurements (measurements.py): `profile --save` and `captions report --save` write sealed files the
leaderboard draws Figure 4 and caption fidelity per stage from; the same caption inputs give the same bytes, an
edited file is refused by name, the figures redraw byte for byte and `leaderboard --check` fails when the stored
numbers change."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import cli

from urbanln_bench.figures import FidelityFigure, ProfileFigure, png_generator, render_png, versions
from urbanln_bench.leaderboard import build_leaderboard
from urbanln_bench.measurements import (
    FidelityRecord,
    Machine,
    MethodProfile,
    ProfileRecord,
    StageFidelity,
    load_measurement,
    measurement_problems,
    write_measurement,
)
from urbanln_bench.records import (
    CorruptRecordError,
    TamperedRecordError,
    corrupt_records,
    iter_records,
    record_files,
)

REPO = Path(__file__).resolve().parents[1]
TWO = ("synthetic:qwen2.5-vl-7b", "synthetic:llama-adapter-v2")
MACHINE = Machine(cpu="Test CPU 9000", cores=2, threads=2, platform="Linux-test", python="3.11.7", torch="2.14.1",
                  device="Test CPU 9000")


def _profile(speed: float = 120.0) -> ProfileRecord:
    methods = (MethodProfile("urbanln", "UrbanLN", 32, 3_399_937, 3_398_657, speed, "image + text towers"),
               MethodProfile("urbanclip", "UrbanCLIP", 32, 6_755_585, 6_755_585, 80.5),
               MethodProfile("resnet18", "ResNet-18", 64, 11_176_512, 0, 300.0, "frozen"),
               MethodProfile("color-histogram", "Colour histogram", 64, None, None, None, "no neural encoder"))
    return ProfileRecord(machine=MACHINE, profile="smoke", device="cpu", batch_size=2, batches=1, methods=methods,
                         git_revision="abc")


def _fidelity(city: str = "NY", imagery: str = "SV", precision: float = 0.9) -> FidelityRecord:
    stages = (StageFidelity("raw", 12, 0.81, 0.7, 150.0), StageFidelity("refined", 12, precision, 0.68, 120.5),
              StageFidelity("selected (consensus)", 3, 0.95, 0.72, 118.0),
              StageFidelity("selected (random)", 3, 0.88, 0.66, 121.0))
    return FidelityRecord(city=city, imagery=imagery, source="synthetic", scale="small", manifest="m" * 64,
                          tag="synthetic-small", caption_key="0123456789abcdef",
                          settings={"captioners": list(TWO), "candidates_per_captioner": 2, "refinement": True,
                                    "phrase_scorer": "clip:cpu", "limit": None},
                          versions={"captioner": "1", "pipeline": "2"}, stages=stages,
                          phrases={"judged": 40, "kept_share": 0.75})


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A store of two hand-made measurements and one record (the committed NY colour-histogram Crime/SI)."""
    results = tmp_path / "results"
    write_measurement(results, _profile())
    write_measurement(results, _fidelity())
    write_measurement(results, _fidelity(imagery="SI", precision=0.85))
    record = REPO / "results/synthetic-small/NY/color-histogram/Crime_SI_random.json"
    target = results / record.relative_to(REPO / "results")
    target.parent.mkdir(parents=True)
    shutil.copy(record, target)
    return results


# -- storing ---------------------------------------------------------------------------------------------------

def test_profile_save_stores_every_method_with_the_machine_and_random_weights_named(tmp_path: Path):
    results = tmp_path / "results"
    done = cli("profile", "--methods", "urbanln,resnet18,color-histogram,tile2vec,tile2vec-start", "--profile", "smoke",
               "--batch-size", "2",
               "--batches", "1", "--results", str(results))
    assert done.returncode == 0, done.stderr
    [path] = list((results / "profiles").rglob("*.json"))
    assert path.name == "smoke_cpu.json" and f"to {path}" in done.stderr.replace("\n", "")
    stored = load_measurement(path)
    assert isinstance(stored, ProfileRecord) and path == stored.path(results)
    assert stored.machine.cores >= 1 and stored.machine.cpu and stored.machine.torch.startswith("2.")
    assert "random weights" in stored.weights and (stored.batch_size, stored.batches) == (2, 1)
    rows = {m.method: m for m in stored.methods}
    assert rows["urbanln"].total > rows["urbanln"].trainable > 0 and rows["urbanln"].images_per_second > 0
    assert rows["resnet18"].trainable == 0 and rows["color-histogram"].total is None
    # a starting-weights row: its method's architecture, nothing of it trained
    assert rows["tile2vec-start"].total == rows["tile2vec"].total == rows["tile2vec"].trainable > 0
    assert rows["tile2vec-start"].trainable == 0 and "before any step" in rows["tile2vec-start"].note
    assert json.loads(path.read_text())["digest"].startswith("sha256:")
    assert record_files(results) == []  # not a record: `run`, `results` and the record checks never read it


def test_caption_fidelity_is_the_same_bytes_when_made_twice(tiny_ny: Path, tmp_path: Path):
    """Built from scratch twice (no cached caption set the second time) and through the CLI (reusing the set):
    one file, byte for byte; nothing of the machine (cache folder, seconds) in it."""
    from urbanln_bench.captions.pipeline import PipelineConfig
    from urbanln_bench.captions.report import fidelity_report
    from urbanln_bench.data.loader import CityData
    from urbanln_bench.measurements import fidelity_record

    copy = tmp_path / "NY"
    shutil.copytree(tiny_ny, copy, ignore=lambda folder, names: ["captions"] if Path(folder) == tiny_ny else [])
    data = CityData.open(copy)
    config = PipelineConfig(imagery="SV", captioners=TWO, refinement=False, limit=2)
    first = write_measurement(tmp_path / "a", fidelity_record(fidelity_report(data, config), data, config, "tiny"))
    shutil.rmtree(copy / "captions")
    report = fidelity_report(data, config)
    assert not report.reused
    second = write_measurement(tmp_path / "b", fidelity_record(report, data, config, "tiny"))
    assert first.relative_to(tmp_path / "a") == Path("synthetic-tiny/NY/captions/fidelity_SV.json")
    assert first.read_bytes() == second.read_bytes()
    stored = load_measurement(first)
    assert isinstance(stored, FidelityRecord) and stored.caption_key == report.key and stored.scale == "tiny"
    assert [s.stage for s in stored.stages] == ["raw", "selected (consensus)", "selected (random)"]
    assert str(copy) not in first.read_text() and "seconds" not in first.read_text()

    done = cli("captions", "report", "--city", "NY", "--scale", "tiny", "--imagery", "SV", "--captioner", TWO[0],
               "--captioner", TWO[1], "--no-refine", "--limit", "2", "--save", "--results", str(tmp_path / "c"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "c" / first.relative_to(tmp_path / "a")).read_bytes() == first.read_bytes()


# -- sealing ---------------------------------------------------------------------------------------------------

def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def test_an_edited_or_unsealed_measurement_is_refused_by_name(store: Path, tmp_path: Path):
    profile = _profile().path(store)
    _edit(profile, lambda d: d["methods"][0].update(images_per_second=999.0))  # a faster UrbanLN, by hand
    with pytest.raises(TamperedRecordError, match="does not match its digest") as caught:
        load_measurement(profile)
    assert str(profile) in str(caught.value) and "profile --profile smoke --device cpu --save" in str(caught.value)
    out = tmp_path / "board.md"
    check = cli("leaderboard", "--results", str(store), "--out", str(out), "--check")
    assert check.returncode == 1 and f"{profile}: the measurement's content does not match" in check.stderr
    write = cli("leaderboard", "--results", str(store), "--out", str(out))
    assert write.returncode == 2 and "not writing" in write.stderr and not out.exists()

    fidelity = _fidelity().path(store)
    _edit(fidelity, lambda d: d.pop("digest"))
    with pytest.raises(CorruptRecordError, match="unsealed measurement"):
        load_measurement(fidelity)
    _edit(fidelity, lambda d: d["stages"][0].update(object_recall="high"))
    with pytest.raises(CorruptRecordError, match=r"field 'stages\[0\]\.object_recall' must be a number"):
        load_measurement(fidelity)
    assert len(measurement_problems(store)) == 2


def test_record_readers_leave_measurements_alone(store: Path):
    assert [p.parent.name for p, _ in iter_records(store)] == ["color-histogram"]
    assert corrupt_records(store) == [] and measurement_problems(store) == []


def test_the_name_captions_is_refused_for_a_method():
    from urbanln_bench.method import MethodMeta

    with pytest.raises(ValueError, match="reserved"):
        MethodMeta(name="captions", display_name="C", version="1", imagery="SI", native_imagery=("SI",),
                   description="a method whose records would be read as caption fidelity")


# -- the leaderboard -------------------------------------------------------------------------------------------

def test_sections_and_figures_come_from_the_stored_files_and_redraw_the_same_bytes(store: Path):
    board = build_leaderboard(store)
    text = board.text
    assert "## Parameters and speed (Figure 4)" in text and "## Caption fidelity per stage" in text
    assert "### Test CPU 9000, 2 cores (2 torch threads), torch 2.14.1; `smoke` profile, cpu, batch 2 × 1; random weights" in text
    assert "| UrbanLN | urbanln | 32 px | 3,399,937 | 3,398,657 | 120.0 | Test CPU 9000 |" in text
    assert "| Colour histogram | color-histogram | 64 px | — | — | — |" in text
    assert "### NY SV (`synthetic-small`)" in text and "| refined | 12 | 0.900 | 0.680 | 120.5 |" in text
    assert text.index("### NY SV") < text.index("### NY SI")  # the paper's imagery order
    profile, fidelity = board.figures[-2:]
    assert isinstance(profile, ProfileFigure) and isinstance(fidelity, FidelityFigure)
    assert [p.label for p in profile.points] == ["UrbanLN", "UrbanCLIP", "ResNet-18"]  # no encoder: table only
    assert fidelity.stages == ("raw", "refined", "selected (consensus)", "selected (random)")
    assert [s.label for s in fidelity.series] == ["NY SV", "NY SI"] and fidelity.series[1].precision[1] == 0.85
    for figure in (profile, fidelity):
        data = render_png(figure)
        assert data == render_png(figure) and png_generator(data) == versions()
        assert f"](figures/{figure.name})" in text
    assert "Test CPU 9000" in profile.caption.split(":")[0] and "random weights" in profile.caption.split(":")[0]
    assert build_leaderboard(store).text == text


def test_check_fails_when_a_stored_measurement_or_its_figure_changes(store: Path, tmp_path: Path):
    out = tmp_path / "leaderboard.md"
    assert cli("leaderboard", "--results", str(store), "--out", str(out)).returncode == 0
    check = ("leaderboard", "--results", str(store), "--out", str(out), "--check")
    assert cli(*check).returncode == 0
    figures = {p.name: p for p in (tmp_path / "figures").glob("*.png")}
    assert set(figures) == {"profile-test-cpu-9000-2c-smoke-cpu.png", "caption-fidelity-synthetic-small.png"}

    saved = figures["caption-fidelity-synthetic-small.png"].read_bytes()
    figures["caption-fidelity-synthetic-small.png"].write_bytes(saved[:-20] + bytes(20))  # the PNG alone altered
    result = cli(*check)
    assert result.returncode == 1 and "caption-fidelity-synthetic-small.png: stale" in result.stderr
    figures["caption-fidelity-synthetic-small.png"].write_bytes(saved)

    for remeasured in (replace(_profile(), methods=(replace(_profile().methods[0], images_per_second=95.0),
                                                    *_profile().methods[1:])),
                       _fidelity(precision=0.7)):  # a new profile or report, sealed as `--save` seals it
        before = {p: p.read_bytes() for p in store.rglob("*.json")}
        write_measurement(store, remeasured)
        result = cli(*check)
        assert result.returncode == 1 and f"{out} is stale" in result.stderr
        board = build_leaderboard(store, "figures")
        assert out.read_text() != board.text
        changed = [f for f in board.figures if render_png(f) != (tmp_path / "figures" / f.name).read_bytes()]
        assert len(changed) == 1  # the figure of the changed file, and only it, is stale too
        for path, data in before.items():
            path.write_bytes(data)
        assert cli(*check).returncode == 0
