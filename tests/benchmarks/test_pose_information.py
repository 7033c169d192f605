"""benchmarks/pose_information.py: the Run B ceiling (orientation × arm states searched together
with the exact model) finds what clean images determine."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("pose_information", ROOT / "benchmarks" / "pose_information.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_states_ceiling_recovers_clean_images():
    """At SNR 10 every particle's best candidate is its true orientation (or a symmetry mate of
    it) and its states are the grid cells holding the true ones: the particle's CTF and shift
    enter the model as the simulator applied them, and the states are read in the truth's frame.
    At the benchmark's SNR 1/30 the same search finds fewer orientations and recovers the states
    less well — the figure measures the images, not the search."""
    bench = _bench()
    clean = bench.pretzel_states_case(30, 64, 3.0, 200, 5, snr=10.0)
    assert clean["within_20deg"] == 1.0
    assert clean["rotation_error_deg_median"] < 1.0
    assert min(clean["rho_map"]) > 0.9  # 5 grid cells per arm: ties within a cell cap ρ below 1
    # all the posterior weight on the true orientation: averaging over orientations changes nothing
    np.testing.assert_allclose(clean["rho_marginal"], clean["rho_posterior_mean"], atol=1e-3)
    noisy = bench.pretzel_states_case(30, 64, 3.0, 200, 5)
    assert noisy["within_20deg"] < clean["within_20deg"]
    assert min(noisy["rho_map"]) < min(clean["rho_map"])
