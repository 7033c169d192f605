"""Load, write and save :class:`~napari_cryohet.core.particle_dataset.ParticleDataset` objects.

Inputs (seed 003_751d529320789aa3.txt §1.3, §4.1.6; seed 004_0460feb3adf92bbd.txt §2.1 for
the metadata each particle carries):

* a RELION ``.star`` file (3.1+ with ``data_optics``, or pre-3.1) whose ``rlnImageName``
  column reads ``index@stack`` — 1-based index, stack path relative to the star file's
  folder (then, as RELION writes project-relative paths, to its parent folders up to three
  levels, then to the working directory). Many stacks per star file are fine;
* a ``.mrcs``/``.mrc`` stack with optional cryoDRGN pose and CTF pickles.

Loading is lazy: the star table is parsed and the *header* of each distinct stack is read
and checked (file exists, number of images covers every index, image size), but no image
data is read until the images are indexed (:class:`~napari_cryohet.io.mrc.MultiFileStack`).
``validate=True`` additionally scans every image for NaN/inf.

Column → field conversion (RELION → :class:`ParticleDataset`):

==========================================  =============================================
``rlnAngleRot/Tilt/Psi`` (degrees)          ``rotations`` via ``core.rotation.euler_to_matrix``
``rlnOriginXAngst/YAngst`` (Å)              ``shifts_a``
``rlnOriginX/Y`` (px, pre-3.1)              ``shifts_a`` = value · apix
``rlnDefocusU/V`` (Å)                       ``ctf.defocus_u_a/v_a`` (V defaults to U)
``rlnDefocusAngle`` (degrees)               ``ctf.defocus_angle_rad`` (default 0)
``rlnVoltage`` (kV)                         ``ctf.voltage_kv``
``rlnSphericalAberration`` (mm)             ``ctf.cs_mm``
``rlnAmplitudeContrast``                    ``ctf.amplitude_contrast``
``rlnPhaseShift`` (degrees)                 ``ctf.phase_shift_rad`` (default 0)
``rlnCtfBfactor`` (Å²)                      ``ctf.bfactor_a2`` (default 0)
``rlnImagePixelSize`` / ``rlnPixelSize`` /  ``apix`` (one value for the whole dataset)
``rlnDetectorPixelSize``·10⁴/``rlnMagnification``
==========================================  =============================================

In RELION 3.1+ files a column may sit in ``data_optics``; it is then taken per particle
through ``rlnOpticsGroup``. Pixel size order: the ``apix`` argument, the star metadata, the
cryoDRGN CTF pickle, the MRC header; absent everywhere → :class:`PixelSizeError`.

Required metadata: ``require`` lists what the caller needs among ``"images"`` (always),
``"poses"`` and ``"ctf"``. Poses or CTF that are absent or incomplete are ``None`` in the
dataset unless required, in which case :class:`MissingColumnError` names the missing
columns. A pose or CTF column that is present but holds non-numbers is always an error.

A dataset loaded from a star file keeps the particle table as read (``dataset.table``,
every column) and the optics table (``dataset.meta["optics"]``), so
:func:`write_dataset_star` writes a subset back with every original value.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from napari_cryohet.core.particle_dataset import CTFParams, ParticleDataset, SubsetStack
from napari_cryohet.core.rotation import euler_to_matrix, matrix_to_euler
from napari_cryohet.io.atomic import save_npz_atomic
from napari_cryohet.io.cryodrgn import (
    check_count,
    read_ctf_pkl,
    read_poses_pkl,
    write_ctf_pkl,
    write_poses_pkl,
)
from napari_cryohet.io.errors import (
    CorruptFileError,
    CountMismatchError,
    ImageShapeError,
    MissingColumnError,
    MissingStackError,
    PixelSizeError,
    StackIndexError,
)
from napari_cryohet.io.mrc import (
    MrcStack,
    MultiFileStack,
    open_stack,
    read_stack_header,
    write_stack,
)
from napari_cryohet.io.star import StarTables, read_star, write_star

__all__ = [
    "POSE_COLUMNS",
    "CTF_COLUMNS",
    "load_dataset",
    "write_dataset_star",
    "save_dataset",
    "resolve_stack_path",
]

POSE_COLUMNS = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")
CTF_COLUMNS = ("rlnDefocusU", "rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast")
_REQUIRE = frozenset({"images", "poses", "ctf"})
_PARENT_LEVELS = 3
_POSE_CHUNK = 1 << 16  # rows per euler_to_matrix call


# --------------------------------------------------------------------------- paths

def resolve_stack_path(star_dir: str | Path, name: str) -> Path | None:
    """The file a star file's ``rlnImageName`` stack path points to, or ``None``.

    Absolute paths are taken as they are; relative ones are looked up in ``star_dir``,
    then its parents (up to three levels: RELION writes paths relative to the project
    folder, e.g. ``Extract/job007/...`` from ``Select/job012/particles.star``), then the
    working directory.
    """
    p = Path(name)
    if p.is_absolute():
        return p if p.is_file() else None
    star_dir = Path(star_dir)
    candidates = [star_dir / p, *(anc / p for anc in list(star_dir.resolve().parents)[:_PARENT_LEVELS]), Path.cwd() / p]
    for c in candidates:
        if c.is_file():
            return c
    return None


def _split_image_names(names: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series]:
    """``index@stack`` → (index text, stack text, has '@'); a bare path means index 1.

    Split at the first ``@``. Rows are grouped by where that ``@`` stands (RELION pads
    indices to six digits, so usually one group) and each group is cut with
    ``str.slice``, which is ~5x faster than ``str.partition`` on 10^6 names. The three
    series have a fresh ``RangeIndex``.
    """
    names = names.astype(str).reset_index(drop=True)
    at = names.str.find("@").to_numpy()  # (N,) position of the first '@', -1 if none
    groups = [np.flatnonzero(at == p) for p in np.unique(at)]
    index_parts, file_parts = [], []
    for rows in groups:
        p = int(at[rows[0]])
        sub = names.iloc[rows] if len(groups) > 1 else names
        index_parts.append(sub.str.slice(0, p) if p >= 0 else pd.Series("1", index=sub.index, dtype=names.dtype))
        file_parts.append(sub.str.slice(p + 1))
    has_at = pd.Series(at >= 0)
    if len(groups) == 1:
        return index_parts[0], file_parts[0], has_at
    order = np.argsort(np.concatenate(groups), kind="stable")  # back to row order
    return pd.concat(index_parts).iloc[order], pd.concat(file_parts).iloc[order], has_at


def _parse_image_indices(index_text: pd.Series) -> np.ndarray:
    """``(N,)`` float64 image numbers; NaN where the text is not a number."""
    if len(index_text) and index_text.str.fullmatch(r"[0-9]{1,18}").all():  # plain digits: fast path
        try:  # Arrow's cast, without a Python int per row (pyarrow-backed strings only)
            return index_text.astype("int64[pyarrow]").to_numpy(dtype=np.float64)
        except (ImportError, TypeError, ValueError):
            return index_text.astype(np.int64).to_numpy(dtype=np.float64)
    return pd.to_numeric(index_text, errors="coerce").to_numpy(dtype=np.float64)


def _star_stack(star_path: Path, names: pd.Series) -> MultiFileStack:
    """Build the lazy multi-file stack of a star file, checking every stack's header."""
    index_text, file_text, _ = _split_image_names(names)
    index = _parse_image_indices(index_text)
    bad = ~np.isfinite(index) | (index != np.floor(index)) | (file_text == "").to_numpy()
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise CorruptFileError(star_path, f"row {r + 1}: image name {names.iloc[r]!r} is not 'index@stack'",
                               field="rlnImageName")
    index = index.astype(np.int64)
    codes, uniques = pd.factorize(file_text, sort=False)
    star_dir = star_path.parent
    stacks = []
    for code, name in enumerate(uniques):
        resolved = resolve_stack_path(star_dir, name)
        if resolved is None:
            rows = np.flatnonzero(codes == code)
            raise MissingStackError(
                star_path,
                f"stack {name!r} (named by {len(rows)} row(s), first row {rows[0] + 1}) does not exist; "
                f"looked in {star_dir}, its parent folders and the working directory",
                field="rlnImageName",
            )
        stacks.append(MrcStack(resolved, header=read_stack_header(resolved)))
    n_images = np.array([s.shape[0] for s in stacks], dtype=np.int64)
    out_of_range = (index < 1) | (index > n_images[codes])
    if out_of_range.any():
        r = int(np.flatnonzero(out_of_range)[0])
        s = stacks[codes[r]]
        raise StackIndexError(
            star_path,
            f"row {r + 1}: {names.iloc[r]!r} points to image {index[r]} but {s.path} holds {s.shape[0]} images "
            f"(indices are 1-based; {int(out_of_range.sum())} row(s) out of range)",
            field="rlnImageName",
        )
    sizes = {s.shape[1:] for s in stacks}
    if len(sizes) > 1:
        detail = ", ".join(f"{s.path.name}: {s.shape[2]}x{s.shape[1]}" for s in stacks[:6])
        raise ImageShapeError(star_path, f"stacks have different image sizes ({detail})", field="rlnImageName")
    return MultiFileStack(stacks, codes, index - 1, source=star_path)


