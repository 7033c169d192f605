"""MRC volumes (``.mrc``): read and write whole ``(D, D, D)`` maps indexed ``(z, y, x)``.

:func:`read_volume` checks the header
(:func:`~napari_cryohet.io.mrc_header.read_stack_header`, any box shape), copies the data
block out as float32 and checks it for NaN/inf
(:class:`~napari_cryohet.io.errors.NonFiniteImageError`); :func:`write_volume` writes a
float32 volume with its voxel size, atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mrcfile
import numpy as np

from napari_cryohet.io.atomic import atomic_path
from napari_cryohet.io.errors import ImageShapeError, NonFiniteImageError
from napari_cryohet.io.mrc_header import _mmap, read_stack_header
from napari_cryohet.io.mrc_stack import _to_numpy

__all__ = [
    "read_volume",
    "write_volume",
]


def read_volume(path: str | Path) -> tuple[np.ndarray, float | None]:
    """Read a volume ``(D, D, D)`` indexed ``(z, y, x)`` as float32, and its voxel size.

    Returns
    -------
    volume, apix
        ``apix`` is ``None`` when the header has no voxel size.
    """
    header = read_stack_header(path, require_even_square=False)
    mrc = _mmap(header.path)
    try:
        data = np.array(mrc.data, dtype=np.float32)
    finally:
        mrc.close()
    if data.ndim != 3:
        raise ImageShapeError(header.path, f"data of shape {data.shape}; a 3D volume is expected", field="nz")
    if not np.isfinite(data).all():
        raise NonFiniteImageError(header.path, "the volume contains NaN or infinite values", field="data")
    return data, header.apix


def write_volume(path: str | Path, volume: Any, apix: float) -> Path:
    """Write a ``(D, D, D)`` volume (``(z, y, x)``) as float32 MRC with voxel size ``apix`` (atomic)."""
    vol = _to_numpy(volume).astype(np.float32, copy=False)
    if vol.ndim != 3:
        raise ValueError(f"write_volume: volume must be 3D, got shape {vol.shape}")
    if not (apix > 0):
        raise ValueError(f"write_volume: apix must be positive, got {apix}")
    path = Path(path)
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(vol)
            mrc.set_volume()
            mrc.voxel_size = float(apix)
    return path

