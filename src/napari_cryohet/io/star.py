"""RELION ``.star`` metadata files: read fast (``starfile``-identical tables), write exactly.

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
Interpreting the columns (optics merge, units) is :mod:`napari_cryohet.io.load_particles`'s job.

Why a parser of our own when ``starfile`` exists
------------------------------------------------
``starfile`` (0.5) walks the file one line at a time through :mod:`linecache` (the whole
file held as a list of Python strings, each line fetched and stripped several times), joins
the data lines into one more string and only then hands it to :func:`pandas.read_csv`.
Opening a 10^6-particle RELION 3.1 file (133 MB) with ``load_dataset`` took 10.8-15.1 s
(5.0 s of CPU) with a resident-memory peak of +595 to +921 MB in ``benchmarks/io_lazy.py``,
most of it in that line loop. Files of :data:`FAST_PARSE_MIN_BYTES` or more therefore go
through :func:`_read_blocks_fast`: the ``data_``/``loop_`` headers are read line by line
exactly as ``starfile`` reads them, and each loop's data lines are streamed from their byte
range straight into the same ``pd.read_csv`` call with the same options and the same numeric
coercion afterwards, so the tables are identical (values, dtypes, column names), with no
copy of the text in memory. The same open (with faster ``rlnImageName`` splitting and
chunked pose conversion in :mod:`napari_cryohet.io.load_particles`) now costs 2.6 s of CPU (6.6 s
wall on two cores shared with other jobs) and peaks at +379 MB. Anything the fast path
cannot guarantee to read identically (non-``loop_`` blocks, non-ASCII or control bytes, a
line with an odd number of quotes, duplicate column names, any parse error) falls back to
``starfile``, which also stays the reader of small files.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from napari_cryohet.io.atomic import atomic_path
from napari_cryohet.io.errors import (
    CorruptFileError,
    EmptyFileError,
    require_file,
)

__all__ = ["FAST_PARSE_MIN_BYTES", "StarTables", "read_star", "write_star"]

RELION31_VERSION = "30001"

#: Files at least this large are parsed by :func:`_read_blocks_fast` (smaller ones by
#: ``starfile``, whose per-line cost is negligible there).
FAST_PARSE_MIN_BYTES = 1 << 20


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
    path = require_file(path, "a .star file")
    if path.stat().st_size == 0:
        raise EmptyFileError(path, "the star file is empty (0 bytes)")
    try:
        blocks = _read_blocks(path)
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


def _read_blocks(path: Path) -> dict:
    """All data blocks of ``path`` as ``starfile.read(path, always_dict=True)`` returns them."""
    blocks = None
    if path.stat().st_size >= FAST_PARSE_MIN_BYTES:
        try:
            blocks = _read_blocks_fast(path)
        except Exception:  # anything unexpected: let starfile decide (and word the error)
            blocks = None
    if blocks is None:
        blocks = starfile.read(path, always_dict=True)
    return blocks


class _Unsupported(Exception):
    """The fast parser cannot guarantee ``starfile``'s result for this file."""


# Bytes other than tab, newline and printable ASCII (``\r``, form feed, UTF-8, ...) could
# be stripped or decoded differently from starfile's line-wise ``str.strip()``.
_PLAIN_BYTES = bytes([9, 10, *range(0x20, 0x7F)])
# starfile ends a loop at the first line that, stripped, starts with ``data_`` (a leading
# literal "\n" lets ``re`` skip ahead; a chunk's first line is checked with _FIRST_LINE).
_BLOCK_START = re.compile(rb"\n[ \t]*data_")
_FIRST_LINE = re.compile(rb"[ \t]*data_")
_SCAN_CHUNK = 1 << 22
# The options ``starfile`` 0.5 passes to ``pd.read_csv`` for a loop's data lines.
_READ_CSV_OPTIONS = dict(delimiter=r"\s+", header=None, comment="#", keep_default_na=False,
                         na_values=["nan", "NaN", "<NA>"], engine="c")


def _check_plain(data: bytes) -> None:
    if data.translate(None, _PLAIN_BYTES):
        raise _Unsupported("non-ASCII or control bytes")


def _stripped(line: bytes) -> str:
    _check_plain(line)
    return line.decode("ascii").strip()


