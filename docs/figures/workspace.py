"""Screenshots for docs/design.md ("The workspace"): one workspace, three stage widgets, chained by run id.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/figures/workspace.py

Opens the bundled ``sample_data/adk_small/particles.star`` in a 1600 × 1000 window, docks
the session (left, tabified with the layer list; its folder field sets the window's
workspace, which every widget shares) and the spectral, chain-fit and VAE widgets
(right, tabified), then runs spectral → chain fit (its eigenvectors from
``spectral/0001``) → VAE (1 epoch) → spectral on the VAE's latents (``features`` from
``vae/0001``), each through the widget's own ``run()``, off the GUI thread. After each
run its scene is on the canvas, framed, and its widget's tab is in front; one window
screenshot per step is saved as ``docs/figures/workspace_<step>.png`` and ``cryohet ws
ls`` of the workspace is printed at the end.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from _figure import (
    CHAINFIT,
    SESSION,
    SPECTRAL,
    STAR,
    VAE,
    dock,
    label,
    new_viewer,
    settle,
    shot,
    wait,
)

from napari_cryohet.cli.ws import list_runs
from napari_cryohet.plugin.chainfit_widget import ChainFitWidget
from napari_cryohet.plugin.session_widget import SessionWidget
from napari_cryohet.plugin.spectral_widget import SpectralWidget
from napari_cryohet.plugin.vae_widget import VAEExplorerWidget


def _step(viewer, widget, dock_widget, name: str, text: str) -> None:
    """Press the widget's run button, wait for its run, bring its dock to the front, screenshot."""
    widget.run()
    wait(widget.runner)
    if hasattr(widget, "worker_runner"):
        wait(widget.worker_runner)
    dock_widget.raise_()
    label(viewer, text, size=11)
    shot(viewer, f"workspace_{name}")


def main() -> None:
    ws_dir = Path(tempfile.mkdtemp(prefix="cryohet-ws-")) / "adk_small"
    viewer = new_viewer("napari-cryohet: one workspace")
    session = SessionWidget(viewer)
    dock(viewer, session, SESSION, area="left")
    viewer.open(str(STAR), plugin="napari-cryohet")
    settle(1.0)
    session.workspace.folder.value = str(ws_dir)  # the window's workspace: every widget's folder field follows
    settle(0.5)
    spectral, chainfit, vae = SpectralWidget(viewer), ChainFitWidget(viewer), VAEExplorerWidget(viewer)
    docks = {w: dock(viewer, w, name) for w, name in ((spectral, SPECTRAL), (chainfit, CHAINFIT), (vae, VAE))}
    settle(1.0)

    spectral.form.n_components.value = "10"
    spectral.form.k.value = 10
    spectral.form.n_eigenvectors.value = 6
    _step(viewer, spectral, docks[spectral], "1_spectral", "run spectral/0001: eigenvectors 1, 2, 3")

    chainfit.form.n_eigenvectors.value = 4
    chainfit.form.epochs.value = 3
    _step(viewer, chainfit, docks[chainfit], "2_chainfit", "run chainfit/0001, eigenvectors from spectral/0001")

    vae.form.epochs.value = 1
    vae.form.zdim.value = 2
    _step(viewer, vae, docks[vae], "3_vae", "run vae/0001: latents")

    # re-list the finished runs: napari's reset_choices on every layer insert/remove (each scene
    # switch) puts the run pickers back to "(none)" (src/napari_cryohet/plugin/_workspace_picker.py)
    spectral.workspace.refresh()
    spectral.workspace.inputs["features"].value = "vae/0001"  # switches the description to "table"
    spectral.form.n_components.value = ""
    spectral.form.n_eigenvectors.value = 4
    _step(viewer, spectral, docks[spectral], "4_spectral_on_latents", "run spectral/0002: embedding of vae/0001")
    print(list_runs(ws_dir))
    viewer.close()


if __name__ == "__main__":
    main()
