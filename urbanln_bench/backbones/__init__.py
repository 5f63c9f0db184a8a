"""Backbones with an explicit weight source (docs/architecture.md#core-concepts): a user's local file, else a surrogate the
harness pretrains on the pretraining world (never on a benchmark twin), cached by its config."""