# --------------------------------------------------------------------------- columns

class _Columns:
    """Per-particle column lookup through the optics table (RELION 3.1 merge)."""

    def __init__(self, path: Path, tables: StarTables):
        self.path = path
        self.parts = tables.particles
        self.optics = tables.optics
        self.group_row = None
        if self.optics is not None and len(self.optics):
            n = len(self.parts)
            if "rlnOpticsGroup" in self.parts.columns and "rlnOpticsGroup" in self.optics.columns:
                groups = self.parts["rlnOpticsGroup"].to_numpy()
                row = pd.Index(self.optics["rlnOpticsGroup"]).get_indexer(groups)
                if (row < 0).any():
                    r = int(np.flatnonzero(row < 0)[0])
                    raise CorruptFileError(path, f"particle row {r + 1} names optics group {groups[r]!r}, "
                                           "which data_optics does not define", field="rlnOpticsGroup")
                self.group_row = row
            elif len(self.optics) == 1:
                self.group_row = np.zeros(n, dtype=np.int64)
            else:
                raise MissingColumnError(path, f"data_optics has {len(self.optics)} groups but the particles have "
                                         "no rlnOpticsGroup column to choose one", field="rlnOpticsGroup")

    def has(self, name: str) -> bool:
        return name in self.parts.columns or (self.group_row is not None and name in self.optics.columns)

    def get(self, name: str) -> np.ndarray | None:
        """``(N,)`` float64 values of column ``name`` (particle table first, then optics)."""
        if name in self.parts.columns:
            values = self.parts[name]
        elif self.group_row is not None and name in self.optics.columns:
            values = self.optics[name].iloc[self.group_row]
        else:
            return None
        out = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(out)
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            raise CorruptFileError(self.path, f"row {r + 1}: value {values.iloc[r]!r} is not a finite number",
                                   field=name)
        return out


