"""The one dataset object every stage shares (docs/design.md).

:class:`ParticleDataset` carries the images (lazy: any object with ``shape``, ``dtype``
and numpy-style ``__getitem__``, e.g. a memory-mapped MRC stack), the pixel size, poses
(rotation matrices in the convention of :mod:`napari_cryohet.core.rotation` and shifts in
Å), CTF parameters (:class:`CTFParams`), a per-particle table (pandas) and optional
ground truth. ``indices`` maps each row to the particle's index in the *root* dataset, so
stage results key on particle indices and subsets of subsets compose.

Shift convention: ``shifts_a[i] = (rlnOriginXAngst, rlnOriginYAngst)`` of particle ``i``
as RELION writes them: the particle's centre lies at ``image centre - shift``; the forward
model translates the centred projection by ``-shifts_a`` (see ``core.projection``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import torch

__all__ = ["ImageStack", "SubsetStack", "CTFParams", "ParticleDataset"]


@runtime_checkable
class ImageStack(Protocol):
    """What a particle stack must offer: ``(N, D, D)`` shape, dtype, numpy indexing."""

    shape: tuple[int, ...]
    dtype: Any

    def __getitem__(self, key: Any) -> np.ndarray: ...


class SubsetStack:
    """A lazy view ``base[indices]`` of another stack: reads nothing until indexed.

    napari treats it as an array (``shape``, ``dtype``, ``ndim``, ``__getitem__``,
    ``__array__``); indexing maps through ``indices`` and reads only what is asked.
    """

    def __init__(self, base: ImageStack, indices: np.ndarray):
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        self.shape = (len(self.indices), *tuple(base.shape[1:]))
        self.dtype = np.dtype(base.dtype)
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        first, rest = key[0], key[1:]
        picked = self.indices[first]
        if np.ndim(picked) == 0:
            return np.asarray(self.base[int(picked)])[rest] if rest else np.asarray(self.base[int(picked)])
        out = _take(self.base, np.asarray(picked))
        return out[(slice(None), *rest)] if rest else out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = _take(self.base, self.indices)
        return out.astype(dtype) if dtype is not None else out


def _take(stack: ImageStack, idx: np.ndarray) -> np.ndarray:
    """Read ``stack[idx]`` for an integer array (sorted reads, original order back)."""
    if len(idx) == 0:
        return np.empty((0, *stack.shape[1:]), dtype=stack.dtype)
    order = np.argsort(idx, kind="stable")
    data = np.asarray(stack[idx[order]])
    out = np.empty_like(data)
    out[order] = data
    return out


@dataclass
class CTFParams:
    """Per-particle CTF parameters, RELION conventions (docs/design.md).

    All fields are ``(N,)`` float arrays. Positive defocus is underfocus. The astigmatism
    angle is measured from the x axis to the direction of ``defocus_u_a``.
    """

    defocus_u_a: np.ndarray
    defocus_v_a: np.ndarray
    defocus_angle_rad: np.ndarray
    voltage_kv: np.ndarray
    cs_mm: np.ndarray
    amplitude_contrast: np.ndarray
    phase_shift_rad: np.ndarray
    bfactor_a2: np.ndarray

    @classmethod
    def constant(
        cls,
        n: int,
        *,
        defocus_u_a: float | np.ndarray,
        defocus_v_a: float | np.ndarray | None = None,
        defocus_angle_rad: float | np.ndarray = 0.0,
        voltage_kv: float = 300.0,
        cs_mm: float = 2.7,
        amplitude_contrast: float = 0.1,
        phase_shift_rad: float = 0.0,
        bfactor_a2: float = 0.0,
    ) -> CTFParams:
        """Build from scalars or ``(n,)`` arrays (broadcast to ``n`` particles)."""
        if defocus_v_a is None:
            defocus_v_a = defocus_u_a

        def full(v):
            return np.broadcast_to(np.asarray(v, dtype=np.float64), (n,)).copy()

        return cls(
            full(defocus_u_a), full(defocus_v_a), full(defocus_angle_rad), full(voltage_kv),
            full(cs_mm), full(amplitude_contrast), full(phase_shift_rad), full(bfactor_a2),
        )

    def __len__(self) -> int:
        return len(self.defocus_u_a)

    def subset(self, indices: np.ndarray) -> CTFParams:
        return CTFParams(**{f.name: getattr(self, f.name)[indices] for f in dataclasses.fields(self)})

    def as_dict(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def to_torch(self, *, indices=None, device=None, dtype=torch.float32) -> dict[str, torch.Tensor]:
        """Fields (optionally at ``indices``) as tensors, keyed by field name."""
        sel = slice(None) if indices is None else indices
        # a copy: loaded arrays may be read-only, which torch warns about (and must not write to)
        return {k: torch.as_tensor(np.array(v[sel]), dtype=dtype, device=device) for k, v in self.as_dict().items()}


@dataclass
class ParticleDataset:
    """Images, pixel size, poses, CTF, a per-particle table and optional ground truth.

    Attributes
    ----------
    images
        ``(N, D, D)`` lazy stack (``ImageStack``) or ndarray, float32 when read, real space.
    apix
        Pixel size in Å/px.
    rotations
        ``(N, 3, 3)`` float32 rotation matrices (``core.rotation`` convention) or ``None``.
    shifts_a
        ``(N, 2)`` float32 in-plane shifts (x, y) in Å (RELION origin) or ``None``.
    ctf
        :class:`CTFParams` or ``None``.
    table
        Per-particle ``DataFrame`` with N rows. For data read from a star file it holds the
        original particle rows, every column as read, so subsets can be written back.
    ground_truth
        Synthetic data only: name → array whose first axis is N (per-particle truth:
        conformation index, atom coordinates, clean images...), plus global entries under
        keys starting with ``"global/"`` (e.g. ``"global/volumes"``), which ``subset`` keeps.
    indices
        ``(N,)`` index of each particle in the root dataset.
    meta
        Free-form provenance (source paths, optics table, simulation parameters).
    """

    images: Any
    apix: float
    rotations: np.ndarray | None = None
    shifts_a: np.ndarray | None = None
    ctf: CTFParams | None = None
    table: pd.DataFrame | None = None
    ground_truth: dict[str, np.ndarray] | None = None
    indices: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.indices is None:
            self.indices = np.arange(n, dtype=np.int64)
        if self.table is None:
            self.table = pd.DataFrame(index=pd.RangeIndex(n))
        for name, value in (("rotations", self.rotations), ("shifts_a", self.shifts_a), ("table", self.table),
                            ("indices", self.indices), ("ctf", self.ctf)):
            if value is not None and len(value) != n:
                raise ValueError(f"ParticleDataset: {name} has {len(value)} rows, images have {n}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def box_size(self) -> int:
        """Image edge length ``D`` in pixels."""
        return int(self.images.shape[-1])

    def get_images(self, idx: Any) -> np.ndarray:
        """Read images ``idx`` (int, slice or index array) as float32 ndarray."""
        if isinstance(idx, (list, np.ndarray)):
            return _take(self.images, np.asarray(idx, dtype=np.int64)).astype(np.float32, copy=False)
        return np.asarray(self.images[idx], dtype=np.float32)

    def subset(self, indices: Any) -> ParticleDataset:
        """The particles at ``indices`` (positions in *this* dataset), lazily.

        Composes: ``ds.subset(a).subset(b)`` has ``indices == ds.indices[a][b]`` and reads
        images from the root stack directly.
        """
        idx = np.arange(len(self))[indices] if not isinstance(indices, np.ndarray) or indices.dtype == bool \
            else np.asarray(indices, dtype=np.int64)
        idx = np.atleast_1d(np.asarray(idx, dtype=np.int64))
        if len(idx) and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"subset indices out of range for {len(self)} particles")
        idx = idx % max(len(self), 1)  # negative positions count from the end, as in numpy
        if isinstance(self.images, SubsetStack):
            images = SubsetStack(self.images.base, self.images.indices[idx])
        else:
            images = SubsetStack(self.images, idx)
        truth = None
        if self.ground_truth is not None:
            truth = {k: (v if k.startswith("global/") else np.asarray(v)[idx]) for k, v in self.ground_truth.items()}
        return ParticleDataset(
            images=images,
            apix=self.apix,
            rotations=None if self.rotations is None else self.rotations[idx],
            shifts_a=None if self.shifts_a is None else self.shifts_a[idx],
            ctf=None if self.ctf is None else self.ctf.subset(idx),
            table=self.table.iloc[idx].reset_index(drop=True),
            ground_truth=truth,
            indices=self.indices[idx],
            meta=dict(self.meta),
        )
