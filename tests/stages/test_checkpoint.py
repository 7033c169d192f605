"""The shared checkpointer: strict resume, atomic writes, no code run on load."""

from __future__ import annotations

import errno
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from napari_cryohet.io.errors import CorruptFileError, OutputLocationError
from napari_cryohet.stages.checkpoint import Checkpointer, CheckpointMismatchError


def _ckpt(toy, run_dir, config=None, n=5, inputs=None, indices=None):
    return Checkpointer(run_dir, config=config or toy.ToyConfig(), n_particles=n,
                        particle_indices=np.arange(n) if indices is None else indices, inputs=inputs or {})


def test_resume_restores_state_and_random_streams(toy, tmp_path):
    ck = _ckpt(toy, tmp_path)
    assert ck.load() is None
    torch.manual_seed(3)
    np.random.seed(4)  # noqa: NPY002
    ck.save({"epoch": 2, "w": torch.arange(5.0)})
    expected = torch.rand(3), np.random.rand(3)  # noqa: NPY002 - the global stream is what is saved
    torch.manual_seed(99)
    np.random.seed(99)  # noqa: NPY002
    messages = []
    state = _ckpt(toy, tmp_path).load(progress=lambda f, m: messages.append(m))
    assert state["epoch"] == 2 and torch.equal(state["w"], torch.arange(5.0))
    assert torch.equal(torch.rand(3), expected[0])
    np.testing.assert_array_equal(np.random.rand(3), expected[1])  # noqa: NPY002
    assert any("resumed from epoch 2 of run" in m for m in messages)


@pytest.mark.parametrize("change", ["config", "inputs", "count", "particles"])
def test_resume_with_other_config_inputs_or_particles_is_refused(toy, tmp_path, change):
    _ckpt(toy, tmp_path, inputs={"target": "toy/0001"}).save({"epoch": 1})
    kwargs = {"inputs": {"target": "toy/0001"}}
    if change == "config":
        kwargs["config"] = toy.ToyConfig(rate=0.1)
        match = r"settings differ \(rate: 0.5 → 0.1\)"
    elif change == "inputs":
        kwargs["inputs"] = {"target": "toy/0002"}
        match = "inputs differ"
    elif change == "count":
        kwargs["n"] = 6
        match = r"particle count differs \(5 → 6\)"
    else:
        kwargs["indices"] = np.arange(1, 6)
        match = "the particles differ"
    with pytest.raises(CheckpointMismatchError, match=match):
        _ckpt(toy, tmp_path, **kwargs).load()
    # runtime-only fields do not matter
    assert _ckpt(toy, tmp_path, config=toy.ToyConfig(device="cuda"), inputs={"target": "toy/0001"}).load()


def test_killed_mid_write_keeps_previous_checkpoint_and_temp_is_removed(toy, tmp_path):
    _ckpt(toy, tmp_path).save({"epoch": 1, "w": torch.ones(5)})
    script = (
        "import os, sys, torch\n"
        "from napari_cryohet.io.atomic import atomic_path\n"
        f"with atomic_path({str(tmp_path / 'checkpoint.pt')!r}) as tmp:\n"
        "    tmp.write_bytes(b'half a checkpoint')\n"
        "    os._exit(9)  # killed: no clean-up runs\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == 9
    partials = [p for p in os.listdir(tmp_path) if ".partial-" in p]
    assert len(partials) == 1
    ck = _ckpt(toy, tmp_path)  # the next start
    assert [p.name for p in ck.removed_partials] == partials
    assert not [p for p in os.listdir(tmp_path) if ".partial-" in p]
    state = ck.load()
    assert state["epoch"] == 1 and torch.equal(state["w"], torch.ones(5))


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch " + os.environ["CRYOHET_PWNED"],))


def test_crafted_checkpoint_does_not_run_code(toy, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("CRYOHET_PWNED", str(marker))
    with open(tmp_path / "checkpoint.pt", "wb") as fh:
        torch.save({"meta": {}, "state": _RunsCode()}, fh, pickle_module=pickle)
    with pytest.raises(CorruptFileError, match="checkpoint.pt"):
        _ckpt(toy, tmp_path).load()
    assert not marker.exists()


def test_truncated_checkpoint_is_a_named_error(toy, tmp_path):
    path = _ckpt(toy, tmp_path).save({"epoch": 3, "w": torch.zeros(1000)})
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CorruptFileError, match="unreadable checkpoint"):
        _ckpt(toy, tmp_path).load()


def test_full_disk_during_save_keeps_last_good_checkpoint(toy, tmp_path, monkeypatch):
    ck = _ckpt(toy, tmp_path)
    ck.save({"epoch": 1, "w": torch.ones(5)})

    def no_space(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", no_space)
    with pytest.raises(OutputLocationError, match="disk is full"):
        ck.save({"epoch": 2, "w": torch.zeros(5)})
    monkeypatch.undo()
    assert _ckpt(toy, tmp_path).load()["epoch"] == 1
    assert not [p for p in os.listdir(tmp_path) if ".partial-" in p]
