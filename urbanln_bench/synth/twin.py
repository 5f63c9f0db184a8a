"""Write a city's synthetic twin into the native layout, once, in the cache (docs/twins.md).

The twin is fully determined by (city file, seed, scale) and the generator's own code: all of them
are in the cache key, so editing a city file, a task file or a renderer makes a new twin instead of
silently reusing a stale one. Every region draws from its own seeded generator, so regions can be
rendered in parallel and a ``tiny`` twin shows the same scenes as ``small``, only fewer and smaller.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from urbanln_bench import HARNESS_VERSION
from urbanln_bench.cache import atomic_directory, cache_root, config_hash, file_lock, note_build
from urbanln_bench.data import layout
from urbanln_bench.data.manifest import write_manifest
from urbanln_bench.errors import UserError
from urbanln_bench.paths import contained
from urbanln_bench.processes import worker_pool
from urbanln_bench.specs import CitySpec, get_task
from urbanln_bench.synth import libm
from urbanln_bench.synth.fields import city_grid, twin_params
from urbanln_bench.synth.indicators import indicator_model
from urbanln_bench.synth.latents import LATENT_NAMES
from urbanln_bench.synth.render_satellite import SATELLITE_RENDERER_VERSION
from urbanln_bench.synth.render_streetview import STREETVIEW_RENDERER_VERSION
from urbanln_bench.synth.scales import Scale, get_scale
from urbanln_bench.synth.style import city_style

Progress = Callable[[int], None]

# The twin generator's version: part of every twin key (docs/identity.md), with the two renderers'
# versions (SATELLITE_RENDERER_VERSION, STREETVIEW_RENDERER_VERSION). Bump it whenever what the generator
# itself writes changes (latents, indicators, aux tables, region choice, street-view counts, the layout);
# tests/test_twin_golden.py fails until you do, and until TWIN_GOLDEN names the new versions' digest.
TWIN_GENERATOR_VERSION = 1
# Digest of the NY twin at scale tiny (decoded pixels, scene graphs, tables) per
# (generator, satellite renderer, street-view renderer) version.
TWIN_GOLDEN = {(1, 1, 1): "e3bc4fd10d28ef54910c4f495b7d2fb0fa0c63a0931b021aac011c240e1614d9"}

# Sub-stream tags: every random draw of a region comes from default_rng([seed, TAG, row, col, ...]).
_STREAM_STREETVIEW_COUNT = 11
_STREAM_SATELLITE = 21
_STREAM_STREETVIEW = 22


def generator_identity() -> dict[str, str | int]:
    """What decides a twin's bytes besides its city file, seed and scale: the generator's version and
    the image library's (Pillow draws the shapes; pyproject.toml bounds it to versions that draw alike)."""
    import PIL

    return {"version": TWIN_GENERATOR_VERSION, "satellite_renderer": SATELLITE_RENDERER_VERSION,
            "streetview_renderer": STREETVIEW_RENDERER_VERSION, "pillow": PIL.__version__}


def twin_versions() -> tuple[int, int, int]:
    """(generator, satellite renderer, street-view renderer) versions: what TWIN_GOLDEN is keyed by."""
    return (TWIN_GENERATOR_VERSION, SATELLITE_RENDERER_VERSION, STREETVIEW_RENDERER_VERSION)


def twin_content_digest(root: Path) -> str:
    """sha256 over a twin's decoded pixels (not PNG bytes, which depend on the compressor), scene
    graphs, latents and tables: what the golden test pins for each generator version."""
    from PIL import Image

    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel in ("city.json", "manifest.json") or rel.startswith("captions/"):
            continue
        digest.update(rel.encode() + b"\0")
        if path.suffix == ".png":
            with Image.open(path) as image:
                digest.update(f"{image.mode}{image.size}".encode() + image.tobytes())
        else:
            digest.update(path.read_bytes())
    return digest.hexdigest()


def with_seed(spec: CitySpec, seed: int | None) -> CitySpec:
    """``spec`` with its twin drawn from another seed (``--twin-seed``)."""
    if seed is None or seed == twin_params(spec).seed:
        return spec
    return dataclasses.replace(spec, twin={**(spec.twin or {}), "seed": seed})


