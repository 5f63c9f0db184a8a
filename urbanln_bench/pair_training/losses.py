"""The pair-sampling objectives of the baselines (docs/methods.md), each as its paper and code define it.

- :func:`tile2vec_triplet_loss` — Tile2Vec (Jean et al., AAAI 2019), Eq. (1): a hinge on *unsquared* L2
  distances, ``[‖z_a − z_n‖₂ − ‖z_a − z_d‖₂ + m]₊``, plus the released code's embedding penalty
  ``l2·(‖Z_a‖_F + ‖Z_n‖_F + ‖Z_d‖_F)`` (``src/tilenet.py``, ``triplet_loss``: Frobenius norms of the batch
  matrices, so the penalty grows with √batch).
- :func:`margin_triplet_loss` — MuseCL (Yong et al., IJCAI 2024): ``nn.MarginRankingLoss(margin=5)`` on the
  L2 distances, i.e. ``mean(max(0, d(a,p) − d(a,n) + m))`` with no penalty.
- :func:`nt_xent_loss` — SimCLR's NT-Xent (Chen et al., ICML 2020, Eq. 1) as PG-SimCLR uses it
  (``simclr/modules/nt_xent.py``): cosine similarity / τ, 2N − 2 in-batch negatives, mean over the 2N
  anchors; the positive is a *different* region, not a second view of the same image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def _distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Row-wise unsquared L2 distance (its gradient at 0 is 0, not NaN)."""
    return torch.linalg.vector_norm(x - y, dim=1)


def margin_triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                        margin: float) -> torch.Tensor:
    """``mean(max(0, ‖a − p‖₂ − ‖a − n‖₂ + margin))`` — MuseCL's MarginRankingLoss on L2 distances."""
    return F.relu(_distance(anchor, positive) - _distance(anchor, negative) + margin).mean()


def tile2vec_triplet_loss(anchor: torch.Tensor, neighbour: torch.Tensor, distant: torch.Tensor,
                          margin: float = 10.0, l2: float = 0.01) -> torch.Tensor:
    """Tile2Vec, Eq. (1) with the code's penalty: ``mean([‖z_a−z_n‖₂ − ‖z_a−z_d‖₂ + m]₊) + l2·Σ‖Z‖_F``.

    Defaults are the training notebook's (margin 10, l2 0.01); the function default in ``tilenet.py``
    is margin 0.1. Without the penalty the hinge is met by inflating every embedding.
    """
    loss = margin_triplet_loss(anchor, neighbour, distant, margin)
    if l2:
        loss = loss + l2 * (torch.linalg.matrix_norm(anchor) + torch.linalg.matrix_norm(neighbour)
                            + torch.linalg.matrix_norm(distant))
    return loss


def nt_xent_loss(z_a: torch.Tensor, z_p: torch.Tensor, temperature: float = 0.5,
                 groups_a: torch.Tensor | None = None, groups_p: torch.Tensor | None = None) -> torch.Tensor:
    """SimCLR Eq. (1): ``ℓ(i, j) = −log exp(s_ij/τ) / Σ_{k≠i} exp(s_ik/τ)``, averaged over all 2N rows.

    ``z_a[i]`` and ``z_p[i]`` are a positive pair; every other row of the 2N batch is a negative. Works for
    any batch size (the reference implementation builds its mask for one fixed batch size). With
    ``groups_a``/``groups_p`` (region ids of each row), rows showing the same region as the anchor or as
    its positive are left out of the denominator: with region-level positives a region can appear twice in
    a batch (as one pair's anchor and another's positive), and the plain loss would push a region away from
    itself. Without groups it is exactly the plain NT-Xent.
    """
    n = z_a.shape[0]
    z = F.normalize(torch.cat([z_a, z_p]), dim=1)
    logits = z @ z.T / temperature
    positive_of = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    exclude = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    if groups_a is not None and groups_p is not None:
        groups = torch.cat([groups_a, groups_p]).to(z.device)
        same = (groups[:, None] == groups[None, :]) | (groups[positive_of][:, None] == groups[None, :])
        keep_positive = torch.zeros_like(same)
        keep_positive[torch.arange(2 * n), positive_of] = True
        exclude = exclude | (same & ~keep_positive)
    logits = logits.masked_fill(exclude, float("-inf"))
    return F.cross_entropy(logits, positive_of)


@dataclass(frozen=True)
class TripletObjective:
    """Anchor, positive, negative → margin triplet loss (Tile2Vec with ``l2 > 0``, MuseCL with ``l2 = 0``)."""

    margin: float
    l2: float = 0.0
    arity: int = 3

    def __call__(self, embeddings: list[torch.Tensor], regions: list[torch.Tensor]) -> torch.Tensor:
        anchor, positive, negative = embeddings
        return tile2vec_triplet_loss(anchor, positive, negative, self.margin, self.l2)


@dataclass(frozen=True)
class NTXentObjective:
    """Anchor, positive → NT-Xent with in-batch negatives (PG-SimCLR); same-region rows masked out."""

    temperature: float = 0.5
    mask_same_region: bool = True
    arity: int = 2

    def __call__(self, embeddings: list[torch.Tensor], regions: list[torch.Tensor]) -> torch.Tensor:
        anchor, positive = embeddings
        if self.mask_same_region:
            return nt_xent_loss(anchor, positive, self.temperature, regions[0], regions[1])
        return nt_xent_loss(anchor, positive, self.temperature)
