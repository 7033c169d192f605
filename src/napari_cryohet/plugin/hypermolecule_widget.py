"""Hyper-molecule sampler dock widget (Lederman, Andén & Singer 2020).

Thin (docs/design.md): the settings form is generated from
:class:`~napari_cryohet.stages.hypermolecule.config.HyperMoleculeConfig`, the run goes through
the window's session off the GUI thread (:class:`~napari_cryohet.plugin._runner.StageRunner`,
progress and *Cancel*), and the result is drawn by
:mod:`napari_cryohet.plugin._hypermolecule_scene` (V(r, τ) with τ as napari sliders, the
surface at the sliders' states, the posterior standard deviation).

What the dock adds is the **regions** of the composite hyper-molecule (001 eq. 25–27,
Remark 5): each component is a ball, drawn as a point of its diameter in the scene
"Hyper-molecule regions" over the particles' map (the simulator's ground truth when there
is one). Drag a ball to move it; pick one and set its name, radius, how many knobs it has
(rigid, 1 or 2), how much its density may change along a knob, and whether it is a copy of
another component (same density, own knob: the pretzel's two arms). *Load layout* starts
from the simulator's pretzel or cat layout or one ball. Below the run: a histogram of each
knob's recovered states, the kernels' acceptance rates and the log posterior per sweep.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSpinBox, Label, LineEdit, PushButton, SpinBox

from napari_cryohet.plugin import _hypermolecule_scene
from napari_cryohet.plugin._config_form import ConfigForm
from napari_cryohet.plugin._docking import ScrollDock
from napari_cryohet.plugin._runner import StageRunner
from napari_cryohet.plugin._stage_run import start_stage_run
from napari_cryohet.plugin._workspace_picker import WorkspacePicker
from napari_cryohet.plugin.dataset_picker import DatasetPicker
from napari_cryohet.plugin.scenes import scene_name
from napari_cryohet.plugin.session import Session
from napari_cryohet.stages.hypermolecule.config import (
    DEFAULT_LAYOUTS,
    HyperMoleculeConfig,
    default_layout,
    layout_components,
)

__all__ = ["HyperMoleculeWidget", "HyperMoleculeDock", "REGIONS_LAYER", "KINDS"]

REGIONS_LAYER = "regions"
REGIONS_TITLE = "Hyper-molecule regions"
#: Choice shown for each number of knobs (``state_dim``).
KINDS = {0: "rigid", 1: "1 knob (heterogeneous)", 2: "2 knobs (heterogeneous)"}
_KIND_COLOURS = {0: (0.6, 0.6, 0.6, 0.35), 1: (1.0, 0.55, 0.0, 0.4), 2: (0.85, 0.2, 0.85, 0.4)}
_NO_COPY = "(its own density)"


def _copy_centre(layout: dict[str, Any], comp: dict[str, Any]) -> np.ndarray:
    """Centre (x, y, z) Å of ``comp``: its own, or its source's moved by the copy's rigid transform."""
    if "copy_of" not in comp:
        return np.asarray(comp.get("centre_a", (0.0, 0.0, 0.0)), dtype=np.float64)
    source = next(c for c in layout["components"] if c["name"] == comp["copy_of"])
    rot = np.asarray(comp.get("copy_rotation", np.eye(3)), dtype=np.float64)
    return rot @ _copy_centre(layout, source) + np.asarray(comp.get("copy_translation_a", (0, 0, 0)), np.float64)


def _radius(layout: dict[str, Any], comp: dict[str, Any]) -> float:
    if "copy_of" in comp and "radius_a" not in comp:
        return _radius(layout, next(c for c in layout["components"] if c["name"] == comp["copy_of"]))
    return float(comp.get("radius_a", 10.0))


class HyperMoleculeWidget(Container):
    """Dock widget of the hyper-molecule sampler.

    Attributes
    ----------
    session, dataset, result
        The window's :class:`Session`, the dataset in use, the latest result.
    form
        The settings (:class:`ConfigForm` of :class:`HyperMoleculeConfig`, without ``regions``).
    region_layout
        The regions being edited: ``{"components": [...]}`` as in ``regions.json``.
    layout_choice, load_button
        Start from the simulator's pretzel / cat layout, or "auto".
    region, region_name, radius, kind, state_order, copy_of, apply_button, add_button, remove_button
        The picked region and its settings.
    run_button, runner
        Start button and the :class:`StageRunner`.
    plot_canvas, plot_axes
        State histograms, acceptance rates and the log posterior per sweep.
    """

    def __init__(self, napari_viewer, dataset: Any = None) -> None:
        self.viewer = napari_viewer
        self.session = Session.for_viewer(napari_viewer)
        self.dataset: Any = None
        self.result = None
        self.region_layout: dict[str, Any] = {"components": []}
        self.dataset_picker = DatasetPicker(napari_viewer, on_pick=self._on_pick)
        self.workspace = WorkspacePicker("hypermolecule", session=self.session)
        self.layout_choice = ComboBox(label="layout", choices=("auto", *DEFAULT_LAYOUTS), value="auto",
                                      tooltip="auto: the simulator's own layout for pretzel and cat data, one "
                                              "heterogeneous ball otherwise")
        self.load_button = PushButton(text="Load layout")
        self.region = ComboBox(label="region", choices=self._region_choices,
                               tooltip="the region (ball) whose settings are shown below; drag its ball in the "
                                       "regions scene to move it")
        self.region_name = LineEdit(label="name", value="")
        self.radius = FloatSpinBox(label="radius (Å)", value=20.0, min=1.0, max=1000.0, step=1.0,
                                   tooltip="the ball the component's density lives in (balls may overlap)")
        self.kind = ComboBox(label="knobs", choices=list(KINDS.values()), value=KINDS[1],
                             tooltip="rigid: the same density in every particle; 1 or 2 knobs: the density changes "
                                     "with the particle's own state(s) τ ∈ [0, 1]")
        self.state_order = SpinBox(label="state detail", value=2, min=0, max=12,
                                   tooltip="how many wiggles the density may make along a knob (degree of the "
                                           "functions of τ)")
        self.copy_of = ComboBox(label="copy of", choices=self._copy_choices,
                                tooltip="the same density as another component, turned by 180° about z, with its "
                                        "own knob (the pretzel's two arms)")
        self.apply_button = PushButton(text="Apply to this region")
        self.add_button = PushButton(text="Add a region")
        self.remove_button = PushButton(text="Remove this region")
        region_buttons = Container(widgets=[self.apply_button, self.add_button, self.remove_button],
                                   layout="horizontal", labels=False)
        self.form = ConfigForm(HyperMoleculeConfig, exclude=("regions",), label="settings")
        self.run_button = PushButton(text="Sample the hyper-molecule")
        self.runner = StageRunner()
        self.info = Label(value="")
        self.info.native.setWordWrap(True)
        super().__init__(widgets=[
            self.dataset_picker, self.workspace, self.layout_choice, self.load_button, self.region,
            self.region_name, self.radius, self.kind, self.state_order, self.copy_of, region_buttons, self.form,
            self.run_button, self.runner, self.info,
        ])
        from napari_cryohet.plugin.refine_widget import _make_canvas

        self.plot_canvas, self.plot_axes = _make_canvas(height=4.2)
        fig = self.plot_axes.figure
        fig.clear()
        self.plot_axes = [fig.add_subplot(3, 1, i + 1) for i in range(3)]
        self.native.layout().addWidget(self.plot_canvas)
        self.load_button.changed.connect(lambda *_: self.load_layout(self.layout_choice.value))
        self.region.changed.connect(lambda *_: self._show_region())
        self.apply_button.changed.connect(lambda *_: self.apply_region())
        self.add_button.changed.connect(lambda *_: self.add_region())
        self.remove_button.changed.connect(lambda *_: self.remove_region())
        self.run_button.changed.connect(self.run)
        if dataset is not None:
            self.set_dataset(dataset)
        else:
            self.dataset_picker.deliver()
        latest = self.session.run_choices(("hypermolecule",))
        if self.result is None and latest:
            self.show_result(self.session.result(latest[0][0]), show=False)

    # ------------------------------------------------------------------ dataset
    def _on_pick(self, picked: Any) -> None:
        if picked is not self.dataset:
            self.dataset = picked
            self.info.value = f"{len(picked)} particles"
            self.load_layout("auto", show=False)

    def set_dataset(self, dataset: Any) -> None:
        """Use ``dataset`` in this window (its default layout is loaded)."""
        self.session.set_dataset(dataset)
        self._on_pick(dataset)

    # ------------------------------------------------------------------ regions
    def _names(self) -> list[str]:
        return [c["name"] for c in self.region_layout["components"]]

    def _region_choices(self, _widget=None) -> list[str]:
        return self._names() or ["(no region)"]

    def _copy_choices(self, _widget=None) -> list[str]:
        return [_NO_COPY, *(c["name"] for c in self.region_layout["components"] if "copy_of" not in c)]

    def _component(self, name: str | None = None) -> dict[str, Any] | None:
        name = self.region.value if name is None else name
        return next((c for c in self.region_layout["components"] if c["name"] == name), None)

    def load_layout(self, name: str = "auto", *, show: bool = True) -> dict[str, Any]:
        """Start the regions from a named layout (``auto``: the dataset's default)."""
        if name == "auto":
            layout = default_layout(self.dataset) if self.dataset is not None else DEFAULT_LAYOUTS["pretzel"]
        else:
            layout = DEFAULT_LAYOUTS[name]
        self.region_layout = copy.deepcopy(layout)
        self._refresh(show=show)
        return self.region_layout

    def set_layout(self, layout: dict[str, Any]) -> None:
        """Use ``layout`` (checked: a ``ValueError`` names the component and key)."""
        layout_components(layout, source="the regions")
        self.region_layout = copy.deepcopy(layout)
        self._refresh()

    def add_region(self) -> dict[str, Any]:
        """A new rigid ball at the box centre, 20 Å across (then pick its settings)."""
        k = len(self.region_layout["components"]) + 1
        while f"region{k}" in self._names():
            k += 1
        comp = {"name": f"region{k}", "centre_a": [0.0, 0.0, 0.0], "radius_a": 10.0, "state_dim": 0}
        self.region_layout["components"].append(comp)
        self._refresh(current=comp["name"])
        return comp

    def remove_region(self) -> None:
        """Remove the picked region (and any copy of it)."""
        name = self.region.value
        self.region_layout["components"] = [c for c in self.region_layout["components"]
                                     if c["name"] != name and c.get("copy_of") != name]
        self._refresh()

    def apply_region(self) -> bool:
        """Set the picked region's name, radius, knobs, state detail and copy source from the form."""
        comp = self._component()
        if comp is None:
            return False
        new = dict(comp)
        old_name, name = comp["name"], self.region_name.value.strip() or comp["name"]
        if name != old_name and name in self._names():
            self.info.value = f"a region is already called {name!r}"
            return False
        new["name"] = name
        new["state_dim"] = next(k for k, v in KINDS.items() if v == self.kind.value)
        new["state_order"] = int(self.state_order.value)
        source = self.copy_of.value
        if source not in (_NO_COPY, None) and source != old_name:
            new.pop("centre_a", None)
            new.pop("radius_a", None)
            new["copy_of"] = source
            new.setdefault("copy_rotation", [[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]])
            new.setdefault("copy_translation_a", [0.0, 0.0, 0.0])
        else:
            if "copy_of" in new:
                new["centre_a"] = [float(v) for v in _copy_centre(self.region_layout, comp)]
            for key in ("copy_of", "copy_rotation", "copy_translation_a"):
                new.pop(key, None)
            new["radius_a"] = float(self.radius.value)
        components = [new if c is comp else c for c in self.region_layout["components"]]
        for c in components:  # copies follow a renamed source
            if c.get("copy_of") == old_name:
                c["copy_of"] = name
        trial = {"components": components}
        try:
            layout_components(trial, source="the regions")
        except ValueError as err:
            self.info.value = str(err)
            return False
        self.region_layout = trial
        self._refresh(current=name)
        return True

    def _show_region(self) -> None:
        comp = self._component()
        if comp is None:
            return
        self.region_name.value = comp["name"]
        self.radius.value = _radius(self.region_layout, comp)
        self.kind.value = KINDS[int(comp.get("state_dim", 0))]
        self.state_order.value = int(comp.get("state_order", 2))
        self.copy_of.reset_choices()
        self.copy_of.value = comp.get("copy_of", _NO_COPY)
        self.radius.enabled = "copy_of" not in comp

    def _refresh(self, *, current: str | None = None, show: bool = True) -> None:
        self.region.reset_choices()
        self.copy_of.reset_choices()
        names = self._names()
        if names:
            self.region.value = current if current in names else names[-1 if current else 0]
        self._show_region()
        self.draw_regions(show=show)

    def regions_scene(self):
        what = self.session.dataset_name(self.dataset) or "particles"
        return self.session.scenes.scene(scene_name(REGIONS_TITLE, what), kind="volume", ndisplay=3)

    def draw_regions(self, *, show: bool = True) -> Any:
        """The regions as balls (points of their diameter, (z, y, x) Å) over the particles' map."""
        from napari.layers import Image, Points

        scene = self.regions_scene()
        comps = self.region_layout["components"]
        centres = np.array([_copy_centre(self.region_layout, c)[::-1] for c in comps], dtype=np.float64).reshape(-1, 3)
        sizes = np.array([2.0 * _radius(self.region_layout, c) for c in comps], dtype=np.float64)
        colours = np.array([_KIND_COLOURS[int(c.get("state_dim", 0))] for c in comps]).reshape(-1, 4)
        features = {"name": [c["name"] for c in comps],
                    "copy": ["copy of " + c["copy_of"] if "copy_of" in c else "" for c in comps]}
        truth = (getattr(self.dataset, "ground_truth", None) or {}).get("global/volumes")
        if truth is not None and scene.layer("map") is None:
            volume = np.asarray(truth, dtype=np.float32)
            volume = volume.mean(0) if volume.ndim == 4 else volume
            origin = -(volume.shape[-1] // 2) * float(self.dataset.apix)
            self.session.scenes.put(scene, "map", lambda: Image(
                volume, scale=(float(self.dataset.apix),) * 3, translate=(origin,) * 3, rendering="mip",
                colormap="gray", opacity=0.7, axis_labels=("z (Å)", "y (Å)", "x (Å)")))

        def make():
            layer = Points(centres, size=sizes, face_color=colours, border_color="white", features=features,
                           text={"string": "{name}", "color": "white", "size": 11}, ndim=3, shading="spherical",
                           opacity=0.6, axis_labels=("z (Å)", "y (Å)", "x (Å)"))
            layer.events.data.connect(lambda event: self._on_points_moved())
            return layer

        def update(layer):
            with layer.events.data.blocker():
                layer.data = centres
            layer.features = features
            layer.size = sizes
            layer.face_color = colours
            layer.refresh()

        layer = self.session.scenes.put(scene, REGIONS_LAYER, make, update)
        if show:
            self.session.scenes.show(scene)
        return layer

    def _on_points_moved(self) -> None:
        """A ball was dragged: its component's centre follows (copies are placed by their source)."""
        layer = self.regions_scene().layer(REGIONS_LAYER)
        if layer is None or len(layer.data) != len(self.region_layout["components"]):
            self.draw_regions(show=False)
            return
        for comp, zyx in zip(self.region_layout["components"], np.asarray(layer.data), strict=True):
            if "copy_of" not in comp:
                comp["centre_a"] = [float(v) for v in zyx[::-1]]
        self.draw_regions(show=False)

    # ------------------------------------------------------------------ run
    def config(self) -> HyperMoleculeConfig:
        """The stage config: the form's settings with the drawn regions (``ValueError`` naming a bad entry)."""
        config = self.form.config()
        if self.region_layout["components"]:
            layout_components(self.region_layout, source="the regions")
            config = dataclasses.replace(config, regions=copy.deepcopy(self.region_layout))
        return config

    def run(self, *_: Any) -> None:
        """Sample in a worker thread (in the workspace when a folder is chosen)."""
        start_stage_run(self, "hypermolecule", self.show_result_steps)

    def show_result(self, result: Any, *, show: bool = True) -> None:
        """Draw ``result`` (scene, plots)."""
        for _ in self.show_result_steps(result, show=show):
            pass

    def show_result_steps(self, result: Any, *, show: bool = True):
        """:meth:`show_result` as a generator (the runner gives the event loop a turn between steps)."""
        self.result = result
        self.form.set_config(dataclasses.replace(result.config, regions=None))
        if result.config.regions:
            self.region_layout = copy.deepcopy(result.config.regions)
            self._refresh(show=False)
        rates = ", ".join(f"{k} {v:.2f}" for k, v in result.acceptance.items())
        self.info.value = (f"{result.run_id or 'result'}: {len(result.indices)} particles, knobs "
                           f"{', '.join(result.state_names) or 'none'}; acceptance {rates}; "
                           f"{result.seconds:.0f} s. Turn the τ sliders under the canvas to play the states.")
        self.plot()
        yield
        self.session.add_result(result)
        _hypermolecule_scene.present(self.session, result, show=show)
        yield

    def plot(self) -> None:
        """State histograms, acceptance rates and the log posterior per sweep of :attr:`result`."""
        hist_ax, rate_ax, trace_ax = self.plot_axes
        for ax in self.plot_axes:
            ax.clear()
        result = self.result
        if result is None:
            self.plot_canvas.draw_idle()
            return
        for j, name in enumerate(result.state_names):
            hist_ax.hist(result.tau_mean[:, j], bins=20, range=(0.0, 1.0), alpha=0.6, label=name)
        hist_ax.set_xlabel("recovered state τ (posterior mean per particle)", fontsize=8)
        hist_ax.set_ylabel("particles", fontsize=8)
        if result.state_names:
            hist_ax.legend(fontsize=7)
        kernels = list(result.acceptance)
        rate_ax.bar(range(len(kernels)), [result.acceptance[k] for k in kernels], color="tab:orange")
        rate_ax.set_xticks(range(len(kernels)), kernels, fontsize=7)
        rate_ax.set_ylim(0.0, 1.0)
        rate_ax.set_ylabel("acceptance", fontsize=8)
        trace = np.asarray(result.traces.get("log_posterior", np.zeros((1, 0))))
        for c, row in enumerate(np.atleast_2d(trace)):
            trace_ax.plot(np.arange(1, len(row) + 1), row, lw=1, label=f"chain {c + 1}")
        trace_ax.set_xlabel("sweep", fontsize=8)
        trace_ax.set_ylabel("log posterior", fontsize=8)
        for ax in self.plot_axes:
            ax.tick_params(labelsize=7)
        self.plot_axes[0].figure.tight_layout()
        self.plot_canvas.draw_idle()


class HyperMoleculeDock(ScrollDock):
    """The Plugins-menu entry: :class:`HyperMoleculeWidget` in a scroll area, tabbed with the other stages."""

    def __init__(self, napari_viewer) -> None:
        super().__init__(HyperMoleculeWidget(napari_viewer))
