"""Chain-fit dock widget: train, watch the curves, browse fitted chains particle by particle.

Thin (STYLE.md): the form builds a :class:`~napari_cryohet.stages.chainfit.ChainFitConfig`,
:class:`~napari_cryohet.plugin._runner.StageRunner` runs
:func:`~napari_cryohet.stages.chainfit.run_chainfit` off the GUI thread, and the result
becomes layers:

* ``"chainfit fit"`` (points) + ``"chainfit fit path"`` (a shapes path) — the fitted Cα
  chain of the current particle, model frame, (z, y, x) in Å;
* ``"chainfit truth"`` / ``"chainfit truth path"`` — its ground-truth chain (synthetic data);
* ``"chainfit reference"`` / ``"chainfit reference path"`` — the known conformation;
* ``"chainfit particle"`` and ``"chainfit projection"`` — the particle image and the
  CTF-filtered projection of the fit (eq. 2.10), side by side next to the chains.

A particle slider swaps the layer data; loss and error curves (eq. 3.6 / 3.7) update live
during training; "Export PDB" writes every fitted chain as one model of a PDB file.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    PushButton,
    Slider,
    SpinBox,
)

from napari_cryohet.plugin._runner import StageRunner
from napari_cryohet.plugin.dataset_picker import DatasetPicker
from napari_cryohet.stages.chainfit import (
    ChainFitConfig,
    ChainFitResult,
    ChainReference,
    angles_for_residues,
    parse_residue_ranges,
    predict_images,
    reference_from_dataset,
    reference_from_pdb,
    run_chainfit,
)

__all__ = ["ChainFitWidget", "LAYER_PREFIX"]

LAYER_PREFIX = "chainfit"
_COLOURS = {"fit": "orange", "truth": "cyan", "reference": "magenta"}


class ChainFitWidget(Container):
    """Dock widget of the chain-fit stage (seed 000_8d73a95ce4c6e7ab.txt).

    Attributes
    ----------
    dataset_picker
        Image layers carrying a dataset (``layer.metadata["cryohet_dataset"]``).
    reference_source, reference_file, reference_chain
        ``"dataset"`` (the dataset's known conformation) or ``"file"`` (PDB/mmCIF).
    eigen_source, eigen_file
        ``"spectral result"`` (``dataset.meta["spectral"]``; computed with default
        settings when absent) or ``"file"`` (``spectral.npz`` / ``.npy``).
    n_eigenvectors, rigid_ranges, fixed_ranges, varying_ranges, fit_bond_angles
        Model: ``K`` and residue-range masks (``"10-20,40-52"``).
    optimizer, learning_rate, epochs, batch_size, anchor
        Optimiser settings.
    run_button, runner
        Start button and the :class:`StageRunner`.
    particle
        Slider over particles; moves every chain and image layer.
    export_path, export_button
        Multi-model PDB export of the fitted chains.
    dataset, reference, result, history, chains
        State: the dataset, the reference, the latest result, live metrics, fitted chains.
    """

    def __init__(self, napari_viewer, dataset: Any = None) -> None:
        self.viewer = napari_viewer
        self.dataset_picker = DatasetPicker(napari_viewer, on_pick=self._on_pick)
        self.reference_source = ComboBox(label="reference", value="dataset", choices=["dataset", "file"])
        self.reference_file = FileEdit(label="reference file", filter="*.pdb *.cif *.ent *.mmcif *.gz")
        self.reference_chain = LineEdit(label="chain (empty = first)", value="")
        self.eigen_source = ComboBox(label="eigenvectors", value="spectral result",
                                     choices=["spectral result", "file"])
        self.eigen_file = FileEdit(label="eigenvector file", filter="*.npz *.npy")
        self.n_eigenvectors = SpinBox(label="K eigenvectors", value=10, min=1, max=200)
        self.rigid_ranges = LineEdit(label="rigid residues", value="")
        self.fixed_ranges = LineEdit(label="fixed residues", value="")
        self.varying_ranges = LineEdit(label="only these vary", value="")
        self.fit_bond_angles = ComboBox(label="angles fitted", value="torsion + bond",
                                        choices=["torsion + bond", "torsion only"])
        self.optimizer = ComboBox(label="optimiser", value="adam", choices=["adam", "sgd"])
        self.learning_rate = FloatSpinBox(label="learning rate", value=0.002, min=1e-6, max=100.0, step=0.001)
        self.epochs = SpinBox(label="epochs", value=30, min=1, max=100000)
        self.batch_size = SpinBox(label="batch size", value=100, min=1, max=100000)
        self.anchor = ComboBox(label="anchor", value="reference", choices=["reference", "truth"])
        self.run_button = PushButton(text="Fit chains")
        self.runner = StageRunner()
        self.particle = Slider(label="particle", value=0, min=0, max=0)
        self.export_path = FileEdit(label="export PDB", mode="w", filter="*.pdb")
        self.export_button = PushButton(text="Export fitted chains")
        self.info = Label(value="")
        super().__init__(widgets=[
            self.dataset_picker, self.reference_source, self.reference_file, self.reference_chain,
            self.eigen_source, self.eigen_file, self.n_eigenvectors, self.rigid_ranges, self.fixed_ranges,
            self.varying_ranges, self.fit_bond_angles, self.optimizer, self.learning_rate, self.epochs,
            self.batch_size, self.anchor, self.run_button, self.runner, self.particle, self.export_path,
            self.export_button, self.info,
        ])
        self.canvas, self.loss_axes, self.error_axes = _make_canvas()
        self.native.layout().addWidget(self.canvas)
        self.dataset: Any = None
        self.reference: ChainReference | None = None
        self.result: ChainFitResult | None = None
        self.chains: np.ndarray | None = None
        self.history: list[dict[str, float]] = []
        self._history_lock = threading.Lock()
        self._plotted = 0
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
        self.anchor.choices = ["reference", "truth"] if "coords_a" in truth else ["reference"]
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
        def angles(text: str) -> tuple[int, ...]:
            return tuple(int(j) for j in angles_for_residues(reference.resids, parse_residue_ranges(text)))

        varying = self.varying_ranges.value.strip()
        return ChainFitConfig(
            n_eigenvectors=int(self.n_eigenvectors.value), epochs=int(self.epochs.value),
            batch_size=int(self.batch_size.value), optimizer=self.optimizer.value,
            learning_rate=float(self.learning_rate.value), anchor=self.anchor.value,
            fit_bond_angles=self.fit_bond_angles.value == "torsion + bond",
            rigid_angles=angles(self.rigid_ranges.value), fixed_angles=angles(self.fixed_ranges.value),
            varying_angles=angles(varying) if varying else None,
        )

    def _eigenvectors_job(self, dataset, k: int):
        """A callable returning the eigenvectors (run in the worker thread)."""
        if self.eigen_source.value == "file":
            path = Path(self.eigen_file.value)

            def from_file(progress, cancel):
                if path.suffix == ".npy":
                    return np.load(path, allow_pickle=False)
                from napari_cryohet.stages.spectral import SpectralResult

                return SpectralResult.load(path).eigenvectors

            return from_file

        def from_spectral(progress, cancel):
            spectral = (getattr(dataset, "meta", None) or {}).get("spectral")
            if spectral is not None and spectral.eigenvectors.shape[1] >= k:
                return spectral.eigenvectors
            from napari_cryohet.stages.spectral import SpectralConfig, run_spectral

            progress(0.0, "no spectral result: computing the embedding first")
            return run_spectral(dataset, SpectralConfig(n_eigenvectors=max(k, 2)), cancel=cancel).eigenvectors

        return from_spectral

    # ------------------------------------------------------------------ run
    def run(self, *_: Any) -> None:
        """Start the fit (the result arrives in :meth:`show_result`)."""
        if self.dataset is None:
            self.info.value = "pick a dataset first"
            return
        try:
            reference = self.load_reference()
            config = self.config(reference)
        except (ValueError, OSError) as err:
            self.info.value = f"error: {err}"
            return
        dataset = self.dataset
        eigen = self._eigenvectors_job(dataset, config.n_eigenvectors)
        with self._history_lock:
            self.history = []
        self._plotted = -1

        def on_epoch(record: dict[str, float]) -> None:
            with self._history_lock:
                self.history.append(record)

        def job(progress, cancel):
            phi = eigen(progress, cancel)
            return run_chainfit(dataset, config, eigenvectors=phi, reference=reference, progress=progress,
                                cancel=cancel, on_epoch=on_epoch)

        self.reference = reference
        self.runner.start(job, self.show_result)

    # ------------------------------------------------------------------ result
    def show_result(self, result: ChainFitResult) -> None:
        """Turn a result into layers (chains of the current particle, images) and plots."""
        self.result = result
        self.reference = result.reference
        self.chains = result.chains()  # (N, m, 3)
        with self._history_lock:
            self.history = list(result.history)
        self._plotted = -1
        self._refresh_plots()
        self.particle.max = len(self.chains) - 1
        self.show_particle()
        last = result.history[-1]
        text = f"test loss {last.get('test_loss', float('nan')):.3g}"
        if "avg_error_a" in last:
            text += f", avg error {last['avg_error_a']:.2f} Å, max {last['max_error_a']:.2f} Å"
        self.info.value = text

    def _set_chain(self, kind: str, coords_xyz: np.ndarray) -> None:
        """Points + path layers ``chainfit <kind>`` for one chain ``(m, 3)`` (x, y, z) Å."""
        zyx = np.ascontiguousarray(coords_xyz[:, ::-1], dtype=np.float64)
        name = f"{LAYER_PREFIX} {kind}"
        colour = _COLOURS[kind]
        if name in self.viewer.layers:
            self.viewer.layers[name].data = zyx
            self.viewer.layers[f"{name} path"].data = [zyx]
            return
        self.viewer.add_points(zyx, name=name, size=2.0, face_color=colour, border_width=0)
        self.viewer.add_shapes([zyx], shape_type="path", name=f"{name} path", edge_color=colour, edge_width=0.6)

    def _set_image(self, kind: str, image: np.ndarray, offset_a: float) -> None:
        name = f"{LAYER_PREFIX} {kind}"
        apix = float(self.dataset.apix)
        d = image.shape[-1]
        translate = (-(d // 2) * apix, offset_a - (d // 2) * apix)
        if name in self.viewer.layers:
            self.viewer.layers[name].data = image
            return
        self.viewer.add_image(image, name=name, scale=(apix, apix), translate=translate, colormap="gray")

    def show_particle(self, *_: Any) -> None:
        """Show particle ``self.particle.value``: fitted / true / reference chains, images."""
        if self.result is None or self.chains is None:
            return
        i = int(self.particle.value)
        self._set_chain("fit", self.chains[i])
        truth = getattr(self.dataset, "ground_truth", None) or {}
        if "coords_a" in truth and truth["coords_a"].shape[1:] == self.chains.shape[1:]:
            self._set_chain("truth", np.asarray(truth["coords_a"][i]))
        self._set_chain("reference", self.result.reference.coords_a)
        if self.dataset is not None and len(self.dataset) == len(self.chains):
            field = self.dataset.box_size * float(self.dataset.apix)
            self._set_image("particle", self.dataset.get_images(i), offset_a=field)
            self._set_image("projection", predict_images(self.result, self.dataset, [i])[0], offset_a=2 * field)

    # ------------------------------------------------------------------ plots
    def _refresh_plots(self, *_: Any) -> None:
        with self._history_lock:
            history = list(self.history)
        if len(history) == self._plotted:
            return
        self._plotted = len(history)
        self.loss_axes.clear()
        self.error_axes.clear()
        epochs = [h["epoch"] for h in history]
        train = [(h["epoch"], h["train_loss"]) for h in history if "train_loss" in h]
        if train:
            self.loss_axes.plot(*zip(*train, strict=True), "o-", ms=2, label="train")
        if any("test_loss" in h for h in history):
            self.loss_axes.plot(epochs, [h.get("test_loss", np.nan) for h in history], "o-", ms=2, label="test")
        self.loss_axes.set_yscale("log")
        self.loss_axes.set_xlabel("epoch")
        self.loss_axes.set_title("loss (eq. 2.11 / pixel)", fontsize=8)
        self.loss_axes.legend(fontsize=7)
        if any("avg_error_a" in h for h in history):
            self.error_axes.plot(epochs, [h.get("avg_error_a", np.nan) for h in history], "o-", ms=2,
                                 label="avg (3.7)")
            self.error_axes.plot(epochs, [h.get("max_error_a", np.nan) for h in history], "o-", ms=2,
                                 label="max (3.6)")
            self.error_axes.legend(fontsize=7)
        self.error_axes.set_xlabel("epoch")
        self.error_axes.set_title("error vs truth (Å)", fontsize=8)
        self.canvas.figure.tight_layout()
        self.canvas.draw_idle()

    # ------------------------------------------------------------------ export
    def export(self, *_: Any) -> Path | None:
        """Write every fitted chain as one model of a PDB file (path from the form)."""
        from napari_cryohet.io.pdb import write_chains_pdb

        if self.result is None or self.chains is None:
            self.info.value = "nothing to export: fit first"
            return None
        path = Path(self.export_path.value)
        if path.suffix.lower() != ".pdb":
            path = path.with_suffix(".pdb")
        ref = self.result.reference
        write_chains_pdb(path, self.chains, resnames=ref.resnames, resids=ref.resids)
        self.info.value = f"wrote {len(self.chains)} models to {path}"
        return path


def _make_canvas():
    from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.4, 2.2), dpi=90)
    canvas = FigureCanvasQTAgg(fig)
    canvas.setMinimumHeight(160)
    loss, error = fig.subplots(1, 2)
    return canvas, loss, error