def _single_apix(path: Path, values: np.ndarray, field: str) -> float:
    if (values <= 0).any():
        raise PixelSizeError(path, f"non-positive pixel size {values[values <= 0][0]}", field=field)
    lo, hi = float(values.min()), float(values.max())
    if hi - lo > 1e-5 * hi:
        raise PixelSizeError(path, f"pixel size differs between particles ({lo:g} to {hi:g} Å/px); "
                             "one pixel size per dataset is supported", field=field)
    return float(values[0])


def _star_apix(path: Path, cols: _Columns) -> float | None:
    for name in ("rlnImagePixelSize", "rlnPixelSize"):
        v = cols.get(name)
        if v is not None:
            return _single_apix(path, v, name)
    det, mag = cols.get("rlnDetectorPixelSize"), cols.get("rlnMagnification")
    if det is not None and mag is not None:
        if (mag <= 0).any():
            raise PixelSizeError(path, "non-positive magnification", field="rlnMagnification")
        return _single_apix(path, det * 1e4 / mag, "rlnDetectorPixelSize/rlnMagnification")
    return None


def _missing(cols: _Columns, names: Iterable[str]) -> list[str]:
    return [n for n in names if not cols.has(n)]


def _star_poses(path: Path, cols: _Columns, apix: float, required: bool):
    missing = _missing(cols, POSE_COLUMNS)
    if missing:
        if required:
            raise MissingColumnError(path, f"pose columns missing: {', '.join(missing)} "
                                     f"(need {', '.join(POSE_COLUMNS)})", field=missing[0])
        return None, None
    euler_deg = np.stack([cols.get(n) for n in POSE_COLUMNS], -1)  # (N, 3)
    rotations = np.empty((len(euler_deg), 3, 3), dtype=np.float32)  # (N, 3, 3)
    for start in range(0, len(euler_deg), _POSE_CHUNK):  # chunks bound the float64 temporaries
        stop = start + _POSE_CHUNK
        rotations[start:stop] = euler_to_matrix(np.deg2rad(euler_deg[start:stop]))
    if cols.has("rlnOriginXAngst") or cols.has("rlnOriginYAngst"):
        miss = _missing(cols, ("rlnOriginXAngst", "rlnOriginYAngst"))
        if miss:
            raise MissingColumnError(path, f"shift column missing: {miss[0]}", field=miss[0])
        shifts = np.stack([cols.get("rlnOriginXAngst"), cols.get("rlnOriginYAngst")], -1)
    elif cols.has("rlnOriginX") or cols.has("rlnOriginY"):
        miss = _missing(cols, ("rlnOriginX", "rlnOriginY"))
        if miss:
            raise MissingColumnError(path, f"shift column missing: {miss[0]}", field=miss[0])
        shifts = np.stack([cols.get("rlnOriginX"), cols.get("rlnOriginY")], -1) * apix
    else:
        shifts = np.zeros((len(rotations), 2))
    return rotations, shifts.astype(np.float32)


