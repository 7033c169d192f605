"""MRC stacks: lazy memory-mapped reads, numpy-like indexing, the stack writer."""

from __future__ import annotations

import pickle

import mrcfile
import numpy as np
import pytest

from napari_cryohet.io import mrc_stack as mrc_mod
from napari_cryohet.io.mrc_stack import (
    MultiFileStack,
    open_stack,
    write_stack,
)


@pytest.fixture
def write_mrcs(mrcs_writer):
    return mrcs_writer


@pytest.fixture
def stack_file(tmp_path, rng, write_mrcs):
    data = rng.normal(size=(7, 10, 10)).astype(np.float32)
    return write_mrcs(tmp_path / "s.mrcs", data, apix=1.25), data


def test_open_stack_reads_header_only(stack_file, monkeypatch):
    path, data = stack_file
    calls = []
    real = mrcfile.mmap
    monkeypatch.setattr(mrcfile, "mmap", lambda *a, **k: calls.append(a) or real(*a, **k))
    s = open_stack(path)
    assert (s.shape, s.dtype, s.ndim, len(s), s.apix) == ((7, 10, 10), np.float32, 3, 7, 1.25)
    assert calls == [] and not s.is_open
    np.testing.assert_array_equal(s[2], data[2])
    assert len(calls) == 1 and s.is_open


@pytest.mark.parametrize(
    "key",
    [3, -1, np.int64(2), slice(1, 6, 2), slice(None), [4, 0, 4], np.array([6, 1]),
     np.arange(7) % 3 == 0, (2, slice(3, 5)), (slice(0, 3), 4, slice(None)), (np.array([5, 2]), 1, 2), Ellipsis],
)
def test_indexing_matches_numpy(stack_file, key):
    path, data = stack_file
    s = open_stack(path)
    got = s[key]
    want = data[key]
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_array_protocol_and_out_of_range(stack_file):
    path, data = stack_file
    s = open_stack(path)
    np.testing.assert_array_equal(np.asarray(s), data)
    with pytest.raises(IndexError, match="out of range"):
        s[7]
    with pytest.raises(IndexError):
        s[np.array([0, 9])]


def test_integer_modes_are_read_as_float32(tmp_path):
    data = np.arange(2 * 4 * 4, dtype=np.int16).reshape(2, 4, 4) - 10
    with mrcfile.new(tmp_path / "i.mrcs") as m:
        m.set_data(data)
    s = open_stack(tmp_path / "i.mrcs")
    assert s.apix is None
    np.testing.assert_array_equal(s[1], data[1].astype(np.float32))


def test_single_2d_image_is_a_stack_of_one(tmp_path, rng):
    img = rng.normal(size=(6, 6)).astype(np.float32)
    with mrcfile.new(tmp_path / "one.mrc") as m:
        m.set_data(img)
    s = open_stack(tmp_path / "one.mrc")
    assert s.shape == (1, 6, 6)
    np.testing.assert_array_equal(s[0], img)


def test_stack_pickles_without_its_map(stack_file):
    path, data = stack_file
    s = open_stack(path)
    s[0]
    s2 = pickle.loads(pickle.dumps(s))
    assert not s2.is_open
    np.testing.assert_array_equal(s2[4], data[4])


def test_write_stack_round_trip_with_mrcfile(tmp_path, stack_file):
    path, data = stack_file
    out = write_stack(tmp_path / "out.mrcs", open_stack(path), 1.25, chunk=3)  # lazy source, chunked
    with mrcfile.open(out) as m:
        np.testing.assert_array_equal(m.data, data)
        assert m.voxel_size.x == pytest.approx(1.25)
        assert m.is_image_stack()
    assert not list(tmp_path.glob(".out.mrcs*"))  # no temporary left behind


def test_multifile_stack_is_lazy_and_bounds_open_files(tmp_path, rng, write_mrcs):
    files = [rng.normal(size=(3, 4, 4)).astype(np.float32) for _ in range(5)]
    stacks = [open_stack(write_mrcs(tmp_path / f"m{i}.mrcs", f)) for i, f in enumerate(files)]
    codes = np.array([4, 0, 2, 2, 1, 3, 0, 4])
    idx = np.array([2, 0, 1, 0, 2, 1, 2, 0])
    multi = MultiFileStack(stacks, codes, idx, max_open=2, source="test")
    want = np.stack([files[c][i] for c, i in zip(codes, idx, strict=True)])
    assert multi.shape == (8, 4, 4) and multi.n_open() == 0
    np.testing.assert_array_equal(multi[5], want[5])
    assert multi.n_open() == 1
    np.testing.assert_array_equal(multi[[7, 0, 3]], want[[7, 0, 3]])
    np.testing.assert_array_equal(np.asarray(multi), want)
    assert multi.n_open() <= 2
    np.testing.assert_array_equal(multi[2:6, 1, :2], want[2:6, 1, :2])


def test_module_names_every_public_function():
    assert {"open_stack", "MrcStack", "write_stack"} <= set(mrc_mod.__all__)
