"""Issue 16 item 2: MRC headers are untrusted; opening any bad file costs < 100 MB.

Every field that sizes a read (nx, ny, nz, mode, nsymbt) is checked against the file size
before anything is read; a header whose mode disagrees with the file size is refused by name.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from napari_cryohet.io.errors import CorruptFileError
from napari_cryohet.io.load_particles import load_dataset
from napari_cryohet.io.mrc_header import read_stack_header

HOWS = ("load_dataset", "cryohet info", "viewer.open")

LIMIT_BYTES = 100 * 2**20
NSYMBT_OFFSET, MODE_OFFSET = 92, 12  # byte offsets of the words in the 1024-byte header


def _patch_int32(path: Path, offset: int, value: int) -> Path:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack("<i", value))
    return path


def random_file(folder: Path, seed: int) -> Path:
    path = folder / f"random{seed}.mrcs"
    path.write_bytes(np.random.default_rng(seed).bytes(50_000))
    return path


def huge_nsymbt(folder: Path, mrcs_writer) -> Path:
    path = mrcs_writer(folder / "nsymbt.mrcs", np.zeros((4, 16, 16), np.float32))
    return _patch_int32(path, NSYMBT_OFFSET, 2**31 - 1)


def mode_2_to_0(folder: Path, mrcs_writer) -> Path:
    path = mrcs_writer(folder / "mode0.mrcs", np.ones((4, 16, 16), np.float32))
    return _patch_int32(path, MODE_OFFSET, 0)


@pytest.mark.parametrize("seed", range(8))
def test_random_bytes_named_error_and_little_memory(tmp_path, seed, peak_bytes_of):
    path = random_file(tmp_path, seed)
    peak, err = peak_bytes_of(lambda: load_dataset(path, ground_truth=False))
    print(f"random 50 KB file, seed {seed}: peak {peak / 2**20:.2f} MiB, {err}")
    assert isinstance(err, CorruptFileError) and str(path) in str(err)
    assert peak < LIMIT_BYTES


def test_huge_extended_header_is_refused_before_reading(tmp_path, mrcs_writer, peak_bytes_of):
    path = huge_nsymbt(tmp_path, mrcs_writer)
    peak, err = peak_bytes_of(lambda: read_stack_header(path))
    print(f"nsymbt = 2^31 - 1: peak {peak / 2**20:.3f} MiB, {err}")
    assert isinstance(err, CorruptFileError) and err.field == "nsymbt"
    assert "2147483647" in str(err) and str(path) in str(err)
    assert peak < LIMIT_BYTES


def test_mode_that_disagrees_with_the_size_is_refused(tmp_path, mrcs_writer):
    path = mode_2_to_0(tmp_path, mrcs_writer)
    with pytest.raises(CorruptFileError) as e:
        read_stack_header(path)
    msg = str(e.value)
    assert e.value.field == "mode" and str(path) in msg
    assert "mode 0" in msg and "mode 2 (float32)" in msg, msg


def test_trailing_bytes_that_fit_no_mode_are_refused(tmp_path, mrcs_writer):
    path = mrcs_writer(tmp_path / "tail.mrcs", np.zeros((4, 16, 16), np.float32))
    with open(path, "ab") as f:
        f.write(b"\0" * 100)
    with pytest.raises(CorruptFileError, match="larger than its header says") as e:
        read_stack_header(path)
    assert e.value.field == "nz"


def test_a_genuine_stack_reads_unchanged(tmp_path, mrcs_writer):
    """The checks refuse nothing good: exact size, values read back bit for bit."""
    images = np.random.default_rng(1).normal(size=(5, 16, 16)).astype(np.float32)
    path = mrcs_writer(tmp_path / "ok.mrcs", images, 1.5)
    header = read_stack_header(path)
    assert (header.n_images, header.nx, header.mode, header.apix) == (5, 16, 2, 1.5)
    np.testing.assert_array_equal(load_dataset(path, ground_truth=False).images[:], images)


CASES = {
    "random 50 KB": (lambda folder, w: random_file(folder, 2), "header"),
    "nsymbt 2^31-1": (huge_nsymbt, "nsymbt"),
    "mode 2 -> 0": (mode_2_to_0, "mode"),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("how", HOWS)
def test_bad_mrc_named_everywhere(tmp_path, mrcs_writer, case, how, open_and_catch):
    make, field = CASES[case]
    path = make(tmp_path, mrcs_writer)
    err, shown = open_and_catch(how, path)
    assert isinstance(err, CorruptFileError), repr(err)
    assert str(path) in shown
    if case != "random 50 KB":  # random bytes fail at whichever field comes first
        assert err.field == field
