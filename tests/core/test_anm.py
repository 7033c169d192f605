"""Anisotropic network model: Hessian against finite differences of the spring energy,
rigid-body modes removed, orthonormal modes, a rod's slowest mode bends it."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryohet.core.anm import anm_hessian, anm_modes, rigid_body_basis


def _helix(n: int) -> np.ndarray:
    """α-helix-like Cα chain along z: radius 2.3 Å, 100° and 1.5 Å per residue (3.83 Å bonds)."""
    k = np.arange(n)
    theta = np.deg2rad(100.0) * k
    return np.stack([2.3 * np.cos(theta), 2.3 * np.sin(theta), 1.5 * k], axis=1)


def _spring_energy(x: np.ndarray, ref: np.ndarray, cutoff_a: float) -> float:
    d0 = np.linalg.norm(ref[:, None] - ref[None], axis=-1)
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    contact = np.triu(d0 < cutoff_a, k=1)
    return 0.5 * float(((d - d0)[contact] ** 2).sum())


def test_hessian_matches_finite_differences_of_spring_energy():
    """H = ∂²U/∂x² at the reference for U = ½ Σ (|r_i − r_j| − d_ij)² (Atilgan et al. 2001)."""
    rng = np.random.default_rng(0)
    ref = _helix(8) + rng.normal(0, 0.3, (8, 3))
    h = anm_hessian(ref, cutoff_a=9.0)
    flat = ref.ravel()
    eps = 1e-4
    numeric = np.empty_like(h)

    def energy(a: int, b: int, da: float, db: float) -> float:
        y = flat.copy()
        y[a] += da
        y[b] += db
        return _spring_energy(y.reshape(-1, 3), ref, 9.0)

    for a in range(len(flat)):
        for b in range(len(flat)):
            numeric[a, b] = (energy(a, b, eps, eps) - energy(a, b, eps, -eps) - energy(a, b, -eps, eps)
                             + energy(a, b, -eps, -eps)) / (4 * eps**2)
    err = np.abs(h - numeric).max()
    print(f"Hessian vs finite differences: max |ΔH| = {err:.2e} (max |H| = {np.abs(h).max():.2f})")
    assert err < 1e-5
    np.testing.assert_allclose(h, h.T, atol=1e-12)


def test_rigid_body_modes_are_the_six_zero_modes_and_are_removed():
    ref = _helix(40)
    h = anm_hessian(ref)
    rigid = rigid_body_basis(ref).reshape(6, -1)  # (6, 3M)
    np.testing.assert_allclose(rigid @ rigid.T, np.eye(6), atol=1e-12)
    assert np.abs(h @ rigid.T).max() < 1e-10  # translations and rotations cost no energy
    spectrum = np.linalg.eigvalsh(h)
    n_zero = int((np.abs(spectrum) < 1e-8).sum())
    modes = anm_modes(ref, n_modes=5)
    print(f"zero eigenvalues: {n_zero}; lowest non-trivial: {np.round(modes.eigenvalues, 5)}")
    assert n_zero == 6
    np.testing.assert_allclose(modes.eigenvalues, spectrum[6:11], rtol=1e-8, atol=1e-12)
    v = modes.vectors.reshape(5, -1)
    assert np.abs(v @ rigid.T).max() < 1e-8  # no translation or rotation left in the modes
    np.testing.assert_allclose(h @ v.T, v.T * modes.eigenvalues, atol=1e-9)  # eigenpairs of H


def test_modes_are_orthonormal_and_amplitudes_are_rmsd():
    rng = np.random.default_rng(1)
    ref = _helix(30) + rng.normal(0, 0.5, (30, 3))
    modes = anm_modes(ref, n_modes=6)
    v = modes.vectors.reshape(6, -1)
    np.testing.assert_allclose(v @ v.T, np.eye(6), atol=1e-10)
    assert np.all(np.diff(modes.eigenvalues) >= 0) and modes.eigenvalues[0] > 0
    c = np.array([2.0, -1.0, 0.5, 0.0, 0.0, 1.5])
    moved = modes.displace(c)
    rmsd = np.sqrt(((moved - ref) ** 2).sum(axis=1).mean())
    assert rmsd == pytest.approx(np.linalg.norm(c), rel=1e-10)
    np.testing.assert_allclose(modes.amplitudes_of(moved), c, atol=1e-10)


def _axis_bend_a(x: np.ndarray) -> float:
    """Largest distance of the helix axis (18-residue = 5-turn running mean) from its best line."""
    w = np.ones(18) / 18
    axis = np.stack([np.convolve(x[:, i], w, "valid") for i in range(3)], axis=1)
    c = axis - axis.mean(axis=0)
    direction = np.linalg.svd(c)[2][0]
    return float(np.linalg.norm(c - np.outer(c @ direction, direction), axis=1).max())


def test_slowest_mode_of_a_rod_bends_it():
    """A long helix is an elastic rod: its two slowest modes are the (degenerate) bends,
    transverse to the axis, curving the axis; stretching it would cost far more."""
    rod = _helix(60)
    modes = anm_modes(rod, n_modes=3)
    assert _axis_bend_a(rod) < 1e-9
    for k in (0, 1):
        moved = modes.displace(np.eye(3)[k] * 3.0)  # 3 Å RMSD along mode k
        d = moved - rod
        transverse = (d[:, :2] ** 2).sum() / (d[:, 2] ** 2).sum()
        print(f"mode {k}: λ = {modes.eigenvalues[k]:.5f}, axis bends by {_axis_bend_a(moved):.2f} Å, "
              f"transverse/axial = {transverse:.0f}")
        assert _axis_bend_a(moved) > 2.0
        assert transverse > 10.0
    assert modes.eigenvalues[1] == pytest.approx(modes.eigenvalues[0], rel=0.01)  # bends in x and in y


def test_bad_input():
    with pytest.raises(ValueError, match="falls apart"):
        anm_modes(np.concatenate([_helix(10), _helix(10) + [100.0, 0.0, 0.0]]), n_modes=2)
    with pytest.raises(ValueError, match="n_modes"):
        anm_modes(_helix(5), n_modes=10)
    with pytest.raises(ValueError, match="coords_a"):
        anm_hessian(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="same position"):
        anm_hessian(np.zeros((4, 3)))
