"""Clustering and refinement dock widget (Silvera Coeff 2025, §4.1).

Thin (docs/design.md): the settings form is generated from
:class:`~napari_cryohet.stages.refine.config.RefineConfig`, the
:class:`~napari_cryohet.plugin._workspace_picker.WorkspacePicker` shows the workspace
folder and the input run (``embedding``: a finished VAE or spectral run whose
per-particle vectors are clustered), and :class:`~napari_cryohet.plugin._runner.StageRunner`
runs the stage off the GUI thread through the window's session. The result is drawn by
:mod:`napari_cryohet.plugin._refine_scene` (class maps side by side; the particles in the
input embedding coloured by cluster). The dock adds what the thesis tracked by hand
(Silvera Coeff 2025, §5.2–5.3): an iteration slider — each iteration, then "final" (the
maps from the refined poses) when the run kept its iterations — that recolours the
particles by that iteration's clusters and puts its class maps into the maps scene and
their FSC curves into the FSC plot; a table per iteration and cluster (particles,
resolution, the resolution limit of the pose refinement, label stability, clustering
method); a plot of each cluster's resolution per iteration; and "Select this cluster",
which hands a cluster's particles to the stack viewer (and to the ``.star`` export of the
selection). Runs saved before iterations were kept show their final maps at every step.
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

__all__ = ["RefineWidget", "RefineDock", "TABLE_COLUMNS", "FSC_THRESHOLD", "method_text"]

TABLE_COLUMNS = ("iteration", "cluster", "particles", "resolution (Å)", "refinement limit (Å)", "label stability",
                 "method")
_COLUMN_TIPS = (
    "iteration of the loop (cluster → class maps → refine poses)",
    "cluster number, matched between iterations (a cluster keeps its number and colour)",
    "particles in the cluster at this iteration",
    "resolution of the cluster's map at this iteration (gold-standard FSC = 0.143 between half maps, "
    "masked, corrected for masking; lower is better)",
    "the poses were refined against the map filtered to this resolution (coarse first, finer in later "
    "iterations); — : poses not refined (switched off, or the cluster was too small)",
    "agreement of this iteration's clusters with the previous iteration's (adjusted Rand index: 1 = the same "
    "particles in the same clusters)",
    "how the particles were grouped at this iteration (hover for every setting)",
)
#: Names of the clustering methods for the table (registry keys of stages.refine.clustering.CLUSTERERS).
METHOD_NAMES = {"kmeans": "K-Means", "gmm": "Gaussian mixture", "dbscan": "DBSCAN", "hdbscan": "HDBSCAN",
                "landscape": "volume landscape", "maps": "best-matching class map"}
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
        Slider: 1..I, the iteration whose clusters colour the particles and whose class maps
        and FSC curves are shown; I + 1 ("final") is the final maps, from the refined poses
        (only when the run kept its iterations' maps).
    step_note
        What the slider shows, in words.
    cluster, select_button
        A cluster id of that iteration and the button selecting its particles.
    show_maps_button, show_clusters_button
        Show the class-maps scene / the clusters scene.
    table
        ``QTableWidget``: one row per iteration and cluster (:data:`TABLE_COLUMNS`).
    fsc_canvas, fsc_axes
        The FSC plot of the class maps at the slider's step.
    resolution_canvas, resolution_axes
        Each cluster's resolution (Å) per iteration, the final maps at "final".
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
        self.step_note = Label(value="")
        buttons = Container(widgets=[self.show_maps_button, self.show_clusters_button], layout="horizontal",
                            labels=False)
        super().__init__(widgets=[
            self.dataset_picker, self.workspace, self.form, self.run_button, self.runner, self.info,
            buttons, self.iteration, self.step_note, self.cluster, self.select_button,
        ])
        self.table = QTableWidget(0, len(TABLE_COLUMNS))
        # two-line headers: the seven columns fit the dock's width
        self.table.setHorizontalHeaderLabels([_two_lines(name) for name in TABLE_COLUMNS])
        for c, tip in enumerate(_COLUMN_TIPS):
            self.table.horizontalHeaderItem(c).setToolTip(tip)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.setMinimumHeight(140)
        self.native.layout().addWidget(self.table)
        self.fsc_canvas, self.fsc_axes = _make_canvas()
        self.native.layout().addWidget(self.fsc_canvas)
        self.resolution_canvas, self.resolution_axes = _make_canvas(height=2.0)
        self.native.layout().addWidget(self.resolution_canvas)
        # long run summaries must not widen the dock past the window (a horizontal scroll bar)
        self.info.native.setWordWrap(True)
        self.step_note.native.setWordWrap(True)
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
        n_steps = n_it + (1 if _refine_scene.kept_iterations(result) else 0)
        with self.iteration.changed.blocked():
            self.iteration.max = n_steps
            self.iteration.value = n_steps
        self.iteration.enabled = n_steps > 1
        self._describe_step()
        self.fill_table()
        self.plot_fsc()
        self.plot_resolution()
        yield
        self.session.add_result(result)
        for _ in _refine_scene.present_steps(self.session, result, iteration=n_it - 1, step=self.maps_step()):
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
        """0-based iteration whose clusters the slider shows (the last one at "final")."""
        i = int(self.iteration.value) - 1
        return i if self.result is None else min(i, len(self.result.labels) - 1)

    def maps_step(self) -> int | None:
        """The slider's step of the class maps (0-based iteration; ``None``: the final maps)."""
        if self.result is None or not _refine_scene.kept_iterations(self.result):
            return None
        i = int(self.iteration.value) - 1
        return None if i >= len(self.result.labels) else i

    def _describe_step(self) -> None:
        result, step = self.result, self.maps_step()
        n_it = len(result.labels)
        if step is not None:
            self.step_note.value = f"iteration {step + 1} of {n_it}: its clusters and the class maps it made " \
                                   "before refining the poses"
        elif _refine_scene.kept_iterations(result):
            self.step_note.value = f"final: the clusters of iteration {n_it} with maps from the refined poses"
        else:
            self.step_note.value = f"iteration {self.iteration_index() + 1} of {n_it}: its clusters; class maps " \
                                   "and FSC of the final poses (this run kept no maps per iteration)"

    def _on_iteration(self, *_: Any) -> None:
        """The slider moved: recolour the particles, put that step's maps into the maps scene,
        redraw the plots; the clusters scene comes up unless one of this run's scenes is shown."""
        if self.result is None:
            return
        self._describe_step()
        _refine_scene.show_iteration(self.session, self.result, self.iteration_index())
        if _refine_scene.kept_iterations(self.result):
            _refine_scene.show_step(self.session, self.result, self.maps_step())
        self.cluster.reset_choices()
        self.plot_fsc()
        self.plot_resolution()
        run = self.result.run_id or "latest"
        scenes = self.session.scenes
        mine = [scenes.scenes.get(scene_name(title, run))
                for title in (_refine_scene.CLUSTERS_TITLE, _refine_scene.MAPS_TITLE)]
        if mine[0] is not None and scenes.current not in mine:
            scenes.show(mine[0])

    # ------------------------------------------------------------------ selection
    def _cluster_choices(self, *_: Any) -> list[tuple[str, int]]:
        if self.result is None:
            return []
        labels = self.result.labels[self.iteration_index()]
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
        self.info.value = f"selected cluster {self.cluster.value} of iteration {self.iteration_index() + 1}: " \
                          f"{len(wanted)} particles"
        return wanted

    # ------------------------------------------------------------------ table and plots
    def table_rows(self) -> list[tuple]:
        """``(iteration, cluster, particles, resolution Å or None, refinement limit Å or None,
        label stability or None, method text)`` per row; the limit is ``None`` where the
        cluster's poses were not refined."""
        rows = []
        for record in self.result.history if self.result is not None else []:
            stability = record.get("label_stability")
            limit = record.get("resolution_limit_a")
            method = method_text(record)
            for k, entry in sorted(record.get("clusters", {}).items(), key=lambda kv: int(kv[0])):
                res = entry.get("resolution_a")
                refined = limit is not None and "mean_angle_change_deg" in entry
                rows.append((int(record["iteration"]), int(k), int(entry["particles"]),
                             None if res is None else float(res), float(limit) if refined else None,
                             None if stability is None else float(stability), method))
        return rows

    def fill_table(self) -> None:
        rows = self.table_rows()
        history = {int(rec["iteration"]): rec for rec in self.result.history} if self.result is not None else {}
        self.table.setRowCount(len(rows))
        for r, (it, k, n, res, limit, stab, method) in enumerate(rows):
            cells = (str(it), str(k), str(n), "too few particles" if res is None else f"{res:.2f}",
                     "—" if limit is None else f"{limit:g}", "—" if stab is None else f"{stab:.3f}", method)
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if c == len(cells) - 1:
                    item.setToolTip(method_details(history.get(it, {})))
                self.table.setItem(r, c, item)
        self.table.resizeColumnsToContents()

    def plot_fsc(self) -> None:
        """Corrected masked FSC of each class map at the slider's step against spatial frequency (1/Å)."""
        ax, result = self.fsc_axes, self.result
        ax.clear()
        shown = _refine_scene.class_maps(result, self.maps_step())
        for k, curve, res in zip(shown.cluster_ids, shown.fsc, shown.resolution_a, strict=True):
            label = f"cluster {k}" + (f" ({res:.1f} Å)" if np.isfinite(res) else "")
            ax.plot(result.fsc_freq, curve, color=_refine_scene.cluster_colour(int(k)), lw=1.2, label=label)
        ax.axhline(FSC_THRESHOLD, color="0.5", ls="--", lw=0.8)
        ax.set_xlabel("spatial frequency (1/Å)", fontsize=8)
        ax.set_ylabel("FSC (half maps)", fontsize=8)
        which = "final maps (refined poses)" if shown.final and _refine_scene.kept_iterations(result) else \
            "final maps" if shown.final else f"iteration {shown.step + 1}"
        ax.set_title(f"FSC of the class maps, {which}\n(dashed: 0.143)", fontsize=9)
        ax.set_ylim(-0.1, 1.05)
        ax.tick_params(labelsize=7)
        if len(shown.cluster_ids):
            ax.legend(fontsize=7)
        self.fsc_canvas.figure.tight_layout()
        self.fsc_canvas.draw_idle()

    def resolution_series(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Cluster id → ``(iterations, resolution Å)``: the history's resolutions (1-based x) and,
        at x = I + 1, the final map's (from its FSC curve)."""
        result = self.result
        series: dict[int, tuple[list, list]] = {}
        for record in result.history:
            for k, entry in record.get("clusters", {}).items():
                if entry.get("resolution_a") is not None:
                    xs, ys = series.setdefault(int(k), ([], []))
                    xs.append(int(record["iteration"]))
                    ys.append(float(entry["resolution_a"]))
        final = _refine_scene.class_maps(result, None)
        for k, res in zip(final.cluster_ids, final.resolution_a, strict=True):
            if np.isfinite(res):
                xs, ys = series.setdefault(int(k), ([], []))
                xs.append(len(result.labels) + 1)
                ys.append(float(res))
        return {k: (np.asarray(xs), np.asarray(ys)) for k, (xs, ys) in sorted(series.items())}

    def plot_resolution(self) -> None:
        """Each cluster's resolution per iteration (one line per cluster id, its colour); the
        slider's position is marked."""
        ax, result = self.resolution_axes, self.result
        ax.clear()
        n_it = len(result.labels)
        series = self.resolution_series()
        for k, (xs, ys) in series.items():
            ax.plot(xs, ys, marker="o", ms=3, lw=1.2, color=_refine_scene.cluster_colour(k), label=f"cluster {k}")
        if 0 < len(series) <= 8:
            ax.legend(fontsize=7, ncol=2 if len(series) > 4 else 1)
        ax.axvline(int(self.iteration.value), color="0.6", lw=0.8, ls=":")
        ax.set_xticks(range(1, n_it + 2), [str(i) for i in range(1, n_it + 1)] + ["final"])
        ax.set_xlim(0.7, n_it + 1.3)
        ax.set_xlabel("iteration", fontsize=8)
        ax.set_ylabel("resolution (Å)", fontsize=8)
        ax.set_title("resolution per iteration (lower is better)", fontsize=9)
        ax.tick_params(labelsize=7)
        self.resolution_canvas.figure.tight_layout()
        self.resolution_canvas.draw_idle()


def method_text(record: dict[str, Any]) -> str:
    """Short words for an iteration's clustering: ``"K-Means, 6 clusters"``, ``"HDBSCAN, ≥ 50 per cluster"``
    (every setting, and whether it started from the previous clusters: :func:`method_details`)."""
    method = record.get("cluster_method")
    if method is None:
        return "—"
    params = record.get("cluster_params") or {}
    name = METHOD_NAMES.get(method, method)
    if "n_clusters" in params:
        text = f"{name}, {int(params['n_clusters'])} clusters"
    elif method == "dbscan" and "eps" in params:
        text = f"{name}, radius {float(params['eps']):g}"
    elif method == "hdbscan" and "min_cluster_size" in params:
        text = f"{name}, ≥ {int(params['min_cluster_size'])} per cluster"
    else:
        text = name
    if record.get("vae"):
        text += f", VAE +{int(record['vae'].get('epochs', 0))} epochs"
    return text


def _two_lines(name: str) -> str:
    """``"refinement limit (Å)"`` → ``"refinement\\nlimit (Å)"`` (a header over a narrow column)."""
    head, _, tail = name.partition(" ")
    return f"{head}\n{tail}" if tail else name


def method_details(record: dict[str, Any]) -> str:
    """Every setting of an iteration's clustering, for the method cell's tooltip."""
    method = record.get("cluster_method")
    if method is None:
        return ""
    params = record.get("cluster_params") or {}
    lines = [f"{METHOD_NAMES.get(method, method)} ({method})"]
    lines += [f"{k} = {v}" for k, v in params.items() if k not in ("warm_start",)]
    if params.get("warm_start"):
        lines.append("started from the previous iteration's clusters")
    if record.get("vae"):
        lines.append(f"then the VAE was trained {int(record['vae'].get('epochs', 0))} more epochs on the refined poses "
                     "(Silvera Coeff 2025)")
    return "\n".join(lines)


def _make_canvas(height: float = 2.4):
    from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.2, height), dpi=90)
    canvas = FigureCanvasQTAgg(fig)
    canvas.setMinimumHeight(int(height * 80))
    return canvas, fig.add_subplot(111)


class RefineDock(ScrollDock):
    """The Plugins-menu entry: :class:`RefineWidget` in a scroll area, tabbed with the other stages."""

    def __init__(self, napari_viewer) -> None:
        super().__init__(RefineWidget(napari_viewer))
