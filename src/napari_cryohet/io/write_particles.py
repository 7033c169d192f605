"""Write :class:`~napari_cryohet.core.particle_dataset.ParticleDataset` objects: a RELION
``.star`` file (:func:`write_dataset_star`) or a self-contained folder (:func:`save_dataset`).

Field → column conversion is the inverse of :mod:`napari_cryohet.io.load_particles`
(rotations → ``rlnAngleRot/Tilt/Psi`` in degrees, shifts → ``rlnOriginX/YAngst``, CTF →
``rlnDefocusU/V/Angle``, ``rlnPhaseShift``, ``rlnCtfBfactor`` per particle and voltage /
Cs / amplitude contrast per optics group). A dataset loaded from a star file is written
back with its original rows, columns and optics table; every write is atomic.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from napari_cryohet.core.particle_dataset import CTFParams, ParticleDataset
from napari_cryohet.core.rotation import matrix_to_euler
from napari_cryohet.io.atomic import save_npz_atomic
from napari_cryohet.io.cryodrgn import write_ctf_pkl, write_poses_pkl
from napari_cryohet.io.image_names import _file_names, _positional_names, _relocate_names
from napari_cryohet.io.mrc_stack import write_stack
from napari_cryohet.io.star import StarTables, write_star

__all__ = ["write_dataset_star", "save_dataset"]


def _is_star_born(ds: ParticleDataset) -> bool:
    return "star_format" in ds.meta and ds.table is not None and "rlnImageName" in ds.table.columns


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


#: Column that keeps a cryoSPARC particle's ``uid`` in a written ``.star`` (the label pyem's
#: ``csparc2star.py`` writes; RELION keeps unknown labels as they are, and the uid maps a
#: selection made here back to the particles of the cryoSPARC project).
CRYOSPARC_UID_COLUMN = "ucsfUid"


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
        if "uid" in ds.table.columns:  # a cryoSPARC particle's id (io/cryosparc.py)
            parts[CRYOSPARC_UID_COLUMN] = ds.table["uid"].to_numpy()
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
    columns of ``dataset.table`` and, for cryoSPARC particles, their ``uid`` as
    ``ucsfUid`` (:data:`CRYOSPARC_UID_COLUMN`); other columns are skipped (ground truth is saved in
    ``<name>_truth.npz`` by :func:`save_dataset`). Images already in MRC files are
    referenced where they are; in-memory images are written to ``<star stem>.mrcs`` beside
    the star file unless ``stack_name`` names a stack the caller writes.
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
                                                    star_dir, image_paths, dataset.meta.get("datadir")).to_numpy()
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
    CTF) and ``<name>_truth.npz`` (when it has ground truth;
    :func:`~napari_cryohet.io.load_particles.load_dataset` reads it back).

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
