"""The case study (the paper's Figure 6): a method's region embeddings of one city and imagery, projected
and clustered, sealed into one small artifact of the result store so the leaderboard can draw it from
the store alone (``urbanln-bench case-study``; docs/figures.md).

Records hold metrics and test predictions, not embeddings, so the figure needs its own artifact. It
is made from the embeddings ``run`` probes (``runner.compute_embeddings``: the same cache entry, fitted
once), and written next to the method's records as ``case_study_<imagery>.json``:

- provenance as a record has it: a key built with ``records.record_key`` from the same identity inputs
  (method identity, data manifest, fit city and fit inputs) plus the case study's own settings and
  ``CASE_STUDY_VERSION``, the data tag, profile, harness version, git revision and a content digest
  (``records.record_digest``), verified whenever the artifact is read;
- per region: id, grid row/col (or lat/lon), PC1, PC2, cluster, the task's raw value and ln(y+1);
- per cluster: size, mean and median of the task, and the first street view (or satellite tile) of the
  regions nearest its centroid as small PNG thumbnails, so the figure needs nothing outside the store.

Floats are rounded to ``DIGITS`` significant digits: same inputs, same bytes. The store's readers of
records skip these files (``records.is_record_file``).
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from urbanln_bench import HARNESS_VERSION
from urbanln_bench.errors import UserError
from urbanln_bench.records import (
    CASE_STUDY_PREFIX,
    DIGEST_FIELD,
    DIGEST_PREFIX,
    CorruptRecordError,
    TamperedRecordError,
    data_tag,
    git_revision,
    record_digest,
    record_key,
)

CASE_STUDY_SCHEMA = 1
CASE_STUDY_VERSION = "1"  # bump when the same embeddings would give another artifact (projection, clustering, thumbnails)
DIGITS = 5  # significant digits of every stored float
DEFAULT_CLUSTERS = 3  # the paper's Figure 6
SAMPLES_PER_CLUSTER = 3
THUMBNAIL_PX = 64
KMEANS_SEED = 0
KMEANS_INIT = 10


class CorruptCaseStudyError(CorruptRecordError):
    """A case-study artifact of the result store that cannot be read."""


class TamperedCaseStudyError(CorruptCaseStudyError, TamperedRecordError):
    """A case-study artifact whose content no longer matches its digest (edited after it was written)."""


@dataclass(frozen=True)
class CaseStudyOptions:
    method: str
    city: str | None = None
    city_file: Path | None = None
    imagery: str = "SV"
    task: str = "Pop"
    clusters: int = DEFAULT_CLUSTERS
    scale: str = "small"
    profile: str = "cpu"
    device: str = "cpu"
    results_dir: Path = Path("results")
    data_root: Path | None = None
    settings: tuple[tuple[str, str], ...] = ()
    overwrite: str = "only-missing"


@dataclass(frozen=True)
class CaseStudy:
    """A case-study artifact as read back (``load_case_study``): the JSON object and where it lies."""

    path: Path
    data: dict[str, Any]

    @property
    def city(self) -> str:
        return self.data["city"]

    @property
    def tag(self) -> str:
        return self.data["data"]["tag"]


def case_study_path(results: Path, tag: str, city: str, slug: str, imagery: str) -> Path:
    from urbanln_bench.paths import contained

    return contained(results / tag / city / slug / f"{CASE_STUDY_PREFIX}{imagery}.json", results, "case study")


def rounded(value: float) -> float | None:
    """``value`` to ``DIGITS`` significant digits (None for NaN): small files, the same bytes everywhere the
    embeddings agree to that precision."""
    value = float(value)
    if not math.isfinite(value):
        return None
    return float(f"{value:.{DIGITS}g}")


def project(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Standardise each dimension (constant ones left at 0), then PCA to two components by SVD.

    Returns (standardised embedding, (n, 2) scores, explained-variance share of PC1 and PC2). Each
    component's sign is fixed so its largest loading is positive (as scikit-learn's ``svd_flip``), so the
    picture does not flip between runs."""
    x = np.asarray(vectors, dtype=np.float64)
    std = x.std(axis=0)
    z = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    _, singular, components = np.linalg.svd(z, full_matrices=False)
    components = components[:2]
    if components.shape[0] < 2:  # a one-dimensional embedding: PC2 is 0
        components = np.vstack([components, np.zeros_like(components)])
        singular = np.concatenate([singular, [0.0]])
    signs = np.sign(components[np.arange(2), np.argmax(np.abs(components), axis=1)])
    components = components * np.where(signs == 0, 1.0, signs)[:, None]
    total = float((singular**2).sum())
    explained = [float(s**2 / total) if total > 0 else 0.0 for s in singular[:2]]
    return z, z @ components.T, explained


