"""Caption regression: the simplest way to learn an image encoder from captions — a small CNN trained from
scratch to regress each image's caption, as a TF-IDF vector reduced to ``text_dim`` dimensions by a
truncated SVD (docs/methods.md#caption-regression).

It is the text-regression baseline every caption-based method is measured against: the same unlabelled
images and the same consensus captions UrbanLN pretrains on (the harness's caption pipeline, refinement
and CAPTURE consensus on), no contrastive objective, no text tower. In the spirit of learning visual
features by predicting the text that goes with an image (Joulin et al., "Learning Visual Features from
Large Weakly Supervised Data", ECCV 2016; Desai & Johnson, VirTex, CVPR 2021), with the cheapest text
target there is.

Targets: the captions' word counts (lower-cased alphabetic tokens of two letters or more, words in at
least two captions), sublinear tf (1 + ln tf) × smooth idf (ln((1 + n) / (1 + df)) + 1), each row
L2-normalised, centred, projected on the top ``text_dim`` right singular vectors, and scaled by one number
so that the mean squared target is 1 (the components keep their relative variance: the loss weighs
what the captions vary in most). Fitted on the city's captions only; no label is used.

Encoder: four blocks of two 3×3 convolutions (batch norm, ReLU) and a 2×2 max-pool, widths 32, 64, 128,
128 (≈ 0.58 M parameters); global average pooling gives the 128-d region feature. A linear head maps it
to the target during training and is dropped afterwards. MSE, AdamW, linear warm-up and cosine decay
through the harness's shared loop (``training_loop``), horizontal flips. Street views are mean-pooled per
region by the harness, like every method's.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any, ClassVar

import numpy as np

from urbanln_bench.errors import UserError
from urbanln_bench.method import FitContext, MethodMeta, TorchImageEncoder
from urbanln_bench.profiles import images_seen_budget, recipe, steps_for_budget

# per run profile: input size, batch size, learning rate; the length of training is the profile's
# images-seen budget (profiles.IMAGES_SEEN_BUDGETS: steps = budget / batch), or under ``paper`` (no budget)
# the recipe's epochs
RECIPES: dict[str, dict[str, Any]] = {
    "smoke": {"input_size": 32, "batch_size": 16, "lr": 1e-3},
    "cpu": {"input_size": 64, "batch_size": 64, "lr": 1e-3},
    "paper": {"input_size": 96, "epochs": 60, "batch_size": 128, "lr": 1e-3},
}
WIDTHS = (32, 64, 128, 128)
_TOKEN = re.compile(r"[a-z]{2,}")


def tfidf_svd_targets(texts: list[str], dim: int) -> tuple[np.ndarray, dict[str, Any]]:
    """(n, dim) float32 regression targets for ``texts`` (module docstring) and what they were built from."""
    counts = [Counter(_TOKEN.findall(text.lower())) for text in texts]
    df = Counter(word for c in counts for word in c)
    vocabulary = sorted(word for word, n in df.items() if n >= 2)
    if len(vocabulary) < 2:
        raise UserError(f"caption regression: the captions share {len(vocabulary)} words; need at least 2")
    column = {word: j for j, word in enumerate(vocabulary)}
    n = len(texts)
    matrix = np.zeros((n, len(vocabulary)))
    for i, c in enumerate(counts):
        for word, tf in c.items():
            if word in column:
                matrix[i, column[word]] = 1.0 + math.log(tf)
    idf = np.log((1.0 + n) / (1.0 + np.array([df[w] for w in vocabulary], dtype=np.float64))) + 1.0
    matrix *= idf
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    matrix = np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)
    matrix -= matrix.mean(axis=0)
    _, s, vt = np.linalg.svd(matrix, full_matrices=False)
    k = min(dim, len(s))
    scores = matrix @ vt[:k].T
    scale = float(np.sqrt(np.mean(scores**2))) or 1.0
    targets = np.zeros((n, dim), dtype=np.float32)
    targets[:, :k] = (scores / scale).astype(np.float32)
    explained = float((s[:k] ** 2).sum() / max((s**2).sum(), 1e-12))
    return targets, {"vocabulary": len(vocabulary), "components": k, "variance_explained": round(explained, 4)}


def build_encoder(widths: tuple[int, ...] = WIDTHS):
    """The 4-block CNN (module docstring), ending in global average pooling: (n, 3, s, s) → (n, widths[-1])."""
    import torch

    layers: list[torch.nn.Module] = []
    channels = 3
    for width in widths:
        for _ in range(2):
            layers += [torch.nn.Conv2d(channels, width, 3, padding=1, bias=False), torch.nn.BatchNorm2d(width),
                       torch.nn.ReLU(inplace=True)]
            channels = width
        layers.append(torch.nn.MaxPool2d(2))
    layers += [torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()]
    return torch.nn.Sequential(*layers)


class CaptionRegression(TorchImageEncoder):
    meta = MethodMeta(
        name="caption-regression",
        display_name="Caption regression (CNN)",
        version="1",
        imagery="either",
        native_imagery=("SV", "SI"),
        description="A 4-block CNN from scratch regressing each image's consensus caption (TF-IDF → SVD); "
                    "the text-regression baseline of caption-based pretraining.",
        starts_from="caption-regression-start",
        citation="Joulin et al., Learning Visual Features from Large Weakly Supervised Data, ECCV 2016",
        default_config={"text_dim": 64, "input_size": 0, "epochs": 0, "batch_size": 0, "lr": 0.0,
                        "images_seen": 0, "captioners": [], "candidates_per_captioner": 0},
    )
    RECIPES: ClassVar[dict[str, dict[str, Any]]] = RECIPES
    UNTRAINED: ClassVar[bool] = False  # the starting-weights row (methods/starting_weights.py): no captions, no step
    mean = (0.5, 0.5, 0.5)
    std = (0.25, 0.25, 0.25)

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.report: dict[str, Any] = {}

    @property
    def config(self) -> dict[str, Any]:
        """The run profile's recipe under the user's ``--set`` values (0 = the recipe's), with the
        images-seen budget (``images_seen``; None under a profile that trains by epochs)."""
        base = recipe(self.RECIPES, self.run_profile, f"method '{self.meta.name}'")
        config = {**self._settings, **{k: (v if self._settings.get(k) in (0, 0.0, None) else self._settings[k])
                                       for k, v in base.items()}}
        budget = images_seen_budget(self.run_profile, self._settings.get("images_seen"))
        if budget is not None and self._settings.get("epochs"):
            raise UserError(f"method '{self.meta.name}': epochs cannot be set under the '{self.run_profile}' "
                            "profile, whose images-seen budget sets the length of training; set images_seen=N instead")
        config["images_seen"] = budget
        if budget is not None:
            config.pop("epochs", None)
        return config

    @property
    def input_size(self) -> int:  # the harness resizes every image to this; training sees the same
        return int(self.config["input_size"])

    def weight_source(self) -> str:
        if self.UNTRAINED:
            return f"seeded initialisation, not trained ({self.run_profile} profile)"
        return f"from scratch (caption regression on the fit city's consensus captions, {self.run_profile} profile)"

    def caption_settings(self, imagery: str) -> dict[str, dict[str, Any]]:
        """UrbanLN's caption sets (refinement and consensus on); ``captioners`` and
        ``candidates_per_captioner`` as in UrbanLN's settings (empty / 0 = the pipeline's)."""
        if self.UNTRAINED:
            return {}
        from urbanln_bench.fit_inputs import caption_request

        return {imagery: caption_request(self._settings, refinement=True, consensus=True)}

    def fit(self, city, imagery: str, context: FitContext) -> None:
        import torch

        from urbanln_bench import training_loop as loop
        from urbanln_bench.embed import preprocess as preprocess_images

        if self.UNTRAINED:
            torch.manual_seed(context.seed)  # the initialisation fit would train from
            self.model = build_encoder().eval()
            self.report = {"steps": 0, "images_seen": 0, "weights": self.weight_source(),
                           "parameters": {"total": sum(p.numel() for p in self.model.parameters()), "trainable": 0}}
            return
        captions = context.extras.get("captions", {}).get(imagery)
        if not captions:
            raise UserError(f"{self.meta.name}: the harness gave no {imagery} captions for {city.name}")
        ids = [i for i in city.image_ids(imagery) if i in captions]
        if len(ids) < 4:
            raise UserError(f"{self.meta.name}: {city.name} has {len(ids)} captioned {imagery} images; need >= 4")
        config = self.config
        targets, text_info = tfidf_svd_targets([captions[i] for i in ids], int(config["text_dim"]))
        size = self.input_size
        pixels = preprocess_images([city.load_image(i) for i in ids], size, self.mean, self.std)
        y = torch.from_numpy(targets)
        batch = min(int(config["batch_size"]), len(ids))
        if config["images_seen"] is not None:
            steps = steps_for_budget(int(config["images_seen"]), batch)
        else:
            steps = max(1, math.ceil(float(config["epochs"]) * len(ids) / batch))
        generator = torch.Generator().manual_seed(context.seed)
        torch.manual_seed(context.seed)
        encoder = build_encoder()
        head = torch.nn.Linear(WIDTHS[-1], targets.shape[1])
        device = torch.device(context.device)
        encoder.to(device).train()
        head.to(device).train()
        params = [(f"encoder.{n}", p) for n, p in encoder.named_parameters()] + \
                 [(f"head.{n}", p) for n, p in head.named_parameters()]
        optimiser = loop.adamw(loop.parameter_groups(params, weight_decay=1e-4, decay_positional=True),
                               float(config["lr"]), device)
        schedule = loop.warmup_cosine(optimiser, steps, max(1, steps // 20))

        def batch_loss(idx):
            x = loop.random_flips(pixels[idx], generator).to(device)
            return {"total": torch.nn.functional.mse_loss(head(encoder(x)), y[idx].to(device))}

        result = loop.optimise(optimiser, schedule, loop.shuffled_batches(len(ids), batch, generator),
                               batch_loss, steps=steps, description=f"caption regression on {city.name} {imagery}",
                               progress=context.progress)
        self.model = encoder.eval()
        self.report = {"steps": result.steps, "batch_size": batch, "images_seen": result.steps * batch,
                       "epochs": round(result.steps * batch / len(ids), 2), "images": len(ids),
                       "loss_first_last": loop.summarise_losses(result.history).get("total"),
                       "parameters": {"total": sum(p.numel() for p in encoder.parameters()),
                                      "trainable": sum(p.numel() for p in encoder.parameters())},
                       "text_targets": text_info, "weights": self.weight_source()}

    def fit_report(self) -> dict[str, Any]:
        return dict(self.report)

    def architecture(self):
        from urbanln_bench.profiling import Architecture

        model = build_encoder()
        total = sum(p.numel() for p in model.parameters())
        return Architecture(model, total, total, "trained from scratch on the fit city's captions")
