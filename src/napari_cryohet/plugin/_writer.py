"""napari writer: an image layer as ``.mrc``/``.map`` (volume) or ``.mrcs`` (stack).

The voxel size is the layer's scale on its last axis (Å/px when the layer came from our
reader, which sets ``scale = apix``), falling back to ``metadata["apix"]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_mrc"]


def write_mrc(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 single-layer writer hook: write ``data`` to ``path``; returns ``[path]``.

    Parameters
    ----------
    path
        Target file; ``.mrcs`` writes a particle stack, ``.mrc``/``.map`` a volume
        (a 2D image is written as a one-section volume).
    data
        ``(Z, Y, X)`` or ``(Y, X)`` array-like (read here, in full).
    meta
        The layer attributes napari passes (``scale``, ``metadata``, ...).
    """
    from napari_cryohet.io.errors import ImageShapeError
    from napari_cryohet.io.mrc_stack import write_stack
    from napari_cryohet.io.mrc_volume import write_volume

    path = Path(path)
    array = np.asarray(data, dtype=np.float32)
    apix = _voxel_size(meta)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ImageShapeError(path, f"can only write 2D or 3D image layers, got shape {array.shape}")
    if path.suffix.lower() == ".mrcs":
        write_stack(path, array, apix)
    else:
        write_volume(path, array, apix)
    return [str(path)]


def _voxel_size(meta: dict) -> float:
    scale = meta.get("scale")
    if scale is not None and len(scale) and float(scale[-1]) > 0:
        return float(scale[-1])
    apix = (meta.get("metadata") or {}).get("apix")
    return float(apix) if apix else 1.0
