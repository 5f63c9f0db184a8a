"""Where a city's data comes from: a user's real data folder, or the cached synthetic twin."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from urbanln_bench.data.loader import CityData
from urbanln_bench.errors import DataError
from urbanln_bench.specs import CitySpec

DATA_ROOT_ENV = "URBANLN_BENCH_DATA_ROOT"


def real_data_dir(spec: CitySpec, data_root: str | Path | None) -> Path | None:
    """``--data-root PATH`` (a city folder), else ``$URBANLN_BENCH_DATA_ROOT/<CITY>`` if it exists."""
    if data_root is not None:
        path = Path(data_root)
        if not path.is_dir():
            raise DataError(f"--data-root {path}: not a directory")
        return path
    env = os.environ.get(DATA_ROOT_ENV)
    if env and (Path(env) / spec.name).is_dir():
        return Path(env) / spec.name
    return None


def open_city(spec: CitySpec, *, scale: str = "small", data_root: str | Path | None = None,
              progress_factory: Callable | None = None, allow_symlinks: bool = False) -> CityData:
    """Real data when the user points at it, otherwise the synthetic twin (generated once, cached)."""
    real = real_data_dir(spec, data_root)
    if real is not None:
        data = CityData.open(real, allow_symlinks=allow_symlinks)
        if data.name != spec.name:
            raise DataError(f"{real}/city.json names city '{data.name}', but the run is for '{spec.name}'")
        return data
    from urbanln_bench.synth.twin import ensure_twin

    return CityData.open(ensure_twin(spec, scale, progress_factory=progress_factory))
