"""Profiles and recipes (docs/architecture.md#profiles-and-recipes): one vocabulary, no silent fallback."""

from __future__ import annotations

import pytest

from urbanln_bench.errors import UserError
from urbanln_bench.method import get_method, method_names
from urbanln_bench.profiles import PROFILES, recipe
from urbanln_bench.runner import RunOptions
from urbanln_bench.synth.scales import SCALES


def test_profiles_and_scales_share_no_name():
    assert not set(PROFILES) & set(SCALES)


def test_every_recipe_table_covers_exactly_the_profiles():
    from urbanln_bench.backbones.foundation import FOUNDATION_RECIPES
    from urbanln_bench.backbones.resnet import SURROGATE_RECIPES
    from urbanln_bench.captions.grounding import GROUNDING_RECIPES

    tables = {"foundation": FOUNDATION_RECIPES, "surrogate": SURROGATE_RECIPES, "grounding": GROUNDING_RECIPES}
    for name in method_names():
        recipes = getattr(get_method(name), "RECIPES", None)
        if recipes:
            tables[name] = recipes
    assert {"urbanln", "urbanclip", "urbanvlp", "tile2vec", "pg-simclr", "musecl"} <= set(tables)
    for name, table in tables.items():
        assert tuple(table) == PROFILES, name


def test_unknown_profile_is_an_error_not_a_fallback():
    with pytest.raises(UserError, match="unknown profile 'huge'.*known: smoke, cpu, paper"):
        RunOptions(method="urbanln", city="NY", profile="huge")
    with pytest.raises(UserError, match="did you mean 'smoke'"):
        recipe({"smoke": 1}, "smok", "x")
    with pytest.raises(UserError, match="method 'mine' has no recipe for profile 'paper' \\(it has: smoke, cpu\\)"):
        recipe({"smoke": 1, "cpu": 2}, "paper", "method 'mine'")


def test_a_method_without_the_run_profile_errors(monkeypatch):
    method = get_method("tile2vec")({})
    monkeypatch.setattr(type(method), "RECIPES", {"cpu": type(method).RECIPES["cpu"]})
    method.run_profile = "paper"
    with pytest.raises(UserError, match="method 'tile2vec' has no recipe for profile 'paper'"):
        _ = method.config
