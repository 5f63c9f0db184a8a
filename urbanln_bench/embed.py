"""The sealed embedding (docs/architecture.md#core-concepts, torchgeo-bench): the same preprocessing, batching, device
placement and street-view pooling for every method, around the method's small hook.

- ``SI``: one satellite tile per region → ``encode_images`` → the region's embedding.
- ``SV``: every street view of a region (the first ``MAX_STREETVIEWS_PER_REGION`` in file order) →
  ``encode_images`` → mean over the region's views (the paper's footnote: mean-pooled per region).
  Regions with no street view have no SV embedding and drop out of SV cells (counted in records).
- ``SV+SI``: fused methods get the region ids and return (n, D) from ``encode_regions``.

Checks on what a method returns (plugins included): a 2-D array with one row per input, finite
values, the same width for every batch, and the same output when the first images are encoded twice.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from urbanln_bench.data.loader import CityData, UnlabelledCity
from urbanln_bench.errors import UserError
from urbanln_bench.method import FitContext, Method

MAX_STREETVIEWS_PER_REGION = 32
DEFAULT_BATCH_SIZE = 64
DETERMINISM_PROBE = 8  # images of the first batch encoded twice to catch a non-deterministic hook


class MethodOutputError(UserError):
    """A method's hook returned something the harness cannot use."""


