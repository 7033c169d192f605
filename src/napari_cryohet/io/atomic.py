"""Atomic writes: write to a temporary file beside the target, then rename (docs/design.md, "Reliability").

A crash or a cancel mid-write leaves the previous file intact; readers never see half a
file. A process killed mid-write leaves its hidden ``.<name>.partial-*`` temporary file
behind; :func:`remove_stale_partials` deletes those on the next start. A write that fails
for lack of space raises :class:`~napari_cryohet.io.errors.OutputLocationError`. ``os.replace`` is atomic on POSIX when source and target are on one filesystem,
hence the temporary file in the target's own directory.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = ["atomic_path", "save_npz_atomic", "remove_stale_partials", "PARTIAL_MARK"]

#: Part of every temporary file name :func:`atomic_path` creates.
PARTIAL_MARK = ".partial-"

# Read once at import (os.umask both sets and gets; doing it later would race threads).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(target: str | Path, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it onto ``target``.

    The temporary name keeps ``target``'s suffix (or ``suffix``) so libraries that pick a
    format from the extension (mrcfile, numpy, starfile) behave as for the real name.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}{PARTIAL_MARK}", suffix=suffix if suffix is not None else "".join(target.suffixes), dir=target.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; give the file the permissions a plain open() would have.
    os.chmod(tmp_path, 0o666 & ~_UMASK)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            from napari_cryohet.io.errors import OutputLocationError

            raise OutputLocationError(target, "the disk is full: the file could not be written; the previous "
                                      "version (if any) is kept. Free some space and run again") from err
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def save_npz_atomic(target: str | Path, **arrays: np.ndarray) -> Path:
    """``np.savez`` to ``target`` atomically; returns the path."""
    target = Path(target)
    with atomic_path(target, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
    return target


def remove_stale_partials(directory: str | Path) -> list[Path]:
    """Delete the temporary files a killed :func:`atomic_path` write left in ``directory``.

    Only call this when no other process is writing there (a run's own directory at its
    start). Returns the paths removed.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for path in directory.glob(f".*{PARTIAL_MARK}*"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
