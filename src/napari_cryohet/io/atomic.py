"""Atomic writes: write to a temporary file beside the target, then rename (DESIGN.md §3).

A crash or a cancel mid-write leaves the previous file intact; readers never see half a
file. ``os.replace`` is atomic on POSIX when source and target are on one filesystem,
hence the temporary file in the target's own directory.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = ["atomic_path", "save_npz_atomic"]

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
        prefix=f".{target.name}.", suffix=suffix if suffix is not None else "".join(target.suffixes), dir=target.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; give the file the permissions a plain open() would have.
    os.chmod(tmp_path, 0o666 & ~_UMASK)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def save_npz_atomic(target: str | Path, **arrays: np.ndarray) -> Path:
    """``np.savez`` to ``target`` atomically; returns the path."""
    target = Path(target)
    with atomic_path(target, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
    return target
