"""A method's view of a city reaches no label, route by route."""

from __future__ import annotations

import gc
import pickle
from pathlib import Path

import numpy as np
import pytest

from urbanln_bench.data.loader import CityData, UnlabelledCity


def _reachable(root: object, limit: int = 200_000) -> list[object]:
    """Every object reachable from ``root`` through attributes, containers and closures."""
    seen: dict[int, object] = {}
    stack = [root]
    while stack and len(seen) < limit:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, type) or type(obj).__name__ == "module":
            continue
        seen[id(obj)] = obj
        stack.extend(gc.get_referents(obj))
    return list(seen.values())


@pytest.fixture(params=["real", "synthetic"])
def data(request, city_dir: Path, tiny_ny: Path) -> CityData:
    return CityData.open(city_dir if request.param == "real" else tiny_ny)


def test_public_api_has_no_label_route(data: CityData):
    view = data.unlabelled()
    assert isinstance(view, UnlabelledCity)
    public = {name for name in dir(view) if not name.startswith("_")}
    assert public == {"name", "source", "manifest_hash", "regions", "poi", "mobility", "satellite_ids",
                      "streetview_ids", "image_ids", "load_image", "iter_images"}
    assert not hasattr(view, "__dict__")  # slots: no attribute can be attached or hidden
    for forbidden in ("indicator", "indicators", "tasks", "latents", "oracle", "scene_graphs", "root", "meta",
                      "image_path"):
        assert not hasattr(view, forbidden)


def test_object_graph_holds_no_label_no_truth_no_root(data: CityData):
    view = data.unlabelled()
    reachable = _reachable(view)
    label_arrays = [data.indicator(t) for t in data.tasks]
    root = str(data.root.resolve())
    for obj in reachable:
        assert obj is not data
        assert not isinstance(obj, CityData)
        assert not any(obj is a for a in label_arrays)
        if isinstance(obj, str | Path):
            text = str(obj)
            assert "indicators" not in text and "truth" not in text and "city.json" not in text
            assert text.rstrip("/") != root  # the data root itself is not held
            if text.startswith(root):  # only image files under satellite/ or streetview/
                rel = text[len(root):].lstrip("/")
                assert rel.split("/")[0] in ("satellite", "streetview") and rel.lower().endswith((".png", ".jpg"))


def test_pickled_view_contains_no_label_values(data: CityData):
    view = data.unlabelled()
    blob = pickle.dumps(view)
    for task in data.tasks:
        values = data.indicator(task)
        assert values.tobytes() not in blob  # the label column, as stored
        labelled = values[~np.isnan(values)]
        assert labelled.tobytes() not in blob and labelled.astype(np.float32).tobytes() not in blob
    assert b"indicators" not in blob


def test_view_serves_images_and_aux(data: CityData):
    view = data.unlabelled()
    sat = view.image_ids("SI")
    assert len(sat) == len(data.regions)
    batch = next(view.iter_images(sat, batch_size=4))
    assert batch.stack().shape[0] == 4 and batch.stack().dtype == np.uint8
    np.testing.assert_array_equal(view.load_image(sat[0]), data.load_image(sat[0]))
    assert view.poi is not None and view.mobility is not None
