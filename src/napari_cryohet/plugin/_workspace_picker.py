"""The workspace folder and input-run pickers every stage widget shares.

A stage widget shows one :class:`WorkspacePicker`: the window's workspace folder (shared by
every widget through the :class:`~napari_cryohet.plugin.session.Session`; empty: results
stay in memory for this window) and, for each input the stage takes from another run
(the chain fit's eigenvectors, the spectral stage's per-particle features), the finished
runs that fit — by id and a one-line summary of their settings (``spectral/0002 · 12
eigenvectors``) — so a user picks *which* result feeds the next step and the run records
it (docs/design.md, "The workspace"). Running again with the same settings reuses the
finished run or resumes an interrupted one from its last checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from magicgui.widgets import ComboBox, Container, FileEdit, Label

from napari_cryohet.plugin.session import Session
from napari_cryohet.stages.registry import stage_spec

__all__ = ["WorkspacePicker", "NO_RUN"]

#: Choice shown when no run is picked for an input.
NO_RUN = "(none)"


class WorkspacePicker(Container):
    """Workspace folder + one run picker per input of ``stage``.

    Attributes
    ----------
    folder
        The workspace folder (``FileEdit`` in directory mode); empty = in memory.
    inputs
        Input name → ``ComboBox`` whose values are run ids, newest first; a required input
        starts at the newest run, an optional one at "(none)".
    """

    def __init__(self, stage: str, viewer: Any = None, *, session: Session | None = None, **kwargs: Any) -> None:
        self.stage = stage
        self.spec = stage_spec(stage)
        self.session = session if session is not None else Session.for_viewer(viewer)
        self.folder = FileEdit(label="workspace folder", mode="d", value="",
                               tooltip="Folder where every run is kept (settings, results, checkpoints), shared by "
                                       "all steps in this window: a run with the same settings is reused, an "
                                       "interrupted one resumes from its last checkpoint, and reopening the folder "
                                       "brings every result back. Empty: results stay in memory for this window.")
        self.note = Label(value="")
        self.inputs: dict[str, ComboBox] = {}
        for name, ispec in self.spec.inputs.items():
            # choices as a function: napari calls reset_choices() on docked widgets whenever a
            # layer is added or removed (every scene switch), which would reset a fixed list
            self.inputs[name] = ComboBox(label=f"{name.replace('_', ' ')} from",
                                         choices=lambda _w, ispec=ispec: self._choices(ispec),
                                         tooltip=ispec.help or f"a finished run of {' or '.join(ispec.stages)}")
        self.folder.line_edit.native.setMinimumWidth(150)
        super().__init__(widgets=[self.folder, self.note, *self.inputs.values()], **kwargs)
        self._syncing = False
        # applied when chosen with the button, set by a script, or when typing ends (Enter / focus
        # out) — never per keystroke, which would make workspaces at every partial path
        self.folder.changed.connect(self._on_folder_changed)
        self.folder.line_edit.native.editingFinished.connect(self._on_folder)
        self.session.workspace_changed.connect(self._follow)
        self.session.runs_changed.connect(self.refresh)
        self._follow(self.session.workspace)

    @property
    def path(self) -> Path | None:
        """The chosen folder, or ``None`` when the field is empty."""
        text = str(self.folder.value or "").strip()
        return None if text in ("", ".") else Path(text)

    def _on_folder_changed(self, *_: Any) -> None:
        if not self.folder.line_edit.native.hasFocus():
            self._on_folder()

    def _on_folder(self, *_: Any) -> None:
        current = self.session.workspace
        if self._syncing or (self.path is None and current is None) or (
                current is not None and self.path is not None and self.path.resolve() == current.root.resolve()):
            return
        try:
            self.session.use_workspace(self.path)
        except (ValueError, OSError) as err:  # CryohetInputError is a ValueError
            self.note.value = f"error: {err}"

    def _follow(self, ws: Any) -> None:
        self._syncing = True
        try:
            # the line edit itself: FileEdit.value = "" would become the working folder
            self.folder.line_edit.value = "" if ws is None else str(ws.root)
        finally:
            self._syncing = False
        self.note.value = "results kept in memory (no folder)"
        self.refresh()

    def workspace_for(self, dataset: Any = None):
        """The session's workspace (after applying the folder field), or ``None`` (in memory)."""
        self._on_folder()
        return self.session.workspace

    def input_ids(self) -> dict[str, str]:
        """Input name → picked run id (inputs left at "(none)" are left out)."""
        return {name: box.value for name, box in self.inputs.items() if box.value not in (None, NO_RUN)}

    def _choices(self, ispec: Any) -> list[tuple[str, str]]:
        runs = self.session.run_choices(ispec.stages)
        return [(NO_RUN, NO_RUN)] + [(f"{rid} · {summary}", rid) for rid, summary in runs]

    def refresh(self, *_: Any) -> None:
        """Re-list the finished runs that fit each input (a required one starts at the newest)."""
        ws = self.session.workspace
        if ws is not None:
            self.note.value = f"{sum(m.get('status') == 'done' for m in ws.runs())} finished runs in this folder"
        for name, box in self.inputs.items():
            ispec = self.spec.inputs[name]
            current = box.value
            box.reset_choices()
            ids = [value for _, value in self._choices(ispec)][1:]
            if current not in ids or (current == NO_RUN and ispec.required):
                current = ids[0] if ids and ispec.required else NO_RUN
            box.value = current
