"""Builders of tiny star/MRC/pickle inputs for the io tests (written independently of io/).

Stacks are written with ``mrcfile`` directly and star files as literal text, so the
readers are tested against files they did not write.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np
import pytest


def write_mrcs(path: Path, images: np.ndarray, apix: float | None = None) -> Path:
    """Write a stack with plain mrcfile (voxel size left 0 when ``apix`` is None)."""
    with mrcfile.new(path, overwrite=True) as mrc, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NaN test data
        mrc.set_data(np.asarray(images, dtype=np.float32))
        mrc.set_image_stack()
        if apix is not None:
            mrc.voxel_size = apix
    return path


@dataclass
class StarCase:
    """A RELION star file on disk and the values it was written from."""

    path: Path
    images: np.ndarray  # (N, D, D) in row order
    euler_deg: np.ndarray  # (N, 3)
    shifts_a: np.ndarray  # (N, 2)
    defocus_u: np.ndarray
    defocus_v: np.ndarray
    defocus_angle_deg: np.ndarray
    phase_shift_deg: np.ndarray
    voltage: np.ndarray  # per particle (from the optics group)
    cs: np.ndarray
    q0: np.ndarray
    apix: float
    stack_names: list[str]


def _fmt(x: float) -> str:
    return f"{x:.6f}"


def make_star(
    folder: Path,
    *,
    n: int = 12,
    d: int = 16,
    n_stacks: int = 2,
    apix: float = 2.5,
    relion31: bool = True,
    header_apix: float | None = None,
    star_apix: bool = True,
    name: str = "particles.star",
    stack_dir: str = "Extract",
    seed: int = 0,
) -> StarCase:
    """Write ``n`` particles over ``n_stacks`` stacks (in ``folder/stack_dir``) + a star file.

    Rows are interleaved between stacks and indices are not in order, so the 1-based
    ``index@stack`` mapping is exercised. RELION 3.1: two optics groups (300 kV and
    200 kV) with the same pixel size; pre-3.1: every column per particle, shifts in px.
    """
    rng = np.random.default_rng(seed)
    (folder / stack_dir).mkdir(parents=True, exist_ok=True)
    per_stack = -(-n // n_stacks) + 1
    stacks = [rng.normal(size=(per_stack, d, d)).astype(np.float32) for _ in range(n_stacks)]
    stack_names = [f"{stack_dir}/mic{s:03d}.mrcs" for s in range(n_stacks)]
    for s, imgs in enumerate(stacks):
        write_mrcs(folder / stack_names[s], imgs, header_apix)
    which = np.arange(n) % n_stacks
    index = np.array([per_stack - 1 - (i // n_stacks) for i in range(n)])  # 0-based, descending
    images = np.stack([stacks[w][k] for w, k in zip(which, index, strict=True)])
    euler = np.stack([rng.uniform(-180, 180, n), rng.uniform(0, 180, n), rng.uniform(-180, 180, n)], -1)
    euler = np.round(euler, 6)
    shifts = np.round(rng.normal(0, 4, (n, 2)), 6)
    dfu = np.round(rng.uniform(8000, 30000, n), 6)
    dfv = np.round(dfu - rng.uniform(0, 500, n), 6)
    dfang = np.round(rng.uniform(-90, 90, n), 6)
    phase = np.round(rng.uniform(0, 90, n), 6)
    group = (np.arange(n) % 2) + 1
    voltage = np.where(group == 1, 300.0, 200.0)
    cs = np.where(group == 1, 2.7, 2.0)
    q0 = np.where(group == 1, 0.1, 0.07)
    lines = ["# a hand-written star file", ""]
    if relion31:
        lines += ["# version 30001", "", "data_optics", "", "loop_",
                  "_rlnOpticsGroupName #1", "_rlnOpticsGroup #2", "_rlnMicrographOriginalPixelSize #3",
                  "_rlnVoltage #4", "_rlnSphericalAberration #5", "_rlnAmplitudeContrast #6"]
        if star_apix:
            lines += ["_rlnImagePixelSize #7", "_rlnImageSize #8", "_rlnImageDimensionality #9"]
        for g in (1, 2):
            row = [f"opticsGroup{g}", str(g), "1.0", f"{voltage[g - 1]:.1f}", f"{cs[g - 1]:.1f}", f"{q0[g - 1]:.2f}"]
            if star_apix:
                row += [_fmt(apix), str(d), "2"]
            lines.append("  ".join(row))
        lines += ["", "", "# version 30001", "", "data_particles", "", "loop_"]
        cols = ["rlnImageName", "rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY", "rlnAngleRot",
                "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst", "rlnOriginYAngst", "rlnDefocusU", "rlnDefocusV",
                "rlnDefocusAngle", "rlnPhaseShift", "rlnCtfFigureOfMerit", "rlnOpticsGroup", "rlnClassNumber",
                "rlnRandomSubset", "rlnGroupName"]
    else:
        lines += ["data_", "", "loop_"]
        cols = ["rlnImageName", "rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY", "rlnAngleRot",
                "rlnAngleTilt", "rlnAnglePsi", "rlnOriginX", "rlnOriginY", "rlnDefocusU", "rlnDefocusV",
                "rlnDefocusAngle", "rlnPhaseShift", "rlnCtfFigureOfMerit", "rlnVoltage", "rlnSphericalAberration",
                "rlnAmplitudeContrast", "rlnClassNumber", "rlnRandomSubset", "rlnGroupName"]
        if star_apix:
            cols += ["rlnDetectorPixelSize", "rlnMagnification"]
    lines += [f"_{c} #{i}" for i, c in enumerate(cols, 1)]
    for i in range(n):
        row = {
            "rlnImageName": f"{index[i] + 1:06d}@{stack_names[which[i]]}",
            "rlnMicrographName": f"MotionCorr/job002/mic{which[i]:03d}.mrc",
            "rlnCoordinateX": f"{rng.uniform(0, 4000):.6f}",
            "rlnCoordinateY": f"{rng.uniform(0, 4000):.6f}",
            "rlnAngleRot": _fmt(euler[i, 0]), "rlnAngleTilt": _fmt(euler[i, 1]), "rlnAnglePsi": _fmt(euler[i, 2]),
            "rlnOriginXAngst": _fmt(shifts[i, 0]), "rlnOriginYAngst": _fmt(shifts[i, 1]),
            "rlnOriginX": repr(float(shifts[i, 0] / apix)), "rlnOriginY": repr(float(shifts[i, 1] / apix)),
            "rlnDefocusU": _fmt(dfu[i]), "rlnDefocusV": _fmt(dfv[i]), "rlnDefocusAngle": _fmt(dfang[i]),
            "rlnPhaseShift": _fmt(phase[i]), "rlnCtfFigureOfMerit": f"{rng.uniform():.17g}",
            "rlnOpticsGroup": str(group[i]), "rlnClassNumber": str(1 + i % 3), "rlnRandomSubset": str(1 + i % 2),
            "rlnGroupName": f"group_{i % 4:02d}",
            "rlnVoltage": f"{voltage[i]:.1f}", "rlnSphericalAberration": f"{cs[i]:.1f}",
            "rlnAmplitudeContrast": f"{q0[i]:.2f}",
            "rlnDetectorPixelSize": "5.0", "rlnMagnification": _fmt(5.0 * 1e4 / apix),
        }
        lines.append(" ".join(row[c] for c in cols))
    lines.append("")
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    shifts_a = shifts.copy() if relion31 else (shifts / apix) * apix
    return StarCase(path, images, euler, shifts_a, dfu, dfv, dfang, phase, voltage, cs, q0, apix, stack_names)


@pytest.fixture
def star31(tmp_path) -> StarCase:
    """A RELION 3.1 star file (2 stacks, 2 optics groups) in ``tmp_path``."""
    return make_star(tmp_path)


@pytest.fixture
def star30(tmp_path) -> StarCase:
    """A pre-3.1 star file (shifts in pixels, apix from detector pixel size/magnification)."""
    return make_star(tmp_path, relion31=False)


@pytest.fixture
def mrcs_writer():
    """``write_mrcs(path, images, apix=None)`` (plain mrcfile)."""
    return write_mrcs


@pytest.fixture
def star_maker():
    """``make_star(folder, **options) -> StarCase``."""
    return make_star
