"""Regenerate every documentation figure: run each ``docs/figures/*.py`` script.

Each script writes its PNG beside itself (``_*.py`` are helpers they share, not figures). Without a display (no ``DISPLAY`` /
``WAYLAND_DISPLAY``) the scripts run under one virtual X display (Xvfb via
pyvirtualdisplay). Usage: ``.venv/bin/python docs/make_figures.py [NAME ...]`` (names
without ``.py``; default all); exits non-zero when a script fails. ``make docs-figures``
calls it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

FIGURES = Path(__file__).resolve().parent / "figures"
ROOT = FIGURES.parents[1]


def main(argv: list[str]) -> int:
    scripts = sorted(s for s in FIGURES.glob("*.py") if not s.name.startswith("_"))  # _figure.py: shared helpers
    if argv:
        scripts = [s for s in scripts if s.stem in set(argv)]
    headless = not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    failed = []
    with contextlib.ExitStack() as stack:
        if headless:
            from pyvirtualdisplay import Display

            stack.enter_context(Display(visible=False, size=(1600, 1000), color_depth=24))
        for script in scripts:
            start = time.perf_counter()
            result = subprocess.run([sys.executable, str(script)], cwd=ROOT)
            status = "ok" if result.returncode == 0 else f"FAILED (exit {result.returncode})"
            print(f"{script.relative_to(ROOT)}: {status} in {time.perf_counter() - start:.0f} s", flush=True)
            if result.returncode:
                failed.append(script.name)
    print(f"docs figures: {len(scripts) - len(failed)}/{len(scripts)} ok" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
