"""The hyper-molecule sampler: a composition of MCMC kernels on eq. 29 of 001_e1fd27914a9da292.txt.

One **sweep** of one chain (Remark 3 of 001 §2.5: a composition of kernels, each leaving
the posterior invariant once burn-in has ended):

1. per-particle Metropolis–Hastings blocks, batched over particles (independent given θ):
   states τ (reflected random walk in [0, 1]), pose (a small random turn, or with
   probability ``global_pose_probability`` a Haar-uniform jump), shift (Gaussian walk, Å)
   and contrast (Gaussian walk). Shift and contrast reuse the cached projection spectra
   ``CTF · FFT(Σ_z V)`` (only a phase ramp and a factor change, 001 §6). Before the local
   pose steps, a **global pose search** (:meth:`HyperMoleculeSampler._pose_search_setup`) lets
   every particle jump to one of ``pose_search_candidates`` fresh Haar-uniform orientations;
2. the map θ: ``theta_steps`` preconditioned MALA steps on all particles (001 eq. 17–19),
   or in the paper's *crude* mode (001 §5) a random particle subset whose variables alone
   are updated in step 1, then a preconditioned gradient step on θ from that subset.

Global pose search — why and how. From random poses, a random-walk or occasional uniform
proposal almost never lands in the narrow basin of the right orientation at SNR 1/30 (the
quick Run B stayed at a 101° median error). The paper's remedy was a homogeneous run first
(001 §5); RELION/cryoSPARC score each image against a grid of orientations. Here the two are
one exact MCMC move, a multiple-proposal Metropolis–Hastings step (Tjelmeland 2004, "Using
all Metropolis–Hastings proposals"; Calderhead 2014) with delayed acceptance (Christen & Fox
2005): per sweep, ``M`` orientations are drawn from the Haar measure (the pose prior), each
paired with ``G^s`` knob settings (a stratified grid of ``G = pose_search_states`` points per
knob with a random offset per sweep, so each point is a draw from the uniform state prior),
and projected once, shared by all particles, through the map **at those settings** — a
joint search over orientation × states, so that a particle whose states are wrong can still
find its orientation and vice versa (with one map averaged over the states, the homogeneous
map of the pose-only sweeps, a moving arm is blurred and the right orientation often scores
no better than wrong ones) — at the **low resolution**
``min(k_max, 1/pose_search_resolution_a)`` on a central crop of the spectrum (exact for
those frequencies, so a 32-px image is scored on ~16 px). A surrogate score
``ℓ̃_ij = a_i Re⟨CTF_i P_j, Y_i'⟩ − a_i² ‖CTF_i P_j‖²/2`` (noise-weighted, ``Y_i'`` the image
with its current shift undone) is two real matrix products ``(N × d²)(d² × M G^s)``.
Particle i picks one of {current, candidates} with probability ∝ ``exp ℓ̃`` (Gumbel-max on
the chain's stream) and accepts it with probability
``min(1, π(x') e^ℓ̃(x) / (π(x) e^ℓ̃(x')))``, ``x`` its orientation and states: the exact
posterior at the full mask corrects the surrogate: the
move leaves the posterior invariant whatever the surrogate, which only decides how useful
it is. ``pose_only_sweeps`` first sweeps update poses, shifts and contrast only (states and
map frozen): the homogeneous first stage of 001 §5, run on the starting map.

Frequency marching (001 §5): the likelihood compares only frequencies ``|k| ≤ k_max``;
``k_max`` grows linearly from ``1/start_resolution_a`` to ``1/final_resolution_a`` over the
first 60 % of each burn-in segment. The burn-in is ``1 + n_restarts`` segments: each restart
drops back to the starting resolution (the paper's substitute for tempering). In τ, the
state functions of degree above the current order have a zero preconditioner entry
(frozen at 0); the order grows from ``start_state_order`` to each component's
``state_order`` over the first half of the first segment.

Preconditioner of θ: the diagonal of the likelihood's curvature, exact for Gaussian blobs
because the projection of a blob has the same Fourier magnitude ``|ĝ(k)|`` wherever it is and
however it is turned: for coefficient ``a_kq`` of a component
``H_q = Σ_i a_i² P_q(τ_i)² Σ_k |CTF_i(k)|² |ĝ(k)|² / σ_k²`` (summed over the copies that share
it) plus the prior's ``1/s_a²``; ``A = 1/H``. Trajectory parameters use the Fisher estimate
``1/E[(∂ log p)²]`` (:class:`~napari_cryohet.core.mcmc.DiagonalPreconditioner`). The
preconditioner and all step sizes (:class:`~napari_cryohet.core.mcmc.AdaptiveStep`, per
particle for the MH blocks) adapt during burn-in only and are frozen after it.

After burn-in each sweep keeps a sample of θ (and running sums of each particle's τ);
the output maps are the mean and standard deviation of ``V(·, τ)`` over evenly thinned θ
samples on a τ grid (:meth:`HyperMoleculeSampler.volumes`).

Every random draw comes from the chain's own ``torch.Generator`` (stream ``c`` of the seed),
and :meth:`HyperMoleculeSampler.state_dict` holds everything a resumed run needs to
continue the same chains draw for draw.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch

from napari_cryohet.core.atoms import gaussian_profiles
from napari_cryohet.core.fft import fft2_centered, phase_shift_2d
from napari_cryohet.core.hypermolecule import HyperMolecule, evaluate_state_basis
from napari_cryohet.core.hypermolecule_posterior import (
    HyperMoleculePriors,
    ImageData,
    ParticleVariables,
    flatten_params,
    frequency_mask,
    image_log_likelihood,
    log_prior_particles,
    log_prior_theta,
    projection_spectra,
    shift_and_scale,
    theta_log_posterior_and_grad,
    unflatten_params,
)
from napari_cryohet.core.mcmc import (
    AcceptanceRecorder,
    AdaptiveStep,
    DiagonalPreconditioner,
    generator_states,
    make_generator,
    mala_step,
    metropolis_hastings_step,
    propose_gaussian,
    propose_rotation,
    propose_unit_interval,
    restore_generators,
)
from napari_cryohet.core.projection import project_gaussian_atoms
from napari_cryohet.core.rotation import random_rotations
from napari_cryohet.stages.hypermolecule.config import HyperMoleculeConfig

__all__ = ["HyperMoleculeSampler", "SweepPlan", "KERNELS"]

#: Names of the kernels whose acceptance is recorded.
KERNELS = ("tau", "pose_search", "pose", "shift", "contrast", "theta")
_TARGET = {"tau": 0.44, "pose": 0.3, "shift": 0.44, "contrast": 0.44, "theta": 0.574}
#: Largest cache of blob profiles kept per chain (bytes; :meth:`HyperMoleculeSampler._cached_profiles`).
PROFILE_CACHE_BYTES = 3 * 2**30
_CANDIDATE_CHUNK = 256  # candidate orientations projected at once (memory chunk·D·K)
_INITIAL_STEP = {"tau": 0.15, "pose": 0.1, "shift": 1.0, "contrast": 0.05}


@dataclass(frozen=True)
class SweepPlan:
    """What sweep ``sweep`` does: burn-in or sampling, its segment, ``max_frequency_per_a`` and
    the state-function ``order`` in force."""

    sweep: int
    burnin: bool
    segment: int
    max_frequency_per_a: float
    order: int


def _column_degrees(model: HyperMolecule, name: str) -> torch.Tensor:
    """Degree of each state function of component ``name`` (``(Q,)``, the column order of
    :func:`~napari_cryohet.core.hypermolecule.evaluate_state_basis`)."""
    comp = model._by_name[name]
    if comp.state_dim == 0:
        return torch.zeros(1, dtype=torch.long)
    if comp.state_dim == 1:
        return torch.arange(comp.state_order + 1)
    return torch.tensor([i + j for i in range(comp.state_order + 1) for j in range(comp.state_order + 1 - i)])


class HyperMoleculeSampler:
    """Several chains of the hyper-molecule posterior (module docstring).

    Parameters
    ----------
    model
        The composite hyper-molecule (geometry at the working size).
    data
        The working-size images (:class:`ImageData`).
    config
        The run's settings.
    theta0
        ``(n,)`` starting θ (the hand is decided here, see ``initial_map``).
    particles0
        Starting variables (all chains start from them except τ, drawn uniformly per chain).
    volume_size_px, volume_apix
        Box and pixel size of the output maps.
    """

    def __init__(self, model: HyperMolecule, data: ImageData, config: HyperMoleculeConfig, *, theta0: torch.Tensor,
                 particles0: ParticleVariables, volume_size_px: int, volume_apix: float,
                 symmetries: list | tuple = ()) -> None:
        self.model, self.data, self.config = model, data, config
        self.device, self.dtype = model.device, model.dtype
        # the identity and the layout's half turns (config.layout_symmetries): rotations, state columns, reversals
        s = model.state_dim
        table = [(torch.eye(3).tolist(), list(range(s)), [False] * s), *symmetries]
        self._sym_rot = torch.tensor([g for g, _, _ in table], device=self.device, dtype=self.dtype)
        self._sym_cols = torch.tensor([c for _, c, _ in table], device=self.device, dtype=torch.long).reshape(-1, s)
        self._sym_rev = torch.tensor([r for _, _, r in table], device=self.device, dtype=torch.bool).reshape(-1, s)
        self.n = data.spectra.shape[0]
        self.shapes = model.parameter_shapes()
        self.volume_size_px, self.volume_apix = int(volume_size_px), float(volume_apix)
        self.priors = HyperMoleculePriors(coefficient_std=config.coefficient_std,
                                          smoothness_weight=config.smoothness_weight,
                                          shift_std_a=config.shift_std_a, contrast_std=config.contrast_std)
        nyquist = 1.0 / (2.0 * data.apix)
        self.k_end = min(nyquist, 1.0 / config.final_resolution_a) if config.final_resolution_a else nyquist
        self.k_start = min(self.k_end, 1.0 / config.start_resolution_a)
        self.max_order = max((c.state_order for c in model.components if c.state_dim), default=0)
        self.total_sweeps = config.n_burnin_sweeps + config.n_sample_sweeps
        self._blob_power = self._blob_spectrum_power()
        self._traj_mask = self._trajectory_mask()
        self._profiles_off = any(c.trajectory for c in model.components)
        self.chains: list[dict] = []
        for c in range(config.n_chains):
            gen = make_generator(config.seed, c, device=self.device)
            part = particles0.clone()
            if model.state_dim:
                part.tau = torch.rand(self.n, model.state_dim, generator=gen, device=self.device, dtype=self.dtype)
            steps = {name: AdaptiveStep(_INITIAL_STEP[name], target_acceptance=_TARGET[name], shape=(self.n,),
                                        device=self.device, max_step=10.0 if name != "pose" else math.pi)
                     for name in ("tau", "pose", "shift", "contrast")}
            steps["theta"] = AdaptiveStep(0.5, target_acceptance=_TARGET["theta"], device=self.device, max_step=10.0)
            self.chains.append({
                "theta": theta0.detach().clone().to(self.device, self.dtype), "particles": part, "generator": gen,
                "steps": steps,
                "traj_precond": DiagonalPreconditioner(theta0.numel(), device=self.device, dtype=self.dtype,
                                                       mask=self._traj_mask),
                "precond": None, "samples": [], "tau_sum": torch.zeros_like(part.tau),
                "tau_sq": torch.zeros_like(part.tau), "n_kept": 0, "tau_frame": None,
                "traces": {key: [] for key in ("log_posterior", "max_frequency_per_a", "state_order", "theta_step",
                                               "tau_step", "pose_step_deg", "shift_step_a", "contrast_step",
                                               *(f"acceptance_{k}" for k in KERNELS))},
                "accept_total": {k: [0, 0] for k in KERNELS},
            })
        self.sweeps_done = 0

    # -- schedule -------------------------------------------------------------------------------
    def plan(self, sweep: int) -> SweepPlan:
        """Resolution and state order of ``sweep`` (module docstring)."""
        cfg = self.config
        if sweep >= cfg.n_burnin_sweeps:
            return SweepPlan(sweep, False, cfg.n_restarts, self.k_end, self.max_order)
        segments = cfg.n_restarts + 1
        length = cfg.n_burnin_sweeps / segments
        segment = min(int(sweep // length), segments - 1)
        within = (sweep - segment * length) / max(length, 1.0)
        ramp = min(1.0, within / 0.6)
        kmax = self.k_start + ramp * (self.k_end - self.k_start)
        if segment == 0:
            grow = min(1.0, within / 0.5)
            order = int(round(cfg.start_state_order + grow * (self.max_order - cfg.start_state_order)))
        else:
            order = self.max_order
        return SweepPlan(sweep, True, segment, kmax, min(order, self.max_order))

    # -- preconditioner -------------------------------------------------------------------------
    def _blob_spectrum_power(self) -> torch.Tensor:
        """``(D, D)`` ``|ĝ(k)|²`` of one unit blob's projection (the same at every position and pose)."""
        d = self.data.d
        one = project_gaussian_atoms(torch.zeros(1, 1, 3, device=self.device, dtype=torch.float64),
                                     torch.eye(3, dtype=torch.float64, device=self.device)[None], d=d,
                                     apix=self.data.apix, sigma_a=self.model.sigma_a,
                                     weights=torch.ones(1, 1, device=self.device, dtype=torch.float64))
        return fft2_centered(one)[0].abs().square().to(self.dtype)

    def _trajectory_mask(self) -> torch.Tensor:
        mask = [torch.full((math.prod(s),), key.endswith(".trajectory"), dtype=torch.bool)
                for key, s in self.shapes.items()]
        return torch.cat(mask).to(self.device) if mask else torch.zeros(0, dtype=torch.bool, device=self.device)

    def _order_mask(self, order: int) -> torch.Tensor:
        """``(n,)`` bool: θ entries active at state order ``order``."""
        parts = []
        for key, shape in self.shapes.items():
            if key.endswith(".coefficients"):
                deg = _column_degrees(self.model, key[: -len(".coefficients")]).to(self.device)
                parts.append((deg <= order).expand(shape).reshape(-1))
            else:
                parts.append(torch.ones(math.prod(shape), dtype=torch.bool, device=self.device))
        return torch.cat(parts)

    def _curvature_preconditioner(self, part: ParticleVariables, mask: torch.Tensor, order: int) -> torch.Tensor:
        """``(n,)`` ``A = 1/H`` (module docstring); zeros for frozen entries."""
        power = self._blob_power * mask / self.data.noise_var  # (D, D)
        if self.data.ctf is None:
            w = power.sum().expand(self.n)
        else:
            w = torch.cat([(self.data.ctf[s].square() * power).sum((-2, -1)) for s in self._chunks()])
        w = w * part.contrast.square()  # (N,)
        curv: dict[str, torch.Tensor] = {}
        for comp in self.model.components:
            src = self.model.source_of(comp.name)
            cols = self.model.state_columns.get(comp.name, slice(0, 0))
            basis = evaluate_state_basis(part.tau[:, cols], order=comp.state_order, kind=self.model.state_basis)
            curv[src] = curv.get(src, 0) + (w[:, None] * basis.square()).sum(0)  # (Q,)
        parts = []
        for key, shape in self.shapes.items():
            if key.endswith(".coefficients"):
                h = curv[key[: -len(".coefficients")]] + 1.0 / self.priors.coefficient_std**2
                parts.append((1.0 / h).expand(shape).reshape(-1))
            else:
                parts.append(torch.zeros(math.prod(shape), device=self.device, dtype=self.dtype))
        a = torch.cat(parts).to(self.dtype)
        return torch.where(self._order_mask(order), a, torch.zeros_like(a))

    # -- particle blocks ------------------------------------------------------------------------
    def _chunks(self, rows: torch.Tensor | None = None):
        n = self.n if rows is None else rows.shape[0]
        for start in range(0, n, self.config.batch_size):
            sl = slice(start, start + self.config.batch_size)
            yield sl if rows is None else rows[sl]

    def _project(self, params, part: ParticleVariables, rows: torch.Tensor) -> torch.Tensor:
        """``(B, D, D)`` cached spectra ``CTF · FFT(projection)`` of ``rows`` (``part`` holds those rows)."""
        out = []
        bs = self.config.batch_size
        with torch.no_grad():
            for start in range(0, rows.shape[0], bs):
                sl = slice(start, start + bs)
                ctf = None if self.data.ctf is None else self.data.ctf[rows[sl]]
                out.append(projection_spectra(self.model, params, part.tau[sl], part.rotations[sl], d=self.data.d,
                                              apix=self.data.apix, ctf=ctf))
        return torch.cat(out)

    def _log_post(self, proj: torch.Tensor, part: ParticleVariables, rows: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
        pred = shift_and_scale(proj, part.shifts_a, part.contrast, apix=self.data.apix)
        ll = image_log_likelihood(pred, self.data.spectra[rows], self.data.noise_var, mask)
        return ll + log_prior_particles(part, self.priors)

    def _profiles(self, params, rotations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Blob profiles ``(gy · prefactor, gx)`` ``(B, D, K)`` at these poses, for projecting
        many states at fixed poses (the τ block) with one matrix product each: the exact
        projection of :func:`~napari_cryohet.core.projection.project_gaussian_atoms` split so
        the exponentials are computed once. ``None`` when blobs move with τ (trajectories)."""
        if any(c.trajectory for c in self.model.components):
            return None
        tau0 = torch.zeros(1, self.model.state_dim, device=self.device, dtype=self.dtype)
        positions, _ = self.model.blobs(params, tau0)  # (K, 3): rest positions
        rotated = positions[None] @ rotations[:, :2, :].transpose(1, 2)  # (B, K, 2)
        d, apix, sig = self.data.d, self.data.apix, self.model.sigma_a
        prefactor = apix**2 / (2.0 * math.pi * sig * sig)
        gx = gaussian_profiles(rotated[..., 0], d=d, apix=apix, sigma_a=sig)
        gy = gaussian_profiles(rotated[..., 1], d=d, apix=apix, sigma_a=sig) * prefactor
        return gy, gx

    def _project_cached(self, params, profiles, tau: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        _, masses = self.model.blobs(params, tau)  # (B, K)
        gy, gx = profiles
        spectra = fft2_centered((gy * masses[:, None, :]) @ gx.transpose(1, 2))
        return spectra if self.data.ctf is None else spectra * self.data.ctf[rows]

    def _cached_profiles(self, chain: dict, params, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """:meth:`_profiles` of ``rows`` at the chain's current poses, kept between blocks and
        sweeps while a particle's pose does not change (blob rest positions do not depend on θ
        without trajectories): the exponentials are most of the cost of a projection, and with
        known poses (Run A) they are computed once per run. The cache (``2·N·D·K`` values) is
        used when it fits in :data:`PROFILE_CACHE_BYTES`; it is rebuilt after a resume."""
        if self._profiles_off:
            return None
        cache = chain.get("profile_cache")
        if cache is None:
            d, k = self.data.d, self.model.n_blobs
            if 2 * self.n * d * k * torch.finfo(self.dtype).bits // 8 > PROFILE_CACHE_BYTES:
                return self._profiles(params, chain["particles"].rotations[rows])
            cache = chain["profile_cache"] = {
                "gy": torch.empty(self.n, d, k, device=self.device, dtype=self.dtype),
                "gx": torch.empty(self.n, d, k, device=self.device, dtype=self.dtype),
                "valid": torch.zeros(self.n, dtype=torch.bool, device=self.device)}
        need = rows[~cache["valid"][rows]]
        for start in range(0, need.shape[0], self.config.batch_size):
            sub = need[start:start + self.config.batch_size]
            gy, gx = self._profiles(params, chain["particles"].rotations[sub])
            cache["gy"][sub], cache["gx"][sub] = gy, gx
            cache["valid"][sub] = True
        return cache["gy"][rows], cache["gx"][rows]

    def _theta_target(self, chain: dict, flat: torch.Tensor, rows: torch.Tensor | None, mask: torch.Tensor,
                      likelihood_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """``log P(θ | ·)`` and its gradient: :func:`theta_log_posterior_and_grad` (the same
        sum) with the particles' cached blob profiles (:meth:`_cached_profiles`), so a MALA
        step costs matrix products only; ``rows`` ``None``: every particle."""
        part_all = chain["particles"]
        rows = torch.arange(self.n, device=self.device) if rows is None else rows
        probe = self._cached_profiles(chain, unflatten_params(flat, self.shapes), rows[:1])
        if probe is None:
            return theta_log_posterior_and_grad(self.model, flat, part_all[rows], self.data, self.priors,
                                                idx=rows, mask=mask, batch_size=self.config.batch_size,
                                                likelihood_scale=likelihood_scale)
        theta = flat.detach().clone().requires_grad_(True)
        params = unflatten_params(theta, self.shapes)
        total = log_prior_theta(self.model, params, self.priors)
        grad = torch.autograd.grad(total, theta, allow_unused=True)[0]
        grad = torch.zeros_like(theta) if grad is None else grad
        value = total.detach()
        for start in range(0, rows.shape[0], self.config.batch_size):
            sub = rows[start:start + self.config.batch_size]
            part = part_all[sub]
            profiles = self._cached_profiles(chain, params, sub)
            proj = self._project_cached(params, profiles, part.tau, sub)
            pred = shift_and_scale(proj, part.shifts_a, part.contrast, apix=self.data.apix)
            ll = likelihood_scale * image_log_likelihood(pred, self.data.spectra[sub], self.data.noise_var,
                                                         mask).sum()
            grad = grad + torch.autograd.grad(ll, theta)[0]
            value = value + ll.detach()
        return value, grad

    def _state_averaged_blobs(self, params) -> tuple[torch.Tensor, torch.Tensor]:
        """Rest positions ``(K, 3)`` and masses ``(K,)`` of the map averaged over states (the
        mean over a midpoint grid of 8 states per knob; positions at mid-state when blobs move):
        the homogeneous map the global pose search scores against."""
        s = self.model.state_dim
        if s == 0:
            tau = torch.zeros(1, 0, device=self.device, dtype=self.dtype)
        else:
            t = (torch.arange(8, device=self.device, dtype=self.dtype) + 0.5) / 8
            grids = torch.meshgrid(*([t] * s), indexing="ij")
            tau = torch.stack([g.reshape(-1) for g in grids], -1)
        positions, masses = self.model.blobs(params, tau)
        if positions.dim() == 3:
            positions = positions[positions.shape[0] // 2]
        return positions, masses.mean(0)

    def _pose_search_setup(self, chain: dict, params, plan: SweepPlan, *, states: bool = True) -> dict | None:
        """The sweep's global pose candidates (module docstring): ``pose_search_candidates``
        Haar-uniform orientations from the chain's stream, each paired with the sweep's grid of
        knob settings (:meth:`_search_states`; one state-averaged map when ``states`` is off or
        there is no grid), and their spectra on the central ``ds × ds`` crop holding the search
        frequencies (``None`` when poses are known or the search is off)."""
        cfg = self.config
        if not cfg.estimate_poses or cfg.pose_search_candidates <= 0 or cfg.pose_steps <= 0:
            return None
        d, apix = self.data.d, self.data.apix
        k = min(plan.max_frequency_per_a, 1.0 / cfg.pose_search_resolution_a)
        ds = min(d, 2 * int(math.floor(k * d * apix)) + 2)
        lo = d // 2 - ds // 2
        crop = (slice(lo, lo + ds), slice(lo, lo + ds))
        weight = (frequency_mask(d, apix, k, device=self.device) / self.data.noise_var)[crop].reshape(-1)
        rot = random_rotations(cfg.pose_search_candidates, generator=chain["generator"], device=self.device,
                                dtype=self.dtype)
        grid = self._search_states(chain) if states else None
        if grid is None:
            positions, masses = self._state_averaged_blobs(params)
            spectra = self._averaged_spectra(positions, masses, rot, crop)
            search = {"rotations": rot, "tau": None, "positions": positions, "masses": masses}
        else:
            _, masses = self.model.blobs(params, grid)  # (S, K)
            spectra = self._state_spectra(params, masses, rot, crop)  # (M·S, ds²), orientation-major
            search = {"rotations": rot.repeat_interleave(grid.shape[0], 0), "tau": grid.repeat(rot.shape[0], 1),
                      "params": params}
        return {**search, "crop": crop, "weight": weight, "re": spectra.real.contiguous(),
                "im": spectra.imag.contiguous(), "power": spectra.abs().square()}

    def _search_states(self, chain: dict) -> torch.Tensor | None:
        """``(G^s, s)`` knob settings the pose search pairs with every candidate orientation: a
        grid of ``G = pose_search_states`` cells per knob, each point at ``(i + u_j) / G`` with one
        uniform offset ``u_j`` per knob and sweep (from the chain's stream), so every grid point
        is uniformly distributed on ``[0, 1]^s`` — the candidates are draws from the prior of
        (orientation, states), as the move requires. ``None`` (the state-averaged map) when
        there are no knobs, ``G ≤ 1``, blobs move with τ, or the grid would exceed 64 points."""
        g, s = self.config.pose_search_states, self.model.state_dim
        if s == 0 or g <= 1 or self._profiles_off or g**s > 64:
            return None
        offset = torch.rand(s, generator=chain["generator"], device=self.device, dtype=torch.float64)
        axes = [((torch.arange(g, device=self.device, dtype=torch.float64) + offset[j]) / g).to(self.dtype)
                for j in range(s)]
        return torch.stack([a.reshape(-1) for a in torch.meshgrid(*axes, indexing="ij")], -1)

    def _state_spectra(self, params, masses: torch.Tensor, rotations: torch.Tensor, crop) -> torch.Tensor:
        """``(B·S, ds²)`` spectra (cropped, flattened; row ``b·S + s``) of the map at the ``S``
        knob settings whose blob masses are ``masses`` ``(S, K)``, at each of ``rotations``
        ``(B, 3, 3)``. The blob profiles (:meth:`_profiles`) are computed once per orientation
        and shared by its settings."""
        s = masses.shape[0]
        out = []
        step = max(1, _CANDIDATE_CHUNK // s)
        for start in range(0, rotations.shape[0], step):
            gy, gx = self._profiles(params, rotations[start:start + step])  # (C, D, K)
            img = (gy[:, None] * masses[None, :, None, :]) @ gx[:, None].transpose(-1, -2)  # (C, S, D, D)
            spec = fft2_centered(img)[(..., *crop)]
            out.append(spec.reshape(-1, spec.shape[-2] * spec.shape[-1]))
        return torch.cat(out)

    def _current_search_spectra(self, search: dict, part: ParticleVariables) -> torch.Tensor:
        """``(B, ds²)`` spectra of each particle's current orientation (and states, in a joint
        search) through the search's map: the surrogate score of staying put."""
        if search["tau"] is None:
            return self._averaged_spectra(search["positions"], search["masses"], part.rotations, search["crop"])
        _, masses = self.model.blobs(search["params"], part.tau)  # (B, K)
        gy, gx = self._profiles(search["params"], part.rotations)
        spec = fft2_centered((gy * masses[:, None, :]) @ gx.transpose(1, 2))[(..., *search["crop"])]
        return spec.reshape(spec.shape[0], -1)

    def _averaged_spectra(self, positions, masses, rotations: torch.Tensor, crop) -> torch.Tensor:
        """``(B, ds²)`` spectra of the state-averaged map at ``rotations`` (cropped, flattened)."""
        out = []
        for start in range(0, rotations.shape[0], _CANDIDATE_CHUNK):
            proj = project_gaussian_atoms(positions, rotations[start:start + _CANDIDATE_CHUNK], d=self.data.d,
                                          apix=self.data.apix, sigma_a=self.model.sigma_a, weights=masses)
            out.append(fft2_centered(proj)[(..., *crop)].reshape(proj.shape[0], -1))
        return torch.cat(out)

    def _pose_search(self, search: dict, part: ParticleVariables, rows: torch.Tensor, lp: torch.Tensor, gen,
                     project: Callable[[ParticleVariables], torch.Tensor],
                     log_post: Callable[[torch.Tensor, ParticleVariables], torch.Tensor]):
        """One multiple-proposal, delayed-acceptance MH move of the poses (and, in a joint search,
        the states) of ``rows`` (module docstring). Returns ``(rotations, states, projections or
        None, log posterior, accepted, moved)``; ``projections`` are the accepted rows' new cached
        spectra (``None``: nothing moved)."""
        crop, w = search["crop"], search["weight"]
        b = rows.shape[0]
        y = phase_shift_2d(self.data.spectra[rows], part.shifts_a.to(self.dtype) / self.data.apix)
        y = y[(..., *crop)].reshape(b, -1)
        c = (torch.ones_like(w).expand(b, -1) if self.data.ctf is None
             else self.data.ctf[rows][(..., *crop)].reshape(b, -1))
        a = part.contrast.to(self.dtype)
        cw = c * w
        cross_re, cross_im, norm_w = cw * y.real, cw * y.imag, c.square() * w
        scores = a[:, None] * (cross_re @ search["re"].T + cross_im @ search["im"].T) \
            - 0.5 * a[:, None].square() * (norm_w @ search["power"].T)  # (B, M)
        cur = self._current_search_spectra(search, part)  # (B, ds²)
        score0 = a * (cross_re * cur.real + cross_im * cur.imag).sum(-1) - 0.5 * a.square() * (
            norm_w * cur.abs().square()).sum(-1)
        logits = torch.cat([score0[:, None], scores], 1)
        u = torch.rand(logits.shape, generator=gen, device=self.device, dtype=torch.float64).clamp_min(1e-300)
        pick = torch.argmax(logits.double() - torch.log(-torch.log(u)), dim=1)
        moved = pick > 0
        if not bool(moved.any()):
            return part.rotations, part.tau, None, lp, torch.ones(b, dtype=torch.bool, device=self.device), moved
        cand = search["rotations"][(pick - 1).clamp_min(0)]
        proposal = torch.where(moved[:, None, None], cand, part.rotations)
        tau = part.tau if search["tau"] is None else torch.where(
            moved[:, None], search["tau"][(pick - 1).clamp_min(0)], part.tau)
        trial = ParticleVariables(tau, proposal, part.shifts_a, part.contrast)
        proj = project(trial)
        lp_new = log_post(proj, trial)
        surrogate_gain = logits.gather(1, pick[:, None])[:, 0] - score0
        log_ratio = (lp_new - lp - surrogate_gain).double()
        u2 = torch.rand(b, generator=gen, device=self.device, dtype=torch.float64)
        accept = moved & (torch.log(u2) < log_ratio) | ~moved
        rot = torch.where(accept[:, None, None], proposal, part.rotations)
        tau = torch.where(accept[:, None], tau, part.tau)
        return rot, tau, (proj, accept), torch.where(accept, lp_new, lp), accept, moved & accept

    def _particle_blocks(self, chain: dict, params, rows_all: torch.Tensor, mask: torch.Tensor,
                         recorder: AcceptanceRecorder, cancel: Callable[[], None], *, search: dict | None = None,
                         states: bool = True) -> None:
        """The MH blocks for the particles ``rows_all``, one batch of ``batch_size`` at a time
        (each batch: τ unless ``states`` is off, the global pose search when ``search``, the
        local pose steps, then shift and contrast)."""
        total = 0.0
        with torch.no_grad():
            for start in range(0, rows_all.shape[0], self.config.batch_size):
                rows = rows_all[start:start + self.config.batch_size]
                total += self._batch_blocks(chain, params, rows, mask, recorder, search=search, states=states)
                cancel()
        chain["last_log_posterior_particles"] = total

    def _batch_blocks(self, chain: dict, params, rows: torch.Tensor, mask: torch.Tensor,
                      recorder: AcceptanceRecorder, *, search: dict | None = None, states: bool = True) -> float:
        cfg, gen = self.config, chain["generator"]
        full = chain["particles"]
        part = full[rows]
        steps = chain["steps"]
        profiles = self._cached_profiles(chain, params, rows)
        proj = (self._project_cached(params, profiles, part.tau, rows) if profiles is not None
                else self._project(params, part, rows))
        lp = self._log_post(proj, part, rows, mask)

        def step_rows(name: str) -> torch.Tensor:
            return steps[name].value[rows].to(self.dtype)

        def adapt(name: str, accept_prob: torch.Tensor) -> None:
            if steps[name].adapting:
                p = torch.full((self.n,), steps[name].target, dtype=torch.float64, device=self.device)
                p[rows] = accept_prob.to(torch.float64)
                steps[name].update(p)

        def trial_with(field: str, value: torch.Tensor) -> ParticleVariables:
            trial = ParticleVariables(**{f.name: getattr(part, f.name) for f in fields(part)})
            setattr(trial, field, value)
            return trial

        def mh(name: str, field: str, propose, project) -> None:
            """One MH update of ``field``; ``project(trial)`` gives the trial's projections
            (``None``: the cached ones are reused, for shift and contrast)."""
            nonlocal proj, lp
            cache: dict[str, torch.Tensor] = {}

            def logp(value: torch.Tensor) -> torch.Tensor:
                trial = trial_with(field, value)
                cache["proj"] = proj if project is None else project(trial)
                return self._log_post(cache["proj"], trial, rows, mask)

            res = metropolis_hastings_step(getattr(part, field), lp, logp, propose, generator=gen)
            setattr(part, field, res.state)
            if project is not None:
                proj = torch.where(res.accepted[:, None, None], cache["proj"], proj)
            lp = res.log_prob
            recorder.record(name, res.accepted)
            adapt(name, res.accept_prob)

        if self.model.state_dim and states:
            project_tau = ((lambda t: self._project_cached(params, profiles, t.tau, rows)) if profiles is not None
                           else (lambda t: self._project(params, t, rows)))
            for _ in range(cfg.tau_steps):
                mh("tau", "tau", lambda s, g: (propose_unit_interval(s, step_rows("tau"), g), None), project_tau)
        rotations_before = part.rotations.clone()
        if search is not None:
            def project_pose(t: ParticleVariables) -> torch.Tensor:
                return self._project(params, t, rows)

            rot, tau, new, lp, accepted, moved = self._pose_search(
                search, part, rows, lp, gen, project_pose, lambda pr, t: self._log_post(pr, t, rows, mask))
            part.rotations, part.tau = rot, tau
            if new is not None:
                proj = torch.where(new[1][:, None, None], new[0], proj)
            recorder.record("pose_search", moved)
        if cfg.estimate_poses:
            for _ in range(cfg.pose_steps):
                mh("pose", "rotations", lambda s, g: (
                    propose_rotation(s, step_rows("pose"), g, global_probability=cfg.global_pose_probability), None),
                   lambda t: self._project(params, t, rows))
        for _ in range(cfg.shift_steps):
            if cfg.estimate_shifts:
                mh("shift", "shifts_a", lambda s, g: (propose_gaussian(s, step_rows("shift"), g), None), None)
            if cfg.estimate_contrast:
                mh("contrast", "contrast", lambda s, g: (propose_gaussian(s, step_rows("contrast"), g), None), None)
        full.update(rows, part)
        cache = chain.get("profile_cache")
        if cache is not None:
            moved = (part.rotations != rotations_before).flatten(1).any(1)
            cache["valid"][rows[moved]] = False
        return float(lp.sum())

    # -- θ --------------------------------------------------------------------------------------
    def _theta_block(self, chain: dict, plan: SweepPlan, mask: torch.Tensor, recorder: AcceptanceRecorder,
                     rows: torch.Tensor | None) -> float:
        cfg, gen = self.config, chain["generator"]
        part = chain["particles"]
        if plan.burnin or chain["precond"] is None:
            curv = self._curvature_preconditioner(part, mask, plan.order)
            traj = chain["traj_precond"].value if bool(self._traj_mask.any()) else torch.zeros_like(curv)
            precond = torch.where(self._traj_mask, traj, curv)
            chain["precond"] = precond
        precond = chain["precond"]
        order_mask = self._order_mask(plan.order)
        precond = torch.where(order_mask, precond, torch.zeros_like(precond))
        theta = chain["theta"]
        if cfg.theta_update == "crude":
            assert rows is not None
            value = 0.0
            for _ in range(cfg.theta_steps):
                v, g = self._theta_target(chain, theta, rows, mask, likelihood_scale=self.n / rows.shape[0])
                chain["traj_precond"].update(g)
                theta = theta + cfg.crude_step * precond * g
                value = float(v)
            chain["theta"] = theta
            return value

        def target(x: torch.Tensor):
            return self._theta_target(chain, x, None, mask)

        current = target(theta)
        step = chain["steps"]["theta"]
        for _ in range(cfg.theta_steps):
            res = mala_step(theta, target, step=step.value.to(self.dtype), preconditioner=precond, generator=gen,
                            current=current)
            theta, current = res.state, (res.log_prob, res.grad)
            recorder.record("theta", res.accepted.reshape(1))
            step.update(res.accept_prob)
            chain["traj_precond"].update(res.grad)
        chain["theta"] = theta
        return float(current[0])

    # -- one sweep ------------------------------------------------------------------------------
    def sweep(self, cancel: Callable[[], None] = lambda: None) -> dict[str, float]:
        """Run sweep :attr:`sweeps_done` on every chain; returns chain 0's acceptance rates and
        log posterior (for progress messages). ``cancel`` is called between blocks."""
        plan = self.plan(self.sweeps_done)
        mask = frequency_mask(self.data.d, self.data.apix, plan.max_frequency_per_a, device=self.device)
        summary: dict[str, float] = {}
        for c, chain in enumerate(self.chains):
            if not plan.burnin:
                for adapter in (*chain["steps"].values(), chain["traj_precond"]):
                    adapter.freeze()
            recorder = AcceptanceRecorder()
            params = unflatten_params(chain["theta"], self.shapes)
            rows = torch.arange(self.n, device=self.device)
            if self.config.theta_update == "crude":
                size = max(1, int(round(self.config.crude_fraction * self.n)))
                rows = torch.randperm(self.n, generator=chain["generator"], device=self.device)[:size].sort().values
            pose_only = plan.sweep < self.config.pose_only_sweeps
            search = self._pose_search_setup(chain, params, plan, states=not pose_only)
            self._particle_blocks(chain, params, rows, mask, recorder, cancel, search=search, states=not pose_only)
            cancel()
            if pose_only:  # the homogeneous first stage: the map stays; the trace gets the particles' terms
                log_post = float(chain["last_log_posterior_particles"])
            else:
                log_post = self._theta_block(chain, plan, mask, recorder,
                                             rows if self.config.theta_update == "crude" else None)
            cancel()
            rates = recorder.rates()
            for name in KERNELS:
                if name in recorder.proposed:
                    chain["accept_total"][name][0] += recorder.accepted[name] if not plan.burnin else 0
                    chain["accept_total"][name][1] += recorder.proposed[name] if not plan.burnin else 0
            tr = chain["traces"]
            tr["log_posterior"].append(log_post)
            tr["max_frequency_per_a"].append(plan.max_frequency_per_a)
            tr["state_order"].append(plan.order)
            tr["theta_step"].append(float(chain["steps"]["theta"].value))
            tr["tau_step"].append(float(chain["steps"]["tau"].value.mean()))
            tr["pose_step_deg"].append(float(chain["steps"]["pose"].value.mean()) * 180 / math.pi)
            tr["shift_step_a"].append(float(chain["steps"]["shift"].value.mean()))
            tr["contrast_step"].append(float(chain["steps"]["contrast"].value.mean()))
            for name in KERNELS:
                tr[f"acceptance_{name}"].append(rates.get(name, float("nan")))
            if not plan.burnin:
                chain["samples"].append(chain["theta"].detach().clone())
                part = chain["particles"]
                if chain["tau_frame"] is None:  # the first kept sweep's poses fix each particle's frame
                    chain["tau_frame"] = part.rotations.clone()
                tau = self._in_frame(part.rotations, part.tau, chain["tau_frame"])
                chain["tau_sum"] += tau
                chain["tau_sq"] += tau.square()
                chain["n_kept"] += 1
            if c == 0:
                summary = {**rates, "log_posterior": log_post}
        self.sweeps_done += 1
        return summary

    # -- outputs --------------------------------------------------------------------------------
    def chain_scores(self) -> list[float]:
        """Mean log posterior of each chain over its sampling sweeps (burn-in if none yet)."""
        out = []
        for chain in self.chains:
            lp = chain["traces"]["log_posterior"]
            kept = lp[self.config.n_burnin_sweeps:] or lp[-1:] or [float("-inf")]
            out.append(float(sum(kept) / len(kept)))
        return out

    def tau_grid(self) -> torch.Tensor:
        """``(G, S)`` states of the output maps: ``tau_grid_size`` values per knob, all
        combinations (G = T^S; one row for a rigid molecule)."""
        s = self.model.state_dim
        if s == 0:
            return torch.zeros(1, 0, dtype=torch.float64)
        t = torch.linspace(0.0, 1.0, self.config.tau_grid_size, dtype=torch.float64)
        grids = torch.meshgrid(*([t] * s), indexing="ij")
        return torch.stack([g.reshape(-1) for g in grids], -1)

    def theta_samples(self, chain: int) -> torch.Tensor:
        """``(S, n)`` θ kept after burn-in (the current θ when none)."""
        ch = self.chains[chain]
        return torch.stack(ch["samples"]) if ch["samples"] else ch["theta"][None]

    def volumes(self, chain: int, tau: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and standard deviation of ``V(·, τ)`` for each row of ``tau`` (default
        :meth:`tau_grid`), over ``volume_samples`` evenly thinned θ samples: ``(G, D, D, D)`` each,
        at the output size and pixel."""
        tau = self.tau_grid() if tau is None else tau
        samples = self.theta_samples(chain)
        k = min(self.config.volume_samples, samples.shape[0])
        pick = torch.linspace(0, samples.shape[0] - 1, k).round().long()
        tau = tau.to(self.device, self.dtype)
        mean = torch.zeros(tau.shape[0], *(3 * (self.volume_size_px,)), dtype=torch.float64)
        sq = torch.zeros_like(mean)
        for i in pick.tolist():
            params = unflatten_params(samples[i].to(self.device, self.dtype), self.shapes)
            vols = torch.cat([self.model.evaluate_volume(params, tau[s:s + 4], d=self.volume_size_px,
                                                         apix=self.volume_apix).cpu().to(torch.float64)
                              for s in range(0, tau.shape[0], 4)])
            mean += vols / k
            sq += vols.square() / k
        std = (sq - mean.square()).clamp_min(0).sqrt()
        return mean.float(), std.float()

    def tau_moments(self, chain: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, S)`` posterior mean and standard deviation of each particle's states."""
        ch = self.chains[chain]
        if ch["n_kept"] == 0:
            return ch["particles"].tau.clone(), torch.zeros_like(ch["particles"].tau)
        mean = ch["tau_sum"] / ch["n_kept"]
        std = (ch["tau_sq"] / ch["n_kept"] - mean.square()).clamp_min(0).sqrt()
        if ch["tau_frame"] is None:  # a checkpoint from before the frame was kept
            return mean, std
        final = ch["particles"].rotations  # report the states in the frame of the reported orientation
        return (self._in_frame(ch["tau_frame"], mean, final),
                self._in_frame(ch["tau_frame"], std, final, reverse=False))

    def _in_frame(self, rotations: torch.Tensor, tau: torch.Tensor, frame: torch.Tensor, *,
                  reverse: bool = True) -> torch.Tensor:
        """States ``tau`` of particles at ``rotations``, carried to orientations ``frame``: with
        ``R ≈ F g`` for the nearest of the layout's symmetries ``g`` (largest ``tr(Rᵀ F g)``),
        ``(R, τ)`` is the same image as ``(R g ≈ F, σ_g(τ))`` (half turns: ``g⁻¹ = g``), so the
        posterior mean of the states is taken in one frame even when a chain moves between
        equivalent poses. Identity when the layout declares no symmetries."""
        if self._sym_rot.shape[0] == 1 or tau.shape[-1] == 0:
            return tau
        mates = frame.to(self.dtype)[:, None] @ self._sym_rot[None]  # (N, G, 3, 3)
        k = (rotations.to(self.dtype)[:, None] * mates).sum((-1, -2)).argmax(1)
        out = tau.gather(1, self._sym_cols[k])
        return torch.where(self._sym_rev[k], 1.0 - out, out) if reverse else out

    def acceptance(self, chain: int) -> dict[str, float]:
        """Acceptance rate of each kernel over the sampling sweeps."""
        return {k: a / p for k, (a, p) in self.chains[chain]["accept_total"].items() if p}

    # -- checkpoint -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything a resumed run needs (tensors and plain data, for ``torch.load(weights_only=True)``)."""
        chains = []
        for ch in self.chains:
            p = ch["particles"]
            chains.append({
                "theta": ch["theta"].cpu(), "tau": p.tau.cpu(), "rotations": p.rotations.cpu(),
                "shifts_a": p.shifts_a.cpu(), "contrast": p.contrast.cpu(),
                "steps": {k: v.state_dict() for k, v in ch["steps"].items()},
                "traj_precond": ch["traj_precond"].state_dict(),
                "precond": None if ch["precond"] is None else ch["precond"].cpu(),
                "samples": [s.cpu() for s in ch["samples"]], "tau_sum": ch["tau_sum"].cpu(),
                "tau_sq": ch["tau_sq"].cpu(), "n_kept": ch["n_kept"], "traces": ch["traces"],
                "tau_frame": None if ch["tau_frame"] is None else ch["tau_frame"].cpu(),
                "accept_total": ch["accept_total"],
            })
        gens = generator_states({str(c): ch["generator"] for c, ch in enumerate(self.chains)})
        return {"sweeps_done": self.sweeps_done, "chains": chains, "generators": gens}

    def load_state_dict(self, state: dict) -> None:
        if len(state["chains"]) != len(self.chains):
            raise ValueError(f"the checkpoint has {len(state['chains'])} chains, the run {len(self.chains)}")
        dev = self.device
        for ch, saved in zip(self.chains, state["chains"], strict=True):
            ch["theta"] = saved["theta"].to(dev)
            ch.pop("profile_cache", None)  # built again from the restored poses
            ch["particles"] = ParticleVariables(saved["tau"].to(dev), saved["rotations"].to(dev),
                                                saved["shifts_a"].to(dev), saved["contrast"].to(dev))
            for k, v in ch["steps"].items():
                v.load_state_dict(saved["steps"][k])
            ch["traj_precond"].load_state_dict(saved["traj_precond"])
            ch["precond"] = None if saved["precond"] is None else saved["precond"].to(dev)
            ch["samples"] = [s.to(dev) for s in saved["samples"]]
            ch["tau_sum"], ch["tau_sq"] = saved["tau_sum"].to(dev), saved["tau_sq"].to(dev)
            ch["n_kept"] = int(saved["n_kept"])
            frame = saved.get("tau_frame")
            ch["tau_frame"] = None if frame is None else frame.to(dev)
            done = len(saved["traces"]["log_posterior"])  # kernels added since the checkpoint: empty history
            ch["traces"] = {k: list(saved["traces"].get(k, [float("nan")] * done)) for k in ch["traces"]}
            ch["accept_total"] = {k: list(saved["accept_total"].get(k, [0, 0])) for k in KERNELS}
        restore_generators({str(c): ch["generator"] for c, ch in enumerate(self.chains)}, state["generators"])
        self.sweeps_done = int(state["sweeps_done"])


def flat_theta(model: HyperMolecule, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """θ in the order of :meth:`HyperMolecule.parameter_shapes` (for :class:`HyperMoleculeSampler`)."""
    return flatten_params({k: params[k] for k in model.parameter_shapes()})
