"""Headless tests of the particle stack viewer dock widget (issue 2, item 5)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from qtpy.QtCore import QItemSelectionModel, Qt

from napari_cryohet.core.particle_dataset import CTFParams, ParticleDataset
from napari_cryohet.core.rotation import euler_to_matrix, matrix_to_euler
from napari_cryohet.plugin._particle_table import ParticleTableModel
from napari_cryohet.plugin._reader import DATASET_KEY
from napari_cryohet.plugin.stack_viewer import StackViewerWidget


class CountingStack:
    """A virtual (N, D, D) stack made on the fly that counts the images it hands out."""

    def __init__(self, n: int, d: int):
        self.shape = (n, d, d)
        self.dtype = np.dtype(np.float32)
        self.ndim = 3
        self.images_read = 0

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        idx = np.arange(self.shape[0])[key[0]]
        self.images_read += int(np.size(idx))
        d = self.shape[1]
        yy, xx = np.mgrid[:d, :d]
        base = np.sin(xx / 3.0) + np.cos(yy / 5.0)
        out = (np.asarray(idx, dtype=np.float32)[..., None, None] % 7 + base).astype(np.float32)
        return out[(slice(None),) * np.ndim(idx) + key[1:]]

    def __array__(self, dtype=None, copy=None):
        raise AssertionError("the whole stack was read")


def synthetic_dataset(n: int = 40, d: int = 16, seed: int = 0) -> ParticleDataset:
    rng = np.random.default_rng(seed)
    euler = np.stack([rng.uniform(-np.pi, np.pi, n), rng.uniform(0.1, np.pi - 0.1, n),
                      rng.uniform(-np.pi, np.pi, n)], -1)
    ctf = CTFParams.constant(n, defocus_u_a=rng.uniform(8000, 25000, n),
                             defocus_v_a=rng.uniform(8000, 25000, n),
                             defocus_angle_rad=rng.uniform(0, np.pi, n), voltage_kv=300.0)
    return ParticleDataset(
        images=rng.normal(size=(n, d, d)).astype(np.float32),
        apix=2.5,
        rotations=euler_to_matrix(euler).astype(np.float32),
        shifts_a=rng.normal(0, 3, (n, 2)).astype(np.float32),
        ctf=ctf,
        ground_truth={"state": np.arange(n) % 3},
    )


def test_widget_follows_slider_and_shows_metadata(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = StackViewerWidget(viewer)
    qtbot.addWidget(widget)
    widget.show()  # the CTF profile is drawn while the dock is shown
    qtbot.waitExposed(widget)
    ds = synthetic_dataset()
    layer = widget.load_dataset(ds, name="toy")

    assert layer.metadata[DATASET_KEY] is ds
    assert layer.data.shape == (40, 16, 16)
    assert tuple(layer.scale) == pytest.approx((1.0, 2.5, 2.5))
    assert widget.dataset_picker.count() == 1 and widget.dataset_picker.currentText() == "toy"

    viewer.dims.set_current_step(0, 7)  # napari's slider, as a user would move it
    assert widget.index == 7
    meta = widget.current_metadata
    rot, tilt, psi = np.degrees(matrix_to_euler(ds.rotations[7].astype(np.float64)))
    # the rotation rebuilt from the shown angles is the particle's rotation
    shown = euler_to_matrix(np.radians([meta["rot_deg"], meta["tilt_deg"], meta["psi_deg"]]))
    np.testing.assert_allclose(shown, ds.rotations[7], atol=1e-5)
    assert meta["tilt_deg"] == pytest.approx(tilt, abs=1e-4)
    assert meta["shift_x_a"] == pytest.approx(float(ds.shifts_a[7, 0]))
    assert meta["shift_y_a"] == pytest.approx(float(ds.shifts_a[7, 1]))
    assert meta["defocus_u_a"] == pytest.approx(ds.ctf.defocus_u_a[7])
    assert meta["defocus_v_a"] == pytest.approx(ds.ctf.defocus_v_a[7])
    assert meta["defocus_angle_deg"] == pytest.approx(np.degrees(ds.ctf.defocus_angle_rad[7]))
    assert meta["voltage_kv"] == 300.0 and meta["cs_mm"] == pytest.approx(2.7)
    assert f"{ds.ctf.defocus_u_a[7]:.1f} Å" in widget.metadata_text()

    # CTF profile along U: +Q0 at k = 0 (RELION sign), Nyquist at the end, and the first
    # zero where π λ Δf k² + asin(Q0) = π (Cs term < 0.01 rad there), λ(300 kV) = 0.019687 Å
    freq, ctf_u = widget.ctf_axes.get_lines()[0].get_xdata(), widget.ctf_axes.get_lines()[0].get_ydata()
    assert ctf_u[0] == pytest.approx(0.1, abs=1e-6) and freq[-1] == pytest.approx(0.5 / 2.5)
    first_zero = freq[np.flatnonzero(np.diff(np.sign(ctf_u)))[0]]
    expected = np.sqrt((np.pi - np.arcsin(0.1)) / (np.pi * 0.019687 * ds.ctf.defocus_u_a[7]))
    assert first_zero == pytest.approx(expected, rel=0.02)
    labels = [line.get_label() for line in widget.ctf_axes.get_lines()]
    assert any(lb.startswith("U =") for lb in labels) and any(lb.startswith("V =") for lb in labels)

    # the image napari shows is particle 7
    np.testing.assert_array_equal(np.asarray(layer._slice.image.raw), ds.images[7])

    # setting .index moves napari's slider
    widget.index = 12
    assert viewer.dims.current_step[0] == 12
    assert widget.current_metadata["defocus_u_a"] == pytest.approx(ds.ctf.defocus_u_a[12])
    with pytest.raises(IndexError):
        widget.index = 40


def test_table_filter_expression_substring_and_show_particles(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = StackViewerWidget(viewer)
    qtbot.addWidget(widget)
    ds = synthetic_dataset(n=60)
    widget.load_dataset(ds)

    # derived RELION columns make the same queries work for synthetic data
    rows = widget.apply_filter("rlnDefocusU > 15000")
    np.testing.assert_array_equal(rows, np.flatnonzero(ds.ctf.defocus_u_a > 15000))
    assert widget.table_model.rowCount() == len(rows)
    assert widget.index == rows[0]  # jumped to the first match
    rows = widget.apply_filter("truth_state == 2 and rlnDefocusV < 20000")
    np.testing.assert_array_equal(rows, np.flatnonzero((np.arange(60) % 3 == 2) & (ds.ctf.defocus_v_a < 20000)))

    before = widget.visible_rows
    widget.apply_filter("rlnNoSuchColumn > 1")  # an error is shown, the table stays
    np.testing.assert_array_equal(widget.visible_rows, before)
    assert "error" in widget.filter_status.text()

    # substring search over every column (truth_state column values "0","1","2")
    frame = pd.DataFrame({"rlnImageName": [f"{i + 1:06d}@stack_{i % 2}.mrcs" for i in range(60)]})
    ds2 = ParticleDataset(images=ds.images, apix=ds.apix, table=frame)
    widget.load_dataset(ds2, name="named")
    assert widget.dataset_picker.count() == 2 and widget.dataset is ds2
    rows = widget.apply_filter("STACK_1")
    np.testing.assert_array_equal(rows, np.arange(1, 60, 2))
    assert widget.table_model.headerData(0, Qt.Orientation.Vertical) == "1"

    widget.show_particles([9, 4, 33])
    np.testing.assert_array_equal(widget.visible_rows, [9, 4, 33])
    assert widget.index == 9 and viewer.dims.current_step[0] == 9
    widget.apply_filter("")
    assert widget.table_model.rowCount() == 60

    # picking the other dataset in the combo box switches back, for the whole window
    widget.dataset_picker.setCurrentIndex(0)
    assert widget.dataset is ds and widget.session.dataset is ds
    # each dataset's stack lives in its own particles scene: one in the viewer at a time
    scenes = widget.session.scenes
    scenes.show(widget.session.particles_scene(ds))
    assert list(viewer.layers) == [widget.layer]
    scenes.show(widget.session.particles_scene(ds2))
    assert [lyr.metadata[DATASET_KEY] for lyr in viewer.layers] == [ds2]


def test_large_stack_is_not_read_up_front(make_napari_viewer, qtbot):
    n = 200_000
    stack = CountingStack(n, 8)
    table = pd.DataFrame({"rlnDefocusU": np.linspace(5000, 30000, n), "rlnClassNumber": np.arange(n) % 4 + 1})
    ds = ParticleDataset(images=stack, apix=1.0, table=table)
    viewer = make_napari_viewer()
    widget = StackViewerWidget(viewer)
    qtbot.addWidget(widget)
    widget.load_dataset(ds)
    viewer.dims.set_current_step(0, n - 1)
    widget.index = 123_456
    # contrast sampling (16) + the slices napari displayed; never the stack
    assert stack.images_read < 40
    model = widget.table_model
    assert isinstance(model, ParticleTableModel) and model.rowCount() == n
    rows = widget.apply_filter("rlnClassNumber == 3 and rlnDefocusU > 29000")
    expect = np.flatnonzero((np.arange(n) % 4 + 1 == 3) & (table["rlnDefocusU"].to_numpy() > 29000))
    np.testing.assert_array_equal(rows, expect)
    assert stack.images_read < 40


def test_star_through_reader_and_widget_then_export_subset(make_napari_viewer, qtbot, tmp_path, star_project):
    """Acceptance (issue 2): star → reader → widget, step the slider, check metadata, export, re-read."""
    import starfile

    star, images, particles = star_project(tmp_path / "project")
    viewer = make_napari_viewer()
    widget = StackViewerWidget(viewer)
    qtbot.addWidget(widget)
    [layer] = viewer.open(str(star), plugin="napari-cryohet")
    assert widget.layer is layer and widget.dataset is layer.metadata[DATASET_KEY]  # picked up on insert

    for k in (4, 9):  # one particle in each stack
        viewer.dims.set_current_step(0, k)
        assert widget.index == k
        meta, row = widget.current_metadata, particles.iloc[k]
        assert meta["image_name"] == row["rlnImageName"]
        for key, column in (("rot_deg", "rlnAngleRot"), ("tilt_deg", "rlnAngleTilt"), ("psi_deg", "rlnAnglePsi"),
                            ("shift_x_a", "rlnOriginXAngst"), ("shift_y_a", "rlnOriginYAngst"),
                            ("defocus_u_a", "rlnDefocusU"), ("defocus_v_a", "rlnDefocusV"),
                            ("defocus_angle_deg", "rlnDefocusAngle")):
            assert meta[key] == pytest.approx(row[column], abs=1e-4), key
        assert (meta["voltage_kv"], meta["cs_mm"], meta["amplitude_contrast"]) == pytest.approx((300.0, 2.7, 0.1))
        assert row["rlnImageName"] in widget.metadata_text()
        np.testing.assert_array_equal(np.asarray(layer._slice.image.raw), images[k])

    # substring in a text column; a number matches numeric cells at the typed precision
    np.testing.assert_array_equal(widget.apply_filter("MIC_1"), np.arange(1, len(particles), 3))
    value = float(particles["rlnDefocusU"][5])
    np.testing.assert_array_equal(widget.apply_filter(f"{value:.1f}"),
                                  np.flatnonzero(np.abs(particles["rlnDefocusU"] - float(f"{value:.1f}")) <= 0.05 + 1e-6))
    assert 5 in widget.visible_rows

    # filter by an expression, select two of the hits in the table, export them
    rows = widget.apply_filter("rlnClassNumber == 2")
    np.testing.assert_array_equal(rows, np.flatnonzero(particles["rlnClassNumber"].to_numpy() == 2))
    widget.table_view.selectRow(0)
    widget.table_view.selectionModel().select(
        widget.table_model.index(2, 0),
        QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows,
    )
    np.testing.assert_array_equal(widget.selected_rows(), rows[[0, 2]])
    out = widget.export_star(tmp_path / "export" / "subset.star")
    exported = starfile.read(out, always_dict=True)["particles"]
    expected = particles.iloc[rows[[0, 2]]].reset_index(drop=True)
    assert list(exported.columns) == list(particles.columns)
    for column in particles.columns:
        if column == "rlnImageName":  # the stack path is rewritten relative to the new folder
            assert [n.split("@")[0] for n in exported[column]] == [n.split("@")[0] for n in expected[column]]
        elif expected[column].dtype.kind in "fi":
            np.testing.assert_allclose(exported[column].to_numpy(float), expected[column].to_numpy(float))
        else:
            assert list(exported[column]) == list(expected[column]), column

    # no selection: the filtered rows are exported; re-read through the reader
    widget.table_view.clearSelection()
    out2 = widget.export_star(tmp_path / "filtered.star")
    [again] = viewer.open(str(out2), plugin="napari-cryohet")
    assert again.data.shape[0] == len(rows)
    for j, i in enumerate(rows):
        np.testing.assert_array_equal(np.asarray(again.data[j]), images[i])
    reread = again.metadata[DATASET_KEY]
    np.testing.assert_allclose(reread.ctf.defocus_u_a, particles["rlnDefocusU"].to_numpy()[rows])
    assert widget.dataset_picker.count() == 2

