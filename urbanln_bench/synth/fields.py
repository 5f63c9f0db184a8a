"""Smooth spatial latent fields of a synthetic city (docs/twins.md).

A twin lives on the ``[geo]`` grid of its city file. The ``[twin]`` table (:class:`TwinParams`)
declares the city's form: an outline (ellipse, optionally cut by a coast), rivers, lakes and parks,
urban centres with a density profile, industrial zones, the correlation length of its noise and
its land-use and social tendencies. From them :func:`city_cells` picks the regions and
:func:`generate_latents` builds the eleven latents of :data:`~urbanln_bench.synth.latents.LATENT_NAMES`.

The latents are built the way cities are, in logit space, from standardised ingredients:

* centrality ``C`` = Σ strength·exp(−(d/radius)^profile) over the centres;
* density follows centrality plus correlated noise, and drops on water;
* land-use shares (residential, commercial, industrial, open land) are a softmax: commerce
  concentrates in centres, industry at the periphery, along water and in declared zones;
* greenery is anti-correlated with density (plus parks); road density and building height follow
  density and commerce; affluence is partly central, green and waterfront, partly its own noise;
  nightlife follows commerce, density and affluence; deprivation is anti-affluent with its own
  noise (and is never rendered).

Every random draw comes from ``np.random.default_rng([seed, STREAM, k])`` with fixed stream
constants, so a twin is a pure function of its city file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from urbanln_bench.errors import SpecError
from urbanln_bench.strict import from_mapping
from urbanln_bench.synth import libm
from urbanln_bench.synth.latents import LATENT_NAMES


# scipy is imported on first use: city files are parsed (for `list`, `--help`) without it.
def _ndimage():
    from scipy import ndimage

    return ndimage


def expit(x):
    from scipy.special import expit as _expit

    return _expit(x)


def logit(x):
    from scipy.special import logit as _logit

    return _logit(x)

if TYPE_CHECKING:
    from urbanln_bench.specs import CitySpec, GeoGrid

COAST_SIDES = ("none", "north", "south", "east", "west")

# Fixed sub-stream constants: one independent random stream per purpose.
_OUTLINE_STREAM = 101
_COAST_STREAM = 102
_LATENT_STREAM = 103


@dataclass(frozen=True)
class Blob:
    """A round feature: an urban centre, a lake, a park or an industrial zone.

    ``row``/``col`` are fractions of the grid (0 = top/left, 1 = bottom/right); ``radius`` is a
    fraction of the grid's larger side; ``strength`` weighs it against the others.
    """

    row: float
    col: float
    radius: float = 0.1
    strength: float = 1.0

    def __post_init__(self) -> None:
        if self.radius <= 0:
            raise ValueError(f"radius must be positive, got {self.radius}")


@dataclass(frozen=True)
class Outline:
    """The city's extent: an ellipse (fractions of the grid), frayed by correlated noise."""

    row: float = 0.5
    col: float = 0.5
    radius_rows: float = 0.5  # semi-axis along rows, fraction of the grid's rows
    radius_cols: float = 0.5  # semi-axis along columns, fraction of the grid's columns
    rotation_deg: float = 0.0
    roughness: float = 0.25  # amplitude of the boundary noise (0 = a clean ellipse)

    def __post_init__(self) -> None:
        if self.radius_rows <= 0 or self.radius_cols <= 0:
            raise ValueError("outline radius_rows and radius_cols must be positive")


@dataclass(frozen=True)
class Coast:
    """Sea along one side of the grid: ``extent`` is the sea's depth as a fraction of the grid."""

    side: str = "none"
    extent: float = 0.0
    wiggle: float = 0.05  # amplitude of the coastline's meander, fraction of the grid

    def __post_init__(self) -> None:
        if self.side not in COAST_SIDES:
            raise ValueError(f"coast side must be one of {', '.join(COAST_SIDES)}, got '{self.side}'")
        if not 0.0 <= self.extent < 1.0:
            raise ValueError(f"coast extent must be in [0, 1), got {self.extent}")


