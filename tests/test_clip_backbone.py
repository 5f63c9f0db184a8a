"""CLIP backbones: architectures from JSON, explicit weight sources, the synthetic foundation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from urbanln_bench.backbones import clip_weights, foundation
from urbanln_bench.backbones.clip import build_clip, count_parameters, encode_text_trimmed
from urbanln_bench.backbones.clip_weights import HubCandidate, load_clip, resolve_clip_weights
from urbanln_bench.backbones.foundation import FOUNDATION_LABEL, fit_to_context, foundation_clip
from urbanln_bench.errors import UserError


@pytest.fixture(scope="module")
def one_thread():
    """The CI machine's few cores are shared; one torch thread avoids oversubscription stalls."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_foundation(one_thread):
    path, label = foundation_clip("smoke")
    return path, label, json.loads(path.with_suffix(".json").read_text())


def _seeded_tiny_state(seed: int = 7) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model, _, _ = build_clip("smoke")
    return model.state_dict()


@pytest.mark.parametrize("profile, embed_dim, image_size", [("smoke", 64, 32), ("cpu", 128, 64)])
def test_small_profiles_build_and_encode(profile, embed_dim, image_size):
    model, tokenizer, preprocess = build_clip(profile)
    assert preprocess.image_size == image_size and preprocess.context_length == 77
    model.eval()
    with torch.no_grad():
        image = model.encode_image(torch.zeros(2, 3, image_size, image_size))
        text = model.encode_text(tokenizer(["a street view with trees", "a satellite image"]))
    assert image.shape == text.shape == (2, embed_dim)


@pytest.mark.slow
def test_paper_profile_is_open_clip_vit_b_16_without_downloading(monkeypatch):
    import open_clip

    def no_download(*args, **kwargs):
        raise AssertionError("a weight download was attempted")

    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", no_download)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", no_download)
    ours, _, preprocess = build_clip("paper")
    reference = open_clip.create_model("ViT-B-16", pretrained=None)
    assert preprocess.image_size == 224 and preprocess.context_length == 77
    assert count_parameters(ours) == count_parameters(reference)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}


def test_unknown_profile_suggests_a_known_one():
    with pytest.raises(UserError, match="smoke"):
        build_clip("tinny")


def test_trimmed_text_encoding_equals_full_context():
    model, tokenizer, _ = build_clip("smoke")
    model.eval()
    tokens = tokenizer(["a street view with two tall grey office buildings", "a satellite image"])
    used = int((tokens != 0).sum(1).max())
    with torch.no_grad():
        full = model.encode_text(tokens)
        trimmed = encode_text_trimmed(model, tokens[:, :used])
    torch.testing.assert_close(trimmed, full, atol=1e-5, rtol=1e-5)


def test_long_caption_is_cut_to_the_context():
    import open_clip

    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=77)
    caption = fit_to_context(" ".join(["tall grey office building"] * 60), tokenizer, 77)
    assert 0 < len(tokenizer.encode(caption)) + 2 <= 77


def test_tiny_foundation_learns_retrieval_from_the_pretraining_world_only(tiny_foundation):
    path, label, report = tiny_foundation
    assert path.exists() and label.startswith(FOUNDATION_LABEL)
    assert report["source"] == label
    assert all(entry["city"].startswith("PW-") for entry in report["world"])  # never a benchmark twin
    assert report["caption_tokens_max"] <= 77
    held_out = report["retrieval_holdout_image_to_text"]
    assert held_out["R@1"] >= 4 * held_out["chance_R@1"]
    assert held_out["R@5"] >= 3 * held_out["chance_R@5"]
    assert report["parameters"]["trainable"] == report["parameters"]["total"] > 0


def test_foundation_is_cached(tiny_foundation, monkeypatch):
    path, label, _ = tiny_foundation

    def no_training(*args, **kwargs):
        raise AssertionError("the cached foundation was trained again")

    monkeypatch.setattr(foundation, "train_foundation", no_training)
    assert foundation_clip("smoke") == (path, label)
    model, _, _, source = load_clip("smoke")
    assert source == label
    saved = torch.load(path, weights_only=True)["state_dict"]
    torch.testing.assert_close(model.state_dict()["text_projection"], saved["text_projection"])


