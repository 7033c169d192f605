"""Shared steps of the documentation figure scripts (not a figure itself: ``make_figures`` skips ``_*.py``).

Every figure is made the way a user works: a napari window of 1600 × 1000 pixels (the
screen the docks are laid out for), the plugin's docks added from its manifest, each
stage started with the widget's own ``run()`` (off the GUI thread), the result shown in
its scene (docs/design.md, "The napari session and its scenes"), and the window captured
once Qt has drawn it.
"""

from __future__ import annotations

import time
from pathlib import Path

from qtpy.QtWidgets import QApplication

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
STAR = ROOT / "sample_data" / "adk_small" / "particles.star"
PLUGIN = "napari-cryohet"
#: Dock names (``display_name`` in src/napari_cryohet/napari.yaml).
SESSION = "0 · Session, scenes and selection"
STACK = "1 · Particle stack viewer"
SPECTRAL = "2 · Spectral embedding (Esteve-Yagüe et al. 2022)"
CHAINFIT = "3 · Backbone chain fit (Esteve-Yagüe et al. 2022)"
VAE = "4 · VAE and latent space (Kimanius, Jamali & Scheres 2022)"
SIZE = (1600, 1000)


def settle(seconds: float = 0.5) -> None:
    """Let Qt handle pending events (layout, redraws, queued callbacks) for ``seconds``."""
    end = time.monotonic() + seconds
    while True:
        QApplication.processEvents()
        if time.monotonic() >= end:
            break
        time.sleep(0.02)


def wait(runner, timeout: float = 600.0) -> None:
    """Keep the GUI alive until ``runner`` (a widget's ``StageRunner``) is idle; raise its error."""
    settle(0.2)
    end = time.monotonic() + timeout
    while runner.busy and time.monotonic() < end:
        settle(0.05)
    if runner.busy:
        raise TimeoutError(f"the job of {runner!r} did not finish in {timeout:.0f} s")
    if runner.last_error is not None:
        raise runner.last_error
    settle(0.5)


def new_viewer(title: str):
    """A napari window of :data:`SIZE`."""
    import napari

    viewer = napari.Viewer(title=title, show=True)
    viewer.window.resize(*SIZE)
    settle(0.3)
    return viewer


def dock(viewer, widget, name: str, *, area: str = "right", tabify: bool = True):
    """Dock ``widget`` under its manifest name ``name``; returns the dock (``.raise_()`` brings its tab to the front)."""
    return viewer.window.add_dock_widget(widget, name=name, area=area, tabify=tabify)


def shot(viewer, name: str, *, canvas_only: bool = False, colours: int = 192) -> Path:
    """Save the window (or canvas) as ``docs/figures/<name>.png`` (palette PNG: a few hundred kB)."""
    from PIL import Image

    settle(1.0)
    rgb = viewer.screenshot(canvas_only=canvas_only, flash=False)[..., :3]
    path = HERE / f"{name}.png"
    Image.fromarray(rgb).quantize(colors=colours, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size / 1024:.0f} KB)", flush=True)
    return path


def label(viewer, text: str, *, size: int = 12) -> None:
    """Write ``text`` in the canvas corner (what the figure shows)."""
    overlay = viewer.canvas.overlays.text
    overlay.visible = True
    overlay.text = text
    overlay.font_size = size
    overlay.color = "white"


def camera(viewer):
    """The viewer's camera (``viewer.scene.camera`` from napari 0.9)."""
    return viewer.scene.camera