@dataclass(frozen=True)
class River:
    """A river along a polyline of (row, col) grid fractions; ``width`` in cells."""

    points: tuple[tuple[float, float], ...]
    width: float = 0.8

    def __post_init__(self) -> None:
        if len(self.points) < 2:
            raise ValueError("a river needs at least two points")
        if self.width <= 0:
            raise ValueError(f"river width must be positive, got {self.width}")


MAX_TWIN_SEED = 2**32 - 1  # numpy's generators take larger seeds; a twin seed past this is a typo


@dataclass(frozen=True)
class TwinParams:
    """The ``[twin]`` table of a city file: everything the twin's latent fields depend on."""

    seed: int
    # spatial noise
    correlation_length: float = 3.0  # cells: sigma of the gaussian filter on white noise
    noise_amplitude: float = 0.8  # weight of the noise in the density field (logit scale)
    # urban form
    centres: tuple[Blob, ...] = (Blob(0.5, 0.5, 0.2, 1.0),)
    density_profile: float = 1.0  # exponent p of exp(-(d/radius)^p): 1 exponential, 2 gaussian
    density_gain: float = 1.6  # how strongly density follows centrality (logit per sd)
    density_bias: float = 0.0
    outline: Outline = Outline()
    coast: Coast = Coast()
    rivers: tuple[River, ...] = ()
    lakes: tuple[Blob, ...] = ()
    parks: tuple[Blob, ...] = ()
    industrial_zones: tuple[Blob, ...] = ()
    # land-use tendencies (logit biases of the land-use softmax)
    residential_bias: float = 0.6
    commercial_bias: float = -0.4
    industrial_bias: float = -0.6
    open_land_bias: float = 0.0
    commercial_concentration: float = 1.2  # how strongly commerce clusters in centres
    waterfront_industry: float = 1.0  # industry's pull towards (but not onto) water
    # vegetation, height and social tendencies
    greenery_bias: float = 0.0
    height_bias: float = 0.0
    height_gain: float = 1.0  # tall cities (SZ, SH) > 1; low-rise sprawl < 1
    affluence_bias: float = 0.0
    affluence_centrality: float = 0.5
    affluence_noise: float = 0.9  # affluence's own variation, independent of density
    deprivation_noise: float = 0.9  # deprivation's own variation, independent of affluence
    # mobility (gravity model, see synth.aux)
    mobility_decay: float = 4.0  # cells: distance scale of exp(-d / decay)
    mobility_trips_per_region: float = 400.0  # mean outgoing trips per region

    def __post_init__(self) -> None:
        if not 0 <= self.seed <= MAX_TWIN_SEED:
            raise ValueError(f"seed must be between 0 and {MAX_TWIN_SEED}, got {self.seed}")
        for name in ("noise_amplitude", "affluence_noise", "deprivation_noise", "mobility_trips_per_region"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.correlation_length <= 0:
            raise ValueError(f"correlation_length must be positive, got {self.correlation_length}")
        if not self.centres:
            raise ValueError("a twin needs at least one urban centre")
        if self.density_profile <= 0:
            raise ValueError(f"density_profile must be positive, got {self.density_profile}")
        if self.mobility_decay <= 0:
            raise ValueError(f"mobility_decay must be positive, got {self.mobility_decay}")


def no_twin_error(spec: CitySpec, table: str) -> SpecError:
    """The error for a city file without a table that only a twin needs (a real-data city)."""
    return SpecError(f"{spec.source_file or spec.name}: no [{table}] table, so city '{spec.name}' has no synthetic "
                     f"twin; give its data with --data-root PATH or $URBANLN_BENCH_DATA_ROOT/{spec.name}")


def twin_params(spec: CitySpec) -> TwinParams:
    """The city file's ``[twin]`` table as :class:`TwinParams`, checked like the rest of the file.

    ``specs`` keeps the table as plain TOML (the catalogue knows nothing of twins); the twin parses it
    here, where the type lives (docs/architecture.md#core-concepts).
    """
    if spec.twin is None:
        raise no_twin_error(spec, "twin")
    return from_mapping(TwinParams, spec.twin, f"{spec.source_file or spec.name}.twin")


def city_grid(spec: CitySpec) -> GeoGrid:
    """The city file's ``[geo]`` grid, on which a twin places its regions."""
    if spec.geo is None:
        raise no_twin_error(spec, "geo")
    return spec.geo


def _rng(seed: int, stream: int, k: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, stream, k])


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise, standardised to mean 0 and sd 1 over the grid."""
    field = libm.gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    return (field - field.mean()) / (field.std() + 1e-12)


def _grid(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Cell-centre coordinates in cells."""
    r, c = np.meshgrid(np.arange(rows) + 0.5, np.arange(cols) + 0.5, indexing="ij")
    return r, c


