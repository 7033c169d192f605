"""``cryohet ws ls`` and ``cryohet ws show`` list and describe a workspace's runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from napari_cryohet.cli import main
from napari_cryohet.stages._common import Cancelled, CancelToken
from napari_cryohet.stages.workspace import Workspace

STAR = Path(__file__).resolve().parents[2] / "sample_data" / "adk_small" / "particles.star"


def test_ls_and_show(toy, tmp_path, capsys):
    ws = Workspace.create(tmp_path / "ws", STAR)
    ws._dataset = toy.toy_dataset(200)
    ws.run("toy", toy.ToyConfig(epochs=1))
    cancel = CancelToken()
    cancel.cancel()
    with pytest.raises(Cancelled):
        ws.run("toy", toy.ToyConfig(epochs=3, rate=0.1), inputs={"target": "toy/0001"}, cancel=cancel)
    assert main(["ws", "ls", str(ws.root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert str(STAR.resolve()) in out[0]
    rows = {line.split()[0]: line.split() for line in out[2:]}
    assert rows["toy/0001"][1:3] == ["done", "200"]
    assert rows["toy/0002"][1] == "cancelled" and rows["toy/0002"][-1] == "target=toy/0001"
    assert main(["ws", "show", str(ws.root), "toy/0002"]) == 0
    shown = capsys.readouterr().out
    assert "status:     cancelled" in shown and "  rate = 0.1" in shown and '"target": "toy/0001"' in shown
    assert main(["ws", "show", str(ws.root), "toy/0009"]) == 2
    assert "no run toy/0009" in capsys.readouterr().err


def test_stage_commands_refuse_a_bad_output_location_before_starting(tmp_path, capsys):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the workspace should go")
    assert main(["vae", "train", "--workspace", str(blocker), "--star", str(STAR), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "not_a_folder" in err and "is a file" in err and "Traceback" not in err
    assert blocker.read_text() == "a file where the workspace should go"
