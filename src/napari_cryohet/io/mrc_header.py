"""MRC headers: read and check the 1024-byte header of a ``.mrcs`` / ``.mrc`` file.

Stacks are never loaded whole (docs/design.md §3, §5): :func:`read_stack_header` reads the
header (plus a file-size check that catches truncated files) and nothing else, and returns
an :class:`MrcHeader`. Images are ``(D, D)`` indexed ``(y, x)``, square with an even edge
(docs/design.md conventions); other shapes raise
:class:`~napari_cryohet.io.errors.ImageShapeError`. The pixel size comes from the header
voxel size (``None`` when the header holds 0).

The header is untrusted: every field that sizes a read (``nx``, ``ny``, ``nz``, ``mode``,
``nsymbt``) is checked against the file size before anything is read, so a random or
crafted file costs the 1024 header bytes (no allocation sized by the header). ``_mmap``
memory-maps the data block of a checked file (``mrcfile.mmap``); the lazy stacks of :mod:`napari_cryohet.io.mrc_stack` and
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
    require_file,
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


def _parse_header(path: Path, raw: bytes) -> np.recarray:
    """The 1024 header bytes as mrcfile's ``HEADER_DTYPE`` record, in the file's byte order.

    The byte order comes from the machine stamp; when the stamp is unrecognised (as
    ``mrcfile``'s permissive mode does) the order in which the mode is a known MRC mode wins.
    """
    header = np.frombuffer(raw, dtype=mrcfile.dtypes.HEADER_DTYPE).reshape(()).view(np.recarray)
    try:
        orders = [mrcfile.utils.byte_order_from_machine_stamp(header.machst)]
    except ValueError:
        orders = []
    orders += [o for o in ("<", ">") if o not in orders]
    for order in orders:
        h = header.view(header.dtype.newbyteorder(order)).view(np.recarray)
        try:
            mrcfile.utils.dtype_from_mode(h.mode)
            return h
        except ValueError:
            continue
    return header.view(header.dtype.newbyteorder(orders[0])).view(np.recarray)


def _read_header_bytes(path: Path) -> tuple[np.recarray, int]:
    """Read the 1024 header bytes (and nothing else) and the file size."""
    size = path.stat().st_size
    if size < _HEADER_BYTES:
        raise CorruptFileError(path, f"not an MRC file: {size} bytes, shorter than the {_HEADER_BYTES}-byte "
                               "MRC header", field="header")
    with open(path, "rb") as f:
        raw = f.read(_HEADER_BYTES)
    return _parse_header(path, raw), size


def _fitting_modes(data_bytes: int, n_values: int) -> list[str]:
    """The MRC modes whose pixel size makes ``n_values`` values fill exactly ``data_bytes``."""
    fits = []
    for mode in (0, 1, 2, 6, 12):
        dtype = np.dtype(mrcfile.utils.dtype_from_mode(mode))
        if n_values * dtype.itemsize == data_bytes:
            fits.append(f"mode {mode} ({dtype.name})")
    return fits


def _check_header(path: Path, h: np.recarray, size: int) -> tuple[int, int, int, np.dtype, int]:
    """:func:`_check_fields`; when a check fails and the file lacks the ``MAP`` identifier
    (bytes 208–211), the message says the file is probably not an MRC file at all."""
    try:
        return _check_fields(path, h, size)
    except CorruptFileError as exc:
        if bytes(h.map)[:3] == b"MAP":
            raise
        raise CorruptFileError(path, f"{exc.problem}; the file has no 'MAP' identifier at byte 208, so it is "
                               "probably not an MRC file", field=exc.field) from None


def _check_fields(path: Path, h: np.recarray, size: int) -> tuple[int, int, int, np.dtype, int]:
    """Check the fields that size anything against the file size; ``(nx, ny, nz, dtype, nsymbt)``.

    Everything here is Python-int arithmetic on header fields, done before any read that a
    field sizes (a crafted ``nsymbt`` or ``nz`` must not make us allocate or map gigabytes).
    """
    nx, ny, nz = int(h.nx), int(h.ny), int(h.nz)
    mode, nsymbt = int(h.mode), int(h.nsymbt)
    for name, value in (("nx", nx), ("ny", ny), ("nz", nz)):
        if value <= 0:
            raise CorruptFileError(path, f"header dimension {name}={value}; expected a positive size", field=name)
    try:
        dtype = np.dtype(mrcfile.utils.data_dtype_from_header(h))
    except ValueError:
        raise CorruptFileError(path, f"unknown MRC data mode {mode} (not an MRC file, or a corrupt header)",
                               field="mode") from None
    if dtype.kind == "c":
        raise CorruptFileError(path, f"complex data (mode {mode}); real-space images are expected", field="mode")
    if nsymbt < 0:
        raise CorruptFileError(path, f"negative extended header size {nsymbt}", field="nsymbt")
    if _HEADER_BYTES + nsymbt > size:
        raise CorruptFileError(path, f"the header declares an extended header of {nsymbt} bytes but the whole file "
                               f"has only {size} bytes (not an MRC file, or a corrupt header)", field="nsymbt")
    n_values = nx * ny * nz
    expected = _HEADER_BYTES + nsymbt + n_values * dtype.itemsize
    promise = (f"the header promises {nz} image(s) of {ny}x{nx} px in mode {mode} "
               f"({dtype.name}, {dtype.itemsize} byte(s) per pixel: {expected} bytes)")
    if size < expected:
        raise CorruptFileError(path, f"truncated file: {promise} but the file has only {size} bytes", field="nz")
    if size > expected:
        fits = [m for m in _fitting_modes(size - _HEADER_BYTES - nsymbt, n_values) if not m.startswith(f"mode {mode} ")]
        if fits:
            raise CorruptFileError(path, f"the data mode disagrees with the file size: {promise} but the file has "
                                   f"{size} bytes, which is what {' or '.join(fits)} would need; the header's "
                                   "mode field is wrong (refused rather than read as the wrong number type)",
                                   field="mode")
        raise CorruptFileError(path, f"the file is larger than its header says: {promise} but the file has {size} "
                               "bytes; nz, nx, ny, mode or nsymbt in the header is wrong", field="nz")
    return nx, ny, nz, dtype, nsymbt


def read_stack_header(path: str | Path, *, require_even_square: bool = True) -> MrcHeader:
    """Read and check an MRC header; the data block is not read.

    Checks, before anything the header sizes is read: the file exists; it holds a
    1024-byte header; dimensions and mode are valid; the extended header (``nsymbt``)
    fits in the file; the file size is exactly what the header promises (a truncated
    file, or a mode that disagrees with the size, is refused); with
    ``require_even_square``, images are square with an even edge.

    The header is parsed with ``mrcfile``'s header dtype but not opened with
    ``mrcfile.open``, which reads the whole extended header (``nsymbt`` bytes, from an
    untrusted field) before any check.

    Raises
    ------
    MissingFileError, CorruptFileError, ImageShapeError
    """
    path = require_file(path, "the MRC file")
    h, size = _read_header_bytes(path)
    nx, ny, nz, _, _ = _check_header(path, h, size)
    mode = int(h.mode)
    mx = int(h.mx)
    voxel_x = float(h.cella.x) / mx if mx > 0 else 0.0
    if require_even_square:
        if nx != ny:
            raise ImageShapeError(path, f"images are {nx} x {ny} px (x by y); square images are required", field="nx/ny")
        if nx % 2:
            raise ImageShapeError(path, f"images are {nx} x {ny} px; an even box size is required", field="nx")
    apix = voxel_x if np.isfinite(voxel_x) and voxel_x > 0 else None
    return MrcHeader(path=path, n_images=nz, ny=ny, nx=nx, mode=mode, apix=apix)


def _mmap(path: Path):
    """``mrcfile.mmap(path)`` of a file whose header was checked against its size first
    (:func:`_check_header`: ``mrcfile`` reads the whole extended header, ``nsymbt`` bytes,
    before mapping the data, so that field must be known to fit in the file); permissive on a
    second try (odd map IDs, machine stamps); the data block must be there.
    """
    path = Path(path)
    h, size = _read_header_bytes(path)
    _check_header(path, h, size)
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
