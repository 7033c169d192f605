"""The normal-mode basis of the chain fit: per-particle amplitudes of elastic-network modes.

The second basis of the chain-fit stage, beside the Laplacian eigenvectors of
Esteve-Yagüe et al. 2022. Eq. 7 of ``002_0d217c95809d417a.txt`` (Toader, Sigworth &
Lederman 2023, "Normal Modes and Predefined Spaces of Conformations") writes a particle's
atoms as the reference moved along ``K`` normal modes,

    r_i = r⁰ + Σ_k b_ik Δ_k,

and HEMNMA (Jin et al. 2014, *Structure* 22:496) fits the amplitudes ``b_i`` of every
particle image to that image. Here ``Δ_k`` are the slowest modes of the anisotropic
network model of the reference (:func:`napari_cryohet.core.anm.anm_modes`), scaled so that
``b_ik = 1`` moves the atoms by 1 Å RMSD, and each image is compared with the same forward
model as the eigenvector basis (Gaussian atoms, CTF, shift: eq. 2.9–2.11 of Esteve-Yagüe
et al. 2022), so the two bases are compared on equal terms.

Differences to keep in mind when comparing them:

- the amplitudes belong to each particle: every particle (the held-out ones too) is fitted
  to its own image, as in HEMNMA, whereas the eigenvector basis learns one map from the
  eigenvectors to the angles and applies it to held-out particles;
- the modes are linear: a large amplitude stretches bonds and cannot rotate a domain far
  (the eigenvector basis changes angles and keeps bond lengths exactly);
- no eigenvectors (no spectral run) are needed, only the reference.
"""

from __future__ import annotations

import numpy as np
import torch

from napari_cryohet.core.anm import anm_modes

__all__ = ["NormalModeAmplitudes", "ModeExpansion", "collectivity", "mode_displacements", "prior_weights"]