def cluster(z: np.ndarray, k: int, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """K-means with ``k`` clusters on the full standardised embedding (the paper clusters the embeddings;
    the PCA plane only draws them, and two components hold a small share of the variance of most
    embeddings), fixed ``random_state`` and ``n_init``. Clusters are numbered by their mean PC1, so the
    numbering does not depend on k-means' arbitrary label order. Returns (labels, centroids)."""
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=k, n_init=KMEANS_INIT, random_state=KMEANS_SEED).fit(z)
    raw = model.labels_
    order = sorted(range(k), key=lambda c: (float(scores[raw == c, 0].mean()), c))
    relabel = np.empty(k, dtype=int)
    relabel[order] = np.arange(k)
    return relabel[raw], model.cluster_centers_[order]


def thumbnail_png(image: np.ndarray, size: int = THUMBNAIL_PX) -> bytes:
    """A small PNG of an image (bilinear resize, no metadata): deterministic bytes for one Pillow."""
    from PIL import Image

    picture = Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB").resize((size, size),
                                                                                      Image.Resampling.BILINEAR)
    out = io.BytesIO()
    picture.save(out, format="PNG", optimize=False, compress_level=9)
    return out.getvalue()


def _check_static(options: CaseStudyOptions, *, writes: bool = True) -> None:
    """What can be checked without data: the options, before any work."""
    from urbanln_bench.checks import check_device, check_output_dir
    from urbanln_bench.profiles import check_profile
    from urbanln_bench.records import check_overwrite
    from urbanln_bench.synth.scales import get_scale

    if isinstance(options.clusters, bool) or not isinstance(options.clusters, int) or options.clusters < 2:
        raise UserError(f"--clusters must be an integer of at least 2, got {options.clusters!r} (the paper uses 3)")
    if options.imagery not in ("SV", "SI"):
        raise UserError(f"--imagery must be SV or SI for a case study, got '{options.imagery}'")
    check_overwrite(options.overwrite)
    check_profile(options.profile)
    get_scale(options.scale, "--scale")
    check_device(options.device)
    if writes:
        check_output_dir(options.results_dir)


@dataclass(frozen=True)
class _Prepared:
    """A case study's inputs, checked, and where and under which key its artifact lies."""

    run_options: Any
    method: Any
    data: Any
    slug: str
    tag: str
    path: Path
    key: str


def _prepare(options: CaseStudyOptions, progress: Callable | None, *, writes: bool = True) -> _Prepared:
    """Check every input (unknown method or task, a city without the imagery, more clusters than regions with
    it), open the data (rendering a twin once) and build the artifact's key, as ``run`` builds a record's: no
    fit, nothing written."""
    from urbanln_bench.data.sources import open_city
    from urbanln_bench.fit_inputs import fit_input_identities
    from urbanln_bench.registry import suggest
    from urbanln_bench.runner import RunOptions, make_method, missing_aux, select_cells
    from urbanln_bench.specs import get_city

    _check_static(options, writes=writes)
    run_options = RunOptions(method=options.method, city=options.city, city_file=options.city_file,
                             scale=options.scale, profile=options.profile, device=options.device,
                             results_dir=options.results_dir, data_root=options.data_root,
                             settings=dict(options.settings))
    spec = get_city(options.city, options.city_file)
    if options.imagery not in spec.imagery:
        raise UserError(f"city {spec.name} has no {options.imagery} imagery (its imagery: {', '.join(spec.imagery)}); "
                        "a case study needs it")
    if options.task not in spec.tasks:
        raise UserError(f"city {spec.name} has no task '{options.task}'{suggest(options.task, list(spec.tasks))}; "
                        f"its tasks: {', '.join(spec.tasks)}")
    method = make_method(run_options)
    slug = method.variant_slug()
    select_cells(spec, method, [options.task], [options.imagery])  # the method runs on this imagery
    data = open_city(spec, scale=options.scale, data_root=options.data_root, progress_factory=(
        (lambda total: progress(f"rendering {spec.name} twin ({options.scale})", total)) if progress else None))
    missing = missing_aux(method.meta, data)
    if missing:
        raise UserError(f"method '{method.meta.name}' needs {' and '.join(missing)}, which {data.name}'s data lacks")
    with_imagery = data.regions_with_streetview() if options.imagery == "SV" else data.satellite_ids()
    if options.clusters > len(with_imagery):
        raise UserError(f"--clusters {options.clusters} is more than the {len(with_imagery)} regions of {data.name} "
                        f"with {options.imagery} imagery; ask for at most {len(with_imagery)}")
    tag = data_tag(data.source, options.scale, data.manifest_hash)
    key = record_key({"artifact": "case-study", "version": CASE_STUDY_VERSION, "method": method.identity(),
                      "city": spec.name, "imagery": options.imagery, "task": options.task,
                      "data": data.manifest_hash, "fit_city": data.name, "clusters": options.clusters,
                      "profile": options.profile, **fit_input_identities(method, options.imagery, options.profile)})
    return _Prepared(run_options, method, data, slug, tag,
                     case_study_path(options.results_dir, tag, spec.name, slug, options.imagery), key)