def _star_ctf(path: Path, cols: _Columns, required: bool) -> CTFParams | None:
    missing = _missing(cols, CTF_COLUMNS)
    if missing:
        if required:
            raise MissingColumnError(path, f"CTF columns missing: {', '.join(missing)} "
                                     f"(need {', '.join(CTF_COLUMNS)}, in particles or data_optics)",
                                     field=missing[0])
        return None
    n = len(cols.parts)

    def get(name, default):
        v = cols.get(name)
        return np.full(n, float(default)) if v is None else v

    dfu = cols.get("rlnDefocusU")
    return CTFParams(
        defocus_u_a=dfu,
        defocus_v_a=get("rlnDefocusV", np.nan) if cols.has("rlnDefocusV") else dfu.copy(),
        defocus_angle_rad=np.deg2rad(get("rlnDefocusAngle", 0.0)),
        voltage_kv=cols.get("rlnVoltage"),
        cs_mm=cols.get("rlnSphericalAberration"),
        amplitude_contrast=cols.get("rlnAmplitudeContrast"),
        phase_shift_rad=np.deg2rad(get("rlnPhaseShift", 0.0)),
        bfactor_a2=get("rlnCtfBfactor", 0.0),
    )


# --------------------------------------------------------------------------- load

def _truth_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}_truth.npz")


def _load_truth(path: Path, n: int) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        truth = {k: z[k] for k in z.files}
    for k, v in truth.items():
        if not k.startswith("global/") and len(v) != n:
            raise CountMismatchError(path, f"ground truth {k!r} has {len(v)} rows for {n} particles", field=k)
    return truth


