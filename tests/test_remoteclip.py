"""RemoteCLIP: a local open_clip checkpoint, the offline hub cache, the labelled surrogate (docs/methods.md#remoteclip)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from urbanln_bench.backbones.clip import build_clip
from urbanln_bench.errors import UserError
from urbanln_bench.method import FitContext, get_method


def make(tmp_path: Path | None = None, profile: str = "smoke", **config):
    method = get_method("remoteclip")(config)
    method.run_profile = profile
    return method


def fit(method, tmp_path: Path) -> None:
    method.fit(None, "SI", FitContext(seed=0, device="cpu", work_dir=tmp_path / "work", scale="tiny", profile="smoke"))


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    """A randomly initialised tiny open_clip CLIP, saved as a plain state dict (RemoteCLIP's format)."""
    torch.manual_seed(11)
    model, _, _ = build_clip("smoke")
    path = tmp_path / "my-remoteclip.pt"
    torch.save(model.state_dict(), path)
    return path, model.eval()


def test_local_checkpoint_is_loaded_and_named(tiny_checkpoint, tmp_path: Path):
    path, reference = tiny_checkpoint
    method = make(weights=str(path), arch="smoke")
    assert method.weight_source().startswith("local checkpoint: my-remoteclip.pt (sha256 ")
    assert method.variant_label() == "RemoteCLIP [smoke]"
    assert "/" not in method.variant_slug() and "my-remoteclip" in method.variant_slug()
    assert (method.input_size, method.mean) == (32, (0.48145466, 0.4578275, 0.40821073))  # the CLIP's preprocess
    fit(method, tmp_path)
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = F.normalize(reference.encode_image(pixels), dim=-1)  # L2-normalised, as clip_benchmark does
        torch.testing.assert_close(method.encode_images(pixels), expected)
        raw = make(weights=str(path), arch="smoke", normalize="false")
        fit(raw, tmp_path)
        torch.testing.assert_close(raw.encode_images(pixels), reference.encode_image(pixels))


def test_wrong_architecture_is_a_clear_error(tiny_checkpoint, tmp_path: Path):
    path, _ = tiny_checkpoint
    with pytest.raises(UserError, match=r"weights do not fit the 'ViT-B-32' CLIP .* the file holds ViT image 32, "
                                        r"patch 8, width 64.*RemoteCLIP-RN50.pt \(--set arch=RN50\)"):
        fit(make(weights=str(path), arch="ViT-B-32"), tmp_path)
    with pytest.raises(UserError, match="cannot tell the architecture of my-remoteclip.pt; say it with --set arch="):
        make(weights=str(path)).weight_source()
    with pytest.raises(UserError, match="weights file not found"):
        make(weights=str(tmp_path / "missing.pt")).weight_source()
    with pytest.raises(UserError, match=r"no RemoteCLIP-ViT-L-14.pt weights: pass the checkpoint with --set weights"):
        make(arch="ViT-L-14").weight_source()


def test_offline_hub_cache_is_found_by_file_name(tiny_checkpoint, tmp_path: Path, monkeypatch):
    """RemoteCLIP-ViT-B-32.pt in the Hugging Face cache is used without any setting (never downloaded)."""
    path, _ = tiny_checkpoint
    snapshot = tmp_path / "hub" / "models--chendelong--RemoteCLIP" / "snapshots" / "abc123def4567890"
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("abc123def4567890")
    path.rename(snapshot / "RemoteCLIP-ViT-B-32.pt")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    method = make()
    assert method.weight_source() == "hf-hub cache: chendelong/RemoteCLIP@abc123def456 (RemoteCLIP-ViT-B-32.pt)"
    assert method.variant_label() == "RemoteCLIP [ViT-B-32]" and method.input_size == 224
    with pytest.raises(UserError, match="weights do not fit the 'ViT-B-32' CLIP"):  # the file is really a tiny CLIP
        fit(method, tmp_path)
    with pytest.raises(UserError, match="RemoteCLIP-RN50.pt of chendelong/RemoteCLIP is not in the offline"):
        make(weights="hf-hub:chendelong/RemoteCLIP", arch="RN50").weight_source()


def test_surrogate_run_is_labelled_as_surrogate(tmp_path: Path):
    """Without weights the tiny run's synthetic foundation stands in, and every table says so."""
    from urbanln_bench.leaderboard import render_leaderboard
    from urbanln_bench.runner import RunOptions, run

    results = tmp_path / "results"
    outcomes = run(RunOptions(method="remoteclip", city="NY", scale="tiny", seeds=[0, 1], imagery=["SI"],
                              tasks=["Pop"], profile="smoke", results_dir=results), log=lambda m: None)
    (record,) = [o.record.to_json() for o in outcomes]
    assert record["method"]["variant"] == "RemoteCLIP (surrogate)"
    assert record["method"]["weight_source"].startswith("surrogate: synthetic-foundation CLIP 'smoke', not "
                                                        "RemoteCLIP's weights (synthetic foundation: ")
    assert record["embedding"]["dim"] == 64 and record["method"]["slug"] == "remoteclip-surrogate"
    stored = json.loads(next(results.rglob("Pop_SI_random.json")).read_text())
    assert stored["method"]["variant"] == "RemoteCLIP (surrogate)"
    board = render_leaderboard(results)
    rows = [line for line in board.splitlines() if line.startswith("| RemoteCLIP (surrogate) | SI |")]
    assert rows and all("| surrogate: synthetic-foundation CLIP 'smoke', not RemoteCLIP's weights |" in r for r in rows)
    assert not [line for line in board.splitlines() if line.startswith("| RemoteCLIP |")]
