"""The stack viewer's CTF plot: the matplotlib canvas and the 1D CTF curves drawn on it.

``_ctf_curves(meta, apix)`` evaluates :func:`napari_cryohet.core.ctf.compute_ctf_1d` along
defocus U (and V when astigmatic) up to Nyquist for the metadata of one particle;
``_draw_ctf(ax, meta, apix)`` draws them with axes and legend in words and units.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtWidgets import QSizePolicy

__all__: list[str] = []

#: Axis labels of the CTF plot (words and units).
CTF_X_LABEL = "spatial frequency (1/Å)"
CTF_Y_LABEL = "CTF value (−1 to 1)"


def _make_ctf_canvas():
    from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
    from matplotlib.figure import Figure

    # fixed margins, not layout="constrained": the constrained layout is recomputed at every
    # draw (~90 ms), and the plot is redrawn for every particle shown
    figure = Figure(figsize=(3.6, 1.8), dpi=100)
    figure.subplots_adjust(left=0.16, right=0.97, bottom=0.27, top=0.95)
    canvas = FigureCanvasQTAgg(figure)
    canvas.setMinimumHeight(150)
    canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
    return canvas, figure.add_subplot(1, 1, 1)


def _draw_ctf(ax, meta: dict[str, Any] | None, apix: float) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """Clear ``ax`` and draw the particle's CTF along defocus U (and V); returns the curves."""
    ax.clear()
    ax.set_xlabel(CTF_X_LABEL, fontsize=7)
    ax.set_ylabel(CTF_Y_LABEL, fontsize=7)
    ax.tick_params(labelsize=6)
    curves = _ctf_curves(meta, apix) if meta else []
    for freq, values, label in curves:
        ax.plot(freq, values, lw=0.9, label=label)
    if curves:
        ax.axhline(0.0, color="0.6", lw=0.5)
        ax.set_ylim(-1.05, 1.05)
        ax.set_xlim(0, curves[0][0][-1])
        ax.legend(title="defocus", title_fontsize=6, fontsize=6, loc="lower left", frameon=False)
    return curves


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
