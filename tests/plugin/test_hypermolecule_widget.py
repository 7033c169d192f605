"""The hyper-molecule dock on a tiny pretzel (Lederman, Andén & Singer 2020): regions drawn and
edited, a run with τ as named sliders, the surface following the sliders, the state histogram."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryohet.stages.simulate import RECIPES


@pytest.fixture(scope="module")
def pretzel():
    return RECIPES["pretzel"](n_particles=120, box_size=32, snr=1.0, seed=0)


def test_regions_drawn_edited_and_sampled(make_napari_viewer, qtbot, pretzel):
    from napari_cryohet.plugin import _hypermolecule_scene as hm_scene
    from napari_cryohet.plugin.hypermolecule_widget import REGIONS_LAYER, HyperMoleculeWidget

    viewer = make_napari_viewer()
    widget = HyperMoleculeWidget(viewer, dataset=pretzel)
    # the pretzel's own layout: a rigid base and two arms, the second a C2 copy of the first
    assert [c["name"] for c in widget.region_layout["components"]] == ["base", "arm1", "arm2"]
    regions = widget.regions_scene().layer(REGIONS_LAYER)
    np.testing.assert_allclose(regions.data[1], [0.0, 0.0, 46.0])  # (z, y, x) Å of arm1
    np.testing.assert_allclose(regions.data[2], [0.0, 0.0, -46.0])  # its copy, turned 180° about z
    np.testing.assert_allclose(regions.size, [60.0, 52.0, 52.0])  # diameters
    # editing arm1's radius moves its copy's ball with it; dragging arm1 moves the copy too
    widget.region.value = "arm1"
    widget.radius.value = 20.0
    assert widget.apply_region()
    np.testing.assert_allclose(regions.size, [60.0, 40.0, 40.0])
    moved = np.array(regions.data)
    moved[1] = [0.0, 4.0, 40.0]
    regions.data = moved
    np.testing.assert_allclose(widget.region_layout["components"][1]["centre_a"], [40.0, 4.0, 0.0])
    np.testing.assert_allclose(regions.data[2], [0.0, -4.0, -40.0])
    widget.load_layout("pretzel")  # back to the layout the simulator drew
    # a tiny run, poses known
    for name, value in (("n_burnin_sweeps", 3), ("n_sample_sweeps", 2), ("working_size_px", 16),
                        ("estimate_poses", False), ("estimate_shifts", False), ("estimate_contrast", False)):
        widget.form.inputs[name].value = value
    assert widget.config().regions["components"][2]["copy_of"] == "arm1"
    widget.run()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=120000)
    assert widget.runner.last_error is None, widget.runner.last_error
    result = widget.result
    assert result.state_names == ["arm1", "arm2"]
    scene = widget.session.scenes.current
    mean = scene.layer(hm_scene.MEAN_LAYER)
    assert mean in viewer.layers and mean.ndim == 5
    assert tuple(mean.axis_labels[:2]) == ("τ arm1", "τ arm2")
    t = mean.data.shape[0]
    assert mean.data.shape == (t, t, 32, 32, 32)
    # the τ axes read the state itself: world coordinates 0 to 1
    assert mean.scale[0] * (t - 1) == pytest.approx(1.0)
    std = scene.layer(hm_scene.STD_LAYER)
    assert std.data.shape == mean.data.shape and not std.visible
    # the surface follows the sliders: it is the iso-surface of the map at the sliders' states
    surface = scene.layer(hm_scene.SURFACE_LAYER)
    viewer.dims.set_current_step(0, 0)
    viewer.dims.set_current_step(1, t - 1)
    expected = hm_scene.surface_at(result, mean.data[0, t - 1], mean.translate[-1])
    np.testing.assert_allclose(surface.data[0], expected[0])
    before = np.array(surface.data[0])
    viewer.dims.set_current_step(0, t - 1)
    viewer.dims.set_current_step(1, 0)
    assert surface.data[0].shape != before.shape or not np.allclose(surface.data[0], before)
    # the histogram of recovered states holds every particle once per knob
    hist_ax = widget.plot_axes[0]
    assert sum(p.get_height() for p in hist_ax.patches) == pytest.approx(2 * len(pretzel))
    assert set(result.acceptance) >= {"tau", "theta"}
