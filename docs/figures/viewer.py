"""Screenshot of the particle stack viewer for docs/viewer.md → docs/figures/viewer.png.

Run under a display (or ``xvfb-run -a .venv/bin/python docs/figures/viewer.py``; ``make
docs-figures`` does it for every figure script). Opens the bundled sample
(``sample_data/adk_small/particles.star``) through the plugin's reader, docks the stack
viewer from the plugin manifest, filters the table with an expression and moves to one
of the hits, then captures the whole window.
"""

from __future__ import annotations

from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

ROOT = Path(__file__).resolve().parents[2]
STAR = ROOT / "sample_data" / "adk_small" / "particles.star"
OUT = Path(__file__).with_suffix(".png")


def main() -> Path:
    viewer = napari.Viewer(title="napari-cryohet: particle stack viewer", show=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-cryohet", "1 · Particle stack viewer")
    viewer.open(str(STAR), plugin="napari-cryohet")
    rows = widget.apply_filter("rlnDefocusU > 20000 and rlnAngleTilt < 90")
    widget.index = int(rows[min(2, len(rows) - 1)])
    viewer.window.resize(1300, 820)
    for _ in range(3):
        QApplication.processEvents()
    viewer.reset_view()
    for _ in range(3):
        QApplication.processEvents()
    viewer.screenshot(str(OUT), canvas_only=False, flash=False)
    viewer.close()
    return OUT


if __name__ == "__main__":
    path = main()
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")