def load_dataset(
    path: str | Path,
    *,
    poses: str | Path | None = None,
    ctf: str | Path | None = None,
    apix: float | None = None,
    require: Iterable[str] = ("images",),
    validate: bool = False,
    ground_truth: bool = True,
) -> ParticleDataset:
    """Open a particle dataset lazily (no image data read; see the module docstring).

    Parameters
    ----------
    path
        A ``.star`` file, or a ``.mrcs``/``.mrc`` stack.
    poses, ctf
        Optional cryoDRGN pose / CTF pickles; they override the star file's poses / CTF.
    apix
        Pixel size (Å/px); overrides every other source.
    require
        Subset of ``{"images", "poses", "ctf"}``: raise :class:`MissingColumnError` when
        poses or CTF are requested but absent.
    validate
        Read every image once and raise :class:`NonFiniteImageError` at the first NaN/inf
        (without it, NaN/inf are reported when the images are read).
    ground_truth
        Load ``<stem>_truth.npz`` beside ``path`` when it exists (written by
        :func:`save_dataset`).

    Returns
    -------
    ParticleDataset
        ``images`` is a lazy :class:`~napari_cryohet.io.mrc.MultiFileStack` (star) or
        :class:`~napari_cryohet.io.mrc.MrcStack`; ``meta`` has ``"source"`` and, for star
        files, ``"star_path"``, ``"star_dir"``, ``"star_format"`` (``"relion3.1"`` or
        ``"relion3.0"``), ``"optics"``, ``"particles_block"``, ``"extra_blocks"``.

    Raises
    ------
    CryohetInputError
        Its subclasses, each naming the file and field: MissingFileError,
        MissingStackError, StackIndexError, CorruptFileError, EmptyFileError,
        MissingColumnError, ImageShapeError, PixelSizeError, CountMismatchError,
        NonFiniteImageError (with ``validate``).
    """
    path = Path(path)
    require = set(require)
    if not require <= _REQUIRE:
        raise ValueError(f"load_dataset: require must be a subset of {sorted(_REQUIRE)}, got {sorted(require)}")
    ctf_pkl = (*read_ctf_pkl(ctf), Path(ctf)) if ctf is not None else None  # (ctf, D, apix, path)
    if path.suffix.lower() == ".star":
        ds = _load_star(path, apix=apix, ctf_pkl=ctf_pkl, poses_pkl=poses, require=require)
    else:
        ds = _load_stack(path, apix=apix, ctf_pkl=ctf_pkl, poses_pkl=poses, require=require)
    if ctf is not None:
        ds.meta["ctf_pkl"] = str(ctf)
    if poses is not None:
        ds.meta["poses_pkl"] = str(poses)
    if ground_truth and _truth_path(path).is_file():
        ds.ground_truth = _load_truth(_truth_path(path), len(ds))
    if validate:
        ds.images.validate()
    return ds


def _apply_pickles(ds_path: Path, n: int, d: int, apix: float, ctf_pkl, poses_pkl, rotations, shifts, ctf,
                   stack_name: str | Path):
    if ctf_pkl is not None:
        ctf_params, ctf_d, _, ctf_path = ctf_pkl
        if ctf_d != d:
            raise ImageShapeError(ctf_path, f"box size D={ctf_d} in the CTF pickle but the images are {d} px",
                                  field="D")
        check_count(ctf_path, len(ctf_params), n, stack_name)
        ctf = ctf_params
    if poses_pkl is not None:
        rotations, shifts = read_poses_pkl(poses_pkl, box_size=d, apix=apix)
        check_count(poses_pkl, len(rotations), n, stack_name)
    return rotations, shifts, ctf


def _resolve_apix(path: Path, explicit: float | None, *candidates: float | None) -> float:
    if explicit is not None:
        if not (np.isfinite(explicit) and explicit > 0):
            raise PixelSizeError(path, f"apix={explicit} given; a positive pixel size is expected", field="apix")
        return float(explicit)
    for c in candidates:
        if c is not None:
            return float(c)
    raise PixelSizeError(
        path,
        "no pixel size: none in the metadata (rlnImagePixelSize, rlnPixelSize, rlnDetectorPixelSize + "
        "rlnMagnification, CTF pickle) nor in the MRC header (voxel size 0); pass apix=...",
        field="apix",
    )


def _load_star(path: Path, *, apix, ctf_pkl, poses_pkl, require) -> ParticleDataset:
    tables = read_star(path)
    parts = tables.particles
    if "rlnImageName" not in parts.columns:
        raise MissingColumnError(path, "no rlnImageName column: the star file names no particle images "
                                 "(expected 'index@stack')", field="rlnImageName")
    images = _star_stack(path, parts["rlnImageName"])
    cols = _Columns(path, tables)
    pkl_apix = ctf_pkl[2] if ctf_pkl is not None else None
    apix = _resolve_apix(path, apix, _star_apix(path, cols), pkl_apix, images.stacks[0].apix)
    rotations, shifts = _star_poses(path, cols, apix, required="poses" in require and poses_pkl is None)
    ctf = _star_ctf(path, cols, required="ctf" in require and ctf_pkl is None)
    rotations, shifts, ctf = _apply_pickles(path, len(parts), images.shape[-1], apix, ctf_pkl, poses_pkl,
                                            rotations, shifts, ctf, path)
    meta = {
        "source": str(path),
        "star_path": str(path),
        "star_dir": str(path.parent),
        "star_format": "relion3.1" if tables.is_relion31 else "relion3.0",
        "optics": tables.optics,
        "particles_block": tables.particles_block,
        "extra_blocks": tables.extra,
    }
    return ParticleDataset(images=images, apix=apix, rotations=rotations, shifts_a=shifts, ctf=ctf,
                           table=parts, meta=meta)


