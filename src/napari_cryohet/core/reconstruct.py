"""Direct Fourier reconstruction: backprojection of images with known poses and CTF.

For each image the centred transform is unshifted (``+shifts_a``, undoing the forward
model's ``−shifts_a``), multiplied by its CTF and inserted into a 3D transform with
:func:`napari_cryohet.core.slice.insert_central_slices`; the weights collect ``CTF²``
(or 1 without CTF) with the same trilinear kernel. The volume transform is the Wiener-like
ratio ``Σ CTF·Y / (Σ CTF² + ε)`` (eq. 1 of 004_0460feb3adf92bbd.txt inverted per Fourier
voxel), zero outside the Nyquist sphere, with ``ε = wiener_eps × mean(weights)``.

Images are zero-padded to ``pad_factor·D`` before insertion (RELION's padding factor 2):
the finer Fourier grid makes the trilinear insertion kernel act over half a reciprocal
voxel of the original box.

The sums are additive over particles, so a reconstruction can be shared among processes:
:func:`backproject_shard` sums one contiguous shard (:func:`shard_rows`), the shards' sums
are added (an all-reduce under ``torchrun``, :mod:`napari_cryohet.stages.distributed`, or
saved partial sums added later) and :func:`volume_from_sums` divides once.
"""

from __future__ import annotations

import torch

from napari_cryohet.core.ctf import CTF_KEYS, compute_ctf_2d
from napari_cryohet.core.fft import fft2_centered, fftfreq_grid_3d, ifft3_centered, phase_shift_2d
from napari_cryohet.core.slice import insert_central_slices

__all__ = ["reconstruct_volume", "backproject_images", "backproject_shard", "shard_rows", "volume_from_sums"]


def _as_tensor(x, device, dtype):
    if x is None:
        return None
    return torch.as_tensor(x, device=device, dtype=dtype)


