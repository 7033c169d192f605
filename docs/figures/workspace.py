"""Screenshots for docs/design.md ("The workspace"): one workspace, three stage widgets, chained by run id.

    xvfb-run -a .venv/bin/python docs/figures/workspace.py

Opens the bundled ``sample_data/adk_small/particles.star`` in napari, docks the spectral,
chain-fit and VAE widgets with one workspace folder, and runs spectral → chain fit (its
eigenvectors picked as ``spectral/0001``) → VAE (1 epoch) → spectral on the VAE's latents
(``features`` picked as ``vae/0001``), each through the widget's own button, off the GUI
thread. Saves one window screenshot per step as ``docs/figures/workspace_<step>.png`` and
prints ``cryohet ws ls`` of the workspace at the end.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

from napari_cryohet.cli.ws import list_runs
from napari_cryohet.plugin.chainfit_widget import ChainFitWidget
from napari_cryohet.plugin.spectral_widget import SpectralWidget
from napari_cryohet.plugin.vae_widget import VAEExplorerWidget

ROOT = Path(__file__).resolve().parents[2]
STAR = ROOT / "sample_data" / "adk_small" / "particles.star"
OUT = Path(__file__).resolve().parent


def _settle(seconds: float = 0.5) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def _wait(runner, timeout: float = 300.0) -> None:
    """Keep the GUI responsive until the runner's job is done; raise what it raised."""
    _settle(0.2)
    end = time.monotonic() + timeout
    while runner.busy and time.monotonic() < end:
        _settle(0.05)
    if runner.last_error is not None:
        raise runner.last_error
    _settle(0.5)


def _shot(viewer, name: str) -> Path:
    path = OUT / f"workspace_{name}.png"
    from PIL import Image

    rgb = viewer.screenshot(canvas_only=False, flash=False)[..., :3]
    Image.fromarray(rgb).quantize(colors=128).save(path, optimize=True)  # a few hundred kB, not MBs
    print("wrote", path.relative_to(ROOT))
    return path


def _step(viewer, widget, name: str) -> None:
    """Press the widget's run button, wait for its run, bring its dock to the front, screenshot."""
    widget.run()
    _wait(widget.runner)
    widget.native.parent().raise_()
    _shot(viewer, name)


def main() -> None:
    ws_dir = Path(tempfile.mkdtemp(prefix="cryohet-ws-")) / "adk_small"
    viewer = napari.Viewer(title="napari-cryohet: one workspace", show=True)
    viewer.window.resize(1500, 950)
    viewer.open(str(STAR), plugin="napari-cryohet")
    spectral = SpectralWidget(viewer)
    chainfit = ChainFitWidget(viewer)
    vae = VAEExplorerWidget(viewer)
    for widget, title in ((spectral, "Spectral embedding"), (chainfit, "Chain-fit trainer"),
                          (vae, "VAE trainer and latent explorer")):
        viewer.window.add_dock_widget(widget, name=title, area="right", tabify=True)
        widget.workspace.folder.value = str(ws_dir)
    _settle(1.0)

    spectral.form.representation.value = "lowres_volumes"
    spectral.form.n_components.value = "10"
    spectral.form.k.value = 10
    spectral.form.n_eigenvectors.value = 6
    _step(viewer, spectral, "1_spectral")

    chainfit.workspace.refresh()
    chainfit.form.n_eigenvectors.value = 4
    chainfit.form.epochs.value = 3
    _step(viewer, chainfit, "2_chainfit")

    vae.form.epochs.value = 1
    vae.form.zdim.value = 2
    _step(viewer, vae, "3_vae")

    spectral.workspace.refresh()
    spectral.workspace.inputs["features"].value = "vae/0001"
    spectral.form.representation.value = "table"
    spectral.form.n_components.value = ""
    spectral.form.n_eigenvectors.value = 4
    _step(viewer, spectral, "4_spectral_on_latents")
    print(list_runs(ws_dir))
    viewer.close()


if __name__ == "__main__":
    main()
