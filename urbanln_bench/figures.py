"""The leaderboard's figures: PNGs drawn from result records only, byte for byte reproducible.

Each figure is first a small, frozen description of its data (``PredictionFigure``, ``AblationFigure``,
``SweepFigure``, ``TransferFigure``) that the leaderboard builds from records and writes next to the
same numbers as a table, then pixels (``render_png``). The pixels are deterministic for one matplotlib and
Pillow version: Agg, matplotlib's default style (a user's matplotlibrc is ignored), the DejaVu Sans font
matplotlib ships, fixed size and dpi, no timestamp or software chunk. Each PNG carries one text chunk
(``GENERATOR_KEY``) naming the versions that drew it, so ``leaderboard --check`` can tell a stale figure
from one drawn by another matplotlib (docs/architecture.md#report).

Which figures exist follows the records: the paper's Figure 2 (prediction vs truth on test regions, ours
and the best baseline, per city × imagery with stored predictions), Figure 3 (ablation bars with 95 %
paired bootstrap intervals), Table 4's μ sweep (any one-setting sweep of "ours" as a line with intervals),
Figure 5 (transfer heatmaps), Figure 6 (the case study: PCA, k-means clusters on the map, the task's
distribution per cluster and sample images, from a case-study artifact of the store), and from stored
measurements (``measurements.py``) Figure 4 (parameters vs inference images/s, per stored profile) and caption
fidelity per pipeline stage (per data tag). matplotlib is imported here only, and only to draw.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DPI = 100
GENERATOR_KEY = "urbanln-bench figure"
PANEL_SIZE = (3.6, 3.4)  # inches per panel (width, height)
STYLE = {"font.family": "DejaVu Sans", "font.size": 8.0, "axes.titlesize": 9.0, "axes.labelsize": 8.0,
         "legend.fontsize": 7.0, "xtick.labelsize": 7.0, "ytick.labelsize": 7.0, "figure.dpi": DPI,
         "savefig.dpi": DPI, "svg.hashsalt": "urbanln-bench", "image.interpolation": "nearest"}


def file_name(*parts: str) -> str:
    """A figure's file name from its parts: letters, digits, '.', '_' and '-' only."""
    return "-".join(re.sub(r"[^A-Za-z0-9._]+", "-", part).strip("-") for part in parts if part) + ".png"


@dataclass(frozen=True)
class PredictionPanel:
    """One task: the test regions of one seed, their true ln(y+1) and each series' predictions."""

    task: str
    seed: int
    regions: tuple[str, ...]
    truth: tuple[float, ...]
    series: tuple[tuple[str, tuple[float, ...], float], ...]  # (row label, predictions, the seed's R²)


@dataclass(frozen=True)
class PredictionFigure:
    """The paper's Figure 2: predicted vs true ln(y+1) on test regions, ours and the best baseline."""

    name: str
    caption: str
    panels: tuple[PredictionPanel, ...]


@dataclass(frozen=True)
class Interval:
    """A difference from the full method with its 95 % paired bootstrap interval (None: no predictions)."""

    value: float
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class AblationFigure:
    """The paper's Figure 3: per imagery, ΔR² of each ablation from the full method, per task."""

    name: str
    caption: str
    tasks: tuple[str, ...]
    panels: tuple[tuple[str, tuple[tuple[str, tuple[Interval | None, ...]], ...]], ...]  # imagery → (variant, Δ per task)


@dataclass(frozen=True)
class SweepFigure:
    """Table 4 as a line: ΔR² from the full method's setting along one setting (μ), per task, per imagery."""

    name: str
    caption: str
    setting: str
    tasks: tuple[str, ...]
    panels: tuple[tuple[str, tuple[tuple[float, tuple[Interval | None, ...]], ...]], ...]  # imagery → (value, Δ per task)


@dataclass(frozen=True)
class TransferFigure:
    """The paper's Figure 5: R² of a method pretrained on one city (rows) and probed on another (columns)."""

    name: str
    caption: str
    title: str
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    values: tuple[tuple[float | None, ...], ...]  # sources × targets


