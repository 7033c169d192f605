"""Screenshot for docs/spectral.md: the spectral embedding of the 2D box with two arms.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/figures/spectral.py

Simulates the box with two arms of Esteve-Yagüe et al. 2022 (4000 particles), docks the
session (left, tabified with the layer list) and the spectral widget (right), puts the
setting that recovers all three angles (``BOX_ARMS_ACCEPTANCE``: 5 Å low-pass, PCA 30,
tangent-space denoising, self-tuning kNN k = 8, α = 1, 20 eigenvectors) in the widget's
form and presses *Compute embedding*. When the run ends its 3D scene is on the canvas,
framed: eigenvectors 1, 2, 3, one point per particle, coloured by the first arm's true
angle; the dock shows the graph Laplacian's spectrum. Saves ``docs/figures/spectral.png``.
"""

from __future__ import annotations

import numpy as np
from _figure import SESSION, SPECTRAL, camera, dock, label, new_viewer, settle, shot, wait

from napari_cryohet.plugin.session_widget import SessionWidget
from napari_cryohet.plugin.spectral_widget import SpectralWidget
from napari_cryohet.stages.simulate import box_arms_2d
from napari_cryohet.stages.spectral import BOX_ARMS_ACCEPTANCE, SpectralConfig, regression_r2


def main() -> None:
    ds = box_arms_2d(4000, seed=0)
    viewer = new_viewer("napari-cryohet: spectral embedding")
    dock(viewer, SessionWidget(viewer), SESSION, area="left")
    widget = SpectralWidget(viewer, dataset=ds)
    dock(viewer, widget, SPECTRAL)
    widget.form.set_config(SpectralConfig(**BOX_ARMS_ACCEPTANCE))
    widget.run()
    wait(widget.runner)
    result = widget.result
    print("R2 (arm1, arm2, box):", np.round(regression_r2(result.eigenvectors, ds.state_params), 3))
    widget.color_by.value = "truth_state_params_0"
    camera(viewer).angles = (10.0, 35.0, 70.0)
    widget.session.scenes.frame()  # what the session dock's "Frame the scene" does
    camera(viewer).angles = (10.0, 35.0, 70.0)
    camera(viewer).zoom *= 0.72  # turned, the cloud's corners need a margin
    label(viewer, "eigenvectors 1, 2, 3 of 4000 particles · colour: the first arm's true angle")
    settle(0.5)
    shot(viewer, "spectral")
    viewer.close()


if __name__ == "__main__":
    main()
