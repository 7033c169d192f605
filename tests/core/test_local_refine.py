"""Local pose refinement (core/local_refine.py): recovery of known perturbations, gold-standard halves."""

from __future__ import annotations

import math

import pytest
import torch

from napari_cryohet.core.atoms import gaussian_density_3d
from napari_cryohet.core.local_refine import (
    axis_angle_to_matrix,
    geodesic_angle_deg,
    refine_half_sets,
    refine_poses,
)
from napari_cryohet.core.projection import apply_ctf_and_shift, project_gaussian_atoms
from napari_cryohet.core.rotation import random_rotations

D = 32
APIX = 2.0
N = 64


def _atoms():
    """Gaussian blobs of different masses at asymmetric positions (Å), and their masses."""
    g = torch.Generator().manual_seed(3)
    coords = (torch.rand(12, 3, generator=g, dtype=torch.float64) - 0.5) * 0.5 * D * APIX  # Å
    weights = 1.0 + torch.rand(12, generator=g, dtype=torch.float64)
    return coords, weights


def _volume() -> torch.Tensor:
    """A smooth asymmetric volume: the blobs of :func:`_atoms` sampled on the grid."""
    coords, weights = _atoms()
    return gaussian_density_3d(coords, d=D, apix=APIX, sigma_a=2.5 * APIX, weights=weights)


def _ctf(n: int) -> dict:
    g = torch.Generator().manual_seed(5)
    du = 8000.0 + 4000.0 * torch.rand(n, generator=g, dtype=torch.float64)
    return dict(defocus_u_a=du, defocus_v_a=du - 300.0, defocus_angle_rad=torch.full((n,), 0.4, dtype=torch.float64),
                voltage_kv=300.0, cs_mm=2.7, amplitude_contrast=0.1)


def _random_axes(n: int, g: torch.Generator) -> torch.Tensor:
    a = torch.randn(n, 3, generator=g, dtype=torch.float64)
    return a / a.norm(dim=-1, keepdim=True)


@pytest.fixture(scope="module")
def problem():
    """Noiseless CTF-modulated, shifted projections with exact poses, and poses off by exactly 3° / 1 px.

    The images are the blobs' analytic projections (``project_gaussian_atoms``), an oracle
    independent of the Fourier-slice model the refinement uses."""
    vol = _volume()
    coords, weights = _atoms()
    g = torch.Generator().manual_seed(11)
    rot_true = random_rotations(N, generator=g, dtype=torch.float64)
    sh_true = (torch.rand(N, 2, generator=g, dtype=torch.float64) - 0.5) * 4.0 * APIX  # Å
    ctf = _ctf(N)
    clean = project_gaussian_atoms(coords, rot_true, d=D, apix=APIX, sigma_a=2.5 * APIX, weights=weights)
    images = apply_ctf_and_shift(clean, apix=APIX, ctf=ctf, shifts_a=sh_true)
    omega = _random_axes(N, g) * math.radians(3.0)
    rot_start = axis_angle_to_matrix(omega) @ rot_true
    phi = torch.rand(N, generator=g, dtype=torch.float64) * 2 * math.pi
    sh_start = sh_true + APIX * torch.stack([torch.cos(phi), torch.sin(phi)], -1)  # 1 px off
    return dict(vol=vol, images=images, ctf=ctf, rot_true=rot_true, sh_true=sh_true, rot_start=rot_start,
                sh_start=sh_start)


# noiseless data: a tiny noise variance (the maximum a posteriori pose is then the true one), and
# the map's transform padded 4× so that trilinear interpolation error stays well below 0.5° at 0.4 cycles/px
KW = dict(apix=APIX, sigma_angle_deg=3.0, sigma_shift_a=1.0 * APIX, max_resolution_a=2.5 * APIX, device="cpu",
          noise_variance=1e-6, pad_factor=4)


def test_perturbation_is_as_stated(problem):
    ang = geodesic_angle_deg(problem["rot_start"], problem["rot_true"])
    assert torch.allclose(ang, torch.full_like(ang, 3.0), atol=1e-6)
    dist = (problem["sh_start"] - problem["sh_true"]).norm(dim=-1) / APIX
    assert torch.allclose(dist, torch.ones_like(dist), atol=1e-9)


def test_recovers_known_perturbation(problem):
    res = refine_poses(problem["images"], problem["rot_start"], problem["sh_start"], problem["ctf"], problem["vol"],
                       **KW)
    ang_err = geodesic_angle_deg(res.rotations, problem["rot_true"])
    sh_err = (res.shifts_a - problem["sh_true"]).norm(dim=-1) / APIX
    ok = (ang_err < 0.5) & (sh_err < 0.2)
    print(f"angle error median {ang_err.median():.3f}° max {ang_err.max():.3f}°; shift error median "
          f"{sh_err.median():.3f} px max {sh_err.max():.3f} px; within 0.5°/0.2 px: {ok.float().mean():.1%}")
    assert ok.float().mean() >= 0.95
    # it moved about as far as the perturbation, and the refined pose scores better than the start
    assert torch.allclose(res.angle_moved_deg.median(), torch.tensor(3.0, dtype=torch.float64), atol=0.5)
    assert bool(torch.isfinite(res.scores).all())
    start = refine_poses(problem["images"], problem["rot_start"], problem["sh_start"], problem["ctf"],
                         problem["vol"], n_angle_steps=1, n_shift_steps=1, n_steps=0,
                         **KW)
    assert bool((res.scores > start.scores).all())


