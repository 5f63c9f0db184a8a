"""Embeddings made elsewhere (``urbanln-bench eval --embeddings FILE``), probed exactly like a method's.

The file is an ``.npz`` with ``region_ids`` (n,) and ``vectors`` (n, D) (what ``urbanln-bench export``
writes), optionally with a JSON sidecar. Its region set must match the cell's regions exactly — every
region that has the imagery, no other — so a partial or foreign file fails loudly instead of being
probed on a silently smaller split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from urbanln_bench.errors import UserError
from urbanln_bench.method import FitContext, Method, MethodMeta


def make_file_method(path: Path, label: str | None) -> Method:
    from urbanln_bench.backbones.resnet import file_digest
    from urbanln_bench.embed import Embeddings

    embeddings = Embeddings.load(path)
    digest = file_digest(path)
    display = label or path.stem

    class FileEmbeddings(Method):
        meta = MethodMeta(
            name="embeddings-file", display_name=display, version="1", imagery="either",
            native_imagery=("SV", "SI"), description=f"embeddings from {path.name}",
        )

        def weight_source(self) -> str:
            return f"external embeddings {path.name} (sha256 {digest})"

        def variant_slug(self) -> str:
            return "file-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in display)

        def identity(self) -> dict:
            return {**super().identity(), "file_sha256": digest, "label": display}

        def fit(self, city, imagery: str, context: FitContext) -> None:
            expected = set(city.satellite_ids()) if imagery == "SI" else {
                rid for rid in city.regions.ids if city.streetview_ids(rid)}
            have = set(embeddings.region_ids)
            missing, extra = sorted(expected - have), sorted(have - expected)
            if missing or extra:
                parts = []
                if missing:
                    parts.append(f"{len(missing)} {imagery} region(s) of {city.name} missing (e.g. {', '.join(missing[:3])})")
                if extra:
                    parts.append(f"{len(extra)} region id(s) not in {city.name}'s {imagery} regions "
                                 f"(e.g. {', '.join(extra[:3])})")
                raise UserError(f"{path}: " + "; ".join(parts))
            self._rows = {rid: i for i, rid in enumerate(embeddings.region_ids)}

        def encode_regions(self, city, region_ids, context):
            return embeddings.vectors[np.asarray([self._rows[r] for r in region_ids])]

    return FileEmbeddings()
