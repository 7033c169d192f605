"""Screenshot for docs/chainfit.md: reference, truth and fitted AdK chains overlaid.

    xvfb-run -a .venv/bin/python docs/figures/chainfit.py

Simulates 800 AdK particles (seed 000 §3.2: σ = 3 Å, 64 px, 200 kV, SNR 0.056), computes
10 Laplacian eigenvectors of their 16³ low-resolution densities (spectral stage), fits the
chains for 8 epochs, hands the result to the chain-fit dock widget and captures the
window: the fitted chain (orange), the true chain (cyan) and the reference frame 0
(magenta) of one test particle in 3D, its image and the CTF-filtered projection of the
fit beside them, and the loss / error curves in the dock.
"""

from __future__ import annotations

from pathlib import Path

import napari
import numpy as np
import torch
from qtpy.QtWidgets import QApplication

from napari_cryohet.plugin.chainfit_widget import ChainFitWidget
from napari_cryohet.stages.chainfit import ChainFitConfig, reference_from_dataset, run_chainfit
from napari_cryohet.stages.simulate import adk_chain
from napari_cryohet.stages.spectral import SpectralConfig, run_spectral

OUT = Path(__file__).resolve().parent / "chainfit.png"


def _settle() -> None:
    for _ in range(5):
        QApplication.processEvents()


def main() -> Path:
    torch.set_num_threads(1)
    ds = adk_chain(800, snr=0.056, seed=0)
    phi = run_spectral(ds, SpectralConfig(representation="lowres_volumes", noise_var=0.5, n_components=None,
                                          graph="gaussian", sigma=80 * np.sqrt(0.5), n_eigenvectors=10)).embedding()
    result = run_chainfit(ds, ChainFitConfig(epochs=8, batch_size=100), eigenvectors=phi,
                          reference=reference_from_dataset(ds))
    viewer = napari.Viewer(title="napari-cryohet: chain fit", show=True)
    widget = ChainFitWidget(viewer, dataset=ds)
    viewer.window.add_dock_widget(widget, name="3 · Chain-fit trainer", area="right")
    widget.show_result(result)
    # a test particle far from the reference conformation (open state)
    test = result.test_indices
    frame = ds.ground_truth["state"][test]
    widget.particle.value = int(test[np.argmax(frame)])
    viewer.window.resize(1400, 850)
    viewer.dims.ndisplay = 3
    for name in ("chainfit particle", "chainfit projection"):  # the widget shows them beside the chains;
        viewer.layers[name].visible = False  # hidden here so the chains fill the canvas
    for kind in ("fit", "truth", "reference"):
        viewer.layers[f"chainfit {kind}"].size = 1.2
        viewer.layers[f"chainfit {kind} path"].edge_width = 0.7
    viewer.text_overlay.visible = True
    viewer.text_overlay.text = "fit (orange) · truth (cyan) · reference = frame 0 (magenta)"
    viewer.text_overlay.font_size = 11
    viewer.text_overlay.color = "white"
    _settle()
    viewer.camera.center = (0.0, 0.0, 0.0)
    viewer.camera.angles = (0.0, 30.0, 80.0)
    viewer.camera.zoom = 7.0
    _settle()
    viewer.screenshot(str(OUT), canvas_only=False, flash=False)
    viewer.close()
    return OUT


if __name__ == "__main__":
    path = main()
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")
