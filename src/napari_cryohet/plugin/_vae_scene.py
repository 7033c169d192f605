"""The scenes of a VAE result: its latent space, a decoded volume, a volume series.

Three scenes per run (Kimanius, Jamali & Scheres 2022): the latents as a 2D or 3D point
cloud (PCA or UMAP, coloured by any per-particle column; selecting points selects those
particles everywhere); the volume decoded at a picked latent point, with an iso-surface,
in Å about the box centre (the frame of fitted chains); and a volume series along a
latent path, whose slider is named "conformation".
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

__all__ = ["present", "show_volume", "show_series", "LATENT_LAYER", "VOLUME_LAYER", "SURFACE_LAYER",
           "PATH_VOLUME_LAYER", "axis_labels"]

LATENT_LAYER = "VAE latents"
VOLUME_LAYER = "VAE volume"
SURFACE_LAYER = "VAE surface"
PATH_VOLUME_LAYER = "VAE path volumes"
_ZYX = ("z (Å)", "y (Å)", "x (Å)")


def axis_labels(method: str, ndim: int) -> tuple[str, ...]:
    """``("UMAP 1 (scaled)", "UMAP 2 (scaled)")`` / ``("PCA 1 (scaled)", ...)`` (see :func:`equal_spread`)."""
    name = "UMAP" if method.startswith("umap") else "PCA"
    return tuple(f"{name} {j + 1} (scaled)" for j in range(ndim))


def present(session: Any, result: Any, *, show: bool = True, embedding: np.ndarray | None = None,
            method: str = "pca2", colour_by: str | None = None) -> Scene:
    """Draw the latents of ``result`` (a VAEResult) as a point cloud in their scene."""
    from napari_cryohet.stages.vae import embed_latents

    if embedding is None:  # PCA: instant, no compilation (UMAP is the widget's choice, in a worker)
        embedding, method = embed_latents(result.latents, method="pca2"), "pca2"
    embedding = equal_spread(embedding)
    ndim = embedding.shape[1]
    scene = session.scenes.scene(scene_name("VAE latent space", result.run_id or "latest"), kind="embedding",
                                 ndisplay=ndim, run_id=result.run_id)
    scene.ndisplay = ndim
    labels = axis_labels(method, ndim)
    old = scene.layer(LATENT_LAYER)
    if old is not None and old.data.shape[1] != ndim:  # 2D ↔ 3D: a new layer
        scene.layers.remove(old)
        if old in session.viewer.layers:
            session.viewer.layers.remove(old)

    def make():
        layer = embedding_points(embedding, name=LATENT_LAYER, columns=session.columns(result.particle_indices),
                                 axis_labels=labels, indices=result.particle_indices)
        link_selection(session, layer)
        return layer

    layer = session.scenes.put(scene, LATENT_LAYER, make, lambda lyr: update_points(lyr, embedding, labels))
    colour_points(layer, colour_by or preferred_column(layer.features.columns if layer.features is not None else []),
                  "turbo")
    if show:
        session.scenes.show(scene)
    return scene


def density_limits(volume: np.ndarray) -> tuple[float, float]:
    """Contrast limits that show the molecule, not its box: from the 70th percentile (the
    solvent and noise, most of the box, stay black in a maximum-intensity view) to the 99.9th."""
    lo, hi = np.percentile(np.asarray(volume, dtype=np.float32), [70.0, 99.9])
    return float(lo), float(hi) if hi > lo else float(lo) + 1.0


def equal_spread(embedding: np.ndarray) -> np.ndarray:
    """Each axis centred and scaled to unit standard deviation, as a scatter plot scales its
    axes: the first principal component of latents often spreads several times more than
    the second, which would draw the cloud as a thin stripe in napari's equal-aspect view."""
    x = np.asarray(embedding, dtype=np.float64)
    std = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)


def _put_density(session: Any, scene: Scene, name: str, data: np.ndarray, scale: tuple, translate: tuple,
                 labels: tuple) -> None:
    """The scene's density image ``name`` (maximum intensity, :func:`density_limits`), made or updated."""
    from napari.layers import Image

    limits = density_limits(data)

    def update(layer):
        layer.data = data
        layer.contrast_limits = limits

    session.scenes.put(scene, name, lambda: Image(data, scale=scale, translate=translate, rendering="mip",
                                                  colormap="gray", contrast_limits=limits, axis_labels=labels), update)


def _centred(d: int, apix: float) -> tuple[float, float, float]:
    return (-(d // 2) * apix,) * 3


def show_volume(session: Any, result: Any, volume: np.ndarray, surface: tuple[np.ndarray, np.ndarray],
                *, show: bool = False) -> Scene:
    """The decoded ``volume`` (and its iso-surface, vertices in Å from voxel 0) in the run's volume scene."""
    from napari.layers import Surface

    apix, d = float(result.apix), volume.shape[-1]
    shift = np.asarray(_centred(d, apix))
    verts, faces = surface
    verts = np.asarray(verts, dtype=np.float32) + shift.astype(np.float32)
    scene = session.scenes.scene(scene_name("VAE decoded volume", result.run_id or "latest"), kind="volume",
                                 ndisplay=3, run_id=result.run_id)
    _put_density(session, scene, VOLUME_LAYER, volume, (apix,) * 3, tuple(shift), _ZYX)

    def update_surface(layer):
        layer.data = (verts, faces)

    session.scenes.put(scene, SURFACE_LAYER, lambda: Surface((verts, faces), colormap="bop orange", opacity=0.8,
                                                             axis_labels=_ZYX), update_surface)
    if show:
        session.scenes.show(scene)
    return scene


def show_series(session: Any, result: Any, series: np.ndarray, *, show: bool = True) -> Scene:
    """A ``(steps, D, D, D)`` volume series along a latent path; the slider is the conformation."""

    apix, d = float(result.apix), series.shape[-1]
    scene = session.scenes.scene(scene_name("VAE volume series", result.run_id or "latest"), kind="volume",
                                 ndisplay=3, run_id=result.run_id)

    _put_density(session, scene, PATH_VOLUME_LAYER, series, (1.0,) + (apix,) * 3, (0.0, *_centred(d, apix)),
                 ("conformation along the path", *_ZYX))
    if show:
        session.scenes.show(scene)
    return scene