def _blob_field(blobs: tuple[Blob, ...], rows: int, cols: int, profile: float) -> np.ndarray:
    """Σ strength·exp(−(d/radius)^profile), distances in fractions of the larger side."""
    r, c = _grid(rows, cols)
    side = float(max(rows, cols))
    total = np.zeros((rows, cols))
    for blob in blobs:
        d = np.hypot(r - blob.row * rows, c - blob.col * cols) / side
        total += blob.strength * libm.exp(-libm.power(d / blob.radius, profile))
    return total


def _disc_field(blobs: tuple[Blob, ...], rows: int, cols: int) -> np.ndarray:
    """Soft discs (lakes, parks): ~strength inside the radius, fading over about one cell."""
    r, c = _grid(rows, cols)
    side = float(max(rows, cols))
    cover = np.zeros((rows, cols))
    for blob in blobs:
        d_cells = np.hypot(r - blob.row * rows, c - blob.col * cols)
        disc = blob.strength * expit((blob.radius * side - d_cells) / 0.6)
        cover = 1.0 - (1.0 - cover) * (1.0 - np.clip(disc, 0.0, 1.0))
    return cover


def _river_field(river: River, rows: int, cols: int) -> np.ndarray:
    """Water share of each cell from its distance (cells) to the river's polyline."""
    r, c = _grid(rows, cols)
    pts = np.array([(p[0] * rows, p[1] * cols) for p in river.points])
    dist = np.full((rows, cols), np.inf)
    for (r0, c0), (r1, c1) in zip(pts[:-1], pts[1:], strict=True):
        dr, dc = r1 - r0, c1 - c0
        length2 = dr * dr + dc * dc
        t = np.zeros_like(r) if length2 == 0 else np.clip(((r - r0) * dr + (c - c0) * dc) / length2, 0, 1)
        dist = np.minimum(dist, np.hypot(r - (r0 + t * dr), c - (c0 + t * dc)))
    return libm.exp(-((dist / river.width) ** 2))


def _sea_mask(params: TwinParams, rows: int, cols: int) -> np.ndarray:
    """True where the grid is sea (beyond the coastline)."""
    coast = params.coast
    if coast.side == "none" or coast.extent <= 0:
        return np.zeros((rows, cols), dtype=bool)
    r, c = _grid(rows, cols)
    along_rows = coast.side in ("north", "south")
    length = cols if along_rows else rows
    wiggle = libm.gaussian_filter1d(
        _rng(params.seed, _COAST_STREAM).standard_normal(length), sigma=max(length / 12, 1.0), mode="reflect"
    )
    wiggle = coast.wiggle * wiggle / (wiggle.std() + 1e-12)
    if along_rows:
        depth = (r / rows) if coast.side == "north" else (1.0 - r / rows)
        line = coast.extent + wiggle[None, :]
    else:
        depth = (c / cols) if coast.side == "west" else (1.0 - c / cols)
        line = coast.extent + wiggle[:, None]
    return depth < line


