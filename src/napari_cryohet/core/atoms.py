"""Gaussian-atom densities on a 3D grid (separable), eq. 2.9 / 3.8 of 000_8d73a95ce4c6e7ab.txt.

Normalisation (shared with :func:`napari_cryohet.core.projection.project_gaussian_atoms`)
----------------------------------------------------------------------------------------
Each atom ``j`` is an isotropic Gaussian of width ``σ`` carrying *mass* ``w_j`` (its
weight, default 1). A voxel holds the mass it contains::

    V[z, y, x] = Σ_j w_j · apix³ · (2πσ²)^(−3/2) · exp(−|x_voxel − r_j|² / 2σ²)

so ``V.sum() ≈ Σ_j w_j`` (exact up to ``exp(−2π²σ²/apix²)``), and the discrete projection
``Σ_z V`` is the image of ``project_gaussian_atoms`` (mass per pixel,
``apix² (2πσ²)⁻¹ exp(−r²/2σ²)`` per atom). Seed 000's ``ν exp(−|x − z_j|²/2σ²)`` is the
same density with ``w_j = ν (2πσ²)^{3/2} / apix³`` in voxel units — a constant factor.

Coordinates are ``(x, y, z)`` in Å with the origin at voxel ``D//2`` on every axis; the
volume is indexed ``[z, y, x]`` (docs/design.md, "Arrays and coordinates").
"""

from __future__ import annotations

import math

import torch

__all__ = ["gaussian_density_3d", "gaussian_profiles"]


def gaussian_profiles(
    centres_a: torch.Tensor, *, d: int, apix: float, sigma_a: float | torch.Tensor
) -> torch.Tensor:
    """1D Gaussian factors ``exp(−(u_i − c)² / 2σ²)`` on the pixel grid.

    Parameters
    ----------
    centres_a
        ``(..., M)`` centres along one axis, Å from the box centre.
    sigma_a
        Width in Å: a float or a tensor broadcastable to ``(..., M)``.

    Returns
    -------
    ``(..., D, M)`` unnormalised profiles, ``u_i = (i − D//2)·apix``.
    """
    u = (torch.arange(d, device=centres_a.device, dtype=centres_a.dtype) - d // 2) * apix  # (D,)
    sig = torch.as_tensor(sigma_a, device=centres_a.device, dtype=centres_a.dtype)
    if sig.dim() > 0:
        sig = sig.unsqueeze(-2)  # (..., 1, M)
    diff = u[:, None] - centres_a.unsqueeze(-2)  # (..., D, M)
    arg = -0.5 * (diff / sig).square()
    # Beyond 7.7σ (exp(-30) ≈ 1e-13) the factor is set to exactly 0: tiny values would
    # underflow to denormals in exp and in the matmul that multiplies two profiles, and
    # denormal arithmetic is ~10-20x slower on CPUs.
    return torch.where(arg > -30.0, torch.exp(arg.clamp_min(-30.0)), torch.zeros((), dtype=arg.dtype, device=arg.device))


def _check_atoms(coords_a: torch.Tensor, d: int, apix: float, sigma_a) -> None:
    if coords_a.dim() not in (2, 3) or coords_a.shape[-1] != 3:
        raise ValueError(f"coords_a must have shape (M, 3) or (B, M, 3), got {tuple(coords_a.shape)}")
    if int(d) <= 0:
        raise ValueError(f"d must be a positive box size, got {d}")
    if float(apix) <= 0:
        raise ValueError(f"apix must be positive, got {apix}")
    sig = torch.as_tensor(sigma_a)
    if sig.numel() == 0 or bool((sig <= 0).any()):
        raise ValueError("sigma_a must be positive")


def _atom_mass(
    coords_a: torch.Tensor, weights, sigma_a, ndim: int, apix: float
) -> torch.Tensor:
    """Per-atom prefactor ``w · apix^n (2πσ²)^(−n/2)``, shape ``(..., M)``."""
    m_shape = coords_a.shape[:-1]
    w = torch.ones(m_shape, dtype=coords_a.dtype, device=coords_a.device)
    if weights is not None:
        w = w * torch.as_tensor(weights, dtype=coords_a.dtype, device=coords_a.device)
    sig = torch.as_tensor(sigma_a, dtype=coords_a.dtype, device=coords_a.device)
    return w * (apix**ndim) * (2.0 * math.pi * sig * sig) ** (-ndim / 2.0)


def gaussian_density_3d(
    coords_a: torch.Tensor,
    *,
    d: int,
    apix: float,
    sigma_a: float | torch.Tensor,
    weights: torch.Tensor | None = None,
    atom_chunk: int = 256,
) -> torch.Tensor:
    """Sum of isotropic Gaussian atoms sampled on a ``D³`` grid (separable).

    Eq. 2.9 of 000_8d73a95ce4c6e7ab.txt, with the mass normalisation of the module
    docstring. Computed as ``Σ_j Gz[z, j] Gy[y, j] Gx[x, j]`` in chunks of atoms (a batched
    matrix product per chunk), never evaluating a 3D exponential per atom.

    Parameters
    ----------
    coords_a
        ``(M, 3)`` or ``(B, M, 3)`` atom positions ``(x, y, z)`` in Å (origin at voxel ``D//2``).
    d, apix
        Box edge in voxels and voxel size in Å.
    sigma_a
        Gaussian width in Å: a float or ``(M,)`` per-atom widths.
    weights
        ``(M,)`` or ``(B, M)`` atom masses (default 1).
    atom_chunk
        Atoms per matrix product (memory ``B·D²·atom_chunk``).

    Returns
    -------
    ``(D, D, D)`` (or ``(B, D, D, D)``) volume indexed ``[z, y, x]``, dtype of ``coords_a``
    (float32 for non-float input), on its device.
    """
    coords_a = torch.as_tensor(coords_a)
    if not coords_a.is_floating_point():
        coords_a = coords_a.to(torch.float32)
    _check_atoms(coords_a, d, apix, sigma_a)
    d = int(d)
    apix = float(apix)
    batched = coords_a.dim() == 3
    c = coords_a if batched else coords_a[None]  # (B, M, 3)
    mass = _atom_mass(c, None if weights is None else torch.as_tensor(weights), sigma_a, 3, apix)  # (B, M)
    sig = torch.as_tensor(sigma_a, dtype=c.dtype, device=c.device)
    n_atoms = c.shape[1]
    vol = torch.zeros(c.shape[0], d, d * d, dtype=c.dtype, device=c.device)  # (B, Z, Y*X)
    for start in range(0, n_atoms, max(1, int(atom_chunk))):
        sl = slice(start, min(n_atoms, start + max(1, int(atom_chunk))))
        s = sig[sl] if sig.dim() > 0 else sig
        gx = gaussian_profiles(c[:, sl, 0], d=d, apix=apix, sigma_a=s)  # (B, X, m)
        gy = gaussian_profiles(c[:, sl, 1], d=d, apix=apix, sigma_a=s)  # (B, Y, m)
        gz = gaussian_profiles(c[:, sl, 2], d=d, apix=apix, sigma_a=s) * mass[:, None, sl]  # (B, Z, m)
        gyx = (gy[:, :, None, :] * gx[:, None, :, :]).reshape(c.shape[0], d * d, -1)  # (B, Y*X, m)
        vol += gz @ gyx.transpose(1, 2)
    vol = vol.reshape(c.shape[0], d, d, d)
    return vol if batched else vol[0]
