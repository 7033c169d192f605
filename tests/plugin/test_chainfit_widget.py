"""Headless test of the chain-fit dock widget (issue 5, item 4)."""

from __future__ import annotations

import gemmi
import numpy as np
import pytest
import torch

from napari_cryohet.plugin._reader import DATASET_KEY
from napari_cryohet.plugin.chainfit_widget import ChainFitWidget
from napari_cryohet.stages.simulate import adk_chain


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
        assert path.data[0].shape == (214, 3)
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
    assert widget.view.plotted == 3 and len(widget.loss_axes.lines) == 2

    widget.export_path.value = str(tmp_path / "fits.pdb")
    path = widget.export()
    st = gemmi.read_structure(str(path))
    assert len(st) == 60
    ca = np.array([[a.pos.x, a.pos.y, a.pos.z] for r in st[7]["A"] for a in r])
    np.testing.assert_allclose(ca, widget.chains[7], atol=1e-3)
