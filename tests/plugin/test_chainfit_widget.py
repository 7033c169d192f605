"""Headless test of the chain-fit dock widget (issue 5, item 4)."""

from __future__ import annotations

from pathlib import Path

import gemmi
import numpy as np
import pytest

from napari_cryohet.io.json_files import write_json
from napari_cryohet.io.load_particles import load_dataset
from napari_cryohet.plugin._reader import DATASET_KEY
from napari_cryohet.plugin.chainfit_widget import ChainFitWidget
from napari_cryohet.stages.simulate import adk_chain
from napari_cryohet.stages.workspace import Workspace

pytestmark = pytest.mark.usefixtures("one_thread")


def test_widget_trains_and_browses_chains(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    ds = adk_chain(60, box_size=32, apix=4.0, snr=1.0, seed=2)
    viewer.add_image(np.asarray(ds.images), name="adk", metadata={DATASET_KEY: ds})
    widget = ChainFitWidget(viewer)
    assert widget.dataset is ds  # picked from the layer
    widget.form.epochs.value = 2
    widget.form.batch_size.value = 20
    widget.form.n_eigenvectors.value = 3
    widget.rigid_ranges.value = "10-20"
    widget.run()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=120_000)
    assert widget.runner.last_error is None, widget.runner.last_error
    result = widget.result
    assert [h["epoch"] for h in result.history] == [0, 1, 2]
    # residues 10-20 kept rigid: angle j sits at atom j + 1, i.e. residue j + 2
    assert np.all(result.coeff_theta[8:19, 1:] == 0) and np.any(result.coeff_theta[19:, 1:] != 0)

    for kind in ("fit", "truth", "reference"):
        points = viewer.layers[f"chainfit {kind}"]
        path = viewer.layers[f"chainfit {kind} path"]
        assert points.data.shape == (214, 3)
        assert path.data.shape == (213, 2, 3)  # one (start, step) vector per bond
        np.testing.assert_allclose(path.data[:, 0] + path.data[:, 1], points.data[1:], atol=1e-4)
    np.testing.assert_allclose(viewer.layers["chainfit truth"].data[:, ::-1], ds.ground_truth["coords_a"][0],
                               atol=1e-4)
    particle = viewer.layers["chainfit particle"].data
    projection = viewer.layers["chainfit projection"].data
    assert particle.shape == projection.shape == (32, 32)

    before_fit = viewer.layers["chainfit fit"].data.copy()
    before_truth = viewer.layers["chainfit truth"].data.copy()
    widget.particle.value = 7
    after_fit = viewer.layers["chainfit fit"].data
    assert np.abs(after_fit - before_fit).max() > 0.1  # the fit moves with the slider
    assert not np.allclose(viewer.layers["chainfit truth"].data, before_truth) or \
        ds.ground_truth["state"][7] == ds.ground_truth["state"][0]
    np.testing.assert_allclose(after_fit[:, ::-1], widget.chains[7])
    np.testing.assert_allclose(viewer.layers["chainfit particle"].data, ds.get_images(7))
    # the reference stays put
    np.testing.assert_allclose(viewer.layers["chainfit reference"].data[:, ::-1],
                               ds.ground_truth["global/reference_coords_a"], atol=1e-4)
    assert widget.view.plotted == 3 and len(widget.view.loss_axes.lines) == 2

    widget.export_path.value = str(tmp_path / "fits.pdb")
    path = widget.export()
    st = gemmi.read_structure(str(path))
    assert len(st) == 60
    ca = np.array([[a.pos.x, a.pos.y, a.pos.z] for r in st[7]["A"] for a in r])
    np.testing.assert_allclose(ca, widget.chains[7], atol=1e-3)


SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "adk_small" / "particles.star"


def test_widget_runs_in_a_workspace_on_the_bundled_sample(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    """The form comes from ChainFitConfig; with a workspace folder the fit is a workspace run
    (a default spectral run made first); export refuses an empty path and reports the full one."""
    viewer = make_napari_viewer()
    ds = load_dataset(SAMPLE)
    viewer.add_image(ds.get_images(np.arange(len(ds))), name="adk sample", metadata={DATASET_KEY: ds})
    widget = ChainFitWidget(viewer)
    assert widget.dataset is ds
    for name in ("lr_schedule", "device", "test_fraction", "fit_box_size", "checkpoint_every"):
        assert name in widget.form.inputs  # settings the old hand-made form lacked
    assert "rigid_angles" not in widget.form.inputs  # set from the residue ranges
    assert widget.form.learning_rate.tooltip and "Å per step" in widget.form.learning_rate.label
    ws_dir = tmp_path / "ws"
    widget.workspace.folder.value = str(ws_dir)
    widget.form.epochs.value = 1
    widget.form.n_eigenvectors.value = 3
    widget.form.fit_box_size.value = "16"
    widget.rigid_ranges.value = "10-20"
    widget.run()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=120_000)
    assert widget.runner.last_error is None, widget.runner.last_error
    result = widget.result
    assert result.run_id == "chainfit/0001"
    ws = Workspace.open(ws_dir)
    assert ws.manifest("chainfit/0001")["inputs"] == {"eigenvectors": "spectral/0001"}
    assert ws.manifest("chainfit/0001")["config"]["rigid_angles"][0] == 8
    assert widget.workspace.inputs["eigenvectors"].value == "spectral/0001"  # refreshed after the run
    assert "chainfit/0001" in widget.info.value
    assert [h["epoch"] for h in widget.history] == [0, 1]
    assert viewer.layers["chainfit particle"].data.shape == (64, 64)
    np.testing.assert_allclose(viewer.layers["chainfit truth"].data[:, ::-1], ds.ground_truth["coords_a"][0],
                               atol=1e-4)

    # an interrupted run of the same settings is resumed, and the widget says so
    manifest = ws.manifest("chainfit/0001")
    write_json(ws_dir / "chainfit" / "0001" / "manifest.json", {**manifest, "status": "cancelled"})
    widget.run()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=120_000)
    assert widget.runner.last_error is None, widget.runner.last_error
    assert "resumed from epoch 1 of run chainfit/0001" in widget.info.value
    widget.run()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=120_000)
    assert "already done with these settings" in widget.info.value

    # export refuses an empty path with a message (no default path); a given one is reported in full
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    widget.export_path.line_edit.value = ""
    assert widget.export() is None
    assert "choose a file name" in widget.info.value
    assert not list(elsewhere.iterdir()) and not (ws_dir / "chainfit_fits.pdb").exists()
    widget.export_path.line_edit.value = "fits"  # relative, no suffix: <cwd>/fits.pdb
    path = widget.export()
    assert path == (elsewhere / "fits.pdb").resolve() and path.is_absolute()
    assert str(path) in widget.info.value
    st = gemmi.read_structure(str(path))
    assert len(st) == 200
    ca = np.array([[a.pos.x, a.pos.y, a.pos.z] for r in st[3]["A"] for a in r])
    np.testing.assert_allclose(ca, widget.chains[3], atol=1e-3)
