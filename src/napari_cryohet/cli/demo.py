"""Open napari on the bundled sample particles with the particle stack viewer: ``cryohet demo``.

With a display, napari opens and stays open until closed. Without one (no ``DISPLAY``
nor ``WAYLAND_DISPLAY``), or with ``--headless``, the same steps run under a virtual X
display (Xvfb via pyvirtualdisplay): a screenshot of the whole window is written to
``--out`` (default ``cryohet-demo/stack_viewer.png``) and the command exits.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["add_args", "main", "sample_star_path", "run_demo", "capture_window"]

PLUGIN = "napari-cryohet"
WIDGET = "1 · Particle stack viewer"  # display_name in napari.yaml


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--headless", action="store_true",
                        help="run under a virtual display, write a screenshot and exit")
    parser.add_argument("--out", type=Path, default=Path("cryohet-demo"), metavar="DIR",
                        help="folder for the screenshot (default: cryohet-demo)")
    parser.add_argument("--star", type=Path, default=None, metavar="FILE",
                        help="particle .star file to show (default: the bundled sample)")
    parser.add_argument("--particle", type=int, default=3, metavar="N",
                        help="particle to show first, counted from 0 (default: 3)")


def sample_star_path() -> Path:
    """``sample_data/adk_small/particles.star`` (the bundled sample; checkout or wheel)."""
    from napari_cryohet.io.errors import MissingFileError
    from napari_cryohet.stages.simulate import sample_data_dir

    path = sample_data_dir() / "adk_small" / "particles.star"
    if not path.is_file():
        raise MissingFileError(path, "bundled sample not found; create it with "
                                     "`.venv/bin/python scripts/make_sample_data.py`")
    return path


def _has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def capture_window(viewer, path: Path, *, size: tuple[int, int] = (1400, 860)) -> Path:
    """Resize the window to ``size``, let Qt lay it out, reset the view, save a PNG of it."""
    from qtpy.QtWidgets import QApplication

    viewer.window.resize(*size)
    for _ in range(3):
        QApplication.processEvents()
    viewer.reset_view()
    for _ in range(3):
        QApplication.processEvents()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    return path


def run_demo(star: Path, *, screenshot: Path | None, particle: int = 3, query: str | None = None,
             title: str = "napari-cryohet demo", size: tuple[int, int] = (1400, 860)):
    """Open a viewer, dock the stack viewer, open ``star`` through our reader.

    ``particle`` is the particle shown first; with ``query`` (a table filter expression,
    e.g. ``"rlnDefocusU > 20000"``) the table is filtered and ``particle`` counts among
    the matches. Returns ``(viewer, widget)``; with ``screenshot`` the window (resized to
    ``size``) is captured to that PNG (:func:`capture_window`).
    """
    import napari

    viewer = napari.Viewer(title=title, show=True)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    viewer.open(str(star), plugin=PLUGIN)
    if widget.dataset is not None:
        rows = widget.apply_filter(query) if query else None
        if rows is not None and len(rows):
            widget.index = int(rows[min(particle, len(rows) - 1)])
        elif rows is None:
            widget.index = min(particle, len(widget.dataset) - 1)
    if screenshot is not None:
        capture_window(viewer, screenshot, size=size)
    return viewer, widget


def main(args: argparse.Namespace) -> int:
    star = args.star if args.star is not None else sample_star_path()
    headless = args.headless or not _has_display()
    if not headless:
        import napari

        run_demo(star, screenshot=None, particle=args.particle)
        napari.run()
        return 0
    from pyvirtualdisplay import Display

    out = Path(args.out) / "stack_viewer.png"
    display = Display(visible=False, size=(1600, 1000), color_depth=24)
    try:
        display.start()
    except Exception as err:  # Xvfb missing or failing: say what to install
        print(f"cryohet demo: no display and no virtual display ({err}); install Xvfb "
              "(`make sysdeps` as root) or run with a display", file=sys.stderr)
        return 1
    import napari

    try:
        run_demo(star, screenshot=out, particle=args.particle)
    finally:  # close Qt before the X server goes away
        napari.Viewer.close_all()
        display.stop()
    print(f"cryohet demo: headless run, screenshot written to {out}")
    return 0
