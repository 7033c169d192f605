"""Load a :class:`~napari_cryohet.core.particle_dataset.ParticleDataset` from disk (lazily).

Inputs (seed 003_751d529320789aa3.txt §1.3, §4.1.6; seed 004_0460feb3adf92bbd.txt §2.1 for
the metadata each particle carries):

* a RELION ``.star`` file (3.1+ with ``data_optics``, or pre-3.1) whose ``rlnImageName``
  column reads ``index@stack`` — 1-based index, stack path relative to the star file's
  folder (then, as RELION writes project-relative paths, to its parent folders up to three
  levels, then to the working directory). Many stacks per star file are fine;
* a ``.mrcs``/``.mrc`` stack with optional cryoDRGN pose and CTF pickles.

Loading is lazy: the star table is parsed and the *header* of each distinct stack is read
and checked (file exists, number of images covers every index, image size), but no image
data is read until the images are indexed (:class:`~napari_cryohet.io.mrc_stack.MultiFileStack`).
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
:func:`~napari_cryohet.io.write_particles.write_dataset_star` writes a subset back with
every original value. How ``index@stack`` names are parsed and resolved is
:mod:`napari_cryohet.io.image_names`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from napari_cryohet.core.particle_dataset import CTFParams, ParticleDataset
from napari_cryohet.core.rotation import euler_to_matrix
from napari_cryohet.io.cryodrgn import check_count, read_ctf_pkl, read_poses_pkl
from napari_cryohet.io.errors import (
    CorruptFileError,
    CountMismatchError,
    MissingColumnError,
    MissingFileError,
    PixelSizeError,
    shown_value,
)
from napari_cryohet.io.image_names import _star_stack
from napari_cryohet.io.mrc_stack import open_stack
from napari_cryohet.io.star import StarTables, read_star

__all__ = [
    "load_options",
    "POSE_COLUMNS",
    "CTF_COLUMNS",
    "load_dataset",
]

POSE_COLUMNS = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")
CTF_COLUMNS = ("rlnDefocusU", "rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast")
_REQUIRE = frozenset({"images", "poses", "ctf"})
_POSE_CHUNK = 1 << 16  # rows per euler_to_matrix call


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
            raise CorruptFileError(self.path, f"row {r + 1}: value {shown_value(values.iloc[r])} is not a finite number",
                                   field=name)
        return out


def single_pixel_size(path: Path, values: np.ndarray, field: str) -> float:
    """The one pixel size of ``values`` (Å/px, per particle from ``field`` of ``path``), or a named error."""
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
            return single_pixel_size(path, v, name)
    det, mag = cols.get("rlnDetectorPixelSize"), cols.get("rlnMagnification")
    if det is not None and mag is not None:
        if (mag <= 0).any():
            raise PixelSizeError(path, "non-positive magnification", field="rlnMagnification")
        return single_pixel_size(path, det * 1e4 / mag, "rlnDetectorPixelSize/rlnMagnification")
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
    project_dir: str | Path | None = None,
    passthrough: str | Path | Iterable[str | Path] | None = None,
    datadir: str | Path | None = None,
    contrast_inverted: bool = False,
) -> ParticleDataset:
    """Open a particle dataset lazily (no image data read; see the module docstring).

    Parameters
    ----------
    path
        A ``.star`` file, a cryoSPARC ``.cs`` file (:mod:`napari_cryohet.io.cryosparc`), or a
        ``.mrcs``/``.mrc`` stack.
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
        :func:`~napari_cryohet.io.write_particles.save_dataset`).
    project_dir, passthrough
        ``.cs`` files only: the cryoSPARC project folder that ``blob/path`` is relative to
        (default: the ``.cs`` file's folder and its parents) and passthrough ``.cs`` files
        merged by particle ``uid`` (default: the ``*passthrough*.cs`` files beside ``path``
        that hold every particle, when the main file lacks the CTF or the images).
    datadir
        The folder the particle stacks are in when they are not where the file says (moved
        or copied data; cryoDRGN's ``--datadir``): for a ``.star``, each stack is looked for
        first as ``datadir/<path in the file>`` and then as ``datadir/<file name>``; for a
        ``.cs``, it is the cryoSPARC project folder (``project_dir``) unless that is given.
        Ignored for a bare stack.
    contrast_inverted
        The images' contrast is inverted with respect to RELION's (dark particles on a light
        background; cryoDRGN's ``--uninvert-data`` convention, some ASPIRE-simulated stacks):
        every image is multiplied by −1 where it is read (the stack's ``contrast_sign``), so
        all stages see RELION's contrast. :func:`napari_cryohet.core.contrast.check_contrast`
        says which way a dataset looks.

    Every option given is recorded in ``meta["load_options"]`` (what a workspace stores to
    reopen the same dataset).

    Returns
    -------
    ParticleDataset
        ``images`` is a lazy :class:`~napari_cryohet.io.mrc_stack.MultiFileStack` (star) or
        :class:`~napari_cryohet.io.mrc_stack.MrcStack`; ``meta`` has ``"source"`` and, for star
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
    if datadir is not None and not Path(datadir).is_dir():
        raise MissingFileError(Path(datadir), "the stacks folder given as datadir is not a folder", field="datadir")
    ctf_pkl = (*read_ctf_pkl(ctf), Path(ctf)) if ctf is not None else None  # (ctf, D, apix, path)
    if path.suffix.lower() == ".star":
        ds = _load_star(path, apix=apix, ctf_pkl=ctf_pkl, poses_pkl=poses, require=require, datadir=datadir)
    elif path.suffix.lower() == ".cs":
        from napari_cryohet.io.cryosparc import read_cs

        cs_require = require - ({"poses"} if poses is not None else set()) - ({"ctf"} if ctf is not None else set())
        ds = read_cs(path, project_dir=project_dir if project_dir is not None else datadir,
                     passthrough=passthrough, apix=apix, require=cs_require)
        ds.rotations, ds.shifts_a, ds.ctf = _apply_pickles(path, len(ds), ds.box_size, ds.apix, ctf_pkl, poses,
                                                           ds.rotations, ds.shifts_a, ds.ctf, path)
    else:
        ds = _load_stack(path, apix=apix, ctf_pkl=ctf_pkl, poses_pkl=poses, require=require)
    if ctf is not None:
        ds.meta["ctf_pkl"] = str(ctf)
    if poses is not None:
        ds.meta["poses_pkl"] = str(poses)
    if datadir is not None:
        ds.meta["datadir"] = str(datadir)
    if contrast_inverted:
        ds.images.contrast_sign = -1.0
    ds.meta["contrast_inverted"] = bool(contrast_inverted)
    ds.meta["load_options"] = load_options(poses=poses, ctf=ctf, apix=apix, project_dir=project_dir,
                                           passthrough=passthrough, datadir=datadir,
                                           contrast_inverted=contrast_inverted)
    if ground_truth and _truth_path(path).is_file():
        ds.ground_truth = _load_truth(_truth_path(path), len(ds))
    if validate:
        ds.images.validate()
    return ds


def load_options(**options) -> dict:
    """The options of :func:`load_dataset` that were given, as plain JSON values (paths as text).

    What a workspace records with its source so that it reopens the very same dataset;
    ``None``, ``False`` and empty values are left out.
    """
    out = {}
    for name, value in options.items():
        if value is None or value is False or value == () or value == []:
            continue
        if isinstance(value, (list, tuple)):
            value = [str(v) for v in value]
        elif isinstance(value, Path):
            value = str(value)
        out[name] = value
    return out


def _apply_pickles(ds_path: Path, n: int, d: int, apix: float, ctf_pkl, poses_pkl, rotations, shifts, ctf,
                   stack_name: str | Path):
    if ctf_pkl is not None:
        ctf_params, _, _, ctf_path = ctf_pkl  # another box size: the pixel size was rescaled (_pickle_apix)
        check_count(ctf_path, len(ctf_params), n, stack_name)
        ctf = ctf_params
    if poses_pkl is not None:
        rotations, shifts = read_poses_pkl(poses_pkl, box_size=d, apix=apix)
        check_count(poses_pkl, len(rotations), n, stack_name)
    return rotations, shifts, ctf


def _check_image_flags(path: Path, cols: _Columns, d: int) -> None:
    """RELION's statements about the images, checked against what the stages assume.

    ``rlnCtfDataAreCtfPremultiplied = 1``: the images were multiplied by their CTF at
    extraction; every stage here models raw images (``CTF · projection``), so such data are
    refused by name rather than fitted with the wrong model. ``rlnImageSize`` that differs
    from the stacks' images (a star file from one extraction, stacks from another, e.g.
    downsampled): a warning naming both, as the pixel size in the star file may be the
    other extraction's.
    """
    flag = cols.get("rlnCtfDataAreCtfPremultiplied")
    if flag is not None and (flag != 0).any():
        raise CorruptFileError(path, f"{int((flag != 0).sum())} particle(s) have rlnCtfDataAreCtfPremultiplied = "
                               "1: their images were multiplied by the CTF at extraction, which the analyses "
                               "here do not model; extract the particles without CTF premultiplication",
                               field="rlnCtfDataAreCtfPremultiplied")
    size = cols.get("rlnImageSize")
    if size is not None and (size != d).any():
        other = int(size[np.flatnonzero(size != d)[0]])
        warnings.warn(f"{path}: rlnImageSize says {other} px but the stacks' images are {d} px; the images are "
                      f"used as they are, and a pixel size taken from this file belongs to the {other}-px images "
                      f"(pass apix= for the {d}-px ones)", stacklevel=4)


def _pickle_apix(ctf_pkl, d: int) -> float | None:
    """The CTF pickle's pixel size for images of ``d`` px: rescaled when the pickle was made at another box.

    cryoDRGN's users parse the CTF at the full extraction size (``D = 512``) and train on a
    downsampled stack (64 px); the defocus and the other CTF parameters are physical, only
    the pixel size changes, by ``D / d``, as cryoDRGN does when it loads such a pair.
    """
    if ctf_pkl is None:
        return None
    _, ctf_d, ctf_apix, ctf_path = ctf_pkl
    if ctf_d == d:
        return ctf_apix
    apix = ctf_apix * ctf_d / d
    warnings.warn(f"{ctf_path}: made for {ctf_d}-px images at {ctf_apix:g} Å/px, the images are {d} px: "
                  f"read with a pixel size of {apix:g} Å/px (the stack downsampled by {ctf_d / d:g}, as cryoDRGN "
                  "assumes)", stacklevel=3)
    return apix


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


def _load_star(path: Path, *, apix, ctf_pkl, poses_pkl, require, datadir=None) -> ParticleDataset:
    tables = read_star(path)
    parts = tables.particles
    if "rlnImageName" not in parts.columns:
        raise MissingColumnError(path, "no rlnImageName column: the star file names no particle images "
                                 "(expected 'index@stack')", field="rlnImageName")
    images = _star_stack(path, parts["rlnImageName"], datadir)
    cols = _Columns(path, tables)
    _check_image_flags(path, cols, images.shape[-1])
    pkl_apix = _pickle_apix(ctf_pkl, images.shape[-1])
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
    pkl_apix = _pickle_apix(ctf_pkl, stack.shape[-1])
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
