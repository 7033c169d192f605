"""Local pose refinement against a reference map (a local grid on SO(3) × R², then gradient steps).

The thesis refines each cluster's poses with Frealign against that cluster's map, with a
*local* search only (Silvera Coeff 2025, §4.1.5). Here the search is done in torch, batched
over particles, on CPU or CUDA:

1. **Local grid.** Around the current pose ``(R₀, s₀)`` the candidates are
   ``R = exp([ω]ₓ) R₀`` for ``ω`` on a cubic grid of axis-angle vectors inside the ball
   ``|ω| ≤ 3σ_angle`` (``n_angle_steps`` values per axis), and shifts ``s = s₀ + δ`` with
   ``δ`` on a ``n_shift_steps²`` grid inside the box ``|δ_x|, |δ_y| ≤ 3σ_shift``; then
   ``n_refine_levels`` pattern-search steps (a 3³ × 5² stencil around each particle's best
   point, its spacing halved whenever the best point stays put). Each
   rotation costs one Fourier slice; every shift of that rotation is scored at once by a
   matrix product with the shift phases (the shift is a Fourier phase, so
   ``|Y − M·φ|² = |Y|² + |M|² − 2 Re⟨M φ, Y⟩``).
2. **Gradient steps** (``n_gradient_steps > 0``): from the best grid point, Adam on
   ``(ω, δ)`` with autograd through :func:`~napari_cryohet.core.slice.extract_central_slices`
   (which differentiates in the rotations), projected back into the search box after
   every step (Adam: each particle's update depends on its own gradients only); a
   particle keeps its best iterate, which is never worse than its grid optimum.

**Score.** The log-posterior of the forward model ``y = CTF · T_{−s}(P_R V) + n``
(docs/design.md, "Projection and the forward model"; :mod:`napari_cryohet.core.projection`)
with white Gaussian noise of variance ``σ²`` per Fourier pixel, over the pixels with
``|k| ≤ apix / max_resolution_a`` (the caller marches the limit, e.g. 8 → 6 → 4 Å), plus
the Gaussian prior on the change of pose — RELION's ``--sigma_ang`` and cryoSPARC's local
refinement prior::

    score = −Σ_k |Y(k) − CTF(k)·S_R(k)·e^{2πi k·s}|² / (2σ²) − |ω|² / (2σ_angle²) − |s − s₀|² / (2σ_shift²)

where ``S_R`` is the map's projection in pose ``R`` computed exactly as
:func:`~napari_cryohet.core.projection.project_volume_fourier` does (padding ×2, gridding
correction, central slice, crop to ``D``), so noiseless projections of the map score
exactly 0 in the data term at the true pose. ``|ω|`` is the geodesic angle between ``R``
and ``R₀``. The map must be in the units of the images' voxel sums (what
:func:`~napari_cryohet.core.reconstruct.reconstruct_volume` returns). Without a given
``noise_variance`` each particle's ``σ²`` is the mean residual power at its starting pose —
an upper bound of the noise, which keeps the prior from being overruled by a poor start.

Particles outside ``mask`` (in no cluster) keep their pose bit for bit. Gold-standard
refinement (:func:`refine_half_sets`) refines half 1 against map A only and half 2 against
map B only; a map whose half has no particles is never read.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from napari_cryohet.core.ctf import CTF_KEYS, compute_ctf_2d
from napari_cryohet.core.device import select_device
from napari_cryohet.core.fft import fft2_centered, fftfreq_grid_2d
from napari_cryohet.core.projection import project_transform, volume_transform

__all__ = ["RefinedPoses", "refine_poses", "refine_half_sets", "axis_angle_to_matrix", "geodesic_angle_deg"]


@dataclass
class RefinedPoses:
    """Result of :func:`refine_poses` (CPU tensors, float64 poses).

    Attributes
    ----------
    rotations
        ``(N, 3, 3)`` refined rotations (``core.rotation`` convention).
    shifts_a
        ``(N, 2)`` refined RELION origins in Å.
    scores
        ``(N,)`` log-posterior at the refined pose (see the module docstring); NaN for
        particles outside the mask.
    angle_moved_deg
        ``(N,)`` geodesic angle between the starting and the refined rotation (0 outside the mask).
    shift_moved_a
        ``(N,)`` length of the change of shift in Å (0 outside the mask).
    refined
        ``(N,)`` bool: which particles were refined (the mask).
    """

    rotations: torch.Tensor
    shifts_a: torch.Tensor
    scores: torch.Tensor
    angle_moved_deg: torch.Tensor
    shift_moved_a: torch.Tensor
    refined: torch.Tensor


def axis_angle_to_matrix(omega: torch.Tensor) -> torch.Tensor:
    """``(..., 3)`` axis-angle vectors (radians) → ``(..., 3, 3)`` rotations ``exp([ω]ₓ)``.

    Uses :func:`torch.linalg.matrix_exp` of the skew matrix (differentiable, exact at ω = 0).
    """
    x, y, z = omega.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(omega.shape[:-1] + (3, 3))
    return torch.linalg.matrix_exp(skew)


def geodesic_angle_deg(r1: torch.Tensor, r2: torch.Tensor) -> torch.Tensor:
    """``(...)`` angle in degrees of the rotation ``r1 r2ᵀ`` (the geodesic distance on SO(3))."""
    rel = r1.to(torch.float64) @ r2.to(torch.float64).transpose(-1, -2)
    cos = ((rel.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.arccos(cos))


def _model_spectra(volume_ft: torch.Tensor, rotations: torch.Tensor, d: int, pix: torch.Tensor) -> torch.Tensor:
    """``(B, P)`` centred ``D``-grid spectra of the projections, at the flat pixels ``pix``."""
    return fft2_centered(project_transform(volume_ft, rotations, d)).reshape(-1, d * d)[:, pix]


def _angle_grid(sigma_rad: float, n_steps: int, dtype) -> torch.Tensor:
    """``(G, 3)`` axis-angle vectors on a cubic grid inside the ball ``|ω| ≤ 3σ`` (0 first)."""
    if n_steps <= 1 or sigma_rad == 0:
        return torch.zeros(1, 3, dtype=dtype)
    v = torch.linspace(-3 * sigma_rad, 3 * sigma_rad, n_steps, dtype=dtype)
    g = torch.stack(torch.meshgrid(v, v, v, indexing="ij"), -1).reshape(-1, 3)
    g = g[g.norm(dim=-1) <= 3 * sigma_rad * (1 + 1e-9)]
    order = torch.argsort(g.norm(dim=-1), stable=True)
    return g[order]


def _shift_grid(sigma_px: float, n_steps: int, dtype) -> torch.Tensor:
    """``(H, 2)`` shift offsets in px on a square grid inside ``[−3σ, 3σ]²`` (0 first)."""
    if n_steps <= 1 or sigma_px == 0:
        return torch.zeros(1, 2, dtype=dtype)
    v = torch.linspace(-3 * sigma_px, 3 * sigma_px, n_steps, dtype=dtype)
    g = torch.stack(torch.meshgrid(v, v, indexing="ij"), -1).reshape(-1, 2)
    order = torch.argsort(g.norm(dim=-1), stable=True)
    return g[order]


def _phases(k: torch.Tensor, shifts_px: torch.Tensor) -> torch.Tensor:
    """``(..., P)`` ``exp(+2πi k·s)`` for ``k`` (P, 2) cycles/px and ``shifts_px`` (..., 2).

    The model spectrum of a particle with origin ``s`` is ``CTF·S·exp(+2πi k·s)``
    (``apply_ctf_and_shift`` translates by ``−s``).
    """
    phase = 2 * torch.pi * (shifts_px[..., None, 0] * k[:, 0] + shifts_px[..., None, 1] * k[:, 1])
    return torch.polar(torch.ones_like(phase), phase)


def _check_ctf(ctf, n: int) -> None:
    if ctf is None:
        return
    unknown = set(ctf) - set(CTF_KEYS)
    if unknown:
        raise ValueError(f"ctf has unknown keys {sorted(unknown)}; expected {CTF_KEYS}")
    for key, value in ctf.items():
        t = torch.as_tensor(value)
        if t.dim() > 0 and t.shape[0] != n:
            raise ValueError(f"ctf[{key!r}] has {t.shape[0]} entries for {n} particles")


def _ctf_batch(ctf, idx: torch.Tensor, d: int, apix: float, device, dtype, pix) -> torch.Tensor | None:
    if ctf is None:
        return None
    params = {}
    for key, value in ctf.items():
        t = torch.as_tensor(value, dtype=dtype)
        params[key] = (t[idx.cpu()] if t.dim() > 0 else t).to(device)
    c = compute_ctf_2d(d, apix, device=device, **params).expand(idx.shape[0], d, d)
    return c.reshape(idx.shape[0], d * d)[:, pix].to(dtype)


def refine_poses(
    images,
    rotations,
    shifts_a,
    ctf: dict | None,
    reference_map,
    *,
    apix: float,
    sigma_angle_deg: float,
    sigma_shift_a: float,
    max_resolution_a: float,
    mask=None,
    n_angle_steps: int = 5,
    n_shift_steps: int = 7,
    n_refine_levels: int = 6,
    n_gradient_steps: int = 30,
    noise_variance: float | None = None,
    pad_factor: int = 2,
    device: str | torch.device | None = None,
    batch_size: int = 32,
    progress: Callable[[float, str], None] | None = None,
    cancel: Callable[[], None] | None = None,
) -> RefinedPoses:
    """Refine each particle's pose locally against ``reference_map`` (Silvera Coeff 2025, §4.1.5).

    Parameters
    ----------
    images
        ``(N, D, D)`` real particle images (tensor, ndarray or lazy stack with numpy indexing).
    rotations
        ``(N, 3, 3)`` current poses (``core.rotation`` convention).
    shifts_a
        ``(N, 2)`` current RELION origins in Å (``core.projection`` convention).
    ctf
        ``None`` or a dict of ``(N,)`` CTF parameters keyed like ``compute_ctf_2d``.
    reference_map
        ``(D, D, D)`` real map indexed ``[z, y, x]``, in the units of the images' voxel sums.
    apix
        Pixel size in Å.
    sigma_angle_deg, sigma_shift_a
        Widths of the Gaussian prior on the change of rotation (geodesic angle, degrees) and
        of shift (Å, per axis). The search stays inside ``|ω| ≤ 3σ_angle`` and
        ``|δ_x|, |δ_y| ≤ 3σ_shift`` of the starting pose. 0 freezes that part of the pose.
    max_resolution_a
        Resolution limit in Å: only Fourier pixels with ``|k| ≤ 1/max_resolution_a`` (and
        inside Nyquist) are compared.
    mask
        ``(N,)`` bool; particles where it is False keep their pose exactly (default: all refined).
    n_angle_steps, n_shift_steps
        Grid values per axis across ``[−3σ, 3σ]`` for the axis-angle and the shift grids.
    n_refine_levels
        Pattern-search iterations after the first grid: a 3³ rotation × 5² shift grid around
        each particle's best point, with the first grid's spacing, halved whenever the best
        point did not move.
    n_gradient_steps
        Adam steps after the grids (0: grids only).
    noise_variance
        White noise variance per Fourier pixel (of the centred, unnormalised ``fft2``); None
        estimates it per particle as the mean residual power at the starting pose — an upper
        bound that, on clean data, lets the prior pull the optimum back towards the start by
        about ``σ²_data/(σ²_data + σ²_prior)`` of the error; pass the known noise variance
        when there is one (for noiseless test data, a tiny one).
    pad_factor
        Zero padding of the map before its transform (as in ``project_volume_fourier``).
    device
        ``None``/"auto" → :func:`~napari_cryohet.core.device.select_device`.
    batch_size
        Particles per batch (the grid holds ``batch_size × n_rotations`` slices at once).
    progress
        ``progress(fraction, message)`` after each batch.
    cancel
        Called once per batch; it raises to stop (e.g. ``lambda: check_cancel(token)``).

    Returns
    -------
    :class:`RefinedPoses`.
    """
    dev = select_device(device)
    n = int(images.shape[0])
    if len(images.shape) != 3 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"images must have shape (N, D, D), got {tuple(images.shape)}")
    d = int(images.shape[-1])
    rot0 = torch.as_tensor(rotations).detach().to("cpu", torch.float64)
    if rot0.shape != (n, 3, 3):
        raise ValueError(f"rotations must have shape ({n}, 3, 3), got {tuple(rot0.shape)}")
    sh0 = torch.as_tensor(shifts_a).detach().to("cpu", torch.float64)
    if sh0.shape != (n, 2):
        raise ValueError(f"shifts_a must have shape ({n}, 2), got {tuple(sh0.shape)}")
    if float(apix) <= 0:
        raise ValueError(f"apix must be positive, got {apix}")
    if sigma_angle_deg < 0 or sigma_shift_a < 0:
        raise ValueError("sigma_angle_deg and sigma_shift_a must be ≥ 0")
    if max_resolution_a <= 0:
        raise ValueError(f"max_resolution_a must be positive, got {max_resolution_a}")
    if int(pad_factor) < 1:
        raise ValueError(f"pad_factor must be an integer ≥ 1, got {pad_factor}")
    _check_ctf(ctf, n)
    if mask is None:
        mask_t = torch.ones(n, dtype=torch.bool)
    else:
        mask_t = torch.as_tensor(mask, dtype=torch.bool).cpu()
        if mask_t.shape != (n,):
            raise ValueError(f"mask must have shape ({n},), got {tuple(mask_t.shape)}")

    out_rot = rot0.clone()
    out_sh = sh0.clone()
    scores = torch.full((n,), float("nan"), dtype=torch.float64)
    angle_moved = torch.zeros(n, dtype=torch.float64)
    shift_moved = torch.zeros(n, dtype=torch.float64)
    todo = torch.nonzero(mask_t).squeeze(1)
    if todo.numel() == 0:  # the map is not read when nobody is refined
        return RefinedPoses(out_rot, out_sh, scores, angle_moved, shift_moved, mask_t.clone())

    vol = torch.as_tensor(reference_map)
    if vol.shape != (d, d, d):
        raise ValueError(f"reference_map must have shape ({d}, {d}, {d}), got {tuple(vol.shape)}")
    if not bool(torch.isfinite(vol).all()):
        raise ValueError("reference_map contains non-finite values")
    dtype = torch.float64 if vol.dtype == torch.float64 else torch.float32
    volume_ft = volume_transform(vol.to(dev, dtype), pad_factor=int(pad_factor))

    k_grid = fftfreq_grid_2d(d, device=dev, dtype=dtype).reshape(-1, 2)  # (D², 2) cycles/px
    k_max = min(float(apix) / float(max_resolution_a), 0.5)
    pix = torch.nonzero(k_grid.norm(dim=-1) <= k_max).squeeze(1)  # (P,)
    if pix.numel() < 2:
        raise ValueError(f"max_resolution_a={max_resolution_a} Å leaves no Fourier pixel to compare")
    k = k_grid[pix]  # (P, 2)

    sig_a = math.radians(float(sigma_angle_deg))
    sig_s = float(sigma_shift_a) / float(apix)  # px
    omegas = _angle_grid(sig_a, int(n_angle_steps), torch.float64).to(dev, dtype)  # (G, 3)
    deltas = _shift_grid(sig_s, int(n_shift_steps), torch.float64).to(dev, dtype)  # (H, 2) px
    step_a = 6 * sig_a / max(1, int(n_angle_steps) - 1)
    step_s = 6 * sig_s / max(1, int(n_shift_steps) - 1)
    unit3 = torch.stack(torch.meshgrid(*[torch.tensor([-1.0, 0.0, 1.0], device=dev, dtype=dtype)] * 3,
                                       indexing="ij"), -1).reshape(-1, 3)  # (27, 3)
    unit2 = torch.stack(torch.meshgrid(*[torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0], device=dev, dtype=dtype)] * 2,
                                       indexing="ij"), -1).reshape(-1, 2)  # (25, 2)

    bs = max(1, int(batch_size))
    for b_start in range(0, todo.numel(), bs):
        if cancel is not None:
            cancel()
        idx = todo[b_start:b_start + bs]  # (b,)
        b = idx.numel()
        img = torch.as_tensor(images[idx.numpy()] if not isinstance(images, torch.Tensor) else images[idx])
        y = fft2_centered(img.to(dev, dtype)).reshape(b, d * d)[:, pix]  # (b, P)
        c = _ctf_batch(ctf, idx, d, float(apix), dev, dtype, pix)  # (b, P) or None
        r0 = rot0[idx].to(dev, dtype)  # (b, 3, 3)
        s0_px = (sh0[idx] / float(apix)).to(dev, dtype)  # (b, 2)
        with torch.no_grad():
            if noise_variance is None:  # residual power at the starting pose
                m0 = _model_spectra(volume_ft, r0, d, pix)
                m0 = (m0 * c if c is not None else m0) * _phases(k, s0_px)
                var = ((y - m0).abs() ** 2).mean(-1).clamp_min(1e-12 * (y.abs() ** 2).mean(-1) + 1e-30)
            else:
                var = torch.full((b,), float(noise_variance), device=dev, dtype=dtype)
            data = (y, c, k, pix, d, r0, s0_px, var, sig_a, sig_s)
            # --- the ±3σ grid, then finer grids (half the step each level) around the best point
            zero3 = torch.zeros(b, 3, device=dev, dtype=dtype)
            zero2 = torch.zeros(b, 2, device=dev, dtype=dtype)
            om_best, de_best, best_score = _score_grid(volume_ft, data, zero3, zero2, omegas, deltas)
            # pattern search: a particle whose best point moved keeps its step, else halves it
            fa = torch.full((b, 1, 1), step_a, device=dev, dtype=dtype)
            fs = torch.full((b, 1, 1), step_s, device=dev, dtype=dtype)
            for _ in range(int(n_refine_levels)):
                om_l, de_l, sc_l = _score_grid(volume_ft, data, om_best, de_best, unit3 * fa, unit2 * fs)
                better = sc_l > best_score
                om_best = torch.where(better[:, None], om_l, om_best)
                de_best = torch.where(better[:, None], de_l, de_best)
                best_score = torch.where(better, sc_l, best_score)
                keep = better[:, None, None]
                fa = torch.where(keep, fa, fa / 2)
                fs = torch.where(keep, fs, fs / 2)

        # --- gradient steps from the grid optimum, projected back into the ±3σ box
        if int(n_gradient_steps) > 0:
            om_g, de_g, sc_g = _gradient_refine(
                volume_ft, y, c, k, pix, d, r0, s0_px, var, om_best, de_best,
                sig_a, sig_s, int(n_gradient_steps),
            )
            better = sc_g > best_score
            om_best = torch.where(better[:, None], om_g, om_best)
            de_best = torch.where(better[:, None], de_g, de_best)
            best_score = torch.where(better, sc_g, best_score)

        om64 = om_best.detach().to("cpu", torch.float64)
        out_rot[idx] = axis_angle_to_matrix(om64) @ rot0[idx]
        out_sh[idx] = sh0[idx] + de_best.detach().to("cpu", torch.float64) * float(apix)
        scores[idx] = best_score.detach().to("cpu", torch.float64)
        angle_moved[idx] = torch.rad2deg(om64.norm(dim=-1))
        shift_moved[idx] = (out_sh[idx] - sh0[idx]).norm(dim=-1)
        if progress is not None:
            progress(min(1.0, (b_start + b) / todo.numel()), f"local refinement {b_start + b}/{todo.numel()}")
    return RefinedPoses(out_rot, out_sh, scores, angle_moved, shift_moved, mask_t.clone())


def _score_grid(volume_ft, data, om_centre, de_centre, om_offsets, de_offsets):
    """Best of the candidates ``ω = ω_c + offset`` × ``δ = δ_c + offset`` of each particle.

    Candidates are pulled into the ±3σ search box first. One Fourier slice per rotation;
    all shifts of a rotation are scored by one product with the shift phases, using
    ``|Y − M φ|² = |Y|² + |M|² − 2 Re⟨M φ, Y⟩``. Returns ``(b, 3)``, ``(b, 2)``, ``(b,)``.
    """
    y, c, k, pix, d, r0, s0_px, var, sig_a, sig_s = data
    b, n_g, n_h = y.shape[0], om_offsets.shape[-2], de_offsets.shape[-2]
    om = om_centre[:, None, :] + om_offsets.expand(b, -1, -1)  # (b, G, 3)
    de = de_centre[:, None, :] + de_offsets.expand(b, -1, -1)  # (b, H, 2)
    om, de = _project_box(om, de, sig_a, sig_s)
    rot = (axis_angle_to_matrix(om) @ r0[:, None]).reshape(-1, 3, 3)  # (b·G, 3, 3)
    m = _model_spectra(volume_ft, rot, d, pix).reshape(b, n_g, -1)  # (b, G, P)
    if c is not None:
        m = m * c[:, None, :]
    mp = m * _phases(k, s0_px)[:, None, :]  # model at the starting shift
    dph = _phases(k, de)  # (b, H, P)
    cross = torch.einsum("bgp,bhp->bgh", mp.conj() * y[:, None, :], dph.conj()).real  # (b, G, H)
    norm_m = (mp.abs() ** 2).sum(-1)  # (b, G)
    norm_y = (y.abs() ** 2).sum(-1)  # (b,)
    post = -(norm_y[:, None, None] + norm_m[:, :, None] - 2 * cross) / (2 * var[:, None, None])
    if sig_a > 0:
        post = post - 0.5 * ((om ** 2).sum(-1) / sig_a**2)[:, :, None]
    if sig_s > 0:
        post = post - 0.5 * ((de ** 2).sum(-1) / sig_s**2)[:, None, :]
    flat = post.reshape(b, -1)
    best = flat.argmax(-1)
    ar = torch.arange(b, device=y.device)
    return om[ar, best // n_h], de[ar, best % n_h], flat[ar, best]


def _posterior(volume_ft, y, c, k, pix, d, r0, s0_px, var, om, de, sig_a, sig_s) -> torch.Tensor:
    """``(b,)`` log-posterior of the poses ``exp([ω]ₓ) R₀``, ``s₀ + δ`` (differentiable)."""
    rot = axis_angle_to_matrix(om) @ r0
    m = _model_spectra(volume_ft, rot, d, pix)  # (b, P)
    if c is not None:
        m = m * c
    m = m * _phases(k, s0_px + de)
    score = -((y - m).abs() ** 2).sum(-1) / (2 * var)
    if sig_a > 0:
        score = score - 0.5 * (om ** 2).sum(-1) / sig_a**2
    if sig_s > 0:
        score = score - 0.5 * (de ** 2).sum(-1) / sig_s**2
    return score


def _project_box(om: torch.Tensor, de: torch.Tensor, sig_a: float, sig_s: float):
    """Pull ``ω`` into the ball ``|ω| ≤ 3σ_angle`` and ``δ`` into the box ``|δ_i| ≤ 3σ_shift``."""
    norm = om.norm(dim=-1, keepdim=True)
    lim = 3 * sig_a
    om = torch.where(norm > lim, om * (lim / norm.clamp_min(1e-30)), om)
    de = de.clamp(-3 * sig_s, 3 * sig_s)
    return om, de


def _gradient_refine(volume_ft, y, c, k, pix, d, r0, s0_px, var, om_start, de_start, sig_a, sig_s, n_steps):
    """Adam on the summed negative log-posterior, which is independent per particle.

    Adam's update of each coordinate depends only on that coordinate's gradient history,
    so each particle's ``(ω, δ)`` follows its own objective (an L-BFGS line search on the
    sum would couple them). Parameters are scaled by the prior widths (``ω/σ_angle``,
    ``δ/σ_shift``); the step falls from 0.1σ to 0 on a cosine schedule, and the best
    iterate of each particle is kept.
    """
    scale_a = sig_a if sig_a > 0 else 0.0
    scale_s = sig_s if sig_s > 0 else 0.0
    ua = (om_start / scale_a if scale_a > 0 else torch.zeros_like(om_start)).clone().requires_grad_(scale_a > 0)
    us = (de_start / scale_s if scale_s > 0 else torch.zeros_like(de_start)).clone().requires_grad_(scale_s > 0)
    params = [p for p in (ua, us) if p.requires_grad]
    best_om, best_de = om_start.clone(), de_start.clone()
    best = torch.full_like(var, -torch.inf)
    if not params:
        return best_om, best_de, best
    lr0 = 0.1
    opt = torch.optim.Adam(params, lr=lr0)
    for step in range(n_steps + 1):
        with torch.no_grad():
            om, de = _project_box(ua * scale_a, us * scale_s, sig_a, sig_s)
            ua.copy_(om / scale_a if scale_a > 0 else ua)
            us.copy_(de / scale_s if scale_s > 0 else us)
        score = _posterior(volume_ft, y, c, k, pix, d, r0, s0_px, var, ua * scale_a, us * scale_s, sig_a, sig_s)
        with torch.no_grad():
            better = torch.isfinite(score) & (score > best)
            best = torch.where(better, score, best)
            best_om = torch.where(better[:, None], om, best_om)
            best_de = torch.where(better[:, None], de, best_de)
        if step == n_steps or not bool(torch.isfinite(score).all()):
            break
        for group in opt.param_groups:
            group["lr"] = lr0 * 0.5 * (1 + math.cos(math.pi * step / n_steps))
        opt.zero_grad()
        (-score.sum()).backward()
        opt.step()
    return best_om, best_de, best


def refine_half_sets(
    images,
    rotations,
    shifts_a,
    ctf: dict | None,
    half_sets,
    map_a,
    map_b,
    *,
    mask=None,
    **kwargs,
) -> RefinedPoses:
    """Gold-standard local refinement: half 1 against ``map_a`` only, half 2 against ``map_b`` only.

    Each half is refined by :func:`refine_poses` with the other half masked out, so no
    particle of half 1 is ever compared with map B (and vice versa); a map whose half has no
    particle to refine is never read (RELION's gold-standard refinement; Silvera Coeff
    2025, §2.7 and §4.1.5).

    Parameters
    ----------
    half_sets
        ``(N,)`` integers 1 or 2 (``rlnRandomSubset``).
    map_a, map_b
        ``(D, D, D)`` half-maps reconstructed from half 1 and half 2.
    mask
        ``(N,)`` bool; particles where it is False (in no cluster) keep their pose.
    **kwargs
        Passed to :func:`refine_poses` (``apix``, ``sigma_angle_deg``, ...). A ``progress``
        callback sees half 1 as [0, 0.5] and half 2 as [0.5, 1].
    """
    n = int(images.shape[0])
    halves = torch.as_tensor(half_sets).cpu().to(torch.long)
    if halves.shape != (n,):
        raise ValueError(f"half_sets must have shape ({n},), got {tuple(halves.shape)}")
    if bool(((halves != 1) & (halves != 2)).any()):
        raise ValueError("half_sets must contain only 1 and 2 (rlnRandomSubset)")
    base = torch.ones(n, dtype=torch.bool) if mask is None else torch.as_tensor(mask, dtype=torch.bool).cpu()
    if base.shape != (n,):
        raise ValueError(f"mask must have shape ({n},), got {tuple(base.shape)}")
    progress = kwargs.pop("progress", None)
    rot = torch.as_tensor(rotations).detach().to("cpu", torch.float64).clone()
    sh = torch.as_tensor(shifts_a).detach().to("cpu", torch.float64).clone()
    scores = torch.full((n,), float("nan"), dtype=torch.float64)
    angle_moved = torch.zeros(n, dtype=torch.float64)
    shift_moved = torch.zeros(n, dtype=torch.float64)
    for i, (half, ref) in enumerate(((1, map_a), (2, map_b))):
        sel = base & (halves == half)
        if not bool(sel.any()):
            continue  # this half's map is never touched

        def sub_progress(fraction, message, _i=i):
            if progress is not None:
                progress(0.5 * (_i + fraction), f"half {_i + 1}: {message}")

        res = refine_poses(images, rotations, shifts_a, ctf, ref, mask=sel, progress=sub_progress, **kwargs)
        rot[sel] = res.rotations[sel]
        sh[sel] = res.shifts_a[sel]
        scores[sel] = res.scores[sel]
        angle_moved[sel] = res.angle_moved_deg[sel]
        shift_moved[sel] = res.shift_moved_a[sel]
    return RefinedPoses(rot, sh, scores, angle_moved, shift_moved, base.clone())
