"""cryoDRGN pose and CTF pickles.

Formats (as written by cryoDRGN's ``parse_pose_star`` / ``parse_ctf_star``):

* poses: a tuple ``(rotations (N, 3, 3), translations (N, 2))``. ``rotations`` are
  cryoDRGN's ``R_from_relion(rot, tilt, psi)``. Worked through, that function (both the
  per-particle version and the vectorised one of cryoDRGN ≥ 3) equals RELION's
  ``Euler_angles2matrix``: it builds ``S R S`` with ``S = diag(1, -1, 1)`` from active z
  rotations and then flips the signs of the (0,1), (1,0), (1,2), (2,1) entries, which is
  ``S (S R S) S = R``. So the matrices are this package's poses
  (:mod:`napari_cryohet.core.rotation`) unchanged; ``tests/io/test_cryodrgn.py`` pins this
  against a hand-written copy of cryoDRGN's formula. ``translations`` are
  ``rlnOriginX/Y`` in pixels divided by the box size ``D`` (same sign), i.e.
  ``shifts_a / (apix · D)``. Some tools write the rotations alone (no translations).
* CTF: an ``(N, 9)`` float32 array with columns ``D, Apix, DefocusU (Å), DefocusV (Å),
  DefocusAngle (degrees), Voltage (kV), Cs (mm), AmplitudeContrast, PhaseShift
  (degrees)``. B-factors are not stored (read as 0).

Pickles are read with a restricted unpickler (:func:`_load`): it builds NumPy arrays,
dtypes and scalars, tuples, lists, dicts, strings and numbers — what cryoDRGN writes —
and refuses every other global a pickle names (``os.system``, ``builtins.eval``...) with a
:class:`~napari_cryohet.io.errors.CorruptFileError` naming the file and the global, so a
crafted pickle from a colleague or a download never runs code here.
"""

from __future__ import annotations

import codecs
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from napari_cryohet.core.particle_dataset import CTFParams
from napari_cryohet.io.atomic import atomic_path
from napari_cryohet.io.errors import (
    CorruptFileError,
    CountMismatchError,
    PixelSizeError,
    require_file,
)

__all__ = ["CTF_PKL_COLUMNS", "read_poses_pkl", "write_poses_pkl", "read_ctf_pkl", "write_ctf_pkl"]

CTF_PKL_COLUMNS = (
    "D", "Apix", "defocus_u_a", "defocus_v_a", "defocus_angle_deg", "voltage_kv", "cs_mm",
    "amplitude_contrast", "phase_shift_deg",
)


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


