"""Fixtures of the plugin tests: star/MRC files written with mrcfile and starfile directly
(independent of ``napari_cryohet.io``, so reader tests compare against an outside writer).

``write_mrc_file(path, data, apix, volume=False)`` and
``star_project(folder, n_per_stack=(7, 5), d=16, apix=2.0, seed=0) -> (star, images, particles)``
are fixtures returning these functions.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile


def write_mrc(path: Path, data: np.ndarray, apix: float, *, volume: bool = False) -> Path:
    with mrcfile.new(path, overwrite=True) as mrc, warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NaN on purpose in some tests
        mrc.set_data(np.asarray(data, dtype=np.float32))
        if volume:
            mrc.set_volume()
        else:
            mrc.set_image_stack()
        mrc.voxel_size = apix
    return path


def write_star_project(folder: Path, *, n_per_stack=(7, 5), d: int = 16, apix: float = 2.0, seed: int = 0):
    """A RELION 3.1 star file over two stacks in a subfolder, with extra columns.

    Returns ``(star_path, images (N, D, D) in row order, particles DataFrame as written)``.
    """
    rng = np.random.default_rng(seed)
    (folder / "Extract").mkdir(parents=True, exist_ok=True)
    names, images = [], []
    for s, n in enumerate(n_per_stack):
        stack = rng.normal(size=(n, d, d)).astype(np.float32) + s
        write_mrc(folder / "Extract" / f"stack_{s}.mrcs", stack, apix)
        names += [f"{i + 1:06d}@Extract/stack_{s}.mrcs" for i in range(n)]
        images.append(stack)
    n = len(names)
    optics = pd.DataFrame({
        "rlnOpticsGroupName": ["opticsGroup1"], "rlnOpticsGroup": [1], "rlnVoltage": [300.0],
        "rlnSphericalAberration": [2.7], "rlnAmplitudeContrast": [0.1], "rlnImagePixelSize": [apix],
        "rlnImageSize": [d], "rlnImageDimensionality": [2],
    })
    particles = pd.DataFrame({
        "rlnImageName": names,
        "rlnMicrographName": [f"mics/mic_{i % 3}.mrc" for i in range(n)],
        "rlnAngleRot": rng.uniform(-180, 180, n).round(4),
        "rlnAngleTilt": rng.uniform(5, 175, n).round(4),
        "rlnAnglePsi": rng.uniform(-180, 180, n).round(4),
        "rlnOriginXAngst": rng.normal(0, 3, n).round(3),
        "rlnOriginYAngst": rng.normal(0, 3, n).round(3),
        "rlnDefocusU": rng.uniform(8000, 25000, n).round(2),
        "rlnDefocusV": rng.uniform(8000, 25000, n).round(2),
        "rlnDefocusAngle": rng.uniform(0, 180, n).round(3),
        "rlnPhaseShift": np.zeros(n),
        "rlnClassNumber": (np.arange(n) % 3 + 1).astype(int),
        "rlnOpticsGroup": np.ones(n, dtype=int),
    })
    star = folder / "particles.star"
    starfile.write({"optics": optics, "particles": particles}, star, overwrite=True)
    return star, np.concatenate(images), particles


@pytest.fixture
def write_mrc_file():
    """The :func:`write_mrc` function."""
    return write_mrc


@pytest.fixture
def star_project():
    """The :func:`write_star_project` function."""
    return write_star_project


@pytest.fixture(scope="module")
def module_viewer(qapp):
    """``make(show=False) -> napari.Viewer`` kept for the whole module (``make_napari_viewer``
    is per test): for test modules whose inputs are slow to make (simulated samples, trained
    runs). Like napari's fixture, the viewers get an app model of their own (so napari's
    plugin commands are registered once per app) and are closed at the end of the module.
    Do not mix with ``make_napari_viewer`` in the same module."""
    import gc
    from unittest.mock import patch

    import napari
    from app_model import Application
    from napari._app_model._app import NapariApplication, _napari_names
    from napari._qt._qapp_model.qactions import init_qactions
    from napari._qt.qt_viewer import QtViewer
    from napari.plugins import _initialize_plugins
    from napari.settings import get_settings

    name = f"napari-cryohet-tests-{id(qapp)}"
    get_settings().reset()
    _initialize_plugins.cache_clear()
    init_qactions.cache_clear()
    app = NapariApplication(name)
    app.injection_store.namespace = _napari_names
    viewers = []

    def make(show: bool = False):
        viewer = napari.Viewer(show=show)
        viewers.append(viewer)
        return viewer

    with patch.object(NapariApplication, "get_app_model", return_value=app):
        try:
            yield make
        finally:
            for viewer in viewers:
                viewer.close()
            viewers.clear()
            gc.collect()
            qapp.processEvents()
            gc.collect()
            QtViewer._instances.clear()  # closed above; a late collection is not a leak of the next test
            Application.destroy(name)
            _initialize_plugins.cache_clear()
            init_qactions.cache_clear()
            get_settings().reset()
