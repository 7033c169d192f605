"""Per-particle embeddings as napari points layers: sized to be seen, coloured, linked.

Every embedding (spectral eigenvectors, VAE latents, clusters) is drawn the same way: a
points layer in its own scene (:mod:`napari_cryohet.plugin.scenes`) whose point size is a
fixed fraction of the cloud's extent (so ~1-unit eigenvector coordinates and 30-unit
UMAP coordinates both read as a cloud, not as dust or a blob), whose ``features`` are the
session's per-particle columns, and whose selection is the session's linked selection.
Colouring sets ``face_color`` to a column with that column's own range, one vectorised
update (interactive at 10^5 points: ``benchmarks/gui_responsiveness.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["embedding_points", "colour_points", "link_selection", "POINT_FRACTION", "preferred_column",
           "column_label", "column_choices"]

#: Point diameter as a fraction of the cloud's largest extent for N points: ``N^-0.4``
#: clipped to [0.006, 0.06] — 6 % for a few hundred particles (each one visible, the
#: cloud covers the canvas), 1 % at 10^5 (a cloud, not a blob).
POINT_FRACTION = (0.006, 0.06)
#: Columns shown first when present: what a student wants to see the embedding against.
PREFERRED = ("truth_state", "truth_state_0", "truth_state_params", "truth_state_params_0", "labels", "defocus_a",
             "rlnDefocusU")


def preferred_column(columns: Any) -> str | None:
    """The column to colour by at first: ground truth when known, else defocus, else the first."""
    names = list(columns)
    return next((c for c in PREFERRED if c in names), names[0] if names else None)


def _size(data: np.ndarray) -> float:
    span = float(np.ptp(data, axis=0).max()) if len(data) else 1.0
    fraction = float(np.clip(max(len(data), 1) ** -0.4, *POINT_FRACTION))
    return max(span, 1e-6) * fraction


#: Words for the per-particle columns the project makes (star columns keep their names).
COLUMN_WORDS = {
    "truth_state": "true conformation (simulation)",
    "truth_state_0": "true state, parameter 1 (simulation)",
    "truth_state_1": "true state, parameter 2 (simulation)",
    "truth_state_params": "true position along the motion (simulation)",
    "truth_state_params_0": "true angle of arm 1 (simulation)",
    "truth_state_params_1": "true angle of arm 2 (simulation)",
    "truth_state_params_2": "true box angle (simulation)",
    "defocus_a": "defocus (Å)",
    "index": "particle number",
    "labels": "class",
}


def column_label(name: str) -> str:
    """How a per-particle column is listed for the user (``"vae/0001 latents 0"`` → ``"vae/0001 latent 1"``)."""
    if name in COLUMN_WORDS:
        return COLUMN_WORDS[name]
    run, _, rest = name.partition(" ")
    if "/" in run and rest:
        kind, _, j = rest.rpartition(" ")
        word = {"latents": "latent", "eigenvectors": "eigenvector"}.get(kind, kind)
        number = int(j) + (1 if kind == "latents" else 0) if j.isdigit() else j
        return f"{word} {number} of run {run}"
    return name


def column_choices(columns: Any) -> list[tuple[str, str]]:
    """``(words, column)`` pairs for a colour-by combo box."""
    return [(column_label(c), c) for c in columns]


def embedding_points(data: np.ndarray, *, name: str, columns: dict[str, np.ndarray], axis_labels: tuple[str, ...],
                     indices: np.ndarray) -> Any:
    """A points layer for an ``(N, 2|3)`` embedding; ``metadata["cryohet_indices"]`` = root indices."""
    from napari.layers import Points

    data = np.asarray(data, dtype=np.float64)
    features = pd.DataFrame({k: np.asarray(v, dtype=np.float64) for k, v in columns.items()}) if columns else None
    return Points(data, name=name, size=_size(data), features=features, border_width=0, face_color="#4fc3f7",
                  axis_labels=axis_labels,
                  metadata={"cryohet_indices": np.asarray(indices, dtype=np.int64)})


def update_points(layer: Any, data: np.ndarray, axis_labels: tuple[str, ...]) -> None:
    """New coordinates for the same particles (another eigenvector triple, another projection)."""
    layer.data = np.asarray(data, dtype=np.float64)
    layer.axis_labels = axis_labels
    layer.size = _size(layer.data)


def colour_points(layer: Any, column: str | None, colormap: str = "viridis") -> bool:
    """Colour ``layer`` by its feature ``column`` (that column's range); ``False`` if it has no such column.

    The colours are mapped here and set in one assignment: napari's own column colouring
    (``face_color = column`` with a colormap and contrast limits) redraws the whole layer
    once per property set, which at 10^5 points costs seconds instead of one redraw.
    Missing values (NaN) are grey.
    """
    from napari.utils.colormaps import ensure_colormap

    if layer is None or not column or layer.features is None or column not in layer.features:
        return False
    values = np.asarray(layer.features[column], dtype=np.float64)
    finite = np.isfinite(values)
    lo, hi = (float(values[finite].min()), float(values[finite].max())) if finite.any() else (0.0, 1.0)
    scaled = np.clip((values - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0)
    rgba = np.asarray(ensure_colormap(colormap).map(np.where(finite, scaled, 0.0)), dtype=np.float32)
    rgba[~finite] = (0.5, 0.5, 0.5, 1.0)
    layer.face_color = rgba
    layer.metadata["cryohet_colour_by"] = (column, colormap, (lo, hi))
    return True


def link_selection(session: Any, layer: Any) -> None:
    """Selecting points of ``layer`` selects those particles in the session (stack viewer, export)."""
    indices = layer.metadata["cryohet_indices"]

    def on_change(*_: Any) -> None:
        rows = np.fromiter(layer.selected_data, dtype=np.int64)
        if len(rows):
            session.select(indices[rows])

    layer.selected_data.events.items_changed.connect(on_change)
