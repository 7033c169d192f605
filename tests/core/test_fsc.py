"""FSC: 1 with itself, ~0 for independent noise, resolution interpolated at the threshold."""

import math

import numpy as np
import pytest
import torch

from napari_cryohet.core.fsc import fourier_shell_correlation, resolution_at


def test_fsc_with_itself_is_one():
    g = torch.Generator().manual_seed(0)
    vol = torch.randn(24, 24, 24, generator=g)
    freq, fsc = fourier_shell_correlation(vol, vol)
    assert freq.shape == fsc.shape == (13,)
    assert float(freq[-1]) == 0.5 and float(freq[1]) == 1 / 24
    assert torch.allclose(fsc, torch.ones_like(fsc), atol=1e-12)
    # scale invariant, sign sensitive
    _, fsc_scaled = fourier_shell_correlation(vol, 3.0 * vol)
    _, fsc_neg = fourier_shell_correlation(vol, -vol)
    assert torch.allclose(fsc_scaled, torch.ones_like(fsc), atol=1e-12)
    assert torch.allclose(fsc_neg, -torch.ones_like(fsc), atol=1e-12)


def test_independent_noise_is_near_zero():
    rng = np.random.default_rng(1)
    d = 32
    a, b = rng.standard_normal((2, d, d, d))
    freq, fsc = fourier_shell_correlation(a, b)  # numpy in, numpy out
    assert isinstance(fsc, np.ndarray)
    # shell s holds ~4π s² voxels (half independent, Hermitian): std of the FSC ≈ 1/sqrt(2π s²)
    s = np.arange(len(fsc))
    bound = 4.0 / np.sqrt(2 * np.pi * np.maximum(s, 1) ** 2)
    assert np.all(np.abs(fsc[2:]) < bound[2:])
    # the shell mean of the FSC is ~N(0, mean σ_s² / S): 3 standard deviations
    sigma_mean = np.sqrt(np.mean(1.0 / (2 * np.pi * s[2:] ** 2)) / len(s[2:]))
    assert abs(fsc[2:].mean()) < 3.0 * sigma_mean


def test_resolution_interpolates_crossing():
    freq = np.arange(9) / 16.0
    fsc = np.array([1.0, 0.99, 0.95, 0.8, 0.6, 0.3, 0.1, 0.05, 0.0])
    # 0.143 between shells 5 (0.3) and 6 (0.1): t = (0.3 - 0.143) / 0.2 = 0.785
    f_cross = (5 + 0.785) / 16
    assert math.isclose(resolution_at(freq, fsc, apix=2.0), 2.0 / f_cross, rel_tol=1e-12)
    f_half = (4 + (0.6 - 0.5) / 0.3) / 16
    assert math.isclose(resolution_at(freq, fsc, apix=2.0, threshold=0.5), 2.0 / f_half, rel_tol=1e-12)
    # never crosses: Nyquist-limited; torch inputs accepted
    flat = torch.ones(9, dtype=torch.float64)
    assert resolution_at(torch.as_tensor(freq), flat, apix=1.5) == pytest.approx(3.0)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="same shape"):
        fourier_shell_correlation(np.zeros((8, 8, 8)), np.zeros((6, 6, 6)))
    with pytest.raises(ValueError, match="apix"):
        resolution_at(np.arange(4) / 8, np.ones(4), apix=0.0)