def check_twin_tables(spec: CitySpec) -> None:
    """Parse every table a twin of ``spec`` needs (the city's ``[geo]``, ``[twin]``, ``[style]``, each
    task's ``[twin]``), so a typo or a real-data city fails before anything is rendered."""
    city_grid(spec)
    twin_params(spec)
    city_style(spec)
    for name in spec.tasks:
        indicator_model(get_task(name))
    for scale_name in spec.max_street_views:
        get_scale(scale_name, where=f"{spec.source_file or spec.name}: max_street_views")


def _task_hash_input(name: str) -> dict:
    """A task as it enters a twin's key: its fields with ``[twin]`` resolved to the full model (defaults
    spelled out), so a file that writes a default gives the same key as one that leaves it out."""
    task = get_task(name)
    data = dataclasses.asdict(task)
    data.pop("source_file", None)
    data["twin"] = dataclasses.asdict(indicator_model(task))
    return data


def twin_config(spec: CitySpec, scale: Scale) -> dict:
    """Everything that determines a twin's bytes."""
    tasks = {name: config_hash(_task_hash_input(name)) for name in spec.tasks}
    return {
        "city": spec.name,
        # the city file's parsed values, so a comment or reformatting does not re-render its twin
        "city_spec": config_hash({k: v for k, v in dataclasses.asdict(spec).items() if k not in ("source_file", "digest")}),
        "seed": twin_params(spec).seed,
        "scale": scale.name,
        "tasks": tasks,
        "generator": generator_identity(),
    }


def twin_dir(spec: CitySpec, scale: Scale, root: Path | None = None) -> Path:
    key = config_hash(twin_config(spec, scale))
    twins = (root or cache_root()) / "twins"
    return contained(twins / f"{spec.name}-{scale.name}-seed{twin_params(spec).seed}-{key}", twins, "twin folder")


def region_id(row: int, col: int) -> str:
    return f"r{row:03d}c{col:03d}"


def select_regions(cells: np.ndarray, latents: np.ndarray, scale: Scale) -> np.ndarray:
    """Indices of the regions a scale keeps: all, or the compact window around the densest region."""
    n = len(cells)
    if not scale.max_regions or n <= scale.max_regions:
        return np.arange(n)
    centre = cells[int(np.argmax(latents[:, LATENT_NAMES.index("density")]))]
    distance = np.max(np.abs(cells - centre), axis=1)
    order = np.lexsort((cells[:, 1], cells[:, 0], distance))
    return np.sort(order[: scale.max_regions])


def streetview_counts(spec: CitySpec, cells: np.ndarray, latents: np.ndarray, scale: Scale) -> np.ndarray:
    """Street views per region. Water and park regions often have none (no road to drive along).

    P(no street view) = clip(0.03 + 0.45·water + 0.25·max(0, greenery − density), 0, 0.9); the draw
    is shared by all scales, so a region without street views has none at every scale. At ``full``
    scale counts are Poisson around the paper's mean, weighted by density and road density. A city
    file's ``max_street_views = {scale = N}`` caps the count at that scale (the draws stay the same).
    """
    col = {name: latents[:, i] for i, name in enumerate(LATENT_NAMES)}
    p_none = np.clip(0.03 + 0.45 * col["water"] + 0.25 * np.maximum(0.0, col["greenery"] - col["density"]), 0, 0.9)
    weight = 0.5 + col["density"] + col["road_density"]
    weight = weight / weight.mean()
    counts = np.zeros(len(cells), dtype=int)
    seed = twin_params(spec).seed
    for i, (row, column) in enumerate(cells):
        rng = np.random.default_rng([seed, _STREAM_STREETVIEW_COUNT, int(row), int(column)])
        u, v = rng.random(2)
        if u < p_none[i]:
            continue
        if scale.max_street_views:
            span = scale.max_street_views - scale.min_street_views + 1
            counts[i] = scale.min_street_views + min(int(v * span), span - 1)
        else:
            mean = spec.mean_street_views / max(1e-6, 1.0 - p_none.mean()) * weight[i]
            counts[i] = max(scale.min_street_views, int(rng.poisson(mean)))
    cap = spec.max_street_views.get(scale.name)
    return np.minimum(counts, cap) if cap else counts


