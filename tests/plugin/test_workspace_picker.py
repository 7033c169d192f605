"""The workspace picker on the window's session: the folder field opens (or makes) the
session's workspace, and each input lists the finished runs of the stages it accepts.

(Replaces ``test_config_form.py::test_workspace_picker_lists_finished_runs_of_accepted_stages``,
written for the picker before the session.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from napari_cryohet.io.load_particles import load_dataset
from napari_cryohet.plugin._workspace_picker import NO_RUN, WorkspacePicker
from napari_cryohet.plugin.session import Session
from napari_cryohet.stages.workspace import Workspace

pytestmark = pytest.mark.gui

STAR = Path(__file__).parents[2] / "sample_data" / "adk_small" / "particles.star"


def test_workspace_picker_lists_finished_runs_of_accepted_stages(toy, tmp_path, make_napari_viewer):
    viewer = make_napari_viewer()
    session = Session.for_viewer(viewer)
    picker = WorkspacePicker("toy", viewer)
    assert picker.session is session
    assert picker.workspace_for() is None and session.workspace is None  # no folder: in memory
    assert "memory" in picker.note.value

    # a folder needs a dataset to make a workspace for: said in words, nothing made
    picker.folder.value = str(tmp_path / "too early")
    assert picker.workspace_for() is None and "open a dataset first" in picker.note.value
    assert not (tmp_path / "too early").exists()

    dataset = load_dataset(STAR)
    session.set_dataset(dataset)
    picker.folder.value = str(tmp_path / "ws")
    ws = picker.workspace_for()
    assert isinstance(ws, Workspace) and ws is session.workspace
    assert Path(ws.info["source"]["path"]) == STAR.resolve()
    ws._dataset = toy.toy_dataset(len(dataset))
    ws.run("toy", toy.ToyConfig(epochs=1))
    ws.run("toy", toy.ToyConfig(epochs=2))
    picker.refresh()
    box = picker.inputs["target"]
    assert list(box.choices) == [NO_RUN, "toy/0002", "toy/0001"]  # newest first
    # each run with a one-line summary of what differs from the default settings
    labels = [box.native.itemText(i) for i in range(box.native.count())]
    assert labels[1].startswith("toy/0002") and "epochs 2" in labels[1]
    assert labels[2].startswith("toy/0001") and "epochs 1" in labels[2]
    assert picker.input_ids() == {}  # an optional input starts at "(none)"
    box.value = "toy/0001"
    assert picker.input_ids() == {"target": "toy/0001"}
    box.value = NO_RUN
    assert picker.input_ids() == {}

    # a second picker in the same window shows the same folder and runs (one session)
    other = WorkspacePicker("toy", session=session)
    assert Path(other.folder.line_edit.value) == ws.root
    assert list(other.inputs["target"].choices) == [NO_RUN, "toy/0002", "toy/0001"]
    # emptying the folder field goes back to memory for the whole window
    picker.folder.line_edit.value = ""
    assert picker.workspace_for() is None and session.workspace is None
    assert other.folder.line_edit.value == "" and list(other.inputs["target"].choices) == [NO_RUN]