def _outline_score(params: TwinParams, rows: int, cols: int) -> np.ndarray:
    """How much a grid cell belongs to the city: 1 − frayed ellipse radius, pulled by centres."""
    o = params.outline
    r, c = _grid(rows, cols)
    dr, dc = r / rows - o.row, c / cols - o.col
    theta = np.deg2rad(o.rotation_deg)
    u = (dr * np.cos(theta) + dc * np.sin(theta)) / o.radius_rows
    v = (-dr * np.sin(theta) + dc * np.cos(theta)) / o.radius_cols
    rho = np.hypot(u, v)
    fray = _smooth_noise(_rng(params.seed, _OUTLINE_STREAM), (rows, cols), params.correlation_length)
    centrality = _blob_field(params.centres, rows, cols, params.density_profile)
    # the noise stretches the radius (not the score), so it frays the boundary without punching holes
    return 1.0 - rho * libm.exp(-o.roughness * fray) + 0.3 * centrality / (centrality.max() + 1e-12)


def _city_mask_and_order(spec: CitySpec) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = city_grid(spec).rows, city_grid(spec).cols
    n = spec.n_regions
    params = twin_params(spec)
    sea = _sea_mask(params, rows, cols)
    land = int((~sea).sum())
    if n > land:
        raise SpecError(
            f"{spec.source_file or spec.name}: [twin] coast leaves {land} land cells on the "
            f"{rows}×{cols} grid but the city needs {n} regions; enlarge [geo] rows/cols or shrink "
            "[twin] coast.extent"
        )
    score = _outline_score(params, rows, cols)
    score = np.where(sea, -np.inf, score).ravel()
    chosen = np.sort(np.argsort(-score, kind="stable")[:n])  # row-major order
    mask = np.zeros(rows * cols, dtype=bool)
    mask[chosen] = True
    return mask.reshape(rows, cols), chosen


def city_cells(spec: CitySpec) -> np.ndarray:
    """The twin's regions: ``spec.n_regions`` (row, col) grid cells inside the outline, row-major.

    The cells with the highest outline score (ellipse, frayed boundary, pulled towards centres, never
    sea) are kept, so the count is exact at any scale and the city stays compact.
    """
    _, chosen = _city_mask_and_order(spec)
    return np.stack(np.divmod(chosen, city_grid(spec).cols), axis=1).astype(np.int64)


