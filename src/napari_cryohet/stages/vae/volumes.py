"""Latents out, volumes in real space: decoding latent points and the surface shown for a volume."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from napari_cryohet.core.vae_model import StructuralBasisVAE

__all__ = ["decode_volumes", "isosurface"]


def decode_volumes(model: StructuralBasisVAE, z: Any, *, batch: int = 8) -> np.ndarray:
    """Volumes at latent points: ``(B, zdim)`` → ``(B, D, D, D)`` float32 numpy."""
    z = torch.as_tensor(np.asarray(z, dtype=np.float32))
    if z.dim() == 1:
        z = z[None]
    if z.shape[-1] != model.shape.zdim:
        raise ValueError(f"z must have {model.shape.zdim} columns, got shape {tuple(z.shape)}")
    return model.decode_volume(z, batch=batch).cpu().numpy()


def isosurface(volume: np.ndarray, *, level_sigma: float = 2.0, apix: float = 1.0, smooth_voxels: float = 1.0):
    """Marching-cubes surface of a (Gaussian-smoothed) volume at ``mean + level_sigma · std``.

    Parameters
    ----------
    volume
        ``(D, D, D)`` real volume.
    level_sigma
        Iso-level in standard deviations above the mean (clipped into the data range).
    apix
        Voxel size: vertices are returned in Å (napari ``scale``-free surface coordinates).
    smooth_voxels
        σ (voxels) of a Gaussian applied first, so the surface of a single decoded volume
        follows the molecule rather than its high-frequency noise (0: none).

    Returns
    -------
    vertices ``(V, 3)`` float32 (z, y, x order, Å), faces ``(F, 3)`` int; empty arrays when
    the level is outside the data range.
    """
    from skimage.measure import marching_cubes

    vol = np.asarray(volume, dtype=np.float32)
    if smooth_voxels > 0:
        from scipy.ndimage import gaussian_filter

        vol = gaussian_filter(vol, float(smooth_voxels))
    level = float(vol.mean() + level_sigma * vol.std())
    lo, hi = float(vol.min()), float(vol.max())
    if not lo < level < hi:
        level = lo + 0.5 * (hi - lo)
    if hi <= lo:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64)
    verts, faces, _, _ = marching_cubes(vol, level=level, spacing=(apix, apix, apix))
    return verts.astype(np.float32), faces.astype(np.int64)
