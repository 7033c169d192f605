"""Fused sparse slice extraction from a structural basis (§4.2-§4.3 of Kimanius, Jamali, Scheres 2022).

The VAE decoder (eq. 3) is a linear combination of ``K + 1`` Fourier volumes,
``g(z) = Σ_k V^(k) s^(k)(z) + V^(0)``. Training only ever needs ``H(φ_i) g(z_i)``: the
central slice of ``g(z_i)`` in the pose of particle ``i``. This module evaluates that slice
**without assembling any volume**: one fused :class:`torch.autograd.Function` rotates the
slice coordinates, gathers the 8 trilinear neighbours of each coordinate in all ``K + 1``
basis volumes, weighs them with ``s(z_i)`` and interpolates; its backward scatters
gradients only into the voxels that were touched (``index_add_``) and into ``s(z_i)``.

Storage (the compact half-grid)
-------------------------------
Real volumes have Hermitian transforms, ``V(−k) = conj V(k)``, so only half of the Fourier
grid is stored: the integer frequencies ``k = (kx, ky, kz)`` (voxels from the centre, order
(x, y, z); centred-FFT convention of :mod:`napari_cryohet.core.fft`) with
``kx > 0``, or ``kx = 0 and ky > 0``, or ``kx = ky = 0 and kz ≥ 0``, and ``|k| < radius + 1``
(the chosen Nyquist sphere plus one voxel, so that the trilinear neighbours of every slice
sample with ``|p| < radius`` are stored; voxels outside read as zero, as in the paper).
They form the ``P`` rows of a compact array ``basis`` ``(P, 2, K + 1)`` (real, imaginary
parts). A lookup table over an extended integer grid maps a frequency to its compact row
and a sign: ``+1`` stored, ``−1`` Friedel mate ``−k`` stored (imaginary part negated), ``0``
outside the sphere. The extended grid spans ``[−R−2, R+2]`` on each axis, so every
neighbour of every in-sphere coordinate has an entry and no boundary test is needed.

Slice samples
-------------
The image's transform is Hermitian too, so the loss needs only the half-disc of image
frequencies ``(kx, ky)`` with ``kx > 0`` or ``kx = 0, ky ≥ 0`` and ``|k| < radius``
(:class:`SlicePoints`; ``weight`` 2 for a sample standing for itself and its mate, 1 for
DC). Sample ``(kx, ky)`` lies at ``p = Rᵀ (kx, ky, 0) = kx·R[0] + ky·R[1]`` in the volume
(the Fourier-slice convention of :mod:`napari_cryohet.core.slice`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.autograd.function import once_differentiable

__all__ = [
    "HalfGridLookup",
    "SlicePoints",
    "build_half_grid",
    "build_slice_points",
    "rotate_slice_points",
    "extract_basis_slices",
    "basis_from_volume",
    "basis_to_volume",
]

_CORNERS = [(cx, cy, cz) for cz in (0, 1) for cy in (0, 1) for cx in (0, 1)]
#: Rows of gathered data ``(points · corners)`` held at once per chunk (memory bound).
_CHUNK_ROWS = 1 << 17


@dataclass
class HalfGridLookup:
    """Compact in-sphere storage of the Hermitian half-grid, and its lookup table.

    Attributes
    ----------
    radius
        Radius (voxels) of the slice samples; voxels with ``|k| < radius + 1`` are stored.
    coords
        ``(P, 3)`` int64 stored frequencies (kx, ky, kz), voxels from the centre.
    index
        ``(E, E, E)`` int64 compact row of the extended grid point ``[kz+o, ky+o, kx+o]``
        (0 where ``sign == 0``).
    sign
        ``(E, E, E)`` float: ``+1`` stored, ``−1`` Friedel mate stored, ``0`` outside.
    offset
        ``o``: extended-grid index of frequency 0.
    """

    radius: float
    coords: torch.Tensor
    index: torch.Tensor
    sign: torch.Tensor
    offset: int

    @property
    def n_stored(self) -> int:
        """``P``, the number of stored complex coefficients per basis volume."""
        return int(self.coords.shape[0])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> HalfGridLookup:
        """A copy on ``device`` (``sign`` cast to ``dtype`` when given)."""
        return HalfGridLookup(
            radius=self.radius,
            coords=self.coords.to(device),
            index=self.index.to(device),
            sign=self.sign.to(device=device, dtype=dtype or self.sign.dtype),
            offset=self.offset,
        )


@dataclass
class SlicePoints:
    """Half-disc of image frequencies used by the loss.

    Attributes
    ----------
    freqs
        ``(Q, 2)`` float (kx, ky) in pixels of frequency (cycles per box).
    pixel_index
        ``(Q,)`` int64 flat index ``i·D + j`` of the sample in a centred ``(D, D)`` spectrum.
    weight
        ``(Q,)`` float: 2 for a sample that stands for its Friedel mate too, 1 for DC.
    """

    freqs: torch.Tensor
    pixel_index: torch.Tensor
    weight: torch.Tensor


def _in_half(kx: torch.Tensor, ky: torch.Tensor, kz: torch.Tensor) -> torch.Tensor:
    return (kx > 0) | ((kx == 0) & (ky > 0)) | ((kx == 0) & (ky == 0) & (kz >= 0))


def build_half_grid(d: int, *, radius: float | None = None, device=None) -> HalfGridLookup:
    """Compact half-grid storage for a ``D³`` Fourier volume inside a sphere.

    Parameters
    ----------
    d
        Box size ``D`` (even).
    radius
        Slice-sample radius in voxels (default ``D / 2``, Nyquist). At most ``D / 2``.
    device
        Device of the tables.

    Returns
    -------
    :class:`HalfGridLookup` with ``P ≈ (2π/3)(radius + 1)³`` stored voxels — about half of
    the sphere, a quarter of the cube (the memory saving of §4.3 of Kimanius, Jamali, Scheres 2022).
    """
    d = int(d)
    if d <= 0 or d % 2:
        raise ValueError(f"d must be a positive even box size, got {d}")
    radius = d / 2.0 if radius is None else float(radius)
    if not 0 < radius <= d / 2.0:
        raise ValueError(f"radius must lie in (0, {d / 2}], got {radius}")
    r_store = radius + 1.0
    half = int(math.ceil(r_store)) + 1
    offset = half
    e = 2 * half + 1
    u = torch.arange(-half, half + 1, dtype=torch.int64)
    kz, ky, kx = torch.meshgrid(u, u, u, indexing="ij")  # (E, E, E) each
    inside = (kx * kx + ky * ky + kz * kz).to(torch.float64) < r_store**2
    stored = inside & _in_half(kx, ky, kz)
    coords = torch.stack([kx[stored], ky[stored], kz[stored]], -1)  # (P, 3)
    rows = torch.full((e, e, e), -1, dtype=torch.int64)
    rows[stored] = torch.arange(coords.shape[0])
    # Friedel mate of extended index i is 2·offset − i on every axis (the grid is symmetric).
    mate_rows = torch.flip(rows, dims=(0, 1, 2))
    index = torch.where(stored, rows, torch.where(inside, mate_rows, torch.zeros_like(rows)))
    sign = torch.where(stored, 1.0, torch.where(inside, -1.0, 0.0)).to(torch.float32)
    if bool((index[inside] < 0).any()):  # pragma: no cover - guaranteed by the symmetry of the sphere
        raise RuntimeError("half-grid lookup: a Friedel mate is missing")
    return HalfGridLookup(radius=radius, coords=coords.to(device), index=index.to(device),
                          sign=sign.to(device), offset=offset)


def build_slice_points(d: int, *, radius: float | None = None, device=None,
                       dtype: torch.dtype = torch.float32) -> SlicePoints:
    """Half-disc of image frequencies ``|k| < radius`` (see the module docstring).

    Parameters
    ----------
    d
        Image size ``D`` (even).
    radius
        Radius in pixels of frequency (default ``D / 2``).

    Returns
    -------
    :class:`SlicePoints` with ``Q ≈ π radius² / 2`` samples.
    """
    d = int(d)
    radius = d / 2.0 if radius is None else float(radius)
    f = torch.arange(d, dtype=torch.int64) - d // 2
    ky, kx = torch.meshgrid(f, f, indexing="ij")  # (D, D)
    keep = ((kx * kx + ky * ky).to(torch.float64) < radius**2) & _in_half(kx, ky, torch.zeros_like(kx))
    flat = torch.nonzero(keep.reshape(-1), as_tuple=False).squeeze(1)  # (Q,)
    freqs = torch.stack([kx.reshape(-1)[flat], ky.reshape(-1)[flat]], -1).to(dtype)  # (Q, 2)
    weight = torch.where((freqs == 0).all(-1), 1.0, 2.0).to(dtype)
    return SlicePoints(freqs=freqs.to(device), pixel_index=flat.to(device), weight=weight.to(device))


def rotate_slice_points(freqs: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """3D positions ``Rᵀ (kx, ky, 0)`` of 2D slice samples.

    Parameters
    ----------
    freqs
        ``(Q, 2)`` image frequencies (kx, ky) in voxels.
    rotations
        ``(B, 3, 3)`` poses (convention of :mod:`napari_cryohet.core.rotation`).

    Returns
    -------
    ``(B, Q, 3)`` positions (x, y, z) in voxels from the centre.
    """
    rot = rotations.to(freqs.dtype)
    return freqs[None, :, 0, None] * rot[:, None, 0, :] + freqs[None, :, 1, None] * rot[:, None, 1, :]


def _trilinear(coords: torch.Tensor, lookup: HalfGridLookup):
    """Compact rows ``(B, Q, 8)`` and real/imag weights ``(B, Q, 8)`` of the 8 neighbours."""
    base = torch.floor(coords)
    frac = coords - base  # (B, Q, 3)
    base = base.to(torch.int64) + lookup.offset
    e = lookup.index.shape[0]
    flat_index = lookup.index.reshape(-1)
    flat_sign = lookup.sign.reshape(-1).to(coords.dtype)
    rows, weights = [], []
    for cx, cy, cz in _CORNERS:
        ix = (base[..., 0] + cx).clamp(0, e - 1)
        iy = (base[..., 1] + cy).clamp(0, e - 1)
        iz = (base[..., 2] + cz).clamp(0, e - 1)
        wx = frac[..., 0] if cx else 1.0 - frac[..., 0]
        wy = frac[..., 1] if cy else 1.0 - frac[..., 1]
        wz = frac[..., 2] if cz else 1.0 - frac[..., 2]
        cell = (iz * e + iy) * e + ix
        rows.append(flat_index[cell])
        weights.append(wx * wy * wz * flat_sign[cell])  # signed: -1 for a Friedel mate
    rows = torch.stack(rows, -1)  # (B, Q, 8)
    signed = torch.stack(weights, -1)  # (B, Q, 8)
    return rows, signed.abs(), signed


class _BasisSlice(torch.autograd.Function):
    """``slice[b, q] = Σ_c w_bqc Σ_k s_bk · V^(k)[row_bqc]`` (conjugated for Friedel mates).

    Forward: gather the ``8·Q`` neighbour rows of each image (all ``K + 1`` volumes at once,
    one row = ``2·(K+1)`` numbers), contract with ``s_b`` (a batched matrix product), then
    with the trilinear weights. Backward: scatter ``∂L/∂slice`` times the trilinear weights
    into the touched rows of a per-image buffer ``U_b`` (``index_add_``; untouched voxels stay
    exactly zero), then ``∂L/∂V = Σ_b U_b ⊗ s_b`` and ``∂L/∂s_b = ⟨U_b, V⟩`` are two matrix
    products. Images are processed in chunks, so memory does not grow with the batch.
    """

    @staticmethod
    def forward(ctx, basis: torch.Tensor, weights: torch.Tensor, coords: torch.Tensor,
                index: torch.Tensor, sign: torch.Tensor, offset: int):
        p, _, k1 = basis.shape
        lookup = HalfGridLookup(radius=0.0, coords=torch.empty(0), index=index, sign=sign, offset=offset)
        rows, w_re, w_im = _trilinear(coords.detach(), lookup)  # (B, Q, 8) each
        b, q, _ = rows.shape
        flat_basis = basis.reshape(p, 2 * k1)  # (P, 2·(K+1)), [re_0..re_K, im_0..im_K]
        out = basis.new_empty(b, q, 2)
        step = max(1, _CHUNK_ROWS // max(1, q * 8))
        for s in range(0, b, step):
            e = min(b, s + step)
            gathered = flat_basis.index_select(0, rows[s:e].reshape(-1))  # (b·Q·8, 2·(K+1))
            mixed = torch.bmm(gathered.reshape(e - s, q * 16, k1), weights[s:e, :, None])  # (b, Q·8·2, 1)
            mixed = mixed.reshape(e - s, q, 8, 2)
            out[s:e, :, 0] = (mixed[..., 0] * w_re[s:e]).sum(-1)
            out[s:e, :, 1] = (mixed[..., 1] * w_im[s:e]).sum(-1)
        ctx.save_for_backward(basis, weights, rows, w_re, w_im)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        basis, weights, rows, w_re, w_im = ctx.saved_tensors
        p, _, k1 = basis.shape
        b, q, _ = rows.shape
        need_basis, need_weights = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_basis = torch.zeros(p * 2, k1, dtype=basis.dtype, device=basis.device) if need_basis else None
        grad_weights = torch.zeros_like(weights) if need_weights else None
        flat_basis = basis.reshape(p * 2, k1)  # row 2·p + r
        step = max(1, min(b, _CHUNK_ROWS * 32 // max(1, 2 * p)))
        for s in range(0, b, step):
            e = min(b, s + step)
            n = e - s
            # ∂L/∂(row value) per neighbour: (w_re·g_re, w_im·g_im)
            coef = torch.stack([w_re[s:e] * grad_out[s:e, :, None, 0],
                                w_im[s:e] * grad_out[s:e, :, None, 1]], -1)  # (n, Q, 8, 2)
            image = torch.arange(n, device=rows.device)[:, None, None, None] * (2 * p)
            target = image + rows[s:e, :, :, None] * 2 + torch.arange(2, device=rows.device)  # (n, Q, 8, 2)
            buffer = torch.zeros(n * 2 * p, dtype=basis.dtype, device=basis.device)
            buffer.index_add_(0, target.reshape(-1), coef.reshape(-1))
            buffer = buffer.reshape(n, 2 * p)  # U_b: zero except at touched voxels
            if need_basis:
                grad_basis.addmm_(buffer.t(), weights[s:e])  # (2P, K+1)
            if need_weights:
                grad_weights[s:e] = buffer @ flat_basis  # (n, K+1)
        if grad_basis is not None:
            grad_basis = grad_basis.reshape(p, 2, k1)
        return grad_basis, grad_weights, None, None, None, None


def extract_basis_slices(
    basis: torch.Tensor,
    weights: torch.Tensor,
    coords: torch.Tensor,
    lookup: HalfGridLookup,
) -> torch.Tensor:
    """Central slices of ``Σ_k weights[:, k] · basis[:, k]`` at rotated coordinates (fused, sparse).

    Implements ``H(φ_i) ∘ g(z_i)`` of eqs. 1 and 3 of Kimanius, Jamali, Scheres 2022 as one
    autograd function (§4.3): only the 8 trilinear neighbours of each coordinate are read
    in the forward pass and only they receive gradient in the backward pass. No volume is
    assembled, so memory does not grow with ``K · D³ · B``.

    Parameters
    ----------
    basis
        ``(P, 2, K+1)`` real tensor: real (``[:, 0]``) and imaginary (``[:, 1]``) parts of
        the ``K + 1`` basis volumes at the ``P`` stored half-grid voxels of ``lookup``.
    weights
        ``(B, K+1)`` per-image weights (``[1, s(z)]`` for eq. 3).
    coords
        ``(B, Q, 3)`` sample positions (x, y, z) in voxels from the centre
        (:func:`rotate_slice_points`); must satisfy ``|coords| < lookup.radius + 1``.
    lookup
        :func:`build_half_grid` tables (same device as ``basis``).

    Returns
    -------
    ``(B, Q)`` complex slice values. Differentiable in ``basis`` and ``weights`` (poses are
    fixed in training, §4.3 of Kimanius, Jamali, Scheres 2022; ``coords`` receive no gradient).
    """
    if basis.dim() != 3 or basis.shape[1] != 2:
        raise ValueError(f"basis must have shape (P, 2, K+1), got {tuple(basis.shape)}")
    if basis.shape[0] != lookup.n_stored:
        raise ValueError(f"basis has {basis.shape[0]} rows, the half-grid stores {lookup.n_stored}")
    if weights.dim() != 2 or weights.shape[1] != basis.shape[2]:
        raise ValueError(f"weights must have shape (B, {basis.shape[2]}), got {tuple(weights.shape)}")
    if coords.dim() != 3 or coords.shape[-1] != 3 or coords.shape[0] != weights.shape[0]:
        raise ValueError(f"coords must have shape ({weights.shape[0]}, Q, 3), got {tuple(coords.shape)}")
    out = _BasisSlice.apply(basis, weights.to(basis.dtype), coords.to(basis.dtype),
                            lookup.index, lookup.sign, lookup.offset)
    return torch.view_as_complex(out.contiguous())


def basis_from_volume(volume_ft: torch.Tensor, lookup: HalfGridLookup) -> torch.Tensor:
    """Stored half-grid coefficients of centred Fourier volumes.

    Parameters
    ----------
    volume_ft
        ``(..., D, D, D)`` centred transforms (complex), indexed ``[z, y, x]``.
    lookup
        :func:`build_half_grid` tables.

    Returns
    -------
    ``(..., P)`` complex; stored voxels outside the ``D³`` box read as zero.
    """
    d = volume_ft.shape[-1]
    c = lookup.coords.to(volume_ft.device) + d // 2  # (P, 3) indices (x, y, z)
    ok = ((c >= 0) & (c < d)).all(-1)
    cc = c.clamp(0, d - 1)
    values = volume_ft[..., cc[:, 2], cc[:, 1], cc[:, 0]]
    return values * ok.to(values.real.dtype)


def basis_to_volume(values: torch.Tensor, lookup: HalfGridLookup, d: int) -> torch.Tensor:
    """Assemble full centred ``D³`` Fourier volumes from half-grid coefficients.

    Each stored coefficient is written at ``k`` and its complex conjugate at ``−k``
    (Friedel mates), so the result is Hermitian and its inverse transform is real.

    Parameters
    ----------
    values
        ``(..., P)`` complex coefficients.
    lookup
        :func:`build_half_grid` tables.
    d
        Box size ``D``.

    Returns
    -------
    ``(..., D, D, D)`` complex centred transforms, zero outside the stored sphere and on
    the unpaired planes ``k_i = −D/2``.
    """
    d = int(d)
    lead = values.shape[:-1]
    out = values.new_zeros(*lead, d * d * d)
    # Only voxels whose Friedel mate is in the box too (|k_i| < D/2 on every axis): the
    # plane k_i = −D/2 has no mate on the centred grid and would break Hermitian symmetry.
    keep = (lookup.coords.abs() < d // 2).all(-1).to(values.device)  # (P,)
    for sgn, vals in ((1, values), (-1, values.conj())):
        c = sgn * lookup.coords.to(values.device) + d // 2  # (P, 3)
        ok = keep
        flat = (c[ok, 2] * d + c[ok, 1]) * d + c[ok, 0]
        out[..., flat] = vals[..., ok]
    # DC (and any self-mate) was written twice; keep it real so the volume is exactly real.
    centre = (d // 2 * d + d // 2) * d + d // 2
    out[..., centre] = out[..., centre].real.to(out.dtype)
    return out.reshape(*lead, d, d, d)
