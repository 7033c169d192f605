"""The current particle's metadata in the stack viewer: gathered, then formatted for the panel.

:func:`particle_metadata` collects pose angles, shifts and CTF of one particle (units in
the keys); :func:`format_metadata` turns it into the text of the widget's metadata label.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from napari_cryohet.core.particle_dataset import ParticleDataset
from napari_cryohet.core.rotation import matrix_to_euler

__all__ = ["format_metadata", "particle_metadata"]


def particle_metadata(dataset: ParticleDataset, i: int) -> dict[str, Any]:
    """Metadata of particle ``i`` (position in ``dataset``), units in the keys.

    Angles come from the star columns when the dataset has them (the values the user's
    file holds), otherwise from the rotation matrices (RELION ZYZ, :mod:`core.rotation`).
    """
    table = dataset.table if dataset.table is not None else pd.DataFrame()
    row = table.iloc[i] if len(table.columns) else None

    def col(name: str) -> float | None:
        return float(row[name]) if row is not None and name in row.index else None

    meta: dict[str, Any] = {"particle": int(i), "root_index": int(dataset.indices[i])}
    if row is not None and "rlnImageName" in row.index:
        meta["image_name"] = str(row["rlnImageName"])
    angles = [col("rlnAngleRot"), col("rlnAngleTilt"), col("rlnAnglePsi")]
    if None in angles and dataset.rotations is not None:
        angles = list(np.degrees(matrix_to_euler(np.asarray(dataset.rotations[i], dtype=np.float64))))
    if None not in angles:
        meta.update(rot_deg=float(angles[0]), tilt_deg=float(angles[1]), psi_deg=float(angles[2]))
    if dataset.shifts_a is not None:
        meta.update(shift_x_a=float(dataset.shifts_a[i][0]), shift_y_a=float(dataset.shifts_a[i][1]))
    elif col("rlnOriginXAngst") is not None:
        meta.update(shift_x_a=col("rlnOriginXAngst"), shift_y_a=col("rlnOriginYAngst"))
    if dataset.ctf is not None:
        c = dataset.ctf
        meta.update(
            defocus_u_a=float(c.defocus_u_a[i]),
            defocus_v_a=float(c.defocus_v_a[i]),
            defocus_angle_deg=float(np.degrees(c.defocus_angle_rad[i])),
            voltage_kv=float(c.voltage_kv[i]),
            cs_mm=float(c.cs_mm[i]),
            amplitude_contrast=float(c.amplitude_contrast[i]),
            phase_shift_deg=float(np.degrees(c.phase_shift_rad[i])),
        )
    return meta


#: key → (label in words, value format with unit).
_LABELS = {
    "particle": ("particle", "{:d}"),
    "root_index": ("index in full dataset", "{:d}"),
    "image_name": ("image", "{}"),
    "rot_deg": ("angle rot", "{:.2f}°"),
    "tilt_deg": ("angle tilt", "{:.2f}°"),
    "psi_deg": ("angle psi (in-plane)", "{:.2f}°"),
    "shift_x_a": ("shift x", "{:.2f} Å"),
    "shift_y_a": ("shift y", "{:.2f} Å"),
    "defocus_u_a": ("defocus U", "{:.1f} Å"),
    "defocus_v_a": ("defocus V", "{:.1f} Å"),
    "defocus_angle_deg": ("astigmatism angle", "{:.2f}°"),
    "voltage_kv": ("voltage", "{:.0f} kV"),
    "cs_mm": ("spherical aberration", "{:.2f} mm"),
    "amplitude_contrast": ("amplitude contrast", "{:.3f}"),
    "phase_shift_deg": ("phase shift", "{:.1f}°"),
}


def format_metadata(meta: dict[str, Any]) -> str:
    """One ``label: value unit`` line per metadata entry, labels right-aligned."""
    rows = [(_LABELS.get(key, (key.replace("_", " "), "{}")), value) for key, value in meta.items()]
    width = max((len(label) for (label, _), _ in rows), default=0)
    return "\n".join(f"{label:>{width}}: {fmt.format(value)}" for (label, fmt), value in rows)
