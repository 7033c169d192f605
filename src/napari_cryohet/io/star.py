"""RELION ``.star`` metadata files: read with the ``starfile`` library, write exactly.

Two layouts are recognised (seed 003_751d529320789aa3.txt §1.3 and §4.1.6):

* RELION 3.1+: a ``data_optics`` loop (one row per optics group: ``rlnOpticsGroup``,
  ``rlnImagePixelSize``, ``rlnVoltage``, ``rlnSphericalAberration``,
  ``rlnAmplitudeContrast``, ...) and a ``data_particles`` loop whose ``rlnOpticsGroup``
  column points into it. Shifts are ``rlnOriginXAngst/YAngst`` in Å.
* Pre-3.1 (RELION 2/3.0): a single loop (often ``data_`` or ``data_images``) holding every
  column per particle, shifts ``rlnOriginX/Y`` in pixels, pixel size as
  ``rlnDetectorPixelSize`` (µm) and ``rlnMagnification``, or ``rlnPixelSize``.

:func:`read_star` returns the tables as read (every column, strings kept as strings);
:func:`write_star` writes them back so that reading the output gives the same values: floats
are written in Python's shortest round-trip form (not ``%.6f``), so no digit is lost.
Interpreting the columns (optics merge, units) is :mod:`napari_cryohet.io.dataset`'s job.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import starfile

from napari_cryohet.io.atomic import atomic_path
from napari_cryohet.io.errors import CorruptFileError, EmptyFileError, MissingFileError

__all__ = ["StarTables", "read_star", "write_star"]

RELION31_VERSION = "30001"


@dataclass
class StarTables:
    """The tables of a particle star file.

    Attributes
    ----------
    optics
        The ``data_optics`` loop (RELION 3.1+), or ``None`` for a pre-3.1 file.
    particles
        The particle loop, one row per particle, every column as read.
    path
        The file read (``None`` for tables built in memory).
    particles_block
        Name of the particle block (``"particles"`` in 3.1 files, often ``""`` or
        ``"images"`` before), kept so a rewrite uses the same name.
    extra
        Any other blocks (name → DataFrame or dict), written back after the particles.
    """

    optics: pd.DataFrame | None
    particles: pd.DataFrame
    path: Path | None = None
    particles_block: str = "particles"
    extra: dict = field(default_factory=dict)

    @property
    def is_relion31(self) -> bool:
        """Whether the file has a ``data_optics`` table (RELION 3.1+ layout)."""
        return self.optics is not None


def read_star(path: str | Path) -> StarTables:
    """Read a particle star file (RELION 3.1+ or pre-3.1).

    The particle table is the ``data_particles`` loop if present, else the first loop that
    has an ``rlnImageName`` column, else the first loop other than ``data_optics``.

    Raises
    ------
    MissingFileError
        The file does not exist.
    EmptyFileError
        No data blocks, no particle loop, or a particle loop with no rows.
    CorruptFileError
        ``starfile`` cannot parse it.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, "star file does not exist")
    if path.stat().st_size == 0:
        raise EmptyFileError(path, "the star file is empty (0 bytes)")
    try:
        blocks = starfile.read(path, always_dict=True)
    except Exception as exc:  # starfile/pandas raise many types on malformed text
        raise CorruptFileError(path, f"cannot parse the star file ({type(exc).__name__}: {exc})") from None
    loops = {name: b for name, b in blocks.items() if isinstance(b, pd.DataFrame)}
    if not loops:
        raise EmptyFileError(path, "no loop_ table (no particles) in the star file", field="data_particles")
    optics = loops.get("optics")
    if "particles" in loops:
        name = "particles"
    else:
        with_images = [n for n, b in loops.items() if "rlnImageName" in b.columns and n != "optics"]
        others = [n for n in loops if n != "optics"]
        if not with_images and not others:
            raise EmptyFileError(path, "only a data_optics table; no particle table", field="data_particles")
        name = (with_images or others)[0]
    particles = loops[name]
    if len(particles) == 0:
        raise EmptyFileError(path, "the particle table has no rows", field=f"data_{name}")
    extra = {n: b for n, b in blocks.items() if n not in (name, "optics")}
    return StarTables(optics=optics, particles=particles.reset_index(drop=True), path=path,
                      particles_block=name, extra=extra)


def _quote(value):
    if isinstance(value, str) and (not value or any(c.isspace() for c in value)):
        return f'"{value}"'
    return value


def _loop_text(name: str, df: pd.DataFrame, version: str | None) -> str:
    out = io.StringIO()
    if version:
        out.write(f"\n# version {version}\n")
    out.write(f"\ndata_{name}\n\nloop_\n")
    for i, col in enumerate(df.columns, 1):
        out.write(f"_{col} #{i}\n")
    body = df.copy()
    for col in body.columns:
        if not (pd.api.types.is_numeric_dtype(body[col]) or pd.api.types.is_bool_dtype(body[col])):
            body[col] = body[col].map(_quote)
    # float_format=None: shortest repr that parses back to the same float64.
    out.write(body.to_csv(sep="\t", header=False, index=False, na_rep="<NA>", quoting=csv.QUOTE_NONE,
                          lineterminator="\n"))
    out.write("\n")
    return out.getvalue()


def _pair_text(name: str, block: dict, version: str | None) -> str:
    lines = [f"\n# version {version}\n" if version else "", f"\ndata_{name}\n\n"]
    lines += [f"_{k}\t{_quote(v) if isinstance(v, str) else repr(v)}\n" for k, v in block.items()]
    return "".join(lines) + "\n"


def write_star(path: str | Path, tables: StarTables) -> Path:
    """Write ``tables`` as a star file (atomic); returns the path.

    With an optics table the output is RELION 3.1 layout (``# version 30001``,
    ``data_optics`` then ``data_<particles_block>``); without one, a single particle loop
    as in pre-3.1 files. Every column is written in its order; floats in shortest
    round-trip form, strings with whitespace quoted, missing values as ``<NA>``.
    """
    path = Path(path)
    version = RELION31_VERSION if tables.optics is not None else None
    parts = []
    if tables.optics is not None:
        parts.append(_loop_text("optics", tables.optics, version))
    parts.append(_loop_text(tables.particles_block, tables.particles, version))
    for name, block in tables.extra.items():
        if isinstance(block, pd.DataFrame):
            parts.append(_loop_text(name, block, version))
        else:
            parts.append(_pair_text(name, block, version))
    text = "# written by napari-cryohet\n" + "".join(parts)
    with atomic_path(path, suffix=".star") as tmp:
        tmp.write_text(text)
    return path
