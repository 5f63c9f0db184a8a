"""Stored measurements beside the records: parameters and speed per method (the paper's Figure 4) and caption
fidelity per pipeline stage, so that ``leaderboard`` draws them from stored files only, as it draws records.

- A **profile** (``profile --save``, ``<results>/profiles/<machine>/<profile>_<device>.json``): per method the
  total and trainable parameters, input size and inference images/s, the batch size and batches timed, the
  machine (CPU model, cores, torch threads, torch version, device name) and the label that the weights are random.
  Images/s is a wall-clock measurement of one machine: it is in no key, the file names its machine, and only
  an explicit ``profile --save`` rewrites it; ``leaderboard --check`` compares the figure with the stored
  file and never measures again.
- A **caption fidelity** file (``captions report --save``, ``<results>/<data tag>/<city>/captions/fidelity_<imagery>.json``):
  per stage (raw, refined, consensus-selected, randomly selected) object precision (1 − hallucination), recall
  and mean CLIP tokens, the caption set's key and settings, the data (twin, scale, manifest). The same inputs
  give the same bytes.

Both are sealed as records are (a content digest over the canonical JSON, ``records.record_digest``, checked on
every load; docs/identity.md#tamper-evident-records), carry a schema number, are written atomically and are
read through the typed classes below, never as raw dicts. They are not records: no key, never reused by
``run``, and the record readers skip their folders (``records.record_files``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import types
import typing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from urbanln_bench import HARNESS_VERSION
from urbanln_bench.cache import atomic_write_text
from urbanln_bench.paths import contained
from urbanln_bench.records import (
    CAPTIONS_FOLDER,
    DIGEST_FIELD,
    DIGEST_PREFIX,
    PROFILES_FOLDER,
    CorruptRecordError,
    TamperedRecordError,
    is_measurement_file,
    record_digest,
    record_text,
)

MEASUREMENT_SCHEMA = 1
PROFILE_KIND = "profile"
FIDELITY_KIND = "caption-fidelity"
RANDOM_WEIGHTS = ("random weights: every architecture is built untrained (from scratch); weights change neither "
                  "the parameter counts nor the speed")
SIMULATED_CAPTIONS = "synthetic twin, simulated captioners: fidelity scored against the twin's scene graphs"
# the pipeline's stages in the order captions pass through them (report.fidelity_report names them so)
STAGE_ORDER = ("raw", "refined", "selected (consensus)", "selected (random)")


@dataclass(frozen=True)
class Machine:
    """The machine a profile was measured on: its speed column means nothing without it."""

    cpu: str  # CPU model (/proc/cpuinfo "model name", else platform)
    cores: int  # logical cores (os.cpu_count)
    threads: int  # torch intra-op threads used
    platform: str
    python: str
    torch: str
    device: str  # the device name: the CPU model for cpu, the GPU's name for cuda

    @property
    def slug(self) -> str:
        """A folder name for the machine: its device name and core count, path-safe."""
        name = re.sub(r"\((?:R|TM|tm|r)\)", "", self.device)
        name = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"
        return f"{name}-{self.cores}c"[:120]

    @property
    def label(self) -> str:
        """How headings and tables name the machine."""
        return (f"{self.device}, {self.cores} cores ({self.threads} torch threads), torch {self.torch}"
                .replace(":", " "))  # a figure's heading ends at its caption's first colon


def cpu_model() -> str:
    """This machine's CPU model: /proc/cpuinfo's "model name" on Linux, platform's words elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")) and ":" in line:
                return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def this_machine(device: str = "cpu") -> Machine:
    """The machine running this process, with ``device``'s name."""
    import torch

    cpu = cpu_model()
    name = cpu
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device))
    elif device != "cpu":
        name = f"{device} ({cpu})"
    return Machine(cpu=cpu, cores=os.cpu_count() or 1, threads=torch.get_num_threads(),
                   platform=platform.platform(terse=True), python=platform.python_version(),
                   torch=str(torch.__version__), device=name)


@dataclass(frozen=True)
class MethodProfile:
    """One method's row of ``profile``: counts are None for a method without a neural encoder."""

    method: str
    display_name: str
    input_size: int
    total: int | None
    trainable: int | None
    images_per_second: float | None
    note: str = ""


@dataclass(frozen=True)
class ProfileRecord:
    """``profile --save``'s stored result: one machine, profile and device, every method profiled."""

    machine: Machine
    profile: str
    device: str
    batch_size: int
    batches: int
    methods: tuple[MethodProfile, ...]
    weights: str = RANDOM_WEIGHTS
    harness_version: str = HARNESS_VERSION
    git_revision: str = "unknown"
    kind: str = PROFILE_KIND
    schema: int = MEASUREMENT_SCHEMA

    def path(self, results: Path) -> Path:
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{self.profile}_{self.device}")
        return contained(results / PROFILES_FOLDER / self.machine.slug / f"{name}.json", results, "profile record")


