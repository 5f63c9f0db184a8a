"""Captioner personas as data: each simulated MLLM's length, noise and style (``styles/*.toml``,
documented in ``styles/README.md``), validated on load (docs/twins.md#captioners).

The generator that writes captions from them is ``synthetic_captioner``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

from urbanln_bench.captions import fidelity
from urbanln_bench.errors import SpecError
from urbanln_bench.strict import from_mapping


@dataclass(frozen=True)
class PersonaLength:
    min_words: int
    max_words: int

    def __post_init__(self) -> None:
        if not 100 <= self.min_words <= self.max_words <= 250:
            raise ValueError(f"need 100 <= min_words <= max_words <= 250, got {self.min_words}..{self.max_words}")


@dataclass(frozen=True)
class PersonaNoise:
    """Noise rates; their meaning is documented in styles/README.md."""

    hallucination_rate: float
    hallucination_from_scene: float
    omission_rate: float
    small_object_omission_factor: float
    attribute_error_rate: float
    filler_rate: float
    urban_knowledge_rate: float
    wrong_urban_knowledge_rate: float

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            upper = 10.0 if name == "small_object_omission_factor" else 1.0
            if not 0.0 <= value <= upper:
                raise ValueError(f"{name} must be in [0, {upper:g}], got {value}")
        if self.hallucination_rate > 0.5:
            raise ValueError("hallucination_rate above 0.5 is not supported (most named kinds would be false)")
        if self.filler_rate > 0.8:
            raise ValueError("filler_rate above 0.8 leaves no room for content")
        if self.urban_knowledge_rate + self.wrong_urban_knowledge_rate > 1.0:
            raise ValueError("urban_knowledge_rate + wrong_urban_knowledge_rate must not exceed 1")


@dataclass(frozen=True)
class PersonaStyle:
    layout: str
    count_style: str
    max_attributes: int
    connector_rate: float
    openers_satellite: tuple[str, ...]
    openers_streetview: tuple[str, ...]
    list_templates: tuple[str, ...]
    entity_templates: tuple[str, ...]
    relation_templates: tuple[str, ...]
    connectors: tuple[str, ...]
    knowledge_templates: tuple[str, ...]
    filler: tuple[str, ...]
    remarks_satellite: tuple[str, ...]
    remarks_streetview: tuple[str, ...]
    closers: tuple[str, ...]
    region_templates: tuple[str, ...]
    detail_templates: tuple[str, ...]
    section_leads: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.layout not in ("paragraph", "list", "sections"):
            raise ValueError(f"layout must be paragraph, list or sections, got '{self.layout}'")
        if self.count_style not in ("exact", "vague"):
            raise ValueError(f"count_style must be exact or vague, got '{self.count_style}'")
        if self.layout == "sections" and not self.section_leads:
            raise ValueError("layout 'sections' needs [style.section_leads]")
        for name, value in vars(self).items():
            if isinstance(value, tuple) and not value:
                raise ValueError(f"'{name}' must list at least one sentence")

    def openers(self, kind: str) -> tuple[str, ...]:
        return self.openers_satellite if kind == "satellite" else self.openers_streetview

    def remarks(self, kind: str) -> tuple[str, ...]:
        return self.remarks_satellite if kind == "satellite" else self.remarks_streetview


@dataclass(frozen=True)
class Persona:
    """One simulated MLLM: who it imitates, how long it writes, how it errs."""

    name: str
    display_name: str
    imitates: str
    summary: str
    length: PersonaLength
    noise: PersonaNoise
    style: PersonaStyle

    def __post_init__(self) -> None:
        if "simulated" not in self.display_name.lower():
            raise ValueError("display_name must say 'simulated' so no one mistakes it for the real model")


def styles_dir() -> Path:
    return Path(str(resources.files("urbanln_bench.captions") / "styles"))


def persona_names() -> list[str]:
    """The built-in personas (one TOML file each in ``styles/``)."""
    return sorted(p.stem for p in styles_dir().glob("*.toml"))


# Sentences that must state nothing about objects (their slots removed before the check).
_CONTENT_FREE = ("filler", "remarks_satellite", "remarks_streetview", "closers", "knowledge_templates",
                 "openers_satellite", "openers_streetview", "list_templates", "entity_templates",
                 "relation_templates", "detail_templates", "connectors")


@lru_cache(maxsize=64)
def load_persona(name_or_path: str) -> Persona:
    """A built-in persona by name, or a user's persona file by path; errors name file and key."""
    import tomllib

    path = Path(name_or_path)
    if not (path.suffix == ".toml" and path.exists()):
        path = styles_dir() / f"{name_or_path}.toml"
        if not path.exists():
            from urbanln_bench.registry import suggest

            raise SpecError(f"unknown captioner persona '{name_or_path}'{suggest(name_or_path, persona_names())}; "
                            f"built-in: {', '.join(persona_names())}, or pass a path to a persona .toml file")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML: {exc}") from exc
    persona = from_mapping(Persona, data, str(path))
    for key in _CONTENT_FREE:
        for sentence in getattr(persona.style, key):
            named = fidelity.mentioned_objects(re.sub(r"\{[^}]*\}", " ", sentence))
            if named:
                raise SpecError(f"{path}: style.{key}: '{sentence}' names {', '.join(named)}; frames and "
                                "filler must name no object, or the fidelity bookkeeping would be wrong")
    return persona
