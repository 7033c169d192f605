"""Where a run writes: checked before the run starts (docs/design.md, "Output-location checks").

A long run must not fail after an epoch of training because its folder is a file, cannot
be written, or the disk is full: :func:`check_output_location` refuses such a location up
front with :class:`~napari_cryohet.io.errors.OutputLocationError`, naming the folder and
what is wrong. (A disk that fills up *during* a write is caught by
:func:`napari_cryohet.io.atomic.atomic_path`, which keeps the last complete file.)
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from napari_cryohet.io.errors import OutputLocationError

__all__ = ["check_output_location", "MIN_FREE_BYTES"]

#: Free space a run needs at least, whatever its own estimate (bytes).
MIN_FREE_BYTES = 50 * 2**20


def check_output_location(path: str | Path, *, need_bytes: int = 0) -> Path:
    """Refuse an output directory that cannot take a run, before the run starts.

    Raises :class:`OutputLocationError` when ``path`` (or a parent) is a file, the directory
    cannot be created or written to, or the disk has less free space than ``need_bytes``
    (and at least :data:`MIN_FREE_BYTES`). Creates ``path`` and returns it.
    """
    path = Path(path)
    for parent in (path, *path.parents):
        if parent.exists() and not parent.is_dir():
            raise OutputLocationError(parent, "is a file, not a directory: pick another output location")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except PermissionError as err:
        raise OutputLocationError(path, "cannot write here (no permission or a read-only disk)") from err
    except OSError as err:
        raise OutputLocationError(path, f"cannot write here: {err.strerror or err}") from err
    need = max(int(need_bytes), MIN_FREE_BYTES)
    free = shutil.disk_usage(path).free
    if free < need:
        raise OutputLocationError(path, f"only {free / 2**20:.0f} MB free, the run needs about "
                                  f"{need / 2**20:.0f} MB: free some space or pick another location")
    return path
