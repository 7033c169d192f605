"""Truth-state columns the recipes put in their table."""

from __future__ import annotations

import numpy as np

from napari_cryohet.stages.simulate import adk_chain, pretzel
from napari_cryohet.stages.simulate import recipe_support as D

# ------------------------------------------------------------------ truth columns in the table


def test_truth_state_columns_shapes_and_dtypes():
    cols = D.truth_state_columns(np.array([2, 0, 1]))
    assert list(cols) == ["truth_state"] and cols["truth_state"].dtype.kind == "i"
    cols = D.truth_state_columns(np.array([[0.25], [0.5]], np.float32))
    np.testing.assert_array_equal(cols["truth_state"], [0.25, 0.5])
    cols = D.truth_state_columns(np.array([[0.1, 0.9], [0.2, 0.8]]))
    assert list(cols) == ["truth_state_0", "truth_state_1"]
    np.testing.assert_array_equal(cols["truth_state_1"], [0.9, 0.8])
    assert D.truth_state_columns(None) == {} and D.truth_state_columns(np.zeros((2, 2, 2))) == {}


def test_dataset_table_holds_truth_and_star_skips_it(tmp_path):
    from napari_cryohet.io.load_particles import load_dataset
    from napari_cryohet.io.star import read_star
    from napari_cryohet.io.write_particles import write_dataset_star

    adk = adk_chain(24, snr=0.05, seed=3)
    np.testing.assert_array_equal(adk.table["truth_state"], adk.ground_truth["state"])  # int frame index
    assert adk.table["truth_state"].dtype == np.int64
    ds = pretzel(6, box_size=16, apix=12.0, n_volumes_per_arm=2, seed=2)
    state = ds.ground_truth["state"]  # (N, 2) float arm states
    np.testing.assert_array_equal(ds.table["truth_state_0"], state[:, 0])
    np.testing.assert_array_equal(ds.table["truth_state_1"], state[:, 1])
    sub = ds.subset([4, 1])
    np.testing.assert_array_equal(sub.table["truth_state_1"], state[[4, 1], 1])
    # a synthetic dataset's star holds only RELION labels, and reads back
    out = write_dataset_star(tmp_path / "pretzel.star", sub)
    t = read_star(out)
    assert all(str(c).startswith("rln") for c in t.particles.columns)
    back = load_dataset(out, require=("poses", "ctf"))
    np.testing.assert_allclose(back.rotations, sub.rotations, atol=1e-5)
    np.testing.assert_allclose(back.ctf.defocus_u_a, sub.ctf.defocus_u_a)
