"""Noise spectrum of eq. 5 of Kimanius, Jamali, Scheres 2022 (core/vae_normalisation.py)."""

from __future__ import annotations

import numpy as np
import torch

from napari_cryohet.core.vae_normalisation import spectral_normalisation, spectral_shell_sums


def test_spectral_normalisation_of_white_noise_is_flat():
    """Eq. 5 on pure white noise (CTF ≡ 1): σ̄² = noise variance · D² in every shell."""
    d, var = 16, 4.0
    g = torch.Generator().manual_seed(0)
    images = 2.0 * torch.randn(400, d, d, generator=g, dtype=torch.float64)
    power, ctf2 = spectral_shell_sums(images, None)
    sigma = spectral_normalisation(power, ctf2, eps=0.0)
    expected = np.sqrt(var * d * d)
    inner = sigma[1 : d // 2].numpy()  # shells with enough pixels
    assert np.allclose(inner, expected, rtol=0.1)
    # with a CTF the estimate is CTF-corrected: halving the CTF² doubles σ̄²
    ctf = torch.full((400, d, d), np.sqrt(0.5), dtype=torch.float64)
    _, ctf2_half = spectral_shell_sums(images, ctf)
    sigma_half = spectral_normalisation(power, ctf2_half, eps=0.0)
    assert np.allclose((sigma_half[1 : d // 2] / sigma[1 : d // 2]).numpy(), np.sqrt(2.0), rtol=1e-6)
