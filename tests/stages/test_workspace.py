"""The workspace: runs addressed by id, never overwritten, resumed, checked before they start."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_cryohet.io.errors import OutputLocationError
from napari_cryohet.stages._common import Cancelled, CancelToken
from napari_cryohet.stages.output_location import check_output_location
from napari_cryohet.stages.workspace import RunNotFoundError, Workspace

STAR = Path(__file__).parents[2] / "sample_data" / "adk_small" / "particles.star"


@pytest.fixture
def ws(toy, tmp_path):
    w = Workspace.create(tmp_path / "ws", STAR)
    w._dataset = toy.toy_dataset()  # the toy stage needs only the table
    return w


def test_changed_config_makes_a_new_run_and_never_returns_the_old_result(toy, ws):
    first = ws.run("toy", toy.ToyConfig(rate=0.5, epochs=1))
    second = ws.run("toy", toy.ToyConfig(rate=0.25, epochs=1))
    assert (first.run_id, second.run_id) == ("toy/0001", "toy/0002")
    target = ws.dataset.table["value"].to_numpy()
    np.testing.assert_allclose(first.values, 0.5 * target)
    np.testing.assert_allclose(second.values, 0.25 * target)  # not the old run's values
    runs = ws.runs("toy")
    assert [m["status"] for m in runs] == ["done", "done"]
    assert runs[0]["fingerprint"] != runs[1]["fingerprint"]
    assert runs[1]["config"]["rate"] == 0.25
    # the same config again: the finished run, nothing recomputed
    toy.CALLS["epochs_run"] = 0
    again = ws.run("toy", toy.ToyConfig(rate=0.25, epochs=1))
    assert again.run_id == "toy/0002" and toy.CALLS["epochs_run"] == 0
    assert ws.result("toy").run_id == "toy/0002"  # latest finished
    np.testing.assert_allclose(ws.result("toy/0001").values, first.values)
    # a runtime-only field does not make a new run
    assert ws.run("toy", toy.ToyConfig(rate=0.25, epochs=1, device="cuda")).run_id == "toy/0002"


def test_cancelled_run_resumes_from_its_checkpoint(toy, ws):
    cancel = CancelToken()
    with pytest.raises(Cancelled):
        ws.run("toy", toy.ToyConfig(epochs=6), cancel=cancel,
               progress=lambda f, m: cancel.cancel() if m.startswith("epoch 2/") else None)
    assert ws.runs("toy")[0]["status"] == "cancelled"
    toy.CALLS["epochs_run"] = 0
    messages = []
    result = ws.run("toy", toy.ToyConfig(epochs=6), progress=lambda f, m: messages.append(m))
    assert result.run_id == "toy/0001" and toy.CALLS["epochs_run"] == 4  # epochs 3..6 only
    assert any("resumed from epoch 2 of run toy/0001" in m for m in messages)
    target = ws.dataset.table["value"].to_numpy()
    np.testing.assert_allclose(result.values, (1 - 0.5**6) * target)  # same as an uninterrupted run


def test_inputs_by_run_id_and_embedding_from_subset(toy, ws, rng):
    ws.run("toy", toy.ToyConfig(epochs=2))
    subset = ws.dataset.subset(rng.permutation(12)[:7])  # shuffled subset
    out = ws.run("toy", toy.ToyConfig(mode="input", epochs=8), inputs={"target": "toy/0001"}, dataset=subset)
    expected = 0.75 * ws.dataset.table["value"].to_numpy()[subset.indices]
    np.testing.assert_allclose(out.values, (1 - 0.5**8) * expected)
    manifest = ws.manifest(out.run_id)
    assert manifest["inputs"] == {"target": "toy/0001"} and manifest["n_particles"] == 7
    with pytest.raises(RunNotFoundError, match="no run toy/0009"):
        ws.run("toy", toy.ToyConfig(mode="input"), inputs={"target": "toy/0009"})
    with pytest.raises(ValueError, match=r"inputs: stage toy takes \['target'\]"):
        ws.run("toy", toy.ToyConfig(), inputs={"eigenvectors": "toy/0001"})


def test_reopen_after_copy(toy, ws, tmp_path):
    ws.run("toy", toy.ToyConfig(epochs=3))
    copy = tmp_path / "copied"
    shutil.copytree(ws.root, copy)
    reopened = Workspace.open(copy)
    assert reopened.info["source"] == ws.info["source"]
    np.testing.assert_allclose(reopened.result("toy/0001").values, ws.result("toy/0001").values)
    info = json.loads((copy / "toy" / "0001" / "manifest.json").read_text())
    assert info["stage"] == "toy" and info["status"] == "done" and info["package_version"]


def test_output_location_faults_are_refused_before_work_starts(toy, ws, tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(OutputLocationError, match="is a file"):
        check_output_location(blocker / "ws")
    if os.geteuid() == 0:  # root ignores permission bits: /proc refuses everyone
        unwritable = "/proc/cryohet-workspace"
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        unwritable = ro / "ws"
    with pytest.raises(OutputLocationError, match="cannot write here"):
        Workspace.create(unwritable, STAR)
    # no space: the run is refused before its first epoch
    import napari_cryohet.stages.output_location as output_location

    class Usage:
        free = 10 * 2**20

    monkeypatch.setattr(output_location.shutil, "disk_usage", lambda path: Usage)
    toy.CALLS["epochs_run"] = 0
    with pytest.raises(OutputLocationError, match="only 10 MB free"):
        ws.run("toy", toy.ToyConfig())
    assert toy.CALLS["epochs_run"] == 0 and ws.runs("toy") == []


def test_a_run_that_is_running_is_not_started_twice(toy, ws):
    from napari_cryohet.stages.workspace import RunBusyError

    nested = {}

    def progress(fraction, message):
        if message.startswith("epoch 1/") and not nested:  # while toy/0001 runs: the same settings again
            with pytest.raises(RunBusyError, match="running right now"):
                ws.run("toy", toy.ToyConfig(epochs=2))
            nested["refused"] = True

    assert ws.run("toy", toy.ToyConfig(epochs=2), progress=progress).run_id == "toy/0001"
    assert nested == {"refused": True}
    # a run left "running" by a process that died is resumed, not refused
    import json

    manifest = ws.root / "toy" / "0001" / "manifest.json"
    info = json.loads(manifest.read_text())
    info.update(status="running", pid=2**22 + 12345)  # no such process
    manifest.write_text(json.dumps(info))
    assert ws.run("toy", toy.ToyConfig(epochs=2)).run_id == "toy/0001"
    assert ws.manifest("toy/0001")["status"] == "done"
