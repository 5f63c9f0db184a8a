"""UrbanLN: IPSI reads past token 77, the shared CLIP trainer, the method end to end on a tiny twin,
its variants, transfer records and the profile command."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import toy_pairs

from urbanln_bench.runner import RunOptions, run

ONE_CAPTIONER = {"captioners": "synthetic:qwen2.5-vl-7b", "candidates_per_captioner": "2"}


def _long_caption(tail: str) -> str:
    head = " ".join(f"word{i}" for i in range(40))  # 110 BPE tokens: past 77, inside 248
    return f"{head} {tail}"


def test_ipsi_reads_text_beyond_token_77_and_plain_clip_does_not():
    from urbanln_bench.backbones.clip import build_clip, encode_text_trimmed
    from urbanln_bench.clip_training.ipsi import apply_ipsi

    torch.manual_seed(0)
    model, tokenizer, _ = build_clip("smoke")
    model.eval()
    a, b = _long_caption("a red bridge over the river"), _long_caption("a green park with many trees")
    assert 100 < len(tokenizer.encode(a)) < 240
    with torch.no_grad():
        plain = encode_text_trimmed(model, tokenizer([a, b], context_length=77))
        assert torch.allclose(plain[0], plain[1])  # both truncated to the same first 77 tokens
        length = apply_ipsi(model)
        assert length == 248
        stretched = encode_text_trimmed(model, tokenizer([a, b], context_length=length))
    assert not torch.allclose(stretched[0], stretched[1], atol=1e-5)


def _toy_pairs(n: int = 24):
    filler = " ".join(["beside the wide road and the small houses"] * 3)  # past IPSI's 20 kept positions
    return toy_pairs(n, lambda name, i: f"a {name} tile with {name} roofs and {name} streets number {i} {filler}")


@pytest.mark.parametrize("loss_name", ["infonce", "msd"])
def test_clip_trainer_is_deterministic_and_keeps_ipsi_rows_frozen(loss_name):
    from urbanln_bench.backbones.clip import build_clip
    from urbanln_bench.clip_training.ipsi import apply_ipsi
    from urbanln_bench.clip_training.trainer import ClipTrainConfig, build_clip_loss, train_clip

    images, captions = _toy_pairs()
    states, reports = [], []
    for _ in range(2):
        torch.manual_seed(0)
        model, tokenizer, preprocess = build_clip("smoke")
        length = apply_ipsi(model)
        kept = model.positional_embedding.detach()[:20].clone()
        moving = model.positional_embedding.detach()[20:].clone()
        options = {"queue_size": 16} if loss_name == "msd" else {}
        report = train_clip(model, images, captions, functools.partial(tokenizer, context_length=length), preprocess,
                            ClipTrainConfig(steps=4, batch_size=8, lr=1e-3), build_clip_loss(loss_name, **options))
        assert torch.equal(model.positional_embedding.detach()[:20], kept)  # Long-CLIP: first 20 rows frozen
        assert not torch.equal(model.positional_embedding.detach()[20:], moving)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        reports.append(report)
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert reports[0]["steps"] == 4 and reports[0]["context_length"] <= 248
    assert reports[0]["parameters"]["trainable"] == reports[0]["parameters"]["total"]
    if loss_name == "msd":
        assert set(reports[0]["loss_first_last"]) >= {"contrastive", "distillation", "temperature"}


def test_trainer_trains_only_the_chosen_tower():
    from urbanln_bench.backbones.clip import build_clip
    from urbanln_bench.clip_training.trainer import ClipTrainConfig, build_clip_loss, train_clip

    images, captions = _toy_pairs(16)
    torch.manual_seed(0)
    model, tokenizer, preprocess = build_clip("smoke")
    text_before = model.token_embedding.weight.detach().clone()
    image_before = model.visual.conv1.weight.detach().clone()
    report = train_clip(model, images, captions, tokenizer, preprocess,
                        ClipTrainConfig(steps=2, batch_size=8, lr=1e-3, train="image"), build_clip_loss("infonce"))
    assert torch.equal(model.token_embedding.weight, text_before)
    assert not torch.equal(model.visual.conv1.weight, image_before)
    assert report["parameters"]["trainable"] < report["parameters"]["total"]


def test_msd_loss_settings_are_checked():
    from urbanln_bench.clip_training.trainer import build_clip_loss
    from urbanln_bench.errors import UserError

    with pytest.raises(UserError, match="mu"):
        build_clip_loss("msd", mu=1.5)


@pytest.mark.slow
def test_variants_differ_only_where_their_ablation_says():
    from urbanln_bench.method import get_method

    base = get_method("urbanln")()
    variants = {name: get_method(name)() for name in
                ("urbanln-no-refinement", "urbanln-no-consensus", "urbanln-no-ipsi", "urbanln-no-msd")}
    expected = {"urbanln-no-refinement": {"refinement": False}, "urbanln-no-consensus": {"consensus": False},
                "urbanln-no-ipsi": {"ipsi": False}, "urbanln-no-msd": {"msd": False}}
    for name, method in variants.items():
        changed = {k: v for k, v in method.config.items() if base.config[k] != v}
        assert changed == expected[name], name
        assert method.meta.ours and method.meta.native_imagery == ("SV", "SI")
    assert variants["urbanln-no-refinement"].caption_settings("SI") == {"SI": {"refinement": False, "consensus": True}}
    with_mu = get_method("urbanln")({"mu": "0.3"})
    assert with_mu.variant_slug() == "urbanln__mu=0.3" and with_mu.variant_label() == "UrbanLN [mu=0.3]"
    assert with_mu.identity() != base.identity()


@pytest.fixture(scope="module")
def urbanln_store(tmp_path_factory) -> tuple[Path, list]:
    store = tmp_path_factory.mktemp("urbanln-results")
    outcomes = run(RunOptions(method="urbanln", city="NY", scale="tiny", imagery=["SI"], seeds=[0, 1], profile="smoke",
                              results_dir=store, settings=dict(ONE_CAPTIONER)), log=lambda m: None)
    return store, outcomes


def test_urbanln_end_to_end_on_a_tiny_twin(urbanln_store):
    store, outcomes = urbanln_store
    assert [o.cell for o in outcomes] == ["NY/Pop/SI", "NY/Crime/SI", "NY/POI/SI"]
    record = outcomes[0].record.to_json()
    assert record["method"]["name"] == "urbanln" and record["method"]["ours"]
    assert record["method"]["weight_source"].startswith("synthetic foundation: CLIP 'smoke'")
    pretraining = record["pretraining"]
    assert pretraining["city"] == "NY" and pretraining["steps"] >= 1
    assert pretraining["ipsi"]["context_length"] == 248 and pretraining["ipsi"]["frozen_rows"] == 20
    assert pretraining["loss"]["name"] == "msd" and pretraining["loss"]["mu"] == 0.5
    assert pretraining["captions"]["SI"]["images"] == 100  # every satellite tile of the tiny twin, captioned
    assert pretraining["captions_filling_context"] < pretraining["pairs"]  # most long captions fit in 248
    assert np.isfinite(record["metrics"]["r2"]["mean"])
    # a re-run reuses every record, without fitting or captioning again
    again = run(RunOptions(method="urbanln", city="NY", scale="tiny", imagery=["SI"], seeds=[0, 1], profile="smoke",
                           results_dir=store, settings=dict(ONE_CAPTIONER)), log=lambda m: None)
    assert all(o.reused for o in again)


def test_an_override_is_a_distinct_record(urbanln_store):
    store, outcomes = urbanln_store
    other = run(RunOptions(method="urbanln", city="NY", scale="tiny", imagery=["SI"], tasks=["Pop"], seeds=[0, 1],
                           profile="smoke", results_dir=store, settings={**ONE_CAPTIONER, "mu": "0.3"}),
                log=lambda m: None)
    record = other[0].record.to_json()
    assert record["key"] != outcomes[0].record.key
    assert "mu=0.3" in record["method"]["variant"] and "mu=0.3" in record["method"]["slug"]
    assert record["pretraining"]["loss"]["mu"] == 0.3
    # the same captions are reused: only the objective changed
    assert record["pretraining"]["captions"] == outcomes[0].record.pretraining["captions"]


@pytest.mark.slow
def test_transfer_records_name_both_cities_and_fill_the_transfer_section(tmp_path: Path):
    from urbanln_bench.leaderboard import render_leaderboard

    options = {"method": "resnet18", "city": "NY", "scale": "tiny", "imagery": ["SI"], "tasks": ["Pop"],
               "seeds": [0], "profile": "smoke", "results_dir": tmp_path}
    own = run(RunOptions(**options), log=lambda m: None)
    moved = run(RunOptions(**options, pretrain_city="SZ"), log=lambda m: None)
    record = moved[0].record.to_json()
    assert record["fit_city"] == "SZ" and record["cell"]["city"] == "NY"
    assert record["method"]["slug"] == "resnet18__from-SZ" and record["key"] != own[0].record.key
    assert record["pretraining"]["city"] == "SZ"
    text = render_leaderboard(tmp_path)
    section = text[text.index("## Transfer"):]
    assert "| SZ |" in section and "| NY |" in section and "ResNet-18, SI" in section
    main = text[:text.index("## Transfer")]
    assert main.count("ResNet-18 ") + main.count("ResNet-18 |") >= 1 and "from-SZ" not in main


def test_transfer_needs_the_imagery_and_a_trainable_method(tmp_path: Path):
    from urbanln_bench.errors import UserError

    with pytest.raises(UserError, match="oracle"):
        run(RunOptions(method="oracle-latents", city="NY", scale="tiny", seeds=[0], results_dir=tmp_path,
                       pretrain_city="SZ"), log=lambda m: None)


def test_profile_reports_parameters_and_speed(tmp_path: Path):
    from typer.testing import CliRunner

    from urbanln_bench.cli import app

    result = CliRunner().invoke(app, ["profile", "--methods", "urbanln,urbanln-no-ipsi,resnet18,remoteclip,color-histogram",
                                      "--profile", "smoke", "--batch-size", "4", "--batches", "1", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["method"]: r for r in json.loads(result.stdout)}
    width = 64  # tiny text width
    assert rows["urbanln"]["total"] - rows["urbanln"]["trainable"] == 20 * width  # IPSI's frozen rows
    assert rows["urbanln"]["total"] - rows["urbanln-no-ipsi"]["total"] == (248 - 77) * width
    assert rows["resnet18"]["trainable"] == 0 and rows["resnet18"]["total"] > 11_000_000
    # the RemoteCLIP surrogate is the profile's CLIP, frozen: UrbanLN without IPSI's stretch, none of it trained
    assert rows["remoteclip"]["trainable"] == 0 and rows["remoteclip"]["total"] == rows["urbanln-no-ipsi"]["total"]
    assert rows["color-histogram"]["images_per_second"] is None
    assert all(r["images_per_second"] > 0 for r in rows.values() if r["total"])
