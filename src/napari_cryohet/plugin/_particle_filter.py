"""Row filtering for the stack viewer's search box.

``_filter_rows(frame, text)`` is one vectorised pandas operation: a pandas expression
(``DataFrame.eval``) when ``text`` holds a comparison or boolean operator (:data:`_EXPRESSION`;
one pandas cannot evaluate raises a ``ValueError`` saying what is allowed, :data:`ALLOWED`),
otherwise a case-insensitive substring over text columns plus, for a number, a match of
numeric cells at the precision typed (:func:`_parse_number`).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

__all__: list[str] = []

_EXPRESSION = re.compile(r"[<>=!&|~]|\b(and|or|not|in)\b")

#: What a filter expression may hold, said when one cannot be evaluated.
ALLOWED = ("column names, numbers, quoted text, arithmetic (+ - * /), comparisons (< <= > >= == !=), "
           "and / or / not (or & | ~) and parentheses; e.g. rlnDefocusU > 15000 and rlnClassNumber == 2")


def _filter_rows(frame: pd.DataFrame, text: str) -> np.ndarray:
    n = len(frame)
    if not text:
        return np.arange(n, dtype=np.int64)
    if _EXPRESSION.search(text):
        mask = _evaluate(frame, text)
        if not isinstance(mask, pd.Series) or mask.dtype != bool:
            raise ValueError(f"{text!r} is not a true/false condition; a filter may use {ALLOWED}")
        return np.flatnonzero(mask.to_numpy())
    needle = text.lower()
    number = _parse_number(text)
    hit = np.zeros(n, dtype=bool)
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_bool_dtype(column) or not pd.api.types.is_numeric_dtype(column):
            hit |= column.astype(str).str.lower().str.contains(needle, regex=False).to_numpy()
        elif number is not None:  # numbers match numeric cells at the precision typed
            value, tolerance = number
            hit |= (np.abs(column.to_numpy(dtype=np.float64) - value) <= tolerance)
    return np.flatnonzero(hit)


def _evaluate(frame: pd.DataFrame, text: str):
    """``frame.eval(text)``, with pandas' internal errors turned into what a filter may hold."""
    try:
        return frame.eval(text)
    except NameError as err:  # pandas' UndefinedVariableError: an unknown column
        raise ValueError(f"{text!r}: {err}; the columns are {', '.join(map(str, frame.columns))}") from None
    except Exception:  # noqa: BLE001 - pandas raises AttributeError, SyntaxError, TypeError... on bad text
        raise ValueError(f"{text!r} is not a filter expression: a filter may use {ALLOWED}") from None


def _parse_number(text: str) -> tuple[float, float] | None:
    """``"1.5"`` → ``(1.5, 0.05)``: the value and half a unit of its last typed digit."""
    try:
        value = float(text)
    except ValueError:
        return None
    decimals = len(text.split(".", 1)[1]) if "." in text and "e" not in text.lower() else 0
    return value, 0.5 * 10.0 ** (-decimals) * (1 + 1e-9)