def _render_regions(job: tuple) -> list[tuple[str, str, dict]]:
    """Render and write the images of some regions; returns (imagery, image id, scene graph dict)."""
    from urbanln_bench.synth.render_satellite import render_satellite
    from urbanln_bench.synth.render_streetview import render_streetview

    out_dir, spec, scale, items = job
    out_dir = Path(out_dir)
    seed, style = twin_params(spec).seed, city_style(spec)
    graphs = []
    for rid, row, column, latent_values, n_sv in items:
        latent = dict(zip(LATENT_NAMES, latent_values, strict=True))
        rng = np.random.default_rng([seed, _STREAM_SATELLITE, row, column])
        image, graph = render_satellite(latent, style, scale.satellite_px, rng)
        image.save(out_dir / layout.SATELLITE / f"{rid}.png", format="PNG", compress_level=6)
        graphs.append(("SI", rid, graph.to_dict()))
        if n_sv:
            (out_dir / layout.STREETVIEW / rid).mkdir()
        for k in range(n_sv):
            rng = np.random.default_rng([seed, _STREAM_STREETVIEW, row, column, k])
            image, graph = render_streetview(latent, style, scale.streetview_px, rng)
            image.save(out_dir / layout.STREETVIEW / rid / f"{k:03d}.png", format="PNG", compress_level=6)
            graphs.append(("SV", f"{rid}/{k:03d}", graph.to_dict()))
    return graphs


