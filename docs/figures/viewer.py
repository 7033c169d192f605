"""Screenshot of the particle stack viewer for docs/viewer.md → docs/figures/viewer.png.

Run under a display (or ``xvfb-run -a .venv/bin/python docs/figures/viewer.py``; ``make
docs-figures`` does it for every figure script). Opens the bundled sample
(``sample_data/adk_small/particles.star``) through the plugin's reader, docks the stack
viewer from the plugin manifest, filters the table with an expression and moves to one
of the hits, then captures the whole window (all through
:func:`napari_cryohet.cli.demo.run_demo`, what ``cryohet demo`` runs).
"""

from __future__ import annotations

from pathlib import Path

from napari_cryohet.cli.demo import run_demo

ROOT = Path(__file__).resolve().parents[2]
STAR = ROOT / "sample_data" / "adk_small" / "particles.star"
OUT = Path(__file__).with_suffix(".png")


def main() -> Path:
    viewer, _ = run_demo(STAR, screenshot=OUT, particle=2, query="rlnDefocusU > 20000 and rlnAngleTilt < 90",
                         title="napari-cryohet: particle stack viewer", size=(1300, 820))
    viewer.close()
    return OUT


if __name__ == "__main__":
    path = main()
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")
