"""Screenshots of every simulated dataset's napari sample → docs/figures/simulate_<name>.png.

Run under a display (or ``xvfb-run -a .venv/bin/python docs/figures/simulate.py``; ``make
docs-figures`` does it for every figure script). For each sample of the plugin manifest
(File ▸ Open Sample ▸ napari-cryohet) a fresh viewer opens it exactly as a user would,
moves to one particle and captures the canvas. ``simulate.py NAME ...`` makes only those.
"""

from __future__ import annotations

import sys
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

PLUGIN = "napari-cryohet"
SAMPLES = ("box_arms_2d", "adk_chain", "adk_volumes", "assembly_classes", "cat", "pretzel")
OUT = Path(__file__).resolve().parent


def _settle() -> None:
    for _ in range(3):
        QApplication.processEvents()


def shoot(name: str) -> Path:
    viewer = napari.Viewer(title=f"napari-cryohet sample: {name}", show=True)
    viewer.open_sample(PLUGIN, name)
    viewer.window.resize(1000, 640)
    particle_axis = viewer.dims.ndim - 3  # the stack's particle axis (last three: particle/z, y, x)
    viewer.dims.set_point(particle_axis, 0.0 if name != "box_arms_2d" else 5.0)
    if viewer.dims.ndim == 4:  # a volume set: show conformation 0's central slice beside the image
        viewer.dims.set_point(0, 0.0)
    viewer.text_overlay.visible = True
    viewer.text_overlay.text = f"sample: {name}"
    viewer.text_overlay.font_size = 14
    viewer.text_overlay.color = "white"
    _settle()
    viewer.reset_view()
    _settle()
    path = OUT / f"simulate_{name}.png"
    viewer.screenshot(str(path), canvas_only=True, flash=False)
    viewer.close()
    return path


def main(names: list[str]) -> list[Path]:
    return [shoot(name) for name in (names or SAMPLES)]


if __name__ == "__main__":
    for p in main(sys.argv[1:]):
        print(f"wrote {p} ({p.stat().st_size / 1024:.0f} KB)")
