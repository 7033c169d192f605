"""Clustering and refinement dock widget (Silvera Coeff 2025, §4.1).

Thin (docs/design.md): the settings form is generated from
:class:`~napari_cryohet.stages.refine.config.RefineConfig`, the
:class:`~napari_cryohet.plugin._workspace_picker.WorkspacePicker` shows the workspace
folder and the input run (``embedding``: a finished VAE or spectral run whose
per-particle vectors are clustered), and :class:`~napari_cryohet.plugin._runner.StageRunner`
runs the stage off the GUI thread through the window's session. The result is drawn by
:mod:`napari_cryohet.plugin._refine_scene` (class maps side by side; the particles in the
input embedding coloured by cluster). The dock adds what the thesis tracked by hand
(Silvera Coeff 2025, §5.2–5.3): an iteration slider that recolours the particles by that
iteration's clusters, a table of particles, resolution and label stability per iteration
and cluster, the FSC curves of the final maps, and "Select this cluster", which hands a
cluster's particles to the stack viewer (and to the ``.star`` export of the selection).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, PushButton, Slider
from qtpy.QtWidgets import QAbstractItemView, QComboBox, QTableWidget, QTableWidgetItem

from napari_cryohet.plugin import _refine_scene
from napari_cryohet.plugin._config_form import ConfigForm
from napari_cryohet.plugin._docking import ScrollDock
from napari_cryohet.plugin._runner import StageRunner
from napari_cryohet.plugin._stage_run import start_stage_run
from napari_cryohet.plugin._workspace_picker import WorkspacePicker
from napari_cryohet.plugin.dataset_picker import DatasetPicker
from napari_cryohet.plugin.scenes import scene_name
from napari_cryohet.plugin.session import Session
from napari_cryohet.stages.refine.config import RefineConfig
from napari_cryohet.stages.refine.result import RefineResult

__all__ = ["RefineWidget", "RefineDock", "TABLE_COLUMNS", "FSC_THRESHOLD"]

TABLE_COLUMNS = ("iteration", "cluster", "particles", "resolution (Å)", "label stability")
#: The gold-standard FSC threshold (Silvera Coeff 2025, §2.7).
FSC_THRESHOLD = 0.143


class RefineWidget(Container):
    """Dock widget of the refine stage.

    Attributes
    ----------
    session
        The window's :class:`Session`.
    form
        The settings (:class:`ConfigForm` of :class:`RefineConfig`; ``form.<field>``).
    workspace
        Workspace folder and the ``embedding`` input run picker.
    run_button, runner
        Start button and the :class:`StageRunner`.
    iteration
        Slider (1..I) choosing the iteration whose clusters colour the particles.
    cluster, select_button
        A cluster id of that iteration and the button selecting its particles.
    show_maps_button, show_clusters_button
        Show the class-maps scene / the clusters scene.
    table
        ``QTableWidget``: one row per iteration and cluster (:data:`TABLE_COLUMNS`).
    fsc_canvas, fsc_axes
        The FSC plot of the final maps.
    dataset, result
        The dataset in use and the latest :class:`RefineResult`.
    """

    def __init__(self, napari_viewer, dataset: Any = None) -> None:
        self.viewer = napari_viewer
        self.session = Session.for_viewer(napari_viewer)
        self.dataset: Any = None
        self.result: RefineResult | None = None
        self.scene = None
        self.dataset_picker = DatasetPicker(napari_viewer, on_pick=self._on_pick)
        self.workspace = WorkspacePicker("refine", session=self.session)
        self.form = ConfigForm(RefineConfig, label="settings")
        self.run_button = PushButton(text="Cluster and refine")
        self.runner = StageRunner()
        self.iteration = Slider(label="iteration", value=1, min=1, max=1, enabled=False,
                                tooltip="colour the particles by the clusters of this iteration (cluster numbers "
                                        "are matched between iterations, so a cluster keeps its colour)")
        self.cluster = ComboBox(label="cluster", choices=self._cluster_choices,
                                tooltip="a cluster of the iteration on the slider")
        self.select_button = PushButton(text="Select this cluster",
                                        tooltip="show this cluster's particles in the stack viewer (and export "
                                                "them as .star from there)")
        self.show_maps_button = PushButton(text="Show class maps")
        self.show_clusters_button = PushButton(text="Show particles by cluster")
        self.info = Label(value="")
        buttons = Container(widgets=[self.show_maps_button, self.show_clusters_button], layout="horizontal",
                            labels=False)
        super().__init__(widgets=[
            self.dataset_picker, self.workspace, self.form, self.run_button, self.runner, self.info,
            buttons, self.iteration, self.cluster, self.select_button,
        ])
        self.table = QTableWidget(0, len(TABLE_COLUMNS))
        self.table.setHorizontalHeaderLabels(list(TABLE_COLUMNS))
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.setMinimumHeight(140)
        self.native.layout().addWidget(self.table)
        self.fsc_canvas, self.fsc_axes = _make_canvas()
        self.native.layout().addWidget(self.fsc_canvas)
        # long run summaries must not widen the dock past the window (a horizontal scroll bar)
        self.info.native.setWordWrap(True)
        for box in self.workspace.inputs.values():
            box.native.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            box.native.setMinimumContentsLength(18)
        self.run_button.changed.connect(self.run)
        self.iteration.changed.connect(self._on_iteration)
        self.select_button.changed.connect(self.select_cluster)
        self.show_maps_button.changed.connect(self.show_maps)
        self.show_clusters_button.changed.connect(self.show_clusters)
        if dataset is not None:
            self.set_dataset(dataset)
        else:
            self.dataset_picker.deliver()
        latest = self.session.run_choices(("refine",))
        if self.result is None and latest:  # a reopened workspace: show its newest run here too
            self.show_result(self.session.result(latest[0][0]), show=False)

    # ------------------------------------------------------------------ dataset
    def _on_pick(self, picked: Any) -> None:
        if picked is not self.dataset:
            self.dataset = picked
            self.info.value = f"{len(picked)} particles"

    def set_dataset(self, dataset: Any) -> None:
        """Use ``dataset`` (a ParticleDataset with poses and CTF) in this window."""
        self.session.set_dataset(dataset)
        self._on_pick(dataset)

    # ------------------------------------------------------------------ run
    def config(self) -> RefineConfig:
        """The stage config the form describes (``ValueError`` naming a bad entry)."""
        return self.form.config()

    def run(self, *_: Any) -> None:
        """Cluster and refine in a worker thread (in the workspace when a folder is chosen)."""
        start_stage_run(self, "refine", self.show_result_steps)

    def show_result(self, result: RefineResult, *, show: bool = True) -> None:
        """Draw ``result`` (scenes, table, FSC plot); the form shows its settings."""
        for _ in self.show_result_steps(result, show=show):
            pass

    def show_result_steps(self, result: RefineResult, *, show: bool = True):
        """:meth:`show_result` as a generator (the runner gives the event loop a turn between steps)."""
        self.result = result
        self.form.set_config(result.config)
        n_it = len(result.labels)
        with self.iteration.changed.blocked():
            self.iteration.max = n_it
            self.iteration.value = n_it
        self.iteration.enabled = n_it > 1
        self.fill_table()
        self.plot_fsc()
        yield
        self.session.add_result(result)
        for _ in _refine_scene.present_steps(self.session, result, iteration=n_it - 1):
            yield
        self.scene = _refine_scene.maps_scene(self.session, result)
        self.cluster.reset_choices()
        final = [f"{k}" for k in result.cluster_ids]
        where = f" (run {result.run_id}" + (f": {result.run_note}" if result.run_note else "") + ")"
        self.info.value = f"{len(result.indices)} particles, {n_it} iterations, class maps of clusters " \
                          f"{', '.join(final) or 'none'}{where}"
        if show:
            yield from self.session.scenes.show_steps(self.scene)

    # ------------------------------------------------------------------ views
    def show_maps(self, *_: Any) -> None:
        """Show the class maps scene of the latest result."""
        if self.result is not None:
            self.session.scenes.show(_refine_scene.maps_scene(self.session, self.result))

    def show_clusters(self, *_: Any) -> None:
        """Show the particles coloured by cluster (iteration on the slider)."""
        if self.result is not None:
            scene = _refine_scene.clusters_scene(self.session, self.result, iteration=self.iteration_index())
            self.session.scenes.show(scene)

    @property
    def points_layer(self):
        """The points layer of the clusters scene (``None`` before the first result)."""
        if self.result is None:
            return None
        scene = self.session.scenes.scenes.get(
            scene_name(_refine_scene.CLUSTERS_TITLE, self.result.run_id or "latest"))
        return None if scene is None else scene.layer(_refine_scene.POINTS_LAYER)

    def iteration_index(self) -> int:
        """0-based iteration on the slider."""
        return int(self.iteration.value) - 1

    def _on_iteration(self, *_: Any) -> None:
        if self.result is None:
            return
        i = min(self.iteration_index(), len(self.result.labels) - 1)
        _refine_scene.show_iteration(self.session, self.result, i)
        self.cluster.reset_choices()
        scene = self.session.scenes.scenes.get(
            scene_name(_refine_scene.CLUSTERS_TITLE, self.result.run_id or "latest"))
        if scene is not None and self.session.scenes.current is not scene:
            self.session.scenes.show(scene)

    # ------------------------------------------------------------------ selection
    def _cluster_choices(self, *_: Any) -> list[tuple[str, int]]:
        if self.result is None:
            return []
        labels = self.result.labels[min(self.iteration_index(), len(self.result.labels) - 1)]
        ids, counts = np.unique(labels, return_counts=True)
        return [("no cluster (noise)" if k < 0 else f"cluster {k}", int(k)) for k, c in zip(ids, counts, strict=True)
                if c > 0]

    def cluster_indices(self, k: int | None = None, iteration: int | None = None) -> np.ndarray:
        """Root indices of the particles of cluster ``k`` (default: the combo box's) at ``iteration``
        (0-based; default: the slider's)."""
        if self.result is None:
            return np.zeros(0, dtype=np.int64)
        k = self.cluster.value if k is None else k
        i = self.iteration_index() if iteration is None else int(iteration)
        return self.result.indices[self.result.labels[i] == int(k)]

    def select_cluster(self, *_: Any) -> np.ndarray:
        """Select the chosen cluster's particles in the session (the stack viewer follows)."""
        if self.result is None or self.cluster.value is None:
            return np.zeros(0, dtype=np.int64)
        wanted = self.cluster_indices()
        self.session.select(wanted)
        self.info.value = f"selected cluster {self.cluster.value} of iteration {self.iteration.value}: " \
                          f"{len(wanted)} particles"
        return wanted

    # ------------------------------------------------------------------ table and plot
    def table_rows(self) -> list[tuple]:
        """``(iteration, cluster, particles, resolution Å or None, label stability or None)`` per row."""
        rows = []
        for record in self.result.history if self.result is not None else []:
            stability = record.get("label_stability")
            for k, entry in sorted(record.get("clusters", {}).items(), key=lambda kv: int(kv[0])):
                res = entry.get("resolution_a")
                rows.append((int(record["iteration"]), int(k), int(entry["particles"]),
                             None if res is None else float(res), None if stability is None else float(stability)))
        return rows

    def fill_table(self) -> None:
        rows = self.table_rows()
        self.table.setRowCount(len(rows))
        for r, (it, k, n, res, stab) in enumerate(rows):
            cells = (str(it), str(k), str(n), "too small" if res is None else f"{res:.2f}",
                     "—" if stab is None else f"{stab:.3f}")
            for c, text in enumerate(cells):
                self.table.setItem(r, c, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()

    def plot_fsc(self) -> None:
        """Corrected masked FSC of each final class map against spatial frequency (1/Å)."""
        ax, result = self.fsc_axes, self.result
        ax.clear()
        for j, k in enumerate(result.cluster_ids):
            res = _refine_scene._resolution(result, len(result.labels) - 1, int(k))
            label = f"cluster {k}" + (f" ({res:.1f} Å)" if res is not None else "")
            ax.plot(result.fsc_freq, result.fsc[j], color=_refine_scene.cluster_colour(int(k)), lw=1.2, label=label)
        ax.axhline(FSC_THRESHOLD, color="0.5", ls="--", lw=0.8)
        ax.set_xlabel("spatial frequency (1/Å)", fontsize=8)
        ax.set_ylabel("FSC (half maps)", fontsize=8)
        ax.set_title("gold-standard FSC of the class maps (dashed: 0.143)", fontsize=9)
        ax.set_ylim(-0.1, 1.05)
        if len(result.cluster_ids):
            ax.legend(fontsize=7)
        self.fsc_canvas.figure.tight_layout()
        self.fsc_canvas.draw_idle()


def _make_canvas():
    from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.2, 2.2), dpi=90)
    canvas = FigureCanvasQTAgg(fig)
    canvas.setMinimumHeight(170)
    return canvas, fig.add_subplot(111)


class RefineDock(ScrollDock):
    """The Plugins-menu entry: :class:`RefineWidget` in a scroll area, tabbed with the other stages."""

    def __init__(self, napari_viewer) -> None:
        super().__init__(RefineWidget(napari_viewer))
