"""Seconds per optimisation step of each pretraining objective at the ``cpu`` profile's shapes.

One step = forward + loss + backward + optimiser step (+ what the trainer does right after the step: the
EMA teacher update, the ``logit_scale`` clamp), on one batch that is already in memory. Not timed:
sampling pairs, loading / resizing images, augmentation and tokenisation (data-side work that differs
by city and cache state). Models are built from random initialisation with the methods' own builders
(``PairEncoder``, ``build_clip`` of the ``cpu`` CLIP profile): timing does not depend on the weights, so
no synthetic foundation is trained or loaded. Inputs are random tensors (normalised pixels) and random
token ids shaped like NY ``small``'s captions (lengths measured on its caption files, see the constants).

Settings (batch, lr, margins, loss weights, queue size, ...) are read from the methods' resolved ``cpu``
configs and recipes, so the benchmark follows them when they change. The step bodies mirror
``pair_training.trainer.train_pairs`` / ``clip_training.trainer.train_clip`` / ``urbanvlp.pretrain_towers``
line for line (those loops have no step function to call).

    OMP_NUM_THREADS=1 python -m pytest benchmarks/test_bench_training.py --benchmark-enable

Without ``--benchmark-enable`` (the project's default ``--benchmark-disable``) every benchmark runs its
step once, untimed, as a smoke test.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from urbanln_bench.method import get_method

WARMUP_STEPS = 2
ROUNDS = 3
CLIP_PROFILE = "cpu"
NY_SMALL_REGIONS = 517  # region ids for NT-Xent's same-region mask are drawn from this many
# Token lengths (with start/end tokens) of NY small's captions, tokenised as the methods do:
# UrbanCLIP's one sentence of a llama-adapter-v2 caption: mean 16, batch-of-64 maximum ~35 (the trainer
# trims to the batch's longest); UrbanVLP's ShareGPT4V sentence: mean 20, batch-of-32 maximum ~35;
# UrbanLN's refined long captions under IPSI's 248 positions: mean 222, 27 % fill all 248.
URBANCLIP_SENTENCE = (8, 24, 36)  # (shortest, longest typical, batch maximum)
URBANVLP_SENTENCE = (10, 30, 35)
URBANLN_CAPTION = (196, 248, 248)
URBANVLP_VIEWS_PER_REGION = 3  # NY small: 1,405 street views over 517 regions (2.7 per region)


def _measure(benchmark, step, **info) -> None:
    """``WARMUP_STEPS`` untimed steps, then ``ROUNDS`` timed steps of one iteration each."""
    benchmark.extra_info.update(info)
    benchmark.extra_info["torch_threads"] = torch.get_num_threads()
    benchmark.pedantic(step, rounds=ROUNDS, iterations=1, warmup_rounds=WARMUP_STEPS)
    if not benchmark.disabled:
        benchmark.extra_info["seconds_per_step"] = benchmark.stats.stats.mean


def _trained(*modules) -> int:
    return sum(p.numel() for m in modules for p in m.parameters() if p.requires_grad)


# --------------------------------------------------------------------------------------------------
# Pair-trained baselines (pair_training/trainer.py: train_pairs)


def _pair_step(model, objective, config, input_size: int, seed: int = 0):
    """One ``train_pairs`` step: the (anchor, positive[, negative]) images in one forward pass, the
    trainer's own optimiser for ``config`` (a ``TrainConfig``)."""
    from urbanln_bench.pair_training.trainer import _optimiser

    generator = torch.Generator().manual_seed(seed)
    batch, size = config.batch_size, int(input_size)
    pixels = torch.randn(objective.arity * batch, 3, size, size, generator=generator)
    regions = [torch.randint(NY_SMALL_REGIONS, (batch,), generator=generator) for _ in range(objective.arity)]
    optimiser = _optimiser(model, config)
    model.train()

    def step():
        embeddings = list(model(pixels).split(batch))
        loss = objective(embeddings, regions)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        return loss

    return step


def test_step_tile2vec(benchmark):
    from urbanln_bench.pair_training.encoder import PairEncoder
    from urbanln_bench.pair_training.losses import TripletObjective
    from urbanln_bench.pair_training.trainer import TrainConfig, init_model

    c = get_method("tile2vec")().config  # the resolved cpu profile
    model = init_model(lambda: PairEncoder(width=int(c["width"])), 0)
    batch = int(c["batch_size"])
    config = TrainConfig(epochs=1, batch_size=batch, lr=float(c["lr"]), optimiser="adam", betas=(0.5, 0.999))
    step = _pair_step(model, TripletObjective(float(c["margin"]), float(c["l2"])), config, c["input_size"])
    _measure(benchmark, step, method="Tile2Vec", batch_size=batch, images_per_step=3 * batch,
             input_size=int(c["input_size"]), parameters_trained=_trained(model),
             per_step="forward of anchor+neighbour+distant tiles (one pass), Tile2Vec triplet loss (margin, l2 "
                  "penalty), backward, Adam step")


