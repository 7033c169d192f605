"""Particle stack viewer dock widget (docs/design.md, stage 1 and the "viewer").

The stack is an ordinary napari image layer ``(N, D, D)``: napari's dims slider steps over
particles and the widget follows ``viewer.dims.events.current_step``. Beside it the widget
shows the current particle's metadata (pose angles, shifts, CTF), the CTF's 1D radial
profile, a searchable per-particle table and an "export as .star" button.

Scales to 10^6 particles: the table is a :class:`ParticleTableModel` that reads the
DataFrame's columns on demand (no per-cell items), filtering is one vectorised pandas
operation, and the images are never read up front (see :mod:`napari_cryohet.plugin._reader`).

The widget's parts live in satellites named by aspect: the table model and the table shown
(:mod:`._particle_table`), the metadata panel (:mod:`._particle_metadata`), the search box's
filtering (:mod:`._particle_filter`) and the CTF plot (:mod:`._ctf_plot`).

Public API (for scripts and tests)
----------------------------------
The widget follows the window's :class:`~napari_cryohet.plugin.session.Session`: its
dataset picker lists the session's datasets, and a selection made in any embedding
(spectral points, VAE latents) filters the table to exactly those particles, ready to be
exported as ``.star``.

``StackViewerWidget(viewer)``; ``.load_dataset(ds, name=None) -> Image layer``;
``.dataset``; ``.layer``; ``.index`` (current particle position, settable);
``.show_particles(indices)``; ``.apply_filter(text) -> rows``; ``.visible_rows``;
``.selected_rows()``; ``.export_star(path, rows=None) -> Path``; ``.current_metadata``
(dict) and ``.metadata_text()``.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from napari.layers import Image
from qtpy.QtCore import QModelIndex, Qt, QTimer
from qtpy.QtGui import QFont
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from napari_cryohet.core.particle_dataset import ParticleDataset
from napari_cryohet.plugin._ctf_plot import _draw_ctf, _make_ctf_canvas
from napari_cryohet.plugin._docking import ScrollDock
from napari_cryohet.plugin._particle_filter import _filter_rows
from napari_cryohet.plugin._particle_metadata import format_metadata, particle_metadata
from napari_cryohet.plugin._particle_table import ParticleTableModel, display_table
from napari_cryohet.plugin._reader import DATASET_KEY
from napari_cryohet.plugin.session import Session, export_target

if TYPE_CHECKING:
    import napari

__all__ = ["StackViewerWidget", "StackViewerDock"]


# ----------------------------------------------------------------------------- the widget
class StackViewerWidget(QWidget):
    """Dock widget: dataset picker, particle metadata, CTF profile, table, export.

    Parameters
    ----------
    napari_viewer
        The viewer (injected by npe2).

    Attributes
    ----------
    dataset_picker : QComboBox
        Image layers carrying a ParticleDataset (``layer.metadata["cryohet_dataset"]``).
    metadata_label : QLabel
        The current particle's metadata (text of :meth:`metadata_text`).
    ctf_canvas, ctf_axes
        matplotlib canvas and axes with the CTF radial profile of the current particle
        (one line along defocus U, one along V when astigmatic).
    filter_edit : QLineEdit
        Search: a substring of any cell, or a pandas expression (``rlnDefocusU > 15000``).
    table_view, table_model
        The per-particle table (:class:`ParticleTableModel`).
    export_button : QPushButton
        Writes the selected rows (or all filtered rows when none selected) as ``.star``.
    """

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.session = Session.for_viewer(napari_viewer)
        self.layer = None
        self.dataset: ParticleDataset | None = None
        self.frame = pd.DataFrame()
        self.current_metadata: dict[str, Any] = {}
        self._index = 0

        self.dataset_picker = QComboBox()
        self.dataset_picker.setToolTip("The particle datasets open in this window")
        self.metadata_label = QLabel("no particle dataset loaded")
        self.metadata_label.setFont(QFont("monospace"))
        self.metadata_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.ctf_canvas, self.ctf_axes = _make_ctf_canvas()
        self.filter_edit = QLineEdit()
        self.filter_edit.setPlaceholderText("search any column, or e.g.  rlnDefocusU > 15000")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_status = QLabel("")
        self.table_model = ParticleTableModel()
        self.table_view = QTableView()
        self.table_view.setModel(self.table_model)
        self.table_view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table_view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table_view.verticalHeader().setDefaultSectionSize(20)
        self.table_view.setMinimumHeight(160)
        self.export_button = QPushButton("Export selected/filtered particles as .star…")
        self.export_button.setToolTip("Write the particles listed in the table (or the rows you selected in it) "
                                      "as a RELION .star file with every original column")

        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        row.addWidget(QLabel("dataset:"))
        row.addWidget(self.dataset_picker, 1)
        layout.addLayout(row)
        layout.addWidget(self.metadata_label)
        layout.addWidget(self.ctf_canvas)
        layout.addWidget(self.filter_edit)
        layout.addWidget(self.filter_status)
        layout.addWidget(self.table_view, 1)
        layout.addWidget(self.export_button)

        # debounce typing; Enter applies at once
        self._filter_timer = QTimer(self)
        self._filter_timer.setSingleShot(True)
        self._filter_timer.setInterval(400)
        self._filter_timer.timeout.connect(lambda: self.apply_filter(self.filter_edit.text()))
        self.filter_edit.textEdited.connect(lambda _text: self._filter_timer.start())
        self.filter_edit.returnPressed.connect(lambda: self.apply_filter(self.filter_edit.text()))
        self.dataset_picker.currentIndexChanged.connect(self._on_pick)
        self.table_view.selectionModel().currentRowChanged.connect(self._on_table_row)
        self.export_button.clicked.connect(self._on_export_clicked)
        self.session.dataset_changed.connect(self._on_session_dataset)
        self.session.selection_changed.connect(self._on_session_selection)
        self.viewer.dims.events.current_step.connect(self._on_step)
        self._refresh_picker()
        if self.session.dataset is not None:
            self._on_session_dataset(self.session.dataset)

    # ------------------------------------------------------------------ loading
    def load_dataset(self, dataset: ParticleDataset, name: str | None = None):
        """Add ``dataset`` to the window (a lazy stack layer in its particles scene) and show it; returns the layer."""
        scene = self.session.add_dataset(dataset, name)
        self.set_layer(scene.layers[0])
        return scene.layers[0]

    def set_layer(self, layer) -> None:
        """Show the dataset of an existing stack layer (one carrying ``cryohet_dataset``)."""
        dataset = layer.metadata.get(DATASET_KEY)
        if not isinstance(dataset, ParticleDataset):
            raise ValueError(f"layer {layer.name!r} carries no {DATASET_KEY!r} in its metadata")
        self.layer, self.dataset = layer, dataset
        self.frame = display_table(dataset)
        self.table_model.set_frame(self.frame)
        self.table_view.resizeColumnsToContents()
        self.filter_edit.clear()
        self.filter_status.setText(f"{len(dataset)} particles")
        self._refresh_picker()
        if dataset is not self.session.dataset:
            self.session.set_dataset(dataset)
        self.index = 0
        self._show(0)

    def _dataset_layers(self) -> list:
        """The stack layer of each of the session's particle datasets (in or out of the viewer)."""
        out = []
        for ds in self.session.datasets.values():
            scene = self.session.particles_scene(ds)
            layer = next((lyr for lyr in (scene.layers if scene else []) if isinstance(lyr, Image)
                          and lyr.metadata.get(DATASET_KEY) is ds), None)
            if layer is not None and isinstance(ds, ParticleDataset):
                out.append(layer)
        return out

    def _refresh_picker(self, event=None) -> None:
        layers = self._dataset_layers()
        self.dataset_picker.blockSignals(True)
        self.dataset_picker.clear()
        for lyr in layers:
            self.dataset_picker.addItem(lyr.name)
        if self.layer is not None and self.layer in layers:
            self.dataset_picker.setCurrentIndex(layers.index(self.layer))
        self.dataset_picker.blockSignals(False)

    def _on_session_dataset(self, dataset) -> None:
        self._refresh_picker()
        layer = next((lyr for lyr in self._dataset_layers() if lyr.metadata.get(DATASET_KEY) is dataset), None)
        if layer is not None and layer is not self.layer:
            self.set_layer(layer)

    def _on_session_selection(self, indices) -> None:
        if self.dataset is not None and self.dataset is self.session.dataset:
            self.show_particles(self.session.selected_rows(), note="selected in an embedding")

    def _on_pick(self, position: int) -> None:
        layers = self._dataset_layers()
        if 0 <= position < len(layers) and layers[position] is not self.layer:
            self.set_layer(layers[position])

    def _clear(self) -> None:
        self.layer, self.dataset = None, None
        self.frame = pd.DataFrame()
        self.table_model.set_frame(self.frame)
        self.current_metadata = {}
        self.metadata_label.setText("no particle dataset loaded")
        self.filter_status.setText("")
        self._draw_ctf(None)

    # ------------------------------------------------------------------ current particle
    @property
    def index(self) -> int:
        """Position of the particle shown (0 … N-1); setting it moves napari's slider."""
        return self._index

    @index.setter
    def index(self, value: int) -> None:
        if self.layer is None or self.dataset is None:
            return
        n = len(self.dataset)
        value = int(value)
        if not 0 <= value < n:
            raise IndexError(f"particle {value} out of range for {n} particles")
        if self.layer in self.viewer.layers and self.viewer.dims.ndisplay == 2:
            axis = self.viewer.dims.ndim - self.layer.ndim  # the layer's particle axis in world dims
            world = self.layer.data_to_world(np.array([value, 0.0, 0.0]))
            self.viewer.dims.set_point(axis, float(world[0]))
        self._show(value)  # also when the slider did not move (same step)

    def _on_step(self, event=None) -> None:
        if self.layer is None or self.dataset is None or self.layer not in self.viewer.layers:
            return
        point = np.asarray(self.viewer.dims.point)[-self.layer.ndim:]
        i = int(np.clip(np.round(self.layer.world_to_data(point)[0]), 0, len(self.dataset) - 1))
        if i != self._index or not self.current_metadata:
            self._show(i)

    def _show(self, i: int) -> None:
        self._index = i
        self.current_metadata = particle_metadata(self.dataset, i)
        self.metadata_label.setText(format_metadata(self.current_metadata))
        self._draw_ctf(self.current_metadata)

    def showEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        if getattr(self, "_ctf_stale", False):
            self._draw_ctf(self.current_metadata or None)

    def metadata_text(self) -> str:
        """The metadata panel's text for the current particle."""
        return self.metadata_label.text()

    def _draw_ctf(self, meta: dict[str, Any] | None) -> None:
        if not self.isVisible() and meta is not None:  # drawn when the dock is shown (showEvent)
            self._ctf_stale = True
            return
        self._ctf_stale = False
        _draw_ctf(self.ctf_axes, meta, self.dataset.apix if self.dataset is not None else 1.0)
        self.ctf_canvas.draw_idle()

    # ------------------------------------------------------------------ table
    @property
    def visible_rows(self) -> np.ndarray:
        """Positions of the particles the table currently shows (after filtering)."""
        return self.table_model.rows.copy()

    def apply_filter(self, text: str) -> np.ndarray:
        """Filter the table; returns the visible rows.

        ``text`` is a pandas expression when it contains a comparison or boolean operator
        (evaluated with ``DataFrame.eval``, e.g. ``rlnDefocusU > 15000 and rlnClassNumber == 2``),
        otherwise a case-insensitive substring searched in every text column (image and
        micrograph names...); a number also matches numeric cells equal to it at the
        precision typed (``1.5`` matches 1.45 … 1.55), which stays fast for 10^6 rows.
        A bad expression leaves the table as it was and shows the error under the search box.
        """
        text = text.strip()
        if text != self.filter_edit.text().strip():
            self.filter_edit.setText(text)
        n = len(self.frame)
        try:
            rows = _filter_rows(self.frame, text)
        except Exception as err:  # a user's expression: show, never raise into Qt
            self.filter_status.setText(f"<span style='color:#e66'>filter error: {html.escape(str(err))}</span>")
            return self.visible_rows
        self.table_model.set_rows(rows)
        self.filter_status.setText(f"{len(rows)} of {n} particles" if text else f"{n} particles")
        if len(rows) and self.dataset is not None and not np.isin(self._index, rows):
            self.index = int(rows[0])
        return rows

    def show_particles(self, indices: Any, *, note: str = "given") -> None:
        """Show only the particles at ``indices`` (positions) in the table, jump to the first."""
        rows = np.atleast_1d(np.asarray(indices, dtype=np.int64))
        n = len(self.frame)
        if len(rows) and (rows.min() < 0 or rows.max() >= n):
            raise IndexError(f"particle indices out of range for {n} particles")
        self.filter_edit.clear()
        self.table_model.set_rows(rows)
        self.filter_status.setText(f"{len(rows)} of {n} particles ({note})")
        if len(rows):
            self.index = int(rows[0])

    def selected_rows(self) -> np.ndarray:
        """Positions of the particles selected in the table (sorted), possibly empty."""
        picked = sorted({ix.row() for ix in self.table_view.selectionModel().selectedRows()})
        return self.table_model.rows[np.asarray(picked, dtype=np.int64)]

    def _on_table_row(self, current: QModelIndex, previous: QModelIndex) -> None:
        if current.isValid() and current.row() < len(self.table_model.rows):
            scene = self.session.particles_scene(self.dataset)
            if scene is not None and self.session.scenes.current is not scene:
                self.session.scenes.show(scene)  # a clicked particle is shown, whatever scene was on
            self.index = int(self.table_model.rows[current.row()])

    # ------------------------------------------------------------------ export
    def export_star(self, path: str | Path, rows: Any = None) -> Path:
        """Write particles ``rows`` (default: the selection, else every filtered row) as .star.

        Uses :func:`napari_cryohet.io.write_particles.write_dataset_star` on ``dataset.subset(rows)``:
        a star-born dataset keeps every original column and value.
        """
        from napari_cryohet.io.write_particles import write_dataset_star

        if self.dataset is None:
            raise ValueError("no particle dataset loaded")
        if rows is None:
            rows = self.selected_rows()
            if len(rows) == 0:
                rows = self.visible_rows
        path = export_target(path, ".star")
        if len(rows) == 0:
            raise ValueError("export: no particles to write (the filter matches none)")
        write_dataset_star(path, self.dataset.subset(np.asarray(rows, dtype=np.int64)))
        self.filter_status.setText(f"exported {len(rows)} particles to {path}")
        return path

    def _on_export_clicked(self) -> None:
        if self.dataset is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export particles as .star", "particles_subset.star",
                                              "STAR files (*.star)")
        if path:
            try:
                self.export_star(path)
            except Exception as err:  # show, keep napari running
                from napari.utils.notifications import show_error

                show_error(f"export failed: {err}")


class StackViewerDock(ScrollDock):
    """The Plugins-menu entry: :class:`StackViewerWidget` in a scroll area
    (:mod:`napari_cryohet.plugin._docking`), so it shrinks beside the other docks."""

    def __init__(self, napari_viewer) -> None:
        super().__init__(StackViewerWidget(napari_viewer), stage=False)
