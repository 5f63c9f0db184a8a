"""Tile2Vec (Jean et al., AAAI 2019; ``ermongroup/tile2vec``): a ResNet-18-like encoder trained from
scratch with a triplet loss on (anchor tile, neighbouring tile, distant tile) — Tobler's first law as a
training signal. Satellite imagery only: the paper's tables have a single Tile2Vec row, a satellite
method, so ``native_imagery`` is SI and it does not run on street views.

Faithful to the paper and its code (docs/methods.md#tile2vec):
- loss: Eq. (1), unsquared L2 distances, margin 10 and embedding penalty l2 = 0.01·(‖Z_a‖_F + ‖Z_n‖_F +
  ‖Z_d‖_F) as in the training notebook (``pair_training.losses.tile2vec_triplet_loss``);
- neighbour: a region adjacent on the grid (8-neighbourhood); distant: a random region outside that
  window — the region-level reading of "neighbour centre within ±100 px, distant tile elsewhere";
- augmentation: random flips and 90° rotations; optimiser Adam, lr 1e-3, betas (0.5, 0.999), batch 50;
- embedding: z, the encoder's global-average-pooled output (TileNet has no projection head).

Deviations: a region's whole tile is the unit (Tile2Vec samples 50-px sub-tiles from large scenes; here
a region's tile is what every method embeds); torchvision's ResNet-18 (4 stages, ImageNet stem, RGB)
instead of TileNet's 5-stage, 4-band variant; one epoch = every region once as anchor (not 100k
triplets); the ``cpu`` profile trains a half-width ResNet-18 for the profile's images-seen budget
(docs/architecture.md#budgets) so NY ``small`` pretrains in minutes on two cores — the ``paper`` profile has the full width and 50 epochs.
"""

from __future__ import annotations

from urbanln_bench.method import FitContext, MethodMeta
from urbanln_bench.pair_training.method_base import PairTrainedMethod

RECIPES = {
    "smoke": {"input_size": 32, "width": 16, "batch_size": 25, "lr": 1e-3, "margin": 10.0,
             "l2": 0.01, "neighbourhood": 1},
    "cpu": {"input_size": 64, "width": 32, "batch_size": 50, "lr": 1e-3, "margin": 10.0,
            "l2": 0.01, "neighbourhood": 1},
    "paper": {"input_size": 64, "width": 64, "epochs": 50, "batch_size": 50, "lr": 1e-3, "margin": 10.0,
              "l2": 0.01, "neighbourhood": 1},
}


class Tile2Vec(PairTrainedMethod):
    RECIPES = RECIPES
    meta = MethodMeta(
        name="tile2vec",
        display_name="Tile2Vec",
        version="1",
        imagery="SI",
        native_imagery=("SI",),
        description="ResNet-18 from scratch, triplet loss on (tile, adjacent-region tile, distant tile); z features.",
        starts_from="tile2vec-start",
        citation="Jean et al., Tile2Vec: Unsupervised Representation Learning for Spatially Distributed Data, AAAI 2019",
        default_config=PairTrainedMethod.settings(RECIPES),
    )

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.model = None

    def modules(self) -> list:
        return [self.model]

    def encode_images(self, pixels):
        return self.model.embed(pixels)

    def architecture(self):
        """The tile encoder; all of it trains."""
        from urbanln_bench.pair_training.encoder import PairEncoder, parameter_count
        from urbanln_bench.profiling import Architecture

        model = PairEncoder(width=int(self.config["width"]))
        return Architecture(model, parameter_count(model), parameter_count(model), "from scratch on the fit city")

    def fit(self, city, imagery: str, context: FitContext) -> None:
        from urbanln_bench.pair_training.encoder import PairEncoder
        from urbanln_bench.pair_training.losses import TripletObjective
        from urbanln_bench.pair_training.samplers import DistantNegatives, spatial_neighbours
        from urbanln_bench.pair_training.trainer import (
            TrainConfig,
            cached_state,
            init_model,
            load_image_set,
            train_pairs,
        )

        c = self.config
        self.model = init_model(lambda: PairEncoder(width=int(c["width"])), context.seed)

        def train() -> dict:
            images = load_image_set(city, "SI", self.input_size, self.mean, self.std)
            radius = int(c["neighbourhood"])
            config = TrainConfig(epochs=int(c.get("epochs", 0)), max_images=self.images_budget(),
                                 batch_size=int(c["batch_size"]), lr=float(c["lr"]),
                                 optimiser="adam", betas=(0.5, 0.999), augment="dihedral", seed=context.seed)
            log = train_pairs(self.model, images, TripletObjective(float(c["margin"]), float(c["l2"])),
                              spatial_neighbours(city.regions, radius),
                              DistantNegatives(city.regions, radius, valid=images.has_images()), config,
                              device=context.device, progress=context.progress,
                              description=f"Tile2Vec triplets on {city.name} SI")
            return {"tile_encoder": log.as_dict()}

        logs = cached_state(context.work_dir / "tile2vec.pt", self.model, train)
        self._report = self.summarise(logs)
        self.model.eval()
