"""Composite hyper-molecules (core/hypermolecule.py): exact projections, state bases, sharing."""

from __future__ import annotations

import math

import pytest
import torch

from napari_cryohet.core.hypermolecule import (
    Component,
    HyperMolecule,
    blob_grid,
    evaluate_state_basis,
    state_smoothness_gram,
)
from napari_cryohet.core.rotation import random_rotations

C2_Z = ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0))


def _pretzel_like(dtype=torch.float64) -> HyperMolecule:
    """A rigid base, an arm with a 1D state and an affine trajectory, and its C₂ copy."""
    comps = [
        Component("base", centre_a=(0.0, 0.0, 0.0), radius_a=10.0),
        Component("arm1", centre_a=(16.0, 0.0, 0.0), radius_a=7.0, state_dim=1, state_order=2, trajectory=True),
        Component("arm2", state_dim=1, state_order=2, trajectory=True, copy_of="arm1", copy_rotation=C2_Z),
    ]
    return HyperMolecule(comps, spacing_a=4.0, dtype=dtype)


def _random_params(model: HyperMolecule, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    params = {}
    for key, shape in model.parameter_shapes().items():
        scale = 1.0
        params[key] = scale * torch.randn(shape, generator=g, dtype=model.dtype)
    return params


def test_state_basis_orthonormal_on_unit_interval():
    """Gauss–Legendre quadrature of P_q P_q' over [0,1]^S is the identity (1D and 2D, both kinds)."""
    import numpy as np

    nodes, weights = np.polynomial.legendre.leggauss(40)
    x = torch.as_tensor((nodes + 1) / 2)
    w = torch.as_tensor(weights / 2)
    for kind in ("legendre", "cosine"):
        p = evaluate_state_basis(x[:, None], order=4, kind=kind)
        gram = p.T @ (w[:, None] * p)
        err1 = float((gram - torch.eye(5, dtype=gram.dtype)).abs().max())
        g1, g2 = torch.meshgrid(x, x, indexing="ij")
        p2 = evaluate_state_basis(torch.stack([g1.reshape(-1), g2.reshape(-1)], -1), order=3, kind=kind)
        w2 = (w[:, None] * w[None, :]).reshape(-1)
        gram2 = p2.T @ (w2[:, None] * p2)
        err2 = float((gram2 - torch.eye(p2.shape[1], dtype=gram2.dtype)).abs().max())
        print(f"{kind}: max |Gram - I| 1D {err1:.1e}, 2D ({p2.shape[1]} functions) {err2:.1e}")
        assert p2.shape[1] == 10
        assert err1 < 1e-10 and err2 < 1e-10


def test_smoothness_gram_legendre_degree_one():
    """∫ (d/dτ √3(2τ−1))² dτ = 12; the constant has no derivative; the matrix is PSD."""
    s = state_smoothness_gram(state_dim=1, order=3, kind="legendre")
    assert abs(float(s[1, 1]) - 12.0) < 1e-9
    assert float(s[0].abs().max()) < 1e-12
    assert float(torch.linalg.eigvalsh(s).min()) > -1e-9
    s2 = state_smoothness_gram(state_dim=2, order=2, kind="cosine")
    # P_{1,0} = √2 cos(πτ₁): ∫ (π √2 sin πτ₁)² = π²
    assert abs(float(s2[3, 3]) - math.pi**2) < 1e-9


def test_blob_grid_fills_the_ball():
    c = blob_grid((1.0, 2.0, 3.0), 10.0, 2.0)
    assert float((c - torch.tensor([1.0, 2.0, 3.0], dtype=c.dtype)).norm(dim=-1).max()) <= 10.0 + 1e-9
    # count ≈ ball volume / h³ within 10 %
    assert abs(len(c) - 4 / 3 * math.pi * 10**3 / 8) / (4 / 3 * math.pi * 10**3 / 8) < 0.1


@pytest.mark.parametrize("seed", [0, 1])
def test_projection_equals_real_space_line_sum(seed):
    """The closed-form projection of V(·, τ) at a random pose equals the sum along z of V
    evaluated directly (non-separable, blob by blob) at the rotated voxel grid Rᵀ (x, y, z)."""
    model = _pretzel_like()
    params = _random_params(model, seed)
    d, apix = 40, 2.0  # the molecule and 4σ tails fit in the box along every rotated axis
    g = torch.Generator().manual_seed(10 + seed)
    rot = random_rotations(1, generator=g, dtype=torch.float64)
    tau = torch.rand(1, model.state_dim, generator=g, dtype=torch.float64)
    closed = model.project(params, tau, rot, d=d, apix=apix)[0]  # (D, D)
    u = (torch.arange(d, dtype=torch.float64) - d // 2) * apix
    zz, yy, xx = torch.meshgrid(u, u, u, indexing="ij")
    pts = torch.stack([xx, yy, zz], -1).reshape(-1, 3) @ rot[0]  # row form of Rᵀ p
    dens = model.evaluate_density(params, pts, tau).reshape(d, d, d) * apix**3  # mass per voxel
    line_sum = dens.sum(0)
    rel = float((closed - line_sum).norm() / line_sum.norm())
    print(f"seed {seed}: |closed − Σ_z V(Rᵀ·)| / |Σ_z V| = {rel:.2e}")
    assert rel < 1e-8


def test_weight_sharing_copy_is_transformed_source():
    """The copy at state τ is the source at the same state mapped by the C₂ rotation
    (coefficients and trajectory shared): V_arm2(r, τ) = V_arm1(Rᵀ r, τ)."""
    model = _pretzel_like()
    params = _random_params(model, 3)
    assert set(params) == {"base.coefficients", "arm1.coefficients", "arm1.trajectory"}
    arm_alone = HyperMolecule([model.components[1]], spacing_a=4.0, dtype=torch.float64)
    t = torch.tensor([[0.3]], dtype=torch.float64)
    pos, mass = model.blobs(params, torch.tensor([[0.9, 0.3]], dtype=torch.float64))
    k_base = len(model.blob_centres("base"))
    k_arm = len(model.blob_centres("arm1"))
    copy_pos, copy_mass = pos[0, k_base + k_arm:], mass[0, k_base + k_arm:]
    src_pos, src_mass = arm_alone.blobs({k: params[k] for k in ("arm1.coefficients", "arm1.trajectory")}, t)
    rot = torch.tensor(C2_Z, dtype=torch.float64)
    assert torch.allclose(copy_pos, src_pos[0] @ rot.T, atol=1e-12)
    assert torch.allclose(copy_mass, src_mass[0], atol=1e-12)


def test_project_batched_and_volume_mass():
    """Batched projections equal one-by-one ones; a voxelised V(·, τ) has the mass Σ masses."""
    model = _pretzel_like()
    params = _random_params(model, 5)
    g = torch.Generator().manual_seed(6)
    rot = random_rotations(3, generator=g, dtype=torch.float64)
    tau = torch.rand(3, 2, generator=g, dtype=torch.float64)
    batch = model.project(params, tau, rot, d=40, apix=2.0)
    single = torch.stack([model.project(params, tau[i:i + 1], rot[i:i + 1], d=40, apix=2.0)[0] for i in range(3)])
    assert torch.allclose(batch, single, atol=1e-10)
    vol = model.evaluate_volume(params, tau[:1], d=40, apix=2.0)
    _, mass = model.blobs(params, tau[:1])
    assert abs(float(vol.sum()) - float(mass.sum())) < 1e-6 * float(mass.abs().sum())
    # and the projection of the voxelised volume at the identity pose is its z-sum
    ident = torch.eye(3, dtype=torch.float64)[None]
    assert torch.allclose(model.project(params, tau[:1], ident, d=40, apix=2.0)[0], vol[0].sum(0), atol=1e-9)


def test_bad_components_are_refused():
    with pytest.raises(ValueError, match="copy_of"):
        HyperMolecule([Component("a", copy_of="b")], spacing_a=2.0)
    with pytest.raises(ValueError, match="proper rotation"):
        HyperMolecule([Component("a"), Component("b", copy_of="a", copy_rotation=((1, 0, 0), (0, 1, 0), (0, 0, -1)))],
                      spacing_a=2.0)
    model = _pretzel_like()
    with pytest.raises(ValueError, match=r"tau must have shape \(B, 2\)"):
        model.blobs(model.init_params(), torch.zeros(3, 1))
