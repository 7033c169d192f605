"""Sparse Fourier-slice extraction and its adjoint (insertion / backprojection).

The Fourier-slice theorem (rotation convention of :mod:`napari_cryohet.core.rotation`):
the centred 2D transform of the projection in pose ``R`` is the centred 3D transform of the
volume on the central plane ``Rᵀ (kx, ky, 0)``. Seed 004 (eq. 1 of
004_0460feb3adf92bbd.txt) writes this as ``H(φ_i) ∘ V``; §4.3 there gathers only the
Fourier components a slice touches, and so does this module:

- each slice sample (pixel ``(i, j)`` ↔ frequency ``(kx, ky) = (j − D//2, i − D//2)`` in
  cycles/box) sits at the 3D position ``p = Rᵀ (kx, ky, 0) = kx·R[0] + ky·R[1]`` (in voxels
  from the centre, order (x, y, z); the volume is indexed ``[z, y, x]`` with DC at
  ``D//2``); its value is the trilinear interpolation of the **8 voxels around p** —
  nothing else of the volume is read. The forward gather runs as one
  ``grid_sample`` call on the ``B × P`` slice samples only (never a rotated ``D³`` grid);
  the adjoint scatters with explicit trilinear weights;
- samples outside the Nyquist disc ``|k| ≥ D/2`` are zero; neighbours that fall off the
  grid count as zero;
- :func:`insert_central_slices` scatters with the same weights (``index_add_``), so it is
  the exact adjoint: ``⟨P v, y⟩ = ⟨v, Pᵀ y⟩``. The autograd backward of
  :func:`extract_central_slices` *is* that adjoint (custom :class:`torch.autograd.Function`),
  and it also returns the gradient with respect to the rotations (through the trilinear
  weights) when they require grad.
"""

from __future__ import annotations

import torch

__all__ = ["extract_central_slices", "insert_central_slices", "slice_sample_mask"]

_CHUNK_SAMPLES = 1 << 21  # slice samples × 8 corners handled per vectorised step


def slice_sample_mask(d: int, *, device=None) -> torch.Tensor:
    """``(D, D)`` bool: the slice samples inside the Nyquist disc ``|k| < D/2`` (pixels)."""
    f = torch.arange(d, device=device, dtype=torch.float64) - d // 2
    r2 = f[None, :] ** 2 + f[:, None] ** 2
    return r2 < (d / 2.0) ** 2


def _disc_pixels(d: int, device, dtype):
    """Flat indices ``(P,)`` of the in-disc pixels and their frequencies ``kx, ky`` (P,)."""
    pix = torch.nonzero(slice_sample_mask(d, device=device).reshape(-1), as_tuple=False).squeeze(1)
    kx = (pix % d).to(dtype) - d // 2
    ky = torch.div(pix, d, rounding_mode="floor").to(dtype) - d // 2
    return pix, kx, ky


def _positions(rotations: torch.Tensor, kx: torch.Tensor, ky: torch.Tensor, d: int) -> torch.Tensor:
    """``(3, B, P)`` voxel positions (x, y, z) of the samples: ``Rᵀ (kx, ky, 0) + D//2``."""
    rot = rotations.to(kx.dtype)
    # p_a = kx * R[0, a] + ky * R[1, a]
    return rot[:, 0, :].T[:, :, None] * kx + rot[:, 1, :].T[:, :, None] * ky + d // 2


def _corner_offsets(dp: int, device) -> torch.Tensor:
    """``(8,)`` flat offsets of the corners ``(cz, cy, cx)`` in a ``dp³`` grid (cx fastest)."""
    c = torch.arange(2, device=device)
    return (c[:, None, None] * dp * dp + c[None, :, None] * dp + c[None, None, :]).reshape(8)


