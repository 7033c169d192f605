"""The scene of a spectral-embedding result: three eigenvectors as a 3D point cloud.

Each particle is the point ``sqrt(N) · (φa, φb, φc)`` (the O(1) scaling of Esteve-Yagüe et
al. 2022, §2.2), coloured by any per-particle column of the session (ground truth,
defocus, another run's vectors), in a 3D scene of its own; selecting points selects those
particles everywhere (:mod:`napari_cryohet.plugin._embedding_layer`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_cryohet.plugin._embedding_layer import (
    colour_points,
    embedding_points,
    link_selection,
    preferred_column,
    update_points,
)
from napari_cryohet.plugin.scenes import Scene, scene_name

__all__ = ["present", "LAYER_NAME", "TITLE", "points_data"]

LAYER_NAME = "spectral embedding"
TITLE = "Spectral embedding"


def points_data(result: Any, triple: tuple[int, int, int]) -> np.ndarray:
    """``(N, 3)`` coordinates ``sqrt(N) · Φ[:, (a, b, c)]``."""
    phi = result.eigenvectors
    return np.sqrt(len(phi)) * phi[:, list(triple)]


def axis_labels(triple: tuple[int, int, int]) -> tuple[str, str, str]:
    return tuple(f"eigenvector {j}" for j in triple)


def present(session: Any, result: Any, *, show: bool = True, triple: tuple[int, int, int] | None = None,
            colour_by: str | None = None) -> Scene:
    """Draw ``result`` (a :class:`~napari_cryohet.stages.spectral.SpectralResult`) in its scene."""
    k = result.eigenvectors.shape[1]
    triple = triple or tuple(min(j, k - 1) for j in (1, 2, 3))
    scene = session.scenes.scene(scene_name(TITLE, result.run_id or "latest"), kind="embedding", ndisplay=3,
                                 run_id=result.run_id)
    data, labels = points_data(result, triple), axis_labels(triple)

    def make():
        layer = embedding_points(data, name=LAYER_NAME, columns=session.columns(result.indices), axis_labels=labels,
                                 indices=result.indices)
        link_selection(session, layer)
        return layer

    layer = session.scenes.put(scene, LAYER_NAME, make, lambda lyr: update_points(lyr, data, labels))
    colour_points(layer, colour_by or preferred_column(layer.features.columns if layer.features is not None else []))
    if show:
        session.scenes.show(scene)
    return scene
