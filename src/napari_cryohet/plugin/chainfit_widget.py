"""Chain-fit dock widget: train, watch the curves, browse fitted chains particle by particle.

Thin (docs/design.md): the settings form is generated from
:class:`~napari_cryohet.stages.chainfit.ChainFitConfig` (:class:`ConfigForm`); with a
workspace folder chosen the fit runs as a workspace run (``ws.run("chainfit", ...)``, kept
in ``<workspace>/chainfit/NNNN`` and resumed with the same settings), else in memory; either
way :class:`~napari_cryohet.plugin._runner.StageRunner` runs it off the GUI thread, and the
result becomes layers (:mod:`napari_cryohet.plugin._chainfit_view`):

* ``"chainfit fit"`` (points) + ``"chainfit fit path"`` (a shapes path) — the fitted Cα
  chain of the current particle, model frame, (z, y, x) in Å;
* ``"chainfit truth"`` / ``"chainfit truth path"`` — its ground-truth chain (synthetic data);
* ``"chainfit reference"`` / ``"chainfit reference path"`` — the known conformation;
* ``"chainfit particle"`` and ``"chainfit projection"`` — the particle image and the
  CTF-filtered projection of the fit (eq. 2.10), side by side next to the chains.

A particle slider swaps the layer data; loss and error curves (eq. 3.6 / 3.7) update live
during training; "Export fitted chains" writes every fitted chain as one model of a PDB file.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, Label, LineEdit, PushButton, Slider

from napari_cryohet.plugin._chainfit_view import ChainView
from napari_cryohet.plugin._config_form import ConfigForm
from napari_cryohet.plugin._runner import StageRunner
from napari_cryohet.plugin._workspace_picker import WorkspacePicker
from napari_cryohet.plugin.dataset_picker import DatasetPicker
from napari_cryohet.stages.chainfit import (
    ChainFitConfig,
    ChainFitResult,
    ChainReference,
    reference_from_dataset,
    reference_from_pdb,
    run_chainfit,
)
from napari_cryohet.stages.chainfit.stage import default_spectral_config
from napari_cryohet.stages.workspace import RunNotFoundError

__all__ = ["ChainFitWidget", "LAYER_PREFIX", "EXPORT_NAME"]

LAYER_PREFIX = "chainfit"
#: File name of an export when no path is given (in the workspace folder, else the working folder).
EXPORT_NAME = "chainfit_fits.pdb"
#: Config fields the widget sets itself (reference picker, residue ranges).
FORM_EXCLUDE = ("reference", "reference_chain", "fixed_angles", "rigid_angles", "varying_angles")


class _EpochProgress:
    """A progress callback that also hands each epoch's metrics to the widget (``on_epoch``,
    which ``run_chainfit`` reads from the progress callback of a workspace run)."""

    def __init__(self, progress, on_epoch) -> None:
        self._progress, self.on_epoch = progress, on_epoch

    def __call__(self, fraction: float, message: str = "") -> None:
        self._progress(fraction, message)


class ChainFitWidget(Container):
    """Dock widget of the chain-fit stage (Esteve-Yagüe et al. 2022).

    Attributes
    ----------
    dataset_picker
        Image layers carrying a dataset (``layer.metadata["cryohet_dataset"]``).
    workspace
        :class:`WorkspacePicker`: workspace folder (empty: in memory) and the spectral run
        whose eigenvectors are used (none: the latest, or one with default settings).
    reference_source, reference_file, reference_chain
        ``"dataset"`` (the dataset's known conformation) or ``"file"`` (PDB/mmCIF).
    rigid_ranges, fixed_ranges, varying_ranges
        Residue-range masks (``"10-20,40-52"``), turned into angle indices.
    form
        :class:`ConfigForm` of every other setting (``form.epochs``, ``form.learning_rate``,
        ``form.lr_schedule``, ``form.device``, ``form.test_fraction`` …).
    run_button, runner
        Start button and the :class:`StageRunner`.
    particle
        Slider over the fitted particles; moves every chain and image layer.
    export_path, export_button
        Multi-model PDB export of the fitted chains (empty path: ``chainfit_fits.pdb`` in
        the workspace folder, else the working folder).
    dataset, reference, result, history, chains
        State: the dataset, the reference, the latest result, live metrics, fitted chains.
    """

    def __init__(self, napari_viewer, dataset: Any = None) -> None:
        self.viewer = napari_viewer
        self.dataset_picker = DatasetPicker(napari_viewer, on_pick=self._on_pick)
        self.workspace = WorkspacePicker("chainfit")
        self.reference_source = ComboBox(label="reference", value="dataset", choices=["dataset", "file"],
                                         tooltip="the known conformation the fit deforms: the dataset's own "
                                                 "(simulated data) or a PDB/mmCIF model in the frame of the poses")
        self.reference_file = FileEdit(label="reference file", filter="*.pdb *.cif *.ent *.mmcif *.gz")
        self.reference_chain = LineEdit(label="chain (empty = first)", value="")
        self.rigid_ranges = LineEdit(label="rigid residues", value="",
                                     tooltip="residue ranges, e.g. 10-20,40-52, whose angles only get the constant "
                                             "term (helices, strands)")
        self.fixed_ranges = LineEdit(label="fixed residues", value="",
                                     tooltip="residue ranges whose angles stay at the reference")
        self.varying_ranges = LineEdit(label="only these vary", value="",
                                       tooltip="if given, only the angles of these residue ranges are fitted")
        self.form = ConfigForm(ChainFitConfig, exclude=FORM_EXCLUDE)
        self.run_button = PushButton(text="Fit chains")
        self.runner = StageRunner()
        self.particle = Slider(label="particle", value=0, min=0, max=0)
        self.export_path = FileEdit(label="export PDB", mode="w", filter="*.pdb")
        self.export_button = PushButton(text="Export fitted chains")
        self.info = Label(value="")
        super().__init__(widgets=[
            self.dataset_picker, self.workspace, self.reference_source, self.reference_file, self.reference_chain,
            self.rigid_ranges, self.fixed_ranges, self.varying_ranges, self.form, self.run_button, self.runner,
            self.particle, self.export_path, self.export_button, self.info,
        ])
        self.view = ChainView(napari_viewer, LAYER_PREFIX)
        self.native.layout().addWidget(self.view.canvas)
        self.dataset: Any = None
        self.reference: ChainReference | None = None
        self.result: ChainFitResult | None = None
        self.chains: np.ndarray | None = None
        self.history: list[dict[str, float]] = []
        self._history_lock = threading.Lock()
        self._rows_in_dataset: np.ndarray | None = None
        self.run_button.changed.connect(self.run)
        self.particle.changed.connect(self.show_particle)
        self.export_button.changed.connect(self.export)
        self.runner.progress_bar.changed.connect(self._refresh_plots)
        if dataset is not None:
            self.set_dataset(dataset)
        else:
            self.dataset_picker.deliver()

    # ------------------------------------------------------------------ dataset
    def _on_pick(self, picked: Any) -> None:
        if picked is not self.dataset:
            self.set_dataset(picked)

    def set_dataset(self, dataset: Any) -> None:
        """Fit ``dataset`` (a :class:`~napari_cryohet.core.particle_dataset.ParticleDataset`)."""
        self.dataset = dataset
        truth = getattr(dataset, "ground_truth", None) or {}
        self.form.anchor.choices = ["reference", "truth"] if "coords_a" in truth else ["reference"]
        self.info.value = f"{len(dataset)} particles, {dataset.box_size} px"

    # ------------------------------------------------------------------ config
    def load_reference(self) -> ChainReference:
        """The reference chosen in the form (dataset's known conformation or a file)."""
        if self.reference_source.value == "file":
            path = Path(self.reference_file.value)
            return reference_from_pdb(path, chain=self.reference_chain.value.strip() or None)
        return reference_from_dataset(self.dataset)

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
            self.info.value = "pick a dataset first"
            return
        try:
            reference = self.load_reference()
            config = self.config(reference)
            ws = self.workspace.workspace_for(self.dataset)
        except (ValueError, OSError) as err:
            self.info.value = f"error: {err}"
            return
        dataset = self.dataset
        inputs = self.workspace.input_ids()
        with self._history_lock:
            self.history = []
        self.view.plotted = -1

        def on_epoch(record: dict[str, float]) -> None:
            with self._history_lock:
                self.history.append(record)

        def job(progress, cancel):
            if ws is not None:
                if "eigenvectors" not in inputs:
                    inputs["eigenvectors"] = _default_spectral_run(ws, dataset, config.n_eigenvectors, progress,
                                                                   cancel)
                return ws.run("chainfit", config, inputs=inputs, progress=_EpochProgress(progress, on_epoch),
                              cancel=cancel, dataset=dataset)
            eigenvectors = _spectral_in_memory(dataset, config.n_eigenvectors, progress, cancel)
            return run_chainfit(dataset, config, eigenvectors=eigenvectors, reference=reference, progress=progress,
                                cancel=cancel, on_epoch=on_epoch)

        self.reference = reference
        self.runner.start(job, self.show_result)

    # ------------------------------------------------------------------ result
    def show_result(self, result: ChainFitResult) -> None:
        """Turn a result into layers (chains of the current particle, images) and plots."""
        self.result = result
        self.reference = result.reference
        self.chains = result.chains()  # (N, m, 3)
        self._rows_in_dataset = self.view.dataset_rows(result, self.dataset)
        with self._history_lock:
            self.history = list(result.history)
        self.view.plotted = -1
        self._refresh_plots()
        self.particle.max = len(self.chains) - 1
        self.show_particle()
        last = result.history[-1]
        text = f"test loss {last.get('test_loss', float('nan')):.3g}"
        if "avg_error_a" in last:
            text += f", avg error {last['avg_error_a']:.2f} Å, max {last['max_error_a']:.2f} Å"
        if result.run_id:
            text = f"{result.run_id}: {text}"
            if result.run_note:  # "resumed from epoch N of run chainfit/0003", or already done
                text += f" ({result.run_note})"
            self.workspace.refresh()
        self.info.value = text

    def show_particle(self, *_: Any) -> None:
        """Show particle ``self.particle.value``: fitted / true / reference chains, images."""
        if self.result is None or self.chains is None:
            return
        i = int(self.particle.value)
        self.view.show_chain("fit", self.chains[i])
        self.view.show_chain("reference", self.result.reference.coords_a)
        rows = self._rows_in_dataset
        if rows is None:
            return
        truth = getattr(self.dataset, "ground_truth", None) or {}
        if "coords_a" in truth and truth["coords_a"].shape[1:] == self.chains.shape[1:]:
            self.view.show_chain("truth", np.asarray(truth["coords_a"][rows[i]]))
        self.view.show_images(self.result, self.dataset, int(rows[i]))

    def _refresh_plots(self, *_: Any) -> None:
        with self._history_lock:
            history = list(self.history)
        self.view.plot_history(history)

    # ------------------------------------------------------------------ export
    def export_target(self) -> Path:
        """Where :meth:`export` writes: the form's path, or ``chainfit_fits.pdb`` in the workspace / working folder."""
        text = str(self.export_path.value or "").strip()
        path = Path(text) if text not in ("", ".") else None
        if path is None or path.is_dir():
            base = path if path is not None else (self.workspace.path or Path.cwd())
            return base / EXPORT_NAME
        return path if path.suffix.lower() == ".pdb" else path.with_suffix(".pdb")

    def export(self, *_: Any) -> Path | None:
        """Write every fitted chain as one model of a PDB file (path from the form)."""
        from napari_cryohet.io.pdb import write_chains_pdb

        if self.result is None or self.chains is None:
            self.info.value = "nothing to export: fit first"
            return None
        path = self.export_target()
        ref = self.result.reference
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_chains_pdb(path, self.chains, resnames=ref.resnames, resids=ref.resids)
        except (OSError, ValueError) as err:
            self.info.value = f"export failed: {err}"
            return None
        self.info.value = f"wrote {len(self.chains)} models to {path}"
        return path


def _default_spectral_run(ws, dataset, n_eigenvectors: int, progress, cancel) -> str:
    """The latest finished spectral run of ``ws``, else a new one with default settings (worker thread)."""
    try:
        return ws.resolve("spectral")
    except RunNotFoundError:
        pass
    progress(0.0, "no spectral run in this workspace: computing the embedding with default settings first")
    return ws.run("spectral", default_spectral_config(n_eigenvectors, dataset), progress=progress, cancel=cancel,
                  dataset=dataset).run_id


def _spectral_in_memory(dataset, n_eigenvectors: int, progress, cancel):
    """Eigenvectors of ``dataset`` from a spectral embedding with default settings (worker thread)."""
    from napari_cryohet.stages.registry import stage_spec

    progress(0.0, "computing the spectral embedding with default settings first")
    result = stage_spec("spectral").run(dataset, default_spectral_config(n_eigenvectors, dataset), inputs={},
                                        progress=progress, cancel=cancel, run_dir=None)
    return result.embedding()