def test_noisy_data_halves_the_angular_error(problem):
    """SNR 10, the noise variance measured on the images' background, prior as wide as the error:
    the error of 3° (and 1 px) must at least halve, and the measured noise variance must match the truth.

    (This 32-px volume of 12 smooth blobs carries little orientation information: even started at
    the true pose with a flat prior, the refined pose is off by 2.7° on average at SNR 1 and by 0.9°
    at SNR 10; hence SNR 10 here. benchmarks/cluster_refine.py measures SNR 0.1 on 64-px AdK.)"""
    from napari_cryohet.core.local_refine import background_noise_variance

    g = torch.Generator().manual_seed(21)
    clean = problem["images"]
    noise_var = float(clean.var()) / 10.0
    noisy = clean + torch.randn(clean.shape, generator=g, dtype=clean.dtype) * math.sqrt(noise_var)
    # the background estimate is exact up to the signal the CTF spreads into the corners: within 5 %
    # at SNR 1, and an over-estimate by the signal's share at SNR 10
    at_snr1 = clean + torch.randn(clean.shape, generator=g, dtype=clean.dtype) * math.sqrt(10 * noise_var)
    measured = background_noise_variance(at_snr1) / (D * D)
    assert abs(float(measured.mean()) / (10 * noise_var) - 1.0) < 0.05
    kw = dict(KW, noise_variance=None, max_resolution_a=3.0 * APIX, pad_factor=None)
    res = refine_poses(noisy, problem["rot_start"], problem["sh_start"], problem["ctf"], problem["vol"], **kw)
    ang_err = geodesic_angle_deg(res.rotations, problem["rot_true"])
    sh_err = (res.shifts_a - problem["sh_true"]).norm(dim=-1) / APIX
    print(f"SNR 10: angle error 3° → mean {ang_err.mean():.2f}°, shift error 1 px → mean {sh_err.mean():.2f} px")
    assert float(ang_err.mean()) < 1.5 and float(sh_err.mean()) < 0.5


def test_masked_particles_keep_pose_exactly(problem):
    mask = torch.arange(N) % 3 != 0  # every third particle is in no cluster
    res = refine_poses(problem["images"][:12], problem["rot_start"][:12], problem["sh_start"][:12],
                       {k: (v[:12] if isinstance(v, torch.Tensor) else v) for k, v in problem["ctf"].items()},
                       problem["vol"], mask=mask[:12], **KW)
    off = ~mask[:12]
    assert torch.equal(res.rotations[off], problem["rot_start"][:12][off])
    assert torch.equal(res.shifts_a[off], problem["sh_start"][:12][off])
    assert bool((res.angle_moved_deg[off] == 0).all()) and bool(torch.isnan(res.scores[off]).all())
    assert bool((res.angle_moved_deg[mask[:12]] > 1.0).all())


def test_search_never_leaves_the_3_sigma_box(problem):
    """A prior narrower than the error: every particle stops at or inside |ω| ≤ 3σ, |δ_i| ≤ 3σ."""
    sig_a, sig_s = 0.4, 0.1 * APIX
    kw = dict(KW, sigma_angle_deg=sig_a, sigma_shift_a=sig_s)
    res = refine_poses(problem["images"][:16], problem["rot_start"][:16], problem["sh_start"][:16],
                       {k: (v[:16] if isinstance(v, torch.Tensor) else v) for k, v in problem["ctf"].items()},
                       problem["vol"], **kw)
    moved = geodesic_angle_deg(res.rotations, problem["rot_start"][:16])
    delta = (res.shifts_a - problem["sh_start"][:16]).abs()
    print(f"narrow prior: max moved {moved.max():.3f}° (box {3 * sig_a}°), max |δ| {delta.max():.3f} Å "
          f"(box {3 * sig_s} Å)")
    assert bool((moved <= 3 * sig_a + 1e-6).all())
    assert bool((delta <= 3 * sig_s + 1e-9).all())
    assert float(moved.max()) > 2 * sig_a  # it did push against the box: the data wants to go further


class _Untouchable:
    """A map that fails the test if anything reads it."""

    def __getattr__(self, name):
        raise AssertionError(f"map B was read ({name})")

    def __array__(self, *args, **kwargs):
        raise AssertionError("map B was read (__array__)")

    def __getitem__(self, item):
        raise AssertionError("map B was read (__getitem__)")


