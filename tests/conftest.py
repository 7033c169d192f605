"""Shared test configuration.

napari's ``make_napari_viewer`` fixture comes from napari's pytest plugin; Xvfb from
pytest-xvfb (``make test`` passes ``-p xvfb``). Tests are headless and CPU-only.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded numpy generator (tests are reproducible)."""
    return np.random.default_rng(12345)
