"""Which class map explains each particle image best: log-likelihoods of images under maps.

RELION's 3D classification (Scheres 2012, J. Mol. Biol. 415:406, eq. 2–4) assigns each
particle to the class map whose projection explains its image best. With the particle's
pose fixed (the clustering/refinement loop has just refined it locally), that is one
projection per particle and class, compared in Fourier space with the same white-noise model
as :mod:`napari_cryohet.core.local_refine`::

    log p(y | class k) = −Σ_k |Y(k) − CTF(k)·S_{R,k}(k)·e^{2πi k·s}|² / σ²   (both half-planes)

over the pixels ``0 < |k| ≤ apix / max_resolution_a``, with ``σ²`` measured on the image's
background unless given. The slices are read by the same sparse trilinear gather as the
local refinement (only the compared pixels). Add ``log π_k`` (the class's share of the
particles) for the posterior class probabilities.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from napari_cryohet.core.device import select_device
from napari_cryohet.core.fft import fft2_centered
from napari_cryohet.core.local_refine import (
    SliceModel,
    background_noise_variance,
    check_ctf,
    ctf_at_pixels,
    shift_phases,
)

__all__ = ["map_log_likelihoods"]


def map_log_likelihoods(
    images,
    rotations,
    shifts_a,
    ctf: dict | None,
    maps,
    *,
    apix: float,
    max_resolution_a: float,
    noise_variance: float | None = None,
    pad_factor: int | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 256,
    cancel: Callable[[], None] | None = None,
) -> torch.Tensor:
    """``(N, K)`` log-likelihood of each image under each of ``K`` maps at the image's pose.

    Parameters
    ----------
    images
        ``(N, D, D)`` real particle images (tensor, ndarray or lazy stack with numpy indexing).
    rotations, shifts_a
        ``(N, 3, 3)`` poses and ``(N, 2)`` RELION origins in Å.
    ctf
        ``None`` or a dict of ``(N,)`` CTF parameters keyed like ``compute_ctf_2d``.
    maps
        ``(K, D, D, D)`` real maps indexed ``[z, y, x]``, in the units of the images' voxel sums
        (as reconstructed from these images).
    apix
        Pixel size in Å.
    max_resolution_a
        Only Fourier pixels with ``|k| ≤ 1/max_resolution_a`` are compared.
    noise_variance
        White noise variance per Fourier pixel; None: each image's background
        (:func:`~napari_cryohet.core.local_refine.background_noise_variance`).
    pad_factor
        Zero padding of each map before its transform (None: 3 up to 128 px, else 2).
    device, batch_size, cancel
        Where to compute, particles per batch, called once per batch (raises to stop).

    Returns
    -------
    ``(N, K)`` float64 on the CPU (differences between classes are what matter).
    """
    dev = select_device(device)
    n = int(images.shape[0])
    if len(images.shape) != 3 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"images must have shape (N, D, D), got {tuple(images.shape)}")
    d = int(images.shape[-1])
    rot = torch.as_tensor(rotations).detach().to("cpu", torch.float64)
    sh = torch.as_tensor(shifts_a).detach().to("cpu", torch.float64)
    if rot.shape != (n, 3, 3) or sh.shape != (n, 2):
        raise ValueError(f"rotations and shifts_a must have shapes ({n}, 3, 3) and ({n}, 2), got "
                         f"{tuple(rot.shape)} and {tuple(sh.shape)}")
    vols = torch.as_tensor(maps)
    if vols.dim() != 4 or tuple(vols.shape[1:]) != (d, d, d):
        raise ValueError(f"maps must have shape (K, {d}, {d}, {d}), got {tuple(vols.shape)}")
    if not bool(torch.isfinite(vols).all()):
        raise ValueError("maps contain non-finite values")
    if float(apix) <= 0 or float(max_resolution_a) <= 0:
        raise ValueError(f"apix and max_resolution_a must be positive, got {apix} and {max_resolution_a}")
    check_ctf(ctf, n)
    pad = (3 if d <= 128 else 2) if pad_factor is None else int(pad_factor)
    dtype = torch.float64 if vols.dtype == torch.float64 else torch.float32
    k_max = min(float(apix) / float(max_resolution_a), 0.5)
    out = torch.zeros(n, vols.shape[0], dtype=torch.float64)
    bs = max(1, int(batch_size))
    for j in range(vols.shape[0]):
        model = SliceModel(vols[j].to(dev, dtype), d, k_max, pad)
        for start in range(0, n, bs):
            if cancel is not None:
                cancel()
            idx = torch.arange(start, min(n, start + bs))
            img = torch.as_tensor(images[idx.numpy()] if not isinstance(images, torch.Tensor) else images[idx])
            img = img.to(dev, dtype)
            y = fft2_centered(img).reshape(len(idx), d * d)[:, model.pix]
            if noise_variance is None:
                var = background_noise_variance(img)
                var = var.clamp_min(1e-6 * float(var.max()) + 1e-30).to(dtype)
            else:
                var = torch.full((len(idx),), float(noise_variance), device=dev, dtype=dtype)
            m = model.spectra(rot[idx].to(dev, dtype))
            c = ctf_at_pixels(ctf, idx, d, float(apix), dev, dtype, model.pix)
            if c is not None:
                m = m * c
            m = m * shift_phases(model.k, (sh[idx] / float(apix)).to(dev, dtype))
            out[idx, j] = (-((y - m).abs() ** 2).sum(-1) / var).to("cpu", torch.float64)
    return out
