"""MCMC kernels (core/mcmc.py): invariance of known targets, adaptation, resumable streams.

Invariance tests start C independent chains at exact draws from the target and apply the
kernel T times: if the kernel leaves the target invariant, the C final states are again
exact, independent draws, so a sample moment m̂ has Monte-Carlo standard error
``sd(f)/√C`` exactly (no autocorrelation to estimate). We require |m̂ − m| < 4.5 SE for each
moment (a false alarm about 1 in 10⁵ per moment), and show that the same check catches
MALA without its Hastings correction (the unadjusted Langevin algorithm).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

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
from napari_cryohet.core.rotation import random_rotations

N_CHAINS = 20000
Z_MAX = 4.5

# Correlated 2D Gaussian with very different scales (a preconditioner matters).
COV = torch.tensor([[4.0, 1.2], [1.2, 0.5]], dtype=torch.float64)
PREC = torch.linalg.inv(COV)
CHOL = torch.linalg.cholesky(COV)
# Haario's banana: x1 ~ N(0, 1), x2 = y + B (x1² − 1), y ~ N(0, 1): E = 0, Var x1 = 1, Var x2 = 1 + 2B².
B = 0.5


def gauss_logp(x):
    return -0.5 * torch.einsum("...i,ij,...j->...", x, PREC, x)


def gauss_logp_grad(x):
    return gauss_logp(x), -(x @ PREC)


def gauss_draws(g):
    return torch.randn(N_CHAINS, 2, generator=g, dtype=torch.float64) @ CHOL.T


def banana_logp(x):
    return -0.5 * x[..., 0] ** 2 - 0.5 * (x[..., 1] - B * (x[..., 0] ** 2 - 1)) ** 2


def banana_logp_grad(x):
    r = x[..., 1] - B * (x[..., 0] ** 2 - 1)
    return banana_logp(x), torch.stack([-x[..., 0] + r * 2 * B * x[..., 0], -r], -1)


def banana_draws(g):
    z = torch.randn(N_CHAINS, 2, generator=g, dtype=torch.float64)
    return torch.stack([z[:, 0], z[:, 1] + B * (z[:, 0] ** 2 - 1)], -1)


GAUSS_MOMENTS = {"mean": torch.zeros(2, dtype=torch.float64), "second": COV}
BANANA_MOMENTS = {"mean": torch.zeros(2, dtype=torch.float64),
                  "second": torch.tensor([[1.0, 0.0], [0.0, 1 + 2 * B**2]], dtype=torch.float64)}


def _moment_z_scores(x, moments):
    """z = (sample − exact)/SE for E x_i and E x_i x_j (SE = sd/√C of each statistic)."""
    c = x.shape[0]
    z = []
    for i in range(2):
        z.append(float((x[:, i].mean() - moments["mean"][i]) / (x[:, i].std() / math.sqrt(c))))
        for j in range(i, 2):
            f = x[:, i] * x[:, j]
            z.append(float((f.mean() - moments["second"][i, j]) / (f.std() / math.sqrt(c))))
    return z


@pytest.mark.parametrize("target", ["gauss", "banana"])
def test_random_walk_mh_leaves_target_invariant(target):
    logp, draws, moments = ((gauss_logp, gauss_draws, GAUSS_MOMENTS) if target == "gauss"
                            else (banana_logp, banana_draws, BANANA_MOMENTS))
    g = make_generator(1, 0)
    x = draws(g)
    lp = logp(x)
    rec = AcceptanceRecorder()
    for _ in range(25):
        res = metropolis_hastings_step(x, lp, logp, lambda s, gen: (propose_gaussian(s, 1.5, gen), None), generator=g)
        x, lp = res.state, res.log_prob
        rec.record("rw", res.accepted)
    z = _moment_z_scores(x, moments)
    print(f"MH random walk on {target}: acceptance {rec.rates()['rw']:.2f}, z-scores "
          + " ".join(f"{v:+.2f}" for v in z))
    assert 0.2 < rec.rates()["rw"] < 0.8
    assert max(abs(v) for v in z) < Z_MAX


@pytest.mark.parametrize("target", ["gauss", "banana"])
def test_mala_leaves_target_invariant(target):
    logp_grad, draws, moments = ((gauss_logp_grad, gauss_draws, GAUSS_MOMENTS) if target == "gauss"
                                 else (banana_logp_grad, banana_draws, BANANA_MOMENTS))
    g = make_generator(2, 0)
    x = draws(g)
    current = logp_grad(x)
    precond = torch.tensor([4.0, 0.5], dtype=torch.float64)  # the marginal variances (x1, and ~x2 for the Gaussian)
    acc = []
    for _ in range(25):
        res = mala_step(x, logp_grad, step=0.8, preconditioner=precond, generator=g, current=current)
        x, current = res.state, (res.log_prob, res.grad)
        acc.append(float(res.accepted.double().mean()))
    z = _moment_z_scores(x, moments)
    print(f"MALA on {target}: acceptance {np.mean(acc):.2f}, z-scores " + " ".join(f"{v:+.2f}" for v in z))
    assert 0.2 < np.mean(acc) < 0.95
    assert max(abs(v) for v in z) < Z_MAX


def test_the_check_detects_a_biased_kernel():
    """Unadjusted Langevin (every MALA proposal accepted) at the same step inflates the
    Gaussian's variance: the moment check must fail for it."""
    g = make_generator(3, 0)
    x = gauss_draws(g)
    precond = torch.tensor([4.0, 0.5], dtype=torch.float64)
    for _ in range(25):
        _, grad = gauss_logp_grad(x)
        x = x + 0.5 * 1.2**2 * precond * grad + 1.2 * precond.sqrt() * torch.randn(x.shape, generator=g,
                                                                                    dtype=x.dtype)
    z = _moment_z_scores(x, GAUSS_MOMENTS)
    print("ULA z-scores " + " ".join(f"{v:+.1f}" for v in z))
    assert max(abs(v) for v in z) > 10 * Z_MAX