@dataclass(frozen=True)
class StageFidelity:
    """One stage of the caption pipeline, scored against the twin's scene graphs (captions/report.py)."""

    stage: str
    captions: int
    object_precision: float  # 1 − hallucination rate
    object_recall: float
    clip_tokens: float  # mean length in CLIP tokens


@dataclass(frozen=True)
class FidelityRecord:
    """``captions report --save``'s stored result: one city, imagery and caption set."""

    city: str
    imagery: str
    source: str  # synthetic (the report needs scene graphs)
    scale: str
    manifest: str
    tag: str  # the data tag of the city's records (records.data_tag)
    caption_key: str  # the caption set's key (captions/pipeline.pipeline_key)
    settings: dict[str, Any]  # the pipeline's settings (PipelineConfig), as the caption set's config.json has them
    versions: dict[str, str]  # captioner and pipeline versions
    stages: tuple[StageFidelity, ...]
    phrases: dict[str, Any]  # phrases the refinement judged and the share it kept
    label: str = SIMULATED_CAPTIONS
    harness_version: str = HARNESS_VERSION
    kind: str = FIDELITY_KIND
    schema: int = MEASUREMENT_SCHEMA

    def path(self, results: Path) -> Path:
        return contained(results / self.tag / self.city / CAPTIONS_FOLDER / f"fidelity_{self.imagery}.json", results,
                         "caption fidelity record")


Measurement = ProfileRecord | FidelityRecord
KINDS: dict[str, type] = {PROFILE_KIND: ProfileRecord, FIDELITY_KIND: FidelityRecord}


def measurement_json(measurement: Measurement) -> dict[str, Any]:
    """The content of a stored measurement as a JSON object (lists for tuples, no digest)."""
    return json.loads(json.dumps(asdict(measurement)))


def write_measurement(results: Path, measurement: Measurement) -> Path:
    """Write ``measurement`` atomically into the store, sealed with its content digest; returns its path."""
    data = measurement_json(measurement)
    data[DIGEST_FIELD] = record_digest(data)
    path = measurement.path(results)
    atomic_write_text(path, record_text(data))
    return path


