"""Gold-standard half sets and half-map reconstruction (Silvera Coeff 2025, §2.7, §4.1).

The particles are split once, for the whole run, into two half sets (RELION's
``rlnRandomSubset``, values 1 and 2); each half set is reconstructed on its own, so the
FSC between the two half maps measures the reproducibility of independent halves (the
"gold-standard" FSC, threshold 0.143; Silvera Coeff 2025, §2.7). The full map uses all
particles: its Fourier sums are those of the two halves added, divided once.

Reconstruction is :func:`napari_cryohet.core.reconstruct.backproject_images` (CTF-Wiener
Fourier backprojection). Per-particle weights (e.g. GMM memberships) multiply each image's
contribution ``CTF·Y`` *and* its ``CTF²`` weight (``backproject_images(weights=...)``), so
a particle with weight ``w`` counts as ``w`` of a particle in the Wiener ratio
``Σ w·CTF·Y / (Σ w·CTF² + ε)``; with all weights 1 the sums equal the unweighted ones
(tested).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from napari_cryohet.core.ctf import CTF_KEYS
from napari_cryohet.core.device import select_device
from napari_cryohet.core.reconstruct import backproject_images, volume_from_sums

__all__ = ["HalfSetError", "assign_half_sets", "reconstruct_half_maps"]


class HalfSetError(ValueError):
    """A half-set column (``rlnRandomSubset``) that is not 1/2 per particle."""


def assign_half_sets(n: int, *, seed: int, existing=None) -> np.ndarray:
    """Gold-standard half-set labels, fixed once for a run.

    Parameters
    ----------
    n
        Number of particles.
    seed
        Seed of the random split (ignored when ``existing`` is given).
    existing
        ``None`` or an ``(n,)`` column of labels already on file (RELION's
        ``rlnRandomSubset``); it is validated and returned as it is.

    Returns
    -------
    ``(n,)`` int64 array with values in ``{1, 2}``. A fresh split is balanced
    (``|n₁ − n₂| ≤ 1``) and a deterministic function of ``(n, seed)``.

    Raises
    ------
    HalfSetError
        ``existing`` has the wrong length, non-integer values, or values other than 1 and 2.
    """
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be ≥ 0, got {n}")
    if existing is not None:
        col = np.asarray(existing)
        if col.shape != (n,):
            raise HalfSetError(f"rlnRandomSubset must have shape ({n},), got {col.shape}")
        try:
            values = col.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise HalfSetError(f"rlnRandomSubset must hold the integers 1 and 2, got dtype {col.dtype}") from exc
        bad = ~np.isin(values, (1.0, 2.0))
        if bad.any():
            shown = np.unique(col[bad])[:5].tolist()
            raise HalfSetError(
                f"rlnRandomSubset must hold only 1 and 2; {int(bad.sum())} particles have other values, e.g. {shown}"
            )
        return values.astype(np.int64)
    labels = np.tile(np.array([1, 2], dtype=np.int64), (n + 1) // 2)[:n]
    return np.random.default_rng(seed).permutation(labels)


def _take(x, idx: np.ndarray):
    """Rows ``idx`` of a tensor, array or lazy stack (numpy fancy indexing)."""
    if isinstance(x, torch.Tensor):
        return x[torch.as_tensor(idx, device=x.device, dtype=torch.long)]
    return x[idx]


def _take_ctf(ctf: dict | None, idx: np.ndarray) -> dict | None:
    if ctf is None:
        return None
    out = {}
    for key, value in ctf.items():
        value = torch.as_tensor(value)
        out[key] = value[torch.as_tensor(idx, dtype=torch.long, device=value.device)] if value.dim() > 0 else value
    return out


def reconstruct_half_maps(
    images,
    rotations,
    shifts_a,
    ctf: dict | None,
    apix: float,
    half_sets,
    *,
    weights=None,
    device: str | torch.device | None = None,
    pad_factor: int = 2,
    batch: int = 256,
    wiener_eps: float = 1e-3,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reconstruct the two gold-standard half maps and the full map.

    Parameters
    ----------
    images
        ``(N, D, D)`` real images (tensor, ndarray or lazy stack with numpy indexing).
    rotations
        ``(N, 3, 3)`` poses (:mod:`napari_cryohet.core.rotation` convention).
    shifts_a
        ``None`` or ``(N, 2)`` RELION origins in Å (see :mod:`napari_cryohet.core.projection`).
    ctf
        ``None`` or a dict of ``(N,)`` CTF parameters keyed like ``compute_ctf_2d``.
    apix
        Pixel size in Å.
    half_sets
        ``(N,)`` labels in ``{1, 2}`` from :func:`assign_half_sets`.
    weights
        ``None`` or ``(N,)`` non-negative per-particle weights (e.g. one cluster's GMM
        memberships); particles with weight 0 are skipped.
    device
        Where to compute; ``None`` picks CUDA when present (:func:`select_device`).
    pad_factor, batch, wiener_eps
        As :func:`napari_cryohet.core.reconstruct.reconstruct_volume`.
    reduce
        ``None``, or a function applied to each half set's two backprojection sums
        (``Σ w·CTF·Y`` and ``Σ w·CTF²``) before the division: when several processes each
        pass their own share of the particles, a sum over the processes
        (``stages/distributed.py``, ``all_reduce_``) makes every process's maps those of all
        particles. Every process then calls it for both halves, also with no particle.

    Returns
    -------
    map_a, map_b, map_full
        ``(D, D, D)`` real volumes on ``device``: half set 1, half set 2 and all particles
        (the Wiener ratio of the summed half-set sums). A half set with no particle (or
        zero total weight) gives a zero map.
    """
    n = int(images.shape[0])
    d = int(images.shape[-1])
    if len(images.shape) != 3 or images.shape[-2] != d:
        raise ValueError(f"images must have shape (N, D, D), got {tuple(images.shape)}")
    if float(apix) <= 0:
        raise ValueError(f"apix must be positive, got {apix}")
    halves = np.asarray(half_sets.cpu() if isinstance(half_sets, torch.Tensor) else half_sets)
    if halves.shape != (n,):
        raise ValueError(f"half_sets must have shape ({n},), got {halves.shape}")
    if not np.isin(halves, (1, 2)).all():
        raise HalfSetError("half_sets must hold only 1 and 2")
    if tuple(torch.as_tensor(rotations).shape) != (n, 3, 3):
        raise ValueError(f"rotations must have shape ({n}, 3, 3), got {tuple(torch.as_tensor(rotations).shape)}")
    if shifts_a is not None and tuple(shifts_a.shape) != (n, 2):
        raise ValueError(f"shifts_a must have shape ({n}, 2), got {tuple(shifts_a.shape)}")
    if ctf is not None and set(ctf) - set(CTF_KEYS):
        raise ValueError(f"ctf has unknown keys {sorted(set(ctf) - set(CTF_KEYS))}; expected {CTF_KEYS}")
    w_np = None
    if weights is not None:
        w_np = np.asarray(weights.detach().cpu() if isinstance(weights, torch.Tensor) else weights, dtype=np.float64)
        if w_np.shape != (n,):
            raise ValueError(f"weights must have shape ({n},), got {w_np.shape}")
        if not np.isfinite(w_np).all() or (w_np < 0).any():
            raise ValueError("weights must be finite and non-negative")
    dev = select_device(device)
    sums = []
    for label in (1, 2):
        keep = halves == label
        if w_np is not None:
            keep &= w_np > 0
        idx = np.nonzero(keep)[0]
        if len(idx) == 0 and reduce is None:
            sums.append(None)
            continue
        args = dict(apix=apix, ctf=_take_ctf(ctf, idx), shifts_a=None if shifts_a is None else _take(shifts_a, idx),
                    pad_factor=pad_factor, batch=batch, device=dev)
        imgs, rots = _take(images, idx), _take(torch.as_tensor(rotations), idx)
        num, den = backproject_images(imgs, rots, weights=None if w_np is None else w_np[idx], **args)
        if reduce is not None:
            num, den = reduce(num), reduce(den)
            if not bool((den > 0).any()):  # no particle in this half set on any process
                sums.append(None)
                continue
        sums.append((num, den))
    maps = []
    for s in sums:
        maps.append(torch.zeros(d, d, d, device=dev) if s is None else volume_from_sums(*s, d, wiener_eps=wiener_eps))
    present = [s for s in sums if s is not None]
    if not present:
        full = torch.zeros(d, d, d, device=dev)
    else:
        num = sum(s[0] for s in present)
        wsum = sum(s[1] for s in present)
        full = volume_from_sums(num, wsum, d, wiener_eps=wiener_eps)
    return maps[0], maps[1], full
