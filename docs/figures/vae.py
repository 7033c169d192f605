"""Screenshots for docs/vae.md: latent space, a decoded volume, a latent path.

    xvfb-run -a .venv/bin/python docs/figures/vae.py

Trains the structural-basis VAE (seed 004) on ``adk_volumes`` (2000 particles, 4 AdK
conformations along closed→open, 40 px, SNR 0.1) for 15 epochs, opens the VAE explorer
widget and writes ``vae_latents.png`` (PCA of the latents coloured by the true
conformation), ``vae_volume.png`` (decoded volume of one particle: iso-surface) and
``vae_path.png`` (five iso-surfaces along the latent path between the two end states).
"""

from __future__ import annotations

from pathlib import Path

import napari
import numpy as np
import torch

from napari_cryohet.plugin.vae_widget import LATENT_LAYER, VOLUME_LAYER, VAEExplorerWidget
from napari_cryohet.stages.simulate import adk_volumes
from napari_cryohet.stages.vae import VAEConfig, isosurface, latent_path, train_vae

HERE = Path(__file__).parent


def _wait(viewer, widget) -> None:
    from qtpy.QtWidgets import QApplication

    while widget.worker_runner.busy or widget.runner.busy:
        QApplication.processEvents()


def main() -> None:
    torch.set_num_threads(1)
    ds = adk_volumes(2000, n_conformations=4, box_size=40, apix=2.4, snr=0.1, seed=0)
    result = train_vae(ds, VAEConfig(epochs=15, seed=0),
                       progress=lambda f, m: print(m) if m.startswith("epoch") and ":" in m else None)
    viewer = napari.Viewer(show=True)
    widget = VAEExplorerWidget(viewer)
    viewer.window.add_dock_widget(widget, name="VAE explorer")
    widget.set_dataset(ds)
    widget.set_result(result)
    _wait(viewer, widget)
    viewer.window.resize(1300, 800)
    viewer.reset_view()
    viewer.screenshot(str(HERE / "vae_latents.png"), canvas_only=False, flash=False)

    states = ds.ground_truth["state"]
    first = int(np.flatnonzero(states == 3)[0])
    widget.select_particle(first)
    _wait(viewer, widget)
    viewer.layers[LATENT_LAYER].visible = False
    viewer.layers[VOLUME_LAYER].visible = False
    viewer.dims.ndisplay = 3
    viewer.camera.angles = (0, 30, 60)
    viewer.reset_view()
    viewer.screenshot(str(HERE / "vae_volume.png"), canvas_only=True, flash=False)

    # five surfaces along the path between the mean latents of the two end states
    for layer in list(viewer.layers):
        viewer.layers.remove(layer)
    ends = np.stack([result.latents[states == 0].mean(0), result.latents[states == 3].mean(0)])
    series = result.decode(latent_path(ends, 5))
    for i, vol in enumerate(series):
        verts, faces = isosurface(vol, level_sigma=2.0, apix=ds.apix)
        viewer.add_surface((verts, faces), name=f"step {i}", colormap="bop orange")
    viewer.grid.enabled = True
    viewer.grid.shape = (1, 5)
    viewer.camera.angles = (0, 30, 60)
    viewer.window.resize(1500, 450)
    viewer.reset_view()
    viewer.screenshot(str(HERE / "vae_path.png"), canvas_only=True, flash=False)
    viewer.close()


if __name__ == "__main__":
    main()
