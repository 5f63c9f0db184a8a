"""Real checkpoint formats, loaded through the real code path from randomly initialised models saved as the real files are.

ViT-B/16 (the ``paper`` profile), RN50, ViT-B-32 and ViT-L-14 are 100–430 M parameters: too slow to build
on a 2-core test machine. Each is checked twice instead: its real key names and shapes on the ``meta``
device (no memory, no initialisation), and a shrunken-width config of the same architecture family
(same open_clip class, same layer count, hence the very same key names; only the widths differ) that is
saved in the real file's format and loaded through the same loader, whose logic never looks at widths.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from urbanln_bench.backbones.clip import build_clip
from urbanln_bench.backbones.clip_weights import load_clip, load_clip_state, read_clip_checkpoint
from urbanln_bench.errors import UserError


def _meta_state(arch: str) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        model, _, _ = build_clip(arch)
    return model.state_dict()


def shrunk(tmp_path: Path, arch: str) -> str:
    """An open_clip config of ``arch``'s family with tiny widths, registered under ``<arch>-shrunk``."""
    import open_clip

    config = copy.deepcopy(open_clip.get_model_config(arch))
    config["embed_dim"] = 32
    vision = config["vision_cfg"]
    vision.update(width=8 if isinstance(vision["layers"], list) else 64, image_size=64)
    config["text_cfg"].update(width=64, heads=1)
    folder = tmp_path / "configs"
    folder.mkdir(exist_ok=True)
    name = f"{arch}-shrunk"
    (folder / f"{name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)
    return name


def _seeded(arch: str, seed: int = 0):
    torch.manual_seed(seed)
    model, _, _ = build_clip(arch)
    return model.eval()


# -- OpenAI CLIP ViT-B/16 as an open_clip state dict (the paper profile) ---------------------------------


def test_openai_vit_b_16_state_dict_loads_as_the_paper_profile(tmp_path: Path):
    real = _meta_state("paper")
    assert (tuple(real["visual.conv1.weight"].shape), tuple(real["visual.positional_embedding"].shape),
            tuple(real["positional_embedding"].shape), tuple(real["text_projection"].shape)) == (
        (768, 3, 16, 16), (197, 768), (77, 512), (512, 512))
    name = shrunk(tmp_path, "ViT-B-16")
    reference = _seeded(name)
    assert list(reference.state_dict()) == list(real)  # the same key names, in the same order
    # OpenAI's weights: float16, with the scalars its state dicts carry, in a copied hub snapshot whose
    # open_clip_config.json says QuickGELU (OpenAI trained with it)
    snapshot = tmp_path / "vit_base_patch16_clip_224.openai"
    snapshot.mkdir()
    state = {k: v.half() for k, v in reference.state_dict().items()}
    state.update(input_resolution=torch.tensor(224), context_length=torch.tensor(77), vocab_size=torch.tensor(49408))
    torch.save(state, snapshot / "open_clip_pytorch_model.bin")
    (snapshot / "open_clip_config.json").write_text(json.dumps({"model_cfg": {"quick_gelu": True}}))
    model, tokenizer, preprocess, source = load_clip(name, str(snapshot))
    assert source.startswith("local checkpoint: open_clip_pytorch_model.bin (sha256 ")
    assert type(model.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    assert model.positional_embedding.dtype == torch.float32 and preprocess.context_length == 77
    for key, value in state.items():
        if key not in ("input_resolution", "context_length", "vocab_size"):
            torch.testing.assert_close(model.state_dict()[key], value.float())


def test_a_wrong_checkpoint_for_the_paper_profile_names_the_mismatching_keys():
    """RemoteCLIP-ViT-B-32's keys into the paper's ViT-B/16 (both at full size, on the meta device)."""
    with torch.device("meta"):
        paper, _, _ = build_clip("paper")
    with pytest.raises(UserError) as info:
        load_clip_state(paper, _meta_state("ViT-B-32"), "RemoteCLIP-ViT-B-32.pt", "paper")
    message = str(info.value)
    assert "RemoteCLIP-ViT-B-32.pt: weights do not fit the 'paper' CLIP (ViT image 224, patch 16" in message
    assert ("Mismatching keys: shape differs (2): visual.positional_embedding (file (50, 768), model (197, 768)); "
            "visual.conv1.weight (file (768, 3, 32, 32), model (768, 3, 16, 16))") in message
    with pytest.raises(UserError, match=r"missing from the file \(1\): logit_scale; not in the model \(1\): extra"):
        state = dict(_meta_state("paper"))
        state["extra"] = state.pop("logit_scale")
        load_clip_state(paper, state, "x.pt", "paper")


# -- RemoteCLIP's .pt (OpenCLIP format: a plain state dict, float32) ------------------------------------------


@pytest.mark.parametrize("arch, embed_dim, conv", [("RN50", 1024, (64 // 2, 3, 3, 3)), ("ViT-B-32", 512, (768, 3, 32, 32)),
                                                   ("ViT-L-14", 768, (1024, 3, 14, 14))])
def test_remoteclip_checkpoints_load_through_the_method(tmp_path: Path, arch: str, embed_dim: int, conv):
    from urbanln_bench.method import FitContext, get_method

    real = _meta_state(arch)
    assert real["text_projection"].shape[-1] == embed_dim and tuple(real["visual.conv1.weight"].shape) == conv
    name = shrunk(tmp_path, arch)
    reference = _seeded(name, seed=3)
    assert list(reference.state_dict()) == list(real)
    path = tmp_path / f"RemoteCLIP-{arch}.pt"
    torch.save(reference.state_dict(), path)  # RemoteCLIP: torch.save(model.state_dict()), loaded with strict keys
    method = get_method("remoteclip")({"weights": str(path), "arch": name})
    method.run_profile = "smoke"
    assert method.weight_source().startswith(f"local checkpoint: RemoteCLIP-{arch}.pt (sha256 ")
    method.fit(None, "SI", FitContext(seed=0, device="cpu", work_dir=tmp_path / "w", scale="tiny", profile="smoke"))
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(reference.encode_image(pixels), dim=-1)
        torch.testing.assert_close(method.encode_images(pixels), expected)


def test_remoteclip_checkpoint_for_another_architecture_names_keys(tmp_path: Path):
    from urbanln_bench.method import FitContext, get_method

    name_b32, name_rn50 = shrunk(tmp_path, "ViT-B-32"), shrunk(tmp_path, "RN50")
    path = tmp_path / "RemoteCLIP-RN50.pt"
    torch.save(_seeded(name_rn50).state_dict(), path)
    method = get_method("remoteclip")({"weights": str(path), "arch": name_b32})
    with pytest.raises(UserError) as info:
        method.fit(None, "SI", FitContext(seed=0, device="cpu", work_dir=tmp_path / "w", scale="tiny", profile="smoke"))
    message = str(info.value)
    assert f"weights do not fit the '{name_b32}' CLIP" in message and "the file holds ModifiedResNet image " in message and "layers [" in message
    assert "missing from the file (151): visual.class_embedding" in message
    assert "not in the model (338): visual.bn1.weight" in message
    assert "RemoteCLIP-RN50.pt (--set arch=RN50)" in message


# -- Long-CLIP-style 248-position checkpoint ------------------------------------------------------------------


def test_longclip_checkpoint_with_248_positions(tmp_path: Path):
    """Long-CLIP's checkpoints: OpenAI key names plus positional_embedding_res, both tables 248 × width."""
    from urbanln_bench.clip_training.ipsi import apply_ipsi, stretch_positional_embedding

    name = shrunk(tmp_path, "ViT-B-16")
    reference = _seeded(name, seed=5)
    state = reference.state_dict()
    frozen = stretch_positional_embedding(state["positional_embedding"])  # load_from_clip: 77 → 248
    state["positional_embedding"] = frozen
    state["positional_embedding_res"] = frozen + 0.01 * torch.randn_like(frozen)  # fine-tuned rows ≥ 20
    path = tmp_path / "longclip-B.pt"
    torch.save(state, path)
    model, tokenizer, preprocess, _ = load_clip(name, str(path))
    assert model.context_length == preprocess.context_length == 248 and tokenizer(["a street"]).shape == (1, 248)
    torch.testing.assert_close(model.positional_embedding[:20], frozen[:20])
    torch.testing.assert_close(model.positional_embedding[20:], state["positional_embedding_res"][20:])
    tokens = tokenizer(["a long street " * 70])  # past 77 tokens
    with torch.no_grad():
        assert model.encode_text(tokens).shape == (1, 32)
    assert apply_ipsi(model) == 248 and model.positional_embedding.shape == (248, 64)  # not stretched again
    assert read_clip_checkpoint(path)["positional_embedding"].shape == (248, 64)
    del state["positional_embedding_res"]
    state["positional_embedding_res"] = torch.zeros(77, 64)
    torch.save(state, path)
    with pytest.raises(UserError, match=r"positional_embedding_res \(77, 64\) \(a Long-CLIP checkpoint\) needs a "
                                        r"positional_embedding of the same shape, got \(248, 64\)"):
        read_clip_checkpoint(path)


# -- torchvision's ResNet-18 .pth ------------------------------------------------------------------------------


def test_torchvision_resnet18_pth_from_the_torch_hub_cache(tmp_path: Path, monkeypatch):
    import torchvision

    from urbanln_bench.method import get_method

    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None).eval()  # 1000-class fc, as the ImageNet file
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(reference.state_dict(), checkpoints / "resnet18-f37072fd.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    method = get_method("resnet18")()
    assert method.weight_source().startswith("file: resnet18-f37072fd.pth (sha256 ")
    method.fit(None, "SI", context=None)
    pixels = torch.randn(2, 3, 64, 64)
    reference.fc = torch.nn.Identity()
    with torch.no_grad():
        torch.testing.assert_close(method.encode_images(pixels), reference(pixels))
    # the older file (resnet18-5c106cde.pth) has no num_batches_tracked; a DDP checkpoint wraps and prefixes
    old = {k: v for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
    wrapped = tmp_path / "ddp.pth"
    torch.save({"epoch": 9, "state_dict": {f"module.{k}": v for k, v in old.items()}}, wrapped)
    method = get_method("resnet18")({"weights": str(wrapped)})
    method.fit(None, "SI", context=None)
    with torch.no_grad():
        torch.testing.assert_close(method.encode_images(pixels), reference(pixels))


def test_resnet_of_another_depth_names_the_mismatching_keys(tmp_path: Path):
    import torchvision

    from urbanln_bench.method import get_method

    path = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(UserError, match=r"resnet34.pth: does not fit torchvision's ResNet-18; mismatching keys: .*"
                                        r"unexpected \['layer1.2.conv1.weight'"):
        get_method("resnet18")({"weights": str(path)}).fit(None, "SI", context=None)
    path = tmp_path / "resnet50.pth"
    torch.save({k: v for k, v in torchvision.models.resnet50(weights=None).state_dict().items()
                if k.startswith(("conv1", "layer1.0.conv1"))}, path)
    with pytest.raises(UserError, match=r"shape differs \['layer1.0.conv1.weight \(file \(64, 64, 1, 1\), model "
                                        r"\(64, 64, 3, 3\)\)'\]"):
        get_method("resnet18")({"weights": str(path)}).fit(None, "SI", context=None)


# -- pickles that need more than tensors -------------------------------------------------------------------


def test_full_pickles_are_refused_with_the_reason(tmp_path: Path):
    from urbanln_bench.method import get_method

    path = tmp_path / "whole-model.pt"
    torch.save(torch.nn.Linear(2, 2), path)  # a pickled module: loading it would run the pickle's code
    message = r"whole-model.pt: refused: the file is a pickle that needs more than tensors.*weights_only=True"
    with pytest.raises(UserError, match=message):
        read_clip_checkpoint(path)
    with pytest.raises(UserError, match=message):
        get_method("resnet18")({"weights": str(path)}).fit(None, "SI", context=None)
