"""Screenshots for docs/vae.md: the latent space, a decoded volume, a volume series along a path.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/figures/vae.py

Simulates adenylate kinase in 4 conformations along closed → open (2000 particles, 40 px,
SNR 0.1), docks the session (left) and the VAE widget (right), sets 15 epochs in the form
and presses *Train VAE* (the structural-basis VAE of Kimanius, Jamali & Scheres 2022).
Writes

- ``vae_latents.png``: the window once training ends: the latent-space scene (PCA of the
  latents, 2D, one point per particle coloured by its true conformation);
- ``vae_volume.png``: one particle of the open state selected, its decoded volume's scene
  (3D, volume and iso-surface in Å about the box centre), with the three projections
  previewed in the dock;
- ``vae_path.png``: the volume-series scene along the latent path from a closed to an
  open particle, at three positions of its slider "conformation along the path" (canvas).
"""

from __future__ import annotations

import numpy as np
import torch
from _figure import HERE, SESSION, VAE, camera, dock, label, new_viewer, settle, shot, wait
from PIL import Image

from napari_cryohet.plugin.session_widget import SessionWidget
from napari_cryohet.plugin.vae_widget import VAEExplorerWidget
from napari_cryohet.stages.simulate import adk_volumes


def _turn(viewer, zoom: float = 0.7) -> None:
    """Turn the framed box so its three axes show; zoom out so its corners stay inside the canvas."""
    camera(viewer).angles = (0.0, 30.0, 60.0)
    camera(viewer).zoom *= zoom


def main() -> None:
    torch.set_num_threads(1)
    ds = adk_volumes(2000, n_conformations=4, box_size=40, apix=2.4, snr=0.1, seed=0)
    viewer = new_viewer("napari-cryohet: VAE and latent space")
    dock(viewer, SessionWidget(viewer), SESSION, area="left")
    widget = VAEExplorerWidget(viewer)
    dock(viewer, widget, VAE)
    widget.set_dataset(ds)
    widget.form.epochs.value = 15
    widget.run()
    wait(widget.runner)
    wait(widget.worker_runner)
    print(widget.info.value)
    label(viewer, "latents (PCA) · colour: true conformation", size=11)
    shot(viewer, "vae_latents")

    states = ds.ground_truth["state"]
    open_one, closed_one = int(np.flatnonzero(states == 3)[0]), int(np.flatnonzero(states == 0)[0])
    widget.select_particle(open_one)
    wait(widget.worker_runner)
    widget.show_volume_scene()  # the scene frames the box looking down z
    _turn(viewer)
    label(viewer, f"decoded at particle {open_one} (open state)", size=11)
    shot(viewer, "vae_volume")

    widget.make_path(anchors=widget.result.latents[[closed_one, open_one]], n_steps=10)
    wait(widget.worker_runner)
    _turn(viewer, 0.5)  # the panels below are wider than the canvas is tall
    panels = []
    for step in (0, 5, 9):
        viewer.dims.set_point(0, float(step))
        label(viewer, f"conformation along the path: {step} of 0-9", size=14)
        settle(0.5)
        panels.append(viewer.screenshot(canvas_only=True, flash=False, size=(600, 560))[..., :3])
    gap = np.full((panels[0].shape[0], 6, 3), 255, dtype=np.uint8)
    row = np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)
    path = HERE / "vae_path.png"
    Image.fromarray(row).quantize(colors=160, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print("wrote", path.name)
    viewer.close()


if __name__ == "__main__":
    main()