@dataclass(frozen=True)
class ProfilePoint:
    """One method of Figure 4: its parameters (total, trainable) and inference images/s on the named machine."""

    label: str
    total: int
    trainable: int
    images_per_second: float


@dataclass(frozen=True)
class ProfileFigure:
    """The paper's Figure 4: parameters (total and trainable) against inference images/s, one stored profile."""

    name: str
    caption: str
    points: tuple[ProfilePoint, ...]


@dataclass(frozen=True)
class FidelitySeries:
    """One city × imagery of the caption-fidelity figure: a value per stage (None: the stage was not run)."""

    label: str
    precision: tuple[float | None, ...]
    recall: tuple[float | None, ...]
    tokens: tuple[float | None, ...]


@dataclass(frozen=True)
class FidelityFigure:
    """Caption fidelity per pipeline stage: object precision and recall (left), mean CLIP tokens (right)."""

    name: str
    caption: str
    stages: tuple[str, ...]
    series: tuple[FidelitySeries, ...]


CLIP_CONTEXT = 77  # CLIP's text context: captions past it are cut unless IPSI stretches the positions


@dataclass(frozen=True)
class CaseStudyFigure:
    """The paper's Figure 6: a method's region embeddings in the PCA plane coloured by k-means cluster, the
    clusters on the region grid, the task's ln(y+1) distribution (KDE) per cluster, sample images per
    cluster. From one case-study artifact of the result store (case_study.py)."""

    name: str
    caption: str
    title: str  # the method, city and imagery
    task: str
    explained: tuple[float, float]  # PC1's and PC2's share of the standardised embedding's variance
    map_axes: tuple[str, str]  # ("col", "row") for a region grid, ("lon", "lat") otherwise
    x: tuple[float, ...]  # per region: map position
    y: tuple[float, ...]
    pc1: tuple[float, ...]
    pc2: tuple[float, ...]
    cluster: tuple[int, ...]
    ln_y: tuple[float | None, ...]
    sizes: tuple[int, ...]  # per cluster
    thumbnails: tuple[tuple[bytes, ...], ...]  # per cluster: PNG bytes of its sample images


Figure = PredictionFigure | AblationFigure | SweepFigure | TransferFigure | ProfileFigure | FidelityFigure | CaseStudyFigure


def versions() -> str:
    """What a figure's bytes depend on beyond its data: the drawing library and the PNG writer."""
    import matplotlib
    import PIL

    return f"matplotlib {matplotlib.__version__}, Pillow {PIL.__version__}"


def png_generator(data: bytes) -> str | None:
    """The ``GENERATOR_KEY`` text chunk of a PNG (the versions that drew it), None when it has none."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    at = 8
    while at + 8 <= len(data):
        length = int.from_bytes(data[at:at + 4], "big")
        kind = data[at + 4:at + 8]
        body = data[at + 8:at + 8 + length]
        if kind == b"tEXt" and b"\x00" in body:
            key, _, value = body.partition(b"\x00")
            if key.decode("latin-1") == GENERATOR_KEY:
                return value.decode("latin-1")
        if kind == b"IEND":
            break
        at += 12 + length
    return None


def data_heading(figure: Figure) -> str:
    """The figure's heading: what its data is (the caption up to its colon), synthetic twins named as such
    inside the image, so a PNG seen on its own says it is not the paper's data."""
    head = figure.caption.split(":", 1)[0]
    return head + (" — synthetic twin, not real data" if "(synthetic-" in head else "")