def _standardise(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    inside = values[mask]
    return (values - inside.mean()) / (inside.std() + 1e-12)


def _zlogit(share: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return _standardise(logit(np.clip(share, 1e-6, 1 - 1e-6)), mask)


def generate_latents(spec: CitySpec) -> np.ndarray:
    """Latents of every region, shape (n_regions, len(LATENT_NAMES)), float64 in [0, 1].

    Rows align with :func:`city_cells`; columns follow ``LATENT_NAMES``. See the module docstring
    for how each latent is built.
    """
    p = twin_params(spec)
    rows, cols = city_grid(spec).rows, city_grid(spec).cols
    mask, _ = _city_mask_and_order(spec)
    shape = (rows, cols)
    sigma = p.correlation_length
    noise = {
        name: _smooth_noise(_rng(p.seed, _LATENT_STREAM, k), shape, sigma)
        for k, name in enumerate(LATENT_NAMES)
    }
    open_noise = _smooth_noise(_rng(p.seed, _LATENT_STREAM, 100), shape, sigma)

    # water: sea coast, rivers, lakes
    sea = _sea_mask(p, rows, cols)
    water = np.zeros(shape)
    if sea.any():
        d_sea = _ndimage().distance_transform_edt(~sea)
        water = np.where(sea, 1.0, libm.exp(-(d_sea - 0.5) / 1.0))
    for river in p.rivers:
        water = 1.0 - (1.0 - water) * (1.0 - _river_field(river, rows, cols))
    if p.lakes:
        water = 1.0 - (1.0 - water) * (1.0 - _disc_field(p.lakes, rows, cols))
    water = np.clip(water * (1.0 + 0.15 * noise["water"]), 0.0, 1.0)
    near_water = np.clip(libm.gaussian_filter(water, 1.5, mode="reflect") * 2.0 - water, 0.0, None)
    z_near_water = _standardise(near_water, mask)

    # density: centrality + correlated noise, dropping on water
    centrality = _blob_field(p.centres, rows, cols, p.density_profile)
    z_centre = _standardise(centrality, mask)
    density = expit(
        p.density_bias + p.density_gain * z_centre + p.noise_amplitude * noise["density"] - 3.0 * water
    )
    z_density = _zlogit(density, mask)

    # land use: softmax over residential, commercial, industrial, open land
    zones = _blob_field(p.industrial_zones, rows, cols, 2.0) if p.industrial_zones else np.zeros(shape)
    parks = _disc_field(p.parks, rows, cols) if p.parks else np.zeros(shape)
    s_res = p.residential_bias + 0.5 * z_density - 0.35 * z_density**2 + 0.7 * noise["residential"]
    s_com = (
        p.commercial_bias
        + p.commercial_concentration * z_centre
        + 0.3 * z_density
        + 0.8 * noise["commercial"]
    )
    s_ind = (
        p.industrial_bias
        - 0.6 * z_centre
        + p.waterfront_industry * z_near_water
        + 2.5 * zones
        + 0.7 * noise["industrial"]
    )
    s_open = p.open_land_bias - 1.2 * z_density + 2.5 * parks + 0.5 * open_noise
    scores = np.stack([s_res, s_com, s_ind, s_open])
    scores -= scores.max(axis=0)
    shares = libm.exp(scores) / libm.exp(scores).sum(axis=0)
    residential, commercial, industrial = shares[0], shares[1], shares[2]
    z_com, z_ind = _zlogit(commercial, mask), _zlogit(industrial, mask)

    greenery = (1.0 - 0.8 * water) * expit(
        p.greenery_bias
        - 0.8 * z_density
        + 3.0 * parks
        + 0.3 * _zlogit(shares[3], mask)
        + 0.7 * noise["greenery"]
    )
    road_density = (1.0 - 0.7 * water) * expit(
        0.2 + 1.0 * z_density + 0.3 * z_com - 0.6 * parks + 0.7 * noise["road_density"]
    )
    building_height = expit(
        p.height_bias
        + p.height_gain * (0.7 * z_density + 0.5 * z_com)
        - 0.4 * z_ind
        + 0.6 * noise["building_height"]
    )
    z_green = _zlogit(greenery, mask)
    affluence = expit(
        p.affluence_bias
        + p.affluence_centrality * z_centre
        + 0.35 * z_green
        + 0.3 * z_near_water
        - 0.5 * z_ind
        + p.affluence_noise * noise["affluence"]
    )
    z_aff = _zlogit(affluence, mask)
    nightlife = expit(-0.8 + 0.6 * z_com + 0.4 * z_density + 0.6 * z_aff + 0.8 * noise["nightlife"])
    deprivation = expit(
        -0.2 - 0.8 * z_aff + 0.3 * z_ind + 0.2 * z_density + p.deprivation_noise * noise["deprivation"]
    )

    fields = {
        "density": density,
        "residential": residential,
        "commercial": commercial,
        "industrial": industrial,
        "greenery": greenery,
        "water": water,
        "road_density": road_density,
        "building_height": building_height,
        "affluence": affluence,
        "nightlife": nightlife,
        "deprivation": deprivation,
    }
    out = np.stack([fields[name][mask] for name in LATENT_NAMES], axis=1)
    return np.clip(out, 0.0, 1.0).astype(np.float64)
