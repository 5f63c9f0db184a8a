"""Oracle: the twin's true latents, probed with the same head, splits and seeds as every method —
the ceiling of what any representation of these regions can reach (synthetic twins only). It declares
``truth=("latents",)``, so the harness hands it the latents (``fit_inputs.TrueLatents``); no method that
does not declare them ever gets them (docs/methods.md#floors-and-oracle)."""

from __future__ import annotations

from urbanln_bench.method import FitContext, Method, MethodMeta


class OracleLatents(Method):
    meta = MethodMeta(
        name="oracle-latents",
        display_name="Oracle (true latents)",
        version="1",
        imagery="either",
        native_imagery=("SV", "SI"),
        description="The twin's true latent variables per region (synthetic only): the ceiling.",
        role="oracle",
        synthetic_only=True,
        truth=("latents",),
    )

    def weight_source(self) -> str:
        return "none (ground truth)"

    def fit(self, city, imagery: str, context: FitContext) -> None:
        self.latents = context.extras["latents"]  # region id -> latent vector, provided by the harness

    def encode_regions(self, city, region_ids, context: FitContext):
        import numpy as np

        return np.stack([self.latents[rid] for rid in region_ids]).astype(np.float32)