def test_frozen_coordinates_do_not_move():
    g = make_generator(4, 0)
    x = gauss_draws(g)[:100]
    res = mala_step(x, gauss_logp_grad, step=1.0, preconditioner=torch.tensor([1.0, 0.0], dtype=torch.float64),
                    generator=g)
    assert torch.equal(res.state[:, 1], x[:, 1])
    assert bool((res.state[:, 0] != x[:, 0]).any())


def test_reflected_state_walk_leaves_beta_invariant():
    """τ on [0, 1] with a Beta(2, 5) target: the reflected walk (no Hastings term) keeps it."""
    g = make_generator(5, 0)
    rng = np.random.default_rng(5)
    tau = torch.as_tensor(rng.beta(2.0, 5.0, N_CHAINS), dtype=torch.float64)[:, None]

    def logp(t):
        t = t[:, 0]
        return torch.log(t) + 4 * torch.log1p(-t)

    lp = logp(tau)
    for _ in range(25):
        res = metropolis_hastings_step(tau, lp, logp, lambda s, gen: (propose_unit_interval(s, 0.4, gen), None),
                                       generator=g)
        tau, lp = res.state, res.log_prob
    assert float(tau.min()) >= 0 and float(tau.max()) <= 1
    mean, var = 2 / 7, 2 * 5 / (49 * 8)
    t = tau[:, 0]
    z_mean = float((t.mean() - mean) / (t.std() / math.sqrt(N_CHAINS)))
    f = (t - mean) ** 2
    z_var = float((f.mean() - var) / (f.std() / math.sqrt(N_CHAINS)))
    print(f"reflected walk on Beta(2,5): z mean {z_mean:+.2f}, z var {z_var:+.2f}")
    assert abs(z_mean) < Z_MAX and abs(z_var) < Z_MAX


def test_rotation_proposals_sample_a_von_mises_target():
    """Target ∝ exp(κ R₃₃) on SO(3) from uniform starts (small steps + 10 % global jumps):
    R₃₃ = cos of the angle between R e_z and e_z has density ∝ exp(κu) on [−1, 1], mean
    coth κ − 1/κ; uniform starts stay uniform under a flat target (E R = 0)."""
    kappa = 2.0
    g = make_generator(6, 0)
    n = 4000
    rot = random_rotations(n, generator=g, dtype=torch.float64)

    def logp(r):
        return kappa * r[:, 2, 2]

    lp = logp(rot)
    for _ in range(60):
        res = metropolis_hastings_step(
            rot, lp, logp, lambda s, gen: (propose_rotation(s, 0.4, gen, global_probability=0.1), None), generator=g)
        rot, lp = res.state, res.log_prob
    orth = float((rot @ rot.transpose(1, 2) - torch.eye(3, dtype=rot.dtype)).abs().max())
    u = rot[:, 2, 2]
    exact = 1 / math.tanh(kappa) - 1 / kappa
    z = float((u.mean() - exact) / (u.std() / math.sqrt(n)))
    print(f"von Mises on SO(3): E R33 {float(u.mean()):.4f} (exact {exact:.4f}, z {z:+.2f}), |RRᵀ−I| {orth:.1e}")
    assert abs(z) < Z_MAX and orth < 1e-12
    flat = propose_rotation(random_rotations(n, generator=g, dtype=torch.float64), 0.4, g, global_probability=0.1)
    z_flat = float(flat.mean(0).abs().max() / (1 / math.sqrt(3 * n)))  # each entry: mean 0, variance 1/3
    assert z_flat < Z_MAX


