"""Screenshot for docs/spectral.md: eigenvector triples of the box-arms toy (cf. Fig. 4 of seed 000).

    xvfb-run -a .venv/bin/python docs/figures/spectral.py

Runs the spectral stage on ``box_arms_2d`` (4000 particles, 64x64 noisy densities of
seed 000 §3.1 → PCA 30 → self-tuning kNN, k = 30 → 20 eigenvectors), opens the spectral
widget, shows three triples side by side (napari grid mode) coloured by the first arm
angle and the box angle, and saves ``docs/figures/spectral.png``.
"""

from __future__ import annotations

from pathlib import Path

import napari
import numpy as np

from napari_cryohet.plugin.spectral_widget import SpectralWidget
from napari_cryohet.stages.datasets import box_arms_2d
from napari_cryohet.stages.spectral import SpectralConfig, regression_r2, run_spectral

OUT = Path(__file__).with_suffix(".png")


def main() -> None:
    ds = box_arms_2d(4000, seed=0)
    result = run_spectral(ds, SpectralConfig(representation="lowres_volumes", n_components=30,
                                             graph="knn", weights="self_tuning", k=30, n_eigenvectors=20))
    print("R2 (arm1, arm2, box):", np.round(regression_r2(result.eigenvectors, ds.state_params), 3))
    viewer = napari.Viewer(show=True, ndisplay=3)
    widget = SpectralWidget(viewer, dataset=ds)
    viewer.window.add_dock_widget(widget, name="spectral embedding")
    widget.show_result(result)
    viewer.layers.remove(widget.layer)  # replaced by one layer per triple below
    layers = []
    for triple, colour in (((1, 2, 3), "arm1_rad"), ((1, 2, 4), "box_rad"), ((2, 3, 5), "box_rad")):
        widget.layer = None  # a new layer per triple
        widget.phi_a.value, widget.phi_b.value, widget.phi_c.value = triple
        widget.update_triple()
        widget.color_by.value = colour
        widget.update_colors()
        layers.append(widget.layer)
    viewer.grid.enabled = True
    viewer.grid.shape = (1, 3)
    viewer.camera.angles = (15, 35, 80)
    viewer.reset_view()
    viewer.window.resize(1300, 560)
    viewer.screenshot(str(OUT), canvas_only=False, flash=False)
    from PIL import Image  # palette PNG keeps the file < 300 KB

    Image.open(OUT).convert("RGB").quantize(colors=128).save(OUT, optimize=True)
    print("wrote", OUT)
    viewer.close()


if __name__ == "__main__":
    main()
