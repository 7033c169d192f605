"""The hyper-molecule's scene: V(r, τ) with τ as napari sliders (Lederman, Andén & Singer 2020).

:func:`present` draws a :class:`~napari_cryohet.stages.hypermolecule.result.HyperMoleculeResult`
in the scene "Hyper-molecule · <run>" (3D):

* **posterior mean V(r, τ)**: one image with an axis per state ("knob": ``τ arm1``,
  ``τ arm2`` ...) before ``z, y, x``. The knob axes are scaled so that the slider reads τ
  itself (0 to 1); turning a slider plays the conformations — the paper's "knobs" (§5);
* **surface at τ**: the iso-surface of the map at the sliders' current states, recomputed
  whenever a slider moves (:func:`follow_sliders`);
* **posterior standard deviation**: the same axes, hidden at first (tick its eye): where
  the map is uncertain.

Volumes are in Å with the origin at the box centre, like every 3D scene
(docs/design.md, "Scenes").
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_cryohet.plugin._vae_scene import density_limits
from napari_cryohet.plugin.scenes import Scene, scene_name

__all__ = ["present", "MEAN_LAYER", "STD_LAYER", "SURFACE_LAYER", "TITLE", "knob_labels", "follow_sliders",
           "surface_at"]

TITLE = "Hyper-molecule"
MEAN_LAYER = "posterior mean V(r, τ)"
STD_LAYER = "posterior standard deviation"
SURFACE_LAYER = "surface at τ"
_ZYX = ("z (Å)", "y (Å)", "x (Å)")


def knob_labels(result: Any) -> tuple[str, ...]:
    """Axis names of the state axes: ``("τ arm1", "τ arm2")``."""
    return tuple(f"τ {name}" for name in result.state_names)


def _geometry(result: Any, volume_shape: tuple[int, ...]) -> tuple[tuple, tuple]:
    """``scale`` and ``translate`` of the maps: knob axes read τ ∈ [0, 1], space in Å, centred."""
    s = len(result.state_names)
    t = volume_shape[0] if s else 1
    d = volume_shape[-1]
    step = 1.0 / max(t - 1, 1)
    origin = -(d // 2) * float(result.apix)
    return (step,) * s + (float(result.apix),) * 3, (0.0,) * s + (origin,) * 3


def surface_at(result: Any, volume: np.ndarray, translate_a: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Iso-surface (2σ above the mean) of one ``(D, D, D)`` map, vertices in Å, centred."""
    from napari_cryohet.stages.vae import isosurface

    verts, faces = isosurface(np.asarray(volume, dtype=np.float32), level_sigma=2.0, apix=float(result.apix))
    if len(verts) == 0:  # a flat map: one degenerate triangle keeps the layer valid
        verts, faces = np.zeros((3, 3), np.float32), np.array([[0, 1, 2]])
    verts = verts + np.float32(translate_a)
    return verts, faces, np.ones(len(verts), dtype=np.float32)


def _current_knobs(viewer: Any, s: int, t: int) -> tuple[int, ...]:
    """The knob indices the sliders point at (the first ``s`` dims of the viewer)."""
    if s == 0 or viewer.dims.ndim < s + 3:
        return ()
    steps = viewer.dims.current_step[:s]
    return tuple(int(min(max(v, 0), t - 1)) for v in steps)


def present(session: Any, result: Any, *, show: bool = True) -> Scene:
    """Draw ``result`` in its scene; returns the scene (see the module docstring)."""
    from napari.layers import Image, Surface

    scene = session.scenes.scene(scene_name(TITLE, result.run_id or "latest"), kind="volume", ndisplay=3,
                                 run_id=result.run_id)
    mean = np.asarray(result.volumes_by_knob(), dtype=np.float32)
    std = np.asarray(result.volumes_std, dtype=np.float32).reshape(mean.shape)
    scale, translate = _geometry(result, mean.shape)
    labels = knob_labels(result) + _ZYX
    limits = density_limits(mean)

    def update_mean(layer):
        layer.data, layer.scale, layer.translate, layer.contrast_limits = mean, scale, translate, limits

    session.scenes.put(scene, MEAN_LAYER,
                       lambda: Image(mean, scale=scale, translate=translate, rendering="mip", colormap="gray",
                                     contrast_limits=limits, axis_labels=labels, opacity=0.6), update_mean)
    std_limits = (0.0, float(std.max()) or 1.0)

    def update_std(layer):
        layer.data, layer.scale, layer.translate, layer.contrast_limits = std, scale, translate, std_limits

    session.scenes.put(scene, STD_LAYER,
                       lambda: Image(std, scale=scale, translate=translate, rendering="mip", colormap="magma",
                                     blending="additive", contrast_limits=std_limits, axis_labels=labels,
                                     visible=False), update_std)
    s = len(result.state_names)
    t = mean.shape[0] if s else 1
    middle = (t // 2,) * s
    surface = surface_at(result, mean[middle] if s else mean, translate[-1])

    def update_surface(layer):
        layer.data = surface

    session.scenes.put(scene, SURFACE_LAYER,
                       lambda: Surface(surface, colormap="cyan", opacity=0.7, blending="translucent",
                                       axis_labels=_ZYX), update_surface)
    if show:
        session.scenes.show(scene)
        if s and session.viewer.dims.ndim >= s + 3:
            for axis in range(s):  # start in the middle of every knob
                session.viewer.dims.set_current_step(axis, t // 2)
    follow_sliders(session, scene, result, mean, translate[-1])
    return scene


def follow_sliders(session: Any, scene: Scene, result: Any, mean: np.ndarray, translate_a: float) -> None:
    """Recompute the scene's surface whenever a τ slider moves (while the scene is shown)."""
    s = len(result.state_names)
    if s == 0:
        return
    viewer = session.viewer
    t = mean.shape[0]
    state = {"knobs": None}

    def update(event=None) -> None:
        layer = scene.layer(SURFACE_LAYER)
        if layer is None or layer not in viewer.layers:
            return
        knobs = _current_knobs(viewer, s, t)
        if len(knobs) != s or knobs == state["knobs"]:
            return
        state["knobs"] = knobs
        layer.data = surface_at(result, mean[knobs], translate_a)

    previous = getattr(scene, "_slider_hook", None)
    if previous is not None:
        try:
            viewer.dims.events.current_step.disconnect(previous)
        except (TypeError, ValueError, RuntimeError):
            pass
    scene._slider_hook = update
    viewer.dims.events.current_step.connect(update)
    update()