def _load_stack(path: Path, *, apix, ctf_pkl, poses_pkl, require) -> ParticleDataset:
    stack = open_stack(path)
    pkl_apix = ctf_pkl[2] if ctf_pkl is not None else None
    apix = _resolve_apix(path, apix, pkl_apix, stack.apix)
    if "poses" in require and poses_pkl is None:
        raise MissingColumnError(path, "poses are required but a bare stack has none; pass poses=<pose pickle>",
                                 field="poses")
    if "ctf" in require and ctf_pkl is None:
        raise MissingColumnError(path, "CTF is required but a bare stack has none; pass ctf=<CTF pickle>",
                                 field="ctf")
    rotations, shifts, ctf = _apply_pickles(path, len(stack), stack.shape[-1], apix, ctf_pkl, poses_pkl,
                                            None, None, None, path)
    return ParticleDataset(images=stack, apix=apix, rotations=rotations, shifts_a=shifts, ctf=ctf,
                           meta={"source": str(path)})


# --------------------------------------------------------------------------- write

def _is_star_born(ds: ParticleDataset) -> bool:
    return "star_format" in ds.meta and ds.table is not None and "rlnImageName" in ds.table.columns


def _positional_names(n: int, stack_name: str) -> pd.Series:
    idx = pd.Series(np.arange(1, n + 1)).astype(str).str.zfill(6)
    return idx + "@" + stack_name


def _relocate_names(names: pd.Series, old_dir: Path, new_dir: Path, mode: str) -> pd.Series:
    if mode == "keep":
        return names
    index_text, file_text, has_at = _split_image_names(names)
    mapping, changed = {}, False
    for name in pd.unique(file_text):
        resolved = resolve_stack_path(old_dir, name)
        if resolved is None:
            mapping[name] = name
            continue
        if mode == "auto":
            again = resolve_stack_path(new_dir, name)
            if again is not None and os.path.samefile(again, resolved):
                mapping[name] = name
                continue
        mapping[name] = os.path.relpath(os.path.abspath(resolved), os.path.abspath(new_dir))
        changed |= mapping[name] != name
    if not changed:
        return names
    new_files = file_text.map(mapping)
    out = (index_text + "@" + new_files).where(has_at, new_files)
    out.index = names.index
    return out


def _root(images: Any) -> tuple[Any, np.ndarray]:
    if isinstance(images, SubsetStack):
        return images.base, images.indices
    return images, np.arange(images.shape[0])


def _file_names(ds: ParticleDataset, star_dir: Path) -> pd.Series | None:
    """``index@stack`` of each particle when its images live in MRC files, else ``None``."""
    base, idx = _root(ds.images)
    if isinstance(base, MrcStack):
        rel = os.path.relpath(os.path.abspath(base.path), os.path.abspath(star_dir))
        return pd.Series(idx + 1).astype(str).str.zfill(6) + "@" + rel
    if isinstance(base, MultiFileStack):
        rels = np.array([os.path.relpath(os.path.abspath(p), os.path.abspath(star_dir)) for p in base.paths],
                        dtype=object)
        return (pd.Series(base.image_indices[idx] + 1).astype(str).str.zfill(6) + "@"
                + pd.Series(rels[base.file_codes[idx]]).astype(str))
    return None


