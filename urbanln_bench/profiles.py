"""Run profiles and recipes: how much compute a run spends (docs/architecture.md#profiles-and-recipes).

Two words, two ideas, never shared values:

- a **profile** names a compute budget for the whole run (``--profile``): ``smoke`` (tests, CI and
  ``check-method``: seconds), ``cpu`` (the default: a laptop) or ``paper`` (the paper's settings, a GPU);
- a **recipe** is what one component does under a profile: a table ``{profile: settings}`` that the
  component owns (a method's ``RECIPES``, ``FOUNDATION_RECIPES``, ``SURROGATE_RECIPES``,
  ``GROUNDING_RECIPES``), read with :func:`recipe`.

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
