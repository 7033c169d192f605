"""The workspace folder and input-run pickers every stage widget shares.

A stage widget shows one :class:`WorkspacePicker`: a folder field (empty: results stay in
memory, nothing is written) and, for each input the stage takes from another run (the
chain fit's eigenvectors, the spectral stage's per-particle features), a list of the
finished runs that fit, by id (``spectral/0002``), so a user picks *which* result feeds the
next stage and the run's manifest records it (docs/design.md, "The workspace").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from magicgui.widgets import ComboBox, Container, FileEdit, PushButton

from napari_cryohet.stages.registry import stage_spec
from napari_cryohet.stages.workspace import WORKSPACE_FILE, Workspace, dataset_source

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
        Input name → ``ComboBox`` of finished run ids of the stages that input accepts,
        newest first; a required input starts at the newest run, an optional one at
        "(none)".
    """

    def __init__(self, stage: str, **kwargs: Any) -> None:
        self.stage = stage
        self.spec = stage_spec(stage)
        self.folder = FileEdit(label="workspace folder", mode="d", value="",
                               tooltip="Folder where every run is kept (settings, results, checkpoints) so it can be "
                                       "resumed, reopened and fed to the next step. Empty: keep results in memory only.")
        self.inputs: dict[str, ComboBox] = {}
        for name, ispec in self.spec.inputs.items():
            self.inputs[name] = ComboBox(label=f"{name.replace('_', ' ')} from run", choices=[NO_RUN],
                                         value=NO_RUN, tooltip=ispec.help or f"a finished run of "
                                         f"{' or '.join(ispec.stages)}")
        self.refresh_button = PushButton(text="Refresh runs")
        widgets = [self.folder, *self.inputs.values()] + ([self.refresh_button] if self.inputs else [])
        super().__init__(widgets=widgets, **kwargs)
        self.folder.changed.connect(self.refresh)
        self.refresh_button.changed.connect(self.refresh)

    @property
    def path(self) -> Path | None:
        """The chosen folder, or ``None`` when the field is empty."""
        text = str(self.folder.value or "").strip()
        return None if text in ("", ".") else Path(text)

    def open_workspace(self) -> Workspace | None:
        """The workspace in the chosen folder if one exists there (``None`` otherwise)."""
        path = self.path
        if path is None or not (path / WORKSPACE_FILE).is_file():
            return None
        return Workspace.open(path)

    def workspace_for(self, dataset: Any) -> Workspace | None:
        """The chosen workspace, created for ``dataset`` if the folder holds none yet.

        ``None`` when no folder is chosen. Raises ``ValueError`` when ``dataset`` cannot be
        reopened from a file or a simulator recipe (a workspace must be able to reload it).
        """
        path = self.path
        if path is None:
            return None
        if (path / WORKSPACE_FILE).is_file():
            return Workspace.open(path)
        source = dataset_source(dataset)
        if source is None:
            raise ValueError("workspace folder: this dataset was not read from a file nor made by the simulator, "
                             "so a workspace could not reopen it; save it as .star first or clear the folder")
        return Workspace.create(path, source)

    def input_ids(self) -> dict[str, str]:
        """Input name → picked run id (inputs left at "(none)" are left out)."""
        return {name: box.value for name, box in self.inputs.items() if box.value not in (None, NO_RUN)}

    def refresh(self, *_: Any) -> None:
        """Re-list the finished runs of the chosen workspace in every input picker."""
        ws = None
        try:
            ws = self.open_workspace()
        except ValueError:  # not a workspace (yet): nothing to list
            ws = None
        for name, box in self.inputs.items():
            accepted = self.spec.inputs[name].stages
            runs = [] if ws is None else [m["run_id"] for m in ws.runs() if m.get("status") == "done"
                                          and m.get("stage") in accepted]
            current = box.value
            box.choices = [NO_RUN, *reversed(runs)]  # newest first
            if current not in box.choices or (current == NO_RUN and self.spec.inputs[name].required):
                current = runs[-1] if runs and self.spec.inputs[name].required else NO_RUN
            box.value = current
