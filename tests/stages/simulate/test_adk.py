"""AdK recipes (adk_chain, adk_volumes): imaging conditions, ground-truth layout, images vs truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cryohet.core.projection import apply_ctf_and_shift, project_gaussian_atoms
from napari_cryohet.stages.simulate import adk as D
from napari_cryohet.stages.simulate.engine import (
    AtomicModel,
    SimulationConfig,
    measured_snr,
    simulate,
)

# ------------------------------------------------------------------ adk_chain


@pytest.fixture(scope="module")
def adk():
    return D.adk_chain(24, snr=0.05, seed=3)


def test_adk_chain_conditions_and_truth(adk):
    truth = adk.ground_truth
    traj = D.load_adk_ca()["coords"]
    assert adk.images.shape == (24, 64, 64) and adk.apix == 2.0
    assert set(np.unique(adk.ctf.defocus_u_a)) <= {15000.0, 17500.0, 20000.0, 22500.0, 25000.0}
    np.testing.assert_allclose(adk.ctf.voltage_kv, 200.0)
    np.testing.assert_allclose(adk.ctf.cs_mm, 2.0)
    np.testing.assert_allclose(adk.ctf.amplitude_contrast, 0.1)
    np.testing.assert_allclose(adk.shifts_a, 0.0)
    assert truth["coords_a"].shape == (24, 214, 3) and truth["state"].dtype == np.int64
    np.testing.assert_array_equal(truth["coords_a"], traj[truth["state"]])
    np.testing.assert_allclose(truth["state_params"][:, 0], truth["state"] / 101)
    np.testing.assert_array_equal(truth["global/reference_coords_a"], traj[0])
    assert float(truth["global/sigma_a"]) == 3.0
    assert measured_snr(adk) == pytest.approx(0.05, rel=0.05)


def test_adk_chain_clean_images_are_projections_of_truth(adk):
    """clean_images = CTF · analytic projection of the ground-truth Cα in the stored pose."""
    truth = adk.ground_truth
    proj = project_gaussian_atoms(torch.as_tensor(truth["coords_a"]), torch.as_tensor(adk.rotations), d=64,
                                  apix=adk.apix, sigma_a=3.0)
    expected = apply_ctf_and_shift(proj, apix=adk.apix, ctf=adk.ctf.to_torch()).numpy()
    np.testing.assert_allclose(truth["clean_images"], expected, atol=1e-5 * np.abs(expected).max())


def test_adk_chain_projection_independent_oracle():
    """Without CTF, an image is the sum of 2D Gaussians at (R r)[:2] (numpy, per pixel)."""
    ds = D.adk_chain(3, snr=None, seed=5)
    ds_noctf = simulate(AtomicModel(ds.ground_truth["coords_a"], 3.0),
                        SimulationConfig(box_size=64, apix=2.0, snr=None, apply_ctf=False, seed=5))
    np.testing.assert_array_equal(ds_noctf.rotations, ds.rotations)  # same seed, same poses
    grid = (np.arange(64) - 32) * 2.0
    for i in range(3):
        xy = ds.ground_truth["coords_a"][i].astype(np.float64) @ ds.rotations[i].astype(np.float64).T
        gx = np.exp(-(grid[None, :] - xy[:, 0:1]) ** 2 / 18.0)  # (M, X)
        gy = np.exp(-(grid[None, :] - xy[:, 1:2]) ** 2 / 18.0)  # (M, Y)
        image = (gy.T @ gx) * 2.0**2 / (2 * np.pi * 9.0)
        np.testing.assert_allclose(ds_noctf.images[i], image, atol=1e-5)
        assert image.sum() == pytest.approx(214, rel=1e-3)


def test_adk_chain_continuous_path():
    ds = D.adk_chain(8, snr=None, continuous=True, seed=1)
    t = ds.ground_truth["state"]
    assert t.shape == (8, 1) and t.dtype == np.float32 and (t >= 0).all() and (t <= 1).all()
    bonds = np.linalg.norm(np.diff(ds.ground_truth["coords_a"], axis=1), axis=-1)
    assert 2.7 < bonds.min() and bonds.max() < 4.1  # interpolated chains stay chains


# ------------------------------------------------------------------ adk_volumes


def test_adk_volumes_discrete():
    ds = D.adk_volumes(12, n_conformations=3, box_size=32, apix=3.0, sigma_a=3.0, seed=2)
    truth = ds.ground_truth
    vols = truth["global/volumes"]
    assert vols.shape == (3, 32, 32, 32)
    np.testing.assert_array_equal(truth["global/frames"], [0, 50, 101])
    assert np.bincount(truth["state"]).tolist() == [4, 4, 4]  # balanced classes
    weights = truth["global/atom_weights"]
    np.testing.assert_allclose(vols.sum((1, 2, 3)), weights.sum(), rtol=1e-3)  # mass conserved
    assert np.linalg.norm(vols[0] - vols[2]) > 0.1 * np.linalg.norm(vols[0])  # closed ≠ open
    assert ds.ctf.defocus_u_a.min() >= 2000.0 and ds.ctf.defocus_u_a.max() <= 20000.0
    assert measured_snr(ds) == pytest.approx(0.1, rel=0.05)
    # the volume of each particle's state projects to its (CTF-free) image
    proj = project_gaussian_atoms(torch.as_tensor(truth["global/conformation_coords_a"][truth["state"][:4]]),
                                  torch.as_tensor(ds.rotations[:4]), d=32, apix=3.0, sigma_a=3.0,
                                  weights=torch.as_tensor(weights))
    expected = apply_ctf_and_shift(proj, apix=3.0, ctf=ds.ctf.to_torch(indices=np.arange(4))).numpy()
    np.testing.assert_allclose(truth["clean_images"][:4], expected, atol=1e-5 * np.abs(expected).max())


def test_adk_volumes_continuous():
    ds = D.adk_volumes(4, n_conformations=2, continuous=True, box_size=32, apix=3.0, sigma_a=3.0, snr=None)
    truth = ds.ground_truth
    assert truth["state"].shape == (4, 1) and truth["coords_a"].shape == (4, 1656, 3)
    assert truth["global/volumes"].shape == (2, 32, 32, 32)