def load_measurement(path: Path) -> Measurement:
    """Read and verify a stored measurement: fields and types named when wrong, the digest checked after them."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise CorruptRecordError(f"{path}: corrupted measurement file (not JSON: {exc}); delete it and make it "
                                 "again") from None
    except OSError as exc:
        raise CorruptRecordError(f"{path}: unreadable measurement file: {exc}") from exc
    if not isinstance(data, dict) or data.get("kind") not in KINDS:
        raise CorruptRecordError(f"{path}: not a stored measurement (field 'kind' must be one of "
                                 f"{', '.join(KINDS)}); delete it or move it out of the result store")
    schema = data.get("schema")
    if isinstance(schema, bool) or not isinstance(schema, int) or schema > MEASUREMENT_SCHEMA:
        raise CorruptRecordError(f"{path}: measurement schema {schema!r} is not one this urbanln-bench reads "
                                 f"(at most {MEASUREMENT_SCHEMA}); upgrade urbanln-bench")
    body = {k: v for k, v in data.items() if k != DIGEST_FIELD}
    measurement = _build(KINDS[data["kind"]], body, "", str(path))
    stored = data.get(DIGEST_FIELD)
    remake = _remake_command(measurement)
    if stored is None:
        raise CorruptRecordError(f"{path}: unsealed measurement (no content digest): nothing shows its numbers are "
                                 f"what a run wrote; make it again with `{remake}`")
    if not isinstance(stored, str) or not stored.startswith(DIGEST_PREFIX):
        raise CorruptRecordError(f"{path}: corrupted measurement (field '{DIGEST_FIELD}' must be "
                                 f"'{DIGEST_PREFIX}<hex>', got {stored!r:.80})")
    if stored != record_digest(data):
        raise TamperedRecordError(f"{path}: the measurement's content does not match its digest: it was edited "
                                  "after it was written (numbers changed by hand?). Restore it (git checkout) or "
                                  f"make it again with `{remake}`")
    return measurement


def _remake_command(measurement: Measurement) -> str:
    if isinstance(measurement, ProfileRecord):
        return (f"urbanln-bench profile --profile {measurement.profile} --device {measurement.device} --save "
                "on that machine")
    return (f"urbanln-bench captions report --city {measurement.city} --scale {measurement.scale} "
            f"--imagery {measurement.imagery} --save")


def _build(cls: type, value: Any, where: str, source: str) -> Any:
    """``cls`` from its JSON object, each field present and of its type, or an error naming the field."""
    fail = f"{source}: corrupted measurement"
    if not isinstance(value, dict):
        raise CorruptRecordError(f"{fail} (field '{where or 'top level'}' must be an object)")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise CorruptRecordError(f"{fail} (unknown field '{where}{unknown[0]}')")
    kwargs = {}
    for name, spec in fields.items():
        if name not in value:
            if spec.default is dataclasses.MISSING:
                raise CorruptRecordError(f"{fail} (field '{where}{name}' missing)")
            continue
        kwargs[name] = _value(hints[name], value[name], f"{where}{name}", source)
    return cls(**kwargs)


def _value(kind: Any, item: Any, where: str, source: str) -> Any:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if dataclasses.is_dataclass(kind):
        return _build(kind, item, where + ".", source)
    if origin is tuple:
        if not isinstance(item, list):
            raise CorruptRecordError(f"{source}: corrupted measurement (field '{where}' must be a list)")
        return tuple(_value(args[0], entry, f"{where}[{i}]", source) for i, entry in enumerate(item))
    options = args if origin in (typing.Union, types.UnionType) else (kind,)
    for option in options:
        if option is type(None) and item is None:
            return None
        if option is float and isinstance(item, int | float) and not isinstance(item, bool):
            return item
        if option is int and isinstance(item, int) and not isinstance(item, bool):
            return item
        if option is str and isinstance(item, str):
            return item
        if typing.get_origin(option) is dict and isinstance(item, dict):
            return item
    names = " or ".join({type(None): "null", float: "a number", int: "an integer", str: "a string"}.get(
        o, "an object") for o in options)
    raise CorruptRecordError(f"{source}: corrupted measurement (field '{where}' must be {names}, got "
                             f"{type(item).__name__} {item!r:.60})")


def measurement_files(results: Path) -> list[Path]:
    """The stored measurement files of a store, sorted."""
    if not results.is_dir():
        return []
    return [p for p in sorted(results.rglob("*.json"))
            if not p.name.startswith(".") and is_measurement_file(p, results)]


def iter_measurements(results: Path, *, skip_corrupt: bool = False):
    """(path, measurement) for every stored measurement of ``results``; a bad file raises, or with
    ``skip_corrupt`` is left out (``measurement_problems`` names it)."""
    for path in measurement_files(results):
        try:
            yield path, load_measurement(path)
        except CorruptRecordError:
            if not skip_corrupt:
                raise


def measurement_problems(results: Path) -> list[str]:
    """One message per stored measurement that cannot be trusted (corrupt, unsealed or edited)."""
    problems = []
    for path in measurement_files(results):
        try:
            load_measurement(path)
        except CorruptRecordError as exc:
            problems.append(str(exc))
    return problems


def profile_record(rows: list[dict[str, Any]], *, profile: str, device: str, batch_size: int, batches: int,
                   machine: Machine | None = None) -> ProfileRecord:
    """The stored form of ``profiling.profile_methods``'s rows, with this machine named."""
    from urbanln_bench.records import git_revision

    methods = tuple(MethodProfile(method=r["method"], display_name=r["display_name"], input_size=int(r["input_size"]),
                                  total=r["total"], trainable=r["trainable"],
                                  images_per_second=r["images_per_second"], note=r.get("note") or "")
                    for r in rows)
    return ProfileRecord(machine=machine or this_machine(device), profile=profile, device=device,
                         batch_size=batch_size, batches=batches, methods=methods, git_revision=git_revision())


def fidelity_record(report: Any, data: Any, config: Any, scale: str) -> FidelityRecord:
    """The stored form of a ``captions.report.FidelityReport`` on ``data`` (a synthetic twin) at ``scale``:
    the numbers and the caption set's identity; nothing of this machine (no folder, no seconds)."""
    from urbanln_bench.captions.versions import CAPTIONER_VERSION, PIPELINE_VERSION
    from urbanln_bench.records import data_tag

    stages = tuple(StageFidelity(row.stage, row.n_captions, row.object_precision, row.object_recall, row.clip_tokens)
                   for row in report.rows)
    settings = json.loads(json.dumps(asdict(config)))
    return FidelityRecord(city=report.city, imagery=report.imagery, source=data.source, scale=scale,
                          manifest=data.manifest_hash, tag=data_tag(data.source, scale, data.manifest_hash),
                          caption_key=report.key, settings=settings,
                          versions={"captioner": str(CAPTIONER_VERSION), "pipeline": str(PIPELINE_VERSION)},
                          stages=stages, phrases=dict(report.phrases))


def stage_rank(stage: str) -> tuple[int, str]:
    """Sort key of a stage name: the pipeline's order, unknown stages last."""
    return (STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER), stage)
