"""Issue 16 item 3b: a finite but huge pixel value (3.4e38) is refused where images are
read, naming the image, instead of surfacing as a torch overflow or a sklearn message."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryohet.io.errors import NonFiniteImageError
from napari_cryohet.io.load_particles import load_dataset
from napari_cryohet.io.mrc_stack import MAX_PIXEL_MAGNITUDE, open_stack


def _stack(tmp_path, mrcs_writer, value, index=3):
    images = np.random.default_rng(0).normal(size=(6, 16, 16)).astype(np.float32)
    images[index, 5, 7] = value
    return mrcs_writer(tmp_path / "huge.mrcs", images), images


@pytest.mark.parametrize("value", [3.4e38, -3.4e38, 1e17])
def test_huge_value_named_with_its_image(tmp_path, mrcs_writer, value):
    path, images = _stack(tmp_path, mrcs_writer, value)
    s = open_stack(path)
    np.testing.assert_array_equal(s[:3], images[:3])  # good images read unchanged
    for key in (3, slice(2, 5), [0, 3], np.array([False, False, False, True, True, False])):
        with pytest.raises(NonFiniteImageError) as e:
            s[key]
        msg = str(e.value)
        assert str(path) in msg and "image 4 " in msg and f"{np.float32(value):.3g}" in msg, msg
        assert "too large" in msg and e.value.field == "data"
    with pytest.raises(NonFiniteImageError, match="image 4 "):
        load_dataset(path, validate=True, ground_truth=False)


def test_the_limit_leaves_squares_finite_in_float32():
    """The oracle for the threshold: the sum of squares of a 1024² image of the largest accepted
    value is finite in float32; 3.4e38 squared is not."""
    x = np.float32(MAX_PIXEL_MAGNITUDE)
    assert np.isfinite(x * x * np.float32(1024 * 1024))
    with np.errstate(over="ignore"):
        assert not np.isfinite(np.float32(3.4e38) * np.float32(3.4e38))


def test_nan_keeps_its_wording(tmp_path, mrcs_writer):
    path, _ = _stack(tmp_path, mrcs_writer, np.nan, index=1)
    with pytest.raises(NonFiniteImageError, match=r"image 2 \(1-based index in the stack\) contains NaN or infinite"):
        open_stack(path)[:]


def test_huge_value_through_viewer_open(tmp_path, mrcs_writer, make_napari_viewer):
    """napari shows image 1 on open: the named error reaches the user and napari lives on."""
    path, _ = _stack(tmp_path, mrcs_writer, 3.4e38, index=0)
    viewer = make_napari_viewer()
    with pytest.raises(Exception) as e:  # noqa: PT011 - napari may wrap ours
        viewer.open(str(path), plugin="napari-cryohet")
    err = e.value
    while not isinstance(err, NonFiniteImageError) and err.__cause__ is not None:
        err = err.__cause__
    assert isinstance(err, NonFiniteImageError) and "image 1 " in str(err), repr(e.value)
    viewer.add_image(np.zeros((4, 4)))
    assert len(viewer.layers) == 1