@dataclass
class Embeddings:
    """Region embeddings of one (method variant, city, imagery)."""

    region_ids: list[str]
    vectors: np.ndarray  # (n, D) float32
    meta: dict

    def save(self, path: Path) -> None:
        """``.npz`` (ids, vectors) plus a JSON sidecar, both written atomically, the sidecar first: the
        ``.npz`` is what says the entry exists, so a run killed between the two leaves no ``.npz``
        without its sidecar (which would be reused with its provenance missing)."""
        import os
        import tempfile

        from urbanln_bench.cache import atomic_write_text

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path.with_suffix(".json"), json.dumps(self.meta, indent=1, sort_keys=True) + "\n")
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, region_ids=np.asarray(self.region_ids), vectors=self.vectors)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: Path) -> Embeddings:
        import zipfile

        what = "an embeddings file (.npz with arrays region_ids and vectors, as `urbanln-bench export` writes)"
        if path.is_dir():
            raise UserError(f"{path}: a folder, not {what}")
        try:
            loaded = np.load(path, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise ValueError("a single .npy array, not an .npz archive")
            with loaded as npz:
                raw_ids, raw_vectors = npz["region_ids"], npz["vectors"]
        except FileNotFoundError:
            raise UserError(f"{path}: embeddings file not found") from None
        except EOFError:
            raise UserError(f"{path}: empty file, not {what}") from None
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
            raise UserError(f"{path}: not {what}: {exc}") from None
        if raw_ids.ndim != 1 or raw_ids.dtype.kind not in "USi":
            raise UserError(f"{path}: region_ids must be a 1-d array of region ids, got dtype {raw_ids.dtype} "
                            f"shape {raw_ids.shape}")
        if raw_vectors.dtype.kind == "c":
            raise UserError(f"{path}: vectors are complex ({raw_vectors.dtype}); the probe takes real numbers — "
                            "save the real part, or real and imaginary parts side by side")
        if raw_vectors.dtype.kind not in "fiub":
            raise UserError(f"{path}: vectors must be numbers, got dtype {raw_vectors.dtype}")
        ids = [str(i) for i in raw_ids]
        vectors = np.asarray(raw_vectors, dtype=np.float32)
        meta = read_sidecar(path)
        if vectors.ndim == 2 and vectors.shape[1] == 0:
            raise UserError(f"{path}: vectors have 0 dimensions ({vectors.shape}); each region needs at least one "
                            "feature")
        if vectors.ndim == 2 and not len(ids):
            raise UserError(f"{path}: no regions (region_ids is empty)")
        if vectors.ndim != 2 or len(ids) != len(vectors):
            raise UserError(f"{path}: vectors must be (n_regions, D) with one row per region id; got {vectors.shape} "
                            f"for {len(ids)} ids")
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise UserError(f"{path}: duplicate region id '{dup}'")
        bad = ~np.isfinite(vectors).all(axis=1)
        if bad.any():
            raise UserError(f"{path}: {int(bad.sum())} rows are not finite (first: region '{ids[int(np.argmax(bad))]}')")
        return cls(ids, vectors, meta)


def read_sidecar(path: Path) -> dict:
    """The JSON sidecar of an embeddings file (``x.json`` beside ``x.npz``): {} when absent, a UserError
    naming it when it is not a JSON object."""
    sidecar = path.with_suffix(".json")
    if not sidecar.exists():
        return {}
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise UserError(f"{sidecar}: the embeddings' sidecar is not JSON ({exc}); fix or delete it "
                        "(and pass --imagery SV or SI)") from None
    if not isinstance(meta, dict):
        raise UserError(f"{sidecar}: the embeddings' sidecar must be a JSON object, got {type(meta).__name__}; "
                        "fix or delete it")
    return meta


def preprocess(images: list[np.ndarray], size: int, mean, std):
    """uint8 (H, W, 3) arrays → float tensor (B, 3, size, size): bilinear resize, then normalise."""
    import torch
    import torch.nn.functional as F

    out = []
    for image in images:
        tensor = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div_(255.0)
        if tensor.shape[1] != size or tensor.shape[2] != size:
            tensor = F.interpolate(tensor[None], size=(size, size), mode="bilinear", align_corners=False,
                                   antialias=True)[0]
        out.append(tensor)
    batch = torch.stack(out)
    mean_t = torch.tensor(mean, dtype=batch.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=batch.dtype).view(1, 3, 1, 1)
    return (batch - mean_t) / std_t


def _check_output(method: Method, output, n_inputs: int, width: int | None, what: str) -> np.ndarray:
    name = method.meta.name
    try:
        array = output.detach().float().cpu().numpy() if hasattr(output, "detach") else np.asarray(output, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise MethodOutputError(f"method '{name}': {what} returned {type(output).__name__}, not an array: {exc}") from exc
    if array.ndim != 2 or array.shape[0] != n_inputs:
        raise MethodOutputError(f"method '{name}': {what} must return shape ({n_inputs}, D) for {n_inputs} inputs, "
                                f"got {tuple(array.shape)}")
    if width is not None and array.shape[1] != width:
        raise MethodOutputError(f"method '{name}': {what} returned width {array.shape[1]}, earlier batches {width}")
    if not np.isfinite(array).all():
        rows = int((~np.isfinite(array).all(axis=1)).sum())
        raise MethodOutputError(f"method '{name}': {what} returned NaN or inf in {rows} of {n_inputs} rows")
    return array.astype(np.float32)


def encode_image_ids(method: Method, view: UnlabelledCity, image_ids: list[str], device: str, batch_size: int,
                     advance: Callable[[int], None] | None) -> np.ndarray:
    """(len(image_ids), D): each image through the method's ``encode_images``, in batches (the per-image
    path of ``embed_city``; a fused method's ``encode_regions`` may use it per imagery)."""
    import torch

    chunks: list[np.ndarray] = []
    width = None
    for b, batch in enumerate(view.iter_images(image_ids, batch_size)):
        pixels = preprocess(batch.images, method.input_size, method.mean, method.std).to(device)
        with torch.no_grad():
            with autocast(device):
                array = _check_output(method, method.encode_images(pixels), len(batch.ids), width, "encode_images")
            if b == 0:  # determinism probe: re-encode a few images of the first batch
                k = min(DETERMINISM_PROBE, len(batch.ids))
                with autocast(device):
                    again = _check_output(method, method.encode_images(pixels[:k]), k, array.shape[1], "encode_images")
                if not np.allclose(array[:k], again, rtol=1e-3, atol=1e-4):
                    raise MethodOutputError(
                        f"method '{method.meta.name}': encode_images is not deterministic (the same batch gave "
                        f"different features twice, max diff {float(np.abs(array[:k] - again).max()):.3g}); "
                        "put dropout/augmentation behind eval mode")
        width = array.shape[1]
        chunks.append(array)
        if advance:
            advance(len(batch.ids))
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


def streetviews_of(view: UnlabelledCity, region_ids: list[str], cap: int = MAX_STREETVIEWS_PER_REGION
                   ) -> tuple[list[str], np.ndarray]:
    """The street-view image ids of ``region_ids`` (at most ``cap`` per region, region by region) and, for each,
    the index in ``region_ids`` of the region it belongs to: what ``mean_per_region`` pools with."""
    image_ids: list[str] = []
    owners: list[int] = []
    for i, rid in enumerate(region_ids):
        own = view.streetview_ids(rid)[:cap]
        image_ids += own
        owners += [i] * len(own)
    return image_ids, np.asarray(owners, dtype=np.int64)


def mean_per_region(per_image: np.ndarray, owners: np.ndarray, n_regions: int) -> np.ndarray:
    """The mean of each region's image vectors (``owners[k]`` = the region of row ``k``), float64; a region
    without an image gets zeros. The one pooling every street-view embedding of the harness uses."""
    sums = np.zeros((n_regions, per_image.shape[1]), np.float64)
    np.add.at(sums, owners, per_image)
    counts = np.bincount(owners, minlength=n_regions)[:, None]
    return sums / np.maximum(counts, 1)


def autocast(device):
    """bf16 autocast on CUDA, nothing elsewhere, so CPU runs stay float32: the one precision rule of
    embedding, training and profiling. ``device`` is a string ("cuda:0") or a ``torch.device``."""
    import contextlib

    import torch

    if torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def embed_city(method: Method, data: CityData, imagery: str, context: FitContext,
               batch_size: int = DEFAULT_BATCH_SIZE, progress: Callable | None = None) -> Embeddings:
    """Embed every region of ``data`` that has ``imagery`` with a fitted method."""
    view = data.unlabelled()
    for module in method.modules():
        module.to(context.device).eval()
    if imagery == "SV+SI" or type(method).encode_regions is not Method.encode_regions:
        # fused methods, and per-region methods such as the oracle, are asked per region
        if imagery == "SV":
            ids = [rid for rid in view.regions.ids if view.streetview_ids(rid)]
        elif imagery == "SI":
            ids = view.satellite_ids()
        else:
            ids = list(view.regions.ids)
        array = method.encode_regions(view, ids, context)
        vectors = _check_output(method, array, len(ids), None, "encode_regions")
    elif imagery == "SI":
        ids = view.satellite_ids()
        advance = progress(f"embedding {data.name} SI with {method.variant_label()}", len(ids)) if progress else None
        vectors = encode_image_ids(method, view, ids, context.device, batch_size, advance)
    elif imagery == "SV":
        ids = [rid for rid in view.regions.ids if view.streetview_ids(rid)]
        image_ids, owners = streetviews_of(view, ids)
        advance = progress(f"embedding {data.name} SV with {method.variant_label()}", len(image_ids)) if progress else None
        per_image = encode_image_ids(method, view, image_ids, context.device, batch_size, advance)
        vectors = mean_per_region(per_image, owners, len(ids)).astype(np.float32)
    else:
        raise UserError(f"imagery must be SV, SI or SV+SI, got {imagery!r}")
    meta = {"method": method.identity(), "variant": method.variant_label(), "city": data.name,
            "imagery": imagery, "data_source": data.source, "data_manifest": data.manifest_hash,
            "pooling": "mean" if imagery == "SV" else "none",
            "max_streetviews_per_region": MAX_STREETVIEWS_PER_REGION if imagery == "SV" else None,
            "regions": len(ids), "dim": int(vectors.shape[1]) if vectors.size else 0}
    return Embeddings(ids, vectors, meta)