def test_step_pg_simclr(benchmark):
    from urbanln_bench.pair_training.losses import NTXentObjective
    from urbanln_bench.pair_training.trainer import TrainConfig, init_model

    method = get_method("pg-simclr")()
    c = method.config
    model = init_model(method._build_encoder, 0)
    batch = int(c["batch_size"])
    config = TrainConfig(epochs=1, batch_size=batch, lr=float(c["lr"]), optimiser="adam")
    step = _pair_step(model, NTXentObjective(float(c["temperature"])), config, c["input_size"])
    _measure(benchmark, step, method="PG-SimCLR", batch_size=batch, images_per_step=2 * batch,
             input_size=int(c["input_size"]), parameters_trained=_trained(model), models_trained=2,
             per_step="one of its two SimCLR models (POI- and geo-guided train the same step): forward of anchor+"
                  "positive tiles, NT-Xent (tau from config, same-region mask), backward, Adam step")


@pytest.mark.parametrize("encoder", ["rs", "sv"])
def test_step_musecl(benchmark, encoder):
    from urbanln_bench.pair_training.losses import TripletObjective
    from urbanln_bench.pair_training.trainer import TrainConfig, init_model

    method = get_method("musecl")()
    c = method.config
    model = init_model(method._build_encoder, 0)
    batch = int(c[f"{encoder}_batch_size"])
    config = TrainConfig(epochs=1, batch_size=batch, lr=float(c["lr"]), amsgrad=True)
    step = _pair_step(model, TripletObjective(float(c["margin"])), config, c["input_size"])
    _measure(benchmark, step, method=f"MuseCL ({encoder.upper()} encoder)", batch_size=batch,
             images_per_step=3 * batch, input_size=int(c["input_size"]), parameters_trained=_trained(model),
             per_step=f"{encoder.upper()} encoder: forward of anchor+positive+negative images, margin triplet loss, "
                  "backward, Adam (amsgrad) step; the attentive-fusion stage (an MLP on 128-d vectors) is not timed")


# --------------------------------------------------------------------------------------------------
# CLIP-based methods (clip_training/trainer.py: train_clip; urbanvlp.pretrain_towers)


def _random_clip():
    """The ``cpu`` CLIP architecture with random weights (``build_clip`` never fetches or trains weights)."""
    from urbanln_bench.backbones.clip import build_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_clip(CLIP_PROFILE)


def _tokens(tokenizer, n: int, context: int, lengths: tuple[int, int, int], generator,
            vocabulary: torch.Tensor | None = None) -> torch.Tensor:
    """Random token ids: start token, words, end token, zero padding; lengths uniform in
    [shortest, longest], one row at the batch maximum (so the trimmed width is that maximum)."""
    shortest, longest, batch_max = lengths
    size = torch.randint(shortest, longest + 1, (n,), generator=generator)
    size[0] = batch_max
    tokens = torch.zeros(n, context, dtype=torch.long)
    for i, length in enumerate(size.tolist()):
        if vocabulary is None:  # ids below the start token: the end token stays the argmax the pooling finds
            words = torch.randint(1, tokenizer.sot_token_id, (length - 2,), generator=generator)
        else:
            words = vocabulary[torch.randint(len(vocabulary), (length - 2,), generator=generator)]
        tokens[i, 0] = tokenizer.sot_token_id
        tokens[i, 1:length - 1] = words
        tokens[i, length - 1] = tokenizer.eot_token_id
    return tokens