def backproject_images(
    images,
    rotations,
    *,
    apix: float,
    ctf: dict | None = None,
    shifts_a=None,
    pad_factor: int = 2,
    batch: int = 256,
    device: str | torch.device | None = None,
    weights=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Accumulate ``Σ w·CTF·Y`` and ``Σ w·CTF²`` on the padded 3D Fourier grid.

    Parameters are those of :func:`reconstruct_volume`, plus ``weights``: ``None`` or
    ``(N,)`` non-negative per-particle weights (e.g. a cluster's soft memberships).
    Returns ``(numerator, weights)``, both ``(pad_factor·D,)*3`` (complex and real), so that
    several calls (e.g. streamed batches, half sets) can be summed before
    :func:`volume_from_sums`.
    """
    if isinstance(images, torch.Tensor):
        dev = torch.device(device) if device is not None else images.device
    else:
        dev = torch.device(device) if device is not None else torch.device("cpu")
    n = images.shape[0]
    d = int(images.shape[-1])
    if len(images.shape) != 3 or images.shape[-2] != d:
        raise ValueError(f"images must have shape (N, D, D), got {tuple(images.shape)}")
    if float(apix) <= 0:
        raise ValueError(f"apix must be positive, got {apix}")
    if int(pad_factor) < 1:
        raise ValueError(f"pad_factor must be an integer ≥ 1, got {pad_factor}")
    rotations = torch.as_tensor(rotations)
    if rotations.shape != (n, 3, 3):
        raise ValueError(f"rotations must have shape ({n}, 3, 3), got {tuple(rotations.shape)}")
    if weights is not None and tuple(weights.shape) != (n,):
        raise ValueError(f"weights must have shape ({n},), got {tuple(weights.shape)}")
    if shifts_a is not None and tuple(shifts_a.shape) != (n, 2):
        raise ValueError(f"shifts_a must have shape ({n}, 2), got {tuple(shifts_a.shape)}")
    if ctf is not None:
        unknown = set(ctf) - set(CTF_KEYS)
        if unknown:
            raise ValueError(f"ctf has unknown keys {sorted(unknown)}; expected {CTF_KEYS}")
    dp = d * int(pad_factor)
    lo = dp // 2 - d // 2
    dtype = torch.float32
    if isinstance(images, torch.Tensor) and images.dtype == torch.float64:
        dtype = torch.float64
    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    numerator = torch.zeros(dp, dp, dp, dtype=cdtype, device=dev)
    total = torch.zeros(dp, dp, dp, dtype=dtype, device=dev)
    particle_w = None if weights is None else _as_tensor(weights, dev, dtype)
    for start in range(0, n, max(1, int(batch))):
        stop = min(n, start + max(1, int(batch)))
        img = _as_tensor(images[start:stop], dev, dtype)  # (b, D, D)
        padded = torch.zeros(stop - start, dp, dp, dtype=dtype, device=dev)
        padded[:, lo:lo + d, lo:lo + d] = img
        spectra = fft2_centered(padded)  # (b, dp, dp)
        if shifts_a is not None:
            shifts = _as_tensor(shifts_a[start:stop], dev, dtype)
            spectra = phase_shift_2d(spectra, shifts / float(apix))
        slice_weights = None
        w = None if particle_w is None else particle_w[start:stop, None, None]  # (b, 1, 1)
        if ctf is not None:
            params = {}
            for key, value in ctf.items():
                value = torch.as_tensor(value, device=dev, dtype=dtype)
                params[key] = value[start:stop] if value.dim() > 0 else value
            # the padded grid samples frequencies at 1/(dp·apix): same CTF at apix·d/dp per padded pixel
            c = compute_ctf_2d(dp, float(apix), device=dev, **params).expand(stop - start, dp, dp)
            spectra = spectra * c
            slice_weights = c * c
        if w is not None:
            spectra = spectra * w
            slice_weights = (w if slice_weights is None else slice_weights * w).expand(stop - start, dp, dp)
            slice_weights = slice_weights.contiguous()
        rot = _as_tensor(rotations[start:stop], dev, dtype)
        num_b, w_b = insert_central_slices(spectra, rot, dp, slice_weights=slice_weights)
        numerator += num_b
        total += w_b
    return numerator, total


def shard_rows(n: int, rank: int, world_size: int) -> slice:
    """Rows of shard ``rank`` of ``world_size``: contiguous, sizes differing by at most one
    (as ``np.array_split``), together every row once."""
    n, rank, world_size = int(n), int(rank), int(world_size)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"shard {rank} of {world_size}: need 0 ≤ rank < world_size")
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def backproject_shard(images, rotations, *, rank: int, world_size: int, ctf: dict | None = None, shifts_a=None,
                      weights=None, **options) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`backproject_images` of shard ``rank`` of ``world_size`` of the particles (:func:`shard_rows`).

    Only that shard's images are read from a lazy stack. ``options`` are
    :func:`backproject_images`' (``apix``, ``pad_factor``, ``batch``, ``device``). The
    shards' sums added equal the sums of all particles (up to float summation order);
    an empty shard gives zero sums.
    """
    rows = shard_rows(images.shape[0], rank, world_size)
    ctf_part = None
    if ctf is not None:
        ctf_part = {}
        for key, value in ctf.items():
            value = torch.as_tensor(value)
            ctf_part[key] = value[rows] if value.dim() > 0 else value
    return backproject_images(
        images[rows], torch.as_tensor(rotations)[rows], ctf=ctf_part,
        shifts_a=None if shifts_a is None else shifts_a[rows], weights=None if weights is None else weights[rows],
        **options)


def volume_from_sums(numerator: torch.Tensor, weights: torch.Tensor, d: int, *, wiener_eps: float = 1e-3) -> torch.Tensor:
    """The volume from :func:`backproject_images`' sums: ``Σ CTF·Y / (Σ CTF² + ε)`` per Fourier
    voxel (zero beyond Nyquist), back to real space and cropped to ``(d,)*3``."""
    dp = numerator.shape[-1]
    filled = weights > 0
    mean_w = weights[filled].mean() if bool(filled.any()) else torch.ones((), dtype=weights.dtype)
    volume_ft = numerator / (weights + float(wiener_eps) * mean_w)
    radius = fftfreq_grid_3d(dp, device=weights.device, dtype=weights.dtype).norm(dim=-1) * dp
    volume_ft = torch.where(radius < dp / 2.0, volume_ft, torch.zeros_like(volume_ft))
    volume = ifft3_centered(volume_ft).real  # the zero-padded volume (slices of padded images)
    lo = dp // 2 - d // 2
    return volume[lo:lo + d, lo:lo + d, lo:lo + d].contiguous()


def reconstruct_volume(
    images,
    rotations,
    *,
    apix: float,
    ctf: dict | None = None,
    shifts_a=None,
    batch: int = 256,
    pad_factor: int = 2,
    wiener_eps: float = 1e-3,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Reconstruct a volume from images with known poses (and CTF, shifts).

    Parameters
    ----------
    images
        ``(N, D, D)`` real images (tensor, ndarray or lazy stack with numpy indexing).
    rotations
        ``(N, 3, 3)`` poses (``core.rotation`` convention).
    apix
        Pixel size in Å.
    ctf
        ``None`` or a dict of ``(N,)`` CTF parameters keyed like ``compute_ctf_2d``
        (``CTFParams.to_torch()`` / ``.as_dict()``).
    shifts_a
        ``None`` or ``(N, 2)`` RELION origins in Å (see ``core.projection``).
    batch
        Images per insertion step.
    pad_factor
        Zero-padding of images and 3D grid (1 or 2; 2 is more accurate).
    wiener_eps
        Regulariser of the division, relative to the mean weight of the filled voxels.
    device
        Where to compute; defaults to the images' device (CPU for numpy input).

    Returns
    -------
    ``(D, D, D)`` real volume indexed ``[z, y, x]`` in the units of the images' voxel
    sums: reconstructing projections of ``gaussian_density_3d`` returns that density.
    """
    numerator, weights = backproject_images(
        images, rotations, apix=apix, ctf=ctf, shifts_a=shifts_a, pad_factor=pad_factor, batch=batch,
        device=device,
    )
    return volume_from_sums(numerator, weights, int(images.shape[-1]), wiener_eps=wiener_eps)
