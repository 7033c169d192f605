"""Spectral-embedding dock widget (Esteve-Yagüe et al. 2022): eigenvectors as a 3D point cloud.

Thin (docs/design.md): the settings form is generated from
:class:`~napari_cryohet.stages.spectral.SpectralConfig` (``ConfigForm``: every field with
its unit and help), the :class:`~napari_cryohet.plugin._workspace_picker.WorkspacePicker`
shows the window's workspace folder and the optional input run (``features``: a finished
VAE, spectral or chain-fit run whose per-particle vectors — VAE latents, say — are
embedded with the ``"table"`` representation), and
:class:`~napari_cryohet.plugin._runner.StageRunner` runs the stage off the GUI thread
through the window's :class:`~napari_cryohet.plugin.session.Session` (a workspace run
``spectral/NNNN`` when a folder is chosen, in memory otherwise). The result is drawn in
its own 3D scene (:mod:`napari_cryohet.plugin._spectral_scene`): changing the three
eigenvectors shown only swaps the layer data; colours come from any per-particle column
of the session; selecting points selects those particles in the stack viewer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, PushButton, SpinBox

from napari_cryohet.plugin import _spectral_scene
from napari_cryohet.plugin._config_form import ConfigForm
from napari_cryohet.plugin._docking import ScrollDock
from napari_cryohet.plugin._embedding_layer import colour_points, column_choices, preferred_column
from napari_cryohet.plugin._runner import StageRunner
from napari_cryohet.plugin._stage_run import start_stage_run
from napari_cryohet.plugin._workspace_picker import NO_RUN, WorkspacePicker
from napari_cryohet.plugin.dataset_picker import DatasetPicker
from napari_cryohet.plugin.presenters import present
from napari_cryohet.plugin.session import Session
from napari_cryohet.stages.spectral import SpectralConfig, SpectralResult

__all__ = ["SpectralWidget", "SpectralDock", "LAYER_NAME"]

LAYER_NAME = _spectral_scene.LAYER_NAME


class SpectralWidget(Container):
    """Dock widget of the spectral stage.

    Attributes
    ----------
    session
        The window's :class:`Session` (dataset, workspace, runs, selection).
    form
        The settings (:class:`ConfigForm` of :class:`SpectralConfig`; ``form.<field>``).
    workspace
        Workspace folder and the ``features`` input run picker.
    phi_a, phi_b, phi_c
        Eigenvectors shown on the three axes.
    color_by
        Per-particle column colouring the points.
    run_button, runner
        Start button and the :class:`StageRunner` (progress, cancel, ``last_result``).
    dataset, result, layer, scene
        The dataset in use, the latest :class:`SpectralResult`, its points layer and scene.
    eigen_canvas, eigen_axes
        The eigenvalue plot.
    """

    def __init__(self, napari_viewer, dataset: Any = None) -> None:
        self.viewer = napari_viewer
        self.session = Session.for_viewer(napari_viewer)
        self.dataset: Any = None
        self.result: SpectralResult | None = None
        self.scene = None
        self.dataset_picker = DatasetPicker(napari_viewer, on_pick=self._on_pick)
        self.workspace = WorkspacePicker("spectral", session=self.session)
        self.form = ConfigForm(SpectralConfig, label="settings")
        self.run_button = PushButton(text="Compute embedding")
        self.runner = StageRunner()
        tip = "which eigenvector of the graph Laplacian is drawn on this axis (1 = the smoothest non-constant one)"
        self.phi_a = SpinBox(label="axis 1: eigenvector", value=1, min=0, max=199, tooltip=tip)
        self.phi_b = SpinBox(label="axis 2: eigenvector", value=2, min=0, max=199, tooltip=tip)
        self.phi_c = SpinBox(label="axis 3: eigenvector", value=3, min=0, max=199, tooltip=tip)
        self.color_by = ComboBox(label="colour by", choices=self._colour_choices,
                                 tooltip="per-particle value colouring the points: ground truth (simulated data), "
                                         "defocus, a .star column, or another run's vectors")
        self.info = Label(value="")
        super().__init__(widgets=[
            self.dataset_picker, self.workspace, self.form, self.run_button, self.runner,
            self.phi_a, self.phi_b, self.phi_c, self.color_by, self.info,
        ])
        self.eigen_canvas, self.eigen_axes = _make_canvas()
        self.native.layout().addWidget(self.eigen_canvas)
        self.run_button.changed.connect(self.run)
        self.workspace.inputs["features"].changed.connect(self._on_features_picked)
        for w in (self.phi_a, self.phi_b, self.phi_c):
            w.changed.connect(self.update_triple)
        self.color_by.changed.connect(self.update_colors)
        self.session.runs_changed.connect(self.color_by.reset_choices)
        if dataset is not None:
            self.set_dataset(dataset)
        else:
            self.dataset_picker.deliver()
        latest = self.session.run_choices(("spectral",))
        if self.result is None and latest:  # a reopened workspace: show its newest embedding here too
            self.show_result(self.session.result(latest[0][0]), show=False)

    # ------------------------------------------------------------------ dataset
    def _on_pick(self, picked: Any) -> None:
        if picked is not self.dataset:
            self.dataset = picked
            self.info.value = f"{len(picked)} particles"
            truth = getattr(picked, "ground_truth", None) or {}
            if (self.form.representation.value == "lowres_volumes" and "coords_a" not in truth
                    and getattr(picked, "low_dim", None) is None):
                # the paper's low-resolution volumes need the atoms (simulated data only)
                self.form.representation.value = "pca_images"
                self.info.value += ("; particle description set to image principal components (low-resolution "
                                    "volumes need the simulation's atoms)")

    def set_dataset(self, dataset: Any) -> None:
        """Use ``dataset`` (a ParticleDataset or the box-arms Toy2DDataset) in this window."""
        self.session.set_dataset(dataset)
        self._on_pick(dataset)

    def _on_features_picked(self, value: Any) -> None:
        if value not in (None, NO_RUN):  # another run's vectors are embedded with the table representation
            self.form.representation.value = "table"

    # ------------------------------------------------------------------ run
    def config(self) -> SpectralConfig:
        """The stage config the form describes (``ValueError`` naming a bad entry)."""
        return self.form.config()

    def run(self, *_: Any) -> None:
        """Compute the embedding in a worker thread (in the workspace when a folder is chosen)."""
        start_stage_run(self, "spectral", self.show_result_steps)

    def show_result(self, result: SpectralResult, *, show: bool = True) -> None:
        """Draw ``result`` in its scene, plot the spectrum; the form shows its settings."""
        for _ in self.show_result_steps(result, show=show):
            pass

    def show_result_steps(self, result: SpectralResult, *, show: bool = True):
        """:meth:`show_result` as a generator: the runner gives the event loop a turn between
        the plot, building the layer and showing its scene."""
        self.result = result
        self.form.set_config(result.config)
        k = result.eigenvectors.shape[1]
        for w in (self.phi_a, self.phi_b, self.phi_c):
            w.max = k - 1
        self._plot_eigenvalues()
        yield
        first = self.layer is None
        self.scene = present(self.session, result, show=False, triple=self.triple(),
                             colour_by=None if first else self.color_by.value)
        yield
        columns = [c for _, c in self._colour_choices()]
        with self.color_by.changed.blocked():  # present() coloured the points already
            self.color_by.reset_choices()
            if first or self.color_by.value not in columns:
                self.color_by.value = preferred_column(columns)
        where = f" (run {result.run_id}" + (f": {result.run_note}" if result.run_note else "") + ")"
        self.info.value = f"{len(result.indices)} particles, {k} eigenvectors{where}"
        if show:
            yield from self.session.scenes.show_steps(self.scene)

    @property
    def layer(self):
        """The points layer of the latest result (``None`` before the first)."""
        return None if self.scene is None else self.scene.layer(LAYER_NAME)

    def triple(self) -> tuple[int, int, int]:
        return int(self.phi_a.value), int(self.phi_b.value), int(self.phi_c.value)

    def points_data(self) -> np.ndarray:
        """``(N, 3)`` coordinates ``sqrt(N) · Φ[:, (a, b, c)]`` of the current triple."""
        return _spectral_scene.points_data(self.result, self.triple())

    def update_triple(self, *_: Any) -> None:
        """Swap the points layer data to the chosen eigenvectors (no recomputation)."""
        if self.result is not None:
            present(self.session, self.result, show=self.session.scenes.current is self.scene,
                    triple=self.triple(), colour_by=self.color_by.value)

    def _colour_choices(self, *_: Any) -> list[tuple[str, str]]:
        layer = self.layer
        return [] if layer is None or layer.features is None else column_choices(layer.features.columns)

    def update_colors(self, *_: Any) -> None:
        """Colour the points by the chosen per-particle column."""
        colour_points(self.layer, self.color_by.value)

    def _plot_eigenvalues(self) -> None:
        ax = self.eigen_axes
        ax.clear()
        lam = self.result.eigenvalues
        rank = self.result.eigenvalue_rank  # SpectralResult fills it (0..K-1 for old files)
        by_rank = np.argsort(rank, kind="stable")
        ax.plot(rank[by_rank], lam[by_rank], "o-", ms=3)  # spectrum in eigenvalue order
        if not np.array_equal(rank, np.arange(len(lam))):  # parsimonious: label columns at their rank
            for col, (r, v) in enumerate(zip(rank, lam, strict=True)):
                ax.annotate(str(col), (r, v), fontsize=6, xytext=(2, 2), textcoords="offset points")
            unique = self.result.harmonic_residual > self.result.config.unique_threshold
            ax.plot(rank[unique], lam[unique], "o", ms=5, mfc="none", mec="red")
            ax.set_xlabel("rank (labels: eigenvector; red: kept as new)", fontsize=8)
        else:
            ax.set_xlabel("eigenvector number", fontsize=8)
        ax.set_ylabel("eigenvalue", fontsize=8)
        ax.set_title("graph Laplacian spectrum (small = smooth)", fontsize=9)
        self.eigen_canvas.figure.tight_layout()
        self.eigen_canvas.draw_idle()

    # ------------------------------------------------------------------ selection
    def show_in_stack_viewer(self, rows: np.ndarray) -> np.ndarray:
        """Select embedding rows ``rows`` in the session (the stack viewer follows); returns root indices."""
        wanted = self.result.indices[np.asarray(rows, dtype=np.int64)]
        self.session.select(wanted)
        return wanted


def _make_canvas():
    from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.2, 2.0), dpi=90)
    canvas = FigureCanvasQTAgg(fig)
    canvas.setMinimumHeight(150)
    return canvas, fig.add_subplot(111)



class SpectralDock(ScrollDock):
    """The Plugins-menu entry: :class:`SpectralWidget` in a scroll area, tabbed with the other stages
    (:mod:`napari_cryohet.plugin._docking`)."""

    def __init__(self, napari_viewer) -> None:
        super().__init__(SpectralWidget(napari_viewer))
