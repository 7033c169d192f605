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
  without the particle's true orientation among the candidates.

    python benchmarks/pose_information.py [--quick] [--json PATH] [--cases adk,pretzel,pretzel_states]

``--quick``: 12 particles and 400 orientations per case (60 particles and a 5 × 5 state grid
for ``pretzel_states``), 64 px pretzel only (< 60 s). Full (one thread): 1 000 AdK particles (about 5 min),
30 pretzel particles × 3000 orientations at 64 px, 64 → 32 px and 128 px (about 50 min,
most of it at 128 px); ``pretzel_states``: 1 000 particles × 5 000 orientations × 11 × 11
states at 64 and 128 px (about 15 min).
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


def pretzel_states_case(n: int, box: int, apix: float, n_rotations: int, per_knob: int,
                        working_px: int | None = 32, snr: float = 1 / 30) -> dict:
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

    def candidates():  # (state index, orientations (n, c, 3, 3) or (c, 3, 3), log-likelihoods (n, c))
        for s in range(len(grid)):
            for start in range(0, n_rotations, 1000):
                r = others[start:start + 1000]
                q = spectra(blobs[s], r)
                yield s, r, _fitted_log_lik((yh @ q.T).real, h2 @ q.abs().square().T, scale)
            yield s, rot[:, None], own(s, rot)[:, None]

    best = torch.full((n,), -math.inf, dtype=torch.float64)
    best_rot, best_state = rot.clone(), np.zeros(n, dtype=int)
    grid_best, grid_rot = best.clone(), rot.clone()  # the same over the random orientations only
    for s, r, ll in candidates():
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
    for s, r, ll in candidates():
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
                                                     400 if args.quick else 5000, 5 if args.quick else 11)
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
                     f"({r['rho_marginal_random_only'][0]:.2f} / {r['rho_marginal_random_only'][1]:.2f})")
    print("SUMMARY pose_information" + (" --quick" if args.quick else "") + ": " + "; ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
