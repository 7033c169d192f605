"""Gaussian-atom densities on a grid: separable evaluation equals the direct sum; mass kept."""

import math

import pytest
import torch

from napari_cryohet.core.atoms import gaussian_density_3d


def _direct(coords, d, apix, sigma, weights):
    u = (torch.arange(d, dtype=torch.float64) - d // 2) * apix
    zz, yy, xx = torch.meshgrid(u, u, u, indexing="ij")
    grid = torch.stack([xx, yy, zz], -1)  # (D, D, D, 3) (x, y, z) in Å
    vol = torch.zeros(d, d, d, dtype=torch.float64)
    for r, w in zip(coords, weights, strict=True):
        vol += w * torch.exp(-((grid - r) ** 2).sum(-1) / (2 * sigma**2))
    return vol * apix**3 / (2 * math.pi * sigma**2) ** 1.5


def test_separable_equals_direct_sum():
    g = torch.Generator().manual_seed(0)
    coords = torch.randn(7, 3, dtype=torch.float64, generator=g) * 5
    weights = torch.rand(7, dtype=torch.float64, generator=g) + 0.5
    vol = gaussian_density_3d(coords, d=16, apix=1.5, sigma_a=2.0, weights=weights, atom_chunk=3)
    assert vol.shape == (16, 16, 16) and vol.dtype == torch.float64
    assert torch.allclose(vol, _direct(coords, 16, 1.5, 2.0, weights), atol=1e-12)


def test_mass_and_position():
    coords = torch.tensor([[3.0, -6.0, 9.0]])
    vol = gaussian_density_3d(coords, d=32, apix=1.5, sigma_a=3.0, weights=torch.tensor([2.5]))
    assert abs(float(vol.sum()) - 2.5) < 1e-4  # voxels hold mass: the sum is the weight
    peak = torch.nonzero(vol == vol.max())[0]  # (z, y, x) index
    assert peak.tolist() == [16 + 6, 16 - 4, 16 + 2]


def test_batched_and_per_atom_sigma():
    g = torch.Generator().manual_seed(1)
    coords = torch.randn(2, 5, 3, generator=g) * 4
    vols = gaussian_density_3d(coords, d=12, apix=2.0, sigma_a=torch.full((5,), 2.5))
    assert vols.shape == (2, 12, 12, 12)
    assert torch.allclose(vols[1], gaussian_density_3d(coords[1], d=12, apix=2.0, sigma_a=2.5), atol=1e-6)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="coords_a"):
        gaussian_density_3d(torch.zeros(5, 2), d=8, apix=1.0, sigma_a=1.0)
    with pytest.raises(ValueError, match="sigma_a"):
        gaussian_density_3d(torch.zeros(5, 3), d=8, apix=1.0, sigma_a=0.0)
    with pytest.raises(ValueError, match="apix"):
        gaussian_density_3d(torch.zeros(5, 3), d=8, apix=0.0, sigma_a=1.0)
