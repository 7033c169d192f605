"""Builders of bad inputs for the reliability tests (issue 16), written with mrcfile/pickle
directly, independent of ``napari_cryohet.io``."""

from __future__ import annotations

import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pytest


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


def open_everywhere():
    """The ways a user opens a file: the loader, ``cryohet info`` and napari's ``viewer.open``."""
    return ["load_dataset", "cryohet info", "viewer.open"]
