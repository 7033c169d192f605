"""The session dock: particles to open, workspace folder, the list of scenes, the particle selection.

One small dock (:class:`SessionWidget`) for what the whole window shares
(:class:`~napari_cryohet.plugin.session.Session`): a particle file opened with options
*File ▸ Open* cannot take (stacks folder, inverted contrast, cryoDRGN pickles, pixel size;
:mod:`napari_cryohet.plugin._open_particles`) and the contrast check of the particles in
use, the workspace folder (opening one
restores every finished run's scene), the list of scenes — the particles of each dataset,
each run's result — where a click puts that scene on the canvas, framed, and the
particles selected in any embedding, with their count and an export to ``.star``.
"""

from __future__ import annotations

from typing import Any

from magicgui.widgets import Container, Label, LineEdit, PushButton
from qtpy.QtWidgets import QListWidget

from napari_cryohet.plugin._open_particles import OpenParticlesForm
from napari_cryohet.plugin._workspace_picker import WorkspacePicker
from napari_cryohet.plugin.session import Session

__all__ = ["SessionWidget"]


class SessionWidget(Container):
    """Workspace folder, scene list and selection export of the window's session.

    Attributes
    ----------
    session
        The window's :class:`Session`.
    open_toggle, open_form
        The button that shows :class:`OpenParticlesForm` (a particle file and how to read
        it), hidden at first, and the form.
    contrast_label
        What the contrast check says about the particles in use.
    workspace
        The workspace folder (:class:`WorkspacePicker` without inputs).
    scene_list
        ``QListWidget`` of scene names; the current one is highlighted.
    selection_label, export_path, export_button
        Selected particles and their ``.star`` export (the full path written is shown).
    """

    def __init__(self, napari_viewer: Any) -> None:
        self.session = Session.for_viewer(napari_viewer)
        self.open_form = OpenParticlesForm(self.session)
        self.open_form.visible = False  # shown on demand: the dock stays short
        self.open_toggle = PushButton(text="Open a particle file with options ▸",
                                      tooltip="a stacks folder, inverted contrast, cryoDRGN pickles, a pixel size: "
                                              "what File ▸ Open cannot take")
        self.contrast_label = Label(value="")
        self.contrast_label.native.setWordWrap(True)
        self.workspace = WorkspacePicker("simulate", session=self.session)
        self.frame_button = PushButton(text="Frame the scene", tooltip="fit the camera to the scene's layers")
        self.selection_label = Label(value="no particles selected")
        self.export_path = LineEdit(label="export selection to", value="",
                                    tooltip="a .star file name; the selected particles are written with every "
                                            "original column (RELION format)")
        self.export_button = PushButton(text="Export selected particles as .star")
        self.message = Label(value="")
        self.message.native.setWordWrap(True)
        super().__init__(widgets=[self.open_toggle, self.open_form, self.contrast_label, self.workspace, self.frame_button,
                                  self.selection_label, self.export_path, self.export_button, self.message])
        self.scene_list = QListWidget()
        self.scene_list.setToolTip("Each result has its own scene: click one to show it on the canvas, framed")
        self.scene_list.setMinimumHeight(90)
        self.scene_list.setMaximumHeight(170)
        self.native.layout().insertWidget(4, self.scene_list)
        self.scene_list.itemClicked.connect(lambda item: self.show_scene(item.text()))
        self.frame_button.changed.connect(lambda *_: self.session.scenes.frame())
        self.export_button.changed.connect(lambda *_: self.export())
        self.session.scenes.listed.connect(self.refresh)
        self.session.scenes.changed.connect(lambda _name: self.refresh())
        self.session.selection_changed.connect(self._on_selection)
        self.open_toggle.changed.connect(lambda *_: self.show_open_form(not self.open_form.visible))
        self.session.contrast_checked.connect(lambda _ds: self._show_contrast())
        self.session.dataset_changed.connect(lambda _ds: self._show_contrast())
        self.refresh()
        self._show_contrast()

    def show_open_form(self, visible: bool = True) -> None:
        """Show (or hide) the *Open particles* form."""
        self.open_form.visible = visible
        self.open_toggle.text = "Open a particle file with options " + ("▾" if visible else "▸")

    def _show_contrast(self) -> None:
        text = self.session.contrast_text()
        self.contrast_label.value = text
        self.contrast_label.native.setStyleSheet("color: #ff8c00;" if "INVERTED" in text else "")

    def refresh(self, *_: Any) -> None:
        """Re-list the scenes, highlighting the one on the canvas."""
        names = list(self.session.scenes.scenes)
        self.scene_list.clear()
        self.scene_list.addItems(names)
        current = self.session.scenes.current
        if current is not None and current.name in names:
            self.scene_list.setCurrentRow(names.index(current.name))

    def show_scene(self, name: str) -> None:
        """Put scene ``name`` on the canvas."""
        self.session.scenes.show(name)

    def _on_selection(self, indices: Any) -> None:
        n = len(self.session.selected_rows())
        self.selection_label.value = f"{n} particles selected" if n else "no particles selected"

    def export(self) -> Any:
        """Write the selection as ``.star`` (path from the form); returns the full path or ``None``."""
        try:
            path = self.session.export_selection(self.export_path.value)
        except (ValueError, OSError) as err:
            self.message.value = str(err)
            return None
        self.message.value = f"wrote {len(self.session.selected_rows())} particles to {path}"
        return path
