"""Read cryoSPARC particle files (``.cs``) into a :class:`~napari_cryohet.core.particle_dataset.ParticleDataset`.

Format
------
A ``.cs`` file is a NumPy ``.npy`` file holding one structured array, one record per
particle (read with ``np.load(path, allow_pickle=False)``; nothing in it is executed).
Fields used here (names as cryoSPARC writes them; the layout was learnt from the ``.cs``
files in cryoDRGN's ``tests/data`` and its ``parse_pose_csparc`` / ``parse_ctf_csparc``):

=============================  ===========================================================
``uid``                        particle id (uint64), the key a passthrough file is merged by
``blob/path``                  stack path, relative to the cryoSPARC *project* folder
                               (``J19/extract/...mrc``); a leading ``>`` (imported data) is
                               dropped
``blob/idx``                   0-based image index in that stack
``blob/shape``                 ``(ny, nx)`` image size in pixels (checked against the stack)
``blob/psize_A``               pixel size (Å/px)
``blob/sign``                  contrast sign cryoSPARC records (kept in ``table``, not applied)
``alignments3D/pose``          rotation vector (3,) in radians → ``rotations``
``alignments3D/shift``         in-plane shift (2,) in pixels of ``alignments3D/psize_A`` → ``shifts_a``
``ctf/df1_A``, ``ctf/df2_A``   defocus U, V (Å) → ``ctf.defocus_u_a``, ``ctf.defocus_v_a``
``ctf/df_angle_rad``           astigmatism angle (rad) → ``ctf.defocus_angle_rad``
``ctf/accel_kv``               voltage (kV) → ``ctf.voltage_kv``
``ctf/cs_mm``                  spherical aberration (mm) → ``ctf.cs_mm``
``ctf/amp_contrast``           amplitude contrast → ``ctf.amplitude_contrast``
``ctf/phase_shift_rad``        phase shift (rad) → ``ctf.phase_shift_rad`` (0 when absent)
=============================  ===========================================================

Pose convention
---------------
cryoSPARC's pose is a rotation vector ``v``; its matrix is the exponential map
``exp([v]ₓ)`` (Rodrigues), computed here with ``scipy.spatial.transform.Rotation.from_rotvec``
(SciPy, not our code). cryoDRGN's ``parse_pose_csparc`` takes ``exp([v]ₓ)`` and *transposes*
it, and cryoDRGN pose matrices are this package's poses unchanged
(:mod:`napari_cryohet.io.cryodrgn`), so ``rotations = exp([v]ₓ)ᵀ`` — RELION's
``Euler_angles2matrix(rot, tilt, psi)`` (:mod:`napari_cryohet.core.rotation`). Equivalently,
``v`` is the rotation vector of SciPy's intrinsic ``from_euler("ZYZ", (rot, tilt, psi))``.
Shifts keep their sign (cryoDRGN divides them by the box, as it does RELION's
``rlnOriginX``); pixels become Å with the pixel size the alignment was made at
(``alignments3D/psize_A``, e.g. a binned heterogeneous refinement, where cryoDRGN asks for
``--hetrefine`` to double them), scaled to the dataset pixel size. ``tests/io/test_cryosparc.py``
pins all this against a RELION star file of the same particles, against a hand-computed
rotation and, when a local copy of cryoDRGN's repository is present, against cryoDRGN's
own parsed pose pickle of its test ``.cs`` file.

Not read: ``ctf/bfactor`` (its sign and scale convention is not pinned; a warning is given
when it is non-zero), ``ctf/scale``, higher-order aberrations (``ctf/tilt_A``,
``ctf/trefoil_A``, ``ctf/tetra_A``, ``ctf/anisomag``), 2D alignments.

Passthrough files
-----------------
cryoSPARC jobs often write the new fields to ``Jn_particles.cs`` and everything they did not
change (CTF, blob) to ``Jn_passthrough_particles.cs``. ``passthrough`` names such files;
their fields are merged in by ``uid`` (any order; every particle of the main file must be
present) and a field present in both is taken from the main file. When ``passthrough`` is
not given and the main file lacks the CTF or the image fields, the ``*passthrough*.cs``
files in its folder that hold every one of its particles are merged automatically
(``meta["cs_passthrough"]`` lists the files used).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial.transform import Rotation

from napari_cryohet.core.particle_dataset import CTFParams, ParticleDataset
from napari_cryohet.io.errors import (
    CorruptFileError,
    CountMismatchError,
    ImageShapeError,
    MissingColumnError,
    MissingFileError,
    PixelSizeError,
    require_file,
)
from napari_cryohet.io.image_names import open_indexed_stacks
from napari_cryohet.io.load_particles import (
    single_pixel_size,  # load_particles imports this module lazily
)
from napari_cryohet.io.mrc_stack import MultiFileStack

__all__ = ["CS_CTF_FIELDS", "CS_POSE_FIELDS", "read_cs", "read_cs_fields", "read_cs_ctf", "cs_rotations"]

CS_POSE_FIELDS = ("alignments3D/pose", "alignments3D/shift")
CS_CTF_FIELDS = ("ctf/df1_A", "ctf/df2_A", "ctf/df_angle_rad", "ctf/accel_kv", "ctf/cs_mm", "ctf/amp_contrast")
_BLOB_FIELDS = ("blob/path", "blob/idx")
_REQUIRE = frozenset({"images", "poses", "ctf"})


# --------------------------------------------------------------------------- raw file

def _load_array(path: Path) -> np.ndarray:
    """The structured array of a ``.cs`` file, checked to be one (no pickles)."""
    path = require_file(path, "a cryoSPARC .cs file")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:  # not .npy, truncated, object arrays (need pickles)
        raise CorruptFileError(path, f"not a readable cryoSPARC .cs file (a NumPy structured array): "
                               f"{type(exc).__name__}: {exc}") from None
    if not isinstance(arr, np.ndarray):
        if hasattr(arr, "close"):
            arr.close()
        raise CorruptFileError(path, "an .npz archive, not a cryoSPARC .cs file (one NumPy structured array)")
    if arr.dtype.names is None or arr.ndim != 1:
        raise CorruptFileError(path, f"a plain {arr.dtype} array of shape {arr.shape}; a cryoSPARC .cs file is a "
                               "1-D structured array with fields such as uid, blob/path, alignments3D/pose")
    if len(arr) == 0:
        raise CorruptFileError(path, "no particles (0 records)")
    if "uid" not in arr.dtype.names:
        raise MissingColumnError(path, "no 'uid' field: every cryoSPARC particle record has one", field="uid")
    if arr.dtype["uid"].kind not in "iu" or arr.dtype["uid"].shape != ():
        raise CorruptFileError(path, f"'uid' has dtype {arr.dtype['uid']}; expected one unsigned integer per "
                               "particle", field="uid")
    return arr


def read_cs_fields(path: str | Path, passthrough: str | Path | Sequence[str | Path] | None = None
                   ) -> tuple[dict[str, np.ndarray], dict[str, Path]]:
    """Every field of a ``.cs`` file, with passthrough files merged in by ``uid``.

    Returns
    -------
    fields
        name → ``(N, ...)`` array, in the main file's particle order.
    origin
        name → the file the field was taken from (for error messages).

    Raises
    ------
    MissingFileError, CorruptFileError, MissingColumnError, CountMismatchError
    """
    path = Path(path)
    arr = _load_array(path)
    fields = {name: arr[name] for name in arr.dtype.names}
    origin = dict.fromkeys(fields, path)
    uid = fields["uid"].astype(np.uint64)
    if len(np.unique(uid)) != len(uid):
        raise CorruptFileError(path, "some particle uids occur more than once; each particle needs its own uid",
                               field="uid")
    if passthrough is None:
        for pt_path in _passthrough_candidates(path, fields):
            _merge(fields, origin, uid, path, pt_path, strict=False)
        return fields, origin
    extra = [Path(passthrough)] if isinstance(passthrough, (str, Path)) else [Path(p) for p in passthrough]
    for pt_path in extra:
        _merge(fields, origin, uid, path, pt_path, strict=True)
    return fields, origin


def _passthrough_candidates(path: Path, fields: dict[str, np.ndarray]) -> list[Path]:
    """The ``*passthrough*.cs`` files beside ``path``, when it lacks the CTF or the images.

    cryoSPARC writes a job's new fields to ``Jn_particles.cs`` and the rest to
    ``Jn_passthrough_particles.cs`` in the same job folder; a user who opens the first
    expects the second to be found, as cryoSPARC itself does.
    """
    if all(name in fields for name in (*CS_CTF_FIELDS, *_BLOB_FIELDS)):
        return []
    return [p for p in sorted(path.parent.glob("*passthrough*.cs")) if p.resolve() != path.resolve()]


def _merge(fields: dict[str, np.ndarray], origin: dict[str, Path], uid: np.ndarray, path: Path, pt_path: Path,
           *, strict: bool) -> None:
    """Add ``pt_path``'s fields that ``fields`` lacks, row-matched by ``uid``.

    ``strict``: a passthrough file the user named must hold every particle (else a named
    error); a file found automatically (``strict=False``) that does not is skipped.
    """
    if not strict and not any(True for _ in _missing_names(pt_path, fields)):
        return
    pt = _load_array(pt_path)
    pt_uid = pt["uid"].astype(np.uint64)
    order = np.argsort(pt_uid, kind="stable")
    sorted_uid = pt_uid[order]
    if len(sorted_uid) > 1 and (np.diff(sorted_uid) == 0).any():
        if not strict:
            return
        raise CorruptFileError(pt_path, "some particle uids occur more than once; each particle needs its own "
                               "uid", field="uid")
    pos = np.clip(np.searchsorted(sorted_uid, uid), 0, len(sorted_uid) - 1)
    found = sorted_uid[pos] == uid
    if not found.all():
        if not strict:
            return
        r = int(np.flatnonzero(~found)[0])
        raise CountMismatchError(pt_path, f"{int((~found).sum())} of the {len(uid)} particles of {path.name} "
                                 f"are not in this passthrough file (first: uid {int(uid[r])}, row {r}); "
                                 "was it written by the same cryoSPARC job?", field="uid")
    rows = order[pos]
    for name in pt.dtype.names:
        if name not in fields:
            fields[name] = pt[name][rows]
            origin[name] = pt_path


def _missing_names(pt_path: Path, fields: dict[str, np.ndarray]):
    """Field names of ``pt_path`` (read from its header only) that ``fields`` lacks."""
    try:
        arr = np.load(pt_path, mmap_mode="r", allow_pickle=False)
        names = arr.dtype.names or ()
    except Exception:  # unreadable: the strict path reports it, the automatic one skips it
        return iter(())
    return (n for n in names if n not in fields)


# --------------------------------------------------------------------------- fields

def _numeric(fields, origin, name: str, shape: tuple[int, ...] = ()) -> np.ndarray:
    """``(N, *shape)`` float64 values of a numeric field, checked finite."""
    a = fields[name]
    src = origin[name]
    if a.dtype.kind not in "fiu" or a.shape[1:] != shape:
        want = "one number" if not shape else f"{shape[0]} numbers"
        raise CorruptFileError(src, f"field has dtype {a.dtype} and shape {a.shape[1:]} per particle; expected "
                               f"{want} per particle", field=name)
    out = a.astype(np.float64)
    bad = ~np.isfinite(out.reshape(len(out), -1)).all(axis=1)
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        uid = fields["uid"][r]
        raise CorruptFileError(src, f"{int(bad.sum())} particle(s) have NaN or infinite values, first at row {r} "
                               f"(uid {int(uid)}): {a[r]!r}; every particle needs a finite value", field=name)
    return out


def cs_rotations(rotvec: np.ndarray) -> np.ndarray:
    """cryoSPARC rotation vectors ``(N, 3)`` → ``(N, 3, 3)`` float32 poses (RELION convention).

    ``exp([v]ₓ)ᵀ`` (see the module docstring), the exponential by SciPy's ``Rotation.from_rotvec``.
    """
    rotvec = np.asarray(rotvec, dtype=np.float64).reshape(-1, 3)
    return np.swapaxes(Rotation.from_rotvec(rotvec).as_matrix(), -1, -2).astype(np.float32)


def _poses(path, fields, origin, apix: float, blob_apix: float | None, required: bool):
    pose_name, shift_name = CS_POSE_FIELDS
    if pose_name not in fields:
        if required:
            raise MissingColumnError(path, f"no {pose_name} field (the 3D alignment rotation vectors); a .cs file "
                                     "from a 3D refinement job has it (or pass its passthrough file)", field=pose_name)
        return None, None
    rotations = cs_rotations(_numeric(fields, origin, pose_name, (3,)))
    if shift_name in fields:
        shifts_px = _numeric(fields, origin, shift_name, (2,))
        scale = apix
        if "alignments3D/psize_A" in fields and blob_apix is not None:
            align_apix = single_pixel_size(origin["alignments3D/psize_A"],
                                 _numeric(fields, origin, "alignments3D/psize_A"), "alignments3D/psize_A")
            scale = apix * align_apix / blob_apix  # pixels of the alignment, in the dataset's Å
        shifts = shifts_px * scale
    else:
        shifts = np.zeros((len(rotations), 2))
    return rotations, shifts.astype(np.float32)


def _ctf(path, fields, origin, required: bool) -> CTFParams | None:
    missing = [f for f in CS_CTF_FIELDS if f not in fields]
    if missing:
        if required:
            raise MissingColumnError(path, f"CTF fields missing: {', '.join(missing)} (need {', '.join(CS_CTF_FIELDS)}"
                                     "; a passthrough .cs file may hold them)", field=missing[0])
        return None
    n = len(fields["uid"])
    get = {f: _numeric(fields, origin, f) for f in CS_CTF_FIELDS}
    phase = (_numeric(fields, origin, "ctf/phase_shift_rad") if "ctf/phase_shift_rad" in fields else np.zeros(n))
    if "ctf/bfactor" in fields:
        b = fields["ctf/bfactor"]
        if b.dtype.kind in "fiu" and np.nan_to_num(b.astype(np.float64)).any():
            warnings.warn(f"{origin['ctf/bfactor']}: ctf/bfactor is non-zero for some particles; it is not applied "
                          "(the CTF envelope is taken as B = 0)", stacklevel=3)
    return CTFParams(
        defocus_u_a=get["ctf/df1_A"],
        defocus_v_a=get["ctf/df2_A"],
        defocus_angle_rad=get["ctf/df_angle_rad"],
        voltage_kv=get["ctf/accel_kv"],
        cs_mm=get["ctf/cs_mm"],
        amplitude_contrast=get["ctf/amp_contrast"],
        phase_shift_rad=phase,
        bfactor_a2=np.zeros(n),
    )


def read_cs_ctf(path: str | Path, *, passthrough: str | Path | Sequence[str | Path] | None = None) -> CTFParams:
    """The CTF of a ``.cs`` file (and its passthrough files) alone; no stack is opened.

    Raises
    ------
    MissingFileError, CorruptFileError, MissingColumnError, CountMismatchError
    """
    fields, origin = read_cs_fields(path, passthrough)
    return _ctf(Path(path), fields, origin, required=True)


# --------------------------------------------------------------------------- stacks

def _find_stack(cs_dir: Path, project_dir: Path | None, name: str) -> Path | None:
    """``blob/path`` as it is (absolute), under ``project_dir``, or under the ``.cs`` folder or a parent."""
    p = Path(name)
    if p.is_absolute():
        cands = [p]
    elif project_dir is not None:
        cands = [project_dir / p]
    else:
        cands = [cs_dir / p, *(anc / p for anc in cs_dir.resolve().parents)]
    return next((c for c in cands if c.is_file()), None)


def _blob_paths(path: Path, fields, origin) -> np.ndarray:
    raw = fields["blob/path"]
    if raw.dtype.kind == "S":
        names = np.char.decode(raw, "utf-8")
    elif raw.dtype.kind == "U":
        names = raw
    else:
        raise CorruptFileError(origin["blob/path"], f"field has dtype {raw.dtype}; expected text (stack paths)",
                               field="blob/path")
    names = np.asarray(names, dtype=str)
    return np.where(np.char.startswith(names, ">"), np.char.lstrip(names, ">"), names)


def _stack(path: Path, fields, origin, project_dir: Path | None) -> MultiFileStack:
    missing = [f for f in _BLOB_FIELDS if f not in fields]
    if missing:
        raise MissingColumnError(path, f"no {missing[0]} field: the file does not say where the particle images "
                                 "are (need blob/path and blob/idx; a passthrough .cs file may hold them)",
                                 field=missing[0])
    names = _blob_paths(path, fields, origin)
    idx_raw = fields["blob/idx"]
    if idx_raw.dtype.kind not in "iu" or idx_raw.shape[1:] != ():
        raise CorruptFileError(origin["blob/idx"], f"field has dtype {idx_raw.dtype}; expected one integer image "
                               "index per particle", field="blob/idx")
    where = (f"in the project folder {project_dir}" if project_dir is not None
             else f"in {path.parent} and its parent folders")
    images = open_indexed_stacks(
        path, names, idx_raw.astype(np.int64), first_index=0,
        resolve=lambda name: _find_stack(path.parent, project_dir, name), field="blob/path",
        where=f"{where}. blob/path is relative to the cryoSPARC project folder: pass project_dir=<that folder>",
        names_source=origin["blob/path"], index_source=origin["blob/idx"])
    if "blob/shape" in fields:
        shape = fields["blob/shape"]
        if shape.dtype.kind in "iu" and shape.shape[1:] == (2,):
            ny, nx = images.shape[1:]
            off = (shape[:, 0] != ny) | (shape[:, 1] != nx)
            if off.any():
                r = int(np.flatnonzero(off)[0])
                raise ImageShapeError(origin["blob/shape"], f"row {r}: blob/shape is {tuple(int(v) for v in shape[r])} "
                                      f"but the stack images are {ny}x{nx} px", field="blob/shape")
    return images


def _table(fields: dict[str, np.ndarray]) -> pd.DataFrame:
    cols: dict[str, np.ndarray] = {}
    for name, a in fields.items():
        if a.dtype.kind == "S":
            a = np.char.decode(a, "utf-8", errors="replace")
        if a.ndim == 1:
            cols[name] = a
        else:
            flat = a.reshape(len(a), -1)
            for j in range(flat.shape[1]):
                cols[f"{name}[{j}]"] = flat[:, j]
    return pd.DataFrame(cols)


# --------------------------------------------------------------------------- public

def read_cs(
    path: str | Path,
    *,
    project_dir: str | Path | None = None,
    passthrough: str | Path | Sequence[str | Path] | None = None,
    apix: float | None = None,
    require: Iterable[str] = ("images",),
) -> ParticleDataset:
    """Open a cryoSPARC ``.cs`` particle file lazily (no image data read).

    Parameters
    ----------
    path
        The ``.cs`` file.
    project_dir
        The cryoSPARC project folder that ``blob/path`` is relative to. Default: the ``.cs``
        file's folder, then each of its parent folders, until the stack exists.
    passthrough
        One or more passthrough ``.cs`` files merged by ``uid`` (module docstring); when not
        given, the passthrough files beside ``path`` are found automatically if needed.
    apix
        Pixel size (Å/px), overriding ``blob/psize_A`` and the MRC header.
    require
        Subset of ``{"images", "poses", "ctf"}``: raise :class:`MissingColumnError` when
        poses or CTF are requested but absent.

    Returns
    -------
    ParticleDataset
        ``table`` holds every field (vector fields as ``name[i]`` columns, text decoded);
        ``meta`` has ``"source"``, ``"cs_path"``, ``"cs_project_dir"`` and ``"cs_passthrough"``.

    Raises
    ------
    CryohetInputError
        Subclasses naming the file and field: MissingFileError, MissingStackError,
        CorruptFileError, MissingColumnError, CountMismatchError, StackIndexError,
        ImageShapeError, PixelSizeError.
    """
    path = Path(path)
    require = set(require)
    if not require <= _REQUIRE:
        raise ValueError(f"read_cs: require must be a subset of {sorted(_REQUIRE)}, got {sorted(require)}")
    proj = Path(project_dir) if project_dir is not None else None
    if proj is not None and not proj.is_dir():
        raise MissingFileError(proj, "the cryoSPARC project folder given as project_dir does not exist",
                               field="project_dir")
    fields, origin = read_cs_fields(path, passthrough)
    images = _stack(path, fields, origin, proj)
    blob_apix = (single_pixel_size(origin["blob/psize_A"], _numeric(fields, origin, "blob/psize_A"), "blob/psize_A")
                 if "blob/psize_A" in fields else None)
    if apix is not None:
        if not (np.isfinite(apix) and apix > 0):
            raise PixelSizeError(path, f"apix={apix} given; a positive pixel size is expected", field="apix")
        ds_apix = float(apix)
    elif blob_apix is not None:
        ds_apix = blob_apix
    elif images.stacks[0].apix:
        ds_apix = float(images.stacks[0].apix)
    else:
        raise PixelSizeError(path, "no pixel size: no blob/psize_A field and voxel size 0 in the MRC header; "
                             "pass apix=...", field="blob/psize_A")
    rotations, shifts = _poses(path, fields, origin, ds_apix, blob_apix, required="poses" in require)
    ctf = _ctf(path, fields, origin, required="ctf" in require)
    meta = {
        "source": str(path),
        "cs_path": str(path),
        "cs_project_dir": None if proj is None else str(proj),
        "cs_passthrough": sorted({str(p) for p in origin.values() if p != path}),
    }
    return ParticleDataset(images=images, apix=ds_apix, rotations=rotations, shifts_a=shifts, ctf=ctf,
                           table=_table(fields), meta=meta)
