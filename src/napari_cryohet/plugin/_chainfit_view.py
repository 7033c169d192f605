"""The scene of a chain-fit result, and its training curves.

:func:`present` draws a :class:`~napari_cryohet.stages.chainfit.ChainFitResult` in a 3D
scene of its own (Å, origin at the box centre — the frame of decoded volumes too, so a
chain sits inside its density): for the particle shown, the fitted Cα chain (orange),
its ground truth when the data are simulated (cyan) and the known reference conformation
(magenta), each as atoms (points) and a backbone trace (one line per bond); to their right
the particle image above the projection of the fit through its CTF (Esteve-Yagüe et al. 2022,
eq. 2.10), so the fit can be judged by eye. :class:`ChainPlots` draws the loss and error
curves (eq. 2.11 per pixel; mean and largest atom error against the truth, eq. 3.7 / 3.6).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_cryohet.plugin.scenes import Scene, scene_name
from napari_cryohet.stages.chainfit import ChainFitResult, predict_images
from napari_cryohet.stages.protocol import Embedding, ParticleMismatchError, dataset_indices

__all__ = ["present", "show_particle", "dataset_rows", "ChainPlots", "COLOURS", "TITLE", "LAYER_PREFIX"]

COLOURS = {"fit": "orange", "truth": "cyan", "reference": "magenta"}
TITLE = "Chain fit"
LAYER_PREFIX = "chainfit"
_LABELS = ("z (Å)", "y (Å)", "x (Å)")


def present(session: Any, result: ChainFitResult, *, show: bool = True, particle: int = 0) -> Scene:
    """Draw ``result`` (particle ``particle``) in its 3D scene."""
    steps = present_steps(session, result, show=show, particle=particle)
    for _ in steps:
        pass
    return result_scene(session, result)


def result_scene(session: Any, result: ChainFitResult) -> Scene:
    """The (possibly empty) scene of ``result``: 3D, or 2D for planar chains (the box with two arms)."""
    return session.scenes.scene(scene_name(TITLE, result.run_id or "latest"), kind="model",
                                ndisplay=2 if result.planar else 3, run_id=result.run_id)


def present_steps(session: Any, result: ChainFitResult, *, show: bool = True, particle: int = 0,
                  chains: np.ndarray | None = None):
    """:func:`present` one layer at a time (a generator): a widget yields to the event loop
    between layers, so the window stays responsive while their shaders are built."""
    scene = result_scene(session, result)
    yield from show_particle_steps(session, scene, result, particle, chains=chains)
    if show:
        yield from session.scenes.show_steps(scene)


def dataset_rows(result: ChainFitResult, dataset: Any) -> np.ndarray | None:
    """Position in ``dataset`` of each fitted particle (``None`` if the dataset lacks some)."""
    if dataset is None or getattr(dataset, "rotations", None) is None:
        return None
    order = np.arange(len(dataset))
    try:
        return Embedding(order[:, None], dataset_indices(dataset), name="dataset rows").aligned_to(
            result.particle_indices)[:, 0]
    except ParticleMismatchError:
        return None


def show_particle(session: Any, scene: Scene, result: ChainFitResult, i: int, *, chains: np.ndarray | None = None) -> None:
    """Show fitted particle ``i``: fitted / true / reference chains, its image and the fit's projection."""
    for _ in show_particle_steps(session, scene, result, i, chains=chains):
        pass


def show_particle_steps(session: Any, scene: Scene, result: ChainFitResult, i: int, *,
                        chains: np.ndarray | None = None):
    """:func:`show_particle` as a generator, one layer per step."""
    chains = result.chains() if chains is None else chains
    yield from _chain(session, scene, "fit", chains[i])
    yield from _chain(session, scene, "reference", result.reference.coords_a)
    dataset = session.dataset
    if result.planar and getattr(dataset, "coords", None) is not None and len(dataset.coords) == len(chains):
        yield from _chain(session, scene, "truth", np.asarray(dataset.coords[i]))  # the toy's own frame
    rows = dataset_rows(result, dataset)
    if rows is None:
        return
    truth = getattr(dataset, "ground_truth", None) or {}
    if "coords_a" in truth and np.asarray(truth["coords_a"]).shape[1:] == chains.shape[1:]:
        yield from _chain(session, scene, "truth", np.asarray(truth["coords_a"][rows[i]]))
    apix = float(dataset.apix)
    field = dataset.box_size * apix
    position = int(rows[i])
    # a column to the right of the chains: the particle above, the fit's projection below
    _image(session, scene, "particle", dataset.get_images(position), apix, offset_a=(-field / 2, field))
    yield
    _image(session, scene, "projection", predict_images(result, dataset, [position])[0], apix,
           offset_a=(field / 2, field))
    yield


