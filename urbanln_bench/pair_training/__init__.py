"""The pair-sampling trainer the Tile2Vec, PG-SimCLR and MuseCL baselines share (docs/methods.md).

- ``samplers``: positives by grid adjacency, nearest POI-category vector or most similar mobility
  profile; distant (or any other) regions as negatives.
- ``losses``: Tile2Vec's triplet loss (unsquared L2, margin, embedding penalty), MuseCL's margin triplet
  loss, SimCLR's NT-Xent.
- ``encoder``: a ResNet-18(-style) encoder from scratch with the papers' heads.
- ``augment``: flips/rotations (Tile2Vec) and random resized crops (SimCLR) from explicit generators.
- ``trainer``: the deterministic training loop and image loading.
- ``method_base``: settings per run profile, shared by the three methods (``methods/``).
"""
