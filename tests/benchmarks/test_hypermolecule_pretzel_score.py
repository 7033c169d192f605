"""benchmarks/hypermolecule_pretzel.py: the score compares each particle with the nearest of the
pretzel's four equivalent truths (pose R g, states σ(τ))."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("hypermolecule_pretzel", ROOT / "benchmarks" / "hypermolecule_pretzel.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_equivalent_solutions_score_as_exact_and_others_do_not():
    """Particles estimated at R g with states σ(τ) — the same images — come back with zero
    rotation error and exactly the true states; a 90° turn about z (no symmetry) is scored
    90° off, its states at most swapped (the identity and the half turn about z tie there),
    never reversed."""
    from scipy.spatial.transform import Rotation

    from napari_cryohet.stages.simulate.hypermolecule_toys import pretzel_symmetries

    bench = _bench()
    rng = np.random.default_rng(0)
    n = 40
    true_rot = Rotation.random(n, random_state=1).as_matrix()
    tau = rng.uniform(0.0, 1.0, (n, 2))
    which = np.arange(n) % 4
    est_rot, est_tau = np.empty_like(true_rot), np.empty_like(tau)
    for k, (g, reverse, swap) in enumerate(pretzel_symmetries()):
        rows = which == k
        est_rot[rows] = true_rot[rows] @ g
        t = tau[rows][:, ::-1] if swap else tau[rows]
        est_tau[rows] = 1.0 - t if reverse else t
    aligned, error = bench.symmetry_aligned(est_tau, est_rot, true_rot)
    assert error.max() < 1e-5
    np.testing.assert_allclose(aligned, tau, atol=1e-12)

    quarter = Rotation.from_euler("z", 90, degrees=True).as_matrix()
    aligned, error = bench.symmetry_aligned(tau, true_rot @ quarter, true_rot)
    np.testing.assert_allclose(error, 90.0, atol=1e-4)  # every half turn is 90° from a quarter turn about z
    kept = np.isclose(aligned, tau).all(1) | np.isclose(aligned, tau[:, ::-1]).all(1)
    assert kept.all()