def _clip_step(model, loss, *, lr: float, weight_decay: float, pixels, tokens):
    """One ``train_clip`` step (its setup first: all towers train, the loss plugin's parameters join AdamW).

    Returns (step, parameters in the optimiser — CLIP plus the loss's own, e.g. CoCa's decoder or MSD's
    temperature —, text width after trimming)."""
    from urbanln_bench.backbones.clip import encode_text_trimmed, trim_tokens
    from urbanln_bench.clip_training.trainer import set_trainable
    from urbanln_bench.training_loop import parameter_groups

    set_trainable(model, "all")
    model.train()
    extra = loss.setup(model, int(model.text_projection.shape[-1] if not hasattr(model.text_projection, "weight")
                                  else model.text_projection.weight.shape[0]))
    named_extra = [(f"loss.{p[0]}", p[1]) if isinstance(p, tuple) else (f"loss.temperature.{i}", p)
                   for i, p in enumerate(extra)]
    optimiser = torch.optim.AdamW(parameter_groups(list(model.named_parameters()) + named_extra, weight_decay),
                                  lr=lr, betas=(0.9, 0.98), eps=1e-6, fused=True)
    text = trim_tokens(tokens)

    def step():
        parts = loss.loss(model, pixels, text, encode_text_trimmed)
        optimiser.zero_grad(set_to_none=True)
        parts["total"].backward()
        optimiser.step()
        loss.after_step(model)
        return parts["total"]

    trained = sum(p.numel() for group in optimiser.param_groups for p in group["params"])
    return step, trained, int(text.shape[1])


def test_step_urbanclip(benchmark):
    from urbanln_bench.clip_training.trainer import build_clip_loss

    method = get_method("urbanclip")()
    c, recipe = method.config, method.recipe()
    model, tokenizer, preprocess = _random_clip()
    batch = int(recipe["batch_size"])
    generator = torch.Generator().manual_seed(0)
    # the "observed" caption vocabulary of NY small SI: 249 token ids (with start and end), as its record says
    vocabulary = torch.cat([torch.randperm(tokenizer.sot_token_id - 1, generator=generator)[:247] + 1,
                            torch.tensor([tokenizer.sot_token_id, tokenizer.eot_token_id])])
    if recipe["caption_vocabulary"] != "observed":
        vocabulary = None
    tokens = _tokens(tokenizer, batch, 77, URBANCLIP_SENTENCE, generator, vocabulary)
    loss = build_clip_loss("coca", caption_weight=float(c["caption_weight"]),
                           contrastive_weight=float(c["contrastive_weight"]), decoder_layers=int(c["decoder_layers"]),
                           vocabulary=None if vocabulary is None else vocabulary.tolist())
    pixels = torch.randn(batch, 3, preprocess.image_size, preprocess.image_size, generator=generator)
    step, trained, width = _clip_step(model, loss, lr=float(recipe["lr"]), weight_decay=float(c["weight_decay"]),
                                      pixels=pixels, tokens=tokens)
    _measure(benchmark, step, method="UrbanCLIP", batch_size=batch, input_size=preprocess.image_size,
             text_tokens=width, caption_vocabulary=len(loss.vocabulary or []) or "full",
             parameters_trained=trained,
             per_step="CLIP 'cpu' (random init) + from-scratch CoCa decoder: image and text towers, InfoNCE + "
                  "captioning cross-entropy, backward, fused AdamW step, logit_scale clamp")


