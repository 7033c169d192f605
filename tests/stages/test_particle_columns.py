"""particle_columns: the one builder of per-particle colour-by columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import starfile

from napari_cryohet.core.particle_dataset import CTFParams, ParticleDataset
from napari_cryohet.io.load_particles import load_dataset
from napari_cryohet.stages.particle_columns import particle_columns
from napari_cryohet.stages.simulate import box_arms_2d, pretzel, sample_data_dir

SAMPLE_STAR = sample_data_dir() / "adk_small" / "particles.star"


def _assert_float_columns(cols: dict[str, np.ndarray], n: int) -> None:
    for name, values in cols.items():
        assert isinstance(values, np.ndarray) and values.dtype == np.float64, name
        assert values.shape == (n,), name
        assert np.isfinite(values).all(), name


def test_sample_star_columns_are_finite_floats_with_defocus():
    ds = load_dataset(SAMPLE_STAR)
    n = len(ds)
    cols = particle_columns(ds)
    _assert_float_columns(cols, n)
    file = starfile.read(SAMPLE_STAR)["particles"]  # the file itself, not the loader
    np.testing.assert_allclose(cols["defocus_a"], 0.5 * (file["rlnDefocusU"] + file["rlnDefocusV"]).to_numpy())
    np.testing.assert_array_equal(cols["rlnAngleTilt"], file["rlnAngleTilt"].to_numpy(dtype=np.float64))
    np.testing.assert_array_equal(cols["index"], np.arange(n))
    assert "rlnImageName" not in cols  # text that is not numbers
    # the sample carries its ground truth (particles_truth.npz): frame index and path position
    np.testing.assert_array_equal(cols["truth_state"], ds.ground_truth["state"])
    np.testing.assert_array_equal(cols["truth_state_params"], ds.ground_truth["state_params"][:, 0])


def test_text_columns_holding_numbers_are_converted():
    ds = load_dataset(SAMPLE_STAR)
    table = ds.table.copy()
    # as starfile may read RELION columns under pandas 3: a pandas StringDtype
    table["rlnDefocusU"] = table["rlnDefocusU"].astype(str).astype("string")
    table["rlnRandomSubset"] = pd.Series([str(1 + i % 2) for i in range(len(ds))], dtype="string")
    table["rlnMicrographName"] = pd.Series([f"mic{i // 10}.mrc" for i in range(len(ds))], dtype="string")
    table["rlnEmpty"] = pd.Series([""] * len(ds), dtype="string")
    table["nullable"] = pd.array([1, None] * (len(ds) // 2), dtype="Int64")
    ds.table = table
    cols = particle_columns(ds)
    np.testing.assert_allclose(cols["rlnDefocusU"], ds.ctf.defocus_u_a)
    np.testing.assert_array_equal(cols["rlnRandomSubset"], 1 + np.arange(len(ds)) % 2)
    assert "rlnMicrographName" not in cols and "rlnEmpty" not in cols
    np.testing.assert_array_equal(cols["nullable"][:2], [1.0, np.nan])


def test_synthetic_dataset_ground_truth_columns(tmp_path):
    from napari_cryohet.io.star import read_star
    from napari_cryohet.io.write_particles import save_dataset, write_dataset_star

    ds = pretzel(6, box_size=16, apix=12.0, n_volumes_per_arm=2, seed=2)
    state = ds.ground_truth["state"]  # (N, 2) float arm states (τ1, τ2)
    cols = particle_columns(ds)
    _assert_float_columns(cols, 6)
    np.testing.assert_array_equal(cols["truth_state_0"], state[:, 0])
    np.testing.assert_array_equal(cols["truth_state_1"], state[:, 1])
    np.testing.assert_array_equal(cols["truth_state_params_1"], ds.ground_truth["state_params"][:, 1])
    np.testing.assert_allclose(cols["defocus_a"], 0.5 * (ds.ctf.defocus_u_a + ds.ctf.defocus_v_a))
    assert "truth_state" not in cols  # one name per quantity: (N, 2) → _0, _1
    # subsets follow the ground truth
    sub = ds.subset([4, 1])
    np.testing.assert_array_equal(particle_columns(sub)["truth_state_1"], state[[4, 1], 1])
    # truth never reaches a star file; it comes back from <name>_truth.npz
    t = read_star(write_dataset_star(tmp_path / "pretzel.star", sub))
    assert all(str(c).startswith("rln") for c in t.particles.columns)
    back = load_dataset(save_dataset(tmp_path / "saved", sub, name="p")["star"])
    again = particle_columns(back)
    for name in ("truth_state_0", "truth_state_1", "truth_state_params_0", "defocus_a"):
        np.testing.assert_allclose(again[name], particle_columns(sub)[name], err_msg=name)


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (np.array([2, 0, 1]), {"truth_state": [2.0, 0.0, 1.0]}),  # int class / frame
        (np.array([[0.25], [0.5], [0.75]], np.float32), {"truth_state": [0.25, 0.5, 0.75]}),  # (N, 1)
        (np.array([[0.1, 0.9], [0.2, 0.8], [0.3, 0.7]]), {"truth_state_0": [0.1, 0.2, 0.3],
                                                           "truth_state_1": [0.9, 0.8, 0.7]}),
        (np.zeros((3, 2, 2)), {}),  # not a per-particle scalar or vector: left out
    ],
)
def test_truth_state_shapes(state, expected):
    ds = ParticleDataset(images=np.zeros((3, 4, 4), np.float32), apix=1.0, ground_truth={"state": state})
    cols = particle_columns(ds)
    truth = {k: v for k, v in cols.items() if k.startswith("truth_")}
    assert list(truth) == list(expected)
    for name, values in expected.items():
        assert truth[name].dtype == np.float64
        np.testing.assert_allclose(truth[name], values, rtol=1e-6)


def test_table_wins_labels_and_plain_dataset():
    n = 4
    ds = ParticleDataset(images=np.zeros((n, 4, 4), np.float32), apix=1.0,
                         ctf=CTFParams.constant(n, defocus_u_a=1e4, defocus_v_a=2e4),
                         ground_truth={"state": np.arange(n)})
    ds.table["truth_state"] = -np.arange(n)
    ds.meta["labels"] = np.array([0, 1, 1, 0])
    cols = particle_columns(ds)
    np.testing.assert_array_equal(cols["truth_state"], -np.arange(n))  # the table's values, as they are
    np.testing.assert_array_equal(cols["labels"], [0, 1, 1, 0])
    np.testing.assert_array_equal(cols["defocus_a"], np.full(n, 1.5e4))
    bare = ParticleDataset(images=np.zeros((n, 4, 4), np.float32), apix=1.0)
    assert list(particle_columns(bare)) == ["index"]


def test_box_arms_toy_state_params():
    toy = box_arms_2d(5, seed=3)
    cols = particle_columns(toy)
    assert list(cols) == ["index", "truth_state_params_0", "truth_state_params_1", "truth_state_params_2"]
    np.testing.assert_array_equal(cols["truth_state_params_2"], toy.state_params[:, 2])  # box angle