def prior_weights(eigenvalues: np.ndarray, prior_a: float, noise_variance: float, n_pixels: int) -> np.ndarray:
    """``w_k = σ² / (P s_k²)``: a Gaussian prior ``b_k ~ N(0, s_k²)`` in the misfit's units.

    The misfit is the mean square residual per pixel (``P`` pixels), i.e. ``σ²/P`` times
    the negative log-likelihood of white noise of variance ``σ²`` (up to a factor 2 and a
    constant), so adding ``Σ_k w_k b_k²`` makes the loss a MAP objective. The spread follows
    the elastic network's thermal fluctuations, ``s_k = prior_a · sqrt(λ₁ / λ_k)`` (softer
    modes move more), with ``prior_a`` the spread along the softest mode in Å of RMSD.
    Without it, six amplitudes fitted to one image at SNR 0.05 follow the noise (HEMNMA
    itself fits unregularised, on images of much higher SNR per particle).
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    spread = float(prior_a) * np.sqrt(lam[0] / lam)
    return float(noise_variance) / float(n_pixels) / spread**2


def collectivity(vectors: np.ndarray) -> np.ndarray:
    """Brüschweiler's (1995) collectivity ``κ = exp(−Σ_i u_i² ln u_i²) / m`` of each mode, ``(K,)``.

    ``u_i²`` is atom ``i``'s share of the mode's squared displacement: ``κ = 1`` when every
    atom moves equally, ``1/m`` when one atom moves alone. ``vectors``: ``(K, m, 3)``.
    """
    share = (np.asarray(vectors, dtype=np.float64) ** 2).sum(axis=-1)
    share /= share.sum(axis=-1, keepdims=True)
    entropy = -np.sum(np.where(share > 0, share * np.log(np.where(share > 0, share, 1.0)), 0.0), axis=-1)
    return np.exp(entropy) / share.shape[-1]


def mode_displacements(reference_a: np.ndarray, n_modes: int, cutoff_a: float,
                       min_collectivity: float = 0.0) -> tuple[np.ndarray, np.ndarray, str]:
    """``Δ (K, m, 3)`` in Å of RMSD per unit amplitude, the ANM eigenvalues ``(K,)`` and a note.

    The ``n_modes`` slowest modes whose collectivity (:func:`collectivity`) is at least
    ``min_collectivity``: a mode carried by one loose residue (adenylate kinase's closed
    structure has four among its ten slowest, residue 74 holding 45 % of one) is a loop
    flapping, not a conformational change, and fitting it to noisy images flings that
    residue out (selecting collective modes is what HEMNMA users do, Jin et al. 2014). The
    note names the modes left out. Raises ``ValueError`` naming the settings when the
    reference has too few atoms for ``n_modes`` or its elastic network falls apart.
    """
    ref = np.asarray(reference_a, dtype=np.float64)
    if ref.ndim != 2 or ref.shape[1] != 3:
        raise ValueError("normal modes need a 3D reference chain (m, 3); the planar toy has none")
    most = 3 * len(ref) - 6
    if not 1 <= n_modes <= most:
        raise ValueError(f"n_modes: expected 1 to {most} modes for {len(ref)} atoms, got {n_modes}")
    modes = anm_modes(ref, n_modes=min(most, 3 * int(n_modes) + 10), cutoff_a=float(cutoff_a))
    kappa = collectivity(modes.vectors)
    keep = np.flatnonzero(kappa >= min_collectivity)[:n_modes]
    if len(keep) < n_modes:
        raise ValueError(f"mode_min_collectivity: only {len(keep)} of the {len(kappa)} slowest modes have a "
                         f"collectivity of at least {min_collectivity:g}; lower it or ask for fewer modes")
    skipped = [k for k in range(int(keep[-1]) + 1) if k not in set(keep.tolist())]
    note = ""
    if skipped:
        note = (f"normal modes {', '.join(str(k + 1) for k in skipped)} left out: carried by a few residues "
                f"(collectivity {', '.join(f'{kappa[k]:.2f}' for k in skipped)} < {min_collectivity:g})")
    return modes.vectors[keep] * np.sqrt(len(ref)), modes.eigenvalues[keep], note


class NormalModeAmplitudes(torch.nn.Module):
    """``r_i = r⁰ + Σ_k b_ik Δ_k`` (eq. 7 of Toader et al. 2023) with ``b`` one row per particle.

    The amplitudes are a sparse embedding table (``torch.optim.SparseAdam`` updates only the
    rows of a batch: a particle's amplitudes move only when its image is seen), all zero at
    the start (the reference). ``steps_per_batch`` optimiser steps are taken on each batch
    because every particle is seen once an epoch and has only its own image to learn from.

    The prior ``b_i ~ N(μ, S)`` enters the loss as ``(b − μ)ᵀ W (b − μ)`` with
    ``W = c S⁻¹`` in the misfit's units (``c`` = the noise variance per pixel over the
    pixel count, :func:`prior_weights`). It starts at ``μ = 0`` and the elastic network's
    spreads; with ``learn_prior_until > 0``, :meth:`end_of_epoch` re-estimates ``μ`` and
    ``S`` from the particles (:meth:`learn_prior`) after every epoch up to that one.
    """

    per_particle = True
    #: particles whose amplitudes and uncertainties re-estimate the prior (an even sample)
    prior_sample = 512
    #: smallest spread the learned prior keeps along any direction, Å of RMSD
    prior_floor_a = 0.01

    def __init__(self, reference: torch.Tensor, displacements: torch.Tensor, n_particles: int,
                 steps_per_batch: int = 5, prior_weights: torch.Tensor | None = None,
                 noise_scale: float | None = None, learn_prior_until: int = 0):
        super().__init__()
        self.register_buffer("reference", reference)
        self.register_buffer("displacements", displacements)  # (K, m, 3)
        k = displacements.shape[0]
        w = (torch.zeros(k, dtype=reference.dtype, device=reference.device) if prior_weights is None
             else prior_weights.to(reference))
        self.register_buffer("prior_precision", torch.diag(w))  # W (K, K), misfit units
        self.register_buffer("prior_mean", torch.zeros(k, dtype=reference.dtype, device=reference.device))
        self.amplitudes = torch.nn.Embedding(n_particles, displacements.shape[0], sparse=True,
                                             dtype=reference.dtype, device=reference.device)
        torch.nn.init.zeros_(self.amplitudes.weight)
        self.steps_per_batch = int(steps_per_batch)
        if learn_prior_until > 0 and (prior_weights is None or noise_scale is None):
            raise ValueError("mode_prior_learned needs a starting prior (mode_prior_a) and the noise level")
        self.noise_scale = None if noise_scale is None else float(noise_scale)
        self.learn_prior_until = int(learn_prior_until)

    def chains_from(self, b: torch.Tensor) -> torch.Tensor:
        """Chains ``(B, m, 3)`` of amplitudes ``b (B, K)``: ``r⁰ + Σ_k b_k Δ_k``."""
        return self.reference + torch.einsum("bk,kmd->bmd", b, self.displacements)

    def coords(self, problem, idx: torch.Tensor) -> torch.Tensor:  # noqa: ANN001 (train.Problem: no cycle)
        """Chains ``(B, m, 3)`` of the particles in rows ``idx``."""
        return self.chains_from(self.amplitudes(idx.to(self.reference.device)))

    def penalty(self, idx: torch.Tensor) -> torch.Tensor:
        """The Gaussian prior on the amplitudes, in the misfit's units: ``mean_i (b_i − μ)ᵀ W (b_i − μ)``."""
        b = self.amplitudes(idx.to(self.reference.device)) - self.prior_mean
        return torch.einsum("bk,kl,bl->b", b, self.prior_precision, b).mean()

    def prior_spread_a(self) -> np.ndarray:
        """The prior's spread along each mode, ``sqrt(diag S)`` in Å of RMSD (``inf`` without a prior)."""
        if self.noise_scale is None:
            return np.full(self.prior_mean.shape[0], np.inf)
        cov = self.noise_scale * torch.linalg.inv(self.prior_precision.double())
        return cov.diagonal().sqrt().cpu().numpy()

    def learn_prior(self, problem, rows: np.ndarray, batch_size: int = 128) -> None:  # noqa: ANN001
        """One empirical-Bayes (EM) update of the prior's mean ``μ`` and covariance ``S``.

        Each particle's posterior is approximated at its current amplitudes ``b̂_i`` (the MAP
        estimate the optimiser is tracking) by a Gaussian whose precision is the Hessian of
        its negative log-likelihood plus ``S⁻¹`` (Laplace); then ``μ = mean b̂_i`` and
        ``S = mean[(b̂_i − μ)(b̂_i − μ)ᵀ + C_i]``, ``C_i`` the posterior covariance — the M
        step of the hierarchical model ``b_i ~ N(μ, S)``. With one image per particle at SNR
        0.05 the posterior covariance is not small beside the spread of the ``b̂_i``, so it
        must be added back, or the prior would shrink at every update. The Hessian is exact
        (``K`` Hessian-vector products per batch, all particles at once: the blocks are
        independent), its negative eigenvalues clipped to zero. ``rows``: the particles used.
        """
        k = self.prior_mean.shape[0]
        c = float(self.noise_scale)
        prior_inv = (self.prior_precision / c).double()  # S⁻¹ in Å⁻²
        sum_b = torch.zeros(k, dtype=torch.float64, device=self.reference.device)
        sum_bb = torch.zeros(k, k, dtype=torch.float64, device=self.reference.device)
        sum_cov = torch.zeros(k, k, dtype=torch.float64, device=self.reference.device)
        for s in range(0, len(rows), batch_size):
            idx = rows[s:s + batch_size]
            b = self.amplitudes.weight[torch.as_tensor(idx, device=self.reference.device)].detach()
            b = b.clone().requires_grad_(True)
            with torch.enable_grad():
                loss = problem.misfit(self.chains_from(b), idx, False) * len(idx)  # Σ_i misfit_i
                (grad,) = torch.autograd.grad(loss, b, create_graph=True)
                rows_h = [torch.autograd.grad(grad[:, j].sum(), b, retain_graph=j < k - 1)[0] for j in range(k)]
            hess = torch.stack(rows_h, dim=1).detach().double()  # (B, K, K), misfit units
            hess = 0.5 * (hess + hess.transpose(1, 2)) / (2.0 * c)  # −log-likelihood = misfit / (2c)
            evals, evecs = torch.linalg.eigh(hess)
            hess = evecs @ torch.diag_embed(evals.clamp_min(0.0)) @ evecs.transpose(1, 2)
            cov = torch.linalg.inv(hess + prior_inv)
            bd = b.detach().double()
            sum_b += bd.sum(0)
            sum_bb += bd.T @ bd
            sum_cov += cov.sum(0)
        n = len(rows)
        mean = sum_b / n
        spread = sum_bb / n - torch.outer(mean, mean) + sum_cov / n
        spread = 0.5 * (spread + spread.T) + self.prior_floor_a**2 * torch.eye(k, dtype=torch.float64,
                                                                               device=spread.device)
        self.prior_mean.copy_(mean.to(self.prior_mean))
        self.prior_precision.copy_((c * torch.linalg.inv(spread)).to(self.prior_precision))

    def end_of_epoch(self, problem, epoch: int) -> str | None:  # noqa: ANN001
        """After epochs ``1 … learn_prior_until``: :meth:`learn_prior` on an even sample; a note for the log."""
        if not 0 < epoch <= self.learn_prior_until:
            return None
        n = self.amplitudes.num_embeddings
        rows = np.arange(0, n, max(n // self.prior_sample, 1))[:self.prior_sample]
        self.learn_prior(problem, rows)
        spread = ", ".join(f"{v:.2f}" for v in self.prior_spread_a())
        return f"learned expected motion along the modes: {spread} Å"

    def optimizer(self, learning_rate: float) -> torch.optim.Optimizer:
        return torch.optim.SparseAdam(list(self.parameters()), lr=learning_rate)


class ModeExpansion(torch.nn.Module):
    """``b_i = C Φ_i``: the normal-mode amplitudes expanded on the eigenvectors, as eq. 2.6 does for angles.

    The pooled variant of the normal-mode model (``mode_amplitudes="eigenvectors"``): one
    matrix ``C`` (modes × eigenvectors, Å of RMSD per unit of eigenvector) is fitted to the
    training particles and applied to every particle, so each amplitude rests on all the
    images instead of one (:class:`NormalModeAmplitudes`, HEMNMA's per-image fit). ``C = 0``
    at the start: every particle starts as the reference.
    """

    def __init__(self, reference: torch.Tensor, displacements: torch.Tensor, n_eigenvectors: int):
        super().__init__()
        self.register_buffer("reference", reference)
        self.register_buffer("displacements", displacements)  # (K, m, 3)
        self.coeff = torch.nn.Parameter(torch.zeros(displacements.shape[0], n_eigenvectors, dtype=reference.dtype,
                                                    device=reference.device))

    def amplitudes(self, phi: torch.Tensor) -> torch.Tensor:
        """``(B, K)`` amplitudes of particles with eigenvector rows ``phi (B, K')``."""
        return phi @ self.coeff.T

    def coords(self, problem, idx: torch.Tensor) -> torch.Tensor:  # noqa: ANN001 (train.Problem: no cycle)
        """Chains ``(B, m, 3)`` of the particles in rows ``idx``."""
        b = self.amplitudes(problem.phi[idx.to(problem.phi.device)])
        return self.reference + torch.einsum("bk,kmd->bmd", b, self.displacements)
