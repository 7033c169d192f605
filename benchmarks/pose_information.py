"""How precisely can a single image fix its particle's orientation (and states)? Oracle bounds (issues 13 and 17).

Both the refinement loop (issue 13: "angular error at least halved") and the hyper-molecule
sampler's Run B (issue 17: orientations unknown, pretzel at SNR 1/30) depend on how much an
image says about its orientation. This benchmark measures it with the *exact* model: the
simulator's own atoms, projected analytically (:func:`core.projection.project_gaussian_atoms`),
with the true CTF, shift and noise variance — no reconstruction, no interpolation, no
sampler. Whatever a method does, it cannot know more than this.

- ``adk`` — the refinement benchmark's data (``benchmarks/cluster_refine.py``: AdK heavy atoms,
  six classes, 64 px at 1.5 Å, SNR 0.1). Per particle, the maximum-likelihood orientation is
  found by L-BFGS on the rotation vector *starting at the truth* with a flat prior; its
  distance to the truth (``adk.map_error_deg``, mean and median) is the error of the best
  estimate an image allows. The issue's target, half of the 3.66° start (4° rms), is 1.83°;
  the Bayes combination of this likelihood with the 4° prior is printed as
  ``adk.bayes_floor_deg`` (per-axis precisions added, mean geodesic angle ≈ 1.6 × per-axis
  standard deviation for small isotropic errors). Measured directly as well: each particle
  starts from a pose turned by 4° rms, as in the refinement benchmark, and its MAP
  orientation under the likelihood times the Gaussian prior centred on that start (the best
  any local refinement can report, knowing the exact volume, CTF and shift) lies
  ``adk.map_with_prior_error_deg`` from the truth; ``halved_share`` is the share of
  particles brought to half their starting error or closer.
- ``pretzel`` — the hyper-molecule benchmark's data (``benchmarks/hypermolecule_pretzel.py``,
  SNR 1/30, CTF, shifts) at 64 px / 3 Å (the issue's size) and 128 px / 1.5 Å (the same
  field of view, closer to the paper's 151 px). Per particle the log-likelihood (contrast
  fitted) of the true orientation's neighbourhood — within 20° of ``R g`` for any of the
  pretzel's four symmetries ``g`` (``hypermolecule_toys.pretzel_symmetries``: a half turn
  about z swaps the arms, one about x or y reverses their states; with the states mapped
  alike the image is the same, so a sampler that estimates states cannot prefer one of the
  four) — is compared with the best of ``M`` Haar-random orientations outside it:
  ``wins`` is the share of particles whose true orientation wins, ``margin`` the median
  log-likelihood difference (nats), for the exact map (true arm states) and for the map
  averaged over arm states (what a sampler knows before the states are learned); and the
  64-px images Fourier-cropped to 32 px, the sampler's working size (``64 → 32``).

- ``pretzel_states`` — what Run B of the hyper-molecule benchmark could recover: orientation
  *and* arm states searched together with the exact model (:func:`pretzel_states_case`),
  scored as the benchmark scores the sampler (|Spearman ρ| per arm, up to the four
  symmetries), at 64 px / 3 Å and 128 px / 1.5 Å, both Fourier-cropped to the sampler's
  32-px working size: the best candidate's states, their posterior mean at its orientation,
  and their posterior mean over every candidate (orientations included), each with and
  without the particle's true orientation among the candidates. At 64 px the orientation
  posterior's modes are then also climbed to their peaks (``rho_refined*``): from the
  particle's 16 best grid orientations lying 25° apart (and, for ``*_with_truth``, from its
  true orientation too), orientation and arm states climb together, each mode is weighed by
  its Laplace mass, and the states are averaged over the modes — the grid's favour to the
  truth (scored at its peak, rivals off theirs) removed.

    python benchmarks/pose_information.py [--quick] [--json PATH] [--cases adk,pretzel,pretzel_states]

``--quick``: 12 particles and 400 orientations per case (60 particles and a 5 × 5 state grid
for ``pretzel_states``), 64 px pretzel only (< 60 s). Full (one thread): 1 000 AdK particles (about 5 min),
30 pretzel particles × 3000 orientations at 64 px, 64 → 32 px and 128 px (about 50 min,
most of it at 128 px); ``pretzel_states``: 1 000 particles × 5 000 orientations × 11 × 11
states at 64 and 128 px (about 45 min; the modes' climb at 64 px about 10 min of it).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from napari_cryohet.core.local_refine import axis_angle_to_matrix, geodesic_angle_deg
from napari_cryohet.core.projection import apply_ctf_and_shift, project_gaussian_atoms
from napari_cryohet.core.rotation import random_rotations

CLASSES = (("CORE", "NMP", "LID"), ("CORE", "NMP"), ("CORE", "LID"))  # as benchmarks/cluster_refine.py
FRAMES = (0, 101)
START_RMS_DEG = 4.0
START_MEAN_DEG = 3.66  # mean geodesic angle of the refinement benchmark's starting poses


def _ctf_row(ctf: dict, i: int, m: int) -> dict:
    return {k: (v[i:i + 1].expand(m) if torch.is_tensor(v) and v.dim() else v) for k, v in ctf.items()}


def adk_case(n: int, snr: float = 0.1) -> dict:
    """Maximum-likelihood and MAP orientation errors, exact model (module docstring); ``snr`` for tests."""
    from napari_cryohet.stages.simulate import assembly_classes
    from napari_cryohet.stages.simulate.adk import load_adk_heavy

    ds = assembly_classes(n, classes=CLASSES, frames=FRAMES, box_size=64, apix=1.5, snr=snr, seed=0)
    gt = ds.ground_truth
    heavy = load_adk_heavy()
    masks, frames, state = (np.asarray(gt[k]) for k in ("global/class_masks", "global/class_frames", "state"))
    atom_w = np.asarray(gt["global/atom_weights"], dtype=np.float64)
    noise_var = float(np.asarray(gt["global/noise_var"]).ravel()[0])
    sigma = float(np.asarray(gt["global/sigma_a"]).ravel()[0])
    images = torch.as_tensor(np.asarray(ds.get_images(np.arange(n))), dtype=torch.float64)
    rot = torch.as_tensor(np.asarray(ds.rotations), dtype=torch.float64)
    shifts = torch.zeros(n, 2, dtype=torch.float64) if ds.shifts_a is None else \
        torch.as_tensor(np.asarray(ds.shifts_a), dtype=torch.float64)
    ctf = ds.ctf.to_torch(dtype=torch.float64)
    # the refinement benchmark's kind of start: each pose turned by an isotropic Gaussian
    # rotation vector of 4° rms (per axis 4/√3°); the prior of the MAP estimate is centred there
    s_prior = START_RMS_DEG / math.sqrt(3)
    gen = torch.Generator().manual_seed(1)
    starts = torch.randn(n, 3, generator=gen, dtype=torch.float64) * math.radians(s_prior)
    errors, prior_errors = [], []
    for i in range(n):
        c = int(state[i])
        coords = torch.as_tensor(heavy["coords"][frames[c]], dtype=torch.float64)
        weights = torch.as_tensor(masks[c] * atom_w)

        def log_lik(omega: torch.Tensor, i=i, coords=coords, weights=weights) -> torch.Tensor:
            r = axis_angle_to_matrix(omega)[None] @ rot[i:i + 1]
            p = project_gaussian_atoms(coords, r, d=64, apix=1.5, sigma_a=sigma, weights=weights)
            p = apply_ctf_and_shift(p, apix=1.5, ctf=_ctf_row(ctf, i, 1), shifts_a=shifts[i:i + 1])
            return -((images[i] - p[0]) ** 2).sum() / (2 * noise_var)

        omega = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([omega], max_iter=50, line_search_fn="strong_wolfe")

        def closure(omega=omega, opt=opt, log_lik=log_lik):
            opt.zero_grad()
            loss = -log_lik(omega)
            loss.backward()
            return loss

        opt.step(closure)
        errors.append(math.degrees(float(omega.detach().norm())))

        # the MAP estimate with the prior of the start (to first order in the small angles the
        # start's offset adds to the estimate's), searched from the start: the best pose any
        # local refinement could report for this particle, given the exact volume, CTF and shift
        start = starts[i]
        omega = start.clone().requires_grad_(True)
        opt = torch.optim.LBFGS([omega], max_iter=50, line_search_fn="strong_wolfe")

        def closure_prior(omega=omega, opt=opt, log_lik=log_lik, start=start):
            opt.zero_grad()
            loss = -log_lik(omega) + ((omega - start) ** 2).sum() / (2 * math.radians(s_prior) ** 2)
            loss.backward()
            return loss

        opt.step(closure_prior)
        prior_errors.append(math.degrees(float(omega.detach().norm())))
    errors, prior_errors = np.asarray(errors), np.asarray(prior_errors)
    start_errors = np.degrees(starts.norm(dim=1).numpy())
    # per-axis standard deviations: mean geodesic angle of a small isotropic error ≈ sqrt(8/π) · s
    s_lik = float(errors.mean()) / math.sqrt(8 / math.pi)
    s_post = 1.0 / math.sqrt(1 / s_lik**2 + 1 / s_prior**2)
    return {"n_particles": n, "map_error_deg": {"mean": float(errors.mean()), "median": float(np.median(errors))},
            "bayes_floor_deg": s_post * math.sqrt(8 / math.pi), "target_deg": START_MEAN_DEG / 2,
            "start_error_deg": {"mean": float(start_errors.mean()), "median": float(np.median(start_errors))},
            "map_with_prior_error_deg": {"mean": float(prior_errors.mean()),
                                         "median": float(np.median(prior_errors)),
                                         "standard_error": float(prior_errors.std(ddof=1) / math.sqrt(n)),
                                         "halved_share": float((prior_errors <= 0.5 * start_errors).mean())}}


def _pretzel_data(n: int, box: int, apix: float, snr: float) -> tuple:
    """The benchmark's pretzel (seed 0) and what the oracles read from it: blob width ``sigma``,
    the likelihood's ``scale = 1 / (2 σ² D²)`` (white noise on an unnormalised spectrum), and
    float32 ``images``, ``rot``, ``shifts`` (Å) and blob weights ``w``."""
    from napari_cryohet.stages.simulate.hypermolecule_toys import pretzel

    def as32(x) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x), dtype=torch.float32)

    ds = pretzel(n, box_size=box, apix=apix, snr=snr, seed=0)
    gt = ds.ground_truth
    return ds, {"sigma": float(np.asarray(gt["global/sigma_a"]).ravel()[0]),
                "scale": 1.0 / (2 * float(np.asarray(gt["global/noise_var"]).ravel()[0]) * box * box),
                "images": as32(ds.get_images(np.arange(n))), "rot": as32(ds.rotations),
                "shifts": as32(ds.shifts_a), "w": as32(gt["global/blob_weights"])}


def _fitted_log_lik(cross: torch.Tensor, power: torch.Tensor, scale: float) -> torch.Tensor:
    """White-noise log-likelihood of an image ``Y`` under ``a Q`` with the contrast ``a ≥ 0``
    fitted, up to the constant ``−scale ‖Y‖²``: ``scale (2 a Re⟨Q, Y⟩ − a² ‖Q‖²)`` with
    ``a = Re⟨Q, Y⟩ / ‖Q‖²``; ``cross = Re⟨Q, Y⟩``, ``power = ‖Q‖²`` (any matching shapes)."""
    a = (cross / power).clamp_min(0)
    return ((2 * a * cross - a * a * power) * scale).double()


def pretzel_case(n: int, box: int, apix: float, n_rotations: int, working_px: int | None = None) -> dict:
    """Does the true orientation beat every other? Exact and state-averaged maps (module docstring).

    The log-likelihood of white noise is computed on the spectrum, ``−Σ_k |Y_k − a P_k|² / (2 σ² D²)``
    (Parseval: the same as on the pixels; up to a constant, :func:`_fitted_log_lik`), over the central ``working_px²`` Fourier components
    (the images Fourier-cropped as the sampler sees them, ``HyperMoleculeConfig.working_size_px``;
    ``None``: all of them).
    """
    from napari_cryohet.core.fft import fft2_centered, fourier_crop
    from napari_cryohet.stages.simulate.hypermolecule_toys import pretzel_blobs, pretzel_symmetries

    ds, t = _pretzel_data(n, box, apix, 1 / 30)
    sigma, scale, images, rot, shifts, w = t["sigma"], t["scale"], t["images"], t["rot"], t["shifts"], t["w"]
    ctf = ds.ctf.to_torch(dtype=torch.float32)
    coords = torch.as_tensor(np.asarray(ds.ground_truth["coords_a"]), dtype=torch.float32)
    g = np.linspace(0.0, 1.0, 5)
    grid = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    avg_xyz = torch.as_tensor(pretzel_blobs(grid), dtype=torch.float32).reshape(-1, 3)
    avg_w = w.repeat(len(grid)) / len(grid)
    others = random_rotations(n_rotations, generator=torch.Generator().manual_seed(1), dtype=torch.float32)
    mates = [torch.as_tensor(g, dtype=torch.float32) for g, _, _ in pretzel_symmetries()]
    margins: dict[str, list[float]] = {"exact": [], "state_averaged": []}
    working = working_px or box
    for i in range(n):
        rots = torch.cat([rot[i:i + 1], others])
        y = fourier_crop(fft2_centered(images[i]), working)  # the image as compared: (cropped) spectrum

        # the truth up to the pretzel's symmetries: R g gives the same image with the states mapped
        near = torch.stack([geodesic_angle_deg(rots, rot[i] @ g) for g in mates]).min(0).values < 20
        for name, (xyz, ww) in {"exact": (coords[i], w), "state_averaged": (avg_xyz, avg_w)}.items():
            ll = []
            for start in range(0, len(rots), 500):  # chunks keep 128-px spectra in memory
                r = rots[start:start + 500]
                p = project_gaussian_atoms(xyz, r, d=box, apix=apix, sigma_a=sigma, weights=ww)
                p = apply_ctf_and_shift(p, apix=apix, ctf=_ctf_row(ctf, i, len(r)),
                                        shifts_a=shifts[i:i + 1].expand(len(r), 2))
                q = fourier_crop(fft2_centered(p), working)
                ll.append(_fitted_log_lik((y.conj() * q).real.sum((-1, -2)), q.abs().square().sum((-1, -2)), scale))
            ll = torch.cat(ll)
            margins[name].append(float(ll[near].max() - ll[~near].max()))
    return {"box_px": box, "apix": apix, "working_px": working, "n_particles": n, "n_rotations": n_rotations,
            **{name: {"wins": float(np.mean(np.asarray(m) > 0)), "margin_median_nats": float(np.median(m))}
               for name, m in margins.items()}}


def _peaks(score, particles: torch.Tensor, tau0: torch.Tensor, r0: torch.Tensor,
           iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's orientation and arm states moved from ``(r0, tau0)`` to the nearest peak of
    ``score(particles, τ, R)`` (rows independent: L-BFGS on their summed log-likelihood, over the
    rotation vector ``ω`` of ``R = exp([ω]ₓ) r0`` and ``u`` of ``τ = 1 / (1 + e^(−u))``, which keeps
    the states inside [0, 1])."""
    omega = torch.zeros(len(r0), 3, requires_grad=True)
    u = torch.logit(tau0.clamp(0.02, 0.98)).detach().requires_grad_(True)
    opt = torch.optim.LBFGS([omega, u], max_iter=iters, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-7, tolerance_change=1e-12)

    def closure():
        opt.zero_grad()
        loss = -score(particles, torch.sigmoid(u), axis_angle_to_matrix(omega) @ r0).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return (axis_angle_to_matrix(omega) @ r0).detach(), torch.sigmoid(u).detach()


