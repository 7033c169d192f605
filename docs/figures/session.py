"""Screenshot for docs/index.md and docs/viewer.md: the session dock, its scenes and a linked selection.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/figures/session.py

Opens the bundled ``sample_data/adk_small/particles.star`` (200 simulated adenylate-kinase
particles) in a 1600 × 1000 window with the session dock on the left (tabified with the
layer list) and, on the right, the VAE widget and the particle stack viewer tabified.
Trains the VAE for 5 epochs from its own button (Kimanius, Jamali & Scheres 2022), then
selects the particles at one end of the latent cloud in the latent-space scene, as a
lasso would: the session's selection follows, the stack viewer's table shows exactly
those particles, and the session dock writes them as a ``.star`` file. Saves
``docs/figures/session_selection.png``: the canvas shows the latent scene with the
selected points highlighted, the session dock lists every scene (the particles of the
dataset, the VAE's latent space) with the count of selected particles and the full path
of the exported file, the stack viewer shows the filtered table.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from _figure import SESSION, STACK, STAR, VAE, dock, label, new_viewer, settle, shot, wait

from napari_cryohet.plugin.session_widget import SessionWidget
from napari_cryohet.plugin.stack_viewer import StackViewerWidget
from napari_cryohet.plugin.vae_widget import VAEExplorerWidget


def main() -> None:
    viewer = new_viewer("napari-cryohet: session, scenes and linked selection")
    session = SessionWidget(viewer)
    dock(viewer, session, SESSION, area="left")
    viewer.open(str(STAR), plugin="napari-cryohet")
    settle(1.0)
    vae = VAEExplorerWidget(viewer)
    dock(viewer, vae, VAE)
    stack = StackViewerWidget(viewer)
    stack_dock = dock(viewer, stack, STACK)
    vae.form.epochs.value = 5
    vae.run()
    wait(vae.runner)
    wait(vae.worker_runner)
    print(vae.info.value)

    layer = vae.layer  # the latent points of the scene now on the canvas
    first = np.asarray(layer.data)[:, -1]
    rows = np.flatnonzero(first > np.percentile(first, 80))  # one end of the cloud, as a lasso would take
    viewer.layers.selection.active = layer
    layer.mode = "select"
    layer.selected_data = set(rows.tolist())
    settle(0.5)
    print(session.selection_label.value, "| stack viewer:", stack.filter_status.text())
    out = Path(tempfile.mkdtemp(prefix="cryohet-")) / "selected_particles.star"
    session.export_path.value = str(out)
    session.export()
    print(session.message.value)
    stack_dock.raise_()
    label(viewer, f"{len(rows)} points selected", size=11)
    shot(viewer, "session_selection")
    viewer.close()


if __name__ == "__main__":
    main()
