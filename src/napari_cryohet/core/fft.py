"""Centred Fourier transforms and frequency grids (the one place the convention lives).

Convention
----------
Images ``(..., D, D)`` and volumes ``(..., D, D, D)`` are real-space arrays whose centre
(origin) is the pixel ``D // 2`` on every axis. Their transforms are *centred*: DC at
index ``D // 2`` (``fftshift`` applied before and after), so real-space index ``D//2``
and frequency index ``D//2`` both mean zero. With this convention a real, centrosymmetric
object has a real transform, and the Fourier-slice theorem holds without phase ramps.
Frequencies are in cycles per pixel, ``(i - D//2) / D`` for index ``i``; divide by ``apix``
for cycles per Å. Array axes are ordered (..., z, y, x) / (..., y, x); coordinate
vectors are (x, y, z).
"""

from __future__ import annotations

import torch

__all__ = [
    "fft2_centered",
    "ifft2_centered",
    "fft3_centered",
    "ifft3_centered",
    "fftfreq_grid_2d",
    "fftfreq_grid_3d",
    "radial_frequency_2d",
    "phase_shift_2d",
    "fourier_crop",
]


def fft2_centered(images: torch.Tensor) -> torch.Tensor:
    """Centred 2D FFT over the last two axes: ``fftshift(fft2(ifftshift(x)))``."""
    dims = (-2, -1)
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(images, dim=dims), dim=dims), dim=dims)


def ifft2_centered(spectra: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`fft2_centered` (complex output; take ``.real`` for real images)."""
    dims = (-2, -1)
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(spectra, dim=dims), dim=dims), dim=dims)


def fft3_centered(volumes: torch.Tensor) -> torch.Tensor:
    """Centred 3D FFT over the last three axes."""
    dims = (-3, -2, -1)
    return torch.fft.fftshift(torch.fft.fftn(torch.fft.ifftshift(volumes, dim=dims), dim=dims), dim=dims)


def ifft3_centered(spectra: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`fft3_centered` (complex output)."""
    dims = (-3, -2, -1)
    return torch.fft.fftshift(torch.fft.ifftn(torch.fft.ifftshift(spectra, dim=dims), dim=dims), dim=dims)


def _freqs(d: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    return (torch.arange(d, device=device, dtype=dtype) - d // 2) / d


def fftfreq_grid_2d(d: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """``(D, D, 2)`` centred frequencies (kx, ky) in cycles/pixel; ``[..., 0]`` varies along x."""
    f = _freqs(d, device=device, dtype=dtype)
    ky, kx = torch.meshgrid(f, f, indexing="ij")
    return torch.stack([kx, ky], -1)


def fftfreq_grid_3d(d: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """``(D, D, D, 3)`` centred frequencies (kx, ky, kz) in cycles/voxel, axes (z, y, x)."""
    f = _freqs(d, device=device, dtype=dtype)
    kz, ky, kx = torch.meshgrid(f, f, f, indexing="ij")
    return torch.stack([kx, ky, kz], -1)


def radial_frequency_2d(d: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """``(D, D)`` |k| in cycles/pixel on the centred grid."""
    return fftfreq_grid_2d(d, device=device, dtype=dtype).norm(dim=-1)


def phase_shift_2d(spectra: torch.Tensor, shifts_px: torch.Tensor) -> torch.Tensor:
    """Translate images by ``shifts_px`` via a Fourier phase ramp.

    Parameters
    ----------
    spectra
        ``(..., D, D)`` centred spectra (from :func:`fft2_centered`).
    shifts_px
        ``(..., 2)`` shifts (x, y) in pixels; positive x moves content to larger x index.

    Returns
    -------
    ``(..., D, D)`` spectra of the shifted images: ``F[x](k) · exp(-2πi k·s)``.
    """
    d = spectra.shape[-1]
    k = fftfreq_grid_2d(d, device=spectra.device, dtype=shifts_px.dtype)  # (D, D, 2)
    phase = -2 * torch.pi * (k[..., 0] * shifts_px[..., None, None, 0] + k[..., 1] * shifts_px[..., None, None, 1])
    return spectra * torch.polar(torch.ones_like(phase), phase)


def fourier_crop(spectra: torch.Tensor, d: int, *, dims: int = 2) -> torch.Tensor:
    """The central ``d``-wide block of the last ``dims`` axes of a centred spectrum.

    Cropping a centred (unnormalised) spectrum keeps every frequency below the new Nyquist
    unchanged: the image (or volume) it transforms back to is the same object sampled with
    pixels ``D/d`` times larger.
    """
    big = spectra.shape[-1]
    lo = big // 2 - int(d) // 2
    return spectra[(..., *(slice(lo, lo + int(d)),) * dims)]