def _fmt(value: float) -> str:
    return "" if np.isnan(value) else format(float(value), ".10g")


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(header)] + [",".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def generate_twin(spec: CitySpec, scale: Scale, out_dir: Path, *, workers: int | None = None,
                  progress: Progress | None = None) -> dict:
    """Write the twin of ``spec`` at ``scale`` into ``out_dir`` (an empty folder). Returns city.json."""
    from urbanln_bench.synth.fields import city_cells, generate_latents
    from urbanln_bench.synth.indicators import analytic_ceiling, simulate_twin_tables

    tasks = [get_task(t) for t in spec.tasks]
    cells_all = city_cells(spec)
    latents_all = generate_latents(spec)
    tables = simulate_twin_tables(spec, tasks, latents_all, cells_all)
    keep = select_regions(cells_all, latents_all, scale)
    cells, latents = cells_all[keep], latents_all[keep]
    ids = [region_id(int(r), int(c)) for r, c in cells]
    n_sv = streetview_counts(spec, cells, latents, scale)

    (out_dir / layout.SATELLITE).mkdir(parents=True)
    (out_dir / layout.STREETVIEW).mkdir()
    items = [(rid, int(r), int(c), tuple(float(v) for v in lat), int(k))
             for rid, (r, c), lat, k in zip(ids, cells, latents, n_sv, strict=True)]
    chunk = 16
    jobs = [(str(out_dir), spec, scale, items[i:i + chunk]) for i in range(0, len(items), chunk)]
    workers = workers or min(2, os.cpu_count() or 1)
    graphs: list[tuple[str, str, dict]] = []
    if workers > 1 and len(jobs) > 1:
        # spawned workers that die with this process: a killed run leaves no renderer holding its lock
        with worker_pool(workers) as pool:
            for job, result in zip(jobs, pool.imap(_render_regions, jobs), strict=True):
                graphs += result
                if progress:
                    progress(len(job[3]))
    else:
        for job in jobs:
            graphs += _render_regions(job)
            if progress:
                progress(len(job[3]))

    lat = np.full(len(cells), np.nan)
    lon = np.full(len(cells), np.nan)
    geo = city_grid(spec)
    lat[:] = geo.origin_lat + (cells[:, 0] + 0.5) * geo.cell_deg_lat
    lon[:] = geo.origin_lon + (cells[:, 1] + 0.5) * geo.cell_deg_lon
    _write_csv(out_dir / layout.REGIONS, list(layout.REGION_COLUMNS),
               [[rid, str(int(r)), str(int(c)), f"{a:.6f}", f"{o:.6f}"]
                for rid, (r, c), a, o in zip(ids, cells, lat, lon, strict=True)])
    indicator_values = {t: tables.indicators[t][keep] for t in spec.tasks}
    _write_csv(out_dir / layout.INDICATORS, ["region_id", *spec.tasks],
               [[rid] + [_fmt(indicator_values[t][i]) for t in spec.tasks] for i, rid in enumerate(ids)])
    if "poi_counts" in spec.aux:
        from urbanln_bench.synth.indicators import POI_CATEGORIES

        poi = tables.poi_counts[keep]
        _write_csv(out_dir / layout.POI_COUNTS, ["region_id", *POI_CATEGORIES],
                   [[rid] + [str(int(v)) for v in poi[i]] for i, rid in enumerate(ids)])
    if "mobility" in spec.aux and tables.mobility is not None:
        position = {int(k): i for i, k in enumerate(keep)}
        origin, destination, trips = tables.mobility
        rows = [[ids[position[int(o)]], ids[position[int(d)]], _fmt(t)]
                for o, d, t in zip(origin, destination, trips, strict=True)
                if int(o) in position and int(d) in position and t > 0]
        _write_csv(out_dir / layout.MOBILITY, list(layout.MOBILITY_COLUMNS), rows)
    _write_csv(out_dir / layout.LATENTS, ["region_id", *LATENT_NAMES],
               [[rid] + [format(float(v), ".10g") for v in latents[i]] for i, rid in enumerate(ids)])

    has_sv = n_sv > 0
    cells_oracle = {}
    for task in spec.tasks:
        y = indicator_values[task]
        cond_var = tables.conditional_log_variance[task][keep]
        for imagery in spec.imagery:
            mask = ~np.isnan(y) & (has_sv if imagery == "SV" else True)
            entry = {"n": int(mask.sum())}
            if mask.sum() >= 3:
                entry["ceiling"] = round(float(analytic_ceiling(libm.log1p(y[mask]), cond_var[mask])), 6)
            cells_oracle[f"{spec.name}/{task}/{imagery}"] = entry
    oracle = {
        "definition": "analytic ceiling 1 - mean Var(ln(y+1) | latents) / Var(ln(y+1)) over the cell's regions",
        "cells": cells_oracle,
    }
    (out_dir / layout.ORACLE).write_text(json.dumps(oracle, indent=1, sort_keys=True) + "\n")
    for imagery, rel in layout.SCENE_GRAPHS.items():
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        records = sorted((g for g in graphs if g[0] == imagery), key=lambda g: g[1])
        path.write_text("".join(json.dumps({"image_id": i, "graph": g}, sort_keys=True, separators=(",", ":")) + "\n"
                                for _, i, g in records))
    meta = {
        "city": spec.name,
        "source": "synthetic",
        "tasks": list(spec.tasks),
        "imagery": list(spec.imagery),
        "kind": spec.kind,
        "scale": scale.name,
        "twin": twin_config(spec, scale),
        "harness_version": HARNESS_VERSION,
        "counts": {"regions": len(ids), "satellite_images": len(ids), "streetview_images": int(n_sv.sum()),
                   "regions_without_streetview": int((~has_sv).sum()),
                   "max_streetviews_per_region": spec.max_street_views.get(scale.name)},
    }
    (out_dir / layout.CITY_META).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    write_manifest(out_dir)
    return meta


class TwinNotRendered(UserError):
    """A twin that a dry run would have to render (it is not in the cache) to know its identity."""

    def __init__(self, spec: CitySpec, scale: Scale) -> None:
        super().__init__(f"the {spec.name} twin ({scale.name}) is not rendered in the cache yet")
        self.city, self.scale = spec.name, scale.name


_RENDERING_ALLOWED: contextvars.ContextVar[bool] = contextvars.ContextVar("rendering_allowed", default=True)


@contextlib.contextmanager
def no_rendering() -> Iterator[None]:
    """Inside, ``ensure_twin`` returns cached twins and raises :class:`TwinNotRendered` instead of rendering
    one: ``run --dry-run`` fits and renders nothing (docs/hostile-inputs.md)."""
    token = _RENDERING_ALLOWED.set(False)
    try:
        yield
    finally:
        _RENDERING_ALLOWED.reset(token)


def ensure_twin(spec: CitySpec, scale: str | Scale = "small", *, root: Path | None = None,
                workers: int | None = None, progress_factory: Callable[[int], Progress] | None = None) -> Path:
    """The twin's folder in the cache, generating it first if needed (atomic and locked)."""
    scale = get_scale(scale) if isinstance(scale, str) else scale
    check_twin_tables(spec)
    target = twin_dir(spec, scale, root)
    if (target / layout.MANIFEST).exists():
        return target
    if not _RENDERING_ALLOWED.get():
        raise TwinNotRendered(spec, scale)
    with file_lock(target.parent / f".{target.name}.lock"):
        if (target / layout.MANIFEST).exists():
            return target
        started = time.perf_counter()
        with atomic_directory(target) as tmp:
            progress = None
            if progress_factory is not None:
                n = spec.n_regions
                progress = progress_factory(min(n, scale.max_regions) if scale.max_regions else n)
            generate_twin(spec, scale, tmp, workers=workers, progress=progress)
        note_build("twin", target.name, started)
    return target
