"""The posterior of a composite hyper-molecule (eq. 29 of 001_e1fd27914a9da292.txt).

``P(θ, {R_i, τ_i, s_i, a_i} | {Y_i}) ∝ P(θ) Π_i P(Y_i | R_i, τ_i, s_i, a_i, V[θ]) P(s_i) P(a_i)``

- likelihood (eq. 9–10): ``log P(Y_i | ·) = −Σ_k |Ŷ_i[k] − Î_i[k]|² / 2σ_k²`` over the full
  centred FFT plane (:mod:`napari_cryohet.core.fft`) with the forward model
  ``Î_i = a_i · CTF_i · exp(2πi k·s_i/apix) · FFT(Σ_z V(R_iᵀ ·, τ_i))`` (eq. 22;
  :func:`~napari_cryohet.core.projection.apply_ctf_and_shift`'s shift convention).
  ``σ_k²`` is ``E|FFT(noise)[k]|²``; for white noise of pixel variance ``v`` it is ``D² v``
  and the sum equals the real-space ``−Σ_pixels (y − x)² / 2v`` (Parseval), which is also
  eq. 10 with Hermitian pairs counted twice and σ² the variance of the complex value.
  A frequency mask ``|k| ≤ k_max`` restricts the sum (frequency marching, 001 §5);
- priors: ``−|θ_coeff|²/2s_a² − |θ_traj|²/2s_t² − λ·smoothness`` (L2 prior and eq. 24,
  :meth:`~napari_cryohet.core.hypermolecule.HyperMolecule.smoothness_penalty`); shifts
  ``N(0, s_shift²)`` per axis; contrast ``N(a₀, s_c²)`` restricted to ``a > 0``; states
  uniform on ``[0, 1]^S``; poses uniform (Haar).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from napari_cryohet.core.ctf import compute_ctf_2d
from napari_cryohet.core.fft import fft2_centered, phase_shift_2d, radial_frequency_2d
from napari_cryohet.core.hypermolecule import HyperMolecule
from napari_cryohet.core.local_refine import background_noise_variance

__all__ = [
    "HyperMoleculePriors",
    "ParticleVariables",
    "ImageData",
    "flatten_params",
    "unflatten_params",
    "frequency_mask",
    "projection_spectra",
    "shift_and_scale",
    "image_log_likelihood",
    "log_prior_particles",
    "log_prior_theta",
    "particle_log_posterior",
    "theta_log_posterior_and_grad",
]


@dataclass(frozen=True)
class HyperMoleculePriors:
    """Prior widths of eq. 29 (units in the names; masses in the units of the blob coefficients)."""

    coefficient_std: float = 1.0
    trajectory_std_a: float = 10.0
    smoothness_weight: float = 0.0
    shift_std_a: float = 5.0
    contrast_mean: float = 1.0
    contrast_std: float = 0.3


@dataclass
class ParticleVariables:
    """Per-particle latent variables: ``tau (N, S)`` in [0, 1], ``rotations (N, 3, 3)``,
    ``shifts_a (N, 2)`` (rlnOriginX/YAngst convention) and ``contrast (N,)``."""

    tau: torch.Tensor
    rotations: torch.Tensor
    shifts_a: torch.Tensor
    contrast: torch.Tensor

    def __getitem__(self, idx) -> ParticleVariables:
        return ParticleVariables(*(getattr(self, f.name)[idx] for f in fields(self)))

    def clone(self) -> ParticleVariables:
        return ParticleVariables(*(getattr(self, f.name).clone() for f in fields(self)))

    def update(self, idx: torch.Tensor, other: ParticleVariables) -> None:
        """Write ``other`` (rows for ``idx``) into these variables in place."""
        for f in fields(self):
            getattr(self, f.name)[idx] = getattr(other, f.name).to(getattr(self, f.name))


@dataclass
class ImageData:
    """Particle images in Fourier space with their CTFs and noise spectrum.

    ``spectra (N, D, D)`` complex (:func:`~napari_cryohet.core.fft.fft2_centered` of the
    images), ``ctf (N, D, D)`` real or ``None``, ``noise_var (D, D)`` = ``σ_k²``, ``apix`` Å.
    """

    spectra: torch.Tensor
    ctf: torch.Tensor | None
    noise_var: torch.Tensor
    apix: float

    @property
    def d(self) -> int:
        return self.spectra.shape[-1]

    @classmethod
    def from_images(cls, images: torch.Tensor, *, apix: float, ctf: dict[str, torch.Tensor] | None = None,
                    noise_var: torch.Tensor | float | None = None) -> ImageData:
        """Transform ``images (N, D, D)``; ``ctf`` a dict of ``(N,)`` parameters keyed like
        :func:`~napari_cryohet.core.ctf.compute_ctf_2d`; ``noise_var`` ``σ_k²`` (a ``(D, D)``
        spectrum or a float), by default white noise at the mean background variance of
        the pixels outside the inscribed circle (``D² v``)."""
        if images.dim() != 3 or images.shape[-1] != images.shape[-2]:
            raise ValueError(f"images must have shape (N, D, D), got {tuple(images.shape)}")
        d = images.shape[-1]
        ctf_grid = None
        if ctf is not None:
            params = {k: torch.as_tensor(v, device=images.device, dtype=images.dtype) for k, v in ctf.items()}
            ctf_grid = compute_ctf_2d(d, apix, device=images.device, **params).expand(images.shape[0], d, d)
        if noise_var is None:
            noise_var = background_noise_variance(images).mean()
        var = torch.as_tensor(noise_var, device=images.device, dtype=images.dtype)
        if bool((var <= 0).any()):
            raise ValueError("noise_var must be positive (the per-frequency noise variance σ_k² of eq. 9)")
        return cls(fft2_centered(images), ctf_grid, var.expand(d, d).clone(), float(apix))


def flatten_params(params: dict[str, torch.Tensor]) -> torch.Tensor:
    """``(n,)`` concatenation of θ in key order (for MALA)."""
    return torch.cat([params[k].reshape(-1) for k in params])


def unflatten_params(flat: torch.Tensor, shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`flatten_params` for ``shapes`` (:meth:`HyperMolecule.parameter_shapes`)."""
    out, start = {}, 0
    for key, shape in shapes.items():
        n = 1
        for s in shape:
            n *= s
        out[key] = flat[start:start + n].reshape(shape)
        start += n
    if start != flat.shape[-1]:
        raise ValueError(f"θ has {flat.shape[-1]} values, the model expects {start}")
    return out


