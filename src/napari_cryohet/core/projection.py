"""Projections (the ray transform T of eq. 1.1 of 000_8d73a95ce4c6e7ab.txt) and the CTF/shift step.

Convention (docs/design.md, "Projection and the forward model"; :mod:`napari_cryohet.core.rotation`): the image of volume ``V`` in
pose ``R`` is ``image(x, y) = Σ_z V(Rᵀ (x, y, z))`` — an atom at ``r`` lands at
``(R r)[:2]``. Images are ``(B, D, D)`` indexed ``(y, x)``, centre pixel ``D//2``.
Projections are discrete sums along the beam (mass per pixel, no ``apix`` factor), so the
three projectors agree on the same Gaussian atoms:

- :func:`project_gaussian_atoms` — analytic, separable (one ``(B,D,M) @ (B,M,D)`` product);
- :func:`project_volume_real` — rotate the sampling grid, trilinear ``grid_sample``, sum z
  (a reference for tests; interpolation blurs features narrower than ~2 voxels);
- :func:`project_volume_fourier` — Fourier-slice theorem through
  :func:`napari_cryohet.core.slice.extract_central_slices` (zero padding + gridding correction).

The forward model (eq. 1.1–1.2 of 000_8d73a95ce4c6e7ab.txt, eq. 1 of
004_0460feb3adf92bbd.txt) is ``y = CTF · T_{−shift}(P_R V) + noise``:
:func:`apply_ctf_and_shift` applies the CTF and the shift in Fourier space.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from napari_cryohet.core.atoms import _atom_mass, _check_atoms, gaussian_profiles
from napari_cryohet.core.ctf import CTF_KEYS, compute_ctf_2d
from napari_cryohet.core.fft import (
    fft2_centered,
    fft3_centered,
    ifft2_centered,
    ifft3_centered,
    phase_shift_2d,
)
from napari_cryohet.core.slice import extract_central_slices

__all__ = [
    "project_volume_real",
    "project_volume_fourier",
    "volume_transform",
    "project_transform",
    "project_gaussian_atoms",
    "apply_ctf_and_shift",
]


def _check_rotations(rotations: torch.Tensor) -> None:
    if rotations.dim() != 3 or rotations.shape[-2:] != (3, 3):
        raise ValueError(f"rotations must have shape (B, 3, 3), got {tuple(rotations.shape)}")


def _check_volume(volume: torch.Tensor, rotations: torch.Tensor) -> None:
    if volume.dim() not in (3, 4) or len(set(volume.shape[-3:])) != 1:
        raise ValueError(f"volume must be a cubic (D, D, D) or (B, D, D, D) tensor, got {tuple(volume.shape)}")
    if volume.dim() == 4 and volume.shape[0] not in (1, rotations.shape[0]):
        raise ValueError(f"{volume.shape[0]} volumes for {rotations.shape[0]} rotations")


def _fourier_upsample(volume: torch.Tensor, factor: int) -> torch.Tensor:
    """Band-limited (sinc) interpolation of ``(..., D, D, D)`` onto a grid ``factor`` times finer."""
    d = volume.shape[-1]
    du = d * factor
    lo = du // 2 - d // 2
    spec = fft3_centered(volume)
    big = torch.zeros(volume.shape[:-3] + (du, du, du), dtype=spec.dtype, device=volume.device)
    big[..., lo:lo + d, lo:lo + d, lo:lo + d] = spec
    return ifft3_centered(big).real * factor**3


def project_volume_real(
    volume: torch.Tensor, rotations: torch.Tensor, *, oversample: int = 1, batch: int = 8
) -> torch.Tensor:
    """Real-space projection: sample ``V(Rᵀ (x, y, z))`` trilinearly and sum along z.

    Parameters
    ----------
    volume
        ``(D, D, D)`` real volume indexed ``[z, y, x]`` (or ``(B, D, D, D)``, one per pose).
    rotations
        ``(B, 3, 3)`` poses.
    oversample
        Sinc-interpolate the volume onto a grid this many times finer before the trilinear
        sampling (same sample positions): trilinear error falls as ``1/oversample²``.
    batch
        Poses per ``grid_sample`` call (memory ``batch·D³·3``).

    Returns
    -------
    ``(B, D, D)`` images ``Σ_z V(Rᵀ (x, y, z))`` (voxels outside the box read as zero).
    """
    _check_rotations(rotations)
    _check_volume(volume, rotations)
    if int(oversample) < 1:
        raise ValueError(f"oversample must be an integer ≥ 1, got {oversample}")
    d = volume.shape[-1]
    factor = int(oversample)
    rot = rotations.to(device=volume.device, dtype=volume.dtype)
    u = torch.arange(d, device=volume.device, dtype=volume.dtype) - d // 2
    zz, yy, xx = torch.meshgrid(u, u, u, indexing="ij")
    pts = torch.stack([xx, yy, zz], -1).reshape(-1, 3)  # (D³, 3) particle-frame (x, y, z), voxels
    if factor > 1:
        volume = _fourier_upsample(volume, factor)
    dv = volume.shape[-1]
    # grid index of a point p (voxels from the centre) is factor·p + dv//2; grid_sample
    # (align_corners=True) maps index i to -1 + 2 i / (dv - 1)
    scale = 2.0 / (dv - 1)
    out = []
    for start in range(0, rot.shape[0], max(1, batch)):
        r = rot[start:start + batch]  # (b, 3, 3)
        src = pts @ r  # (b, D³, 3): row-vector form of Rᵀ p
        grid = (src * factor + dv // 2) * scale - 1.0
        grid = grid.reshape(r.shape[0], d, d, d, 3)
        if volume.dim() == 4 and volume.shape[0] > 1:
            vol = volume[start:start + batch, None]
        else:
            vol = volume.reshape(1, 1, dv, dv, dv).expand(r.shape[0], 1, dv, dv, dv)
        sampled = F.grid_sample(vol, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        out.append(sampled[:, 0].sum(1))  # (b, D, D)
    return torch.cat(out, 0)


def _gridding_correction(d: int, device, dtype) -> torch.Tensor:
    """``(D, D, D)`` ``sinc²`` per axis: the real-space apodisation of trilinear interpolation."""
    u = (torch.arange(d, device=device, dtype=dtype) - d // 2) / d
    s = torch.sinc(u) ** 2
    return s[:, None, None] * s[None, :, None] * s[None, None, :]


def project_volume_fourier(
    volume: torch.Tensor,
    rotations: torch.Tensor,
    *,
    pad_factor: int = 2,
    gridding_correction: bool = True,
) -> torch.Tensor:
    """Projection through the Fourier-slice theorem (sparse trilinear slice extraction).

    The volume is zero-padded to ``pad_factor·D``, optionally divided by the ``sinc²``
    apodisation trilinear interpolation imposes (gridding correction), transformed,
    sliced with :func:`~napari_cryohet.core.slice.extract_central_slices`, transformed back
    and cropped to ``D``.

    Parameters
    ----------
    volume
        ``(D, D, D)`` real volume.
    rotations
        ``(B, 3, 3)`` poses.
    pad_factor
        Oversampling of the 3D transform (1 = none; 2 makes interpolation error ~4× smaller).
    gridding_correction
        Pre-divide by the trilinear ``sinc²`` apodisation.

    Returns
    -------
    ``(B, D, D)`` real images (same units as :func:`project_volume_real`).
    """
    _check_rotations(rotations)
    if volume.dim() != 3 or len(set(volume.shape)) != 1:
        raise ValueError(f"volume must be a cubic (D, D, D) tensor, got {tuple(volume.shape)}")
    if int(pad_factor) < 1:
        raise ValueError(f"pad_factor must be an integer ≥ 1, got {pad_factor}")
    volume_ft = volume_transform(volume, pad_factor=pad_factor, gridding_correction=gridding_correction)
    return project_transform(volume_ft, rotations.to(volume.device), volume.shape[-1])


def volume_transform(volume: torch.Tensor, *, pad_factor: int = 2, gridding_correction: bool = True) -> torch.Tensor:
    """The centred 3D transform :func:`project_volume_fourier` slices: ``volume`` zero-padded
    to ``pad_factor·D``, optionally divided by the trilinear ``sinc²`` apodisation. Computed
    once, it serves any number of projections (:func:`project_transform`)."""
    d = volume.shape[-1]
    dp = d * int(pad_factor)
    lo = dp // 2 - d // 2
    padded = torch.zeros(dp, dp, dp, dtype=volume.dtype, device=volume.device)
    padded[lo:lo + d, lo:lo + d, lo:lo + d] = volume
    if gridding_correction:
        padded = padded / _gridding_correction(dp, volume.device, volume.dtype)
    return fft3_centered(padded)


def project_transform(volume_ft: torch.Tensor, rotations: torch.Tensor, d: int) -> torch.Tensor:
    """``(B, D, D)`` real projections from a :func:`volume_transform` (central slices,
    back to real space, cropped to ``d``)."""
    dp = volume_ft.shape[-1]
    lo = dp // 2 - d // 2
    images = ifft2_centered(extract_central_slices(volume_ft, rotations)).real  # (B, dp, dp)
    return images[:, lo:lo + d, lo:lo + d]


def project_gaussian_atoms(
    coords_a: torch.Tensor,
    rotations: torch.Tensor,
    *,
    d: int,
    apix: float,
    sigma_a: float | torch.Tensor,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Analytic projection of isotropic Gaussian atoms (separable; a matmul per image).

    With ``r' = R r_j`` the rotated atoms, the image is
    ``Σ_j w_j apix² (2πσ²)⁻¹ exp(−((x − r'_x)² + (y − r'_y)²) / 2σ²) = (Gy · w) Gxᵀ``, a
    ``(B, D, M) @ (B, M, D)`` product — the exact line integral of the density of
    :func:`~napari_cryohet.core.atoms.gaussian_density_3d` (eq. 2.9–2.10 of
    000_8d73a95ce4c6e7ab.txt, before the CTF), sampled at pixel centres; the pixel sum of
    each atom equals its weight.

    Parameters
    ----------
    coords_a
        ``(M, 3)`` shared or ``(B, M, 3)`` per-image atom positions ``(x, y, z)`` in Å.
    rotations
        ``(B, 3, 3)`` poses.
    d, apix
        Image size in pixels and pixel size in Å.
    sigma_a
        Gaussian width in Å (float or ``(M,)``).
    weights
        ``(M,)`` or ``(B, M)`` atom masses (default 1).

    Returns
    -------
    ``(B, D, D)`` images indexed ``(y, x)``, dtype/device of ``coords_a``.
    """
    coords_a = torch.as_tensor(coords_a)
    if not coords_a.is_floating_point():
        coords_a = coords_a.to(torch.float32)
    _check_atoms(coords_a, d, apix, sigma_a)
    _check_rotations(rotations)
    d, apix = int(d), float(apix)
    rot = rotations.to(device=coords_a.device, dtype=coords_a.dtype)
    if coords_a.dim() == 3 and coords_a.shape[0] != rot.shape[0]:
        raise ValueError(f"coords_a has {coords_a.shape[0]} structures for {rot.shape[0]} rotations")
    if coords_a.dim() == 2:
        rotated = coords_a[None] @ rot[:, :2, :].transpose(1, 2)  # (B, M, 2) = (R r)[:2]
    else:
        rotated = coords_a @ rot[:, :2, :].transpose(1, 2)  # (B, M, 2)
    mass = _atom_mass(rotated, weights, sigma_a, 2, apix)  # (B, M)
    mass = mass.expand(rotated.shape[:2])
    gx = gaussian_profiles(rotated[..., 0], d=d, apix=apix, sigma_a=sigma_a)  # (B, D, M)
    gy = gaussian_profiles(rotated[..., 1], d=d, apix=apix, sigma_a=sigma_a) * mass[:, None, :]  # (B, D, M)
    return gy @ gx.transpose(1, 2)  # (B, D(y), D(x))