def _rotation_hessians(score, particles: torch.Tensor, tau: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """``(B, 3, 3)`` second derivatives of each row's log-likelihood in the rotation vector at ``r``
    (exact, by differentiating the gradient again; rows are independent, so one backward pass per
    coordinate gives every row's Hessian)."""
    omega = torch.zeros(len(r), 3, requires_grad=True)
    ll = score(particles, tau, axis_angle_to_matrix(omega) @ r)
    g = torch.autograd.grad(ll.sum(), omega, create_graph=True)[0]
    return torch.stack([torch.autograd.grad(g[:, j].sum(), omega, retain_graph=j < 2)[0] for j in range(3)],
                       1).double()


def _laplace_states(score, grid: np.ndarray, starts: torch.Tensor, start_tau: torch.Tensor,
                    chunk: int = 64, iters: int = 40) -> dict:
    """The orientation posterior's modes, each climbed to its peak, with their mass and states' mean.

    ``starts (n, M, 3, 3)``, ``start_tau (n, M, 2)``: per particle, ``M`` starting orientations and
    arm states. Each climbs to its peak in orientation and states together (:func:`_peaks`). A
    mode's posterior mass is the Laplace approximation in orientation times the sum over the
    state grid ``grid (S, 2)`` at the peak's orientation,
    ``log Z = log Σ_τ exp ℓ(R̂, τ) − ½ log det(−∇²_ω ℓ(R̂, τ̂))`` (the ``(2π)^{3/2}`` and the grid
    cell's area are common to all), and its states' mean is the grid posterior at ``R̂``. Returns
    per particle and mode the peak orientation ``rot``, ``log_mass``, ``tau_mean`` and ``curved``
    (whether ``−∇²ℓ`` is positive definite there; if not, the mode's mass is left out).
    """
    n, m = start_tau.shape[:2]
    rot, log_mass = starts.clone(), torch.full((n, m), -math.inf, dtype=torch.float64)
    tau_mean, curved = torch.zeros(n, m, 2, dtype=torch.float64), torch.zeros(n, m, dtype=torch.bool)
    rows = torch.arange(n)[:, None].expand(n, m).reshape(-1)
    flat_rot, flat_tau = starts.reshape(-1, 3, 3), start_tau.reshape(-1, 2).float()
    grid_t = torch.as_tensor(grid, dtype=torch.float32)
    for lo in range(0, n * m, chunk):
        p = rows[lo:lo + chunk]
        r, tau = _peaks(score, p, flat_tau[lo:lo + chunk], flat_rot[lo:lo + chunk], iters)
        with torch.no_grad():
            ll = torch.stack([score(p, grid_t[k].expand(len(p), 2), r) for k in range(len(grid))], 1)  # (b, S)
        eig = torch.linalg.eigvalsh(-_rotation_hessians(score, p, tau, r))
        ok = eig.min(1).values > 0
        lz = torch.logsumexp(ll, 1) - 0.5 * torch.log(eig.clamp_min(1e-12)).sum(1)
        idx = np.unravel_index(np.arange(lo, lo + len(p)), (n, m))
        rot[idx], curved[idx] = r, ok
        log_mass[idx] = torch.where(ok, lz, torch.full_like(lz, -math.inf))
        tau_mean[idx] = torch.softmax(ll, 1) @ torch.as_tensor(grid)
    return {"rot": rot, "log_mass": log_mass, "tau_mean": tau_mean, "curved": curved}


def _pretzel_blobs_torch(knots: int = 1001):
    """The pretzel's blob centres as a differentiable function of the arm states ``τ (B, 2)`` → ``(B, 30, 3)``:
    :func:`pretzel_blobs` tabulated at ``knots`` states per arm and interpolated linearly (each
    blob moves with one arm only, so ``P(τ₁, τ₂) = P(τ₁, 0) + P(0, τ₂) − P(0, 0)``; checked here)."""
    from napari_cryohet.stages.simulate.hypermolecule_toys import pretzel_blobs

    t = np.linspace(0.0, 1.0, knots)
    zero = np.zeros_like(t)
    first, second = pretzel_blobs(np.column_stack([t, zero])), pretzel_blobs(np.column_stack([zero, t]))
    origin = pretzel_blobs([[0.0, 0.0]])[0]
    probe = np.array([[0.3, 0.8], [0.9, 0.1]])
    assert np.allclose(pretzel_blobs(probe), pretzel_blobs(probe[:, :1] * [1, 0]) + pretzel_blobs(probe[:, 1:] * [0, 1])
                       - origin, atol=1e-4)
    table = torch.as_tensor(np.stack([first - origin, second - origin]), dtype=torch.float32)  # (2, T, 30, 3)
    base = torch.as_tensor(origin, dtype=torch.float32)

    def blobs(tau: torch.Tensor) -> torch.Tensor:
        x = tau.clamp(0, 1) * (knots - 1)
        lo = x.detach().floor().long().clamp_max(knots - 2)
        frac = (x - lo)[..., None, None]
        out = base.expand(len(tau), -1, -1)
        for k in range(2):
            out = out + table[k, lo[:, k]] * (1 - frac[:, k]) + table[k, lo[:, k] + 1] * frac[:, k]
        return out

    return blobs


def _distinct_starts(per_rot: torch.Tensor, per_rot_state: torch.Tensor, others: torch.Tensor, mates: list,
                     k: int, apart_deg: float = 25.0, pool: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Per particle, the ``k`` best-scoring grid orientations that lie more than ``apart_deg`` from
    each other up to the symmetries (greedy, from the ``pool`` best), with their best grid states."""
    n = per_rot.shape[0]
    order = per_rot.argsort(1, descending=True)[:, :pool]
    picked = torch.zeros(n, k, dtype=torch.long)
    cos_apart = math.cos(math.radians(apart_deg))
    sym = torch.stack([torch.as_tensor(g, dtype=torch.float32) for g in mates])  # (4, 3, 3)
    for i in range(n):
        chosen: list[int] = []
        for j in order[i].tolist():
            if len(chosen) == k:
                break
            if chosen:  # cos of the angle from R_j to R_c g, for every chosen c and symmetry g
                rel = torch.einsum("cab,gbd,ad->cg", others[chosen], sym, others[j])
                if ((rel - 1) / 2).max() > cos_apart:
                    continue
            chosen.append(j)
        chosen += [chosen[-1]] * (k - len(chosen))
        picked[i] = torch.as_tensor(chosen)
    return others[picked], per_rot_state.gather(1, picked)


def _mode_average(modes: dict, symmetry_aligned, same_deg: float = 5.0) -> tuple:
    """Per particle: the heaviest mode's orientation ``(n, 3, 3)``, the states' posterior mean ``(n, 2)``
    over the modes, each mode's states first carried into the heaviest one's frame by the symmetry
    that brings it nearest (:func:`hypermolecule_pretzel.symmetry_aligned`, with the heaviest mode
    in the truth's place), and that mode's share of the mass. Starts that climbed to the same
    peak (within ``same_deg`` up to the symmetries) count once."""
    from napari_cryohet.stages.simulate.hypermolecule_toys import pretzel_symmetries

    rot, lz = modes["rot"].double().numpy(), modes["log_mass"].numpy()
    n, m = lz.shape
    best = lz.argmax(1)
    ref = rot[np.arange(n), best]
    states, _ = symmetry_aligned(modes["tau_mean"].reshape(n * m, 2).numpy(), rot.reshape(n * m, 3, 3),
                                 np.repeat(ref, m, axis=0))
    states = states.reshape(n, m, 2)
    gs = np.stack([np.asarray(g, dtype=np.float64) for g, _, _ in pretzel_symmetries()])
    # tr((R_a g)ᵀ R_b) = 1 + 2 cos(angle between R_a g and R_b), for every pair of modes and symmetry
    same = (np.einsum("nbax,kxy,ncay->nbck", rot, gs, rot).max(3) - 1) / 2 > math.cos(math.radians(same_deg))
    mean, share = np.zeros((n, 2)), np.zeros(n)
    for i in range(n):
        kept: list[int] = []
        for j in np.argsort(-lz[i]):
            if np.isfinite(lz[i, j]) and not any(same[i, j, c] for c in kept):
                kept.append(int(j))
        w = np.exp(lz[i, kept] - lz[i, kept].max())
        mean[i], share[i] = w @ states[i, kept] / w.sum(), w.max() / w.sum()
    return ref, mean, share


def pretzel_states_case(n: int, box: int, apix: float, n_rotations: int, per_knob: int,
                        working_px: int | None = 32, snr: float = 1 / 30, refine_starts: int = 0) -> dict:
    """The most a Run B can recover: orientation and arm states searched together, exact model.

    Per particle, every one of ``n_rotations`` Haar-random orientations *and its own true
    orientation* is paired with each point of a ``per_knob × per_knob`` grid of arm states (cell
    centres); each candidate is projected with the simulator's own blobs, the particle's true
    CTF and shift, contrast fitted, and scored by the white-noise log-likelihood over the central
    ``working_px²`` Fourier components. The best candidate is the maximum-a-posteriori estimate
    (flat priors) of orientation and states; its states, mapped into the truth's frame by the
    nearest of the pretzel's four symmetries
    (:func:`hypermolecule_pretzel.symmetry_aligned`, as the benchmark scores the sampler), give
    |Spearman ρ| per arm. ``rho_posterior_mean`` uses instead the posterior mean of the states
    at that best orientation (what a chain sitting in that orientation reports), and
    ``rho_marginal`` their posterior mean over every candidate, orientations included (the
    Bayes estimate; each candidate's states first carried into the frame of the best
    orientation by the symmetry that brings the candidate nearest to it, as a method must do
    without the truth). The true orientation is always among the candidates while the others
    are a random grid ~14° apart: that favours the truth, whose score is taken at its exact
    peak while every rival's is taken off its own, so these figures are optimistic.
    ``*_random_only`` (and ``within_20deg_random_only``) leave the true orientation out, which
    errs the other way (the truth's neighbourhood is then scored off its peak too).

    The projections do not depend on the particle (only the CTF and shift do), so each
    candidate is projected once and scored against all particles by two matrix products.

    ``refine_starts = k > 0`` removes the grid's favour: the particle's ``k`` best grid
    orientations lying 25° apart up to the symmetries (:func:`_distinct_starts`) climb to their
    peaks in orientation and continuous arm states together, each peak is weighed by its
    Laplace mass in orientation times its states' grid sum (:func:`_laplace_states`), and the
    states are averaged over the distinct peaks in the heaviest one's frame
    (:func:`_mode_average`): ``rho_refined``, ``within_20deg_refined`` (the heaviest peak) and
    ``heaviest_mode_share_refined`` (median share of the posterior mass); ``*_with_truth`` adds
    the climb from the true orientation. Both sides now score every candidate at its own peak,
    so the two figures differ only by whether the true orientation's peak was among those
    found; the posterior's mass between the peaks is taken as Gaussian in orientation.
    """
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    from scipy.stats import spearmanr

    from hypermolecule_pretzel import mapped_states, symmetry_aligned
    from napari_cryohet.core.fft import fft2_centered, fourier_crop
    from napari_cryohet.stages.simulate.hypermolecule_toys import pretzel_blobs, pretzel_symmetries

    working = working_px or box
    ds, t = _pretzel_data(n, box, apix, snr)
    sigma, scale, rot, w = t["sigma"], t["scale"], t["rot"], t["w"]
    truth = np.asarray(ds.ground_truth["state"], dtype=np.float64)
    y = fourier_crop(fft2_centered(t["images"]), working).reshape(n, -1)
    delta = torch.zeros(n, box, box)  # the particle's CTF × shift phase ramp, as the simulator applies them
    delta[:, box // 2, box // 2] = 1.0
    h = apply_ctf_and_shift(delta, apix=apix, ctf=ds.ctf.to_torch(dtype=torch.float32), shifts_a=t["shifts"])
    h = fourier_crop(fft2_centered(h), working).reshape(n, -1)
    yh, h2 = y.conj() * h, h.abs().square()
    axis = (np.arange(per_knob) + 0.5) / per_knob
    grid = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    blobs = torch.as_tensor(pretzel_blobs(grid), dtype=torch.float32)  # (S, 30, 3)
    others = random_rotations(n_rotations, generator=torch.Generator().manual_seed(1), dtype=torch.float32)

    def spectra(xyz: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        p = project_gaussian_atoms(xyz, r, d=box, apix=apix, sigma_a=sigma, weights=w)
        return fourier_crop(fft2_centered(p), working).reshape(len(r), -1)

    def own(s: int, r: torch.Tensor) -> torch.Tensor:  # each particle at its own orientation r[i], state s
        q = spectra(blobs[s].expand(n, -1, -1), r)
        return _fitted_log_lik((yh * q).sum(-1).real, (h2 * q.abs().square()).sum(-1), scale)

    def candidates():  # (state index, first orientation's index, orientations (n, c, 3, 3) or (c, 3, 3),
        for s in range(len(grid)):  # log-likelihoods (n, c)); the true orientations come last, index −1
            for start in range(0, n_rotations, 1000):
                r = others[start:start + 1000]
                q = spectra(blobs[s], r)
                yield s, start, r, _fitted_log_lik((yh @ q.T).real, h2 @ q.abs().square().T, scale)
            yield s, -1, rot[:, None], own(s, rot)[:, None]

    def _refined_states(k: int) -> dict:
        # the orientation posterior's modes climbed to their peaks (_laplace_states), from the k best
        # distinct grid orientations, and from those plus the true orientation
        arms = _pretzel_blobs_torch()

        def score(p: torch.Tensor, tau: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
            q = spectra(arms(tau), r)
            return _fitted_log_lik((yh[p] * q).sum(-1).real, (h2[p] * q.abs().square()).sum(-1), scale)

        t0 = time.perf_counter()
        symmetries = pretzel_symmetries()
        starts, start_states = _distinct_starts(per_rot[:, :-1], per_rot_state[:, :-1], others,
                                                [g for g, _, _ in symmetries], k)
        grid_t = torch.as_tensor(grid, dtype=torch.float32)
        grid_modes = _laplace_states(score, grid, starts, grid_t[start_states])
        true_mode = _laplace_states(score, grid, rot[:, None], grid_t[per_rot_state[:, -1:]])
        with_truth = {key: torch.cat([grid_modes[key], true_mode[key]], 1) for key in grid_modes}
        res = {"refine_starts": k}
        for key, modes in (("refined", grid_modes), ("refined_with_truth", with_truth)):
            ref, mean, share = _mode_average(modes, symmetry_aligned)
            tau, err = symmetry_aligned(mean, ref, rot.double().numpy())
            res["rho_" + key] = [float(abs(spearmanr(tau[:, j], truth[:, j])[0])) for j in range(2)]
            res["within_20deg_" + key] = float(np.mean(err < 20))
            res["heaviest_mode_share_" + key] = float(np.median(share))
        res["uncurved_modes"] = float(1 - with_truth["curved"].float().mean())
        res["refine_seconds"] = time.perf_counter() - t0
        return res

    best = torch.full((n,), -math.inf, dtype=torch.float64)
    best_rot, best_state = rot.clone(), np.zeros(n, dtype=int)
    grid_best, grid_rot = best.clone(), rot.clone()  # the same over the random orientations only
    # per particle and orientation, the best arm states' score and grid index (starts for the refinement)
    per_rot = torch.full((n, n_rotations + 1) if refine_starts else (0, 0), -math.inf, dtype=torch.float64)
    per_rot_state = torch.zeros(per_rot.shape, dtype=torch.long)
    for s, start, r, ll in candidates():
        if refine_starts:
            cols = slice(start, start + ll.shape[1]) if start >= 0 else slice(n_rotations, n_rotations + 1)
            higher = ll > per_rot[:, cols]
            per_rot[:, cols] = torch.where(higher, ll, per_rot[:, cols])
            per_rot_state[:, cols][higher] = s
        v, j = ll.max(1)
        better = v > best
        picked = r[j] if r.dim() == 3 else r[torch.arange(n), j]
        best, best_rot[better], best_state[better.numpy()] = torch.where(better, v, best), picked[better], s
        if r.dim() == 3:
            better = v > grid_best
            grid_best, grid_rot[better] = torch.where(better, v, grid_best), picked[better]
    posterior = torch.softmax(torch.stack([own(s, best_rot) for s in range(len(grid))], 1), 1).numpy()

    # The states' posterior mean over every candidate, orientations included: each candidate's
    # states are first carried into the frame of the particle's best orientation by the
    # symmetry that brings the candidate nearest to it (as a method must, without the truth).
    mates = torch.stack([best_rot @ torch.as_tensor(g, dtype=torch.float32)
                         for g, _, _ in pretzel_symmetries()], 1).reshape(n, 4, 9)
    mapped = torch.as_tensor(np.stack([mapped_states(grid, rev, swap) for _, rev, swap in pretzel_symmetries()],
                                      1))  # (S, 4, 2)
    # running (max, Σ e^(ℓ − max), Σ e^(ℓ − max) τ) over the random grid and over the true orientation
    sums = {key: [torch.full((n,), -math.inf, dtype=torch.float64), torch.zeros(n, dtype=torch.float64),
                  torch.zeros(n, 2, dtype=torch.float64)] for key in ("grid", "own")}
    for s, _, r, ll in candidates():
        acc = sums["grid" if r.dim() == 3 else "own"]
        flat = r.reshape(*r.shape[:-2], 9)
        trace = (torch.einsum("nkf,cf->nkc", mates, flat) if r.dim() == 3
                 else torch.einsum("nkf,ncf->nkc", mates, flat))  # tr(gᵀ R̂ᵀ r): larger is nearer
        nearest = trace.argmax(1)  # (n, c)
        top = torch.maximum(acc[0], ll.max(1).values)
        shrink, e = torch.exp(acc[0] - top), torch.exp(ll - top[:, None])
        per_mate = torch.stack([(e * (nearest == k)).sum(1) for k in range(4)], 1)  # (n, 4)
        acc[:] = top, acc[1] * shrink + e.sum(1), acc[2] * shrink[:, None] + per_mate @ mapped[s]
    (gtop, gtotal, gmoment), (otop, ototal, omoment) = sums["grid"], sums["own"]
    top = torch.maximum(gtop, otop)
    gw, ow = torch.exp(gtop - top), torch.exp(otop - top)
    marginal = ((gmoment * gw[:, None] + omoment * ow[:, None]) / (gtotal * gw + ototal * ow)[:, None]).numpy()
    marginal_grid = (gmoment / gtotal[:, None]).numpy()

    out = {"box_px": box, "apix": apix, "working_px": working, "n_particles": n, "n_rotations": n_rotations,
           "states_per_knob": per_knob}
    est = best_rot.double().numpy()
    for key, states in (("rho_map", grid[best_state]), ("rho_posterior_mean", posterior @ grid),
                        ("rho_marginal", marginal), ("rho_marginal_random_only", marginal_grid)):
        tau, err = symmetry_aligned(states, est, rot.double().numpy())
        near = err < 20
        out[key] = [float(abs(spearmanr(tau[:, k], truth[:, k])[0])) for k in range(2)]
        out[key + "_within_20deg"] = [float(abs(spearmanr(tau[near, k], truth[near, k])[0])) for k in range(2)]
    out["within_20deg"] = float(np.mean(near))
    out["within_20deg_random_only"] = float(np.mean(symmetry_aligned(grid[best_state], grid_rot.double().numpy(),
                                                                     rot.double().numpy())[1] < 20))
    out["rotation_error_deg_median"] = float(np.median(err))
    if refine_starts:
        out.update(_refined_states(refine_starts))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="12 particles, 400 orientations, 64-px pretzel only")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--cases", default="adk,pretzel,pretzel_states")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    out: dict = {"quick": bool(args.quick)}
    t0 = time.perf_counter()
    if "adk" in cases:
        out["adk"] = adk_case(12 if args.quick else 1000)
    if "pretzel" in cases:
        sizes = [(64, 3.0, None)] if args.quick else [(64, 3.0, None), (64, 3.0, 32), (128, 1.5, None)]
        out["pretzel"] = [pretzel_case(12 if args.quick else 30, box, apix, 400 if args.quick else 3000, working)
                          for box, apix, working in sizes]
    if "pretzel_states" in cases:
        sizes = [(64, 3.0)] if args.quick else [(64, 3.0), (128, 1.5)]
        out["pretzel_states"] = [pretzel_states_case(60 if args.quick else 1000, box, apix,
                                                     400 if args.quick else 5000, 5 if args.quick else 11,
                                                     refine_starts=(3 if args.quick else 16) if box == 64 else 0)
                                 for box, apix in sizes]
    out["seconds"] = time.perf_counter() - t0
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    parts = []
    if "adk" in out:
        a = out["adk"]
        m = a["map_with_prior_error_deg"]
        parts.append(f"AdK refinement data: best single-image orientation {a['map_error_deg']['mean']:.2f}° from "
                     f"the truth, with the 4° prior ≈ {a['bayes_floor_deg']:.2f}°; MAP from a start "
                     f"{a['start_error_deg']['mean']:.2f}° off: {m['mean']:.2f}° ± {m['standard_error']:.2f}° "
                     f"({m['mean'] / a['start_error_deg']['mean']:.3f} of the start; target 0.5)")
    for r in out.get("pretzel", []):
        size = f"{r['box_px']} px" + (f" → {r['working_px']}" if r["working_px"] != r["box_px"] else "")
        parts.append(f"pretzel {size}: true orientation wins for {100 * r['exact']['wins']:.0f} % "
                     f"(exact map, margin {r['exact']['margin_median_nats']:.1f} nats), "
                     f"{100 * r['state_averaged']['wins']:.0f} % (state-averaged map)")
    for r in out.get("pretzel_states", []):
        parts.append(f"pretzel {r['box_px']} px → {r['working_px']}, orientation × states searched with the exact "
                     f"model: best orientation within 20° for {100 * r['within_20deg']:.0f} % "
                     f"({100 * r['within_20deg_random_only']:.0f} % without the true one among the candidates), "
                     f"|ρ| of the states there {r['rho_posterior_mean'][0]:.2f} / {r['rho_posterior_mean'][1]:.2f}, "
                     f"averaged over orientations {r['rho_marginal'][0]:.2f} / {r['rho_marginal'][1]:.2f} "
                     f"({r['rho_marginal_random_only'][0]:.2f} / {r['rho_marginal_random_only'][1]:.2f})"
                     + (f", every mode at its peak {r['rho_refined_with_truth'][0]:.2f} / "
                        f"{r['rho_refined_with_truth'][1]:.2f} ({r['rho_refined'][0]:.2f} / {r['rho_refined'][1]:.2f})"
                        if "rho_refined" in r else ""))
    print("SUMMARY pose_information" + (" --quick" if args.quick else "") + ": " + "; ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