def test_foundation_key_covers_the_recipe(monkeypatch):
    before = foundation.foundation_path("smoke")
    recipe = foundation.FOUNDATION_RECIPES["smoke"]
    monkeypatch.setitem(foundation.FOUNDATION_RECIPES, "smoke",
                        foundation.FoundationConfig(**{**recipe.__dict__, "epochs": recipe.epochs + 1}))
    assert foundation.foundation_path("smoke") != before
    monkeypatch.undo()
    monkeypatch.setattr(foundation, "_short_caption_function", lambda: (None, "another-captioner"))
    assert foundation.foundation_path("smoke") != before


def test_local_checkpoint_with_ddp_prefix_and_wrapper(tmp_path):
    state = _seeded_tiny_state()
    file = tmp_path / "my-clip.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, file)
    resolved = resolve_clip_weights("smoke", str(file))
    assert resolved.source.startswith("local checkpoint: my-clip.pt")
    model, _, _, source = load_clip("smoke", str(file))
    assert source == resolved.source
    for key, value in state.items():
        torch.testing.assert_close(model.state_dict()[key], value)


def test_bad_checkpoints_are_user_errors_naming_the_file(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(UserError, match="corrupt.pt"):
        resolve_clip_weights("smoke", str(corrupt))
    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(UserError, match="list.pt.*expected a state dict"):
        resolve_clip_weights("smoke", str(listed))
    with pytest.raises(UserError, match="not found"):
        resolve_clip_weights("smoke", str(tmp_path / "missing.pt"))


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated; its archives still exist
def test_torchscript_archive_is_explained(tmp_path):
    archive = tmp_path / "RN50.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(archive))
    with pytest.raises(UserError, match="RN50.pt.*TorchScript"):
        resolve_clip_weights("smoke", str(archive))


def test_a_resnet_checkpoint_is_described_by_its_stages_width_and_image_size():
    from open_clip.model import CLIP

    from urbanln_bench.backbones.clip_weights import describe_state_dict

    model = CLIP(embed_dim=32, vision_cfg={"image_size": 96, "layers": [2, 1, 3, 1], "width": 8},
                 text_cfg={"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1})
    assert describe_state_dict(model.state_dict()) == ("ModifiedResNet image 96, layers [2, 1, 3, 1], width 8, "
                                                       "embed_dim 32, context 77")


def test_checkpoint_of_another_architecture_says_what_it_is(tmp_path):
    torch.manual_seed(0)
    other, _, _ = build_clip("cpu")
    file = tmp_path / "cpu-clip.pt"
    torch.save(other.state_dict(), file)
    with pytest.raises(UserError, match="do not fit the 'smoke' CLIP.*patch 8, width 128"):
        load_clip("smoke", str(file))


def _fake_hub_cache(root: Path, repo_id: str, state: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / "open_clip_model.safetensors"))


def test_offline_hub_cache_is_used_when_present(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    state = _seeded_tiny_state()
    _fake_hub_cache(tmp_path, "acme/tiny-clip", state)
    explicit = resolve_clip_weights("smoke", "hf-hub:acme/tiny-clip")
    assert explicit.source.startswith("hf-hub cache: acme/tiny-clip@0123456789ab")
    monkeypatch.setattr(clip_weights, "hub_candidates", lambda profile: [HubCandidate("acme/tiny-clip")])
    model, _, _, source = load_clip("smoke")
    assert source == explicit.source
    torch.testing.assert_close(model.state_dict()["logit_scale"], state["logit_scale"])


def test_missing_hub_entry_falls_back_to_the_foundation_or_errors_when_asked_for(tiny_foundation, tmp_path,
                                                                                monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache
    monkeypatch.setattr(clip_weights, "hub_candidates", lambda profile: [HubCandidate("acme/tiny-clip")])
    resolved = resolve_clip_weights("smoke")
    assert resolved.source == tiny_foundation[1] and FOUNDATION_LABEL in resolved.source
    with pytest.raises(UserError, match="not in the offline Hugging Face cache"):
        resolve_clip_weights("smoke", "hf-hub:acme/tiny-clip")


def test_paper_profile_knows_openai_vit_b_16_on_the_hub():
    first = clip_weights.hub_candidates("paper")[0]
    assert first == HubCandidate("timm/vit_base_patch16_clip_224.openai", quick_gelu=True)
    assert clip_weights.hub_candidates("smoke") == []