# The only globals a cryoDRGN pose/CTF pickle names (NumPy 1 and 2 module paths; protocol 2
# pickles encode array bytes with ``_codecs.encode``). Nothing else is ever imported or called.
_ALLOWED_GLOBALS = {
    **{(mod, "_reconstruct"): np._core.multiarray._reconstruct
       for mod in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(mod, "scalar"): np._core.multiarray.scalar for mod in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(mod, "_frombuffer"): np._core.numeric._frombuffer for mod in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class _RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, module: str, name: str):
        self.qualified = f"{module}.{name}"
        super().__init__(self.qualified)


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`_ALLOWED_GLOBALS` (the Python docs' "Restricting
    Globals" recipe): the standard ``pickle.load`` imports and calls whatever the file names."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise _RefusedGlobal(module, name) from None


def _load(path: Path) -> Any:
    require_file(path, "a cryoDRGN pickle file")
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f).load()
    except _RefusedGlobal as exc:
        raise CorruptFileError(path, f"the pickle asks to load {exc.qualified!r}, which a cryoDRGN pose or CTF "
                               "pickle never holds (only NumPy arrays, tuples, lists, dicts and numbers are "
                               "read, so that a pickle cannot run code); refused, nothing was run",
                               field="pickle") from None
    except Exception as exc:
        raise CorruptFileError(path, f"cannot unpickle ({type(exc).__name__}: {exc})") from None
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject:
        raise CorruptFileError(path, "an array of Python objects; a numeric array is expected", field="pickle")
    return obj


def _check_apix(path: Path, apix: float | None) -> float:
    if apix is None or not np.isfinite(apix) or apix <= 0:
        raise PixelSizeError(path, f"a positive pixel size is needed to convert translations to Å (got {apix})",
                             field="apix")
    return float(apix)


def read_poses_pkl(path: str | Path, *, box_size: int, apix: float) -> tuple[np.ndarray, np.ndarray]:
    """Read a cryoDRGN pose pickle.

    Parameters
    ----------
    path
        ``(rotations, translations)`` pickle, or rotations alone.
    box_size
        Image edge ``D`` in pixels (translations are fractions of it).
    apix
        Pixel size in Å/px.

    Returns
    -------
    rotations
        ``(N, 3, 3)`` float32, RELION convention (:mod:`napari_cryohet.core.rotation`).
    shifts_a
        ``(N, 2)`` float32 shifts in Å (``rlnOriginXAngst/YAngst``); zeros when the pickle
        holds rotations only.

    Raises
    ------
    MissingFileError, CorruptFileError, CountMismatchError, PixelSizeError
    """
    path = Path(path)
    obj = _load(path)
    if isinstance(obj, (tuple, list)):
        if len(obj) != 2:
            raise CorruptFileError(path, f"a tuple of {len(obj)} items; expected (rotations, translations)")
        rot, trans = _as_numpy(obj[0]), _as_numpy(obj[1])
    else:
        rot, trans = _as_numpy(obj), None
    if rot.ndim != 3 or rot.shape[1:] != (3, 3):
        raise CorruptFileError(path, f"rotations of shape {rot.shape}; expected (N, 3, 3)", field="rotations")
    rot = rot.astype(np.float64)
    if not np.isfinite(rot).all():
        raise CorruptFileError(path, "rotations contain NaN or infinite values", field="rotations")
    err = np.abs(rot @ np.swapaxes(rot, -1, -2) - np.eye(3)).max(initial=0.0)
    if err > 1e-3 or (len(rot) and np.abs(np.linalg.det(rot) - 1).max() > 1e-3):
        raise CorruptFileError(path, f"rotations are not proper rotation matrices (|R Rᵀ - I| = {err:.3g})",
                               field="rotations")
    n = len(rot)
    if trans is None:
        shifts = np.zeros((n, 2))
    else:
        if trans.ndim != 2 or trans.shape[1] != 2:
            raise CorruptFileError(path, f"translations of shape {trans.shape}; expected (N, 2)", field="translations")
        if len(trans) != n:
            raise CountMismatchError(path, f"{n} rotations but {len(trans)} translations", field="translations")
        apix = _check_apix(path, apix)
        shifts = trans.astype(np.float64) * float(box_size) * apix
    return rot.astype(np.float32), shifts.astype(np.float32)


def write_poses_pkl(path: str | Path, rotations: Any, shifts_a: Any, *, box_size: int, apix: float) -> Path:
    """Write poses as a cryoDRGN pickle ``(rotations (N,3,3), shifts_a / (apix·D) (N,2))`` (atomic)."""
    rot = _as_numpy(rotations).astype(np.float64)
    shifts = np.zeros((len(rot), 2)) if shifts_a is None else _as_numpy(shifts_a).astype(np.float64)
    if rot.ndim != 3 or rot.shape[1:] != (3, 3) or shifts.shape != (len(rot), 2):
        raise ValueError(f"write_poses_pkl: rotations {rot.shape} and shifts_a {shifts.shape} must be (N,3,3), (N,2)")
    apix = _check_apix(Path(path), apix)
    trans = shifts / (apix * float(box_size))
    path = Path(path)
    with atomic_path(path, suffix=".pkl") as tmp:
        with open(tmp, "wb") as f:
            pickle.dump((rot, trans), f)
    return path


def read_ctf_pkl(path: str | Path) -> tuple[CTFParams, int, float]:
    """Read a cryoDRGN CTF pickle.

    Returns
    -------
    ctf
        :class:`~napari_cryohet.core.particle_dataset.CTFParams` (angles converted to radians).
    box_size
        ``D`` from column 0.
    apix
        Pixel size from column 1.

    Raises
    ------
    MissingFileError, CorruptFileError
    """
    path = Path(path)
    arr = _as_numpy(_load(path))
    if arr.ndim != 2 or arr.shape[1] != 9:
        raise CorruptFileError(path, f"array of shape {arr.shape}; expected (N, 9) CTF parameters "
                               f"({', '.join(CTF_PKL_COLUMNS)})")
    if len(arr) == 0:
        raise CorruptFileError(path, "no rows")
    arr = arr.astype(np.float64)
    phase = CTF_PKL_COLUMNS.index("phase_shift_deg")
    missing_phase = np.isnan(arr[:, phase])
    if missing_phase.all():
        # cryoDRGN 4.3's parse_ctf_star writes NaN here when the .star has no rlnPhaseShift: no phase plate
        warnings.warn(f"{path}: column {phase} (phase shift) is NaN for every particle (what cryoDRGN writes when "
                      "the .star file has no rlnPhaseShift); read as 0°, i.e. no phase plate", stacklevel=2)
        arr[:, phase] = 0.0
    bad = ~np.isfinite(arr)
    if bad.any():
        rows, cols = np.nonzero(bad)
        names = ", ".join(f"column {c} ({CTF_PKL_COLUMNS[c]})" for c in sorted(set(cols.tolist())))
        raise CorruptFileError(path, f"{int(bad.sum())} NaN or infinite CTF values in {names}, first at particle "
                               f"{int(rows[0])}; every particle needs a finite value",
                               field=CTF_PKL_COLUMNS[int(cols[0])])
    for col, name in ((0, "D"), (1, "Apix")):
        if np.ptp(arr[:, col]) > 1e-6 * abs(arr[0, col]):
            raise CorruptFileError(path, f"column {name} differs between particles; one value is expected", field=name)
    box_size, apix = int(round(arr[0, 0])), float(arr[0, 1])
    ctf = CTFParams(
        defocus_u_a=arr[:, 2].copy(),
        defocus_v_a=arr[:, 3].copy(),
        defocus_angle_rad=np.deg2rad(arr[:, 4]),
        voltage_kv=arr[:, 5].copy(),
        cs_mm=arr[:, 6].copy(),
        amplitude_contrast=arr[:, 7].copy(),
        phase_shift_rad=np.deg2rad(arr[:, 8]),
        bfactor_a2=np.zeros(len(arr)),
    )
    return ctf, box_size, apix


def write_ctf_pkl(path: str | Path, ctf: CTFParams, *, box_size: int, apix: float) -> Path:
    """Write :class:`CTFParams` as a cryoDRGN ``(N, 9)`` float32 CTF pickle (atomic)."""
    n = len(ctf)
    arr = np.stack([
        np.full(n, float(box_size)), np.full(n, float(apix)),
        np.asarray(ctf.defocus_u_a, np.float64), np.asarray(ctf.defocus_v_a, np.float64),
        np.rad2deg(np.asarray(ctf.defocus_angle_rad, np.float64)), np.asarray(ctf.voltage_kv, np.float64),
        np.asarray(ctf.cs_mm, np.float64), np.asarray(ctf.amplitude_contrast, np.float64),
        np.rad2deg(np.asarray(ctf.phase_shift_rad, np.float64)),
    ], axis=1).astype(np.float32)  # (N, 9)
    path = Path(path)
    with atomic_path(path, suffix=".pkl") as tmp:
        with open(tmp, "wb") as f:
            pickle.dump(arr, f)
    return path


def check_count(path: str | Path, n_pkl: int, n_images: int, stack: str | Path) -> None:
    """Raise :class:`CountMismatchError` when a pickle and the stack disagree on N."""
    if n_pkl != n_images:
        raise CountMismatchError(path, f"{n_pkl} particles in the pickle but {n_images} images in {stack}",
                                 field="N")
