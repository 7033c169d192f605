"""Issue 16 item 1: a crafted pickle never runs code; it is refused with a named error.

Each crafted file would write a marker file when unpickled by ``pickle.load``; the test
checks the marker is never written and the error names the file and the refused global.
"""

from __future__ import annotations

import builtins
import os
import pickle

import numpy as np
import pytest

from napari_cryohet.io.cryodrgn import read_ctf_pkl, read_poses_pkl
from napari_cryohet.io.errors import CorruptFileError, MissingFileError
from napari_cryohet.io.load_particles import load_dataset


class _System:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _Open:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return builtins.open, (str(self.marker), "w")


def _craft(path, payload, *, nested: bool):
    obj = (np.tile(np.eye(3, dtype=np.float32), (2, 1, 1)), payload) if nested else payload
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=4)
    return path


@pytest.mark.parametrize("payload", [_System, _Open], ids=["os.system", "builtins.open"])
@pytest.mark.parametrize("nested", [False, True], ids=["top-level", "inside the pose tuple"])
@pytest.mark.parametrize("reader", ["poses", "ctf"])
def test_crafted_pickle_is_refused_and_runs_nothing(tmp_path, payload, nested, reader):
    marker = tmp_path / "marker"
    pkl = _craft(tmp_path / "evil.pkl", payload(marker), nested=nested)
    # the oracle: plain pickle.load would run the payload (checked once, marker removed)
    if payload is _Open:
        with open(pkl, "rb") as f:
            loaded = pickle.load(f)
        (loaded[1] if nested else loaded).close()
        assert marker.exists()
        marker.unlink()
    with pytest.raises(CorruptFileError) as e:
        read_poses_pkl(pkl, box_size=8, apix=1.0) if reader == "poses" else read_ctf_pkl(pkl)
    msg = str(e.value)
    assert str(pkl) in msg and e.value.field == "pickle"
    expected = "posix.system" if payload is _System else "io.open"
    assert expected in msg or "builtins.open" in msg, msg
    assert "nothing was run" in msg
    assert not marker.exists()


def test_crafted_pickle_through_the_loader(tmp_path, mrcs_writer):
    stack = mrcs_writer(tmp_path / "s.mrcs", np.zeros((2, 8, 8), np.float32))
    marker = tmp_path / "marker"
    pkl = _craft(tmp_path / "poses.pkl", _System(marker), nested=True)
    with pytest.raises(CorruptFileError) as e:
        load_dataset(stack, poses=pkl)
    assert str(pkl) in str(e.value)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_genuine_cryodrgn_pickles_still_load(tmp_path, protocol):
    """What cryoDRGN writes (arrays in a tuple; a float32 array) at every pickle protocol."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rot = np.stack([q * np.sign(np.linalg.det(q))] * 4)  # (4, 3, 3) proper rotations
    trans = rng.normal(size=(4, 2)) * 0.01
    with open(tmp_path / "p.pkl", "wb") as f:
        pickle.dump((rot, trans), f, protocol=protocol)
    r, s = read_poses_pkl(tmp_path / "p.pkl", box_size=64, apix=2.0)
    np.testing.assert_allclose(r, rot, atol=1e-6)
    np.testing.assert_allclose(s, trans * 64 * 2.0, rtol=1e-5)
    ctf = np.tile(np.array([64, 2.0, 15000, 14000, 30, 300, 2.7, 0.1, 0], np.float32), (4, 1))
    with open(tmp_path / "c.pkl", "wb") as f:
        pickle.dump(ctf, f, protocol=protocol)
    c, d, apix = read_ctf_pkl(tmp_path / "c.pkl")
    assert (d, apix) == (64, 2.0)
    np.testing.assert_allclose(c.defocus_u_a, 15000)


def test_object_array_is_refused(tmp_path):
    with open(tmp_path / "o.pkl", "wb") as f:
        pickle.dump(np.array([1, "a"], dtype=object), f)
    with pytest.raises(CorruptFileError, match="Python objects"):
        read_ctf_pkl(tmp_path / "o.pkl")


def test_a_directory_given_as_pickle(tmp_path):
    (tmp_path / "poses.pkl").mkdir()
    with pytest.raises(MissingFileError, match="is a directory"):
        read_poses_pkl(tmp_path / "poses.pkl", box_size=8, apix=1.0)
