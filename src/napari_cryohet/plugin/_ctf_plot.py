"""The stack viewer's CTF plot: the matplotlib canvas and the 1D CTF curves drawn on it.

``_ctf_curves(meta, apix)`` evaluates :func:`napari_cryohet.core.ctf.compute_ctf_1d` along
defocus U (and V when astigmatic) up to Nyquist for the metadata of one particle.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtWidgets import QSizePolicy

__all__: list[str] = []


def _make_ctf_canvas():
    from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(3.6, 1.8), dpi=100, layout="constrained")
    canvas = FigureCanvasQTAgg(figure)
    canvas.setMinimumHeight(150)
    canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
    return canvas, figure.add_subplot(1, 1, 1)


def _ctf_curves(meta: dict[str, Any], apix: float) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """1D CTF along U and V for the particle (empty until ``core.ctf`` exists)."""
    try:
        from napari_cryohet.core.ctf import compute_ctf_1d
    except ImportError:
        return []
    if "defocus_u_a" not in meta:
        return []
    freq = np.linspace(0.0, 0.5 / apix, 400)  # (F,) 1/Å up to Nyquist
    common = dict(voltage_kv=meta["voltage_kv"], cs_mm=meta["cs_mm"],
                  amplitude_contrast=meta["amplitude_contrast"],
                  phase_shift_rad=float(np.radians(meta["phase_shift_deg"])))
    curves = []
    for key, label in (("defocus_u_a", "U"), ("defocus_v_a", "V")):
        values = compute_ctf_1d(_as_input(freq), defocus_a=meta[key], **common)
        curves.append((freq, _to_numpy(values), f"{label} = {meta[key]:.0f} Å"))
        if meta["defocus_u_a"] == meta["defocus_v_a"]:
            break
    return curves


def _as_input(freq: np.ndarray):
    import torch

    return torch.as_tensor(freq, dtype=torch.float64)


def _to_numpy(values) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64)
