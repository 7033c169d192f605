"""The per-particle columns that points and tables are coloured / filtered by, built in one place.

:func:`particle_columns` turns a dataset (a
:class:`~napari_cryohet.core.particle_dataset.ParticleDataset` or the box-arms
:class:`~napari_cryohet.stages.simulate.box_arms.Toy2DDataset`) into name → ``(N,)``
float64 array. Every widget that colours by a per-particle value (spectral embedding, VAE
latents) or shows derived columns (the stack viewer's table) takes its columns from here,
so one quantity has one name everywhere:

``index``
    The particle's position in the dataset, ``0 … N-1``.
numeric columns of ``dataset.table``
    Under their own names. A text column whose every value is a number (RELION ``.star``
    values may be read as strings: with pandas 3 a pandas ``StringDtype``) is converted;
    other text columns (``rlnImageName`` …) are left out.
``defocus_a``
    Mean of the CTF's defocus U and V, Å (datasets with a CTF).
``truth_<key>``, ``truth_<key>_<j>``
    Ground truth of synthetic data, ``key`` ∈ ``("state", "state_params")``: ``(N,)`` or
    ``(N, 1)`` → ``truth_<key>``; ``(N, k)``, ``k > 1`` → ``truth_<key>_0 … truth_<key>_{k-1}``.
    A ``Toy2DDataset``'s ``state_params`` (arm 1, arm 2 and box angles, rad) count as
    ``ground_truth["state_params"]``.
``labels``
    Cluster labels in ``dataset.meta["labels"]``.

A name the table already has keeps the table's values (a derived column never replaces it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["particle_columns"]

#: Ground-truth keys shown as columns, in this order.
_TRUTH_KEYS = ("state", "state_params")


def particle_columns(dataset: Any) -> dict[str, np.ndarray]:
    """Per-particle numeric columns of ``dataset``: name → ``(N,)`` float64 (module docstring).

    Examples
    --------
    >>> import numpy as np
    >>> from napari_cryohet.core.particle_dataset import ParticleDataset
    >>> ds = ParticleDataset(images=np.zeros((3, 4, 4), np.float32), apix=1.0,
    ...                      ground_truth={"state": np.array([[0.1, 0.9], [0.2, 0.8], [0.3, 0.7]])})
    >>> list(particle_columns(ds))
    ['index', 'truth_state_0', 'truth_state_1']
    """
    n = len(dataset)
    cols: dict[str, np.ndarray] = {"index": np.arange(n, dtype=np.float64)}
    table = getattr(dataset, "table", None)
    if table is not None and len(table) == n:
        for name in table.columns:
            values = _as_float(table[name])
            if values is not None:
                cols[str(name)] = values
    derived: dict[str, np.ndarray] = {}
    ctf = getattr(dataset, "ctf", None)
    if ctf is not None:
        derived["defocus_a"] = 0.5 * (np.asarray(ctf.defocus_u_a, np.float64) + np.asarray(ctf.defocus_v_a, np.float64))
    truth = dict(getattr(dataset, "ground_truth", None) or {})
    params = getattr(dataset, "state_params", None)  # Toy2DDataset
    if params is not None and "state_params" not in truth:
        truth["state_params"] = params
    for key in _TRUTH_KEYS:
        derived.update(_truth_columns(key, truth.get(key), n))
    meta = getattr(dataset, "meta", None)
    if isinstance(meta, dict) and meta.get("labels") is not None and len(meta["labels"]) == n:
        derived["labels"] = np.asarray(meta["labels"], dtype=np.float64)
    for name, values in derived.items():
        cols.setdefault(name, values)
    return cols


def _as_float(values: pd.Series) -> np.ndarray | None:
    """``(N,)`` float64 of a numeric column, or of a text column holding numbers; else ``None``.

    ``pd.api.types.is_numeric_dtype`` rather than ``np.issubdtype``: the latter raises on
    pandas extension dtypes (``StringDtype``, nullable ``Int64``).
    """
    if pd.api.types.is_complex_dtype(values):
        return None
    if pd.api.types.is_numeric_dtype(values):  # bool included (0 / 1)
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    if not (pd.api.types.is_string_dtype(values) or pd.api.types.is_object_dtype(values)):
        return None  # datetimes, categoricals, ...
    try:
        numbers = pd.to_numeric(values, errors="raise")
    except (ValueError, TypeError):
        return None
    if not pd.api.types.is_numeric_dtype(numbers) or pd.api.types.is_complex_dtype(numbers):
        return None
    out = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
    return None if len(out) and np.isnan(out).all() else out  # e.g. a column of empty strings


def _truth_columns(key: str, value: Any, n: int) -> dict[str, np.ndarray]:
    if value is None:
        return {}
    arr = np.asarray(value)
    if arr.ndim == 0 or len(arr) != n:
        return {}
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim == 1:
        return {f"truth_{key}": arr.astype(np.float64)}
    if arr.ndim == 2:
        return {f"truth_{key}_{j}": arr[:, j].astype(np.float64) for j in range(arr.shape[1])}
    return {}
