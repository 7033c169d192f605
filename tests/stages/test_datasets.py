"""The seeds' datasets: geometry, ground-truth layout and consistency with the images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cryohet.core.atoms import gaussian_density_3d
from napari_cryohet.core.frenet import chain_angles_2d
from napari_cryohet.core.projection import apply_ctf_and_shift, project_gaussian_atoms
from napari_cryohet.stages import datasets as D
from napari_cryohet.stages.simulate import AtomicModel, SimulationConfig, measured_snr, simulate

# ------------------------------------------------------------------ box_arms_2d


@pytest.fixture(scope="module")
def box():
    return D.box_arms_2d(200, seed=1)


def test_box_arms_geometry(box):
    m = 149
    assert box.coords.shape == (200, m, 2) and box.state_params.shape == (200, 3)
    bonds = np.linalg.norm(np.diff(box.coords.astype(np.float64), axis=1), axis=-1)
    np.testing.assert_allclose(bonds, 3.5, atol=1e-4)  # consecutive distance = δ
    np.testing.assert_allclose(box.coords[:, 32], 0.0, atol=1e-5)  # z_{j0} at the origin (j0 = 33)
    # the chain's own turning angles are eq. 3.2-3.3 of the true parameters
    theta = chain_angles_2d(torch.as_tensor(box.coords, dtype=torch.float64)).numpy()
    a1, a2, b = box.state_params.T.astype(np.float64)
    np.testing.assert_allclose(theta[:, 32], -np.pi / 2 + a1, atol=1e-4)
    np.testing.assert_allclose(theta[:, 132], -np.pi / 2 + a2, atol=1e-4)
    np.testing.assert_allclose(theta[:, 52], -np.pi / 2 + b, atol=1e-4)
    np.testing.assert_allclose(theta[:, 72], -np.pi / 2 - b, atol=1e-4)
    others = np.delete(theta, [32, 52, 72, 92, 122, 132], axis=1)
    np.testing.assert_allclose(others, 0.0, atol=1e-4)
    assert np.abs(a1).max() <= np.pi / 2 and np.abs(b).max() <= np.pi / 4
    assert np.abs(a1).max() > 1.2 and np.abs(b).max() > 0.6  # the ranges are used
    np.testing.assert_allclose(box.reference_angles_rad[[32, 52, 72, 92, 122, 132]], -np.pi / 2, atol=1e-6)


def test_box_arms_projections_are_line_integrals(box):
    """Clean projection = ∫ ν u(x, y) dy of the posed chain (numerical quadrature)."""
    posed = box.posed_coords()[:3].astype(np.float64)  # (3, m, 2)
    y = np.arange(-400.0, 400.0, 0.25)  # quadrature along the beam (y), rectangle rule
    x = box.grid_x_a.astype(np.float64)
    for i in range(3):
        gx = np.exp(-((x[None, :] - posed[i, :, 0:1]) ** 2) / (2 * box.sigma**2))  # (m, L)
        gy = np.exp(-((y[None, :] - posed[i, :, 1:2]) ** 2) / (2 * box.sigma**2))  # (m, Y)
        proj = box.amplitude * (gx * (gy.sum(1, keepdims=True) * 0.25)).sum(0)  # Σ_j ∫ u_j dy
        np.testing.assert_allclose(box.clean_projections[i], proj, rtol=1e-4, atol=1e-4)
    # the paper's numbers: var(clean) ≈ 182.6, noise variance 2500, SNR ≈ 0.073
    assert box.clean_projections.var() == pytest.approx(182.6, rel=0.1)
    noise = box.projections.astype(np.float64) - box.clean_projections
    assert noise.var() == pytest.approx(2500.0, rel=0.03)
    assert box.measured_snr() == pytest.approx(0.073, rel=0.12)
    # the low-dimensional densities: eq. 3.4 of the superposed chain plus noise of variance 9
    assert box.low_dim_frame == "consensus"
    superposed = D.superpose_2d(box.coords[:20], box.reference_coords)
    clean_low = D.density_2d(torch.as_tensor(superposed),
                             grid_a=torch.as_tensor(box.low_dim_grid_a, dtype=torch.float64), sigma=7.0).numpy()
    assert (box.low_dim[:20] - clean_low).var() == pytest.approx(9.0, rel=0.03)
    # anchor frame: the model frame of eq. 3.1 itself, same noise stream
    anchor = D.box_arms_2d(20, seed=1, low_dim_frame="anchor")
    clean_anchor = D.density_2d(torch.as_tensor(anchor.coords, dtype=torch.float64),
                                grid_a=torch.as_tensor(anchor.low_dim_grid_a, dtype=torch.float64), sigma=7.0).numpy()
    assert (anchor.low_dim - clean_anchor).var() == pytest.approx(9.0, rel=0.05)
    with pytest.raises(ValueError, match="low_dim_frame"):
        D.box_arms_2d(5, low_dim_frame="model")


def test_superpose_2d_is_the_least_squares_rotation(box, rng):
    ref = box.reference_coords.astype(np.float64)
    # a rigidly moved copy of the reference comes back onto it exactly
    a = rng.uniform(0, 2 * np.pi, 5)
    moved = D._rotate_2d(torch.as_tensor(np.broadcast_to(ref, (5,) + ref.shape).copy()),
                         torch.as_tensor(a)).numpy() + rng.normal(0, 50, (5, 1, 2))
    np.testing.assert_allclose(D.superpose_2d(moved, ref), np.broadcast_to(ref - ref.mean(0), moved.shape),
                               atol=1e-9)
    # deformed chains: centred, and no nearby rotation fits the reference better
    out = D.superpose_2d(box.coords[:10], ref)
    np.testing.assert_allclose(out.mean(axis=1), 0.0, atol=1e-9)
    centred_ref = ref - ref.mean(0)
    ssd = ((out - centred_ref) ** 2).sum(axis=(1, 2))
    for turn in (-0.01, 0.01):
        turned = D._rotate_2d(torch.as_tensor(out), torch.full((10,), turn, dtype=torch.float64)).numpy()
        assert np.all(((turned - centred_ref) ** 2).sum(axis=(1, 2)) > ssd)
    with pytest.raises(ValueError, match="superpose_2d"):
        D.superpose_2d(box.coords[:2], ref[:10])


def test_box_arms_save_load_and_seed(tmp_path, box):
    path = box.save(tmp_path / "box.npz")
    back = D.Toy2DDataset.load(path)
    np.testing.assert_array_equal(back.projections, box.projections)
    assert back.j0 == 33 and back.noise_var == 2500.0
    assert back.low_dim_frame == "consensus"
    # a file written before low_dim_frame existed loads with the frame it was made in
    with np.load(path) as data:
        legacy = {k: data[k] for k in data.files if k != "low_dim_frame"}
    np.savez(tmp_path / "legacy.npz", **legacy)
    assert D.Toy2DDataset.load(tmp_path / "legacy.npz").low_dim_frame == "anchor"
    again = D.box_arms_2d(200, seed=1)
    np.testing.assert_array_equal(again.projections, box.projections)
    assert not np.allclose(D.box_arms_2d(20, seed=2).state_params, box.state_params[:20])


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


# ------------------------------------------------------------------ assembly_classes


def test_assembly_classes_differ_by_removed_atoms():
    ds = D.assembly_classes(16, box_size=32, apix=3.0, sigma_a=3.0, seed=4)
    truth = ds.ground_truth
    masks, vols = truth["global/class_masks"], truth["global/volumes"]
    coords, weights = truth["global/reference_coords_a"], truth["global/atom_weights"]
    domains = truth["global/atom_domains"]
    assert masks.shape == (4, 1656) and masks[0].all()
    assert list(truth["global/class_names"]) == ["CORE+NMP+LID", "CORE+NMP", "CORE+LID", "CORE"]
    np.testing.assert_array_equal(~masks[1], domains == "LID")
    np.testing.assert_array_equal(~masks[2], domains == "NMP")
    np.testing.assert_array_equal(~masks[3], domains != "CORE")
    resids = D.load_adk_heavy()["resids"]
    assert set(np.unique(resids[domains == "LID"])) == set(range(122, 160))
    for k in range(1, 4):
        removed = ~masks[k]
        missing = gaussian_density_3d(torch.as_tensor(coords[removed]), d=32, apix=3.0, sigma_a=3.0,
                                      weights=torch.as_tensor(weights[removed])).numpy()
        np.testing.assert_allclose(vols[0] - vols[k], missing, atol=1e-4 * vols[0].max())
        assert (vols[0] - vols[k]).sum() == pytest.approx(weights[removed].sum(), rel=1e-3)
    assert set(np.unique(truth["state"])) <= {0, 1, 2, 3}
    # an image of a class-3 particle has less signal than a complete one, CTF aside
    assert measured_snr(ds) == pytest.approx(0.1, rel=0.05)


def test_assembly_bad_input():
    with pytest.raises(ValueError, match="classes"):
        D.assembly_classes(4, classes=(("CORE", "FOO"),))
    with pytest.raises(ValueError, match="class_probabilities"):
        D.assembly_classes(4, class_probabilities=(1.0, 0.0))


# ------------------------------------------------------------------ cat and pretzel


def test_cat_blobs_head_turns_body_rigid():
    tau = np.linspace(0, 1, 5)
    blobs = D.cat_blobs(tau).astype(np.float64)
    body, head = blobs[:, D.CAT_PARTS == 0], blobs[:, D.CAT_PARTS == 1]
    np.testing.assert_allclose(body, np.broadcast_to(body[0], body.shape), atol=1e-5)
    neck = body[:, -1]  # the pivot
    radii = np.linalg.norm(head - neck[:, None], axis=-1)
    np.testing.assert_allclose(radii, np.broadcast_to(radii[0], radii.shape), atol=1e-4)  # rigid head
    heading = head[:, 0] - neck  # the head centre turns about z by π (τ 0 → 1)
    angle = np.unwrap(np.arctan2(heading[:, 1], heading[:, 0]))
    np.testing.assert_allclose(np.diff(angle), np.pi / 4, atol=1e-5)
    np.testing.assert_allclose(heading[:, 2], heading[0, 2], atol=1e-5)


def test_pretzel_arms_independent_and_c2():
    tau = np.array([[0.2, 0.7], [0.2, 0.1], [0.9, 0.7]])
    blobs = D.pretzel_blobs(tau).astype(np.float64)
    base, arm1, arm2 = (blobs[:, D.PRETZEL_PARTS == k] for k in range(3))
    np.testing.assert_allclose(base[0], base[1], atol=1e-6)
    np.testing.assert_allclose(arm1[0], arm1[1], atol=1e-6)  # τ2 changes only arm 2
    np.testing.assert_allclose(arm2[0], arm2[2], atol=1e-6)  # τ1 changes only arm 1
    assert not np.allclose(arm2[0], arm2[1]) and not np.allclose(arm1[0], arm1[2])
    c2 = np.array([-1.0, -1.0, 1.0])
    same = D.pretzel_blobs(np.array([[0.3, 0.3]])).astype(np.float64)[0]
    np.testing.assert_allclose(same[D.PRETZEL_PARTS == 2], same[D.PRETZEL_PARTS == 1] * c2, atol=1e-5)


@pytest.mark.parametrize("name", ["cat", "pretzel"])
def test_toy_datasets(name):
    ds = D.DATASETS[name](16, box_size=32, apix=5.0, seed=7)
    truth = ds.ground_truth
    k = 1 if name == "cat" else 2
    assert truth["state"].shape == (16, k) and truth["state_params"].shape == (16, k)
    assert truth["coords_a"].shape[0] == 16
    vols = truth["global/volumes"]
    assert len(vols) == len(truth["global/volume_states"])
    # the objects fit in the box: the sampled volumes hold their whole mass
    np.testing.assert_allclose(vols.sum((1, 2, 3)), truth["global/blob_weights"].sum(), rtol=2e-3)
    snr = 0.1 if name == "cat" else 1 / 30
    assert measured_snr(ds) == pytest.approx(snr, rel=0.05)
    again = D.DATASETS[name](16, box_size=32, apix=5.0, seed=7)
    np.testing.assert_array_equal(again.images, ds.images)


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


def test_dataset_table_holds_truth_and_star_skips_it(tmp_path, adk):
    from napari_cryohet.io.load_particles import load_dataset
    from napari_cryohet.io.star import read_star
    from napari_cryohet.io.write_particles import write_dataset_star

    np.testing.assert_array_equal(adk.table["truth_state"], adk.ground_truth["state"])  # int frame index
    assert adk.table["truth_state"].dtype == np.int64
    ds = D.pretzel(6, box_size=16, apix=12.0, n_volumes_per_arm=2, seed=2)
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