def _trilinear(pos: torch.Tensor, d: int, with_grad: bool = False):
    """Corner indices into the ``(D+1)³`` zero-padded grid and trilinear weights.

    Sample positions lie strictly inside ``(0, D)`` (|k| < D/2), so the upper neighbour is
    at most ``D``: the extra zero plane of the padded grid stands for "off the grid".
    Corner-major layout keeps every elementwise op contiguous over the samples.

    Returns ``idx (8, B, P)``, ``w (8, B, P)`` and, when ``with_grad``, ``dw/dpos (3, 8, B, P)``.
    """
    dp = d + 1
    base = torch.floor(pos).clamp_(0, d - 1)
    frac = pos - base  # (3, B, P)
    base = base.to(torch.long)
    flat = (base[2] * dp + base[1]) * dp + base[0]  # (B, P)
    idx = _corner_offsets(dp, pos.device)[:, None, None] + flat  # (8, B, P)
    wx = torch.stack([1.0 - frac[0], frac[0]])  # (2, B, P)
    wy = torch.stack([1.0 - frac[1], frac[1]])
    wz = torch.stack([1.0 - frac[2], frac[2]])
    wzy = wz[:, None] * wy[None, :]  # (2, 2, B, P)
    w = (wzy[:, :, None] * wx[None, None, :]).reshape(8, *flat.shape)
    if not with_grad:
        return idx, w, None
    sign = torch.tensor([-1.0, 1.0], dtype=pos.dtype, device=pos.device)[:, None, None]  # (2, 1, 1)
    ones = torch.ones_like(wx)
    dx = (wzy[:, :, None] * (sign * ones)[None, None, :]).reshape(8, *flat.shape)
    dy = (wz[:, None, None] * (sign * ones)[None, :, None] * wx[None, None, :]).reshape(8, *flat.shape)
    dz = ((sign * ones)[:, None, None] * wy[None, :, None] * wx[None, None, :]).reshape(8, *flat.shape)
    return idx, w, torch.stack([dx, dy, dz])


def _pad_volume(volume: torch.Tensor) -> torch.Tensor:
    """``(..., D, D, D)`` → ``(..., D+1, D+1, D+1)`` with a zero plane at the high end of each axis."""
    return torch.nn.functional.pad(volume, (0, 1, 0, 1, 0, 1))


def _split(x: torch.Tensor) -> list[torch.Tensor]:
    """Real channels of ``x`` as contiguous tensors: ``[re, im]`` for complex, ``[x]`` for real."""
    return [x.real.contiguous(), x.imag.contiguous()] if x.is_complex() else [x.contiguous()]


def _merge(channels: list[torch.Tensor]) -> torch.Tensor:
    return torch.complex(channels[0], channels[1]) if len(channels) == 2 else channels[0]