def _read_blocks_fast(path: Path) -> dict | None:
    """Parse the star file like ``starfile.read(path, always_dict=True)``, streaming loops.

    The header lines follow ``starfile.parser.StarParser`` step by step (a ``data_`` line
    opens a block, the next line starting with ``loop_`` opens its loop, then ``_name``
    lines name its columns, blank lines are skipped, and the data run up to the next line
    starting with ``data_``); the data lines are not split into Python strings but read in
    place by :func:`pandas.read_csv` with ``starfile``'s options. Returns ``None`` where
    the result could differ from ``starfile``'s (see the module docstring).
    """
    blocks: dict = {}
    try:
        with open(path, "rb") as f:
            line = f.readline()
            while line:
                text = _stripped(line)
                if not text.startswith("data_"):
                    line = f.readline()
                    continue
                name = text[5:]
                while True:
                    line = f.readline()
                    if not line:
                        raise _Unsupported("data_ block without content")
                    text = _stripped(line)
                    if text.startswith("loop_"):
                        break
                    if text.startswith("_"):
                        raise _Unsupported("non-loop data block")
                df, line = _read_loop(f)
                df.name = name  # as starfile does
                blocks[name] = df
    except _Unsupported:
        return None
    return blocks


def _read_loop(f) -> tuple[pd.DataFrame, bytes]:
    """The loop whose ``loop_`` line was just read from ``f``; returns it and the next line."""
    columns = []
    line = f.readline()
    text = _stripped(line)
    while text.startswith("_"):
        columns.append(text.split()[0][1:])
        line = f.readline()
        text = _stripped(line)
    if len(set(columns)) != len(columns):
        raise _Unsupported("duplicate column names")
    while line and text == "":
        line = f.readline()
        text = _stripped(line)
    if not line or text.startswith("data_"):
        df = pd.DataFrame(np.zeros(shape=(0, len(columns))))
        df.columns = columns
        return df, line
    start = f.tell() - len(line)
    end, has_quotes = _scan_loop_data(f, start)
    f.seek(start)
    df = pd.read_csv(_ByteRange(f, end - start, quotes_to_double=has_quotes), **_READ_CSV_OPTIONS)
    df.columns = columns
    for i in range(df.shape[1]):
        raw = df.iloc[:, i]
        try:
            # to_numeric fails as a whole when one value fails: try the first value alone
            # (cheap) before converting a long column of strings such as rlnImageName
            pd.to_numeric(raw.iloc[:1])
            numeric = pd.to_numeric(raw)
        except ValueError:
            continue
        if not numeric.isna().all():  # starfile keeps an all-NaN column as read
            df.isetitem(i, numeric)
    f.seek(end)
    return df, f.readline()


def _scan_loop_data(f, start: int) -> tuple[int, bool]:
    """End offset of the loop data starting at ``start``, and whether it holds quotes.

    Reads line-aligned chunks (no per-line Python work unless a chunk has quotes) and
    raises :class:`_Unsupported` on bytes or quoting that starfile could treat otherwise.
    """
    f.seek(start)
    base, tail, has_quotes = start, b"", False
    while True:
        chunk = f.read(_SCAN_CHUNK)
        buf = tail + chunk
        cut = buf.rfind(b"\n") + 1 if chunk else len(buf)
        lines, tail = buf[:cut], buf[cut:]
        if _FIRST_LINE.match(lines):
            match = 0
        else:
            found = _BLOCK_START.search(lines)
            match = None if found is None else found.start() + 1
        if match is not None:
            lines = lines[:match]
        _check_plain(lines)
        if b'"' in lines or b"'" in lines:
            has_quotes = True
            # starfile strips each line, so a quoted value must not span lines
            if any(ln.count(b'"') % 2 for ln in lines.replace(b"'", b'"').split(b"\n")):
                raise _Unsupported("unbalanced quotes on a line")
        if match is not None or not chunk:
            return base + len(lines), has_quotes
        base += cut


class _ByteRange:
    """``length`` bytes of binary file ``f`` from its position, as a file for ``read_csv``.

    With ``quotes_to_double`` every ``'`` is read as ``"`` (starfile's substitution).
    """

    def __init__(self, f, length: int, *, quotes_to_double: bool = False):
        self._f, self._left, self._quotes = f, length, quotes_to_double

    def read(self, size: int = -1) -> bytes:
        size = self._left if size is None or size < 0 else min(size, self._left)
        data = self._f.read(size)
        self._left -= len(data)
        return data.replace(b"'", b'"') if self._quotes else data

    def __iter__(self):  # pandas wants file-likes to be iterable; the C parser only calls read
        raise io.UnsupportedOperation("read() only")


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
