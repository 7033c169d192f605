"""Every stage widget × every input it makes sense for, from the widget's own controls (issue 12).

Inputs: the bundled ``sample_data/adk_small/particles.star`` (read with
:func:`~napari_cryohet.io.load_particles.load_dataset`, and once through napari's reader
``viewer.open(path, plugin="napari-cryohet")``) and the simulator samples through napari's
own sample-data path (``viewer.open_sample("napari-cryohet", key)``). Each widget runs with
its default settings, except the number of training epochs (1), started by clicking its
button; the test then checks the layers of the result's scene against the result's values.

One viewer per input, made once for the module (opening a sample simulates it); the widgets
of a viewer share its session, so the chain fit reuses the spectral run made before it, as
a user's would.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_cryohet.plugin._reader import DATASET_KEY
from napari_cryohet.plugin.scenes import PER_PARTICLE, ROLE_KEY
from napari_cryohet.plugin.session import IN_MEMORY, Session
from napari_cryohet.stages.particle_columns import particle_columns
from napari_cryohet.stages.protocol import dataset_indices

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("one_thread")]

STAR = Path(__file__).resolve().parents[2] / "sample_data" / "adk_small" / "particles.star"
TIMEOUT_MS = 120_000

STACK_CASES = ["star", "star_reader", "adk_chain", "cat", "pretzel", "adk_volumes"]
SPECTRAL_CASES = ["star", "star_reader", "box_arms_2d", "adk_chain", "cat", "pretzel",
                  "adk_volumes"]
CHAINFIT_CASES = ["star", "adk_chain", "box_arms_2d"]
VAE_CASES = ["star", "adk_chain", "cat", "pretzel", "adk_volumes"]


def _settle(qapp, rounds: int = 5) -> None:
    for _ in range(rounds):
        qapp.processEvents()


@pytest.fixture(scope="module")
def opened(qapp, module_viewer):
    """``opened(key) -> (viewer, dataset)``: a viewer (one per input, kept for the module)
    holding the bundled .star (``"star"``: load_dataset; ``"star_reader"``: napari's reader)
    or a napari sample (``"adk_chain"``, ...)."""
    from napari_cryohet.io.load_particles import load_dataset

    cache: dict[str, tuple] = {}

    def open_case(key: str):
        if key not in cache:
            viewer = module_viewer()
            if key == "star":
                dataset = load_dataset(STAR)
                Session.for_viewer(viewer).add_dataset(dataset, "particles")
            elif key == "star_reader":
                [layer] = viewer.open(str(STAR), plugin="napari-cryohet")
                dataset = layer.metadata[DATASET_KEY]
            else:
                layers = viewer.open_sample("napari-cryohet", key)
                [dataset] = [lyr.metadata[DATASET_KEY] for lyr in layers if DATASET_KEY in lyr.metadata]
            _settle(qapp)
            cache[key] = (viewer, dataset)
        return cache[key]

    yield open_case
    cache.clear()


def _wait_run(qtbot, runner) -> None:
    qtbot.waitUntil(lambda: not runner.busy, timeout=TIMEOUT_MS)
    assert runner.last_error is None, runner.last_error


def _colours_follow(layer, column: str, colormap: str) -> None:
    """The points are coloured by ``column`` through ``colormap`` over that column's range."""
    from napari.utils.colormaps import ensure_colormap

    values = layer.features[column].to_numpy(dtype=float)
    if np.ptp(values) == 0:
        return
    colours, cmap = np.asarray(layer.face_color), ensure_colormap(colormap)
    np.testing.assert_allclose(colours[np.argmin(values)], cmap.map(np.array([0.0]))[0], atol=1e-6)
    np.testing.assert_allclose(colours[np.argmax(values)], cmap.map(np.array([1.0]))[0], atol=1e-6)


def _dataset_rows(dataset, indices) -> np.ndarray:
    """Positions in ``dataset`` of the particles with root indices ``indices``."""
    own = dataset_indices(dataset)
    order = np.argsort(own)
    return order[np.searchsorted(own[order], indices)]


# ---------------------------------------------------------------------------- stack viewer
@pytest.mark.parametrize("key", STACK_CASES)
def test_stack_viewer(key, opened, qtbot, tmp_path):
    import starfile

    from napari_cryohet.plugin.stack_viewer import StackViewerWidget

    viewer, ds = opened(key)
    widget = StackViewerWidget(viewer)
    qtbot.addWidget(widget)
    session = widget.session
    assert widget.dataset is ds and widget.layer.metadata[DATASET_KEY] is ds  # picked up from the window
    session.scenes.show(session.particles_scene(ds))
    layer = widget.layer
    n, d = len(ds), ds.box_size
    assert layer in viewer.layers and layer.data.shape == (n, d, d) and viewer.dims.ndisplay == 2
    assert tuple(viewer.dims.axis_labels) == ("particle", "y", "x")
    assert widget.table_model.rowCount() == n

    k = n - 3
    viewer.dims.set_current_step(0, k)  # the particle slider, as a user moves it
    assert widget.index == k
    np.testing.assert_array_equal(np.asarray(layer._slice.image.raw), ds.get_images(k))
    meta = widget.current_metadata
    assert meta["defocus_u_a"] == pytest.approx(float(ds.ctf.defocus_u_a[k]), rel=1e-5)
    if ds.rotations is not None:
        from napari_cryohet.core.rotation import euler_to_matrix

        shown = euler_to_matrix(np.radians([meta["rot_deg"], meta["tilt_deg"], meta["psi_deg"]]))
        np.testing.assert_allclose(shown, ds.rotations[k], atol=1e-4)

    # filter by defocus, export the hits, read them back
    cut = float(np.median(ds.ctf.defocus_u_a))
    rows = widget.apply_filter(f"rlnDefocusU > {cut}")
    np.testing.assert_array_equal(rows, np.flatnonzero(np.asarray(ds.ctf.defocus_u_a) > cut))
    out = widget.export_star(tmp_path / "subset.star")
    assert out.is_absolute() and str(out) in widget.filter_status.text()
    written = starfile.read(out, always_dict=True)["particles"]
    assert len(written) == len(rows)
    np.testing.assert_allclose(written["rlnDefocusU"].to_numpy(float), np.asarray(ds.ctf.defocus_u_a)[rows],
                               rtol=1e-5)
    with pytest.raises(ValueError, match="file name"):
        widget.export_star("")


# ---------------------------------------------------------------------------- spectral
@pytest.mark.parametrize("key", SPECTRAL_CASES)
def test_spectral(key, opened, qtbot):
    from napari_cryohet.plugin.spectral_widget import LAYER_NAME, SpectralWidget
    from napari_cryohet.stages.spectral import SpectralConfig

    viewer, ds = opened(key)
    widget = SpectralWidget(viewer)
    assert widget.dataset is ds
    # default settings; without the simulation's atoms the paper's low-resolution volumes
    # cannot be made, and the widget starts at image principal components instead
    has_atoms = "coords_a" in (getattr(ds, "ground_truth", None) or {}) or getattr(ds, "low_dim", None) is not None
    assert widget.config() == SpectralConfig(**({} if has_atoms else {"representation": "pca_images"}))
    widget.run_button.native.click()
    _wait_run(qtbot, widget.runner)
    result = widget.result
    assert result.run_id.startswith(f"spectral/{IN_MEMORY}")
    n = len(ds)
    np.testing.assert_array_equal(result.indices, dataset_indices(ds))

    # the scene: a 3D cloud of sqrt(N)·Φ[:, (1, 2, 3)], on screen
    layer = widget.layer
    assert widget.session.scenes.current is widget.scene and viewer.dims.ndisplay == 3
    assert layer in viewer.layers and layer.name == LAYER_NAME and layer.visible
    assert layer.data.shape == (n, 3)
    np.testing.assert_allclose(layer.data, np.sqrt(n) * result.eigenvectors[:, [1, 2, 3]], rtol=1e-6, atol=1e-9)
    assert tuple(layer.axis_labels) == ("eigenvector 1", "eigenvector 2", "eigenvector 3")
    # only this scene's layers are in the viewer (no particle stack drawn as a 3D block)
    assert not [lyr.name for lyr in viewer.layers if lyr.visible and lyr.metadata.get(ROLE_KEY) == PER_PARTICLE]

    # colour by any of the dataset's columns
    columns = set(particle_columns(ds))
    assert columns and columns <= set(widget.color_by.choices)
    for column in sorted(columns)[:3]:
        widget.color_by.value = column
        _colours_follow(layer, column, "viridis")
    # another triple: same layer, new coordinates
    widget.phi_c.value = 4
    assert widget.layer is layer
    np.testing.assert_allclose(layer.data, np.sqrt(n) * result.eigenvectors[:, [1, 2, 4]], rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------------------- chain fit
@pytest.mark.parametrize("key", CHAINFIT_CASES)
def test_chainfit(key, opened, qtbot, tmp_path):
    import gemmi

    from napari_cryohet.plugin.chainfit_widget import ChainFitWidget

    viewer, ds = opened(key)
    widget = ChainFitWidget(viewer)
    assert widget.dataset is ds
    assert "no known conformation" not in widget.reference_note.value  # automatic: truth or shipped model
    widget.form.epochs.value = 1  # the only change from the defaults
    widget.run_button.native.click()
    _wait_run(qtbot, widget.runner)
    result = widget.result
    assert result.run_id.startswith(f"chainfit/{IN_MEMORY}")
    assert [h["epoch"] for h in result.history] == [0, 1]
    chains = result.chains()
    n_atoms = result.reference.coords_a.shape[0]
    planar = key == "box_arms_2d"  # the 2D box with two arms: planar chains, a 2D scene
    dim = 2 if planar else 3
    assert chains.shape == (len(ds), n_atoms, dim)

    scene = widget.scene
    assert widget.session.scenes.current is scene and viewer.dims.ndisplay == dim
    rows = None if planar else _dataset_rows(ds, result.particle_indices)
    truth = ds.coords if planar else (ds.ground_truth or {}).get("coords_a")
    for i in (0, len(chains) - 1):
        widget.particle.value = i
        fit = scene.layer("chainfit fit")
        assert fit in viewer.layers and fit.data.shape == (n_atoms, dim)
        np.testing.assert_allclose(fit.data, chains[i][:, ::-1], atol=1e-5)  # x, y(, z) → (z,) y, x
        bonds = scene.layer("chainfit fit path").data  # (start, step) per bond: the backbone
        assert bonds.shape == (n_atoms - 1, 2, dim)
        np.testing.assert_allclose(bonds[:, 0], chains[i][:-1, ::-1], atol=1e-5)
        np.testing.assert_allclose(bonds[:, 0] + bonds[:, 1], chains[i][1:, ::-1], atol=1e-4)
        if not planar:
            np.testing.assert_allclose(scene.layer("chainfit particle").data, ds.get_images(int(rows[i])))
        if truth is not None:
            expected = truth[i] if planar else truth[rows[i]]
            np.testing.assert_allclose(scene.layer("chainfit truth").data[:, ::-1], expected, atol=1e-4)
    np.testing.assert_allclose(scene.layer("chainfit reference").data[:, ::-1], result.reference.coords_a,
                               atol=1e-5)

    # export: refused without a file name, then every chain as one model, path reported in full
    assert widget.export() is None and "choose a file name" in widget.info.value
    widget.export_path.line_edit.value = str(tmp_path / "fits")
    path = widget.export()
    assert path == (tmp_path / "fits.pdb").resolve() and str(path) in widget.info.value
    st = gemmi.read_structure(str(path))
    assert len(st) == len(chains)
    ca = np.array([[a.pos.x, a.pos.y, a.pos.z] for r in st[len(chains) - 1][0] for a in r])
    np.testing.assert_allclose(ca[:, :dim], chains[-1], atol=1e-3)
    if planar:  # planar chains are written in the z = 0 plane
        np.testing.assert_allclose(ca[:, 2], 0.0, atol=1e-3)


# ---------------------------------------------------------------------------- VAE
@pytest.mark.parametrize("key", VAE_CASES)
def test_vae(key, opened, qtbot):
    from napari_cryohet.plugin.vae_widget import (
        LATENT_LAYER,
        SURFACE_LAYER,
        VOLUME_LAYER,
        VAEExplorerWidget,
    )
    from napari_cryohet.stages.vae import embed_latents

    viewer, ds = opened(key)
    widget = VAEExplorerWidget(viewer)
    assert widget.dataset_layer.dataset is ds
    widget.form.epochs.value = 1  # the only change from the defaults
    widget.train_button.native.click()
    _wait_run(qtbot, widget.runner)
    _wait_run(qtbot, widget.worker_runner)
    result = widget.result
    assert result.run_id.startswith(f"vae/{IN_MEMORY}")
    n = len(ds)
    assert result.latents.shape[0] == n and result.box_size == ds.box_size

    # the latent space: N points (PCA of the latents) in a 2D scene of their own
    layer = widget.layer
    assert widget.session.scenes.current is widget.scene and viewer.dims.ndisplay == 2
    assert layer in viewer.layers and layer.name == LATENT_LAYER and layer.data.shape == (n, 2)
    pca = embed_latents(result.latents, method="pca2")  # drawn with each axis scaled to equal spread
    np.testing.assert_allclose(layer.data, (pca - pca.mean(0)) / pca.std(0), rtol=1e-4, atol=1e-4)
    assert tuple(layer.axis_labels) == ("PCA 1 (scaled)", "PCA 2 (scaled)")
    columns = set(particle_columns(ds))
    assert columns and columns <= set(widget.color_by.choices)
    _colours_follow(layer, widget.color_by.value, "turbo")

    # one point selected: that particle is selected in the window, its volume decoded in Å
    i = n // 2
    layer.selected_data = {i}
    np.testing.assert_array_equal(widget.session.selection, [result.particle_indices[i]])
    qtbot.waitUntil(lambda: widget.volume_scene is not None and not widget.worker_runner.busy, timeout=TIMEOUT_MS)
    assert widget.worker_runner.last_error is None, widget.worker_runner.last_error
    volume = widget.volume_scene.layer(VOLUME_LAYER)
    d = result.box_size
    assert volume.data.shape == (d, d, d)
    expected = result.decode(result.latents[i:i + 1])[0]
    np.testing.assert_allclose(volume.data, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    np.testing.assert_allclose(volume.scale, [result.apix] * 3)
    np.testing.assert_allclose(volume.data_to_world([d // 2] * 3), [0.0, 0.0, 0.0], atol=1e-9)
    assert len(widget.volume_scene.layer(SURFACE_LAYER).data[1]) > 0
    widget.show_volume_button.native.click()
    assert widget.session.scenes.current is widget.volume_scene and viewer.dims.ndisplay == 3
    assert volume in viewer.layers and layer not in viewer.layers