def _chunks(b: int, p: int):
    step = max(1, _CHUNK_SAMPLES // max(1, 8 * p))
    for start in range(0, b, step):
        yield slice(start, min(b, start + step))


def _volume_offsets(sl: slice, dp: int, device) -> torch.Tensor:
    return (torch.arange(sl.start, sl.stop, device=device) * dp**3)[:, None]  # (b, 1)


class _ExtractSlices(torch.autograd.Function):
    """``slices = P(R) volume`` with backward = ``Pᵀ`` (and ∂/∂R through the weights)."""

    @staticmethod
    def forward(ctx, volume_ft: torch.Tensor, rotations: torch.Tensor):
        d = volume_ft.shape[-1]
        b = rotations.shape[0]
        shared = volume_ft.dim() == 3
        real_dtype = volume_ft.real.dtype
        pix, kx, ky = _disc_pixels(d, volume_ft.device, real_dtype)
        pos = _positions(rotations.detach(), kx, ky, d)  # (3, B, P) voxel indices (x, y, z)
        # The gather of the 8 neighbours of each sample is done by grid_sample on the slice
        # samples only (one fused kernel); weights equal those of _trilinear, off-grid = 0.
        grid = (pos.permute(1, 2, 0) * (2.0 / (d - 1)) - 1.0).to(real_dtype)  # (B, P, 3)
        vols = volume_ft if not shared else volume_ft[None]  # (N, D, D, D)
        channels = torch.view_as_real(vols).permute(0, 4, 1, 2, 3) if vols.is_complex() else vols[:, None]
        channels = channels.contiguous()  # (N, C, D, D, D)
        if shared:
            grid = grid.reshape(1, b, 1, -1, 3)  # images as the output depth axis
        else:
            grid = grid.reshape(b, 1, 1, -1, 3)
        sampled = torch.nn.functional.grid_sample(channels, grid, mode="bilinear", padding_mode="zeros",
                                                  align_corners=True)
        sampled = sampled.reshape(channels.shape[1], b, -1) if shared else \
            sampled.reshape(b, channels.shape[1], -1).transpose(0, 1)  # (C, B, P)
        out = torch.zeros(channels.shape[1], b, d * d, dtype=real_dtype, device=volume_ft.device)
        out[:, :, pix] = sampled
        ctx.save_for_backward(volume_ft, rotations)
        slices = torch.complex(out[0], out[1]) if volume_ft.is_complex() else out[0]
        return slices.reshape(b, d, d)

    @staticmethod
    def backward(ctx, grad_slices: torch.Tensor):
        volume_ft, rotations = ctx.saved_tensors
        grad_volume = grad_rot = None
        d = volume_ft.shape[-1]
        dp = d + 1
        b = rotations.shape[0]
        shared = volume_ft.dim() == 3
        real_dtype = volume_ft.real.dtype
        pix, kx, ky = _disc_pixels(d, volume_ft.device, real_dtype)
        g_all = grad_slices.reshape(b, d * d)[:, pix]  # (B, P)
        if not volume_ft.is_complex() and g_all.is_complex():
            g_all = g_all.real
        g_ch = _split(g_all)
        want_vol, want_rot = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        n_vox = (1 if shared else volume_ft.shape[0]) * dp**3
        acc = [torch.zeros(n_vox, dtype=real_dtype, device=g_all.device) for _ in g_ch] if want_vol else None
        vol_ch = _split(_pad_volume(volume_ft).reshape(-1)) if want_rot else None
        grad_pos = torch.zeros(3, b, pix.shape[0], dtype=real_dtype, device=g_all.device) if want_rot else None
        for sl in _chunks(b, pix.shape[0]):
            idx, w, dw = _trilinear(_positions(rotations[sl].detach(), kx, ky, d), d, with_grad=want_rot)
            if not shared:
                idx = idx + _volume_offsets(sl, dp, idx.device)
            flat_idx = idx.reshape(-1)
            if want_vol:
                for a, gc in zip(acc, g_ch, strict=True):
                    a.index_add_(0, flat_idx, (w * gc[sl]).reshape(-1))
            if want_rot:
                # PyTorch convention for a real input: grad = Re(g · conj(∂out/∂input))
                contrib = sum(vc[idx] * gc[sl] for vc, gc in zip(vol_ch, g_ch, strict=True))  # (8, b, P)
                grad_pos[:, sl] = (dw * contrib).sum(1)
        if want_vol:
            grad_volume = _merge(acc).reshape(volume_ft.shape[:-3] + (dp, dp, dp))
            grad_volume = grad_volume[..., :d, :d, :d].to(volume_ft.dtype).contiguous()
        if want_rot:
            grad_rot = torch.zeros_like(rotations)
            grad_rot[:, 0, :] = (grad_pos * kx).sum(-1).T.to(rotations.dtype)
            grad_rot[:, 1, :] = (grad_pos * ky).sum(-1).T.to(rotations.dtype)
        return grad_volume, grad_rot


def _check_inputs(volume_shape, rotations: torch.Tensor, name: str) -> None:
    if rotations.dim() != 3 or rotations.shape[-2:] != (3, 3):
        raise ValueError(f"rotations must have shape (B, 3, 3), got {tuple(rotations.shape)}")
    if len(volume_shape) not in (3, 4) or len(set(volume_shape[-3:])) != 1:
        raise ValueError(f"{name} must be a cubic (D, D, D) or (B, D, D, D) array, got {tuple(volume_shape)}")
    if len(volume_shape) == 4 and volume_shape[0] not in (1, rotations.shape[0]):
        raise ValueError(f"{name} has {volume_shape[0]} volumes for {rotations.shape[0]} rotations")


def extract_central_slices(volume_ft: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Central slices of a centred 3D transform, by trilinear interpolation (sparse gather).

    Parameters
    ----------
    volume_ft
        ``(D, D, D)`` centred transform (from ``fft3_centered``), complex or real, indexed
        ``[z, y, x]``; or ``(B, D, D, D)``, one volume per rotation.
    rotations
        ``(B, 3, 3)`` poses (``core.rotation`` convention).

    Returns
    -------
    ``(B, D, D)`` centred 2D transforms: ``slices[b](k) = volume_ft(Rᵀ (kx, ky, 0))``,
    zero outside the Nyquist disc. Differentiable in ``volume_ft`` (backward =
    :func:`insert_central_slices`, exact adjoint) and in ``rotations``.
    The inverse centred 2D FFT of a slice is the projection ``Σ_z V`` (same units as the
    voxels, no ``apix`` factor).
    """
    _check_inputs(tuple(volume_ft.shape), rotations, "volume_ft")
    if volume_ft.dim() == 4 and volume_ft.shape[0] == 1:
        volume_ft = volume_ft[0]
    rotations = rotations.to(device=volume_ft.device)
    return _ExtractSlices.apply(volume_ft, rotations)


def insert_central_slices(
    slices_ft: torch.Tensor,
    rotations: torch.Tensor,
    d: int,
    *,
    slice_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Adjoint of :func:`extract_central_slices`: scatter slices into a 3D transform.

    Parameters
    ----------
    slices_ft
        ``(B, D, D)`` centred 2D transforms (complex or real).
    rotations
        ``(B, 3, 3)`` poses.
    d
        Volume edge length ``D`` (must equal the slices' size).
    slice_weights
        Optional ``(B, D, D)`` real per-sample weights to accumulate instead of ones (e.g.
        ``CTF²`` for a Wiener-normalised reconstruction).

    Returns
    -------
    volume_ft
        ``(D, D, D)`` ``Σ_b Pᵀ_b slices_b`` (trilinear weights, the exact adjoint).
    weights
        ``(D, D, D)`` real ``Σ_b Pᵀ_b slice_weights_b`` (the sum of trilinear weights each
        voxel received when ``slice_weights`` is None).
    """
    d = int(d)
    if slices_ft.dim() != 3 or slices_ft.shape[-2:] != (d, d):
        raise ValueError(f"slices_ft must have shape (B, {d}, {d}), got {tuple(slices_ft.shape)}")
    _check_inputs((d, d, d), rotations, "volume")
    if rotations.shape[0] != slices_ft.shape[0]:
        raise ValueError(f"{slices_ft.shape[0]} slices for {rotations.shape[0]} rotations")
    if slice_weights is not None and slice_weights.shape != slices_ft.shape:
        raise ValueError(f"slice_weights must have shape {tuple(slices_ft.shape)}, got {tuple(slice_weights.shape)}")
    b = slices_ft.shape[0]
    device = slices_ft.device
    real_dtype = slices_ft.real.dtype
    dp = d + 1
    pix, kx, ky = _disc_pixels(d, device, real_dtype)
    val_ch = _split(slices_ft.reshape(b, d * d)[:, pix])  # [(B, P)] real channels
    sw = None if slice_weights is None else slice_weights.reshape(b, d * d)[:, pix].to(device, real_dtype)
    acc = [torch.zeros(dp**3, dtype=real_dtype, device=device) for _ in range(len(val_ch) + 1)]
    rotations = rotations.to(device).detach()
    for sl in _chunks(b, pix.shape[0]):
        idx, w, _ = _trilinear(_positions(rotations[sl], kx, ky, d), d)
        flat_idx = idx.reshape(-1)
        for a, vc in zip(acc, val_ch, strict=False):
            a.index_add_(0, flat_idx, (w * vc[sl]).reshape(-1))
        acc[-1].index_add_(0, flat_idx, (w if sw is None else w * sw[sl]).reshape(-1))
    crop = [a.reshape(dp, dp, dp)[:d, :d, :d].contiguous() for a in acc]
    return _merge(crop[:-1]), crop[-1]
