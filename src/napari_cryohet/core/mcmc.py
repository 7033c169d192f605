"""Markov-chain Monte Carlo kernels: batched Metropolis–Hastings and preconditioned MALA.

The kernels of Lederman, Andén & Singer 2020 (001_e1fd27914a9da292.txt §2.5–2.6, §4–5):
Metropolis–Hastings updates (eq. 15–16) for each particle's state, pose, shift and contrast
— independent given θ, so one call updates a whole batch, each row accepted or rejected on
its own — and the Metropolis-adjusted Langevin algorithm with a diagonal preconditioner
(eq. 17–19) for the hyper-molecule's coefficients θ.

Everything is generic: a kernel sees tensors and a ``log_prob`` callable, never the model.
Batches lead: a "state" is a tensor ``(B, ...)`` and ``log_prob`` returns ``(B,)``, one
independent chain (or particle) per row.

Step sizes adapt during burn-in only (:class:`AdaptiveStep`, :class:`DiagonalPreconditioner`
— call :meth:`~AdaptiveStep.freeze` when burn-in ends); an adapting kernel is not a
Markov chain with the right invariant law, a frozen one is. Randomness comes only from
``torch.Generator`` streams (:func:`make_generator`) whose states can be saved and restored
(:func:`generator_states`, :func:`restore_generators`), so a resumed run continues the same
chains draw for draw.

Why hand-written: the MCMC libraries for torch (Pyro, NumPyro's JAX kernels, BlackJAX)
sample one joint state with one accept/reject; here ~10⁵ particles are independent
conditionals updated in one batched call with one accept/reject per row, and θ is updated
by MALA between them (Remark 3 of 001 §2.5: a composition of kernels) — a few dozen lines.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from napari_cryohet.core.local_refine import axis_angle_to_matrix
from napari_cryohet.core.rotation import random_rotations

__all__ = [
    "MHResult",
    "MALAResult",
    "AdaptiveStep",
    "DiagonalPreconditioner",
    "AcceptanceRecorder",
    "make_generator",
    "generator_states",
    "restore_generators",
    "metropolis_hastings_step",
    "mala_step",
    "propose_gaussian",
    "propose_unit_interval",
    "propose_rotation",
]


# -- random streams ---------------------------------------------------------------------------
def make_generator(seed: int, stream: int, *, device: str | torch.device = "cpu") -> torch.Generator:
    """An independent ``torch.Generator`` for ``(seed, stream)`` (``numpy.random.SeedSequence``
    spawns the 63-bit seed, so neighbouring streams are not correlated)."""
    word = np.random.SeedSequence([int(seed), int(stream)]).generate_state(1, dtype=np.uint64)[0]
    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(int(word) & ((1 << 63) - 1))
    return gen


def generator_states(generators: dict[str, torch.Generator]) -> dict[str, torch.Tensor]:
    """``{name: ByteTensor}`` snapshot of each generator (CPU tensors, for a checkpoint)."""
    return {name: gen.get_state().clone() for name, gen in generators.items()}


def restore_generators(generators: dict[str, torch.Generator], states: dict[str, torch.Tensor]) -> None:
    """Set each generator to its saved state (:func:`generator_states`); names must match."""
    missing = set(generators) ^ set(states)
    if missing:
        raise ValueError(f"saved random-number streams {sorted(states)} do not match {sorted(generators)}")
    for name, gen in generators.items():
        gen.set_state(states[name].cpu())


# -- Metropolis–Hastings ----------------------------------------------------------------------
@dataclass
class MHResult:
    """One batched Metropolis–Hastings update: the new ``state (B, ...)``, its ``log_prob (B,)``,
    ``accepted (B,)`` bool and ``accept_prob (B,)`` = ``min(1, r)`` of eq. 16."""

    state: torch.Tensor
    log_prob: torch.Tensor
    accepted: torch.Tensor
    accept_prob: torch.Tensor


def _accept(log_ratio: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    log_ratio = torch.nan_to_num(log_ratio, nan=-torch.inf)
    u = torch.rand(log_ratio.shape, generator=generator, device=log_ratio.device, dtype=log_ratio.dtype)
    accepted = torch.log(u) < log_ratio
    return accepted, torch.exp(log_ratio.clamp(max=0.0))


def _where_rows(mask: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.reshape(mask.shape + (1,) * (new.dim() - mask.dim())), new, old)


def metropolis_hastings_step(
    state: torch.Tensor,
    log_prob: torch.Tensor,
    log_prob_fn: Callable[[torch.Tensor], torch.Tensor],
    propose: Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor | None]],
    *,
    generator: torch.Generator,
) -> MHResult:
    """One Metropolis–Hastings update of every row (eq. 15–16 of 001).

    Parameters
    ----------
    state
        ``(B, ...)`` current states, one independent chain per row.
    log_prob
        ``(B,)`` unnormalised log density at ``state`` (carried from the previous step).
    log_prob_fn
        ``(B, ...) → (B,)`` unnormalised log density (``-inf`` outside the support).
    propose
        ``(state, generator) → (proposal, log_q_ratio)`` with ``log_q_ratio (B,)`` =
        ``log q(x'→x) − log q(x→x')``, or ``None`` for a symmetric proposal.
    generator
        The stream for the proposal and the acceptance draws.

    Returns
    -------
    :class:`MHResult` (rejected rows keep their state and log density).
    """
    proposal, log_q_ratio = propose(state, generator)
    proposal_log_prob = log_prob_fn(proposal)
    log_ratio = proposal_log_prob - log_prob
    if log_q_ratio is not None:
        log_ratio = log_ratio + log_q_ratio
    accepted, accept_prob = _accept(log_ratio, generator)
    return MHResult(_where_rows(accepted, proposal, state), torch.where(accepted, proposal_log_prob, log_prob),
                    accepted, accept_prob)


def _rows(step: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """A scalar or ``(B,)`` step broadcast against ``x (B, ...)``."""
    s = torch.as_tensor(step, device=x.device, dtype=x.dtype)
    return s.reshape(s.shape + (1,) * (x.dim() - s.dim())) if s.dim() else s


def propose_gaussian(x: torch.Tensor, step: torch.Tensor | float, generator: torch.Generator) -> torch.Tensor:
    """Symmetric random walk ``x + step · N(0, I)`` (``step`` scalar or ``(B,)``)."""
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + _rows(step, x) * noise


def propose_unit_interval(x: torch.Tensor, step: torch.Tensor | float, generator: torch.Generator) -> torch.Tensor:
    """Gaussian random walk reflected into ``[0, 1]`` (for states τ). Reflection keeps the kernel
    symmetric (its density is a sum over mirror images of a symmetric Gaussian), so no
    Hastings correction is needed and the uniform prior on [0, 1] is respected."""
    y = torch.remainder(propose_gaussian(x, step, generator), 2.0)
    return torch.where(y > 1.0, 2.0 - y, y)


def propose_rotation(rotations: torch.Tensor, step_rad: torch.Tensor | float, generator: torch.Generator, *,
                     global_probability: float = 0.0) -> torch.Tensor:
    """``(B, 3, 3)`` proposals: ``exp([ω]ₓ) R`` with ``ω ~ N(0, step² I)`` (a small random rotation),
    or, with probability ``global_probability`` per row, a Haar-uniform rotation (a global
    jump out of a wrong basin).

    Both kernels are symmetric with respect to the Haar measure (``ω`` and ``−ω`` are equally
    likely; the uniform proposal does not depend on ``R``), so with a uniform prior on poses
    no Hastings correction is needed.
    """
    b = rotations.shape[0]
    omega = torch.randn(b, 3, generator=generator, device=rotations.device, dtype=rotations.dtype)
    proposal = axis_angle_to_matrix(omega * _rows(step_rad, omega)) @ rotations
    if global_probability > 0:
        jump = torch.rand(b, generator=generator, device=rotations.device) < global_probability
        fresh = random_rotations(b, generator=generator, device=rotations.device, dtype=rotations.dtype)
        proposal = torch.where(jump[:, None, None], fresh, proposal)
    return proposal


# -- MALA -------------------------------------------------------------------------------------
@dataclass
class MALAResult:
    """One MALA update: ``state``, its ``log_prob`` and ``grad``, ``accepted``, ``accept_prob``
    (shapes ``(..., n)``, ``(...)``, ``(..., n)``, ``(...)``)."""

    state: torch.Tensor
    log_prob: torch.Tensor
    grad: torch.Tensor
    accepted: torch.Tensor
    accept_prob: torch.Tensor


def _langevin_log_q(to: torch.Tensor, frm: torch.Tensor, grad: torch.Tensor, step: torch.Tensor,
                    precond: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """``log N(to; frm + (h²/2) A ∇, h² A)`` up to a constant, over the active coordinates."""
    mean = frm + 0.5 * step**2 * precond * grad
    var = step**2 * torch.where(active, precond, torch.ones_like(precond))
    return -(torch.where(active, (to - mean) ** 2 / var, torch.zeros_like(to))).sum(-1) / 2


def mala_step(
    state: torch.Tensor,
    log_prob_and_grad: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    *,
    step: torch.Tensor | float,
    preconditioner: torch.Tensor | None = None,
    generator: torch.Generator,
    current: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> MALAResult:
    """One preconditioned MALA update (eq. 19 of 001), accepted by the Hastings ratio (eq. 15).

    ``x' = x + (h²/2) A ∇log p(x) + h √A ξ``, ``ξ ~ N(0, I)``, with ``A`` diagonal.

    Parameters
    ----------
    state
        ``(n,)`` one chain or ``(C, n)`` independent chains.
    log_prob_and_grad
        ``x → (log p(x), ∇ log p(x))`` with shapes ``(...)`` and ``(..., n)``.
    step
        ``h`` (scalar, or ``(C,)`` per chain).
    preconditioner
        ``(n,)`` diagonal of ``A`` (default ones); zero entries freeze those coordinates (the
        proposal leaves them unchanged and they drop out of the ratio: frequency marching).
    generator
        The stream.
    current
        ``(log p, ∇ log p)`` at ``state`` if already known (saves one evaluation).

    Returns
    -------
    :class:`MALAResult`.
    """
    logp, grad = current if current is not None else log_prob_and_grad(state)
    precond = torch.ones_like(state) if preconditioner is None else preconditioner.to(state).expand_as(state)
    active = precond > 0
    h = torch.as_tensor(step, device=state.device, dtype=state.dtype)
    h = h[..., None] if h.dim() else h
    noise = torch.randn(state.shape, generator=generator, device=state.device, dtype=state.dtype)
    proposal = state + 0.5 * h**2 * precond * grad + h * precond.clamp_min(0).sqrt() * noise
    logp_new, grad_new = log_prob_and_grad(proposal)
    log_ratio = (logp_new - logp + _langevin_log_q(state, proposal, grad_new, h, precond, active)
                 - _langevin_log_q(proposal, state, grad, h, precond, active))
    accepted, accept_prob = _accept(log_ratio, generator)
    return MALAResult(_where_rows(accepted, proposal, state), torch.where(accepted, logp_new, logp),
                      _where_rows(accepted, grad_new, grad), accepted, accept_prob)


# -- adaptation (burn-in only) ----------------------------------------------------------------
class AdaptiveStep:
    """A step size tuned toward a target acceptance rate during burn-in, then frozen.

    Robbins–Monro on ``log h``: ``log h ← log h + γ_t (ᾱ − α*)`` with ``γ_t = rate / (t+1)^0.6``
    and ``ᾱ`` the mean acceptance probability of the update (per row when the step is
    ``(B,)``, one step per particle). After :meth:`freeze` the step no longer changes.

    Typical targets: 0.234–0.44 for random walks (0.44 in 1D), 0.574 for MALA.
    """

    def __init__(self, initial: float | torch.Tensor, *, target_acceptance: float, rate: float = 1.0,
                 shape: tuple[int, ...] = (), device: str | torch.device = "cpu",
                 min_step: float = 1e-8, max_step: float = float("inf")) -> None:
        if not 0 < target_acceptance < 1:
            raise ValueError(f"target_acceptance must be in (0, 1), got {target_acceptance}")
        init = torch.as_tensor(initial, dtype=torch.float64, device=device)
        if bool((init <= 0).any()):
            raise ValueError(f"initial step size must be positive, got {initial}")
        self.log_step = torch.log(init).expand(shape).clone() if shape else torch.log(init).clone()
        self.target, self.rate = float(target_acceptance), float(rate)
        self.min_step, self.max_step = float(min_step), float(max_step)
        self.iteration = 0
        self.adapting = True

    @property
    def value(self) -> torch.Tensor:
        """The current step (float64, shape of the adapter)."""
        return torch.exp(self.log_step)

    def update(self, accept_prob: torch.Tensor) -> None:
        """Move the step after one update whose acceptance probabilities were ``accept_prob``."""
        if not self.adapting:
            return
        p = accept_prob.detach().to(self.log_step.device, torch.float64)
        mean = p if p.shape == self.log_step.shape else p.mean()
        gamma = self.rate / (self.iteration + 1) ** 0.6
        self.log_step = (self.log_step + gamma * (mean - self.target)).clamp(
            float(np.log(self.min_step)), float(np.log(self.max_step)))
        self.iteration += 1

    def freeze(self) -> None:
        """End of burn-in: the step is fixed from now on."""
        self.adapting = False

    def state_dict(self) -> dict:
        return {"log_step": self.log_step.cpu().clone(), "iteration": self.iteration, "adapting": self.adapting}

    def load_state_dict(self, state: dict) -> None:
        self.log_step = state["log_step"].to(self.log_step.device)
        self.iteration, self.adapting = int(state["iteration"]), bool(state["adapting"])


class DiagonalPreconditioner:
    """The diagonal ``A`` of eq. 19 estimated during burn-in as ``1 / E[(∂ log p)²]``.

    For a Gaussian target with precision ``λ_j`` (per coordinate) ``E[(∂_j log p)²] = λ_j``
    (the Fisher identity), so ``A_j`` is the marginal variance: the scaling MALA wants.
    Averages over iterations (and over chains if ``grad`` has a leading batch). ``mask``
    zeros mark frozen coordinates (``A = 0``). After :meth:`freeze` ``A`` is fixed.
    """

    def __init__(self, n: int, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 mask: torch.Tensor | None = None, floor: float = 1e-12) -> None:
        self.sum_sq = torch.zeros(n, device=device, dtype=torch.float64)
        self.count = 0
        self.mask = torch.ones(n, dtype=torch.bool, device=device) if mask is None else mask.to(device, torch.bool)
        self.dtype, self.floor = dtype, float(floor)
        self.adapting = True

    def update(self, grad: torch.Tensor) -> None:
        if not self.adapting:
            return
        g = grad.detach().to(self.sum_sq.device, torch.float64).reshape(-1, self.sum_sq.shape[0])
        self.sum_sq += (g * g).sum(0)
        self.count += g.shape[0]

    @property
    def value(self) -> torch.Tensor:
        """``(n,)`` diagonal of ``A`` (ones before any gradient, zeros where masked)."""
        if self.count == 0:
            a = torch.ones_like(self.sum_sq)
        else:
            a = 1.0 / (self.sum_sq / self.count).clamp_min(self.floor)
        return torch.where(self.mask, a, torch.zeros_like(a)).to(self.dtype)

    def freeze(self) -> None:
        self.adapting = False

    def state_dict(self) -> dict:
        return {"sum_sq": self.sum_sq.cpu().clone(), "count": self.count, "mask": self.mask.cpu().clone(),
                "adapting": self.adapting}

    def load_state_dict(self, state: dict) -> None:
        dev = self.sum_sq.device
        self.sum_sq, self.mask = state["sum_sq"].to(dev), state["mask"].to(dev)
        self.count, self.adapting = int(state["count"]), bool(state["adapting"])


class AcceptanceRecorder:
    """Acceptance counts per kernel name (``"tau"``, ``"pose"``, ``"theta"`` ...).

    :meth:`rates` gives the acceptance rate of each since the last :meth:`reset` (e.g. per
    pass, for the traces).
    """

    def __init__(self) -> None:
        self.accepted: dict[str, int] = {}
        self.proposed: dict[str, int] = {}

    def record(self, name: str, accepted: torch.Tensor) -> None:
        self.accepted[name] = self.accepted.get(name, 0) + int(accepted.sum())
        self.proposed[name] = self.proposed.get(name, 0) + int(accepted.numel())

    def rates(self) -> dict[str, float]:
        return {name: self.accepted[name] / max(1, self.proposed[name]) for name in self.proposed}

    def reset(self) -> None:
        self.accepted.clear()
        self.proposed.clear()
