"""Scenes: each result shown on its own, framed, without touching the layer list.

napari has one scene per window: every layer shares one world coordinate system, the dims
sliders span the union of all layers, and the camera frames all of them. Results of
different stages live in incompatible worlds — a particle stack is (particle, y Å, x Å), a
spectral embedding is three dimensionless eigenvector coordinates of size ~1, an atomic
model and a decoded volume are (z, y, x) Å about the box centre — so drawn together they
hide each other (the stack's particle axis becomes the depth of a 3D block, a 1-unit
point cloud vanishes next to a 96 Å image). A :class:`Scene` is the set of layers of one
result with how to look at them (2D or 3D, axis names); :class:`SceneManager` keeps
exactly one scene *in* the viewer at a time: switching removes the other scenes' layers
from ``viewer.layers`` (the layer objects, their data and settings are kept and come back
unchanged), inserts this scene's, sets 2D/3D and frames the camera on them. Layers the
user adds by hand belong to no scene and stay.

Conventions (docs/design.md, "Scenes"): volumes and atomic models of a dataset are in Å
with the origin at the box centre (a voxel ``D//2`` sits at 0), so fitted chains sit
inside decoded density; layers whose first axis is the particle (the stack and its
per-particle overlays) are shown in 2D only — in 3D they are hidden, never drawn as a
block.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from psygnal import Signal

__all__ = ["Scene", "SceneManager", "SCENE_KEY", "ROLE_KEY", "PER_PARTICLE", "TRUTH_3D", "scene_name"]

#: ``layer.metadata`` key: the name of the scene a layer belongs to.
SCENE_KEY = "cryohet_scene"
#: ``layer.metadata`` key: what a layer is, for layers that arrive without a scene
#: (reader, sample data): :data:`PER_PARTICLE` or :data:`TRUTH_3D`.
ROLE_KEY = "cryohet_role"
#: The layer's first axis is the particle (a stack, per-particle atoms): 2D only.
PER_PARTICLE = "per_particle"
#: A ground-truth volume, surface or model in Å (sample data): the dataset's 3D truth scene.
TRUTH_3D = "truth_3d"


def scene_name(title: str, what: str) -> str:
    """The name a scene is listed under: ``"Spectral embedding · spectral/0001"``."""
    return f"{title} · {what}"


@dataclass(eq=False)
class Scene:
    """The layers of one result and how to look at them.

    Attributes
    ----------
    name
        Unique, shown in the session's scene list (``"Chain fit · chainfit/0002"``).
    kind
        ``"particles"``, ``"embedding"``, ``"model"``, ``"volume"`` or ``"truth"``.
    ndisplay
        2 or 3.
    layers
        The scene's napari layers (in the viewer only while the scene is current).
    run_id
        The run the scene shows (``None`` for a dataset's particles or ground truth).
    """

    name: str
    kind: str
    ndisplay: int = 2
    layers: list = field(default_factory=list)
    run_id: str | None = None

    def layer(self, name: str) -> Any:
        """The scene's layer called ``name``, or ``None``."""
        return next((lyr for lyr in self.layers if lyr.name == name), None)


class SceneManager:
    """Keeps one scene in the viewer at a time (see the module docstring).

    Signals: ``changed(scene_name)`` after a switch, ``listed()`` when a scene is added or
    removed.
    """

    changed = Signal(str)
    listed = Signal()

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        self.scenes: dict[str, Scene] = {}
        self.current: Scene | None = None
        self._switching = False
        self._retired: list = []  # drawing objects of removed layers (see _remove)
        viewer.dims.events.ndisplay.connect(self._on_ndisplay)

    # ------------------------------------------------------------------ building
    def scene(self, name: str, *, kind: str, ndisplay: int = 2, run_id: str | None = None) -> Scene:
        """The scene called ``name``, created (empty, not shown) if new."""
        if name not in self.scenes:
            self.scenes[name] = Scene(name, kind, ndisplay, run_id=run_id)
            self.listed.emit()
        return self.scenes[name]

    def add(self, scene: Scene, layer: Any) -> Any:
        """Make ``layer`` (a napari layer object) part of ``scene``; in the viewer if current."""
        layer.metadata[SCENE_KEY] = scene.name
        if layer not in scene.layers:
            scene.layers.append(layer)
        if scene is self.current and layer not in self.viewer.layers:
            self._insert(layer)
        elif scene is not self.current and layer in self.viewer.layers:
            self.viewer.layers.remove(layer)
        return layer

    def claim(self, scene: Scene, layer: Any) -> Any:
        """Record ``layer`` as part of ``scene`` without moving it (inside napari's own
        insert event, where a layer must not be removed); the next :meth:`show` settles it."""
        layer.metadata[SCENE_KEY] = scene.name
        if layer not in scene.layers:
            scene.layers.append(layer)
        return layer

    def put(self, scene: Scene, name: str, make: Callable[[], Any], update: Callable[[Any], None] | None = None):
        """The scene's layer ``name``: updated with ``update(layer)`` if it exists, else made by ``make()``."""
        layer = scene.layer(name)
        if layer is None:
            layer = make()
            layer.name = name
            return self.add(scene, layer)
        if update is not None:
            update(layer)
        return layer

    def remove(self, scene: Scene) -> None:
        """Forget ``scene`` and take its layers out of the viewer."""
        self._remove([layer for layer in scene.layers if layer in self.viewer.layers])
        self.scenes.pop(scene.name, None)
        if self.current is scene:
            self.current = None
        self.listed.emit()

    def owner(self, layer: Any) -> Scene | None:
        """The scene ``layer`` belongs to (``None``: a layer the user added)."""
        return self.scenes.get(layer.metadata.get(SCENE_KEY, ""))

    # ------------------------------------------------------------------ showing
    def show(self, scene: Scene | str, *, frame: bool = True) -> Scene:
        """Make ``scene`` the one in the viewer: its layers in, every other scene's out,
        its 2D/3D set, the camera framed on it."""
        for _ in self.show_steps(scene, frame=frame):
            pass
        return self.current

    def show_steps(self, scene: Scene | str, *, frame: bool = True):
        """:meth:`show` as a generator, one layer per step: a widget's result handler yields
        to the event loop between them (each new layer builds its drawing, under software
        OpenGL a fraction of a second), so the window keeps answering."""
        scene = self.scenes[scene] if isinstance(scene, str) else scene
        self._switching = True
        try:
            leaving = [layer for layer in self.viewer.layers
                       if self.owner(layer) is not None and self.owner(layer) is not scene]
            self._remove(leaving)
            if leaving:
                self._switching = False
                yield
                self._switching = True
            self.current = scene
            self.viewer.dims.ndisplay = scene.ndisplay
            for layer in scene.layers:
                if layer not in self.viewer.layers:
                    self._insert(layer)
                    self._apply_ndisplay()
                    self._switching = False
                    yield
                    self._switching = True
            self._apply_ndisplay()
        finally:
            self._switching = False
        if frame:
            self.frame()
        self.changed.emit(scene.name)

    def frame(self) -> None:
        """Fit the camera to the current scene's visible layers (angles reset in 3D)."""
        if self.current is None:
            return
        shown = [lyr for lyr in self.current.layers if lyr in self.viewer.layers and lyr.visible]
        # a 10 % margin: napari fits point centres, so edge points would be cut in half
        if shown and all(lyr.ndim == self.viewer.dims.ndim for lyr in shown):
            self.viewer.reset_view(layers=shown, margin=0.1)
        elif shown:  # napari frames a subset only when it spans every dimension
            self.viewer.reset_view(margin=0.1)

    def _remove(self, layers: list) -> None:
        """Take ``layers`` out of the viewer, keeping their drawing objects alive.

        napari deletes a layer's OpenGL objects when the layer leaves the viewer. Under the
        software OpenGL of headless machines (Mesa llvmpipe, what Xvfb gives CI and
        screenshot scripts), deleting those of two or more layers makes a later update of
        another points layer crash the process (segmentation fault in the driver;
        reproduced with plain napari 0.9.2 / vispy 0.17: two points layers removed, a new
        points layer recoloured twice). Holding the removed layers' visuals (small:
        vertex buffers, textures of one result) prevents it; they are freed with the
        session's window.
        """
        visuals = _layer_visuals(self.viewer)
        batched = getattr(self.viewer.layers, "batched_update", None)  # one scene-graph update, not one per layer
        with batched() if batched is not None else contextlib.nullcontext():
            for layer in layers:
                if layer in visuals:
                    self._retired.append(visuals[layer])
                self.viewer.layers.remove(layer)

    def _insert(self, layer: Any) -> None:
        """Images at the bottom of the layer list, markers and models over them."""
        from napari.layers import Image

        if isinstance(layer, Image):
            self.viewer.layers.insert(0, layer)
        else:
            self.viewer.layers.append(layer)

    def _on_ndisplay(self, event: Any = None) -> None:
        if not self._switching:
            self._apply_ndisplay()

    def _apply_ndisplay(self) -> None:
        """Per-particle layers only in 2D: in 3D the stack would be drawn as a block."""
        three_d = self.viewer.dims.ndisplay == 3
        for layer in self.viewer.layers:
            if layer.metadata.get(ROLE_KEY) == PER_PARTICLE:
                hidden_by_us = layer.metadata.get("cryohet_hidden_3d", False)
                if three_d and layer.visible:
                    layer.visible = False
                    layer.metadata["cryohet_hidden_3d"] = True
                elif not three_d and hidden_by_us:
                    layer.visible = True
                    layer.metadata["cryohet_hidden_3d"] = False


def _layer_visuals(viewer: Any) -> dict:
    """napari's layer → drawing object map of the viewer's canvas (empty without a window)."""
    try:
        return viewer.window._qt_viewer.canvas.layer_to_visual
    except AttributeError:
        return {}
