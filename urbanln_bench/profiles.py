"""Run profiles and recipes: how much compute a run spends (docs/architecture.md#profiles-and-recipes).

Two words, two ideas, never shared values:

- a **profile** names a compute budget for the whole run (``--profile``): ``smoke`` (tests, CI and
  ``check-method``: seconds), ``cpu`` (the default: a laptop) or ``paper`` (the paper's settings, a GPU);
- a **recipe** is what one component does under a profile: a table ``{profile: settings}`` that the
  component owns (a method's ``RECIPES``, ``FOUNDATION_RECIPES``, ``SURROGATE_RECIPES``,
  ``GROUNDING_RECIPES``), read with :func:`recipe`.

Every self-supervised method's pretraining under a profile spends the same **budget**, in images seen
(:data:`IMAGES_SEEN_BUDGETS`, docs/architecture.md#budgets), so that a difference between two methods
is not a difference in compute.

How much *data* a twin renders is the twin's **scale** (``tiny`` / ``small`` / ``full``,
``urbanln_bench.synth.scales``), a separate axis: the ``smoke`` profile runs on any scale.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from urbanln_bench.errors import UserError
from urbanln_bench.registry import suggest

PROFILES = ("smoke", "cpu", "paper")
DEFAULT_PROFILE = "cpu"

T = TypeVar("T")

# The pretraining budget of every self-supervised method under a profile, in images seen: every image an
# image encoder sees in a training step (each anchor, positive and negative of a pair method, each view of
# SimCLR, each image of an image-text pair, summed over a method's encoders). ``paper``: None, each method
# trains its paper's own schedule (epochs), which its record states in images seen. Chosen from the cost
# per image of the slowest method (UrbanLN) so that the main job fits its time (docs/architecture.md#budgets),
# never from any method's score.
IMAGES_SEEN_BUDGETS: dict[str, int | None] = {"smoke": 256, "cpu": 8192, "paper": None}


def check_profile(profile: str) -> str:
    """``profile`` if it is one of :data:`PROFILES`, else a UserError with a suggestion."""
    if profile not in PROFILES:
        raise UserError(f"unknown profile '{profile}'{suggest(profile, list(PROFILES))}; "
                        f"known: {', '.join(PROFILES)}")
    return profile


def recipe(recipes: Mapping[str, T], profile: str, what: str, hint: str = "") -> T:
    """The entry of a recipe table for ``profile``; a UserError naming ``what`` (and ending with
    ``hint``, what to do instead) when it has none.

    No fallback to another profile: a run under ``paper`` that silently trained with the ``cpu``
    settings would record numbers that mean something else than its record says.
    """
    try:
        return recipes[profile]
    except KeyError:
        raise UserError(f"{what} has no recipe for profile '{profile}'{suggest(profile, list(recipes))} "
                        f"(it has: {', '.join(recipes)}){'; ' + hint if hint else ''}") from None


def images_seen_budget(profile: str, override: int | None = None) -> int | None:
    """The images-seen budget of a self-supervised pretraining under ``profile`` (None: the paper's own
    schedule); ``override`` (a method's ``images_seen`` setting) wins when given."""
    if override not in (None, 0, ""):
        budget = int(override)
        if budget < 2:
            raise UserError(f"images_seen must be at least 2 images, got {budget}")
        return budget
    return IMAGES_SEEN_BUDGETS[check_profile(profile)]


def steps_for_budget(budget: int, images_per_step: float) -> int:
    """Optimiser steps that spend ``budget`` images at ``images_per_step`` each (at least one)."""
    if images_per_step <= 0:
        raise ValueError(f"images_per_step must be positive, got {images_per_step}")
    return max(1, int(budget // images_per_step))
