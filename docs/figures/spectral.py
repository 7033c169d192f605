"""Screenshot for docs/spectral.md: eigenvector triples of the box-arms toy (cf. Fig. 4 of seed 000).

    xvfb-run -a .venv/bin/python docs/figures/spectral.py

Runs the spectral stage on ``box_arms_2d`` (4000 particles, 64x64 noisy densities of
seed 000 §3.1) with the acceptance setting ``BOX_ARMS_ACCEPTANCE`` (5 Å low-pass → PCA 30
→ tangent-space denoising → self-tuning kNN, k = 8, α = 1 → 20 eigenvectors), opens the
spectral widget and shows three triples side by side (napari grid mode): (φ1, φ2, φ3)
coloured by the first arm angle, then the triple of the eigenvectors most correlated with
the three parameters, coloured by the box angle and by the short arm's angle. Saves
``docs/figures/spectral.png``.
"""

from __future__ import annotations

from pathlib import Path

import napari
import numpy as np

from napari_cryohet.plugin.spectral_widget import SpectralWidget
from napari_cryohet.stages.simulate import box_arms_2d
from napari_cryohet.stages.spectral import (
    BOX_ARMS_ACCEPTANCE,
    SpectralConfig,
    regression_r2,
    run_spectral,
)

OUT = Path(__file__).with_suffix(".png")


def _settle(seconds: float = 1.0) -> None:
    """Let Qt process resize/draw events before the next step (the screenshot reads the canvas)."""
    import time

    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.05)


def main() -> None:
    ds = box_arms_2d(4000, seed=0)
    result = run_spectral(ds, SpectralConfig(**BOX_ARMS_ACCEPTANCE))
    print("R2 (arm1, arm2, box):", np.round(regression_r2(result.eigenvectors, ds.state_params), 3))
    phi = result.eigenvectors[:, 1:]
    corr = np.abs([[np.corrcoef(phi[:, j], p)[0, 1] for j in range(phi.shape[1])] for p in ds.state_params.T])
    best = [int(np.argmax(c)) + 1 for c in corr]  # per parameter (arm1, arm2, box): its best φ
    triple = tuple(sorted(set(best))) if len(set(best)) == 3 else (1, 2, 3)
    print("best eigenvector per parameter (arm1, arm2, box):", best, "|corr|", np.round(corr.max(1), 2))
    viewer = napari.Viewer(show=True, ndisplay=3)
    widget = SpectralWidget(viewer, dataset=ds)
    viewer.window.add_dock_widget(widget, name="spectral embedding")
    widget.show_result(result)
    viewer.layers.remove(widget.layer)  # replaced by one layer per triple below
    layers = []
    for (a, b, c), colour in (((1, 2, 3), "truth_state_params_0"), (triple, "truth_state_params_2"),
                                (triple, "truth_state_params_1")):
        widget.layer = None  # a new layer per triple
        widget.phi_a.value, widget.phi_b.value, widget.phi_c.value = a, b, c
        widget.update_triple()
        widget.color_by.value = colour
        widget.update_colors()
        layers.append(widget.layer)
    viewer.grid.enabled = True
    viewer.grid.shape = (1, 3)
    viewer.camera.angles = (15, 35, 80)
    viewer.window.remove_dock_widget(widget.native.parent())  # the canvas only, as in the docs
    viewer.window.resize(1300, 560)
    _settle()
    viewer.reset_view()
    _settle()
    viewer.screenshot(str(OUT), canvas_only=False, flash=False)
    from PIL import Image  # palette PNG keeps the file < 300 KB

    Image.open(OUT).convert("RGB").quantize(colors=128).save(OUT, optimize=True)
    print("wrote", OUT)
    viewer.close()


if __name__ == "__main__":
    main()
