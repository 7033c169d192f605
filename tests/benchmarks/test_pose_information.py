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


def test_adk_orientation_floor_finds_clean_poses(one_thread):
    """On nearly clean images the MAP orientation (likelihood × the start's prior) is the true
    one whatever the 4° start; at the benchmark's SNR 0.1 the prior holds it between the truth
    and the start, so the error left is larger than on clean images and smaller than the start's."""
    bench = _bench()
    clean = bench.adk_case(6, snr=100.0)
    assert clean["map_with_prior_error_deg"]["mean"] < 0.2
    assert clean["map_error_deg"]["mean"] < 0.2
    noisy = bench.adk_case(6)
    assert clean["map_with_prior_error_deg"]["mean"] < noisy["map_with_prior_error_deg"]["mean"]
    assert noisy["map_with_prior_error_deg"]["mean"] < noisy["start_error_deg"]["mean"]


def test_laplace_modes_climb_to_the_peak_and_weigh_its_curvature(one_thread):
    """On a score whose peaks are known, ``ℓ = −½ κ (3 − tr(R R₀ᵀ))`` (≈ −½ κ θ² for a rotation
    θ from R₀, any arm states), each start 15° off climbs back to R₀ and the mode's mass carries
    the Laplace factor ``−(3/2) log κ``: two particles whose κ differ 10-fold differ by
    ``1.5 log 10`` nats."""
    import torch

    from napari_cryohet.core.local_refine import axis_angle_to_matrix, geodesic_angle_deg

    bench = _bench()
    peak = axis_angle_to_matrix(torch.tensor([[0.3, -1.1, 0.6], [2.0, 0.4, -0.2]]))
    kappa = torch.tensor([200.0, 2000.0])

    def score(p, tau, r):
        trace = (r * peak[p]).sum((-1, -2))
        return (-0.5 * kappa[p] * (3 - trace) + 0 * tau.sum(-1)).double()

    off = axis_angle_to_matrix(torch.tensor([[0.0, 0.0, 0.26], [0.26, 0.0, 0.0]])) @ peak
    grid = np.array([[0.25, 0.25], [0.75, 0.75]])
    modes = bench._laplace_states(score, grid, off[:, None], torch.full((2, 1, 2), 0.5))
    assert float(geodesic_angle_deg(modes["rot"][:, 0], peak).max()) < 0.05
    assert bool(modes["curved"].all())
    np.testing.assert_allclose(float(modes["log_mass"][0, 0] - modes["log_mass"][1, 0]), 1.5 * np.log(10), atol=1e-3)


def test_pretzel_blobs_interpolated_follow_the_simulator():
    """The differentiable blob positions used to climb in the arm states match the simulator's
    at states between the table's knots (to 0.01 Å) and move with them."""
    import torch

    from napari_cryohet.stages.simulate.hypermolecule_toys import pretzel_blobs

    blobs = _bench()._pretzel_blobs_torch()
    tau = torch.tensor([[0.1234, 0.8765], [0.5, 0.0], [1.0, 0.333]], requires_grad=True)
    xyz = blobs(tau)
    np.testing.assert_allclose(xyz.detach().numpy(), pretzel_blobs(tau.detach().numpy()), atol=0.01)
    xyz[0, 20:25].sum().backward()  # arm 1's blobs move with the first state only
    assert abs(float(tau.grad[0, 0])) > 1.0 and float(tau.grad[0, 1]) == 0.0


def test_refined_modes_find_clearer_images_true_orientation(one_thread):
    """At SNR 1 the orientation posterior's modes, climbed to their peaks in orientation and arm
    states together, make the true orientation's mode the heaviest for nearly every particle when
    it is among the starts, and the states' mean over the modes then follows the true states; from
    three starts on a coarse grid of 200 orientations alone fewer particles are found."""
    r = _bench().pretzel_states_case(30, 64, 3.0, 200, 11, snr=1.0, refine_starts=3)
    assert r["within_20deg_refined_with_truth"] >= 0.9
    assert min(r["rho_refined_with_truth"]) > 0.9
    assert r["within_20deg_refined"] < r["within_20deg_refined_with_truth"]
