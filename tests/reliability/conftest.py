"""Builders of bad inputs, and the three ways a user opens a file (the loader,
``cryohet info``, napari's ``viewer.open``), for the reliability tests (issue 16), written with mrcfile/pickle
directly, independent of ``napari_cryohet.io``."""

from __future__ import annotations

import tracemalloc
import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from napari_cryohet.io.errors import CryohetInputError


def write_mrcs(path: Path, images: np.ndarray, apix: float = 1.0) -> Path:
    """A float32 stack written with plain mrcfile (NaN/huge values allowed)."""
    with mrcfile.new(path, overwrite=True) as mrc, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mrc.set_data(np.asarray(images, dtype=np.float32))
        mrc.set_image_stack()
        mrc.voxel_size = apix
    return path


@pytest.fixture
def mrcs_writer():
    return write_mrcs

PLUGIN = "napari-cryohet"


def _open_and_catch(how: str, path: Path, request, capsys) -> tuple[CryohetInputError, str]:
    """The error opening ``path`` raised, and the text the user sees.

    ``cryohet info`` must exit with status 2 and print the message; ``viewer.open`` may wrap
    our exception (napari's reader errors): the cause chain is followed to it.
    """
    if how == "load_dataset":
        from napari_cryohet.io.load_particles import load_dataset

        with pytest.raises(CryohetInputError) as e:
            load_dataset(path, ground_truth=False)
        return e.value, str(e.value)
    if how == "cryohet info":
        from napari_cryohet.cli import main
        from napari_cryohet.cli.info import summarize

        capsys.readouterr()
        assert main(["info", str(path)]) == 2
        shown = capsys.readouterr().err
        with pytest.raises(CryohetInputError) as e:
            summarize(path)
        assert str(e.value) in shown, shown
        return e.value, shown
    viewer = request.getfixturevalue("make_napari_viewer")()
    with pytest.raises(Exception) as e:  # noqa: PT011 - napari may wrap ours; unwrapped below
        viewer.open(str(path), plugin=PLUGIN)
    err = e.value
    while not isinstance(err, CryohetInputError) and err.__cause__ is not None:
        err = err.__cause__
    assert isinstance(err, CryohetInputError), repr(e.value)
    assert len(viewer.layers) == 0  # nothing half-added; the viewer lives on
    viewer.add_image(np.zeros((4, 4)))
    assert len(viewer.layers) == 1
    return err, str(err)


@pytest.fixture
def peak_bytes_of():
    return _peak_bytes_of


def _peak_bytes_of(fn) -> tuple[int, object]:
    """Peak Python/NumPy allocation (``tracemalloc``) while ``fn()`` runs, and what it returned
    or raised."""
    tracemalloc.start()
    try:
        try:
            out = fn()
        except Exception as exc:  # noqa: BLE001 - returned to the caller, which asserts on it
            out = exc
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, out


@pytest.fixture
def open_and_catch(request, capsys):
    """``open_and_catch(how, path)``: the named error and the shown text (see ``_open_and_catch``);
    ``how`` is one of "load_dataset", "cryohet info", "viewer.open"."""
    return lambda how, path: _open_and_catch(how, path, request, capsys)
