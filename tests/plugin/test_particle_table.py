"""Tests of the stack viewer's per-particle table (:mod:`napari_cryohet.plugin._particle_table`)."""

from __future__ import annotations

import numpy as np

from napari_cryohet.core.particle_dataset import ParticleDataset
from napari_cryohet.plugin._particle_table import display_table


def test_display_table_truth_columns_from_ground_truth_or_table():
    ds = ParticleDataset(images=np.zeros((6, 4, 4), dtype=np.float32), apix=1.0)
    ds.ground_truth = {"state": np.arange(12, dtype=np.float64).reshape(6, 2)}  # (N, 2) continuous
    frame = display_table(ds)
    np.testing.assert_array_equal(frame["truth_state_0"], np.arange(0, 12, 2))
    np.testing.assert_array_equal(frame["truth_state_1"], np.arange(1, 12, 2))
    # columns already in the table (as the dataset builders put them) are shown once, as they are
    ds.table["truth_state_0"] = -np.arange(6)
    frame = display_table(ds)
    assert list(frame.columns).count("truth_state_0") == 1
    np.testing.assert_array_equal(frame["truth_state_0"], -np.arange(6))
