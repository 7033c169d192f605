"""MRC volumes: writing and reading back whole maps."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest

from napari_cryohet.io import mrc_volume as mrc_mod
from napari_cryohet.io.mrc_volume import read_volume, write_volume


def test_write_and_read_volume(tmp_path, rng):
    vol = rng.normal(size=(8, 8, 8)).astype(np.float32)
    write_volume(tmp_path / "v.mrc", vol, 3.5)
    with mrcfile.open(tmp_path / "v.mrc") as m:
        assert m.is_volume() and m.voxel_size.x == pytest.approx(3.5)
        np.testing.assert_array_equal(m.data, vol)
    got, apix = read_volume(tmp_path / "v.mrc")
    np.testing.assert_array_equal(got, vol)
    assert apix == pytest.approx(3.5)


def test_module_names_every_public_function():
    assert {"read_volume", "write_volume"} <= set(mrc_mod.__all__)