def make_case_study(options: CaseStudyOptions, progress: Callable | None = None,
                    log: Callable[[str], None] = lambda m: None) -> tuple[Path, bool]:
    """Make (or reuse, when stored under the same key) the case-study artifact. Returns (path, reused).

    Every input is checked before the method is fitted (``_prepare``). Nothing is written unless the whole
    artifact is made; the embeddings are ``run``'s, fitted once and cached (``runner.compute_embeddings``)."""
    from urbanln_bench.runner import compute_embeddings

    prepared = _prepare(options, progress)
    path, key, data = prepared.path, prepared.key, prepared.data
    if path.exists() and options.overwrite != "always":
        stored = load_case_study(path)
        if stored.data["key"] == key:
            return path, True
        if options.overwrite == "never":
            raise UserError(f"{path}: a case study with another key exists and --overwrite never forbids replacing "
                            "it; use --overwrite only-missing or always")
    embeddings, cached = compute_embeddings(prepared.method, data, options.imagery, prepared.run_options, progress)
    log(f"{'reused cached' if cached else 'computed'} {options.imagery} embeddings of {data.name}: "
        f"{len(embeddings.region_ids)} regions × {embeddings.vectors.shape[1]}")
    body = case_study_body(embeddings.region_ids, embeddings.vectors, data, options, key=key, tag=prepared.tag,
                           method=prepared.method, slug=prepared.slug)
    write_case_study(path, body)
    return path, False


def replay_options(study: CaseStudy, results: Path) -> CaseStudyOptions:
    """The options that made a stored artifact (``leaderboard --verify-keys`` replays its key)."""
    from urbanln_bench.verify import setting_text

    data = study.data
    return CaseStudyOptions(method=data["method"]["name"], city=data["city"], imagery=data["imagery"],
                            task=data["task"], clusters=len(data["clusters"]), scale=data["data"]["scale"],
                            profile=data["profile"], results_dir=results, settings=tuple(sorted(
                                (k, setting_text(v)) for k, v in (data["method"].get("overrides") or {}).items())))


def stale_case_studies(results: Path, log: Callable[[str], None] = lambda m: None) -> list[str]:
    """One line per stored twin case study whose key the current code would not compute (made by other code,
    data or settings): replayed like records, rendering a missing twin, fitting nothing."""
    stale = []
    for study in iter_case_studies(results):
        if not study.data["data"].get("synthetic"):
            log(f"{study.path}: real data, not replayed (needs its --data-root)")
            continue
        prepared = _prepare(replay_options(study, results), None, writes=False)
        if prepared.key != study.data["key"]:
            stale.append(f"{study.path}: the current code computes another key for this case study (stale); make "
                         "it again with `urbanln-bench case-study ... --overwrite always`")
    return stale


