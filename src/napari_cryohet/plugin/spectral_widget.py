"""Spectral-embedding dock widget: eigenvector triples as a 3D points layer.

Thin (docs/design.md): the settings form is generated from
:class:`~napari_cryohet.stages.spectral.SpectralConfig` (``ConfigForm``: every field with
its unit and help), the :class:`~napari_cryohet.plugin._workspace_picker.WorkspacePicker`
chooses the workspace folder and an optional input run (``features``: a finished VAE,
spectral or chain-fit run whose per-particle vectors — VAE latents, say — are embedded
with the ``"table"`` representation), and
:class:`~napari_cryohet.plugin._runner.StageRunner` runs the stage off the GUI thread:
through ``Workspace.run`` when a folder is chosen (a run ``spectral/NNNN`` that the chain
fit can take as input), in memory otherwise. The result becomes

* a points layer ``"spectral embedding φa φb φc"`` whose data is ``sqrt(N) · Φ[:, (a, b, c)]``
  (the O(1) scale of Esteve-Yagüe et al. 2022 §2.2). Changing the triple only swaps the
  layer data (no recomputation); ``layer.features`` holds every per-particle column
  (:func:`~napari_cryohet.stages.particle_columns.particle_columns`) and the face colour
  follows the chosen one through ``face_colormap``;
* an eigenvalue plot (matplotlib, in the dock);
* a link to the particle stack viewer: selecting points calls
  ``StackViewerWidget.show_particles`` on a stack viewer docked in the same viewer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from magicgui.widgets import ComboBox, Container, Label, PushButton, SpinBox

from napari_cryohet.plugin._config_form import ConfigForm
from napari_cryohet.plugin._runner import StageRunner
from napari_cryohet.plugin._workspace_picker import NO_RUN, WorkspacePicker
from napari_cryohet.plugin.dataset_picker import DatasetPicker
from napari_cryohet.stages.particle_columns import particle_columns
from napari_cryohet.stages.protocol import Embedding, ParticleMismatchError, dataset_indices
from napari_cryohet.stages.spectral import SpectralConfig, SpectralResult, run_spectral

__all__ = ["SpectralWidget", "LAYER_NAME"]

LAYER_NAME = "spectral embedding"


class SpectralWidget(Container):
    """Dock widget of the spectral stage.

    Attributes
    ----------
    form
        The settings (:class:`ConfigForm` of :class:`SpectralConfig`; ``form.<field>`` is a
        field's widget).
    workspace
        Workspace folder and the ``features`` input run picker.
    phi_a, phi_b, phi_c
        Eigenvector indices shown on the three axes.
    color_by
        Per-particle column colouring the points.
    run_button, runner
        Start button and the :class:`StageRunner` (progress, cancel, ``last_result``).
    dataset, result, layer
        The dataset in use, the latest :class:`SpectralResult`, the points layer.
    eigen_canvas, eigen_axes
        The eigenvalue plot.
    stack_viewer
        The stack viewer that selections are sent to (found in the viewer's docks when
        ``None``).
    """

    def __init__(self, napari_viewer, dataset: Any = None) -> None:
        self.viewer = napari_viewer
        self.dataset: Any = None
        self._columns: dict[str, np.ndarray] = {}
        self.dataset_picker = DatasetPicker(napari_viewer, on_pick=self._on_pick)
        self.workspace = WorkspacePicker("spectral")
        self.form = ConfigForm(SpectralConfig, label="settings")
        self.run_button = PushButton(text="Compute embedding")
        self.runner = StageRunner()
        self.phi_a = SpinBox(label="φ a", value=1, min=0, max=199)
        self.phi_b = SpinBox(label="φ b", value=2, min=0, max=199)
        self.phi_c = SpinBox(label="φ c", value=3, min=0, max=199)
        self.color_by = ComboBox(label="colour by", choices=lambda _w: list(self._columns))
        self.info = Label(value="")
        super().__init__(widgets=[
            self.dataset_picker, self.workspace, self.form, self.run_button, self.runner,
            self.phi_a, self.phi_b, self.phi_c, self.color_by, self.info,
        ])
        self.eigen_canvas, self.eigen_axes = _make_canvas()
        self.native.layout().addWidget(self.eigen_canvas)
        self.result: SpectralResult | None = None
        self.layer = None
        self.stack_viewer = None
        self.run_button.changed.connect(self.run)
        self.workspace.inputs["features"].changed.connect(self._on_features_picked)
        for w in (self.phi_a, self.phi_b, self.phi_c):
            w.changed.connect(self.update_triple)
        self.color_by.changed.connect(self.update_colors)
        if dataset is not None:
            self.set_dataset(dataset)
        else:
            self.dataset_picker.deliver()

    # ------------------------------------------------------------------ dataset
    def _on_pick(self, picked: Any) -> None:
        if picked is not self.dataset:
            self.set_dataset(picked)

    def set_dataset(self, dataset: Any) -> None:
        """Use ``dataset`` (a ParticleDataset or the box-arms Toy2DDataset)."""
        self.dataset = dataset
        self._columns = particle_columns(dataset)
        self.color_by.reset_choices()
        for name in ("truth_state", "truth_state_0", "truth_state_params", "truth_state_params_0", "labels",
                     "defocus_a"):
            if name in self._columns:
                self.color_by.value = name
                break
        table = getattr(dataset, "table", None)
        numeric = [] if table is None else [str(c) for c in table.columns if pd.api.types.is_numeric_dtype(table[c])]
        help_text = self.form.columns.tooltip.split(" Numeric columns:")[0]
        self.form.columns.tooltip = f"{help_text} Numeric columns: {', '.join(numeric) or 'none'}."
        self.info.value = f"{len(dataset)} particles"

    def _on_features_picked(self, value: Any) -> None:
        if value not in (None, NO_RUN):  # another run's vectors are embedded with the table representation
            self.form.representation.value = "table"

    # ------------------------------------------------------------------ run
    def config(self) -> SpectralConfig:
        """The stage config the form describes (``ValueError`` naming a bad entry)."""
        return self.form.config()

    def run(self, *_: Any, features: Embedding | None = None) -> None:
        """Compute the embedding in a worker thread.

        With a workspace folder chosen the run goes through ``Workspace.run`` (inputs from
        the run pickers); otherwise in memory, with ``features`` (an
        :class:`~napari_cryohet.stages.protocol.Embedding`) for the table representation.
        """
        if self.dataset is None:
            self.runner.status.value = "no dataset: open a particle stack or call set_dataset"
            return
        dataset = self.dataset
        try:
            config = self.config()
            ws = self.workspace.workspace_for(dataset)
        except ValueError as err:
            self.runner.status.value = f"error: {err}"
            return
        if ws is not None:
            if features is not None:
                self.runner.status.value = "error: with a workspace folder, pick the input run in 'features from run'"
                return
            inputs = self.workspace.input_ids()

            def job(progress, cancel):
                return ws.run("spectral", config, inputs=inputs, progress=progress, cancel=cancel, dataset=dataset)
        else:
            def job(progress, cancel):
                return run_spectral(dataset, config, features=features, progress=progress, cancel=cancel)

        self.runner.start(job, self._on_result)

    def _on_result(self, result: SpectralResult) -> None:
        self.show_result(result)
        if result.run_id is not None:
            self.workspace.refresh()  # the new run can feed another stage

    def show_result(self, result: SpectralResult) -> None:
        """Draw ``result``: points layer for the current triple, eigenvalue plot; the form
        shows the settings that produced it."""
        self.result = result
        self.form.set_config(result.config)
        k = result.eigenvectors.shape[1]
        for w in (self.phi_a, self.phi_b, self.phi_c):
            w.max = k - 1
        where = f" (run {result.run_id})" if result.run_id else ""
        self.info.value = f"{len(result.indices)} particles x {k} eigenvectors{where}"
        self._plot_eigenvalues()
        self.update_triple()

    def triple(self) -> tuple[int, int, int]:
        return int(self.phi_a.value), int(self.phi_b.value), int(self.phi_c.value)

    def points_data(self) -> np.ndarray:
        """``(N, 3)`` coordinates ``sqrt(N) · Φ[:, (a, b, c)]`` of the current triple."""
        phi = self.result.eigenvectors
        return np.sqrt(len(phi)) * phi[:, list(self.triple())]

    def _result_columns(self) -> dict[str, np.ndarray]:
        """The dataset's per-particle columns in the result's row order (empty if they do not match)."""
        if not self._columns or self.dataset is None:
            return {}
        indices = dataset_indices(self.dataset)
        if np.array_equal(indices, self.result.indices):
            return self._columns
        try:
            rows = Embedding(np.arange(len(indices)), indices).aligned_to(self.result.indices)[:, 0]
        except ParticleMismatchError:
            return {}
        return {name: values[rows] for name, values in self._columns.items()}

    def update_triple(self, *_: Any) -> None:
        """Swap the points layer data to the chosen triple (no recomputation)."""
        if self.result is None:
            return
        data = self.points_data()
        a, b, c = self.triple()
        name = f"{LAYER_NAME} φ{a} φ{b} φ{c}"
        if self.layer is not None and self.layer in self.viewer.layers and len(self.layer.data) != len(data):
            self.viewer.layers.remove(self.layer)  # another particle set: new features too
        if self.layer is None or self.layer not in self.viewer.layers:
            columns = self._result_columns()
            self.layer = self.viewer.add_points(
                data, name=name, size=0.05, features=pd.DataFrame(columns) if columns else None, border_width=0,
                face_colormap="viridis", out_of_slice_display=True,
            )
            self.layer.selected_data.events.items_changed.connect(self._on_selection)
            self.viewer.dims.ndisplay = 3
        else:
            self.layer.data = data
            self.layer.name = name
        self.update_colors()
        self.viewer.reset_view()

    def update_colors(self, *_: Any) -> None:
        """Colour the points by the chosen per-particle column."""
        if self.layer is None or not self.color_by.value or self.color_by.value not in self.layer.features:
            return
        values = np.asarray(self.layer.features[self.color_by.value], dtype=np.float64)
        lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
        self.layer.face_colormap = "viridis"
        self.layer.face_color = self.color_by.value
        self.layer.face_contrast_limits = (lo, hi if hi > lo else lo + 1.0)  # this column's range
        self.layer.refresh_colors(update_color_mapping=False)

    def _plot_eigenvalues(self) -> None:
        ax = self.eigen_axes
        ax.clear()
        lam = self.result.eigenvalues
        rank = self.result.eigenvalue_rank  # SpectralResult fills it (0..K-1 for old files)
        by_rank = np.argsort(rank, kind="stable")
        ax.plot(rank[by_rank], lam[by_rank], "o-", ms=3)  # spectrum in eigenvalue order
        if not np.array_equal(rank, np.arange(len(lam))):  # parsimonious: label columns φj at their rank
            for col, (r, v) in enumerate(zip(rank, lam, strict=True)):
                ax.annotate(str(col), (r, v), fontsize=6, xytext=(2, 2), textcoords="offset points")
            unique = self.result.harmonic_residual > self.result.config.unique_threshold
            ax.plot(rank[unique], lam[unique], "o", ms=5, mfc="none", mec="red")
            ax.set_xlabel("eigenvalue rank k (labels: column φj; red: unique)")
        else:
            ax.set_xlabel("index k")
        ax.set_ylabel("eigenvalue λk of L")
        ax.set_title("normalised Laplacian spectrum", fontsize=9)
        self.eigen_canvas.figure.tight_layout()
        self.eigen_canvas.draw_idle()

    # ------------------------------------------------------------------ selection
    def find_stack_viewer(self):
        """The stack viewer docked in this viewer (or the one set in ``stack_viewer``)."""
        if self.stack_viewer is not None:
            return self.stack_viewer
        from napari_cryohet.plugin.stack_viewer import StackViewerWidget

        window = getattr(self.viewer, "window", None)
        docks = getattr(window, "dock_widgets", {}) if window is not None else {}
        for widget in dict(docks).values():
            if isinstance(widget, StackViewerWidget):
                return widget
        return None

    def _on_selection(self, *_: Any) -> None:
        rows = np.array(sorted(self.layer.selected_data), dtype=np.int64)
        if len(rows):
            self.show_in_stack_viewer(rows)

    def show_in_stack_viewer(self, rows: np.ndarray) -> np.ndarray | None:
        """Show embedding rows ``rows`` in the stack viewer; returns its positions (or None)."""
        viewer = self.find_stack_viewer()
        if viewer is None or viewer.dataset is None or self.result is None:
            return None
        wanted = self.result.indices[np.asarray(rows, dtype=np.int64)]  # root indices
        positions = np.flatnonzero(np.isin(viewer.dataset.indices, wanted))
        viewer.show_particles(positions)
        return positions


def _make_canvas():
    from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.2, 2.0), dpi=90)
    canvas = FigureCanvasQTAgg(fig)
    canvas.setMinimumHeight(150)
    return canvas, fig.add_subplot(111)
