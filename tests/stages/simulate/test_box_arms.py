"""The 2D box with two arms (seed 000 §3.1): geometry, projections, frames, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cryohet.core.frenet_2d import chain_angles_2d
from napari_cryohet.stages.simulate import box_arms as D


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
