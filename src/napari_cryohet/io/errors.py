"""Named exceptions for bad input (docs/design.md, "Reliability").

Every error names the file, the field (column, header entry, key) and what was expected,
so a widget can show the message as is and a user can fix the input without reading a
traceback. All derive from :class:`CryohetInputError`, itself a ``ValueError``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "CryohetInputError",
    "CorruptFileError",
    "MissingFileError",
    "MissingColumnError",
    "MissingStackError",
    "StackIndexError",
    "ImageShapeError",
    "NonFiniteImageError",
    "PixelSizeError",
    "CountMismatchError",
    "EmptyFileError",
    "OutputLocationError",
    "require_file",
    "shown_value",
]


class CryohetInputError(ValueError):
    """Base class: a problem with an input file.

    Parameters
    ----------
    path
        The file at fault.
    problem
        What is wrong, in words (the field and what was expected).
    field
        The column, header entry or key at fault, when there is one.
    """

    def __init__(self, path: str | Path | None, problem: str, *, field: str | None = None):
        self.path = Path(path) if path is not None else None
        self.field = field
        self.problem = problem
        where = f"{self.path}" if self.path is not None else "<input>"
        what = f" [{field}]" if field else ""
        super().__init__(f"{where}{what}: {problem}")


class CorruptFileError(CryohetInputError):
    """A file that cannot be parsed: truncated MRC, bad header, unreadable star/pickle."""


class MissingFileError(CryohetInputError):
    """An input file (star, stack, pickle, volume) does not exist."""


class MissingColumnError(CryohetInputError):
    """A required column (pose, CTF, image name) is absent from a metadata table."""


class MissingStackError(MissingFileError):
    """A star row names an image stack that does not exist."""


class StackIndexError(CryohetInputError):
    """A star row points past the end of its stack (or to index < 1)."""


class ImageShapeError(CryohetInputError):
    """Images are not square, or have an odd edge length."""


class NonFiniteImageError(CryohetInputError):
    """Images contain NaN or infinite values, or finite values too large to compute with
    (magnitude above ``mrc_stack.MAX_PIXEL_MAGNITUDE``, whose sums of squares overflow float32)."""


class PixelSizeError(CryohetInputError):
    """No pixel size in the metadata nor in the MRC header (or an invalid one)."""


class CountMismatchError(CryohetInputError):
    """Two inputs that must describe the same particles have different lengths."""


class EmptyFileError(CryohetInputError):
    """A metadata file with no particles."""


class OutputLocationError(CryohetInputError):
    """Where results should go cannot take them: a file in the way, no permission, no space.

    Raised before a long run starts (``stages.output_location.check_output_location``) and when a
    write fails for lack of space; the last complete file written there is kept.
    """


def require_file(path: str | Path, what: str) -> Path:
    """``path`` as a :class:`~pathlib.Path` when it is an existing file; else :class:`MissingFileError`.

    The message says which of the two it is: "is a directory; <what> is expected here" for a
    folder given where a file belongs, "<what> does not exist" otherwise.

    Parameters
    ----------
    path
        The file a user named.
    what
        What the file should be, in words ("a .star file", "the MRC stack").
    """
    path = Path(path)
    if path.is_dir():
        raise MissingFileError(path, f"is a directory; {what} is expected here")
    if not path.is_file():
        raise MissingFileError(path, f"{what} does not exist")
    return path


def shown_value(value: object) -> str:
    """A cell value as a user reads it in a message: ``nan``, ``1.5``, ``'abc'`` (quoted text),
    never ``np.float64(nan)`` (the ``repr`` of a NumPy scalar)."""
    if isinstance(value, str):
        return repr(value)
    if hasattr(value, "item"):  # a NumPy scalar
        value = value.item()
    return str(value)
