"""VAE trainer and latent-space explorer (dock widget; science in ``stages.vae``).

Train the structural-basis VAE of Kimanius, Jamali, Scheres 2022 on a dataset layer, then
explore its latent space: the latents appear as a points layer (PCA or UMAP, 2D or 3D,
coloured by any per-particle column such as the ground-truth conformation); selecting a
point decodes that particle's volume into an image layer (3D) and a surface layer (marching
cubes at an adjustable level) in a worker thread, so napari never blocks; a path between
two selected points, or drawn as a path in the ``latent path`` shapes layer, becomes a
volume series (a 4D image layer whose first slider walks the path); particles inside the
polygons of the ``latent selection`` shapes layer can be written as a RELION ``.star`` subset.

The settings form is generated from :class:`~napari_cryohet.stages.vae.VAEConfig`
(:class:`~napari_cryohet.plugin._config_form.ConfigForm`). Training runs through the
window's :class:`~napari_cryohet.plugin.session.Session`: a workspace run
(``<folder>/vae/NNNN``: kept, resumable, and its latents can feed the next stage) when a
folder is chosen, in memory otherwise. Each view has its own scene
(:mod:`napari_cryohet.plugin._vae_scene`): the latent space, the decoded volume (with a
preview of its three projections in the dock) and the volume series; selecting latent
points selects those particles in the stack viewer.

Everything is reachable without clicking (for tests and scripts): :meth:`set_dataset`,
:meth:`run`, :meth:`set_result`, :meth:`select_particle`, :meth:`make_path`,
:meth:`export_selection`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSlider, Label, LineEdit, PushButton, SpinBox

from napari_cryohet.core.particle_dataset import ParticleDataset
from napari_cryohet.plugin import _vae_scene
from napari_cryohet.plugin._config_form import ConfigForm
from napari_cryohet.plugin._docking import ScrollDock
from napari_cryohet.plugin._embedding_layer import colour_points, column_choices, preferred_column
from napari_cryohet.plugin._runner import StageRunner
from napari_cryohet.plugin._vae_scene import (
    LATENT_LAYER,
    PATH_VOLUME_LAYER,
    SURFACE_LAYER,
    VOLUME_LAYER,
)
from napari_cryohet.plugin._workspace_picker import WorkspacePicker
from napari_cryohet.plugin.dataset_picker import DatasetPicker
from napari_cryohet.plugin.presenters import present
from napari_cryohet.plugin.session import Session
from napari_cryohet.stages.protocol import Embedding, dataset_indices
from napari_cryohet.stages.vae import (
    EMBEDDING_METHODS,
    VAEConfig,
    VAEResult,
    decode_volumes,
    embed_latents,
    embedding_to_latent,
    isosurface,
    latent_path,
    points_in_polygon,
)

if TYPE_CHECKING:  # pragma: no cover
    import napari

__all__ = ["VAEExplorerWidget", "VAEDock", "LATENT_LAYER", "VOLUME_LAYER", "SURFACE_LAYER", "PATH_VOLUME_LAYER"]

PATH_SHAPES_LAYER = "latent path"
SELECTION_SHAPES_LAYER = "latent selection"


class VAEExplorerWidget(Container):
    """Train the VAE and explore its latent space.

    Attributes
    ----------
    form
        The settings (:class:`ConfigForm` of :class:`VAEConfig`; ``form.epochs`` …).
    workspace
        :class:`WorkspacePicker`: the workspace folder (empty: results in memory only).
    runner
        :class:`StageRunner` for training.
    worker_runner
        :class:`StageRunner` for embeddings and volume decoding (non-blocking).
    dataset, result
        The current :class:`ParticleDataset` and :class:`VAEResult` (``result.run_id`` is
        the workspace run, ``None`` in memory).
    embedding
        ``(N, 2|3)`` coordinates of the latents layer.
    """

    def __init__(self, napari_viewer: napari.Viewer, **kwargs: Any):
        self.viewer = napari_viewer
        self.session = Session.for_viewer(napari_viewer)
        self.scene = None
        self.volume_scene = None
        self.dataset: ParticleDataset | None = None
        self.result: VAEResult | None = None
        self.embedding: np.ndarray | None = None
        self.current_volume: np.ndarray | None = None
        self.selected: list[int] = []

        self.dataset_layer = DatasetPicker(napari_viewer, kind=ParticleDataset, label="dataset",
                                           on_pick=self._on_pick)
        self.form = ConfigForm(VAEConfig, label="VAE settings")
        self.workspace = WorkspacePicker("vae", session=self.session)
        self.train_button = PushButton(text="Train VAE")
        self.runner = StageRunner(label="training")

        self.result_dir = LineEdit(label="result folder", value="",
                                   tooltip="A VAE run folder (workspace/vae/0001), or a workspace (its newest "
                                           "VAE run)")
        self.load_button = PushButton(text="Load trained VAE")
        self.method = ComboBox(label="latent map", choices=[(d, k) for k, (d, _) in EMBEDDING_METHODS.items()],
                               value="pca2", tooltip="how the latent vectors are drawn: PCA (instant) or UMAP "
                                                     "(McInnes et al. 2018; compiles for 10–40 s on first use)")
        self.color_by = ComboBox(label="colour by", choices=self._colour_choices,
                                 tooltip="per-particle value colouring the latent points (ground truth, defocus, "
                                         ".star columns, other runs' vectors)")
        self.level = FloatSlider(label="surface level (σ)", value=2.0, min=0.0, max=8.0, step=0.1,
                                 tooltip="iso-surface of the decoded volume, in standard deviations above its mean")
        self.n_steps = SpinBox(label="path steps", value=10, min=2, max=500,
                               tooltip="number of volumes decoded along the latent path")
        self.path_button = PushButton(text="Volume series along path")
        self.export_path = LineEdit(label="export .star", value="",
                                    tooltip="file to write the selected particles to (RELION .star, every column)")
        self.show_volume_button = PushButton(text="Show decoded volume in 3D")
        self.export_button = PushButton(text="Export selection as .star")
        self.info = Label(value="")
        self.worker_runner = StageRunner(label="explorer")
        super().__init__(widgets=[
            self.dataset_layer, self.form, self.workspace, self.train_button, self.runner,
            self.result_dir, self.load_button, self.method, self.color_by, self.level, self.n_steps,
            self.show_volume_button, self.path_button, self.export_path, self.export_button, self.info,
            self.worker_runner,
        ], **kwargs)
        self.preview_canvas, self.preview_axes = _make_preview()
        self.native.layout().addWidget(self.preview_canvas)
        self.train_button.changed.connect(lambda *_: self.run())
        self.load_button.changed.connect(lambda *_: self.load_result(self.result_dir.value))
        self.method.changed.connect(lambda *_: self.show_latents())
        self.color_by.changed.connect(lambda *_: self._recolour())
        self.level.changed.connect(lambda *_: self._update_surface())
        self.path_button.changed.connect(lambda *_: self.make_path())
        self.export_button.changed.connect(lambda *_: self.export_selection(self.export_path.value))
        self.show_volume_button.changed.connect(lambda *_: self.show_volume_scene())
        self.session.runs_changed.connect(self.color_by.reset_choices)
        self.dataset_layer.deliver()
        latest = self.session.run_choices(("vae",))
        if latest:  # a reopened workspace: its newest VAE here too
            self.set_result(self.session.result(latest[0][0]), show=False)

    # ------------------------------------------------------------------ data
    def set_dataset(self, dataset: ParticleDataset) -> None:
        """Use ``dataset`` for training (it becomes the window's dataset in use)."""
        self.session.set_dataset(dataset)
        self.dataset = dataset

    def _on_pick(self, picked: Any) -> None:
        self.dataset = picked

    def _current_dataset(self) -> ParticleDataset:
        if self.dataset is not None:
            return self.dataset
        picked = self.dataset_layer.dataset
        if picked is None:
            raise ValueError("no dataset: open a .star file or a sample (File ▸ Open Sample)")
        return picked

    @property
    def layer(self):
        """The latent points layer (``None`` before a result)."""
        return None if self.scene is None else self.scene.layer(LATENT_LAYER)

    def _colour_choices(self, *_: Any) -> list[tuple[str, str]]:
        layer = self.layer
        return [] if layer is None or layer.features is None else column_choices(layer.features.columns)

    def config(self) -> VAEConfig:
        """The :class:`VAEConfig` the form describes (``ValueError`` naming a bad entry)."""
        return self.form.config()

    # ------------------------------------------------------------------ training
    def run(self) -> None:
        """Train in a worker thread (a workspace run when a folder is chosen); the latents
        appear when it finishes."""
        try:
            dataset, cfg = self._current_dataset(), self.config()
            self.workspace.workspace_for()
        except ValueError as err:
            self.info.value = str(err)
            return
        self.dataset, session = dataset, self.session
        inputs = self.workspace.input_ids()

        def job(progress, cancel):
            return session.run("vae", cfg, inputs=inputs, dataset=dataset, progress=progress, cancel=cancel)

        self.runner.start(job, self.set_result_steps)

    def load_result(self, folder: str | Path) -> None:
        """Load a trained VAE: a run folder (``<workspace>/vae/0001``), a workspace (its newest
        finished VAE run), or an older ``<folder>/vae``."""
        try:
            self.set_result(VAEResult.from_folder(folder))
        except (OSError, ValueError) as err:
            self.info.value = f"error: {err}"

    def set_result(self, result: VAEResult, *, show: bool = True) -> None:
        """Show a trained result's latents (and the settings that produced it in the form)."""
        for _ in self.set_result_steps(result, show=show):
            pass

    def set_result_steps(self, result: VAEResult, *, show: bool = True):
        """:meth:`set_result` as a generator (the runner yields to the event loop between steps)."""
        self.result = result
        self.form.set_config(result.config)
        yield
        self.scene = present(self.session, result, show=False)
        yield
        if show:
            yield from self.session.scenes.show_steps(self.scene)
        self.embedding = np.asarray(self.layer.data)
        if not getattr(self.layer, "_cryohet_vae_linked", False):
            self.layer.selected_data.events.items_changed.connect(self._on_select)
            self.layer._cryohet_vae_linked = True
        with self.color_by.changed.blocked():  # present() coloured the points already
            self.color_by.reset_choices()
            self.color_by.value = preferred_column([c for _, c in self._colour_choices()])
        last = result.history[-1] if result.history else None
        text = (f"{len(result.latents)} particles, zdim {result.model.shape.zdim}"
                + (f", final loss {last['loss']:.4f}" if last else ""))
        if result.run_id:
            text = f"run {result.run_id}: {text}"
            if result.run_note:  # "resumed from epoch N of run vae/0003", or already done
                text += f" ({result.run_note})"
        self.info.value = text
        if self.method.value != "pca2":  # the scene shows PCA at first; UMAP runs in a worker
            self.show_latents()

    # ------------------------------------------------------------------ latents
    def show_latents(self) -> None:
        """(Re)compute the embedding in a worker and show it as a points layer."""
        if self.result is None:
            return
        latents, method = self.result.latents, self.method.value

        def job(progress, cancel):
            return embed_latents(latents, method=method, progress=progress, cancel=cancel)

        self.worker_runner.start(job, self._show_embedding, queue=True)

    def _show_embedding(self, embedding: np.ndarray) -> None:
        self.scene = _vae_scene.present(self.session, self.result, embedding=embedding, method=self.method.value,
                                        colour_by=self.color_by.value)
        self.embedding = np.asarray(self.layer.data)  # as drawn (axes scaled to equal spread)
        if not getattr(self.layer, "_cryohet_vae_linked", False):
            self.layer.selected_data.events.items_changed.connect(self._on_select)
            self.layer._cryohet_vae_linked = True

    def _recolour(self) -> None:
        colour_points(self.layer, self.color_by.value, "turbo")

    def _on_select(self, *_: Any) -> None:
        layer = self.layer
        if layer is None or not layer.selected_data:
            return
        chosen = sorted(layer.selected_data)
        new = [i for i in chosen if i not in self.selected]
        self.selected = (self.selected + new)[-2:] if new else self.selected
        if len(chosen) == 1:
            self.select_particle(chosen[0])

    def select_particle(self, index: int) -> None:
        """Decode particle ``index``'s latent into the volume and surface layers (worker)."""
        if self.result is None:
            return
        if index not in self.selected:
            self.selected = (self.selected + [int(index)])[-2:]
        self.select_latent(self.result.latents[int(index)], label=f"particle {int(index)}")

    def select_latent(self, z: np.ndarray, *, label: str = "latent point") -> None:
        """Decode any latent point into the volume and surface layers (worker)."""
        model, level, apix = self.result.model, float(self.level.value), self.result.apix

        def job(progress, cancel):
            vol = decode_volumes(model, np.asarray(z)[None])[0]
            return vol, isosurface(vol, level_sigma=level, apix=apix)

        def done(out):
            vol, surface = out
            self.current_volume = vol
            self.volume_scene = _vae_scene.show_volume(self.session, self.result, vol, surface)
            self._preview(vol)
            self.info.value = f"decoded {label}: preview below; 'Show decoded volume in 3D' for the full view"

        self.worker_runner.start(job, done, queue=True)

    def show_volume_scene(self) -> None:
        """Switch the canvas to the decoded volume (3D)."""
        if self.volume_scene is None:
            self.info.value = "select a latent point first: its volume is decoded"
            return
        self.session.scenes.show(self.volume_scene)

    def _preview(self, vol: np.ndarray) -> None:
        for ax, axis, title in zip(self.preview_axes, (0, 1, 2), ("along z", "along y", "along x"), strict=True):
            ax.clear()
            ax.imshow(vol.sum(axis=axis), cmap="gray")
            ax.set_title(f"projection {title}", fontsize=7)
            ax.set_axis_off()
        self.preview_canvas.draw_idle()

    def _update_surface(self) -> None:
        if self.current_volume is None or self.result is None:
            return
        surface = isosurface(self.current_volume, level_sigma=float(self.level.value), apix=self.result.apix)
        self.volume_scene = _vae_scene.show_volume(self.session, self.result, self.current_volume, surface)

    # ------------------------------------------------------------------ paths and subsets
    def path_anchors(self) -> np.ndarray:
        """Latent anchors of the path: the ``latent path`` shapes layer's first shape (mapped
        from embedding coordinates to latents), else the two last selected particles."""
        if self.result is None:
            raise ValueError("train or load a VAE first")
        if PATH_SHAPES_LAYER in self.viewer.layers and len(self.viewer.layers[PATH_SHAPES_LAYER].data):
            if self.embedding is None:
                raise ValueError("no embedding shown")
            verts = np.asarray(self.viewer.layers[PATH_SHAPES_LAYER].data[0])[:, -self.embedding.shape[1]:]
            return embedding_to_latent(verts, self.embedding, self.result.latents)
        if len(self.selected) < 2:
            raise ValueError("select two latent points or draw a path in the 'latent path' shapes layer")
        return self.result.latents[self.selected[-2:]]

    def make_path(self, anchors: np.ndarray | None = None, n_steps: int | None = None) -> None:
        """Decode a volume series along a latent path into a 4D image layer (worker).

        ``anchors`` ``(A ≥ 2, zdim)`` latent points (default :meth:`path_anchors`).
        """
        try:
            anchors = self.path_anchors() if anchors is None else np.asarray(anchors, dtype=np.float32)
        except ValueError as err:
            self.info.value = str(err)
            return
        n = int(n_steps or self.n_steps.value)
        model = self.result.model

        def job(progress, cancel):
            return decode_volumes(model, latent_path(anchors, n))

        def done(series):
            _vae_scene.show_series(self.session, self.result, series)
            self.info.value = f"volume series of {len(series)} steps: the slider walks along the path"

        self.worker_runner.start(job, done, queue=True)

    def selection_indices(self) -> np.ndarray:
        """Particles inside any polygon of the ``latent selection`` shapes layer (else the
        points selected in the latents layer)."""
        if self.embedding is None:
            return np.zeros(0, np.int64)
        if SELECTION_SHAPES_LAYER in self.viewer.layers and len(self.viewer.layers[SELECTION_SHAPES_LAYER].data):
            inside = [points_in_polygon(self.embedding[:, :2], np.asarray(poly)[:, -2:])
                      for poly in self.viewer.layers[SELECTION_SHAPES_LAYER].data]
            return np.unique(np.concatenate(inside)).astype(np.int64)
        if self.layer is not None:
            return np.array(sorted(self.layer.selected_data), dtype=np.int64)
        return np.zeros(0, np.int64)

    def export_selection(self, path: str | Path) -> Path | None:
        """Write the selected particles as a RELION ``.star`` subset; returns its path."""
        from napari_cryohet.io.write_particles import write_dataset_star

        if str(path or "").strip() in ("", "."):
            self.info.value = "export: type a file name for the .star file first"
            return None
        idx = self.selection_indices()
        if self.dataset is None or self.result is None or len(idx) == 0:
            self.info.value = "nothing selected (draw polygons in the 'latent selection' shapes layer)"
            return None
        # latent rows → rows of the dataset, by particle index (the dataset may list them in another order)
        rows = Embedding(np.arange(len(self.dataset))[:, None], dataset_indices(self.dataset), name="dataset rows")
        try:
            idx = rows.aligned_to(self.result.particle_indices[idx])[:, 0]
        except ValueError as err:
            self.info.value = f"error: {err}"
            return None
        out = Path(write_dataset_star(Path(path).expanduser(), self.dataset.subset(idx))).resolve()
        self.info.value = f"wrote {len(idx)} particles to {out}"
        return out


def _make_preview():
    from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.4, 1.3), dpi=90)
    canvas = FigureCanvasQTAgg(fig)
    canvas.setMinimumHeight(110)
    axes = fig.subplots(1, 3)
    for ax in axes:
        ax.set_axis_off()
    fig.tight_layout()
    return canvas, axes



class VAEDock(ScrollDock):
    """The Plugins-menu entry: :class:`VAEExplorerWidget` in a scroll area, tabbed with the other stages
    (:mod:`napari_cryohet.plugin._docking`)."""

    def __init__(self, napari_viewer) -> None:
        super().__init__(VAEExplorerWidget(napari_viewer))