def _pose_columns(ds: ParticleDataset, *, angstrom_origins: bool) -> dict[str, np.ndarray]:
    out = {}
    if ds.rotations is not None:
        euler = np.rad2deg(matrix_to_euler(np.asarray(ds.rotations, dtype=np.float64)))  # (N, 3)
        out.update(rlnAngleRot=euler[:, 0], rlnAngleTilt=euler[:, 1], rlnAnglePsi=euler[:, 2])
        shifts = np.zeros((len(ds), 2)) if ds.shifts_a is None else np.asarray(ds.shifts_a, dtype=np.float64)
        if angstrom_origins:
            out.update(rlnOriginXAngst=shifts[:, 0], rlnOriginYAngst=shifts[:, 1])
        else:
            out.update(rlnOriginX=shifts[:, 0] / ds.apix, rlnOriginY=shifts[:, 1] / ds.apix)
    return out


def _ctf_particle_columns(ctf: CTFParams) -> dict[str, np.ndarray]:
    return {
        "rlnDefocusU": np.asarray(ctf.defocus_u_a, np.float64),
        "rlnDefocusV": np.asarray(ctf.defocus_v_a, np.float64),
        "rlnDefocusAngle": np.rad2deg(np.asarray(ctf.defocus_angle_rad, np.float64)),
        "rlnPhaseShift": np.rad2deg(np.asarray(ctf.phase_shift_rad, np.float64)),
        "rlnCtfBfactor": np.asarray(ctf.bfactor_a2, np.float64),
    }


def _synthetic_tables(ds: ParticleDataset, names: pd.Series) -> StarTables:
    n, d = len(ds), ds.box_size
    if ds.ctf is not None:
        optics_keys = np.stack([np.asarray(ds.ctf.voltage_kv, np.float64), np.asarray(ds.ctf.cs_mm, np.float64),
                                np.asarray(ds.ctf.amplitude_contrast, np.float64)], -1)  # (N, 3)
        groups, group_of = np.unique(optics_keys, axis=0, return_inverse=True)
        group_of = group_of.reshape(-1)
    else:
        groups, group_of = np.zeros((1, 0)), np.zeros(n, dtype=np.int64)
    g = len(groups)
    optics = pd.DataFrame({
        "rlnOpticsGroupName": [f"opticsGroup{i + 1}" for i in range(g)],
        "rlnOpticsGroup": np.arange(1, g + 1),
    })
    if ds.ctf is not None:
        optics["rlnVoltage"] = groups[:, 0]
        optics["rlnSphericalAberration"] = groups[:, 1]
        optics["rlnAmplitudeContrast"] = groups[:, 2]
    optics["rlnImagePixelSize"] = float(ds.apix)
    optics["rlnImageSize"] = d
    optics["rlnImageDimensionality"] = 2
    columns: dict[str, Any] = {"rlnImageName": names.to_numpy()}
    columns.update(_pose_columns(ds, angstrom_origins=True))
    if ds.ctf is not None:
        columns.update(_ctf_particle_columns(ds.ctf))
    columns["rlnOpticsGroup"] = group_of + 1
    parts = pd.DataFrame(columns)
    if ds.table is not None:
        for col in ds.table.columns:
            if isinstance(col, str) and col.startswith("rln") and col not in parts.columns:
                parts[col] = ds.table[col].to_numpy()
    return StarTables(optics=optics, particles=parts)


