"""The session dock's *Open particles* form and the contrast check in the window (issue 15).

Real paths: the bundled sample .star, and a simulated set written to files whose stacks
were moved and whose contrast is inverted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "adk_small" / "particles.star"


@pytest.fixture(scope="module")
def moved_inverted(tmp_path_factory, write_inverted_files):
    """(star, folder the stack was moved to): 150 particles with inverted contrast (tests/conftest.py)."""
    return write_inverted_files(tmp_path_factory.mktemp("open"), n_particles=150, seed=5)


def _dock(make_napari_viewer):
    from napari_cryohet.plugin.session_widget import SessionWidget

    viewer = make_napari_viewer()
    return viewer, SessionWidget(viewer)


def test_open_form_datadir_and_contrast(make_napari_viewer, moved_inverted):
    star, moved = moved_inverted
    viewer, dock = _dock(make_napari_viewer)
    form = dock.open_form
    form.path.value = str(star)
    assert form.open() is None  # stacks not found: the message says how to fix it
    assert "datadir" in form.message.value and "particles.mrcs" in form.message.value
    form.datadir.value = str(moved)
    ds = form.open()
    assert len(ds) == 150 and dock.session.dataset is ds
    assert ds.meta["contrast_check"].verdict == "inverted"
    assert "INVERTED" in dock.contrast_label.value and "with 'contrast inverted' ticked" in dock.contrast_label.value
    form.contrast_inverted.value = True
    fixed = form.open()
    assert fixed.meta["load_options"] == {"datadir": str(moved), "contrast_inverted": True}
    assert fixed.meta["contrast_check"].verdict == "expected" and "as expected" in dock.contrast_label.value
    # the stack layer shows the corrected images (white particles)
    layer = next(lyr for lyr in viewer.layers if lyr.metadata.get("cryohet_dataset") is fixed)
    np.testing.assert_array_equal(np.asarray(layer.data[3]), -ds.get_images(3))


def test_sample_star_through_form_and_reader(make_napari_viewer, qtbot):
    viewer, dock = _dock(make_napari_viewer)
    dock.open_form.path.value = str(SAMPLE)
    ds = dock.open_form.open()
    assert len(ds) == 200 and "opened 200 particles" in dock.open_form.message.value
    assert "Contrast as expected" in dock.contrast_label.value
    # a file opened with File > Open is checked too, once napari has inserted its layer
    viewer.open(str(SAMPLE), plugin="napari-cryohet")
    opened = dock.session.dataset
    assert opened is not ds
    qtbot.waitUntil(lambda: "contrast_check" in opened.meta, timeout=5000)
    assert opened.meta["contrast_check"].verdict == "expected" and opened.meta["contrast_check"].z > 10
