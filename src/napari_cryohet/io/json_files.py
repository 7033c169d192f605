"""Small JSON files (configs, manifests, histories): atomic writes, named errors on read.

``jsonable`` turns tuples, NumPy arrays and scalars and paths into JSON types, so a config
written and read back compares equal; :func:`write_json` writes atomically
(:mod:`napari_cryohet.io.atomic`); :func:`read_json` raises
:class:`~napari_cryohet.io.errors.MissingFileError` or
:class:`~napari_cryohet.io.errors.CorruptFileError` naming the file. JSON never runs code
when read, which is why run metadata is JSON and not pickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from napari_cryohet.io.atomic import atomic_path
from napari_cryohet.io.errors import CorruptFileError, MissingFileError, require_file

__all__ = ["jsonable", "write_json", "read_json"]



def jsonable(obj: Any) -> Any:
    """``obj`` with tuples, NumPy arrays and scalars, and paths turned into JSON types."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(jsonable(obj), indent=1))
    return path


def read_json(path: str | Path) -> Any:
    """Read a JSON file; a missing file is :class:`MissingFileError`, bad JSON :class:`CorruptFileError`."""
    path = require_file(path, "a JSON file")
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as err:
        raise MissingFileError(path, "file not found") from err
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
        raise CorruptFileError(path, f"not valid JSON: {err}") from err
