"""Fourier shell correlation between two volumes and the resolution at a threshold.

``FSC(s) = Re Σ_{|k|∈s} A(k) B*(k) / sqrt(Σ_s |A|² · Σ_s |B|²)`` over shells of width one
Fourier voxel (shell ``s`` holds the voxels whose radius rounds to ``s``), ``s = 0 … D/2``,
at frequency ``s / D`` cycles/voxel. The resolution is ``apix / f`` where ``f`` is the
first crossing of the threshold (0.143 for half maps, 0.5 against a reference), linearly
interpolated between shells.
"""

from __future__ import annotations

import numpy as np
import torch

from napari_cryohet.core.fft import fft3_centered, fftfreq_grid_3d

__all__ = ["fourier_radius_px", "shell_index", "fourier_shell_correlation", "resolution_at"]


def fourier_radius_px(d: int, device=None) -> torch.Tensor:
    """``(D, D, D)`` radius of each centred Fourier voxel, in Fourier voxels (float64)."""
    return fftfreq_grid_3d(d, device=device, dtype=torch.float64).norm(dim=-1) * d


def shell_index(d: int, device=None) -> torch.Tensor:
    """``(D, D, D)`` Fourier shell of each centred voxel: its rounded radius (the shells of
    :func:`fourier_shell_correlation`; shell ``s`` is frequency ``s / D``)."""
    return torch.round(fourier_radius_px(d, device)).to(torch.long)


def fourier_shell_correlation(vol_a, vol_b):
    """FSC between two real ``(D, D, D)`` volumes.

    Parameters
    ----------
    vol_a, vol_b
        ``(D, D, D)`` real volumes (numpy or torch), same shape, indexed ``[z, y, x]``.

    Returns
    -------
    freq_per_px
        ``(S,)`` shell frequencies ``s / D`` in cycles/voxel, ``S = D // 2 + 1``.
    fsc
        ``(S,)`` correlation per shell (1 for identical volumes; a shell with no power
        gives 0). numpy arrays when both inputs are numpy, else torch tensors (float64).
    """
    as_numpy = not isinstance(vol_a, torch.Tensor) and not isinstance(vol_b, torch.Tensor)
    a = torch.as_tensor(np.asarray(vol_a) if not isinstance(vol_a, torch.Tensor) else vol_a)
    b = torch.as_tensor(np.asarray(vol_b) if not isinstance(vol_b, torch.Tensor) else vol_b)
    if a.shape != b.shape:
        raise ValueError(f"vol_a and vol_b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dim() != 3 or len(set(a.shape)) != 1:
        raise ValueError(f"volumes must be cubic (D, D, D), got {tuple(a.shape)}")
    b = b.to(a.device)
    a = a.to(torch.float64)
    b = b.to(torch.float64)
    d = a.shape[-1]
    fa = fft3_centered(a).reshape(-1)
    fb = fft3_centered(b).reshape(-1)
    shell = shell_index(d, a.device).reshape(-1)
    n_shells = d // 2 + 1
    keep = shell < n_shells
    shell, fa, fb = shell[keep], fa[keep], fb[keep]
    cross = torch.zeros(n_shells, dtype=torch.float64, device=a.device)
    pa = torch.zeros_like(cross)
    pb = torch.zeros_like(cross)
    cross.index_add_(0, shell, (fa * fb.conj()).real)
    pa.index_add_(0, shell, fa.abs() ** 2)
    pb.index_add_(0, shell, fb.abs() ** 2)
    denom = torch.sqrt(pa * pb)
    fsc = torch.where(denom > 0, cross / torch.where(denom > 0, denom, torch.ones_like(denom)), torch.zeros_like(denom))
    freq = torch.arange(n_shells, dtype=torch.float64, device=a.device) / d
    if as_numpy:
        return freq.cpu().numpy(), fsc.cpu().numpy()
    return freq, fsc


def resolution_at(freq_per_px, fsc, *, apix: float, threshold: float = 0.143) -> float:
    """Resolution in Å where the FSC first falls below ``threshold``.

    The crossing frequency is interpolated linearly between the last shell above and the
    first shell below the threshold (shell 0, the DC term, is skipped).

    Parameters
    ----------
    freq_per_px, fsc
        ``(S,)`` from :func:`fourier_shell_correlation`.
    apix
        Voxel size in Å.
    threshold
        0.143 (gold-standard half maps) or 0.5 (against a reference).

    Returns
    -------
    ``apix / f_cross`` in Å; ``apix / f_max`` (the Nyquist-limited value) when the curve never
    falls below the threshold; ``inf`` when it is below already at the first shell.
    """
    if float(apix) <= 0:
        raise ValueError(f"apix must be positive, got {apix}")
    f = np.asarray(freq_per_px.cpu() if isinstance(freq_per_px, torch.Tensor) else freq_per_px, dtype=np.float64)
    c = np.asarray(fsc.cpu() if isinstance(fsc, torch.Tensor) else fsc, dtype=np.float64)
    if f.shape != c.shape or f.ndim != 1 or len(f) < 2:
        raise ValueError("freq_per_px and fsc must be 1D arrays of the same length (≥ 2)")
    below = np.nonzero(c[1:] < threshold)[0]
    if len(below) == 0:
        return float(apix) / float(f[-1])
    i = int(below[0]) + 1
    if i == 1 and c[0] < threshold:
        return float("inf")
    f0, f1, c0, c1 = f[i - 1], f[i], c[i - 1], c[i]
    t = (c0 - threshold) / (c0 - c1) if c0 != c1 else 0.0
    f_cross = f0 + t * (f1 - f0)
    if f_cross <= 0:
        return float("inf")
    return float(apix) / float(f_cross)