def write_dataset_star(
    path: str | Path,
    dataset: ParticleDataset,
    *,
    stack_name: str | None = None,
    image_paths: str = "auto",
    update: Iterable[str] = (),
) -> Path:
    """Write ``dataset`` (often a subset) as a RELION star file (atomic); returns the path.

    A dataset loaded from a star file (``dataset.meta["star_format"]``) is written with its
    original particle rows and columns and its optics table, values unchanged, in the
    original layout (3.1 or pre-3.1). The only exceptions:

    * ``stack_name`` given: ``rlnImageName`` becomes ``000001@stack_name`` ... in row order
      (for a stack written alongside, as :func:`save_dataset` does);
    * ``image_paths="auto"`` (default): the stack path inside ``rlnImageName`` is kept
      verbatim when it still resolves to the same file from the new star file's folder,
      and rewritten relative to that folder otherwise (``"keep"``: never rewrite;
      ``"relative"``: always rewrite). The ``index@`` part is never changed;
    * ``update`` names field groups, ``"poses"`` and/or ``"ctf"``, whose columns are
      rewritten from the dataset's arrays (e.g. after pose refinement).

    Any other dataset gets RELION 3.1 columns built from its poses (degrees, Å) and CTF
    (optics groups per distinct voltage / Cs / amplitude contrast), plus the ``rln*``
    columns of ``dataset.table``; its other columns (e.g. the ``truth_state`` columns the
    synthetic-dataset builders add) are skipped, since RELION only tolerates unknown
    labels that are ``rln``-prefixed (the truth is saved in ``<name>_truth.npz`` by
    :func:`save_dataset`). Images already in MRC files are referenced where they
    are; in-memory images are written to ``<star stem>.mrcs`` beside the star file unless
    ``stack_name`` names a stack the caller writes.
    """
    path = Path(path)
    if image_paths not in ("auto", "keep", "relative"):
        raise ValueError(f"write_dataset_star: image_paths must be 'auto', 'keep' or 'relative', got {image_paths!r}")
    update = set(update)
    if not update <= {"poses", "ctf"}:
        raise ValueError(f"write_dataset_star: update must name 'poses' and/or 'ctf', got {sorted(update)}")
    star_dir = path.parent
    if _is_star_born(dataset):
        parts = dataset.table.copy()
        if stack_name is not None:
            parts["rlnImageName"] = _positional_names(len(parts), stack_name).to_numpy()
        else:
            parts["rlnImageName"] = _relocate_names(parts["rlnImageName"], Path(dataset.meta["star_dir"]),
                                                    star_dir, image_paths).to_numpy()
        relion31 = dataset.meta["star_format"] == "relion3.1"
        if "poses" in update and dataset.rotations is not None:
            for k, v in _pose_columns(dataset, angstrom_origins=relion31).items():
                parts[k] = v
        if "ctf" in update and dataset.ctf is not None:
            for k, v in _ctf_particle_columns(dataset.ctf).items():
                parts[k] = v
        tables = StarTables(optics=dataset.meta.get("optics"), particles=parts,
                            particles_block=dataset.meta.get("particles_block", "particles"),
                            extra=dict(dataset.meta.get("extra_blocks") or {}))
        return write_star(path, tables)
    if stack_name is not None:
        names = _positional_names(len(dataset), stack_name)
    else:
        names = _file_names(dataset, star_dir)
        if names is None:
            stack_path = path.with_suffix(".mrcs")
            write_stack(stack_path, dataset.images, dataset.apix)
            names = _positional_names(len(dataset), stack_path.name)
    return write_star(path, _synthetic_tables(dataset, names))


def save_dataset(out_dir: str | Path, dataset: ParticleDataset, *, name: str) -> dict[str, Path]:
    """Write a self-contained copy of ``dataset`` into ``out_dir`` (every write atomic).

    Files: ``<name>.mrcs`` (the images, float32), ``<name>.star`` (see
    :func:`write_dataset_star`; images named ``000001@<name>.mrcs`` ...),
    ``<name>_poses.pkl`` and ``<name>_ctf.pkl`` (cryoDRGN, when the dataset has poses /
    CTF) and ``<name>_truth.npz`` (when it has ground truth; :func:`load_dataset` reads it
    back).

    Returns
    -------
    dict
        ``{"stack", "star", "poses", "ctf", "truth"}`` → path, for the files written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"stack": write_stack(out_dir / f"{name}.mrcs", dataset.images, dataset.apix)}
    paths["star"] = write_dataset_star(out_dir / f"{name}.star", dataset, stack_name=f"{name}.mrcs")
    if dataset.rotations is not None:
        paths["poses"] = write_poses_pkl(out_dir / f"{name}_poses.pkl", dataset.rotations, dataset.shifts_a,
                                         box_size=dataset.box_size, apix=dataset.apix)
    if dataset.ctf is not None:
        paths["ctf"] = write_ctf_pkl(out_dir / f"{name}_ctf.pkl", dataset.ctf, box_size=dataset.box_size,
                                     apix=dataset.apix)
    if dataset.ground_truth:
        paths["truth"] = save_npz_atomic(out_dir / f"{name}_truth.npz",
                                         **{k: np.asarray(v) for k, v in dataset.ground_truth.items()})
    return paths