def apply_ctf_and_shift(
    images: torch.Tensor,
    *,
    apix: float,
    ctf: dict[str, torch.Tensor] | None = None,
    shifts_a: torch.Tensor | None = None,
) -> torch.Tensor:
    """Translate centred projections by ``−shifts_a`` and multiply by the CTF (Fourier space).

    ``y = IFFT(CTF · exp(2πi k·s/apix) · FFT(x))`` — eq. 1.1 of 000_8d73a95ce4c6e7ab.txt
    without noise; the shift follows RELION's origin convention (the particle centre ends up
    at image centre ``− shifts_a``; docs/design.md, "Poses").

    Parameters
    ----------
    images
        ``(B, D, D)`` real projections, particle centred.
    apix
        Pixel size in Å.
    ctf
        ``None`` or a dict of ``(B,)`` tensors / floats keyed like
        :func:`~napari_cryohet.core.ctf.compute_ctf_2d` (``CTFParams.to_torch(...)``).
    shifts_a
        ``None`` or ``(B, 2)`` (rlnOriginXAngst, rlnOriginYAngst) in Å.

    Returns
    -------
    ``(B, D, D)`` real images.
    """
    if images.dim() != 3 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"images must have shape (B, D, D), got {tuple(images.shape)}")
    if ctf is None and shifts_a is None:
        return images
    real_dtype = images.dtype if images.is_floating_point() else torch.float32
    spectra = fft2_centered(images)
    if shifts_a is not None:
        shifts = torch.as_tensor(shifts_a, device=images.device, dtype=real_dtype)
        if shifts.shape != (images.shape[0], 2):
            raise ValueError(f"shifts_a must have shape ({images.shape[0]}, 2), got {tuple(shifts.shape)}")
        spectra = phase_shift_2d(spectra, -shifts / float(apix))
    if ctf is not None:
        unknown = set(ctf) - set(CTF_KEYS)
        if unknown:
            raise ValueError(f"ctf has unknown keys {sorted(unknown)}; expected {CTF_KEYS}")
        params = {k: torch.as_tensor(v, device=images.device, dtype=real_dtype) for k, v in ctf.items()}
        spectra = spectra * compute_ctf_2d(images.shape[-1], apix, device=images.device, **params)
    return ifft2_centered(spectra).real.to(real_dtype)
