"""The per-shell noise spectrum ``σ̄_y`` of eq. 5 (Kimanius, Jamali, Scheres 2022).

The structural-basis VAE (:mod:`napari_cryohet.core.vae_model`) divides the data by
``σ̄_y(ξ)``, the CTF-corrected root mean power of the images in each Fourier shell, so that
the decoder's Fourier coefficients have similar magnitude at every frequency and the
reconstruction term weighs each frequency by its signal-to-noise ratio (§4.3). This module
accumulates the shell sums over batches of images and turns them into ``σ̄_y``.
"""

from __future__ import annotations

import torch

from napari_cryohet.core.fft import fft2_centered

__all__ = ["shell_index_2d", "spectral_shell_sums", "spectral_normalisation"]


def shell_index_2d(d: int, *, device=None) -> torch.Tensor:
    """``(D, D)`` int64 Fourier shell ``round(|k|)`` (pixels of frequency) of each pixel."""
    f = torch.arange(d, device=device, dtype=torch.float64) - d // 2
    return torch.sqrt(f[None, :] ** 2 + f[:, None] ** 2).round().to(torch.int64)


def spectral_shell_sums(images: torch.Tensor, ctf: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-shell sums ``Σ_i Σ_{ξ∈B} |y_i(ξ)|²`` and ``Σ_i Σ_{ξ∈B} C²(ξ, κ_i)`` of eq. 5.

    Parameters
    ----------
    images
        ``(B, D, D)`` real images.
    ctf
        ``(B, D, D)`` CTF values on the centred grid, or ``None`` (CTF ≡ 1).

    Returns
    -------
    power, ctf2
        ``(D//2 + 2,)`` float64 shell sums (shell ``round(|k|)``; the last collects the
        corners).
    """
    d = images.shape[-1]
    n_shells = d // 2 + 2
    shells = shell_index_2d(d, device=images.device).clamp(max=n_shells - 1).reshape(-1)
    power = fft2_centered(images.to(torch.float64)).abs().pow(2).sum(0).reshape(-1)
    ctf2 = (ctf.to(torch.float64).pow(2).sum(0).reshape(-1) if ctf is not None
            else torch.full_like(power, float(images.shape[0])))
    zeros = torch.zeros(n_shells, dtype=torch.float64, device=images.device)
    return zeros.index_add(0, shells, power), zeros.index_add(0, shells, ctf2)


def spectral_normalisation(power: torch.Tensor, ctf2: torch.Tensor, *, eps: float = 1e-3) -> torch.Tensor:
    """``σ̄_y(ξ)`` of eq. 5 of Kimanius, Jamali, Scheres 2022 from the shell sums.

    ``σ̄_y² = Σ|y|² / (ΣC² + ε)`` with ``ε = eps · max(ΣC²)`` (relative, so it does not
    depend on the number of images). Returns ``(S,)`` float32, strictly positive.
    """
    ratio = power / (ctf2 + eps * ctf2.max().clamp(min=1e-30))
    floor = ratio[ratio > 0].min() if bool((ratio > 0).any()) else torch.tensor(1.0, dtype=ratio.dtype)
    return torch.sqrt(torch.clamp(ratio, min=float(floor))).to(torch.float32)
