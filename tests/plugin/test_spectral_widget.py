"""Headless test of the spectral widget: embedding, triple change, colours, stack link."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryohet.core.particle_dataset import ParticleDataset

pytestmark = pytest.mark.gui


def _dataset(n=150, seed=0):
    rng = np.random.default_rng(seed)
    theta = rng.uniform(0, 2 * np.pi, n)
    ds = ParticleDataset(images=rng.standard_normal((n, 16, 16)).astype(np.float32), apix=2.0)
    ds.table["cx"], ds.table["cy"] = np.cos(theta), np.sin(theta)
    ds.table["defocus"] = np.linspace(1e4, 2e4, n)
    ds.ground_truth = {"state": (theta > np.pi).astype(np.int64)}
    return ds


def test_spectral_widget_triple_and_colours(make_napari_viewer, qtbot):
    from napari_cryohet.plugin.spectral_widget import SpectralWidget

    viewer = make_napari_viewer()
    ds = _dataset()
    widget = SpectralWidget(viewer, dataset=ds)
    widget.representation.value = "table"
    widget.n_components.value = 0
    widget.k.value = 8
    widget.n_eigenvectors.value = 5
    features = np.c_[ds.table["cx"], ds.table["cy"]]
    widget.run(features=features)
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=60000)
    assert widget.runner.last_error is None
    result = widget.result
    assert result is ds.meta["spectral"] and result.eigenvectors.shape == (150, 5)
    layer = widget.layer
    assert layer in viewer.layers
    scale = np.sqrt(150)
    np.testing.assert_allclose(layer.data, scale * result.eigenvectors[:, [1, 2, 3]])
    # change the triple: same layer, new data, no recomputation
    widget.phi_a.value, widget.phi_b.value, widget.phi_c.value = 0, 2, 4
    assert widget.layer is layer and widget.result is result
    np.testing.assert_allclose(layer.data, scale * result.eigenvectors[:, [0, 2, 4]])
    assert "φ0 φ2 φ4" in layer.name
    # colours follow the chosen column through the colormap
    widget.color_by.value = "truth_state"
    state = ds.ground_truth["state"]
    colors = np.asarray(layer.face_color)
    assert np.allclose(colors[state == 0], colors[np.flatnonzero(state == 0)[0]])
    assert not np.allclose(colors[np.flatnonzero(state == 0)[0]], colors[np.flatnonzero(state == 1)[0]])
    widget.color_by.value = "defocus"
    colors = np.asarray(layer.face_color)
    # viridis is monotone in luminance-ish order: first and last particle differ, ends match cmap ends
    cmap = layer.face_colormap
    np.testing.assert_allclose(colors[0], cmap.map(np.array([0.0]))[0], atol=1e-6)
    np.testing.assert_allclose(colors[-1], cmap.map(np.array([1.0]))[0], atol=1e-6)
    # eigenvalue plot shows the eigenvalues
    line = widget.eigen_axes.get_lines()[0]
    np.testing.assert_allclose(line.get_ydata(), result.eigenvalues)


def test_selection_shows_particles_in_stack_viewer(make_napari_viewer, qtbot):
    from napari_cryohet.plugin.spectral_widget import SpectralWidget
    from napari_cryohet.plugin.stack_viewer import StackViewerWidget

    viewer = make_napari_viewer()
    ds = _dataset(80)
    stack = StackViewerWidget(viewer)
    viewer.window.add_dock_widget(stack, name="stack")
    stack.load_dataset(ds)
    widget = SpectralWidget(viewer, dataset=ds)
    assert widget.find_stack_viewer() is stack
    widget.representation.value = "table"
    widget.n_components.value = 0
    widget.k.value = 6
    widget.n_eigenvectors.value = 4
    widget.run(features=np.c_[ds.table["cx"], ds.table["cy"]])
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=60000)
    assert widget.runner.last_error is None
    widget.layer.selected_data = {5, 17, 42}
    np.testing.assert_array_equal(stack.table_model.rows, [5, 17, 42])
    assert stack.index == 5


def test_shown_result_fills_the_form(make_napari_viewer):
    """A result computed elsewhere (script, CLI, disk) shows with the settings that made it."""
    from napari_cryohet.plugin.spectral_widget import SpectralWidget
    from napari_cryohet.stages.spectral import SpectralConfig, run_spectral

    viewer = make_napari_viewer()
    ds = _dataset(120)
    config = SpectralConfig(representation="table", n_components=None, k=7, n_eigenvectors=6, denoise_dim=1,
                            denoise_k=20, alpha=1.0)
    result = run_spectral(ds, config, features=np.c_[ds.table["cx"], ds.table["cy"]])
    widget = SpectralWidget(viewer, dataset=ds)
    widget.show_result(result)
    form = widget.config()
    for name in ("representation", "n_components", "k", "n_eigenvectors", "denoise_dim", "alpha", "order",
                 "lowpass_a", "graph", "weights"):
        assert getattr(form, name) == getattr(config, name), name
    assert widget.phi_c.max == 5
