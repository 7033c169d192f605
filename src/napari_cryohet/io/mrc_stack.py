"""Lazy MRC particle stacks (``.mrcs`` / ``.mrc``): memory-mapped reads and the chunked writer.

Stacks are never loaded whole (docs/design.md §3, §5): :func:`open_stack` reads the 1024-byte
header (plus a file-size check that catches truncated files, see
:func:`~napari_cryohet.io.mrc_header.read_stack_header`) and nothing else; the data
block is memory-mapped with ``mrcfile.mmap`` on the first ``__getitem__`` and only the
images asked for are copied out. Every read is checked for NaN/inf and for finite values
too large to square in float32 (magnitude above :data:`MAX_PIXEL_MAGNITUDE`):
:class:`~napari_cryohet.io.errors.NonFiniteImageError` names the file and the 1-based
image index; ``validate()`` scans a whole stack on request.

:class:`MrcStack` (one file) and :class:`MultiFileStack` (the images of a star file spread
over many stacks, each opened lazily on first access, at most ``max_open`` kept mapped)
behave like read-only ``(N, D, D)`` float32 arrays for napari: ``shape``, ``dtype``,
``ndim``, ``len``, ``__getitem__`` with an int, slice, integer or boolean array, or a tuple
whose first entry is one of those, and ``__array__``.

Images are ``(D, D)`` indexed ``(y, x)``, square with an even edge (docs/design.md
conventions); other shapes raise :class:`~napari_cryohet.io.errors.ImageShapeError` at open
time. The pixel size comes from the header voxel size (``None`` when the header holds 0).

:func:`write_stack` writes ``(N, D, D)`` images, lazy ones included, as a float32 ``.mrcs``
in chunks through a memory-mapped output (atomic).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import mrcfile
import numpy as np

from napari_cryohet.io.atomic import atomic_path
from napari_cryohet.io.errors import NonFiniteImageError
from napari_cryohet.io.mrc_header import MrcHeader, _mmap, read_stack_header

__all__ = [
    "MrcStack",
    "MultiFileStack",
    "open_stack",
    "write_stack",
]


#: Largest pixel magnitude accepted: the sum of squares of a 1024 x 1024 image of such values
#: (1e32 x 2^20 ≈ 1e38) stays below float32's maximum (3.4e38). Larger values make norms,
#: variances and the VAE's losses inf/NaN far from the cause; a genuine image (counts,
#: normalised densities) never comes near it.
MAX_PIXEL_MAGNITUDE = 1e16


def _bad_value_problem(index: int, values: np.ndarray) -> str:
    """What is wrong with image ``index`` (0-based) whose pixels ``values`` fail the range check."""
    where = f"image {index + 1} (1-based index in the stack)"
    if not np.isfinite(values).all():
        return f"{where} contains NaN or infinite values"
    worst = float(values[np.argmax(np.abs(values))])
    return (f"{where} contains the value {worst:.3g}, too large to compute with (pixel magnitudes above "
            f"{MAX_PIXEL_MAGNITUDE:.0e} overflow float32 in sums of squares); the stack is corrupt or wrongly scaled")


def _normalize_first(key: Any, n: int, what: str) -> int | slice | np.ndarray:
    """Normalise the first-axis index: int → int in [0, n); array → int64 array; slice kept."""
    if key is Ellipsis:
        return slice(None)
    if isinstance(key, slice):
        return key
    if isinstance(key, (bool, np.bool_)):
        raise TypeError(f"{what}: boolean scalar index is not supported")
    if isinstance(key, (int, np.integer)):
        k = int(key)
        if k < -n or k >= n:
            raise IndexError(f"{what}: image index {k} out of range for {n} images")
        return k % n
    arr = np.asarray(key)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise IndexError(f"{what}: boolean index of shape {arr.shape} for {n} images")
        return np.flatnonzero(arr)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{what}: index of dtype {arr.dtype} is not supported")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < -n or arr.max() >= n):
        raise IndexError(f"{what}: image indices out of range for {n} images")
    return arr % n if arr.size else arr


def _apply_rest(out: np.ndarray, first_is_int: bool, rest: tuple) -> np.ndarray:
    if not rest:
        return out
    return out[rest] if first_is_int else out[(slice(None), *rest)]


class _LazyStack:
    """What :class:`MrcStack` and :class:`MultiFileStack` share on top of their
    ``shape`` and ``__getitem__``: conversion to an array, a full NaN/inf check and the
    contrast sign.

    ``contrast_sign`` (1 or −1) multiplies every image read: −1 for data whose contrast is
    inverted with respect to RELION's (``load_dataset(..., contrast_inverted=True)``), so the
    correction is applied once, where images enter the program, and every stage, the
    viewer and any stack written from these images see the same corrected values.
    """

    shape: tuple[int, int, int]
    contrast_sign: float = 1.0

    def __getitem__(self, key: Any) -> np.ndarray:
        raise NotImplementedError

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out.astype(dtype) if dtype is not None else out

    def validate(self, *, chunk: int = 1024, progress: Callable[[float, str], None] | None = None) -> None:
        """Read every image once, raising :class:`NonFiniteImageError` at the first bad one."""
        n = self.shape[0]
        for start in range(0, n, chunk):
            self[start:min(start + chunk, n)]
            if progress is not None:
                progress(min(start + chunk, n) / n, f"checked {min(start + chunk, n)}/{n} images")


class MrcStack(_LazyStack):
    """A read-only, lazily memory-mapped ``(N, D, D)`` float32 view of one MRC file.

    Construct with :func:`open_stack`. Nothing but the header is read until the first
    ``__getitem__``; then the file is mapped (``mrcfile.mmap``) and only the requested
    images are copied out (converted to float32). Every read is checked for non-finite
    values.

    Attributes
    ----------
    path, shape, dtype, ndim, apix, header
    """

    def __init__(self, path: str | Path, *, header: MrcHeader | None = None):
        self.header = header if header is not None else read_stack_header(path)
        self.path = self.header.path
        self.shape = (self.header.n_images, self.header.ny, self.header.nx)
        self.dtype = np.dtype(np.float32)
        self.ndim = 3
        self.apix = self.header.apix
        self._mrc = None
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"MrcStack({str(self.path)!r}, shape={self.shape})"

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_mrc"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.RLock()

    @property
    def is_open(self) -> bool:
        """Whether the data block is currently memory-mapped."""
        return self._mrc is not None

    def close(self) -> None:
        """Unmap the file (it is mapped again on the next read)."""
        with self._lock:
            if self._mrc is not None:
                self._mrc.close()
                self._mrc = None

    def _data(self) -> np.ndarray:
        if self._mrc is None:
            self._mrc = _mmap(self.path)
        data = self._mrc.data
        return data[None] if data.ndim == 2 else data  # (N, D, D)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        first = _normalize_first(key[0] if key else slice(None), self.shape[0], str(self.path))
        with self._lock:
            raw = self._data()[first]
            out = np.array(raw, dtype=np.float32)  # copy out of the map
        del raw
        first_is_int = isinstance(first, int)
        if self.contrast_sign != 1.0:
            np.negative(out, out=out)
        if out.size and not (out.max() <= MAX_PIXEL_MAGNITUDE and out.min() >= -MAX_PIXEL_MAGNITUDE):  # NaN fails too
            flat = out.reshape(-1, out.shape[-2] * out.shape[-1]) if not first_is_int else out.reshape(1, -1)
            bad_row = int(np.flatnonzero(~(np.abs(flat) <= MAX_PIXEL_MAGNITUDE).all(1))[0])
            if first_is_int:
                bad = first
            else:
                rows = np.arange(self.shape[0])[first] if isinstance(first, slice) else first
                bad = int(rows[bad_row])
            raise NonFiniteImageError(self.path, _bad_value_problem(bad, flat[bad_row]), field="data")
        return _apply_rest(out, first_is_int, key[1:])


class MultiFileStack(_LazyStack):
    """``(N, D, D)`` float32 images spread over many MRC files, opened lazily.

    Particle ``i`` is image ``image_indices[i]`` (0-based) of ``stacks[file_codes[i]]``.
    Each file is memory-mapped on first access; at most ``max_open`` stay mapped (least
    recently used are unmapped, and mapped again when needed). Reads are serialised by a
    lock so napari's asynchronous slicing can share one object.

    Parameters
    ----------
    stacks
        One :class:`MrcStack` per distinct file (headers already read and checked).
    file_codes, image_indices
        ``(N,)`` integer arrays.
    source
        What the rows come from (a star file), named in error messages.
    """

    def __init__(self, stacks: Sequence[MrcStack], file_codes: np.ndarray, image_indices: np.ndarray, *,
                 max_open: int = 128, source: str | Path | None = None):
        if not stacks:
            raise ValueError("MultiFileStack needs at least one stack")
        self.stacks = list(stacks)
        self.file_codes = np.asarray(file_codes, dtype=np.int64)
        self.image_indices = np.asarray(image_indices, dtype=np.int64)
        self.source = source
        self.max_open = int(max_open)
        ny, nx = self.stacks[0].shape[1:]
        self.shape = (len(self.file_codes), ny, nx)
        self.dtype = np.dtype(np.float32)
        self.ndim = 3
        self._open: OrderedDict[int, None] = OrderedDict()
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"MultiFileStack({len(self.stacks)} files, shape={self.shape})"

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def paths(self) -> list[Path]:
        return [s.path for s in self.stacks]

    def n_open(self) -> int:
        """How many files are memory-mapped right now."""
        return sum(s.is_open for s in self.stacks)

    def close(self) -> None:
        with self._lock:
            for s in self.stacks:
                s.close()
            self._open.clear()

    def _touch(self, code: int) -> MrcStack:
        self._open.pop(code, None)
        self._open[code] = None
        while len(self._open) > self.max_open:
            old, _ = self._open.popitem(last=False)
            self.stacks[old].close()
        return self.stacks[code]

    def _read(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), *self.shape[1:]), dtype=np.float32)  # (k, D, D)
        if len(rows) == 0:
            return out
        codes = self.file_codes[rows]
        order = np.argsort(codes, kind="stable")
        sorted_codes = codes[order]
        cuts = np.flatnonzero(np.diff(sorted_codes)) + 1
        for group in np.split(order, cuts):
            code = int(codes[group[0]])
            stack = self._touch(code)
            try:
                out[group] = stack[self.image_indices[rows[group]]]
            except NonFiniteImageError as exc:
                raise NonFiniteImageError(exc.path, f"{exc.problem} (particles of {self.source})", field=exc.field) from None
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        first = _normalize_first(key[0] if key else slice(None), self.shape[0], str(self.source))
        with self._lock:
            if isinstance(first, int):
                out = self._read(np.array([first]))[0]
            else:
                rows = np.arange(self.shape[0])[first] if isinstance(first, slice) else first
                out = self._read(rows)
        if self.contrast_sign != 1.0:
            np.negative(out, out=out)
        return _apply_rest(out, isinstance(first, int), key[1:])


def open_stack(path: str | Path) -> MrcStack:
    """Open a ``.mrcs``/``.mrc`` particle stack lazily (header read and checked only).

    A 2D file is a stack of one image; a 3D file is a stack of ``nz`` images.

    Raises
    ------
    MissingFileError, CorruptFileError (unreadable or truncated), ImageShapeError
    (non-square or odd-sized images).
    """
    return MrcStack(path)


def _to_numpy(array: Any) -> np.ndarray:
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    return np.asarray(array)



def write_stack(path: str | Path, images: Any, apix: float, *, chunk: int = 512) -> Path:
    """Write ``(N, D, D)`` images as a float32 ``.mrcs`` stack with pixel size ``apix`` (atomic).

    ``images`` may be lazy (an :class:`MrcStack`, a subset view...): it is copied in chunks
    of ``chunk`` images through a memory-mapped output, never held whole in memory.
    """
    shape = tuple(int(s) for s in images.shape)
    if len(shape) != 3 or shape[0] == 0:
        raise ValueError(f"write_stack: images must be (N, D, D) with N > 0, got shape {shape}")
    if not (apix > 0):
        raise ValueError(f"write_stack: apix must be positive, got {apix}")
    path = Path(path)
    n = shape[0]
    with atomic_path(path) as tmp:
        with mrcfile.new_mmap(tmp, shape=shape, mrc_mode=2, overwrite=True) as mrc:
            for start in range(0, n, chunk):
                stop = min(start + chunk, n)
                mrc.data[start:stop] = _to_numpy(images[start:stop]).astype(np.float32, copy=False)
            mrc.set_image_stack()
            mrc.voxel_size = float(apix)
    return path