def test_adaptation_reaches_target_then_freezes():
    g = make_generator(7, 0)
    x = gauss_draws(g)[:2000]
    lp = gauss_logp(x)
    step = AdaptiveStep(0.05, target_acceptance=0.4)
    for _ in range(200):
        res = metropolis_hastings_step(x, lp, gauss_logp,
                                       lambda s, gen: (propose_gaussian(s, float(step.value), gen), None), generator=g)
        x, lp = res.state, res.log_prob
        step.update(res.accept_prob)
    step.freeze()
    frozen = float(step.value)
    acc = []
    for _ in range(20):
        res = metropolis_hastings_step(x, lp, gauss_logp, lambda s, gen: (propose_gaussian(s, frozen, gen), None),
                                       generator=g)
        x, lp = res.state, res.log_prob
        step.update(res.accept_prob)
        acc.append(float(res.accept_prob.mean()))
    print(f"adapted step {frozen:.3f} from 0.05, acceptance after freezing {np.mean(acc):.3f} (target 0.4)")
    assert abs(np.mean(acc) - 0.4) < 0.03
    assert float(step.value) == frozen


def test_per_row_steps_and_preconditioner_estimate():
    """Per-particle steps adapt per row; the preconditioner estimate 1/E[(∂ log p)²] recovers
    the inverse precision diagonal (1/PREC_jj) of the Gaussian from exact draws."""
    g = make_generator(8, 0)
    pre = DiagonalPreconditioner(2, dtype=torch.float64)
    pre.update(gauss_logp_grad(gauss_draws(g))[1])
    expected = 1 / torch.diagonal(PREC)
    rel = float(((pre.value - expected) / expected).abs().max())
    print(f"preconditioner {pre.value.tolist()} vs 1/diag(precision) {expected.tolist()} (rel {rel:.3f})")
    assert rel < 0.05
    per_row = AdaptiveStep(1.0, target_acceptance=0.5, shape=(3,))
    per_row.update(torch.tensor([1.0, 0.0, 0.5]))
    assert per_row.value[0] > 1.0 > per_row.value[1] and abs(float(per_row.value[2]) - 1.0) < 1e-12


def _run(x, lp_grad, gens, steps):
    out = []
    for _ in range(steps):
        res = mala_step(x, banana_logp_grad, step=0.8, generator=gens["theta"], current=lp_grad)
        x, lp_grad = res.state, (res.log_prob, res.grad)
        mh = metropolis_hastings_step(x, lp_grad[0], banana_logp,
                                      lambda s, gen: (propose_gaussian(s, 0.5, gen), None), generator=gens["particles"])
        x = mh.state
        lp_grad = banana_logp_grad(x)
        out.append(x.clone())
    return x, lp_grad, torch.stack(out)


def test_saved_generator_states_continue_the_same_chains():
    """Same seed → same chain; saving the streams (and the state) and restoring them after
    more draws continues the chain draw for draw, as a resumed run must."""
    def fresh():
        return {"theta": make_generator(9, 0), "particles": make_generator(9, 1)}

    x0 = torch.zeros(8, 2, dtype=torch.float64)
    gens = fresh()
    x, lpg, first = _run(x0, banana_logp_grad(x0), gens, 10)
    saved_x, saved_streams = x.clone(), generator_states(gens)
    _, _, continued = _run(x, lpg, gens, 10)
    _run(continued[-1], banana_logp_grad(continued[-1]), gens, 5)  # the "killed" run draws further
    restore_generators(gens, saved_streams)
    _, _, resumed = _run(saved_x, banana_logp_grad(saved_x), gens, 10)
    assert torch.equal(continued, resumed)
    _, _, again = _run(x0, banana_logp_grad(x0), fresh(), 10)
    assert torch.equal(first, again)
    assert not torch.equal(first, continued)
    with pytest.raises(ValueError, match="do not match"):
        restore_generators(gens, {"theta": saved_streams["theta"]})
