"""Chain-fit dock widget (Esteve-Yagüe et al. 2022): train, watch the curves, browse fitted chains.

Thin (docs/design.md): the settings form is generated from
:class:`~napari_cryohet.stages.chainfit.ChainFitConfig` (:class:`ConfigForm`); the fit
runs through the window's :class:`~napari_cryohet.plugin.session.Session` — a workspace
run ``chainfit/NNNN`` when a folder is chosen (kept, resumed with the same settings), in
memory otherwise — off the GUI thread (:class:`~napari_cryohet.plugin._runner.StageRunner`).
The eigenvectors come from the spectral run picked in "eigenvectors from" (none: the
newest, or one computed with default settings first). The known conformation is the
dataset's ground truth, or the reference model shipped beside its ``.star``
(``reference_ca.pdb``), or a PDB/mmCIF file the user picks.

The result is drawn in its own 3D scene (:mod:`napari_cryohet.plugin._chainfit_view`):
fitted, true and reference chains of one particle, its image and the fit's projection; a
particle slider moves them; loss and error curves update while training runs; "Export
fitted chains" writes every fitted chain as one model of a PDB file.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, Label, LineEdit, PushButton, Slider
from qtpy.QtCore import QTimer

from napari_cryohet.plugin import _chainfit_view
from napari_cryohet.plugin._config_form import ConfigForm
from napari_cryohet.plugin._docking import ScrollDock
from napari_cryohet.plugin._runner import StageRunner
from napari_cryohet.plugin._workspace_picker import WorkspacePicker
from napari_cryohet.plugin.dataset_picker import DatasetPicker
from napari_cryohet.plugin.session import Session, export_target
from napari_cryohet.stages.chainfit import (
    ChainFitConfig,
    ChainFitResult,
    ChainReference,
    reference_from_pdb,
)
from napari_cryohet.stages.chainfit.reference import reference_for
from napari_cryohet.stages.chainfit.stage import default_spectral_config
from napari_cryohet.stages.workspace import RunNotFoundError

__all__ = ["ChainFitWidget", "ChainFitDock", "LAYER_PREFIX"]

LAYER_PREFIX = _chainfit_view.LAYER_PREFIX
#: Config fields the widget sets itself (reference picker, residue ranges).
FORM_EXCLUDE = ("reference", "reference_chain", "fixed_angles", "rigid_angles", "varying_angles")
#: How often the curves are redrawn while training (ms): drawing on every progress call
#: would keep the GUI thread busy.
PLOT_INTERVAL_MS = 1000
AUTOMATIC = "automatic"


class _EpochProgress:
    """A progress callback that also hands each epoch's metrics to the widget (``on_epoch``,
    which the chain-fit stage reads from its progress callback)."""

    def __init__(self, progress, on_epoch) -> None:
        self._progress, self.on_epoch = progress, on_epoch

    def __call__(self, fraction: float, message: str = "") -> None:
        self._progress(fraction, message)


class ChainFitWidget(Container):
    """Dock widget of the chain-fit stage (Esteve-Yagüe et al. 2022).

    Attributes
    ----------
    session
        The window's :class:`Session`.
    dataset_picker
        The session's datasets.
    workspace
        :class:`WorkspacePicker`: the window's workspace folder and the spectral run whose
        eigenvectors are used (none: the newest, or one with default settings).
    reference_source, reference_file, reference_chain
        ``"automatic"`` (the dataset's ground truth, or the model shipped beside its .star)
        or ``"file"`` (PDB/mmCIF in the frame of the poses).
    rigid_ranges, fixed_ranges, varying_ranges
        Residue-range masks (``"10-20,40-52"``), turned into angle indices.
    form
        :class:`ConfigForm` of every other setting.
    run_button, runner
        Start button and the :class:`StageRunner`.
    particle
        Slider over the fitted particles; moves every chain and image layer.
    export_path, export_button
        Multi-model PDB export of the fitted chains.
    dataset, reference, result, history, chains, scene
        State: the dataset, the reference, the latest result, live metrics, fitted chains,
        the result's scene.
    """

    def __init__(self, napari_viewer, dataset: Any = None) -> None:
        self.viewer = napari_viewer
        self.session = Session.for_viewer(napari_viewer)
        self.dataset: Any = None
        self.result: ChainFitResult | None = None
        self.scene = None
        self.dataset_picker = DatasetPicker(napari_viewer, on_pick=self._on_pick)
        self.workspace = WorkspacePicker("chainfit", session=self.session)
        self.reference_source = ComboBox(
            label="known conformation", value=AUTOMATIC, choices=[AUTOMATIC, "file"],
            tooltip="The structure the fit deforms (Esteve-Yagüe et al. 2022, §2): 'automatic' uses the dataset's "
                    "ground truth (simulated data) or the model shipped beside its .star file (reference_ca.pdb); "
                    "'file' a PDB/mmCIF model of your own, in the frame of the particle poses.")
        self.reference_file = FileEdit(label="model file", filter="*.pdb *.cif *.ent *.mmcif *.gz",
                                       tooltip="PDB or mmCIF model (Cα atoms are used), in the frame of the poses")
        self.reference_chain = LineEdit(label="chain (empty = first)", value="",
                                        tooltip="chain identifier in the model file, e.g. A")
        self.rigid_ranges = LineEdit(label="rigid residues", value="",
                                     tooltip="residue ranges, e.g. 10-20,40-52, that move as rigid pieces (helices, "
                                             "strands): their angles only get a constant change")
        self.fixed_ranges = LineEdit(label="fixed residues", value="",
                                     tooltip="residue ranges, e.g. 1-5, whose angles stay as in the known conformation")
        self.varying_ranges = LineEdit(label="only these move", value="",
                                       tooltip="if given (e.g. 30-60,120-160), only these residues' angles are fitted")
        self.reference_note = Label(value="")
        self.reference_note.native.setWordWrap(True)
        self.form = ConfigForm(ChainFitConfig, exclude=FORM_EXCLUDE)
        self.run_button = PushButton(text="Fit chains")
        self.runner = StageRunner()
        self.particle = Slider(label="particle", value=0, min=0, max=0,
                               tooltip="which fitted particle the chains and images show")
        self.export_path = FileEdit(label="export to", mode="w", filter="*.pdb",
                                    tooltip="PDB file to write every fitted chain to (one model per particle)")
        self.export_button = PushButton(text="Export fitted chains")
        self.info = Label(value="")
        self.info.native.setWordWrap(True)
        super().__init__(widgets=[
            self.dataset_picker, self.workspace, self.reference_source, self.reference_note, self.reference_file,
            self.reference_chain, self.rigid_ranges, self.fixed_ranges, self.varying_ranges, self.form,
            self.run_button, self.runner, self.particle, self.export_path, self.export_button, self.info,
        ])
        self.plots = _chainfit_view.ChainPlots()
        self.native.layout().addWidget(self.plots.canvas)
        self.reference: ChainReference | None = None
        self.chains: np.ndarray | None = None
        self.history: list[dict[str, float]] = []
        self._history_lock = threading.Lock()
        self._plot_timer = QTimer()
        self._plot_timer.setInterval(PLOT_INTERVAL_MS)
        self._plot_timer.timeout.connect(self._refresh_plots)
        self.export_path.line_edit.value = ""  # FileEdit.value = "" would become the working folder
        self.run_button.changed.connect(self.run)
        self.particle.changed.connect(self.show_particle)
        self.export_button.changed.connect(self.export)
        self.reference_source.changed.connect(self._show_reference_choice)
        if dataset is not None:
            self.set_dataset(dataset)
        else:
            self.dataset_picker.deliver()
        self._show_reference_choice()
        latest = self.session.run_choices(("chainfit",))
        if self.result is None and latest:  # a reopened workspace: its newest fit here too
            self.show_result(self.session.result(latest[0][0]), show=False)

    @property
    def view(self):
        """The curves (kept under this name for scripts written against older versions)."""
        return self.plots

    # ------------------------------------------------------------------ dataset
    def _on_pick(self, picked: Any) -> None:
        if picked is not self.dataset:
            self.dataset = picked
            truth = getattr(picked, "ground_truth", None) or {}
            self.form.anchor.choices = ["reference", "truth"] if "coords_a" in truth else ["reference"]
            self.info.value = f"{len(picked)} particles, {getattr(picked, 'box_size', '?')} px"
            self._show_reference_choice()

    def set_dataset(self, dataset: Any) -> None:
        """Fit ``dataset`` (a :class:`~napari_cryohet.core.particle_dataset.ParticleDataset`)."""
        self.session.set_dataset(dataset)
        self._on_pick(dataset)

    def _show_reference_choice(self, *_: Any) -> None:
        automatic = self.reference_source.value == AUTOMATIC
        for w in (self.reference_file, self.reference_chain):
            w.visible = not automatic
        if not automatic or self.dataset is None:
            self.reference_note.value = ""
            return
        try:
            self.reference_note.value = reference_for(self.dataset)[1]
        except ValueError as err:
            self.reference_note.value = f"no known conformation: {err}"

    # ------------------------------------------------------------------ config
    def load_reference(self) -> ChainReference:
        """The reference chosen in the form (automatic, or a file)."""
        if self.reference_source.value == "file":
            text = str(self.reference_file.line_edit.value or "").strip()
            if not text:
                raise ValueError("known conformation: choose a PDB/mmCIF file, or pick 'automatic'")
            return reference_from_pdb(Path(text), chain=self.reference_chain.value.strip() or None)
        return reference_for(self.dataset)[0]

    def config(self, reference: ChainReference) -> ChainFitConfig:
        """A :class:`ChainFitConfig` from the form; residue ranges become angle indices."""
        from_file = self.reference_source.value == "file"
        varying = self.varying_ranges.value.strip()
        return self.form.config(
            reference=str(Path(self.reference_file.value).resolve()) if from_file else None,
            reference_chain=(self.reference_chain.value.strip() or None) if from_file else None,
            rigid_angles=reference.angles(self.rigid_ranges.value), fixed_angles=reference.angles(self.fixed_ranges.value),
            varying_angles=reference.angles(varying) if varying else None,
        )

    # ------------------------------------------------------------------ run
    def run(self, *_: Any) -> None:
        """Start the fit (the result arrives in :meth:`show_result`)."""
        if self.dataset is None:
            self.info.value = "no dataset: open a .star file or a sample (File ▸ Open Sample)"
            return
        try:
            reference = self.load_reference()
            config = self.config(reference)
            ws = self.workspace.workspace_for()
        except (ValueError, OSError) as err:
            self.info.value = f"error: {err}"
            return
        dataset, session = self.dataset, self.session
        inputs = self.workspace.input_ids()
        with self._history_lock:
            self.history = []
        self.plots.plotted = -1

        def on_epoch(record: dict[str, float]) -> None:
            with self._history_lock:
                self.history.append(record)

        def job(progress, cancel):
            if "eigenvectors" not in inputs:
                inputs["eigenvectors"] = _default_spectral_run(session, ws, dataset, config.n_eigenvectors, progress,
                                                               cancel)
            return session.run("chainfit", config, inputs=inputs, progress=_EpochProgress(progress, on_epoch),
                               cancel=cancel, dataset=dataset)

        self.reference = reference
        self._plot_timer.start()
        self.runner.start(job, self.show_result_steps, on_error=lambda _err: self._plot_timer.stop())

    # ------------------------------------------------------------------ result
    def show_result(self, result: ChainFitResult, *, show: bool = True) -> None:
        """Draw a result in its scene (chains of the current particle, images) and plot its curves."""
        for _ in self.show_result_steps(result, show=show):
            pass

    def show_result_steps(self, result: ChainFitResult, *, show: bool = True):
        """:meth:`show_result` as a generator (the runner yields to the event loop between layers)."""
        self._plot_timer.stop()
        self.result, self.reference, self.chains = result, result.reference, result.chains()  # (N, m, 3)
        with self._history_lock:
            self.history = list(result.history)
        self.plots.plotted = -1
        self._refresh_plots()
        yield
        with self.particle.changed.blocked():
            self.particle.max = len(self.chains) - 1
            self.particle.value = min(int(self.particle.value), len(self.chains) - 1)
        yield from self._show_steps(result, show)

    def _show_steps(self, result: ChainFitResult, show: bool):
        self.session.add_result(result)
        yield from _chainfit_view.present_steps(self.session, result, show=show, particle=int(self.particle.value),
                                                chains=self.chains)
        self.scene = _chainfit_view.result_scene(self.session, result)
        last = result.history[-1] if result.history else {}
        text = f"held-out mismatch {last.get('test_loss', float('nan')):.3g}"
        if "avg_error_a" in last:
            text += f", mean atom error {last['avg_error_a']:.2f} Å, largest {last['max_error_a']:.2f} Å"
        if result.run_id:
            text = f"{result.run_id}: {text}"
            if result.run_note:  # "resumed from epoch N of run chainfit/0003", or already done
                text += f" ({result.run_note})"
        self.info.value = text

    def show_particle(self, *_: Any) -> None:
        """Show particle ``self.particle.value``: fitted / true / reference chains, images."""
        if self.result is None or self.chains is None or self.scene is None:
            return
        _chainfit_view.show_particle(self.session, self.scene, self.result, int(self.particle.value),
                                     chains=self.chains)

    def _refresh_plots(self, *_: Any) -> None:
        with self._history_lock:
            history = list(self.history)
        self.plots.plot_history(history)

    # ------------------------------------------------------------------ export
    def export(self, *_: Any) -> Path | None:
        """Write every fitted chain as one model of a PDB file (the path in "export to")."""
        from napari_cryohet.io.pdb import write_chains_pdb

        if self.result is None or self.chains is None:
            self.info.value = "nothing to export: fit first"
            return None
        ref = self.result.reference
        try:
            path = export_target(self.export_path.line_edit.value, ".pdb")
            chains = self.chains
            if chains.shape[-1] == 2:  # planar chains (the box with two arms) in the z = 0 plane
                chains = np.concatenate([chains, np.zeros(chains.shape[:-1] + (1,), chains.dtype)], axis=-1)
            write_chains_pdb(path, chains, resnames=ref.resnames, resids=ref.resids, chain_id=ref.chain_ids,
                             icodes=ref.icodes)
        except (OSError, ValueError) as err:
            self.info.value = f"export failed: {err}" if not str(err).startswith("export:") else str(err)
            return None
        self.info.value = f"wrote {len(self.chains)} models to {path}"
        return path


def _default_spectral_run(session, ws, dataset, n_eigenvectors: int, progress, cancel) -> str:
    """The newest finished spectral run of the session, else a new one with default settings (worker thread)."""
    if ws is not None:
        try:
            return ws.resolve("spectral")
        except RunNotFoundError:
            pass
    else:
        mine = session.run_choices(("spectral",))
        if mine:
            return mine[0][0]
    progress(0.0, "no spectral embedding yet: computing one with default settings first")
    return session.run("spectral", default_spectral_config(n_eigenvectors, dataset), progress=progress, cancel=cancel,
                       dataset=dataset).run_id



class ChainFitDock(ScrollDock):
    """The Plugins-menu entry: :class:`ChainFitWidget` in a scroll area, tabbed with the other stages
    (:mod:`napari_cryohet.plugin._docking`)."""

    def __init__(self, napari_viewer) -> None:
        super().__init__(ChainFitWidget(napari_viewer))