def render_png(figure: Figure) -> bytes:
    """The figure's PNG bytes (the same data and versions give the same bytes)."""
    import matplotlib
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    with matplotlib.style.context("default"), matplotlib.rc_context(STYLE):
        if isinstance(figure, TransferFigure):
            size = (2.4 + 0.9 * len(figure.targets), 1.8 + 0.6 * len(figure.sources))
        elif isinstance(figure, ProfileFigure):
            size = (PANEL_SIZE[0] * 1.8, PANEL_SIZE[1] * 1.2)
        elif isinstance(figure, FidelityFigure):
            size = (PANEL_SIZE[0] * 2, PANEL_SIZE[1])
        elif isinstance(figure, CaseStudyFigure):
            size = (PANEL_SIZE[0] * 4, PANEL_SIZE[1])
        else:
            size = (PANEL_SIZE[0] * len(figure.panels), PANEL_SIZE[1])
        canvas = FigureCanvasAgg(MplFigure(figsize=size, dpi=DPI, layout="constrained"))
        drawing = canvas.figure
        if isinstance(figure, PredictionFigure):
            _draw_predictions(drawing, figure)
        elif isinstance(figure, AblationFigure):
            _draw_ablations(drawing, figure)
        elif isinstance(figure, SweepFigure):
            _draw_sweep(drawing, figure)
        elif isinstance(figure, ProfileFigure):
            _draw_profile(drawing, figure)
        elif isinstance(figure, FidelityFigure):
            _draw_fidelity(drawing, figure)
        elif isinstance(figure, CaseStudyFigure):
            _draw_case_study(drawing, figure)
        else:
            _draw_transfer(drawing, figure)
        drawing.suptitle(data_heading(figure), fontsize=9)
        out = io.BytesIO()
        drawing.savefig(out, format="png", dpi=DPI, metadata={"Software": None, GENERATOR_KEY: versions()})
    return out.getvalue()


MARKERS = ("o", "s", "^", "D", "v", "P")


def _draw_predictions(drawing, figure: PredictionFigure) -> None:
    axes = drawing.subplots(1, len(figure.panels), squeeze=False)[0]
    for ax, panel in zip(axes, figure.panels, strict=True):
        values = list(panel.truth) + [v for _, preds, _ in panel.series for v in preds]
        low, high = min(values), max(values)
        pad = 0.05 * (high - low or 1.0)
        ax.plot([low - pad, high + pad], [low - pad, high + pad], color="0.6", linewidth=0.8, linestyle="--")
        for i, (label, preds, r2) in enumerate(panel.series):
            ax.scatter(panel.truth, preds, s=9, marker=MARKERS[i % len(MARKERS)], alpha=0.7, linewidths=0,
                       label=f"{label} (R² {r2:.3f})")
        ax.set_xlim(low - pad, high + pad)
        ax.set_ylim(low - pad, high + pad)
        ax.set_aspect("equal")
        ax.set_title(f"{panel.task} (seed {panel.seed}, {len(panel.regions)} test regions)")
        ax.set_xlabel("true ln(y+1)")
        ax.set_ylabel("predicted ln(y+1)")
        ax.legend(loc="upper left", frameon=False)


def _errorbar_arms(values: list[Interval | None]) -> tuple[list[float], list[list[float]]]:
    """Heights and the (below, above) error-bar arms of intervals (0 arms where there is none)."""
    heights = [0.0 if v is None else v.value for v in values]
    below = [0.0 if v is None or v.low is None else v.value - v.low for v in values]
    above = [0.0 if v is None or v.high is None else v.high - v.value for v in values]
    return heights, [below, above]


def _draw_ablations(drawing, figure: AblationFigure) -> None:
    axes = drawing.subplots(1, len(figure.panels), squeeze=False)[0]
    for ax, (imagery, variants) in zip(axes, figure.panels, strict=True):
        width = 0.8 / max(len(variants), 1)
        for i, (variant, deltas) in enumerate(variants):
            heights, arms = _errorbar_arms(list(deltas))
            xs = [t + (i - (len(variants) - 1) / 2) * width for t in range(len(figure.tasks))]
            ax.bar(xs, heights, width=width, yerr=arms, capsize=2, label=variant, error_kw={"linewidth": 0.8})
        ax.axhline(0.0, color="0.3", linewidth=0.8)
        ax.set_xticks(range(len(figure.tasks)), figure.tasks)
        ax.set_title(f"{imagery}: ablations vs the full method")
        ax.set_ylabel("ΔR² (95 % paired bootstrap interval)")
        ax.legend(loc="best", frameon=False)


