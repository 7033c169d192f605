"""The data side of the chain fit's misfit (eq. 2.9–2.11 of Esteve-Yagüe et al. 2022).

:class:`FourierTargets` holds each particle's CTF and its image spectrum with the shift
undone, so a gradient step costs one real FFT of the predicted projections;
:func:`predict_images` is the forward model of eq. 2.10 for a fitted result (what the
widget shows beside each particle image).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from napari_cryohet.core.ctf import compute_ctf_2d
from napari_cryohet.core.fft import fft2_centered, fourier_crop, phase_shift_2d
from napari_cryohet.core.projection import apply_ctf_and_shift, project_gaussian_atoms
from napari_cryohet.stages.protocol import dataset_indices

if TYPE_CHECKING:
    from napari_cryohet.core.particle_dataset import ParticleDataset
    from napari_cryohet.stages.chainfit.result import ChainFitResult

__all__ = ["FourierTargets", "predict_images"]


class FourierTargets:
    """Per-particle CTF and spectra of the observed images with their shifts undone.

    The misfit ``‖IFFT(CTF · S · FFT(P)) − Y‖²`` equals ``‖CTF · FFT(P) − S⁻¹ FFT(Y)‖² / D²``
    (Parseval; the shift ``S`` is a unit-modulus phase ramp), so the CTF and the
    un-shifted image spectra are computed once — for the whole stack when it fits in
    ``max_bytes``, else batch by batch — and a gradient step needs one real FFT of the
    predicted projections. Both are stored in ``torch.fft.rfft2`` layout (uncentred, half
    spectrum; the centring phase ``(−1)^(kx+ky)`` is folded into the targets), with
    :attr:`weights` counting the Hermitian twins of the half spectrum.
    ``clean=True`` uses ``ground_truth["clean_images"]`` when present (test scoring, §3.1).
    With ``fit_box_size`` only the central ``D'²`` frequencies are kept (Fourier crop); the
    projections they are compared with are sampled on the matching ``D'`` grid, whose DFT
    has the same physical frequencies and, for mass-per-pixel images, the same scale.
    """

    def __init__(self, dataset: ParticleDataset, device: torch.device, dtype: torch.dtype,
                 max_bytes: int = 1 << 30, fit_box_size: int | None = None):
        self.dataset, self.device, self.dtype = dataset, device, dtype
        self.clean = (dataset.ground_truth or {}).get("clean_images")
        n, self.full_d = len(dataset), dataset.box_size
        self.d = d = self.full_d if fit_box_size is None else int(fit_box_size)
        half = d // 2 + 1
        self.weights = torch.full((d, half), 2.0, dtype=dtype, device=device)
        self.weights[:, 0] = 1.0
        self.weights[:, -1] = 1.0
        k = torch.arange(d, device=device)
        self._sign = ((-1.0) ** (k[:, None] + k[None, :half])).to(dtype)  # centring phase, rfft layout
        self.shifts = None
        if dataset.shifts_a is not None and np.any(np.asarray(dataset.shifts_a) != 0):
            self.shifts = torch.as_tensor(np.asarray(dataset.shifts_a), dtype=dtype, device=device)
        self.cached: dict[bool, tuple[torch.Tensor, torch.Tensor]] = {}
        per_particle = d * half * 12 * (2 if self.clean is not None else 1)
        if n * per_particle <= max_bytes:
            every = np.arange(n)
            for clean in ((False, True) if self.clean is not None else (False,)):
                parts = [self._compute(every[s:s + 512], clean) for s in range(0, n, 512)]
                self.cached[clean] = (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))

    def _compute(self, idx: np.ndarray, clean: bool) -> tuple[torch.Tensor, torch.Tensor]:
        full_d, d, apix = self.full_d, self.d, float(self.dataset.apix)
        half = d // 2 + 1
        if clean and self.clean is not None:
            images = np.asarray(self.clean[idx], dtype=np.float32)
        else:
            images = self.dataset.get_images(np.asarray(idx))
        spectra = fft2_centered(torch.as_tensor(images, dtype=self.dtype, device=self.device))  # (B, D, D)
        if self.shifts is not None:
            spectra = phase_shift_2d(spectra, self.shifts[torch.as_tensor(idx, device=self.device)] / apix)
        spectra = fourier_crop(spectra, d)  # same physical frequencies
        spectra = torch.fft.ifftshift(spectra, dim=(-2, -1))[..., :half] * self._sign  # (B, D', D'/2+1)
        if self.dataset.ctf is None:
            ctf = torch.ones(len(idx), d, half, dtype=self.dtype, device=self.device)
        else:
            ctf = compute_ctf_2d(d, apix * full_d / d, device=self.device,
                                 **self.dataset.ctf.to_torch(indices=idx, device=self.device, dtype=self.dtype))
            ctf = torch.fft.ifftshift(ctf.to(self.dtype), dim=(-2, -1))[..., :half].contiguous()
        return ctf, spectra

    def __call__(self, idx: np.ndarray, clean: bool) -> tuple[torch.Tensor, torch.Tensor]:
        key = bool(clean and self.clean is not None)
        if key in self.cached:
            ctf, spectra = self.cached[key]
            t = torch.as_tensor(idx, device=self.device)
            return ctf[t], spectra[t]
        return self._compute(idx, key)

    @property
    def kept_fraction(self) -> float:
        """The share ``(D'/D)²`` of the image's Fourier components the misfit keeps.

        White noise of variance ``σ²`` per pixel adds ``σ² (D'/D)²`` to :meth:`misfit`, not
        ``σ²``: divide a misfit made of noise by this to get the noise variance per pixel.
        """
        return (self.d / self.full_d) ** 2

    def misfit(self, images: torch.Tensor, idx: np.ndarray, clean: bool) -> torch.Tensor:
        """Per-pixel mean square of ``CTF · S · images − Y`` over the batch (eq. 2.11 / D²)."""
        ctf, target = self(idx, clean)
        residual = torch.fft.rfft2(images) * ctf - target  # (B, D', D'/2+1)
        power = (residual.real**2 + residual.imag**2) * self.weights
        return power.sum() / (images.shape[0] * self.full_d**4)


def predict_images(result: ChainFitResult, dataset: ParticleDataset, indices: Any, *,
                   apply_ctf: bool = True) -> np.ndarray:
    """CTF-filtered, shifted projections of the fitted chains of particles ``indices``.

    ``indices`` are positions in ``dataset``; the fit's rows are matched to them by particle
    index (``ParticleMismatchError`` for particles the fit did not cover). ``(n, D, D)``
    float32 — what the fit predicts for each particle image (eq. 2.10).
    """
    idx = np.atleast_1d(np.arange(len(dataset))[indices])
    coords = torch.as_tensor(result.chains(result.rows(dataset_indices(dataset)[idx])))
    sigma_a = result.config.get("sigma_a") or float((dataset.ground_truth or {}).get("global/sigma_a", 3.0))
    rot = torch.as_tensor(np.asarray(dataset.rotations)[idx], dtype=torch.float32)
    images = project_gaussian_atoms(coords, rot, d=dataset.box_size, apix=dataset.apix, sigma_a=sigma_a)
    images = images * float(result.config.get("amplitude", 1.0))
    if apply_ctf:
        shifts = None if dataset.shifts_a is None else torch.as_tensor(np.asarray(dataset.shifts_a)[idx])
        ctf = None if dataset.ctf is None else dataset.ctf.to_torch(indices=idx)
        images = apply_ctf_and_shift(images, apix=dataset.apix, ctf=ctf, shifts_a=shifts)
    return images.numpy().astype(np.float32)
