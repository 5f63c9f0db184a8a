"""The CLIP trainer's token-level loss plugins: FILIP (UrbanVLP's street-view loss) and CoCa (UrbanCLIP's
contrastive + captioning loss), on hand-made tensors and a toy overfit."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import toy_pairs

from urbanln_bench.clip_training.filip import filip_loss, filip_similarity, pad_token_sets


def _reference_similarity(image_tokens, text_tokens, image_mask=None, text_mask=None):
    """s[i, j] = mean over image i's tokens of (max over text j's tokens of the dot product), by loops."""
    n_i, k_tokens, _ = image_tokens.shape
    n_t, r_tokens, _ = text_tokens.shape
    out = torch.zeros(n_i, n_t, dtype=torch.float64)
    for i in range(n_i):
        for j in range(n_t):
            maxima = []
            for k in range(k_tokens):
                if image_mask is not None and not image_mask[i, k]:
                    continue
                dots = [float(image_tokens[i, k] @ text_tokens[j, r]) for r in range(r_tokens)
                        if text_mask is None or text_mask[j, r]]
                maxima.append(max(dots))
            out[i, j] = sum(maxima) / len(maxima)
    return out


def _reference_loss(similarity, scale=1.0):
    """Symmetric cross-entropy by hand: rows image→text, columns text→image, diagonal = match."""
    s = (similarity * scale).tolist()
    n = len(s)
    i2t = -sum(s[i][i] - math.log(sum(math.exp(s[i][j]) for j in range(n))) for i in range(n)) / n
    t2i = -sum(s[j][j] - math.log(sum(math.exp(s[i][j]) for i in range(n))) for j in range(n)) / n
    return (i2t + t2i) / 2


def _tokens(seed: int):
    generator = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(4, 5, 8, generator=generator, dtype=torch.float64), dim=-1)
    text = F.normalize(torch.randn(4, 6, 8, generator=generator, dtype=torch.float64), dim=-1)
    return image, text


def test_filip_equals_a_reference_loop_without_masks():
    image, text = _tokens(0)
    similarity = filip_similarity(image, text)
    assert torch.allclose(similarity, _reference_similarity(image, text))
    assert float(filip_loss(image, text)) == pytest.approx(_reference_loss(similarity))
    # FILIP's learnable temperature is an option, not the default (UrbanVLP's code has none)
    assert float(filip_loss(image, text, logit_scale=10.0)) == pytest.approx(_reference_loss(similarity, 10.0))


def test_filip_masks_drop_padding_and_image_slots():
    image, text = _tokens(1)
    image_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 0, 0]], dtype=torch.bool)
    text_mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0]],
                             dtype=torch.bool)
    similarity = filip_similarity(image, text, image_mask, text_mask)
    assert torch.allclose(similarity, _reference_similarity(image, text, image_mask, text_mask))
    assert not torch.allclose(similarity, filip_similarity(image, text))  # the masks matter
    # masked tokens cannot influence the result, whatever they hold
    noisy_image = image.clone()
    noisy_image[~image_mask] = 5.0
    noisy_text = text.clone()
    noisy_text[~text_mask] = 5.0
    assert torch.allclose(filip_similarity(noisy_image, noisy_text, image_mask, text_mask), similarity)


def test_filip_is_max_over_text_then_mean_over_image_not_the_mirror():
    image, text = _tokens(2)
    mirrored = _reference_similarity(text, image).T  # FILIP's text-side similarity
    assert not torch.allclose(filip_similarity(image, text), mirrored)


def test_filip_chunking_does_not_change_the_result(monkeypatch):
    import urbanln_bench.clip_training.filip as filip

    image, text = _tokens(3)
    whole = filip_similarity(image, text)
    monkeypatch.setattr(filip, "CHUNK_ELEMENTS", 1)  # one image per chunk
    assert torch.allclose(filip.filip_similarity(image, text), whole)


def test_pad_token_sets_masks_what_it_pads():
    sets = [torch.ones(3, 4), torch.ones(1, 4) * 2]
    padded, mask = pad_token_sets(sets)
    assert padded.shape == (2, 3, 4) and mask.tolist() == [[True, True, True], [True, False, False]]
    assert torch.equal(padded[1, 0], sets[1][0]) and float(padded[1, 1:].abs().sum()) == 0


def test_token_helpers_agree_with_open_clip_pooling():
    from urbanln_bench.backbones.clip import build_clip, encode_text_trimmed
    from urbanln_bench.clip_training.tokens import image_token_features, image_tokens, text_states

    torch.manual_seed(0)
    model, tokenizer, _ = build_clip("smoke")
    model.eval()
    pixels = torch.randn(3, 3, 32, 32)
    tokens = tokenizer(["a red roof", "two green parks and a river", "a road"])[:, :12]
    with torch.no_grad():
        pooled, patches = image_tokens(model, pixels)
        assert torch.allclose(pooled, model.encode_image(pixels), atol=1e-6)
        assert patches.shape == (3, (32 // 8) ** 2, 64) and model.visual.output_tokens is False
        _, all_tokens = image_token_features(model, pixels)
        assert all_tokens.shape == (3, 1 + 16, 64)
        assert torch.allclose(all_tokens[:, 0], F.normalize(pooled, dim=-1), atol=1e-6)  # [pooled; patches]
        text_pooled, states = text_states(model, tokens)
        assert torch.allclose(text_pooled, encode_text_trimmed(model, tokens), atol=1e-6)
        assert states.shape == (3, 12, 64)


def test_a_resnet_tower_gives_its_attention_pool_positions_as_tokens():
    """ModifiedResNet (CLIP's RN50 family): position 0 of the pool is encode_image; the other h·w are the
    grid's tokens, already projected (width = embed dim), and feed CoCa and FILIP like ViT patch tokens."""
    from open_clip.model import CLIP

    from urbanln_bench.clip_training.tokens import image_token_features, image_tokens, image_width

    torch.manual_seed(0)
    model = CLIP(embed_dim=32, vision_cfg={"image_size": 64, "layers": [1, 1, 1, 1], "width": 8},
                 text_cfg={"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1})
    model.eval()
    pixels = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        pooled, grid = image_tokens(model, pixels)
        assert torch.allclose(pooled, model.encode_image(pixels), atol=1e-5)
        assert grid.shape == (3, (64 // 32) ** 2, 32) and image_width(model) == 32
        _, all_tokens = image_token_features(model, pixels)
        assert torch.allclose(all_tokens, F.normalize(torch.cat([pooled[:, None], grid], 1), dim=-1), atol=1e-6)
        assert not torch.allclose(grid[:, 0], grid[:, 1])  # each cell attends from its own position


def test_a_tower_without_tokens_is_refused_by_name():
    from types import SimpleNamespace

    from urbanln_bench.clip_training.tokens import image_tokens
    from urbanln_bench.errors import UserError

    with pytest.raises(UserError, match="ViT or a ModifiedResNet.*Linear"):
        image_tokens(SimpleNamespace(visual=torch.nn.Linear(2, 2)), torch.zeros(1, 2))


def test_filip_plugin_sees_the_full_context_whatever_the_trim():
    from urbanln_bench.backbones.clip import build_clip, encode_text_trimmed
    from urbanln_bench.clip_training.trainer import build_clip_loss, trim_tokens

    torch.manual_seed(0)
    model, tokenizer, _ = build_clip("smoke")
    model.eval()
    pixels = torch.randn(4, 3, 32, 32)
    full = tokenizer(["a red roof", "green parks", "a long road with cars", "water"])
    plugin = build_clip_loss("filip")
    with torch.no_grad():
        trimmed_loss = plugin.loss(model, pixels, trim_tokens(full), encode_text_trimmed)["total"]
        full_loss = plugin.loss(model, pixels, full, encode_text_trimmed)["total"]
        masked = build_clip_loss("filip", mask_padding=True).loss(model, pixels, full, encode_text_trimmed)["total"]
    assert torch.allclose(trimmed_loss, full_loss, atol=1e-5)  # padding positions count, as UrbanVLP's code
    assert not torch.allclose(masked, full_loss, atol=1e-5)


# -- CoCa ----------------------------------------------------------------------------------------------


def test_caption_loss_ignores_padding_like_open_clip_coca_loss():
    from open_clip.loss import CoCaLoss as OpenClipCoCaLoss

    from urbanln_bench.clip_training.coca import caption_cross_entropy

    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 5, 8, generator=generator)
    projection = torch.randn(8, 30, generator=generator)
    labels = torch.tensor([[7, 3, 29, 0, 0], [4, 4, 9, 12, 29]])  # 0 = padding
    ours = caption_cross_entropy(hidden, labels, projection)
    reference = OpenClipCoCaLoss(caption_loss_weight=1.0, clip_loss_weight=0.0)(
        None, None, hidden @ projection, labels, None, output_dict=True)["caption_loss"]
    assert float(ours) == pytest.approx(float(reference), rel=1e-5)
    changed = hidden.clone()
    changed[0, 3:] = 100.0  # states at padded positions predict nothing
    assert float(caption_cross_entropy(changed, labels, projection)) == pytest.approx(float(ours), rel=1e-6)
    # a restricted vocabulary is the same softmax over the kept rows
    vocabulary = sorted(set(labels[labels != 0].tolist()))
    lookup = torch.full((30,), -1, dtype=torch.long)
    lookup[vocabulary] = torch.arange(len(vocabulary))
    restricted = caption_cross_entropy(hidden, labels, projection[:, vocabulary], lookup)
    logits = (hidden @ projection)[..., vocabulary]
    mapped = torch.where(labels == 0, torch.tensor(-100), lookup[labels])
    expected = F.cross_entropy(logits.reshape(-1, len(vocabulary)), mapped.reshape(-1), ignore_index=-100)
    assert float(restricted) == pytest.approx(float(expected), rel=1e-5)


def _toy_pairs(n: int = 16):
    return toy_pairs(n, lambda name, i: f"a {name} tile with {name} roofs")


def test_coca_overfits_a_toy_set_and_trains_its_decoder():
    from urbanln_bench.backbones.clip import build_clip
    from urbanln_bench.clip_training.trainer import ClipTrainConfig, build_clip_loss, train_clip

    images, captions = _toy_pairs()
    torch.manual_seed(0)
    model, tokenizer, preprocess = build_clip("smoke")
    vocabulary = sorted(set(tokenizer(captions).flatten().tolist()))
    loss = build_clip_loss("coca", vocabulary=vocabulary)
    report = train_clip(model, images, captions, tokenizer, preprocess,
                        ClipTrainConfig(steps=12, batch_size=8, lr=3e-3), loss)
    first, last = report["loss_first_last"]["caption"]
    assert last < 0.5 * first  # teacher-forced captions of four colours are easy to memorise
    assert report["loss"]["vocabulary"] == len(vocabulary) - 1  # padding is not a class
    decoder_size = sum(p.numel() for p in loss.decoder.parameters())
    assert report["loss_parameters"] == decoder_size > 0


def test_coca_gradients_reach_the_decoder_and_through_it_the_image_tower():
    from urbanln_bench.backbones.clip import build_clip, encode_text_trimmed
    from urbanln_bench.clip_training.trainer import build_clip_loss, trim_tokens
    from urbanln_bench.training_loop import parameter_groups, pixel_batch

    images, captions = _toy_pairs(4)
    torch.manual_seed(0)
    model, tokenizer, preprocess = build_clip("smoke")
    loss = build_clip_loss("coca", contrastive_weight=0.0)  # the caption term alone, full vocabulary
    extra = loss.setup(model, 64)
    parts = loss.loss(model, pixel_batch(images, preprocess), trim_tokens(tokenizer(captions)), encode_text_trimmed)
    assert float(parts["contrastive"]) > 0 and parts["total"] == parts["caption"]
    parts["total"].backward()
    for name, param in extra:
        assert param.grad is not None and float(param.grad.abs().sum()) > 0, name
    assert float(model.visual.conv1.weight.grad.abs().sum()) > 0  # cross-attention carries it to the image tower
    assert loss.decoder.transformer.text_projection.shape == (64, 49408)
    # decoder matrices are decayed, its norms and biases are not (the names travel with the parameters)
    groups = parameter_groups([(f"loss.{n}", p) for n, p in extra], 0.1)
    decayed = {id(p) for p in groups[1]["params"]}
    named = dict(extra)
    assert id(named["decoder.transformer.text_projection"]) in decayed
    assert id(named["decoder.transformer.ln_final.weight"]) not in decayed


def test_coca_settings_are_checked():
    from urbanln_bench.clip_training.trainer import build_clip_loss
    from urbanln_bench.errors import UserError

    with pytest.raises(UserError, match="weights"):
        build_clip_loss("coca", caption_weight=0.0, contrastive_weight=0.0)
    with pytest.raises(UserError, match="decoder_layers"):
        build_clip_loss("coca", decoder_layers=-1)