def case_study_body(region_ids: list[str], vectors: np.ndarray, data, options: CaseStudyOptions, *, key: str,
                    tag: str, method, slug: str) -> dict[str, Any]:
    """The artifact's JSON object (without its digest) from a city's embeddings."""
    z, scores, explained = project(vectors)
    labels, centroids = cluster(z, options.clusters, scores)
    position = data.regions.index()
    at = [position[rid] for rid in region_ids]
    raw = np.asarray(data.indicator(options.task), dtype=np.float64)[at]
    regions = data.regions
    use_grid = bool(np.isfinite(regions.row[at]).all() and np.isfinite(regions.col[at]).all())
    table: dict[str, list] = {"id": list(region_ids)}
    if use_grid:
        table["row"] = [int(regions.row[i]) for i in at]
        table["col"] = [int(regions.col[i]) for i in at]
    else:
        table["lat"] = [rounded(regions.lat[i]) for i in at]
        table["lon"] = [rounded(regions.lon[i]) for i in at]
    table["pc1"] = [rounded(v) for v in scores[:, 0]]
    table["pc2"] = [rounded(v) for v in scores[:, 1]]
    table["cluster"] = [int(c) for c in labels]
    table["y"] = [rounded(v) for v in raw]
    table["ln_y"] = [rounded(math.log1p(v)) if np.isfinite(v) and v > -1 else None for v in raw]
    clusters = []
    for c in range(options.clusters):
        members = np.flatnonzero(labels == c)
        values = raw[members][np.isfinite(raw[members])]
        distance = np.linalg.norm(z[members] - centroids[c], axis=1)
        nearest = sorted(range(len(members)), key=lambda i: (float(distance[i]), region_ids[members[i]]))
        samples = []
        for i in nearest[:SAMPLES_PER_CLUSTER]:
            rid = region_ids[members[i]]
            image_id = data.streetview_ids(rid)[0] if options.imagery == "SV" else rid
            samples.append({"region": rid, "image": image_id,
                            "png": base64.b64encode(thumbnail_png(data.load_image(image_id))).decode("ascii")})
        clusters.append({"cluster": c, "size": int(len(members)), "labelled": int(len(values)),
                         "mean_y": rounded(values.mean()) if len(values) else None,
                         "median_y": rounded(np.median(values)) if len(values) else None,
                         "mean_ln_y": rounded(np.log1p(values).mean()) if len(values) else None,
                         "mean_pc1": rounded(scores[members, 0].mean()), "mean_pc2": rounded(scores[members, 1].mean()),
                         "samples": samples})
    meta = method.meta
    return {
        "schema": CASE_STUDY_SCHEMA, "kind": "case-study", "version": CASE_STUDY_VERSION, "key": key,
        "method": {"name": meta.name, "display_name": meta.display_name, "variant": method.variant_label(),
                   "slug": slug, "version": meta.version, "overrides": method.overrides,
                   "weight_source": method.weight_source()},
        "city": data.name, "imagery": options.imagery, "task": options.task, "profile": options.profile,
        "data": {"source": data.source, "synthetic": data.source == "synthetic", "manifest": data.manifest_hash,
                 "scale": options.scale if data.source == "synthetic" else None, "tag": tag,
                 "label": "synthetic twin, not real data" if data.source == "synthetic" else "real data"},
        "embedding": {"regions": len(region_ids), "dim": int(vectors.shape[1]), "standardised": True},
        "pca": {"explained_variance": [rounded(v) for v in explained]},
        "kmeans": {"clusters": options.clusters, "space": "standardised embedding (all dimensions)",
                   "n_init": KMEANS_INIT, "random_state": KMEANS_SEED, "numbered_by": "mean PC1"},
        "thumbnails": {"px": THUMBNAIL_PX, "per_cluster": SAMPLES_PER_CLUSTER,
                       "chosen": "regions nearest the cluster centroid; their first image"},
        "regions": table, "clusters": clusters,
        "harness_version": HARNESS_VERSION, "git_revision": git_revision(),
    }