def test_half_a_never_reads_map_b(problem):
    n = 12
    sub = {k: (v[:n] if isinstance(v, torch.Tensor) else v) for k, v in problem["ctf"].items()}
    args = (problem["images"][:n], problem["rot_start"][:n], problem["sh_start"][:n], sub)
    halves = torch.tensor([1, 2] * (n // 2))
    vol = problem["vol"]
    # 1. only half-1 particles to refine: map B is never touched
    mask = halves == 1
    res = refine_half_sets(*args, halves, vol, _Untouchable(), mask=mask, **KW)
    assert bool((res.angle_moved_deg[mask] > 1.0).all())
    assert torch.equal(res.rotations[~mask], problem["rot_start"][:n][~mask])
    # 2. map B replaced by another map leaves every half-1 result identical (and changes half 2)
    good = refine_half_sets(*args, halves, vol, vol, **KW)
    other = torch.roll(vol, shifts=(3, -2, 5), dims=(0, 1, 2)) * 0.7
    swapped = refine_half_sets(*args, halves, vol, other, **KW)
    h1 = halves == 1
    assert torch.equal(good.rotations[h1], swapped.rotations[h1])
    assert torch.equal(good.shifts_a[h1], swapped.shifts_a[h1])
    assert torch.equal(good.scores[h1], swapped.scores[h1])
    assert not torch.equal(good.scores[~h1], swapped.scores[~h1])
    # 3. and half 2 really is refined against map B: with the true map it converges
    err = geodesic_angle_deg(good.rotations[~h1], problem["rot_true"][:n][~h1])
    assert float(err.max()) < 0.5


def test_axis_angle_and_geodesic():
    g = torch.Generator().manual_seed(0)
    omega = torch.randn(20, 3, generator=g, dtype=torch.float64) * 0.5
    r = axis_angle_to_matrix(omega)
    assert torch.allclose(r @ r.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(20, 3, 3), atol=1e-12)
    assert torch.allclose(geodesic_angle_deg(r, torch.eye(3, dtype=torch.float64).expand(20, 3, 3)),
                          torch.rad2deg(omega.norm(dim=-1)), atol=1e-6)


def test_bad_inputs(problem):
    imgs, rot, sh = problem["images"][:4], problem["rot_start"][:4], problem["sh_start"][:4]
    with pytest.raises(ValueError, match="rotations"):
        refine_poses(imgs, rot[:3], sh, None, problem["vol"], **KW)
    with pytest.raises(ValueError, match="shifts_a"):
        refine_poses(imgs, rot, sh[:, :1], None, problem["vol"], **KW)
    with pytest.raises(ValueError, match="reference_map"):
        refine_poses(imgs, rot, sh, None, problem["vol"][:-1], **KW)
    with pytest.raises(ValueError, match="non-finite"):
        refine_poses(imgs, rot, sh, None, torch.full_like(problem["vol"], float("nan")), **KW)
    with pytest.raises(ValueError, match="ctf"):
        refine_poses(imgs, rot, sh, {"defocus": 1.0}, problem["vol"], **KW)
    with pytest.raises(ValueError, match="half_sets"):
        refine_half_sets(imgs, rot, sh, None, torch.tensor([1, 2, 3, 1]), problem["vol"], problem["vol"], **KW)


def test_prior_centre_can_differ_from_the_start(problem):
    """Data that carry no weight (huge noise variance): the refined pose is the prior's centre, here the
    true pose 3° / 1 px away from the start (inside the ±3σ search region around the start)."""
    kw = dict(KW, noise_variance=1e12, sigma_angle_deg=2.0, sigma_shift_a=1.0 * APIX)
    res = refine_poses(problem["images"][:8], problem["rot_start"][:8], problem["sh_start"][:8],
                       {k: (v[:8] if isinstance(v, torch.Tensor) else v) for k, v in problem["ctf"].items()},
                       problem["vol"], prior_rotations=problem["rot_true"][:8], prior_shifts_a=problem["sh_true"][:8],
                       **kw)
    ang = geodesic_angle_deg(res.rotations, problem["rot_true"][:8])
    sh = (res.shifts_a - problem["sh_true"][:8]).norm(dim=-1) / APIX
    print(f"to the prior's centre: {ang.max():.3f}° / {sh.max():.4f} px")
    assert float(ang.max()) < 0.1 and float(sh.max()) < 1e-3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(problem):
    kw = dict(KW, device="cpu")
    sub = {k: (v[:8] if isinstance(v, torch.Tensor) else v) for k, v in problem["ctf"].items()}
    args = (problem["images"][:8], problem["rot_start"][:8], problem["sh_start"][:8], sub, problem["vol"])
    cpu = refine_poses(*args, **kw)
    gpu = refine_poses(*args, **dict(kw, device="cuda"))
    assert float(geodesic_angle_deg(cpu.rotations, gpu.rotations).max()) < 0.05
    assert float((cpu.shifts_a - gpu.shifts_a).abs().max()) < 0.01


def test_axis_angle_gradient_at_zero_is_the_cross_product():
    """At ω = 0, d/dω (exp([ω]ₓ) v) = −[v]ₓ: autograd must give it (it gave NaN, 0 · ∞ from the
    unused Rodrigues branch, which broke any optimiser started at the current pose)."""
    v = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    omega = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    jac = torch.autograd.functional.jacobian(lambda w: axis_angle_to_matrix(w) @ v, omega)
    hat_v = torch.tensor([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]], dtype=torch.float64)
    torch.testing.assert_close(jac, -hat_v)
