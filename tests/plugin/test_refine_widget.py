"""Headless test of the clustering/refinement widget (issue 13, item 7): two iterations (with
pose refinement) on a tiny two-class sample run from the widget's button; the class-map
layers equal the result's maps, the table equals the run's history (method and refinement
limit per iteration), the iteration slider puts that iteration's class maps into the same
layers, its FSC curves into the FSC plot and recolours the particles by its clusters, the
resolution plot follows the history, "Select this cluster" makes the stack viewer show
exactly that cluster's particles, and a result saved before iterations were kept still
draws (its final maps at every step)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def _tiny():
    from napari_cryohet.stages.simulate import assembly_classes

    # complete AdK vs its CORE only: two classes that image PCA separates
    return assembly_classes(80, classes=(("CORE", "NMP", "LID"), ("CORE",)), box_size=32, apix=3.0, sigma_a=3.0,
                            snr=1.0)


def test_refine_widget_two_iterations(make_napari_viewer, qtbot):
    from napari_cryohet.plugin import _refine_scene
    from napari_cryohet.plugin.refine_widget import TABLE_COLUMNS, RefineWidget
    from napari_cryohet.plugin.session import Session
    from napari_cryohet.plugin.stack_viewer import StackViewerWidget
    from napari_cryohet.stages.refine.result import RefineResult
    from napari_cryohet.stages.spectral import SpectralConfig

    viewer = make_napari_viewer()
    ds = _tiny()
    session = Session.for_viewer(viewer)
    session.add_dataset(ds, "tiny")
    stack = StackViewerWidget(viewer)
    spectral = session.run("spectral", SpectralConfig(representation="pca_images", n_components=10, k=10,
                                                      n_eigenvectors=4))
    session.add_result(spectral)

    widget = RefineWidget(viewer)
    assert widget.dataset is ds
    assert widget.workspace.inputs["embedding"].value == spectral.run_id  # the newest embedding run
    form = widget.form
    form.n_iterations.value = 2
    form.refine_poses.value = True  # the maps change between iterations
    form.grid_steps.value = 3
    form.refine_steps.value = 2
    form.n_clusters.value = 2
    form.min_cluster_size.value = 10
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=60000)
    assert widget.runner.last_error is None, widget.runner.last_error
    result = widget.result
    assert result.labels.shape == (2, 80) and len(result.cluster_ids) == 2
    assert len(result.iterations) == 2
    assert widget.iteration.max == 3 and widget.iteration.value == 3  # iterations 1, 2, then "final"

    # class maps scene: one map + one surface per cluster, side by side, shown in 3D
    maps = session.scenes.scenes[f"Clustering · {result.run_id}"]
    assert session.scenes.current is maps and viewer.dims.ndisplay == 3
    offsets = []
    for j, k in enumerate(result.cluster_ids):
        image = maps.layer(f"cluster {k} map")
        assert image is not None and image in viewer.layers
        assert image.data.shape == (32, 32, 32)
        np.testing.assert_array_equal(image.data, result.maps[j])
        np.testing.assert_allclose(image.scale, (3.0, 3.0, 3.0))
        offsets.append(image.translate[2])
        verts = maps.layer(f"cluster {k} surface").data[0]
        assert len(verts) > 0
        lo, hi = image.translate[2], image.translate[2] + 31 * 3.0  # the surface lies inside its own map's box
        assert lo - 1e-3 <= verts[:, 2].min() and verts[:, 2].max() <= hi + 1e-3
    assert np.diff(offsets).min() >= (32 + 4) * 3.0 - 1e-6  # maps do not overlap

    # table: iterations × clusters with the run's particle counts and resolutions
    assert [widget.table.horizontalHeaderItem(c).text().replace("\n", " ")
            for c in range(len(TABLE_COLUMNS))] == list(TABLE_COLUMNS)
    assert widget.table.rowCount() == sum(len(rec["clusters"]) for rec in result.history) == 4
    rows = widget.table_rows()
    schedule = result.config.resolution_schedule_a
    for r, (it, k, n, res, limit, stab, method) in enumerate(rows):
        record = result.history[it - 1]
        entry = record["clusters"][str(k)]
        assert n == entry["particles"] == int((result.labels[it - 1] == k).sum())
        assert res == pytest.approx(entry["resolution_a"])
        assert widget.table.item(r, 3).text() == f"{entry['resolution_a']:.2f}"
        assert limit == schedule[it - 1] == record["resolution_limit_a"]  # 8 Å, then 6 Å
        assert widget.table.item(r, 4).text() == f"{schedule[it - 1]:g}"
        assert (stab is None) == (it == 1)
        assert widget.table.item(r, 5).text() == ("—" if it == 1 else f"{record['label_stability']:.3f}")
        assert method == widget.table.item(r, 6).text() == "K-Means, 2 clusters"
        tip = widget.table.item(r, 6).toolTip()
        assert "n_clusters = 2" in tip and ("started from the previous iteration's clusters" in tip) == (it > 1)
    print("table:", rows)
    # FSC plot: one curve per final map, the corrected FSC
    lines = widget.fsc_axes.get_lines()
    for j in range(len(result.cluster_ids)):
        np.testing.assert_allclose(lines[j].get_ydata(), result.fsc[j])
    assert "final" in widget.fsc_axes.get_title()
    # resolution plot: one line per cluster, the history's resolutions, then the final map's
    res_lines = {line.get_label(): line for line in widget.resolution_axes.get_lines()}
    for k in result.cluster_ids:
        line = res_lines[f"cluster {k}"]
        expected = [result.history[i]["clusters"][str(k)]["resolution_a"] for i in range(2)]
        np.testing.assert_array_equal(line.get_xdata(), [1, 2, 3])
        np.testing.assert_allclose(line.get_ydata()[:2], expected)
        assert line.get_ydata()[2] == pytest.approx(_refine_scene.class_maps(result).resolution_a[
            list(result.cluster_ids).index(k)])
        assert line.get_color() == _refine_scene.cluster_colour(int(k))

    # the slider puts each iteration's class maps into the same layers and its FSC curves into the plot
    n_layers = len(maps.layers)
    for i in (0, 1):
        widget.iteration.value = i + 1
        assert session.scenes.current is maps  # the maps stay on screen
        kept = result.iterations[i]
        assert f"iteration {i + 1}" in widget.fsc_axes.get_title()
        lines = widget.fsc_axes.get_lines()
        for j, k in enumerate(kept["cluster_ids"]):
            np.testing.assert_allclose(lines[j].get_ydata(), kept["fsc"][j])
            np.testing.assert_array_equal(maps.layer(f"cluster {k} map").data, kept["maps"][j])
        assert len(maps.layers) == n_layers  # updated in place
        assert widget.resolution_axes.get_lines()[-1].get_xdata()[0] == i + 1  # the slider's mark
    # the maps did change: refined poses give other maps than the first iteration's
    assert not np.allclose(result.iterations[0]["maps"], result.maps)
    widget.iteration.value = 3
    for j, k in enumerate(result.cluster_ids):
        np.testing.assert_array_equal(maps.layer(f"cluster {k} map").data, result.maps[j])
        np.testing.assert_allclose(widget.fsc_axes.get_lines()[j].get_ydata(), result.fsc[j])

    # the iteration slider recolours the particles by that iteration's clusters
    widget.show_clusters()
    widget.iteration.value = 1
    layer = widget.points_layer
    assert session.scenes.current.name == f"Clusters · {result.run_id}" and layer in viewer.layers
    np.testing.assert_array_equal(layer.features["cluster"].to_numpy(), result.labels[0])
    np.testing.assert_allclose(layer.face_color, _refine_scene.cluster_colours(result.labels[0]))
    widget.iteration.value = 2
    np.testing.assert_array_equal(layer.features["cluster"].to_numpy(), result.labels[1])
    colours = np.asarray(layer.face_color)
    for k in result.cluster_ids:  # one colour per cluster, different clusters differ
        assert np.allclose(colours[result.labels[1] == k], _refine_scene.cluster_colour(int(k)))
    assert not np.allclose(*[_refine_scene.cluster_colour(int(k)) for k in result.cluster_ids[:2]])

    # select a cluster: the stack viewer shows exactly its particles
    for k in result.cluster_ids:
        widget.cluster.value = int(k)
        widget.select_button.native.click()
        expected = np.flatnonzero(result.labels[1] == k)  # positions in the dataset (root indices 0..N-1)
        np.testing.assert_array_equal(session.selection, result.indices[expected])
        np.testing.assert_array_equal(stack.visible_rows, expected)
    # selecting points in the clusters layer selects those particles too
    layer.selected_data = {3, 7}
    np.testing.assert_array_equal(stack.visible_rows, [3, 7])

    # a run saved before iterations were kept (iterations == []) still draws: final maps at every step
    old = RefineResult(indices=result.indices, labels=result.labels, half_sets=result.half_sets,
                       rotations=result.rotations, shifts_a=result.shifts_a, cluster_ids=result.cluster_ids,
                       maps=result.maps[::-1].copy(), fsc=result.fsc[::-1].copy(), fsc_freq=result.fsc_freq,
                       apix=result.apix, history=result.history, config=result.config, run_id="refine/9999")
    widget.show_result(old)
    assert widget.iteration.max == 2 and widget.iteration.value == 2
    old_maps = session.scenes.scenes["Clustering · refine/9999"]
    for value in (2, 1):
        widget.iteration.value = value
        for j, k in enumerate(old.cluster_ids):
            np.testing.assert_array_equal(old_maps.layer(f"cluster {k} map").data, old.maps[j])
            np.testing.assert_allclose(widget.fsc_axes.get_lines()[j].get_ydata(), old.fsc[j])
        assert widget.table.rowCount() == 4

