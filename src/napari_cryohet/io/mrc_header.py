"""MRC headers: read and check the 1024-byte header of a ``.mrcs`` / ``.mrc`` file.

Stacks are never loaded whole (docs/design.md §3, §5): :func:`read_stack_header` reads the
header (plus a file-size check that catches truncated files) and nothing else, and returns
an :class:`MrcHeader`. Images are ``(D, D)`` indexed ``(y, x)``, square with an even edge
(docs/design.md conventions); other shapes raise
:class:`~napari_cryohet.io.errors.ImageShapeError`. The pixel size comes from the header
voxel size (``None`` when the header holds 0).

``_mmap`` memory-maps the data block (``mrcfile.mmap``, permissive on a second try) and
checks it is there; the lazy stacks of :mod:`napari_cryohet.io.mrc_stack` and
:func:`~napari_cryohet.io.mrc_volume.read_volume` open files through it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import mrcfile.utils
import numpy as np

from napari_cryohet.io.errors import (
    CorruptFileError,
    ImageShapeError,
    MissingFileError,
)

__all__ = [
    "MrcHeader",
    "read_stack_header",
]

_HEADER_BYTES = 1024


@dataclass(frozen=True)
class MrcHeader:
    """What the header of an MRC file says (read without touching the data block).

    Attributes
    ----------
    path
        The file.
    n_images, ny, nx
        ``nz`` (1 for a 2D file), rows and columns.
    mode
        MRC data mode (0 int8, 1 int16, 2 float32, 6 uint16, 12 float16).
    apix
        Voxel size along x in Å/px, ``None`` when the header holds 0 (unset).
    """

    path: Path
    n_images: int
    ny: int
    nx: int
    mode: int
    apix: float | None


def _open_header(path: Path):
    """``mrcfile.open(header_only=True)``, permissive on a second try (odd map IDs...)."""
    try:
        return mrcfile.open(path, mode="r", header_only=True)
    except ValueError:
        pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return mrcfile.open(path, mode="r", header_only=True, permissive=True)
    except (ValueError, OSError, EOFError) as exc:
        raise CorruptFileError(path, f"not a readable MRC file ({exc})", field="header") from None


def read_stack_header(path: str | Path, *, require_even_square: bool = True) -> MrcHeader:
    """Read and check an MRC header; the data block is not read.

    Checks: the file exists; the header parses; dimensions and mode are valid; the file
    is long enough for the data the header promises (catches truncated files); with
    ``require_even_square``, images are square with an even edge.

    Raises
    ------
    MissingFileError, CorruptFileError, ImageShapeError
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, "MRC file does not exist")
    with _open_header(path) as mrc:
        h = mrc.header
        nx, ny, nz = int(h.nx), int(h.ny), int(h.nz)
        mode, nsymbt = int(h.mode), int(h.nsymbt)
        voxel_x = float(mrc.voxel_size.x)
    for name, value in (("nx", nx), ("ny", ny), ("nz", nz)):
        if value <= 0:
            raise CorruptFileError(path, f"header dimension {name}={value}; expected a positive size", field=name)
    try:
        dtype = np.dtype(mrcfile.utils.dtype_from_mode(mode))
    except ValueError:
        raise CorruptFileError(path, f"unknown MRC data mode {mode}", field="mode") from None
    if dtype.kind == "c":
        raise CorruptFileError(path, f"complex data (mode {mode}); real-space images are expected", field="mode")
    if nsymbt < 0:
        raise CorruptFileError(path, f"negative extended header size {nsymbt}", field="nsymbt")
    expected = _HEADER_BYTES + nsymbt + nx * ny * nz * dtype.itemsize
    actual = path.stat().st_size
    if actual < expected:
        raise CorruptFileError(
            path,
            f"truncated file: the header promises {nz} image(s) of {ny}x{nx} px in mode {mode} "
            f"({expected} bytes) but the file has only {actual} bytes",
            field="nz",
        )
    if require_even_square:
        if nx != ny:
            raise ImageShapeError(path, f"images are {nx} x {ny} px (x by y); square images are required", field="nx/ny")
        if nx % 2:
            raise ImageShapeError(path, f"images are {nx} x {ny} px; an even box size is required", field="nx")
    apix = voxel_x if np.isfinite(voxel_x) and voxel_x > 0 else None
    return MrcHeader(path=path, n_images=nz, ny=ny, nx=nx, mode=mode, apix=apix)


def _mmap(path: Path):
    """``mrcfile.mmap(path)``; permissive on a second try; the data block must be there."""
    try:
        mrc = mrcfile.mmap(path, mode="r")
    except ValueError:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mrc = mrcfile.mmap(path, mode="r", permissive=True)
        except (ValueError, OSError) as exc:
            raise CorruptFileError(path, f"cannot memory-map the data block ({exc})", field="data") from None
    except OSError as exc:
        raise CorruptFileError(path, f"cannot memory-map the data block ({exc})", field="data") from None
    if mrc.data is None:
        mrc.close()
        raise CorruptFileError(path, "the data block is unreadable (truncated file?)", field="data")
    return mrc