def backbone_vectors(zyx: np.ndarray) -> np.ndarray:
    """``(m-1, 2, 3)`` napari vectors (start, step) joining consecutive atoms."""
    return np.stack([zyx[:-1], np.diff(zyx, axis=0)], axis=1)


def _chain(session: Any, scene: Scene, kind: str, coords_xyz: np.ndarray):
    """Points + backbone layers ``chainfit <kind>`` / ``chainfit <kind> path`` for one chain
    ``(m, 3)`` (x, y, z) Å; yields after each. The backbone is a vectors layer (one line per
    bond): a shapes path would build a tube mesh, seconds of GUI time for a few chains."""
    from napari.layers import Points, Vectors

    zyx = np.ascontiguousarray(np.asarray(coords_xyz)[:, ::-1], dtype=np.float64)
    name, colour = f"{LAYER_PREFIX} {kind}", COLOURS[kind]
    labels = _LABELS[-zyx.shape[1]:]  # (y, x) for planar chains

    def set_points(layer):
        layer.data = zyx

    def set_path(layer):
        layer.data = backbone_vectors(zyx)

    session.scenes.put(scene, f"{name} path", lambda: Vectors(backbone_vectors(zyx), edge_color=colour,
                                                              edge_width=0.8, vector_style="line",
                                                              axis_labels=labels), set_path)
    yield
    session.scenes.put(scene, name, lambda: Points(zyx, size=2.5, face_color=colour, border_width=0,
                                                   axis_labels=labels), set_points)
    yield


def _image(session: Any, scene: Scene, kind: str, image: np.ndarray, apix: float,
           offset_a: tuple[float, float]) -> None:
    """Image layer ``chainfit <kind>`` with its centre at ``offset_a`` (y, x) Å from the chains' origin."""
    from napari.layers import Image

    d = image.shape[-1]
    translate = (offset_a[0] - (d // 2) * apix, offset_a[1] - (d // 2) * apix)

    def update(layer):
        layer.data = image

    session.scenes.put(scene, f"{LAYER_PREFIX} {kind}", lambda: Image(
        image, scale=(apix, apix), translate=translate, colormap="gray", axis_labels=_LABELS[1:]), update)


class ChainPlots:
    """Loss and error curves of a chain fit (a matplotlib canvas for the dock).

    Attributes
    ----------
    canvas, loss_axes, error_axes
        The canvas and its two axes.
    plotted
        Number of history records drawn last (``-1``: redraw).
    """

    def __init__(self) -> None:
        self.canvas, self.loss_axes, self.error_axes = _make_canvas()
        self.plotted = 0
        self.canvas.figure.subplots_adjust(left=0.17, right=0.98, bottom=0.2, top=0.88, wspace=0.45)

    def plot_history(self, history: list[dict[str, float]]) -> None:
        """Loss (training, held-out) and atom error (mean, largest) curves; skipped if unchanged."""
        if len(history) == self.plotted:
            return
        self.plotted = len(history)
        self.loss_axes.clear()
        self.error_axes.clear()
        epochs = [h["epoch"] for h in history]
        train = [(h["epoch"], h["train_loss"]) for h in history if "train_loss" in h]
        if train:
            self.loss_axes.plot(*zip(*train, strict=True), "o-", ms=2, label="training images")
        if any("test_loss" in h for h in history):
            self.loss_axes.plot(epochs, [h.get("test_loss", np.nan) for h in history], "o-", ms=2,
                                label="held-out images")
        values = [v for line in self.loss_axes.lines for v in line.get_ydata() if np.isfinite(v) and v > 0]
        if values and max(values) > 10 * min(values):  # several decades: log scale
            self.loss_axes.set_yscale("log")
        else:
            self.loss_axes.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        self.loss_axes.set_xlabel("epoch (pass over the images)", fontsize=7)
        self.loss_axes.set_title("image mismatch per pixel", fontsize=8)
        if self.loss_axes.lines:  # none yet at the start of a run
            self.loss_axes.legend(fontsize=6)
        if any("avg_error_a" in h for h in history):
            self.error_axes.plot(epochs, [h.get("avg_error_a", np.nan) for h in history], "o-", ms=2,
                                 label="mean atom error")
            self.error_axes.plot(epochs, [h.get("max_error_a", np.nan) for h in history], "o-", ms=2,
                                 label="largest atom error")
            self.error_axes.legend(fontsize=6)
        self.error_axes.set_xlabel("epoch (pass over the images)", fontsize=7)
        self.error_axes.set_title("error against the truth (Å)", fontsize=8)
        for ax in (self.loss_axes, self.error_axes):
            ax.tick_params(labelsize=6)
        self.canvas.draw_idle()  # fixed margins: tight_layout at every redraw costs ~100 ms


def _make_canvas():
    from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.4, 2.2), dpi=90)
    canvas = FigureCanvasQTAgg(fig)
    canvas.setMinimumHeight(160)
    loss, error = fig.subplots(1, 2)
    return canvas, loss, error