def test_step_urbanvlp(benchmark):
    from open_clip.loss import ClipLoss

    from urbanln_bench.backbones.clip import encode_text_trimmed, trim_tokens
    from urbanln_bench.clip_training.filip import filip_loss, pad_token_sets
    from urbanln_bench.clip_training.tokens import image_token_features, text_token_features
    from urbanln_bench.training_loop import parameter_groups

    method = get_method("urbanvlp")()
    c, recipe = method.config, method.recipe()
    satellite, tokenizer, preprocess = _random_clip()
    streetview = copy.deepcopy(satellite)  # its fit: two copies of one starting CLIP
    batch, size = int(recipe["batch_size"]), preprocess.image_size
    generator = torch.Generator().manual_seed(0)
    satellite_pixels = torch.randn(batch, 3, size, size, generator=generator)
    views = torch.randn(batch * URBANVLP_VIEWS_PER_REGION, 3, size, size, generator=generator)
    owner = torch.arange(batch).repeat_interleave(URBANVLP_VIEWS_PER_REGION)
    satellite_text = trim_tokens(_tokens(tokenizer, batch, 77, URBANVLP_SENTENCE, generator))
    # joined street-view descriptions fill the 77-token context (459 of NY small's 517 regions); with
    # mask_padding False (its code) the whole context is read anyway
    streetview_text = _tokens(tokenizer, batch, 77, (77, 77, 77), generator)
    mask_padding = bool(c["mask_padding"])
    if mask_padding:
        streetview_text = trim_tokens(streetview_text)
    for model in (satellite, streetview):
        model.train()
        for param in model.parameters():
            param.requires_grad_(True)
    named = ([(f"satellite.{k}", p) for k, p in satellite.named_parameters()]
             + [(f"streetview.{k}", p) for k, p in streetview.named_parameters()])
    optimiser = torch.optim.AdamW(parameter_groups(named, float(c["weight_decay"])), lr=float(recipe["lr"]),
                                  betas=(0.9, 0.98), eps=1e-6, fused=True)
    contrastive = ClipLoss()
    satellite_weight, streetview_weight = float(c["satellite_weight"]), float(c["streetview_weight"])

    def step():  # pretrain_towers' loop body, every region with street views
        v_sat = F.normalize(satellite.encode_image(satellite_pixels).float(), dim=-1)
        t_sat = F.normalize(encode_text_trimmed(satellite, satellite_text).float(), dim=-1)
        pooled, view_tokens = image_token_features(streetview, views)
        sums = torch.zeros_like(v_sat).index_add(0, owner, pooled.float())
        counts = torch.bincount(owner, minlength=batch).clamp(min=1).unsqueeze(1)
        v_sv = F.normalize(sums / counts, dim=-1)
        sets = [view_tokens[owner == j].reshape(-1, view_tokens.shape[-1]) for j in range(batch)]
        region_tokens, image_mask = pad_token_sets(sets)
        _, text_tokens = text_token_features(streetview, streetview_text)
        sv_loss = filip_loss(region_tokens, text_tokens, image_mask,
                             text_mask=(streetview_text != 0) if mask_padding else None)
        sat_loss = contrastive(v_sat + v_sv, t_sat, satellite.logit_scale.exp().float())
        total = satellite_weight * sat_loss + streetview_weight * sv_loss
        optimiser.zero_grad(set_to_none=True)
        total.backward()
        optimiser.step()
        with torch.no_grad():
            for model in (satellite, streetview):
                model.logit_scale.clamp_(0, math.log(100))
        return total

    _measure(benchmark, step, method="UrbanVLP", batch_size=batch, streetviews_per_step=len(views), input_size=size,
             satellite_text_tokens=int(satellite_text.shape[1]), streetview_text_tokens=int(streetview_text.shape[1]),
             parameters_trained=_trained(satellite, streetview),
             per_step=f"two CLIP 'cpu' towers (random init): {batch} satellite tiles + {len(views)} street views "
                  f"({URBANVLP_VIEWS_PER_REGION} per region), InfoNCE(SI) + FILIP(SV) token loss, backward, one "
                  "fused AdamW step over both towers, logit_scale clamps")


def test_step_urbanln(benchmark):
    from urbanln_bench.clip_training.ipsi import apply_ipsi
    from urbanln_bench.clip_training.trainer import build_clip_loss

    method = get_method("urbanln")()
    c, recipe = method.config, method.recipe()
    model, tokenizer, preprocess = _random_clip()
    context = 77
    if c["ipsi"]:
        context = apply_ipsi(model, keep=int(c["ipsi_keep"]), ratio=int(c["ipsi_ratio"]),
                             freeze_kept=bool(c["freeze_kept"]))
    batch = int(recipe["batch_size"])
    generator = torch.Generator().manual_seed(0)
    tokens = _tokens(tokenizer, batch, context, tuple(min(n, context) for n in URBANLN_CAPTION), generator)
    pixels = torch.randn(batch, 3, preprocess.image_size, preprocess.image_size, generator=generator)
    if c["msd"]:
        loss = build_clip_loss("msd", mu=float(c["mu"]), momentum=float(c["momentum"]),
                               queue_size=int(c["queue_size"]), temperature=float(c["temperature"]))
    else:
        loss = build_clip_loss("infonce")
    step, trained, width = _clip_step(model, loss, lr=float(recipe["lr"]), weight_decay=float(c["weight_decay"]),
                                      pixels=pixels, tokens=tokens)
    if c["msd"]:  # steady state: queues already full (NY small fills 4096 after 64 steps of 64)
        distiller = loss.distiller
        for queue in (distiller.image_queue, distiller.text_queue):
            queue.push(F.normalize(torch.randn(queue.size, queue.features.shape[1], generator=generator), dim=-1))
    _measure(benchmark, step, method="UrbanLN", batch_size=batch, input_size=preprocess.image_size,
             text_tokens=width, queue_size=int(c["queue_size"]) if c["msd"] else 0,
             parameters_trained=trained,
             per_step="CLIP 'cpu' (random init) with IPSI 248 positions: student image+text towers, no-grad EMA "
                  "teacher towers, MSD loss against batch + full 4096 queues, backward, fused AdamW step, "
                  "queue push, EMA update")
