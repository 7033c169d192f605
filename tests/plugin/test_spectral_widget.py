"""Headless test of the spectral widget: embedding, triple change, colours, stack link,
the generated settings form and runs through a workspace with another run as input."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from napari_cryohet.core.particle_dataset import ParticleDataset
from napari_cryohet.stages.protocol import Embedding

pytestmark = pytest.mark.gui

STAR = Path(__file__).resolve().parents[2] / "sample_data" / "adk_small" / "particles.star"


def _dataset(n=150, seed=0):
    rng = np.random.default_rng(seed)
    theta = rng.uniform(0, 2 * np.pi, n)
    ds = ParticleDataset(images=rng.standard_normal((n, 16, 16)).astype(np.float32), apix=2.0)
    ds.table["cx"], ds.table["cy"] = np.cos(theta), np.sin(theta)
    ds.table["defocus"] = np.linspace(1e4, 2e4, n)
    ds.ground_truth = {"state": (theta > np.pi).astype(np.int64)}
    return ds


def _table_settings(widget, k):
    form = widget.form
    form.representation.value = "table"
    form.n_components.value = ""  # no PCA
    form.k.value = k


def test_spectral_widget_triple_and_colours(make_napari_viewer, qtbot):
    from napari_cryohet.plugin.spectral_widget import SpectralWidget

    viewer = make_napari_viewer()
    ds = _dataset()
    widget = SpectralWidget(viewer, dataset=ds)
    _table_settings(widget, 8)
    widget.form.columns.value = "cx, cy"
    widget.form.n_eigenvectors.value = 5
    widget.run_button.native.click()  # the widget's own button
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=60000)
    assert widget.runner.last_error is None
    result = widget.result
    # in memory (no folder chosen): a run id of this window, listed for the next stages
    assert result.eigenvectors.shape == (150, 5) and result.run_id == "spectral/in-memory-1"
    assert widget.session.run_choices(("spectral",))[0][0] == "spectral/in-memory-1"
    assert widget.session.result("spectral/in-memory-1") is result
    assert "spectral" not in ds.meta
    layer = widget.layer
    assert layer in viewer.layers
    scale = np.sqrt(150)
    np.testing.assert_allclose(layer.data, scale * result.eigenvectors[:, [1, 2, 3]])
    # change the triple: same layer, new data, no recomputation
    widget.phi_a.value, widget.phi_b.value, widget.phi_c.value = 0, 2, 4
    assert widget.layer is layer and widget.result is result
    np.testing.assert_allclose(layer.data, scale * result.eigenvectors[:, [0, 2, 4]])
    assert tuple(layer.axis_labels) == ("eigenvector 0", "eigenvector 2", "eigenvector 4")
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
    assert widget.session is stack.session  # one session per window links them, no dock scanning
    _table_settings(widget, 6)
    widget.form.columns.value = "cx, cy"  # the table's own columns this time
    widget.form.n_eigenvectors.value = 4
    widget.run()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=60000)
    assert widget.runner.last_error is None
    assert widget.result.config.columns == ("cx", "cy")
    widget.layer.selected_data = {5, 17, 42}
    np.testing.assert_array_equal(widget.session.selection, [5, 17, 42])
    np.testing.assert_array_equal(stack.visible_rows, [5, 17, 42])
    assert stack.index == 5


def test_form_is_generated_from_the_config_and_shows_a_results_settings(make_napari_viewer):
    """Every SpectralConfig field is in the form; a result computed elsewhere (script, CLI,
    disk) shows with the settings that made it."""
    from napari_cryohet.plugin.spectral_widget import SpectralWidget
    from napari_cryohet.stages.spectral import SpectralConfig, run_spectral

    viewer = make_napari_viewer()
    ds = _dataset(120)
    widget = SpectralWidget(viewer, dataset=ds)
    assert list(widget.form.inputs) == [f.name for f in dataclasses.fields(SpectralConfig)]
    # defaults, except the particle description: the paper's low-resolution volumes need the
    # simulation's atoms, which this dataset lacks, so the widget starts at image PCA
    assert "coords_a" not in (ds.ground_truth or {})
    assert widget.config() == SpectralConfig(representation="pca_images")
    assert widget.form.lowpass_a.label.endswith("(Å)") and "_" not in widget.form.lowpass_a.label  # words, unit
    config = SpectralConfig(representation="table", n_components=None, k=7, n_eigenvectors=6, denoise_dim=1,
                            denoise_k=20, alpha=1.0, order="parsimonious", n_candidates=12, device="cpu")
    result = run_spectral(ds, config, features=Embedding.for_dataset(np.c_[ds.table["cx"], ds.table["cy"]], ds))
    widget.show_result(result)
    assert widget.config() == config
    assert widget.phi_c.max == 5
    widget.form.alpha.value = "2"
    widget.run()
    assert "SpectralConfig.alpha: expected a value <= 1" in widget.runner.status.value


def test_sample_star_with_text_columns_colours_by_table_and_truth(make_napari_viewer, qtbot):
    """The bundled .star (pandas 3 reads rlnImageName as a string dtype) embeds its
    low-resolution densities and colours by any numeric column."""
    from napari_cryohet.io.load_particles import load_dataset
    from napari_cryohet.plugin.spectral_widget import SpectralWidget

    viewer = make_napari_viewer()
    ds = load_dataset(STAR)
    widget = SpectralWidget(viewer, dataset=ds)
    widget.form.k.value = 10
    widget.form.n_components.value = "10"
    widget.form.n_eigenvectors.value = 4
    widget.run()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=60000)
    assert widget.runner.last_error is None
    assert widget.result.eigenvectors.shape == (200, 4)
    assert widget.color_by.value == "truth_state"  # ground truth first when known
    assert "rlnImageName" not in widget.color_by.choices and "rlnDefocusU" in widget.color_by.choices
    for column in ("rlnDefocusU", "defocus_a", "truth_state_params", "rlnAngleRot"):
        widget.color_by.value = column
        colors = np.asarray(widget.layer.face_color)
        order = np.argsort(widget.layer.features[column].to_numpy())
        cmap = widget.layer.face_colormap
        np.testing.assert_allclose(colors[order[0]], cmap.map(np.array([0.0]))[0], atol=1e-6)
        np.testing.assert_allclose(colors[order[-1]], cmap.map(np.array([1.0]))[0], atol=1e-6)


def test_picks_another_runs_latents_as_input_in_a_workspace(spectral_takes_toy, make_napari_viewer, qtbot,
                                                            tmp_path):
    """Latents of a finished run (here the toy stage standing in for a VAE run) picked in the
    'features' list are embedded through Workspace.run; the new run is listed afterwards."""
    from napari_cryohet.io.load_particles import load_dataset
    from napari_cryohet.plugin._workspace_picker import NO_RUN
    from napari_cryohet.plugin.spectral_widget import SpectralWidget

    toy = spectral_takes_toy
    viewer = make_napari_viewer()
    ds = load_dataset(STAR)
    widget = SpectralWidget(viewer, dataset=ds)
    picker = widget.workspace
    picker.folder.value = str(tmp_path / "ws")
    ws = picker.workspace_for(ds)
    latents = ws.run("toy", toy.ToyConfig(epochs=2), dataset=toy.toy_dataset(len(ds)))  # same particles 0..199
    picker.refresh()
    box = picker.inputs["features"]
    assert list(box.choices) == [NO_RUN, "toy/0001"]
    box.value = "toy/0001"
    assert widget.form.representation.value == "table"  # picking an input run selects the table representation
    widget.form.n_components.value = ""
    widget.form.k.value = 8
    widget.form.n_eigenvectors.value = 4
    widget.run()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=60000)
    assert widget.runner.last_error is None, widget.runner.last_error
    result = widget.result
    assert result.run_id == "spectral/0001" and "run spectral/0001" in widget.info.value
    assert ws.manifest("spectral/0001")["inputs"] == {"features": "toy/0001"}
    assert result.provenance["representation"]["input_run"] == "toy/0001"
    np.testing.assert_array_equal(result.indices, np.arange(200))
    assert latents.values.shape == (200,)
    assert "spectral/0001" in box.choices  # the new run can feed the next embedding
