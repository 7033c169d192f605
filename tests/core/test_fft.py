"""Centred FFT helpers: DC at the centre, round trips, known shifts recovered."""

import torch

from napari_cryohet.core.fft import (
    fft2_centered,
    fft3_centered,
    fftfreq_grid_2d,
    fftfreq_grid_3d,
    ifft2_centered,
    ifft3_centered,
    phase_shift_2d,
    radial_frequency_2d,
)


def _blob(d, centre_xy, sigma=1.5, dtype=torch.float64):
    u = torch.arange(d, dtype=dtype) - d // 2
    yy, xx = torch.meshgrid(u, u, indexing="ij")
    return torch.exp(-((xx - centre_xy[0]) ** 2 + (yy - centre_xy[1]) ** 2) / (2 * sigma**2))


def _centroid(img):
    d = img.shape[-1]
    u = torch.arange(d, dtype=img.dtype) - d // 2
    mass = img.sum((-2, -1))
    return torch.stack([(img * u).sum((-2, -1)) / mass, (img * u[:, None]).sum((-2, -1)) / mass], -1)


def test_dc_at_centre_2d_and_3d():
    d = 16
    spec2 = fft2_centered(torch.ones(d, d, dtype=torch.float64))
    assert abs(spec2[d // 2, d // 2] - d * d) < 1e-9
    spec2[d // 2, d // 2] = 0
    assert spec2.abs().max() < 1e-9
    spec3 = fft3_centered(torch.ones(d, d, d, dtype=torch.float64))
    assert abs(spec3[d // 2, d // 2, d // 2] - d**3) < 1e-6
    spec3[d // 2, d // 2, d // 2] = 0
    assert spec3.abs().max() < 1e-6


def test_centrosymmetric_object_has_real_transform():
    d = 16
    img = _blob(d, (0.0, 0.0))
    assert fft2_centered(img).imag.abs().max() < 1e-10
    vol = img[None] * img[:, :1, None]  # separable, centred at D//2
    assert fft3_centered(vol).imag.abs().max() < 1e-9


def test_round_trips():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 12, 12, dtype=torch.float64, generator=g)
    assert torch.allclose(ifft2_centered(fft2_centered(x)).real, x, atol=1e-12)
    v = torch.randn(10, 10, 10, dtype=torch.float64, generator=g)
    assert torch.allclose(ifft3_centered(fft3_centered(v)).real, v, atol=1e-12)


def test_frequency_grids():
    k = fftfreq_grid_2d(8)
    assert k.shape == (8, 8, 2)
    assert k[4, 4].abs().max() == 0  # DC at D//2
    assert float(k[4, 6, 0]) == 2 / 8 and float(k[6, 4, 1]) == 2 / 8  # [..., 0] varies along x
    k3 = fftfreq_grid_3d(8)
    assert float(k3[1, 4, 4, 2]) == -3 / 8 and float(k3[4, 4, 7, 0]) == 3 / 8
    assert torch.allclose(radial_frequency_2d(8), k.norm(dim=-1))


def test_known_shift_is_recovered():
    d = 32
    img = _blob(d, (0.0, 0.0))[None].expand(2, d, d)
    shifts = torch.tensor([[3.0, -2.0], [-1.5, 4.25]], dtype=torch.float64)
    moved = ifft2_centered(phase_shift_2d(fft2_centered(img), shifts)).real
    assert torch.allclose(_centroid(moved), shifts, atol=1e-6)
    # integer shift equals a roll of the array
    rolled = torch.roll(img[0], shifts=(-2, 3), dims=(0, 1))
    assert torch.allclose(moved[0], rolled, atol=1e-10)