def frequency_mask(d: int, apix: float, max_frequency_per_a: float | None = None, *,
                   device=None) -> torch.Tensor:
    """``(D, D)`` bool: frequencies with ``|k| ≤ max_frequency_per_a`` (cycles/Å; all if ``None``)."""
    k = radial_frequency_2d(d, device=device, dtype=torch.float64) / apix
    if max_frequency_per_a is None:
        return torch.ones(d, d, dtype=torch.bool, device=device)
    return k <= max_frequency_per_a


def projection_spectra(model: HyperMolecule, params: dict[str, torch.Tensor], tau: torch.Tensor,
                       rotations: torch.Tensor, *, d: int, apix: float,
                       ctf: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, D, D)`` complex ``CTF · FFT(Σ_z V(Rᵀ ·, τ))``: everything but shift and contrast,
    so those can be re-proposed without projecting again (001 §6)."""
    spectra = fft2_centered(model.project(params, tau, rotations, d=d, apix=apix))
    return spectra if ctf is None else spectra * ctf.to(spectra.real.dtype)


def shift_and_scale(spectra: torch.Tensor, shifts_a: torch.Tensor, contrast: torch.Tensor, *,
                    apix: float) -> torch.Tensor:
    """``a · exp(2πi k·s/apix) · spectra``: shift by ``−shifts_a`` (RELION origin) and contrast."""
    shifted = phase_shift_2d(spectra, -shifts_a.to(spectra.real.dtype) / apix)
    return shifted * contrast.to(spectra.real.dtype)[:, None, None]


def image_log_likelihood(predicted: torch.Tensor, observed: torch.Tensor, noise_var: torch.Tensor,
                         mask: torch.Tensor | None = None) -> torch.Tensor:
    """``(B,)`` ``−Σ_k |Ŷ − Î|² / 2σ_k²`` (eq. 10) over ``mask`` (``(D, D)`` bool)."""
    r = (observed - predicted).abs().square() / (2 * noise_var)
    if mask is not None:
        r = r * mask
    return -r.sum((-2, -1))


def log_prior_particles(particles: ParticleVariables, priors: HyperMoleculePriors) -> torch.Tensor:
    """``(B,)`` log prior of shifts, contrast and states (``−inf`` outside the support)."""
    lp = -(particles.shifts_a**2).sum(-1) / (2 * priors.shift_std_a**2)
    lp = lp - (particles.contrast - priors.contrast_mean) ** 2 / (2 * priors.contrast_std**2)
    inside = (particles.contrast > 0)
    if particles.tau.shape[-1]:
        inside = inside & ((particles.tau >= 0) & (particles.tau <= 1)).all(-1)
    return torch.where(inside, lp, torch.full_like(lp, -torch.inf))


def log_prior_theta(model: HyperMolecule, params: dict[str, torch.Tensor], priors: HyperMoleculePriors) -> torch.Tensor:
    """Scalar ``log P(θ)``: L2 on coefficients and trajectories, eq. 24 smoothness."""
    lp = torch.zeros((), device=model.device, dtype=model.dtype)
    for key, p in params.items():
        std = priors.trajectory_std_a if key.endswith(".trajectory") else priors.coefficient_std
        lp = lp - (p**2).sum() / (2 * std**2)
    if priors.smoothness_weight:
        lp = lp - priors.smoothness_weight * model.smoothness_penalty(params)
    return lp


def particle_log_posterior(model: HyperMolecule, params: dict[str, torch.Tensor], particles: ParticleVariables,
                           data: ImageData, idx: torch.Tensor, priors: HyperMoleculePriors,
                           mask: torch.Tensor | None = None) -> torch.Tensor:
    """``(B,)`` conditional log posterior of the particles ``idx`` given θ (likelihood + their
    priors): the target of the per-particle Metropolis–Hastings updates."""
    ctf = None if data.ctf is None else data.ctf[idx]
    proj = projection_spectra(model, params, particles.tau, particles.rotations, d=data.d, apix=data.apix, ctf=ctf)
    pred = shift_and_scale(proj, particles.shifts_a, particles.contrast, apix=data.apix)
    lp = image_log_likelihood(pred, data.spectra[idx], data.noise_var, mask)
    return lp + log_prior_particles(particles, priors)


def theta_log_posterior_and_grad(model: HyperMolecule, flat_theta: torch.Tensor, particles: ParticleVariables,
                                 data: ImageData, priors: HyperMoleculePriors, *,
                                 idx: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                                 batch_size: int = 256,
                                 likelihood_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``log P(θ | particles, data)`` up to a constant and its gradient (autograd), the target of MALA.

    Parameters
    ----------
    flat_theta
        ``(n,)`` θ (:func:`flatten_params` order).
    particles
        The variables of the particles in ``idx`` (all particles when ``idx`` is ``None``).
    idx
        ``(B,)`` indices into ``data`` (the "crude" mode of 001 §5 passes a subset and
        ``likelihood_scale = N / B``, making the value and gradient unbiased stochastic
        estimates).
    batch_size
        Particles per projection batch (memory ``batch·D·K``); gradients accumulate.

    Returns
    -------
    ``(value, grad)``: a 0-d tensor and ``(n,)``, detached.
    """
    shapes = model.parameter_shapes()
    theta = flat_theta.detach().clone().requires_grad_(True)
    params = unflatten_params(theta, shapes)
    total = log_prior_theta(model, params, priors)
    grad = torch.autograd.grad(total, theta, allow_unused=True)[0]
    grad = torch.zeros_like(theta) if grad is None else grad
    value = total.detach()
    n = data.spectra.shape[0] if idx is None else idx.shape[0]
    rows = torch.arange(n, device=data.spectra.device) if idx is None else idx
    for start in range(0, n, batch_size):
        sl = slice(start, start + batch_size)
        part = particles[sl]
        ctf = None if data.ctf is None else data.ctf[rows[sl]]
        proj = projection_spectra(model, params, part.tau, part.rotations, d=data.d, apix=data.apix, ctf=ctf)
        pred = shift_and_scale(proj, part.shifts_a, part.contrast, apix=data.apix)
        ll = likelihood_scale * image_log_likelihood(pred, data.spectra[rows[sl]], data.noise_var, mask).sum()
        grad = grad + torch.autograd.grad(ll, theta)[0]
        value = value + ll.detach()
    return value, grad
