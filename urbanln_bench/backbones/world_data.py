"""The pretraining world as a labelled image set for surrogate pretraining.

Images of the pretraining-world cities (``cities/pretraining_world``) with multi-hot labels: which
object names of the scene-graph vocabulary are in the image. Used to pretrain the ResNet-18 surrogate
(supervised, like ImageNet pretraining, but on synthetic urban scenes no benchmark twin contains).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class WorldImages:
    images: list[np.ndarray]
    labels: np.ndarray  # (n, V) float32 multi-hot
    vocabulary: list[str]
    manifests: list[str]  # data manifest hash of each world city (provenance)


def world_scale_for(profile: str) -> str:
    return "tiny" if profile == "smoke" else "small"


def world_manifests(profile: str) -> list[str]:
    """Content hashes of the pretraining-world cities a profile trains on (generated once, cached).

    Backbone cache keys use these rather than the generator's code, so a refactor of the generator
    that leaves every byte of the world unchanged does not retrain the surrogates.
    """
    from urbanln_bench.data.loader import CityData
    from urbanln_bench.specs import pretraining_world
    from urbanln_bench.synth.twin import ensure_twin

    return [CityData.open(ensure_twin(spec, world_scale_for(profile))).manifest_hash for spec in pretraining_world()]


def load_world_images(profile: str) -> WorldImages:
    from urbanln_bench.data.loader import CityData
    from urbanln_bench.specs import pretraining_world
    from urbanln_bench.synth.twin import ensure_twin

    images, names_per_image, manifests = [], [], []
    for spec in pretraining_world():
        data = CityData.open(ensure_twin(spec, world_scale_for(profile)))
        manifests.append(data.manifest_hash)
        for imagery in ("SI", "SV"):
            for image_id, graph in sorted(data.scene_graphs(imagery).items()):
                images.append(data.load_image(image_id))
                names_per_image.append({obj["name"] for obj in graph["objects"]})
    vocabulary = sorted(set().union(*names_per_image))
    position = {name: i for i, name in enumerate(vocabulary)}
    labels = np.zeros((len(images), len(vocabulary)), np.float32)
    for i, names in enumerate(names_per_image):
        labels[i, [position[n] for n in names]] = 1.0
    return WorldImages(images, labels, vocabulary, manifests)
