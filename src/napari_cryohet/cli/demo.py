"""The guided walkthrough: ``cryohet demo`` (``make demo``).

With a display, napari opens with the *Walkthrough* dock (``plugin/walkthrough.py``): one
step per stage — simulate → spectral embedding → chain fit → VAE → clustering/refinement →
hyper-molecule toy → the check against the ground truth — each with its explanation,
*Run this step*, *Next*, *Reset this step*, and the stage's own dock beside it.

Without a display (no ``DISPLAY`` nor ``WAYLAND_DISPLAY``), or with ``--headless``, the
same steps run one after the other in a napari window on a virtual X display (Xvfb via
pyvirtualdisplay), and ``--out`` (default ``demo_output/``) receives one screenshot per
step (``01_simulate.png`` …), ``summary.json`` (``stages``: a list of ``{name, seconds,
screenshot, headline: {metric, value, truth_check}}``) and ``summary.md``. Without Xvfb the
steps still run and the summary is written, without screenshots. The exit status is 0
when every step ran (whether or not every truth check passed: the summary says).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

__all__ = ["add_args", "main", "run_headless", "capture_window", "wait_for", "SCREEN"]

#: Window size of the screenshots (px).
SCREEN = (1600, 1000)


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--headless", action="store_true",
                        help="run every step under a virtual display, write screenshots and a summary, exit")
    parser.add_argument("--out", type=Path, default=Path("demo_output"), metavar="DIR",
                        help="folder for the screenshots, summary.json, summary.md and the workspaces "
                             "(default: demo_output)")
    parser.add_argument("--size", choices=("laptop", "tiny"), default="laptop",
                        help="'laptop': a few minutes on a laptop CPU (default); 'tiny': seconds, for tests")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the workspaces of an earlier demo in DIR (runs with the same settings are "
                             "reused, not recomputed); default: start afresh")


def _has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def wait_for(condition, *, timeout_s: float = 1800.0) -> None:
    """Turn the Qt event loop until ``condition()`` holds (or ``timeout_s`` passes)."""
    from qtpy.QtWidgets import QApplication

    t0 = time.monotonic()
    while not condition():
        QApplication.processEvents()
        time.sleep(0.02)
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"cryohet demo: a step took longer than {timeout_s:.0f} s")


def capture_window(viewer, path: Path, *, size: tuple[int, int] = SCREEN) -> Path:
    """Resize the window to ``size``, let Qt lay it out and draw, save a PNG of the whole window."""
    from qtpy.QtWidgets import QApplication

    viewer.window.resize(*size)
    for _ in range(5):
        QApplication.processEvents()
        time.sleep(0.02)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    return path


def _fresh(out: Path, reuse: bool) -> None:
    for name in ("workspace", "workspace_pretzel"):
        if not reuse and (out / name).exists():
            shutil.rmtree(out / name)


def _say(step, record) -> None:
    if record.skipped:
        print(f"  {step.name}: skipped ({record.skipped})", flush=True)
    else:
        print(f"  {step.name}: {step.metric} = {record.value:.3g} "
              f"({'passed' if record.passed else 'FAILED'}, {step.rule()}); {record.detail}; "
              f"{record.seconds:.1f} s", flush=True)


def run_headless(out: Path, *, size: str = "laptop", screenshots: bool = True, reuse: bool = False):
    """Run every step; with ``screenshots`` in a napari window (a display must exist), one PNG per step.

    Returns the :class:`~napari_cryohet.walkthrough_steps.Walkthrough` after writing
    ``summary.json`` and ``summary.md`` into ``out``.
    """
    from napari_cryohet.walkthrough_steps import Walkthrough, write_summary

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _fresh(out, reuse)
    if not screenshots:
        walk = Walkthrough(out, size=size)
        walk.run_all(on_step=_say)
        write_summary(walk, out)
        return walk

    import napari

    from napari_cryohet.plugin.walkthrough import WalkthroughWidget

    viewer = napari.Viewer(title="napari-cryohet walkthrough", show=True)
    try:
        widget = WalkthroughWidget(viewer, folder=out, size=size)
        viewer.window.add_dock_widget(widget, name="Walkthrough", area="right")
        viewer.window.resize(*SCREEN)
        walk = widget.walk
        for i, step in enumerate(walk.steps):
            widget.go_to(i)
            wait_for(lambda: True)
            widget.run_step()
            wait_for(lambda: not widget.runner.busy)
            if widget.runner.last_error is not None:
                raise widget.runner.last_error
            record = walk.records[step.name]
            _say(step, record)
            if not record.skipped:
                name = f"{i + 1:02d}_{step.name}.png"
                capture_window(viewer, out / name)
                record.screenshot = name
        write_summary(walk, out)
        return walk
    finally:  # close Qt before the X server goes away
        viewer.close()


def main(args: argparse.Namespace) -> int:
    out = Path(args.out)
    headless = args.headless or not _has_display()
    if not headless:
        import napari

        from napari_cryohet.plugin.walkthrough import WalkthroughWidget

        out.mkdir(parents=True, exist_ok=True)
        _fresh(out, args.reuse)
        viewer = napari.Viewer(title="napari-cryohet walkthrough")
        widget = WalkthroughWidget(viewer, folder=out, size=args.size)
        viewer.window.add_dock_widget(widget, name="Walkthrough", area="right")
        napari.run()
        return 0
    display = None
    if not args.headless or not _has_display():
        try:
            from pyvirtualdisplay import Display

            display = Display(visible=False, size=(SCREEN[0] + 200, SCREEN[1] + 200), color_depth=24)
            display.start()
        except Exception as err:  # Xvfb missing or failing: run without screenshots
            display = None
            print(f"cryohet demo: no display and no virtual display ({err}); running the steps without "
                  "screenshots (install Xvfb, `make sysdeps` as root, for them)", file=sys.stderr)
    screenshots = display is not None or _has_display()
    print(f"cryohet demo: the walkthrough at size {args.size!r}, writing into {out}/", flush=True)
    t0 = time.perf_counter()
    try:
        walk = run_headless(out, size=args.size, screenshots=screenshots, reuse=args.reuse)
    finally:
        if display is not None:
            display.stop()
    final = walk.records.get("truth_check")
    verdict = ("every stage passed its truth check" if final is not None and final.passed
               else f"not every stage passed its truth check ({final.detail if final else 'not run'})")
    print(f"cryohet demo: {len(walk.steps)} steps in {time.perf_counter() - t0:.0f} s; {verdict}; "
          f"summary in {out / 'summary.md'}")
    return 0
