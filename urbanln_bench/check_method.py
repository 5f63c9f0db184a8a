"""``urbanln-bench check-method``: does a method (built-in or plugin) keep the harness's contract?

Run on a city's ``tiny`` twin with the ``smoke`` backbone profile (``method.run_profile == "smoke"``: a
slow method should pretrain briefly there), once per imagery the method runs on:

- **output**: ``fit`` and the sealed embed run; one finite row per region with that imagery, one width
  (``embed.embed_city`` enforces rows, width and finiteness; this check also counts the regions);
- **embed determinism**: the fitted encoder embeds the city twice → identical vectors;
- **batch-size invariance**: embedding with batch size 7 and 64 → the same vectors (catches batch
  statistics, e.g. a BatchNorm left in training mode); not applicable to per-region methods;
- **fit determinism**: a second ``fit`` from the same seed → identical embeddings;
- **labels unseen**: that second ``fit`` runs on a copy of the twin whose indicator table (and, unless
  the method declares them in ``MethodMeta.truth`` as the oracle does, its true latents) is replaced by
  random numbers; the embeddings must not change.
  Each ``fit`` runs under a private cache root (``URBANLN_BENCH_CACHE``) in which the twin under check —
  wherever a method looks for it: the view's image index, ``ensure_twin`` by name, the harness's own
  objects — *is* that copy, and in which nothing the method cached during the other fit is visible.
  Shared with the user's cache: the backbones and calibration folders (label-free: surrogates and
  thresholds from the pretraining world) and the *other* twins (the pretraining world's, say).

When the second fit differs, a third one on the true labels tells non-determinism (it differs too)
from label access (it does not).
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from urbanln_bench.data import layout
from urbanln_bench.errors import UserError

CHECK_SCALE = "tiny"
CHECK_PROFILE = "smoke"
SMALL_BATCH, LARGE_BATCH = 7, 64
DETERMINISM_RTOL = 1e-5  # of the largest |value|: same computation twice
BATCH_RTOL = 1e-4  # of the largest |value|: the same images in other batches (float summation order)
SHARED_CACHES = ("backbones", "calibration")  # label-free: trained on the pretraining world only
CHECKS = ("load", "output", "embed determinism", "batch-size invariance", "fit determinism", "labels unseen")
PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"


@dataclass
class CheckResult:
    check: str
    imagery: str  # "" for checks of the method as a whole
    status: str  # PASS, FAIL or SKIP
    detail: str


@dataclass
class MethodReport:
    method: str
    city: str
    results: list[CheckResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(r.status != FAIL for r in self.results)

    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == FAIL]

    def as_dict(self) -> dict:
        return {"method": self.method, "city": self.city, "ok": self.ok, "seconds": round(self.seconds, 1),
                "results": [asdict(r) for r in self.results]}


class _Run:
    """One fit + embed of a fresh method instance (what ``urbanln-bench run`` does, uncached)."""

    def __init__(self, name: str, data, imagery: str, settings: dict[str, str]) -> None:
        from urbanln_bench.data.loader import UnlabelledCity
        from urbanln_bench.method import get_method
        from urbanln_bench.runner import RunOptions, compute_embeddings

        self.method = get_method(name)(settings)
        self.method.run_profile = CHECK_PROFILE
        self.data = data
        self.imagery = imagery
        seen: dict = {}
        fit = self.method.fit

        def recording_fit(city, imagery_, context):
            seen["city"], seen["context"] = city, context
            return fit(city, imagery_, context)

        self.method.fit = recording_fit  # type: ignore[method-assign]
        options = RunOptions(method=name, city=data.name, scale=CHECK_SCALE, profile=CHECK_PROFILE, device="cpu",
                             batch_size=LARGE_BATCH, settings=dict(settings))
        self.embeddings, _ = compute_embeddings(self.method, data, imagery, options, None)
        self.fit_input_unlabelled = isinstance(seen.get("city"), UnlabelledCity)
        self.fit_input_type = type(seen.get("city")).__name__
        self.context = seen["context"]

    def embed(self, batch_size: int):
        from urbanln_bench.embed import embed_city

        return embed_city(self.method, self.data, self.imagery, self.context, batch_size=batch_size)


def _compare(a, b, rtol: float) -> tuple[bool, str]:
    if list(a.region_ids) != list(b.region_ids):
        return False, "different regions"
    if a.vectors.shape != b.vectors.shape:
        return False, f"shapes {a.vectors.shape} and {b.vectors.shape}"
    scale = float(np.abs(a.vectors).max()) if a.vectors.size else 0.0
    diff = float(np.abs(a.vectors.astype(np.float64) - b.vectors).max()) if a.vectors.size else 0.0
    return diff <= rtol * max(scale, 1e-12), f"max |Δ| {diff:.3g} (largest |value| {scale:.3g})"


def _error(exc: BaseException) -> str:
    if isinstance(exc, UserError):
        return str(exc)
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    at = f" at {Path(where.filename).name}:{where.lineno}" if where else ""
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message[:400]}{' …' if len(message) > 400 else ''}{at}"


def _scramble_csv(path: Path, rng: np.random.Generator, draw: Callable[[np.random.Generator], float]) -> None:
    """Replace every non-empty value (all columns but the first, the region id) by a random number."""
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    out = [rows[0]]
    for row in rows[1:]:
        out.append([row[0]] + [v if v.strip() in ("", "nan", "NaN") else f"{draw(rng):.6g}" for v in row[1:]])
    with open(path, "w", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(out)


SCRAMBLED_FILES = frozenset({layout.INDICATORS, layout.LATENTS})


def scramble_labels(twin: Path, seed: int, latents: bool = True) -> None:
    """Indicators (and the twin's true latents) → random numbers, same missing pattern. The manifest is
    left as it was, so the data's identity — and everything a method may key on it — is unchanged:
    only the labels differ. Open the copy with ``CityData.open(..., exempt=SCRAMBLED_FILES)``: the
    manifest check would otherwise (rightly) call it stale."""

    rng = np.random.default_rng(seed)
    _scramble_csv(twin / layout.INDICATORS, rng, lambda r: float(r.lognormal(3.0, 1.5)))
    if latents and (twin / layout.LATENTS).exists():
        _scramble_csv(twin / layout.LATENTS, rng, lambda r: float(r.uniform(0.0, 1.0)))


def _promote(private: Path, shared: Path, skip: str) -> None:
    """Move twins generated under a private cache (the pretraining world, say) into the shared cache."""
    for entry in private.iterdir():
        if entry.is_symlink() or entry.name == skip or entry.name.startswith(".") or not entry.is_dir():
            continue
        if (entry / "manifest.json").exists() and not (shared / entry.name).exists():
            staging = shared / f".{entry.name}.promote-{os.getpid()}"
            shutil.copytree(entry, staging, symlinks=True)
            try:
                staging.rename(shared / entry.name)
            except OSError:  # another process promoted it first
                shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def private_cache(shared_root: Path, twin: Path, *, scramble: bool, latents: bool = True,
                  seed: int = 0) -> Iterator[Path]:
    """A throw-away cache root for one fit; yields the twin's folder inside it (scrambled labels or not)."""
    root = Path(tempfile.mkdtemp(prefix="urbanln-check-"))
    previous = os.environ.get("URBANLN_BENCH_CACHE")
    try:
        for name in SHARED_CACHES:
            (shared_root / name).mkdir(parents=True, exist_ok=True)
            (root / name).symlink_to(shared_root / name, target_is_directory=True)
        twins = root / "twins"
        twins.mkdir()
        for entry in twin.parent.iterdir():
            if entry.name != twin.name and not entry.name.startswith("."):
                (twins / entry.name).symlink_to(entry.resolve())
        mine = twins / twin.name
        if scramble:
            shutil.copytree(twin, mine, symlinks=True)
            scramble_labels(mine, seed, latents=latents)
        else:
            mine.symlink_to(twin.resolve(), target_is_directory=True)
        os.environ["URBANLN_BENCH_CACHE"] = str(root)
        try:
            yield mine
        finally:
            if previous is None:
                os.environ.pop("URBANLN_BENCH_CACHE", None)
            else:
                os.environ["URBANLN_BENCH_CACHE"] = previous
        _promote(twins, twin.parent, twin.name)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _regions_with(data, imagery: str) -> int:
    view = data.unlabelled()
    if imagery == "SI":
        return len(view.satellite_ids())
    if imagery == "SV":
        return sum(1 for rid in view.regions.ids if view.streetview_ids(rid))
    return len(view.regions.ids)


def _check_imagery(name: str, settings: dict[str, str], twin: Path, imagery: str, gets_latents: bool,
                   add: Callable[..., None]) -> None:
    from urbanln_bench.cache import cache_root
    from urbanln_bench.data.loader import CityData
    from urbanln_bench.method import Method

    shared = cache_root()
    not_run = "not run: the output check failed"
    with private_cache(shared, twin, scramble=False) as folder:
        data = CityData.open(folder)
        try:
            first = _Run(name, data, imagery, settings)
        except Exception as exc:  # noqa: BLE001 — any failure of a plugin is the check's finding
            add("output", imagery, FAIL, _error(exc))
            for check in CHECKS[2:]:
                add(check, imagery, SKIP, not_run)
            return
        vectors = first.embeddings.vectors
        expected = _regions_with(data, imagery)
        if vectors.shape[0] != expected or vectors.ndim != 2 or vectors.shape[1] < 1:
            add("output", imagery, FAIL, f"{vectors.shape[0]} rows for {expected} regions with {imagery} imagery "
                                         f"(shape {vectors.shape})")
        else:
            add("output", imagery, PASS, f"{expected} regions × {vectors.shape[1]}, finite")
        try:
            same, detail = _compare(first.embeddings, first.embed(LARGE_BATCH), DETERMINISM_RTOL)
            add("embed determinism", imagery, PASS if same else FAIL,
                ("identical twice: " if same else "the same encoder embedded the city differently twice: ") + detail)
        except Exception as exc:  # noqa: BLE001
            add("embed determinism", imagery, FAIL, _error(exc))
        per_region = imagery == "SV+SI" or type(first.method).encode_regions is not Method.encode_regions
        if per_region:
            add("batch-size invariance", imagery, SKIP, "encode_regions: the method embeds whole regions, no batches")
        else:
            try:
                same, detail = _compare(first.embeddings, first.embed(SMALL_BATCH), BATCH_RTOL)
                add("batch-size invariance", imagery, PASS if same else FAIL,
                    f"batch {SMALL_BATCH} vs {LARGE_BATCH}: " + detail
                    + ("" if same else "; an image's features must not depend on its batch (BatchNorm in train mode?)"))
            except Exception as exc:  # noqa: BLE001
                add("batch-size invariance", imagery, FAIL, _error(exc))
    unlabelled = f"fit got an {first.fit_input_type}" if first.fit_input_unlabelled else None
    if not first.fit_input_unlabelled:
        add("fit determinism", imagery, SKIP, "not run")
        add("labels unseen", imagery, FAIL, f"the harness handed fit a {first.fit_input_type}, not an UnlabelledCity")
        return
    what = "indicators" + ("" if gets_latents else " and true latents")
    with private_cache(shared, twin, scramble=True, latents=not gets_latents) as folder:
        try:
            scrambled = _Run(name, CityData.open(folder, exempt=SCRAMBLED_FILES), imagery, settings).embeddings
            same, detail = _compare(first.embeddings, scrambled, DETERMINISM_RTOL)
            changed = f"the embeddings change when the {what} are replaced by random numbers ({detail})"
        except Exception as exc:  # noqa: BLE001
            same, changed = False, f"fit with the {what} replaced by random numbers raised: {_error(exc)}"
    if same:
        add("fit determinism", imagery, PASS, "two fits from seed 0 gave identical embeddings: " + detail)
        add("labels unseen", imagery, PASS, f"{unlabelled}; identical embeddings with the {what} replaced by "
                                            "random numbers")
        return
    with private_cache(shared, twin, scramble=False) as folder:  # a third fit, on the true labels again
        try:
            again = _Run(name, CityData.open(folder), imagery, settings).embeddings
            same_again, detail_again = _compare(first.embeddings, again, DETERMINISM_RTOL)
            differs = f"two fits from seed 0 gave different embeddings ({detail_again})"
        except Exception as exc:  # noqa: BLE001
            same_again, differs = False, f"a second fit from seed 0 raised: {_error(exc)}"
    if same_again:
        add("fit determinism", imagery, PASS, "two fits on the true labels gave identical embeddings: " + detail_again)
        add("labels unseen", imagery, FAIL, f"{changed}: fit reads the labels")
    else:
        add("fit determinism", imagery, FAIL, f"{differs}; seed every random draw from context.seed and key "
                                              "every cache on everything that changes it")
        add("labels unseen", imagery, SKIP, "inconclusive: fit is not deterministic")


def check_method(name: str, city: str = "NY", imagery: list[str] | None = None,
                 settings: dict[str, str] | None = None, log: Callable[[str], None] | None = None,
                 strict_imagery: bool = True) -> MethodReport:
    """Run every check on ``name`` with ``settings`` (``--set``; see the module docstring). Raises only for
    the user's errors (an unknown method or imagery), never for a failure of the method.

    ``imagery`` limits the checks to those imageries; with ``strict_imagery=False`` (``--all``) it is a
    preference — a method that runs on none of them is checked on its own."""
    from urbanln_bench.method import get_method, method_names
    from urbanln_bench.specs import get_city
    from urbanln_bench.synth.twin import ensure_twin

    started = time.perf_counter()
    report = MethodReport(name, city)

    def add(check: str, imagery_: str, status: str, detail: str) -> None:
        report.results.append(CheckResult(check, imagery_, status, detail))
        if log:
            log(f"{name} {imagery_ or '-'} {check}: {status}")

    spec = get_city(city)
    if name not in method_names():
        get_method(name)  # an unknown name is the user's error: "did you mean ..."
    try:
        method = get_method(name)(settings or {})
        method.run_profile = CHECK_PROFILE
        source = method.weight_source()
        label = method.variant_label()
    except Exception as exc:  # noqa: BLE001
        add("load", "", FAIL, _error(exc))
        report.seconds = time.perf_counter() - started
        return report
    runnable = [i for i in method.meta.runnable_imagery() if i == "SV+SI" or i in spec.imagery]
    chosen = [i for i in runnable if not imagery or i in imagery]
    if imagery and strict_imagery:
        for requested in imagery:
            if requested not in runnable:
                raise UserError(f"method '{name}' runs on imagery {', '.join(runnable)}, not '{requested}'")
    chosen = chosen or runnable
    add("load", "", PASS, f"{label}; weights: {source}")
    twin = ensure_twin(spec, CHECK_SCALE)
    for one in chosen:
        _check_imagery(name, dict(settings or {}), twin, one, "latents" in method.meta.truth, add)
    report.seconds = time.perf_counter() - started
    return report