def _draw_sweep(drawing, figure: SweepFigure) -> None:
    axes = drawing.subplots(1, len(figure.panels), squeeze=False)[0]
    for ax, (imagery, points) in zip(axes, figure.panels, strict=True):
        xs = [x for x, _ in points]
        dodge = 0.012 * ((max(xs) - min(xs)) or 1.0)  # tasks side by side at each value, their bars apart
        for t, task in enumerate(figure.tasks):
            heights, arms = _errorbar_arms([deltas[t] for _, deltas in points])
            shift = (t - (len(figure.tasks) - 1) / 2) * dodge
            ax.errorbar([x + shift for x in xs], heights, yerr=arms, marker=MARKERS[t % len(MARKERS)], markersize=4, capsize=2,
                        linewidth=1.0, label=task)
        ax.axhline(0.0, color="0.3", linewidth=0.8)
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.set_title(f"{imagery}: sweep of {figure.setting}")
        ax.set_xlabel(figure.setting)
        ax.set_ylabel("ΔR² from the full method (95 % CI)")
        ax.legend(loc="best", frameon=False)


def _draw_transfer(drawing, figure: TransferFigure) -> None:
    import numpy as np

    ax = drawing.subplots()
    grid = np.array([[np.nan if v is None else v for v in row] for row in figure.values], dtype=float)
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", aspect="auto")
    for i, row in enumerate(figure.values):
        for j, value in enumerate(row):
            colour = "0.4" if value is None else ("white" if value < np.nanmean(grid) else "black")
            ax.text(j, i, "—" if value is None else f"{value:.3f}", ha="center", va="center", color=colour, fontsize=7)
    ax.set_xticks(range(len(figure.targets)), figure.targets)
    ax.set_yticks(range(len(figure.sources)), figure.sources)
    ax.set_xlabel("probed on")
    ax.set_ylabel("pretrained on")
    ax.set_title(figure.title)
    drawing.colorbar(image, ax=ax, label="R²")


