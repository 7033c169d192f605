"""Screenshot for docs/chainfit.md: a backbone chain fitted to one particle of the bundled sample.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/figures/chainfit.py [--normal-modes]

``--normal-modes`` picks the second deformation model (per-particle amplitudes of the
elastic-network normal modes, HEMNMA) in the form and writes ``chainfit_normal_modes.png``.

Opens the bundled ``sample_data/adk_small/particles.star`` (200 simulated adenylate-kinase
particles) through the plugin's reader, docks the session (left) and the chain-fit widget
(right) and presses *Fit chains* with the default settings: the known conformation is
found automatically (the dataset's ground truth, else ``reference_ca.pdb`` beside the
``.star``) and, with no spectral run yet, an embedding with default settings is computed
first (Esteve-Yagüe et al. 2022). When the fit ends its 3D scene is on the canvas, framed:
for one held-out particle, the fitted chain (orange), the true chain (cyan) and the
known conformation it started from (magenta), with the particle's image and the fit's
projection beside them; the dock shows the loss and error curves. ``chainfit_chains.png``
is the same scene's canvas turned and zoomed onto the three chains.
"""

from __future__ import annotations

import numpy as np
from _figure import CHAINFIT, SESSION, STAR, camera, dock, label, new_viewer, settle, shot, wait

from napari_cryohet.plugin.chainfit_widget import ChainFitWidget
from napari_cryohet.plugin.session_widget import SessionWidget


def main(normal_modes: bool = False) -> None:
    viewer = new_viewer("napari-cryohet: backbone chain fit")
    dock(viewer, SessionWidget(viewer), SESSION, area="left")
    viewer.open(str(STAR), plugin="napari-cryohet")
    settle(1.0)
    widget = ChainFitWidget(viewer)
    dock(viewer, widget, CHAINFIT)
    print("known conformation:", widget.reference_note.value)
    if normal_modes:
        widget.form.basis.value = "normal_modes"
    widget.run()
    wait(widget.runner)
    result = widget.result
    print(widget.info.value)
    # the held-out particle whose true chain is farthest from the known conformation
    truth = widget.dataset.ground_truth["coords_a"]
    rows = result.particle_indices  # the bundled sample's particles are in dataset order
    test = np.asarray(result.test_indices)
    far = np.linalg.norm(truth[rows[test]] - result.reference.coords_a, axis=-1).mean(-1)
    widget.particle.value = int(test[np.argmax(far)])
    settle(0.5)
    widget.session.scenes.frame()  # the scene's own framing: looking down z, chains left, images right
    label(viewer, "fit (orange) · truth (cyan) · known conformation (magenta)", size=10)
    shot(viewer, "chainfit_normal_modes" if normal_modes else "chainfit")
    if normal_modes:
        viewer.close()
        return
    # the chains close up, turned (scroll and drag do this by hand): the canvas only
    chains = [lyr for lyr in viewer.layers if lyr.name.startswith("chainfit") and lyr._type_string == "points"]
    viewer.reset_view(layers=chains)
    camera(viewer).angles = (0.0, 30.0, 80.0)
    camera(viewer).zoom *= 0.9
    label(viewer, "orange: fit · cyan: truth · magenta: start", size=12)
    shot(viewer, "chainfit_chains", canvas_only=True)
    viewer.close()


if __name__ == "__main__":
    import sys

    main(normal_modes="--normal-modes" in sys.argv)
