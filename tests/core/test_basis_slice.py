"""Fused sparse basis slice (core/basis_slice.py) against dense oracles."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from napari_cryohet.core.basis_slice import (
    basis_from_volume,
    basis_to_volume,
    build_half_grid,
    build_slice_points,
    extract_basis_slices,
    rotate_slice_points,
)
from napari_cryohet.core.fft import fft2_centered, fft3_centered, ifft3_centered
from napari_cryohet.core.rotation import random_rotations
from napari_cryohet.core.slice import extract_central_slices


def _dense_reference(basis, weights, coords, lookup):
    """Assemble Σ_k s_k V^(k) on the extended grid, then torch grid_sample (trilinear)."""
    e = lookup.index.shape[0]
    sign = lookup.sign.to(basis.dtype)
    vals = basis[lookup.index]  # (E, E, E, 2, K+1)
    vals = torch.stack([vals[..., 0, :] * sign.abs()[..., None], vals[..., 1, :] * sign[..., None]], 0)
    volumes = torch.einsum("rzyxk,bk->brzyx", vals, weights)  # (B, 2, E, E, E)
    grid = (coords + lookup.offset) * (2.0 / (e - 1)) - 1.0  # (B, Q, 3) (x, y, z)
    out = F.grid_sample(volumes, grid[:, None, None], mode="bilinear", align_corners=True)  # (B, 2, 1, 1, Q)
    return torch.complex(out[:, 0, 0, 0], out[:, 1, 0, 0])


def _random_problem(d=8, k1=3, b=3, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    lookup = build_half_grid(d)
    pts = build_slice_points(d, dtype=dtype)
    rot = random_rotations(b, generator=g, dtype=dtype)
    coords = rotate_slice_points(pts.freqs, rot)
    basis = torch.randn(lookup.n_stored, 2, k1, generator=g, dtype=dtype)
    weights = torch.randn(b, k1, generator=g, dtype=dtype)
    return lookup, pts, rot, coords, basis, weights


def test_half_grid_counts_and_friedel_table():
    d = 16
    lookup = build_half_grid(d)
    # about half the sphere of radius R + 1
    expected = 0.5 * 4 / 3 * torch.pi * (d / 2 + 1) ** 3
    assert abs(lookup.n_stored - expected) / expected < 0.05
    o = lookup.offset
    # every stored voxel maps to itself with sign +1, its mate to it with sign -1
    c = lookup.coords
    assert torch.equal(lookup.index[c[:, 2] + o, c[:, 1] + o, c[:, 0] + o], torch.arange(lookup.n_stored))
    assert bool((lookup.sign[c[:, 2] + o, c[:, 1] + o, c[:, 0] + o] == 1).all())
    not_dc = (c != 0).any(-1)
    mate = -c[not_dc]
    assert torch.equal(lookup.index[mate[:, 2] + o, mate[:, 1] + o, mate[:, 0] + o],
                       torch.arange(lookup.n_stored)[not_dc])
    assert bool((lookup.sign[mate[:, 2] + o, mate[:, 1] + o, mate[:, 0] + o] == -1).all())
    # nothing outside the stored sphere has a sign
    assert int((lookup.sign != 0).sum()) == 2 * lookup.n_stored - 1


def test_forward_matches_dense_grid_sample():
    lookup, _, _, coords, basis, weights = _random_problem(d=10, k1=4, b=5)
    sparse = extract_basis_slices(basis, weights, coords, lookup)
    dense = _dense_reference(basis, weights, coords, lookup)
    torch.testing.assert_close(sparse, dense, rtol=1e-10, atol=1e-10)


def test_gradcheck_against_dense_reference():
    lookup, _, _, coords, basis, weights = _random_problem(d=6, k1=3, b=2)
    basis.requires_grad_(True)
    weights.requires_grad_(True)

    def sparse(bs, ws):
        return torch.view_as_real(extract_basis_slices(bs, ws, coords, lookup))

    def dense(bs, ws):
        return torch.view_as_real(_dense_reference(bs, ws, coords, lookup))

    # full Jacobian check on a tiny box (d = 4), random-projection check on d = 6
    small = _random_problem(d=4, k1=2, b=2, seed=5)
    bs, ws = small[4].requires_grad_(True), small[5].requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda b_, w_: torch.view_as_real(extract_basis_slices(b_, w_, small[3], small[0])), (bs, ws),
        eps=1e-6, atol=1e-7)
    assert torch.autograd.gradcheck(sparse, (basis, weights), eps=1e-6, atol=1e-7, fast_mode=True)
    # the analytic gradients equal the dense autograd path's gradients
    g = torch.randn_like(sparse(basis, weights))
    ga = torch.autograd.grad((sparse(basis, weights) * g).sum(), (basis, weights))
    gb = torch.autograd.grad((dense(basis, weights) * g).sum(), (basis, weights))
    for a, b in zip(ga, gb, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_backward_touches_only_neighbours():
    lookup, _, _, coords, basis, weights = _random_problem(d=16, k1=2, b=1, seed=3)
    basis.requires_grad_(True)
    out = extract_basis_slices(basis, weights, coords, lookup)
    out.abs().pow(2).sum().backward()
    touched = (basis.grad != 0).any(-1).any(-1)
    # a single central slice touches a thin slab: a small fraction of the stored sphere
    assert 0 < touched.float().mean() < 0.35


def test_slice_of_real_volume_is_hermitian_and_matches_core_slice():
    d = 16
    g = torch.Generator().manual_seed(1)
    vol = torch.randn(d, d, d, generator=g, dtype=torch.float64)
    vol_ft = fft3_centered(vol)
    lookup = build_half_grid(d)
    stored = basis_from_volume(vol_ft, lookup)  # (P,)
    # full disc of image samples (not only the half-disc) to check S(-k) = conj S(k)
    f = torch.arange(d, dtype=torch.float64) - d // 2
    ky, kx = torch.meshgrid(f, f, indexing="ij")
    keep = (kx**2 + ky**2) < (d / 2 - 1) ** 2
    freqs = torch.stack([kx[keep], ky[keep]], -1)
    rot = random_rotations(4, generator=g, dtype=torch.float64)
    coords = rotate_slice_points(freqs, rot)
    basis = torch.view_as_real(stored)[:, :, None]  # (P, 2, 1)
    out = extract_basis_slices(basis, torch.ones(4, 1, dtype=torch.float64), coords, lookup)
    # Friedel: the sample at -k is the conjugate of the sample at k
    key = {(int(a), int(b)): i for i, (a, b) in enumerate(freqs.tolist())}
    mates = torch.tensor([key[(-int(a), -int(b))] for a, b in freqs.tolist()])
    torch.testing.assert_close(out[:, mates], out.conj(), rtol=1e-12, atol=1e-9)
    # and equals the full-grid slice of core.slice inside the box
    full = extract_central_slices(vol_ft, rot)  # (B, D, D)
    ref = full[:, keep]
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-8)


def test_basis_to_volume_round_trip_is_real():
    d = 12
    g = torch.Generator().manual_seed(2)
    vol = torch.randn(d, d, d, generator=g, dtype=torch.float64)
    lookup = build_half_grid(d)
    # low-pass the volume so everything lies inside the stored sphere
    vol_ft = fft3_centered(vol)
    k = torch.arange(d) - d // 2
    r2 = k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2
    vol_ft = vol_ft * (r2 < (d // 2 - 1) ** 2)
    back = basis_to_volume(basis_from_volume(vol_ft, lookup), lookup, d)
    torch.testing.assert_close(back, vol_ft, rtol=1e-12, atol=1e-9)
    real = ifft3_centered(basis_to_volume(torch.randn(2, lookup.n_stored, dtype=torch.complex128,
                                                      generator=g), lookup, d))
    assert real.imag.abs().max() < 1e-12 * real.real.abs().max() + 1e-14


def test_half_disc_points_cover_image_spectrum():
    d = 16
    pts = build_slice_points(d)
    img = torch.randn(3, d, d, dtype=torch.float64)
    spec = fft2_centered(img).reshape(3, -1)
    f = torch.arange(d) - d // 2
    r2 = (f[None, :] ** 2 + f[:, None] ** 2).reshape(-1)
    disc = spec[:, r2 < (d / 2) ** 2]
    # Parseval over the disc: weighted half-disc power equals full-disc power
    half = (pts.weight * spec[:, pts.pixel_index].abs() ** 2).sum(-1)
    torch.testing.assert_close(half, (disc.abs() ** 2).sum(-1))


def test_bad_shapes_raise():
    lookup, _, _, coords, basis, weights = _random_problem(d=6, k1=3, b=2)
    with pytest.raises(ValueError, match="basis"):
        extract_basis_slices(basis[:-1], weights, coords, lookup)
    with pytest.raises(ValueError, match="weights"):
        extract_basis_slices(basis, weights[:, :2], coords, lookup)
    with pytest.raises(ValueError, match="coords"):
        extract_basis_slices(basis, weights, coords[:1], lookup)
    with pytest.raises(ValueError, match="even"):
        build_half_grid(7)
