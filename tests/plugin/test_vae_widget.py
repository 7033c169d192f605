"""Headless tests of the VAE trainer / latent explorer widget."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from napari_cryohet.io.load_particles import load_dataset
from napari_cryohet.io.star import read_star
from napari_cryohet.plugin.vae_widget import (
    LATENT_LAYER,
    PATH_VOLUME_LAYER,
    SURFACE_LAYER,
    VOLUME_LAYER,
    VAEExplorerWidget,
)
from napari_cryohet.stages._common import Cancelled, CancelToken
from napari_cryohet.stages.simulate import adk_volumes
from napari_cryohet.stages.vae import VAEConfig
from napari_cryohet.stages.workspace import Workspace

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "adk_small" / "particles.star"


@pytest.mark.gui
def test_train_select_path_export(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    ds = adk_volumes(96, n_conformations=2, box_size=16, apix=5.0, seed=2)
    widget = VAEExplorerWidget(viewer)
    widget.set_dataset(ds)
    form = widget.form
    form.epochs.value, form.zdim.value, form.n_basis.value, form.batch_size.value = 1, 2, 4, 32
    widget.run()  # no workspace folder: in memory
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=120_000)
    assert widget.runner.last_error is None, widget.runner.last_error
    qtbot.waitUntil(lambda: not widget.worker_runner.busy, timeout=60_000)
    # in memory (no folder chosen): a run id of this window
    assert widget.result.run_id == "vae/in-memory-1" and widget.result.config == widget.config()

    # latents as points, one per particle, coloured by the ground-truth conformation
    points = viewer.layers[LATENT_LAYER]
    assert points.data.shape == (96, 2)
    assert widget.color_by.value == "truth_state"
    colours = points.face_color
    states = ds.ground_truth["state"]
    assert not np.allclose(colours[states == 0].mean(0), colours[states == 1].mean(0))

    # selecting a point decodes its volume (image) and an isosurface (surface)
    points.selected_data = {3}
    qtbot.waitUntil(lambda: widget.volume_scene is not None and not widget.worker_runner.busy, timeout=60_000)
    assert VOLUME_LAYER not in viewer.layers  # its own scene; the latents stay on screen
    widget.show_volume_button.native.click()
    assert widget.session.scenes.current is widget.volume_scene and viewer.dims.ndisplay == 3
    assert points not in viewer.layers
    vol = viewer.layers[VOLUME_LAYER]
    assert vol.data.shape == (16, 16, 16)
    expected = widget.result.decode(widget.result.latents[3:4])[0]
    # float32 FFTs in another thread may sum in another order: compare to float32 precision
    np.testing.assert_allclose(vol.data, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    verts, faces = viewer.layers[SURFACE_LAYER].data[:2]
    assert verts.shape[1] == 3 and len(faces) > 0
    # inside the box, in Å about its centre (voxel 8 at 0): the frame of fitted chains
    assert verts.min() >= -8 * ds.apix and verts.max() <= 7 * ds.apix
    np.testing.assert_allclose(vol.data_to_world([8, 8, 8]), [0, 0, 0])
    np.testing.assert_allclose(vol.scale, [ds.apix] * 3)
    n_faces = len(faces)
    widget.level.value = 0.5  # a lower level encloses more: a larger surface
    assert len(viewer.layers[SURFACE_LAYER].data[1]) > n_faces

    # a 5-step path between two particles becomes a 4D image layer
    widget.select_particle(10)
    qtbot.waitUntil(lambda: not widget.worker_runner.busy, timeout=60_000)
    widget.make_path(n_steps=5)
    qtbot.waitUntil(lambda: PATH_VOLUME_LAYER in viewer.layers and not widget.worker_runner.busy, timeout=60_000)
    series = viewer.layers[PATH_VOLUME_LAYER].data
    assert series.shape == (5, 16, 16, 16)
    ends = widget.result.decode(widget.result.latents[[3, 10]])
    np.testing.assert_allclose(series[0], ends[0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(series[-1], ends[1], rtol=1e-4, atol=1e-4)

    # particles inside a polygon drawn on the embedding → a .star subset
    emb = widget.embedding
    lo, hi = emb.min(0) - 1, np.median(emb, axis=0)
    square = np.array([[lo[0], lo[1]], [lo[0], hi[1]], [hi[0], hi[1]], [hi[0], lo[1]]])
    viewer.add_shapes([square], shape_type="polygon", name="latent selection")
    expected = np.flatnonzero((emb[:, 0] < hi[0]) & (emb[:, 1] < hi[1]))
    np.testing.assert_array_equal(widget.selection_indices(), expected)
    out = widget.export_selection(tmp_path / "subset.star")
    assert out is not None and len(read_star(out).particles) == len(expected)


@pytest.mark.gui
def test_sample_star_in_a_workspace(make_napari_viewer, qtbot, tmp_path):
    """On the bundled sample with a workspace folder: a kept run, its settings back in the form."""
    viewer = make_napari_viewer()
    ds = load_dataset(SAMPLE)
    widget = VAEExplorerWidget(viewer)
    widget.set_dataset(ds)
    settings = {"epochs": 2, "zdim": 2, "n_basis": 2, "enc_dim": 16, "dec_dim": 8, "batch_size": 50, "seed": 1}
    for name, value in settings.items():
        widget.form.inputs[name].value = value
    widget.form.radius.value = "6"
    # every setting of the config is in the form, labelled for people
    assert set(widget.form.inputs) == {f.name for f in dataclasses.fields(VAEConfig)}
    assert widget.form.zdim.label == "latent dimensions"
    # a run with these settings was cancelled in its second epoch: the widget resumes it
    token = CancelToken()

    def cancel_in_epoch_2(fraction, message):
        if message.startswith("epoch 2/") and "batch" in message:
            token.cancel()

    with pytest.raises(Cancelled):
        Workspace.create(tmp_path / "ws", SAMPLE).run("vae", widget.config(), progress=cancel_in_epoch_2,
                                                      cancel=token)
    widget.workspace.folder.value = str(tmp_path / "ws")
    widget.run()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=120_000)
    assert widget.runner.last_error is None, widget.runner.last_error
    qtbot.waitUntil(lambda: not widget.worker_runner.busy, timeout=60_000)
    assert widget.result.run_id == "vae/0001" and "run vae/0001" in widget.info.value
    assert "(resumed from epoch 1 of run vae/0001)" in widget.info.value
    assert (tmp_path / "ws" / "vae" / "0001" / "model.pt").is_file()
    assert (tmp_path / "ws" / "vae" / "0001" / "latents_epoch_002.npz").is_file()
    assert viewer.layers[LATENT_LAYER].data.shape == (200, 2)
    assert "defocus_a" in widget.color_by.choices  # the dataset's columns, aligned by particle

    # another β in the same workspace: a new run; reloading the workspace shows the newest
    widget.form.beta.value = "5"
    widget.run()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=120_000)
    qtbot.waitUntil(lambda: not widget.worker_runner.busy, timeout=60_000)
    assert widget.result.run_id == "vae/0002"
    widget.form.beta.value = "0.3"
    widget.load_result(str(tmp_path / "ws"))
    qtbot.waitUntil(lambda: not widget.worker_runner.busy, timeout=60_000)
    assert widget.result.run_id == "vae/0002" and widget.form.values()["beta"] == 5.0
    widget.load_result(str(tmp_path / "ws" / "vae" / "0001"))
    qtbot.waitUntil(lambda: not widget.worker_runner.busy, timeout=60_000)
    assert widget.form.values()["beta"] == pytest.approx(0.1)
