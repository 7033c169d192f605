"""The stack viewer's per-particle table: what it shows and the lazy Qt model showing it.

:func:`display_table` is the DataFrame shown (and searched) in
:class:`~napari_cryohet.plugin.stack_viewer.StackViewerWidget`;
:class:`ParticleTableModel` shows its rows to a ``QTableView`` without a per-cell item,
so a 10^6-particle table costs one array per column and nothing per row.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from qtpy.QtCore import QAbstractTableModel, QModelIndex, Qt

from napari_cryohet.core.particle_dataset import ParticleDataset
from napari_cryohet.core.rotation import matrix_to_euler
from napari_cryohet.stages.particle_columns import particle_columns

__all__ = ["ParticleTableModel", "display_table"]


class ParticleTableModel(QAbstractTableModel):
    """A lazy Qt model over a DataFrame, showing the rows ``rows`` (positions).

    Columns are converted to numpy arrays once; ``data`` indexes them per visible cell,
    so a 10^6-row table costs one array per column and nothing per row.
    """

    def __init__(self, frame: pd.DataFrame | None = None, parent=None):
        super().__init__(parent)
        self._names: list[str] = []
        self._columns: list[np.ndarray] = []
        self.rows = np.zeros(0, dtype=np.int64)
        if frame is not None:
            self.set_frame(frame)

    def set_frame(self, frame: pd.DataFrame) -> None:
        self.beginResetModel()
        self._names = [str(c) for c in frame.columns]
        self._columns = [frame[c].to_numpy() for c in frame.columns]
        self.rows = np.arange(len(frame), dtype=np.int64)
        self.endResetModel()

    def set_rows(self, rows: np.ndarray) -> None:
        self.beginResetModel()
        self.rows = np.asarray(rows, dtype=np.int64)
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: B008 - Qt signature
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: B008 - Qt signature
        return 0 if parent.isValid() else len(self._names)

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or role != Qt.ItemDataRole.DisplayRole:
            return None
        value = self._columns[index.column()][self.rows[index.row()]]
        return _format(value)

    def headerData(self, section: int, orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if orientation == Qt.Orientation.Horizontal:
            return self._names[section] if section < len(self._names) else None
        return str(self.rows[section]) if section < len(self.rows) else None


def _format(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{value:.6g}"
    return str(value)


# ----------------------------------------------------------------------------- science-free views
def display_table(dataset: ParticleDataset) -> pd.DataFrame:
    """The per-particle table shown (and searched) in the widget.

    A star-born dataset shows its table as read (every column). A synthetic dataset has
    no table, so RELION-named columns are derived from its poses and CTF (so the same
    queries, e.g. ``rlnDefocusU > 15000``, work on both). The per-particle columns of
    :func:`napari_cryohet.stages.particle_columns.particle_columns` that the table lacks are
    added (ground truth as ``truth_state`` or ``truth_state_0``, ``truth_state_1`` …,
    ``truth_state_params…``, ``defocus_a``, cluster ``labels``), except ``index``, which
    the row header shows.
    """
    table = dataset.table if dataset.table is not None else pd.DataFrame(index=pd.RangeIndex(len(dataset)))
    frame = table.reset_index(drop=True)
    derived: dict[str, np.ndarray] = {}
    if dataset.rotations is not None and "rlnAngleRot" not in frame:
        euler = np.degrees(matrix_to_euler(np.asarray(dataset.rotations, dtype=np.float64)))  # (N, 3)
        derived.update(rlnAngleRot=euler[:, 0], rlnAngleTilt=euler[:, 1], rlnAnglePsi=euler[:, 2])
    if dataset.shifts_a is not None and "rlnOriginXAngst" not in frame and "rlnOriginX" not in frame:
        shifts = np.asarray(dataset.shifts_a, dtype=np.float64)  # (N, 2)
        derived.update(rlnOriginXAngst=shifts[:, 0], rlnOriginYAngst=shifts[:, 1])
    if dataset.ctf is not None and "rlnDefocusU" not in frame:
        ctf = dataset.ctf
        derived.update(
            rlnDefocusU=np.asarray(ctf.defocus_u_a, float),
            rlnDefocusV=np.asarray(ctf.defocus_v_a, float),
            rlnDefocusAngle=np.degrees(np.asarray(ctf.defocus_angle_rad, float)),
        )
    for name, values in particle_columns(dataset).items():
        if name != "index" and name not in frame and name not in derived:
            derived[name] = values
    if derived:
        frame = pd.concat([frame, pd.DataFrame(derived)], axis=1)
    return frame