def _draw_profile(drawing, figure: ProfileFigure) -> None:
    """Log-log: each method's total parameters (filled) and trainable ones (open, same colour, joined to it by a
    line) at its images/s; a method whose pretraining updates nothing has no open marker (0 is off a log axis)."""
    ax = drawing.subplots()
    colours = [f"C{i % 10}" for i in range(len(figure.points))]
    for point, colour in zip(figure.points, colours, strict=True):
        x = point.images_per_second
        if point.trainable > 0 and point.trainable != point.total:
            ax.plot([x, x], [point.trainable, point.total], color=colour, linewidth=0.8, alpha=0.6)
        if point.trainable > 0:
            ax.scatter([x], [point.trainable], s=110, marker="o", facecolors="none", edgecolors=colour, linewidths=1.2)
        ax.scatter([x], [point.total], s=30, marker="o", color=colour)
        ax.annotate(point.label, (x, point.total), xytext=(6, 6), textcoords="offset points", fontsize=7,
                    color=colour)
    ax.scatter([], [], s=30, marker="o", color="0.3", label="total parameters")
    ax.scatter([], [], s=110, marker="o", facecolors="none", edgecolors="0.3", label="trainable (city pretraining)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.margins(0.25)
    ax.set_xlabel("inference images/s (image encoder, higher is faster)")
    ax.set_ylabel("parameters")
    ax.set_title("parameters vs inference speed")
    ax.legend(loc="best", frameon=False)


def _draw_fidelity(drawing, figure: FidelityFigure) -> None:
    left, right = drawing.subplots(1, 2, squeeze=True)
    xs = list(range(len(figure.stages)))

    def values(series: tuple[float | None, ...]) -> list[float]:
        return [float("nan") if v is None else v for v in series]

    for i, series in enumerate(figure.series):
        colour, marker = f"C{i % 10}", MARKERS[i % len(MARKERS)]
        left.plot(xs, values(series.precision), color=colour, marker=marker, markersize=4, linewidth=1.0,
                  label=f"{series.label} precision")
        left.plot(xs, values(series.recall), color=colour, marker=marker, markersize=4, linewidth=1.0,
                  linestyle="--", markerfacecolor="none", label=f"{series.label} recall")
        right.plot(xs, values(series.tokens), color=colour, marker=marker, markersize=4, linewidth=1.0,
                   label=series.label)
    right.axhline(CLIP_CONTEXT, color="0.5", linewidth=0.8, linestyle=":", label=f"CLIP's {CLIP_CONTEXT} tokens")
    for ax in (left, right):
        ax.set_xticks(xs, [stage.replace(" (", "\n(") for stage in figure.stages])
        ax.set_xlabel("pipeline stage")
        ax.legend(loc="best", frameon=False)
    left.set_ylim(0.0, 1.05)
    left.set_ylabel("object precision (1 − hallucination), recall")
    left.set_title("fidelity to the scene graphs")
    right.set_ylim(bottom=0.0)
    right.set_ylabel("mean caption length (CLIP tokens)")
    right.set_title("caption length")


def scott_kde(values, grid):
    """Gaussian kernel density of ``values`` on ``grid`` with Scott's bandwidth (σ · n^(-1/5)), in numpy:
    the figure needs no scipy. A single value or a constant sample gets the bandwidth of a unit spread."""
    import numpy as np

    x = np.asarray(values, dtype=np.float64)
    spread = float(x.std(ddof=1)) if len(x) > 1 else 0.0
    bandwidth = (spread if spread > 0 else 1.0) * len(x) ** (-1 / 5)
    u = (np.asarray(grid, dtype=np.float64)[:, None] - x[None, :]) / bandwidth
    return np.exp(-0.5 * u**2).sum(axis=1) / (len(x) * bandwidth * np.sqrt(2 * np.pi))


def _draw_case_study(drawing, figure: CaseStudyFigure) -> None:
    import numpy as np

    from urbanln_bench.case_study import decode_thumbnail

    colours = [f"C{c % 10}" for c in range(len(figure.sizes))]
    scatter, grid_map, density, samples = drawing.subplots(1, 4)
    cluster = np.asarray(figure.cluster)
    point = max(1.0, min(16.0, 3000.0 / max(len(cluster), 1)))
    for c, colour in enumerate(colours):
        mine = cluster == c
        label = f"cluster {c + 1} ({figure.sizes[c]})"
        scatter.scatter(np.asarray(figure.pc1)[mine], np.asarray(figure.pc2)[mine], s=point, c=colour, linewidths=0,
                        alpha=0.8, label=label)
        if figure.map_axes[0] != "col":  # lat/lon only: points on the map
            grid_map.scatter(np.asarray(figure.x)[mine], np.asarray(figure.y)[mine], s=point * 1.5, c=colour,
                             marker="s", linewidths=0, label=label)
    scatter.set_title(f"{figure.title}: PCA of the embeddings")
    scatter.set_xlabel(f"PC1 ({100 * figure.explained[0]:.1f} % of variance)")
    scatter.set_ylabel(f"PC2 ({100 * figure.explained[1]:.1f} % of variance)")
    scatter.legend(loc="best", frameon=False, markerscale=2)
    grid_map.set_title("clusters on the region grid" if figure.map_axes[0] == "col" else "clusters on the map")
    grid_map.set_xlabel(figure.map_axes[0])
    grid_map.set_ylabel(figure.map_axes[1])
    if figure.map_axes[0] == "col":  # a region grid: one cell per region, row 0 at the top
        from matplotlib.colors import ListedColormap

        cols, rows = np.asarray(figure.x, dtype=int), np.asarray(figure.y, dtype=int)
        cells = np.full((rows.max() - rows.min() + 1, cols.max() - cols.min() + 1), np.nan)
        cells[rows - rows.min(), cols - cols.min()] = cluster
        grid_map.imshow(np.ma.masked_invalid(cells), cmap=ListedColormap(colours), vmin=-0.5,
                        vmax=len(colours) - 0.5, interpolation="nearest",
                        extent=(cols.min() - 0.5, cols.max() + 0.5, rows.max() + 0.5, rows.min() - 0.5))
    grid_map.set_aspect("equal")
    labelled = [v for v in figure.ln_y if v is not None]
    if labelled:
        low, high = min(labelled), max(labelled)
        pad = 0.1 * ((high - low) or 1.0)
        xs = np.linspace(low - pad, high + pad, 256)
        for c, colour in enumerate(colours):
            values = [v for v, k in zip(figure.ln_y, figure.cluster, strict=True) if k == c and v is not None]
            if values:
                density.plot(xs, scott_kde(values, xs), color=colour, linewidth=1.2,
                             label=f"cluster {c + 1} (n={len(values)})")
        density.legend(loc="best", frameon=False)
    density.set_title(f"{figure.task} per cluster (KDE, Scott's bandwidth)")
    density.set_xlabel(f"ln({figure.task} + 1)")
    density.set_ylabel("density")
    tiles = [[decode_thumbnail(png) for png in row] for row in figure.thumbnails]
    size = max((t.shape[0] for row in tiles for t in row), default=1)
    columns = max((len(row) for row in tiles), default=1)
    gap = max(1, size // 16)
    mosaic = np.full((len(tiles) * (size + gap) - gap, columns * (size + gap) - gap, 3), 255, dtype=np.uint8)
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            mosaic[r * (size + gap):r * (size + gap) + tile.shape[0], c * (size + gap):c * (size + gap) + tile.shape[1]] = tile
    samples.imshow(mosaic, interpolation="nearest")
    samples.set_xticks([])
    samples.set_yticks([r * (size + gap) + size / 2 for r in range(len(tiles))],
                       [f"cluster {r + 1}" for r in range(len(tiles))])
    for r, tick in enumerate(samples.get_yticklabels()):
        tick.set_color(colours[r])
    samples.set_title("nearest the centroid, per cluster")


def figure_files(folder: Path) -> list[Path]:
    """The PNGs in ``folder`` that this module drew (they carry its ``GENERATOR_KEY`` chunk); other files
    there are the user's and are never checked or removed."""
    if not folder.is_dir():
        return []
    return [p for p in sorted(folder.glob("*.png")) if p.is_file() and png_generator(p.read_bytes()) is not None]


def write_figures(folder: Path, figures: Sequence[Figure]) -> tuple[list[Path], list[Path]]:
    """Draw ``figures`` into ``folder`` (atomic writes; a file already holding the same bytes is left alone)
    and remove the figures drawn earlier that the records no longer give. Returns (written, removed)."""
    from urbanln_bench.cache import atomic_write_bytes

    wanted = {figure.name for figure in figures}
    written = []
    for figure in figures:
        path = folder / figure.name
        data = render_png(figure)
        if not path.is_file() or path.read_bytes() != data:
            atomic_write_bytes(path, data)
            written.append(path)
    removed = [p for p in figure_files(folder) if p.name not in wanted]
    for path in removed:
        path.unlink()
    return written, removed


def stale_figures(folder: Path, figures: Sequence[Figure]) -> list[str]:
    """One message per figure of ``folder`` that is not what the records draw now (missing, different bytes,
    or no longer generated). A different figure drawn by another matplotlib or Pillow says so: its bytes
    may differ for that reason alone."""
    problems = []
    here = versions()
    for figure in figures:
        path = folder / figure.name
        if not path.is_file():
            problems.append(f"{path}: missing (the records give this figure); run `urbanln-bench leaderboard` "
                            "and commit it")
            continue
        committed = path.read_bytes()
        if committed == render_png(figure):
            continue
        made_with = png_generator(committed)
        if made_with is not None and made_with != here:
            problems.append(f"{path}: differs from the figure drawn here, and was drawn with {made_with} while this "
                            f"is {here}: a figure's bytes depend on those versions. Install the versions it was "
                            "drawn with to check it, or redraw it (`urbanln-bench leaderboard`) and commit it")
        else:
            problems.append(f"{path}: stale (its records draw another figure); run `urbanln-bench leaderboard` "
                            "and commit it")
    wanted = {figure.name for figure in figures}
    problems += [f"{path}: no longer given by the records; run `urbanln-bench leaderboard` (removes it) and commit "
                 "the removal" for path in figure_files(folder) if path.name not in wanted]
    return problems
