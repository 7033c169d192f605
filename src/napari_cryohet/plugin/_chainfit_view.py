"""What the chain-fit widget shows: chain layers, particle / projection images, metric curves.

:class:`ChainView` owns the layers ``"chainfit <kind>"`` (points) and ``"chainfit <kind>
path"`` (a shapes path) for ``kind`` in fit / truth / reference, the image layers
``"chainfit particle"`` and ``"chainfit projection"`` (eq. 2.10), and the loss and error
curves (eq. 2.11 per pixel; eq. 3.7 / 3.6 against ground truth).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_cryohet.stages.chainfit import ChainFitResult, predict_images
from napari_cryohet.stages.protocol import Embedding, ParticleMismatchError, dataset_indices

__all__ = ["ChainView", "COLOURS"]

COLOURS = {"fit": "orange", "truth": "cyan", "reference": "magenta"}


class ChainView:
    """Layers and plots of one chain-fit widget.

    Attributes
    ----------
    canvas, loss_axes, error_axes
        The matplotlib canvas (added to the dock) and its two axes.
    plotted
        Number of history records drawn last (``-1``: redraw).
    """

    def __init__(self, viewer: Any, prefix: str) -> None:
        self.viewer, self.prefix = viewer, prefix
        self.canvas, self.loss_axes, self.error_axes = _make_canvas()
        self.plotted = 0

    # ------------------------------------------------------------------ layers
    def show_chain(self, kind: str, coords_xyz: np.ndarray) -> None:
        """Points + path layers ``<prefix> <kind>`` for one chain ``(m, 3)`` (x, y, z) Å."""
        zyx = np.ascontiguousarray(coords_xyz[:, ::-1], dtype=np.float64)
        name = f"{self.prefix} {kind}"
        colour = COLOURS[kind]
        if name in self.viewer.layers:
            self.viewer.layers[name].data = zyx
            self.viewer.layers[f"{name} path"].data = [zyx]
            return
        self.viewer.add_points(zyx, name=name, size=2.0, face_color=colour, border_width=0)
        self.viewer.add_shapes([zyx], shape_type="path", name=f"{name} path", edge_color=colour, edge_width=0.6)

    def _set_image(self, kind: str, image: np.ndarray, apix: float, offset_a: float) -> None:
        name = f"{self.prefix} {kind}"
        d = image.shape[-1]
        translate = (-(d // 2) * apix, offset_a - (d // 2) * apix)
        if name in self.viewer.layers:
            self.viewer.layers[name].data = image
            return
        self.viewer.add_image(image, name=name, scale=(apix, apix), translate=translate, colormap="gray")

    def show_images(self, result: ChainFitResult, dataset: Any, position: int) -> None:
        """The image of the particle at ``position`` in ``dataset`` beside the projection of its fit."""
        apix = float(dataset.apix)
        field = dataset.box_size * apix
        self._set_image("particle", dataset.get_images(position), apix, offset_a=field)
        self._set_image("projection", predict_images(result, dataset, [position])[0], apix, offset_a=2 * field)

    @staticmethod
    def dataset_rows(result: ChainFitResult, dataset: Any) -> np.ndarray | None:
        """Position in ``dataset`` of each fitted particle (``None`` if the dataset lacks some)."""
        if dataset is None or getattr(dataset, "rotations", None) is None:
            return None
        order = np.arange(len(dataset))
        indices = dataset_indices(dataset)
        try:
            return Embedding(order[:, None], indices, name="dataset rows").aligned_to(result.particle_indices)[:, 0]
        except ParticleMismatchError:
            return None

    # ------------------------------------------------------------------ plots
    def plot_history(self, history: list[dict[str, float]]) -> None:
        """Loss (train, test) and error (avg, max) curves of ``history``; skipped if unchanged."""
        if len(history) == self.plotted:
            return
        self.plotted = len(history)
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
        if self.loss_axes.lines:  # none yet at the start of a run
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


def _make_canvas():
    from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.4, 2.2), dpi=90)
    canvas = FigureCanvasQTAgg(fig)
    canvas.setMinimumHeight(160)
    loss, error = fig.subplots(1, 2)
    return canvas, loss, error