def case_study_text(data: dict[str, Any]) -> str:
    """The file's text: compact JSON with sorted keys (one line per file keeps it small), then a newline."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"


def write_case_study(path: Path, body: dict[str, Any]) -> None:
    """Write the artifact atomically, sealed with the digest of its content (as ``records.write_record``)."""
    from urbanln_bench.cache import atomic_write_text

    data = {k: v for k, v in body.items() if k != DIGEST_FIELD}
    data[DIGEST_FIELD] = record_digest(data)
    atomic_write_text(path, case_study_text(data))


REQUIRED = ("schema", "key", "method", "city", "imagery", "task", "data", "pca", "kmeans", "regions", "clusters",
            DIGEST_FIELD)
COLUMNS = ("id", "pc1", "pc2", "cluster", "y", "ln_y")


def load_case_study(path: Path) -> CaseStudy:
    """Read and verify an artifact: its fields, then its digest (a file edited by hand is refused)."""
    fix = "delete it or make it again (`urbanln-bench case-study ... --overwrite always`)"
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CorruptCaseStudyError(f"{path}: corrupted case study (not JSON: {exc}); {fix}") from None
    if not isinstance(data, dict):
        raise CorruptCaseStudyError(f"{path}: corrupted case study (not a JSON object); {fix}")
    if isinstance(data.get("schema"), int) and data["schema"] > CASE_STUDY_SCHEMA:
        raise CorruptCaseStudyError(f"{path}: case-study schema {data['schema']} is newer than this urbanln-bench "
                                    f"reads ({CASE_STUDY_SCHEMA}); upgrade urbanln-bench")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise CorruptCaseStudyError(f"{path}: corrupted case study (missing {', '.join(missing)}); {fix}")
    _check_shape(path, data, fix)
    stored = data[DIGEST_FIELD]
    if not isinstance(stored, str) or not stored.startswith(DIGEST_PREFIX) or stored != record_digest(data):
        raise TamperedCaseStudyError(f"{path}: the case study's content does not match its digest: it was edited after "
                                     f"it was written. Restore it (git checkout) or make it again (`urbanln-bench "
                                     "case-study ... --overwrite always`)")
    return CaseStudy(path, data)


def _check_shape(path: Path, data: dict[str, Any], fix: str) -> None:
    """The fields the leaderboard reads, of the right kinds and lengths (a broken field is named)."""
    def fail(what: str) -> None:
        raise CorruptCaseStudyError(f"{path}: corrupted case study ({what}); {fix}")

    regions, clusters = data["regions"], data["clusters"]
    if not isinstance(regions, dict) or not all(isinstance(regions.get(c), list) for c in COLUMNS):
        fail(f"field 'regions' must hold the lists {', '.join(COLUMNS)}")
    n = len(regions["id"])
    if any(len(regions[c]) != n for c in regions if isinstance(regions[c], list)):
        fail("the lists of 'regions' differ in length")
    if not (("row" in regions and "col" in regions) or ("lat" in regions and "lon" in regions)):
        fail("field 'regions' needs row and col, or lat and lon")
    if not isinstance(clusters, list) or len(clusters) < 2 or not all(isinstance(c, dict) for c in clusters):
        fail("field 'clusters' must be a list of at least two objects")
    if any(not isinstance(c, int) or isinstance(c, bool) or not 0 <= c < len(clusters) for c in regions["cluster"]):
        fail(f"'regions.cluster' must hold integers 0..{len(clusters) - 1}")
    explained = data["pca"].get("explained_variance") if isinstance(data["pca"], dict) else None
    if not isinstance(explained, list) or len(explained) != 2:
        fail("field 'pca.explained_variance' must be a list of two numbers")
    for name in ("data", "method"):
        if not isinstance(data[name], dict):
            fail(f"field '{name}' must be an object")
    if not isinstance(data["data"].get("tag"), str):
        fail("field 'data.tag' missing")


def case_study_files(results: Path) -> list[Path]:
    """The case-study artifacts of a store, sorted by path."""
    return [p for p in sorted(results.rglob(f"{CASE_STUDY_PREFIX}*.json")) if not p.name.startswith(".")]


def iter_case_studies(results: Path, *, skip_corrupt: bool = False) -> Iterator[CaseStudy]:
    """Every artifact of a store; one that cannot be read raises, or with ``skip_corrupt`` is left out
    (``seal.corrupt_store`` names it)."""
    for path in case_study_files(results):
        try:
            yield load_case_study(path)
        except CorruptCaseStudyError:
            if not skip_corrupt:
                raise


def decode_thumbnail(png: bytes) -> np.ndarray:
    """A thumbnail's PNG bytes (base64-decoded from the artifact) as a uint8 (H, W, 3) array."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as picture:
        return np.asarray(picture.convert("RGB"))
