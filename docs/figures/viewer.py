"""Screenshot of the particle stack viewer for docs/viewer.md → docs/figures/viewer.png.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/figures/viewer.py

Opens the bundled sample (``sample_data/adk_small/particles.star``) through the plugin's
reader in a 1600 × 1000 window with the session dock on the left and the stack viewer on
the right, filters the table with an expression, moves to one of the hits and captures
the whole window: the particles scene (2D, slider "particle"), the particle's metadata
and CTF, the filtered table.
"""

from __future__ import annotations

from _figure import SESSION, STACK, STAR, dock, new_viewer, settle, shot

from napari_cryohet.plugin.session_widget import SessionWidget
from napari_cryohet.plugin.stack_viewer import StackViewerWidget


def main() -> None:
    viewer = new_viewer("napari-cryohet: particle stack viewer")
    session = SessionWidget(viewer)
    stack = StackViewerWidget(viewer)
    dock(viewer, session, SESSION, area="left")
    dock(viewer, stack, STACK)
    viewer.open(str(STAR), plugin="napari-cryohet")
    settle(1.0)
    rows = stack.apply_filter("rlnDefocusU > 20000 and rlnAngleTilt < 90")
    stack.index = int(rows[2])
    settle(0.5)
    viewer.reset_view()
    shot(viewer, "viewer")
    viewer.close()


if __name__ == "__main__":
    main()
