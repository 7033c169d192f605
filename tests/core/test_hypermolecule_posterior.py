"""Posterior of composite hyper-molecules (core/hypermolecule_posterior.py)."""

from __future__ import annotations

import torch
from scipy.stats import spearmanr

from napari_cryohet.core.hypermolecule import Component, HyperMolecule
from napari_cryohet.core.hypermolecule_posterior import (
    HyperMoleculePriors,
    ImageData,
    ParticleVariables,
    flatten_params,
    image_log_likelihood,
    particle_log_posterior,
    projection_spectra,
    shift_and_scale,
    theta_log_posterior_and_grad,
    unflatten_params,
)
from napari_cryohet.core.mcmc import (
    AdaptiveStep,
    make_generator,
    mala_step,
    metropolis_hastings_step,
    propose_unit_interval,
)
from napari_cryohet.core.projection import apply_ctf_and_shift
from napari_cryohet.core.rotation import random_rotations

C2_Z = ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0))
CTF = {"defocus_u_a": torch.tensor([12000.0, 15000.0, 20000.0]), "defocus_v_a": torch.tensor([11000.0, 15000.0, 19000.0]),
       "defocus_angle_rad": torch.tensor([0.3, 0.0, 1.0]), "voltage_kv": 300.0, "cs_mm": 2.7, "amplitude_contrast": 0.1}


def _model(dtype=torch.float64) -> HyperMolecule:
    comps = [
        Component("base", radius_a=8.0),
        Component("arm1", centre_a=(14.0, 0.0, 0.0), radius_a=6.0, state_dim=1, state_order=2, trajectory=True),
        Component("arm2", state_dim=1, state_order=2, trajectory=True, copy_of="arm1", copy_rotation=C2_Z),
    ]
    return HyperMolecule(comps, spacing_a=4.0, dtype=dtype)


def _params(model, seed):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g, dtype=model.dtype) for k, s in model.parameter_shapes().items()}


def _particles(n, model, seed):
    g = make_generator(seed, 0)
    return ParticleVariables(torch.rand(n, model.state_dim, generator=g, dtype=model.dtype),
                             random_rotations(n, generator=g, dtype=model.dtype),
                             3 * torch.randn(n, 2, generator=g, dtype=model.dtype),
                             1 + 0.1 * torch.randn(n, generator=g, dtype=model.dtype))


def test_likelihood_is_the_real_space_gaussian_likelihood():
    """With white noise of pixel variance v and σ_k² = D² v, the Fourier-space likelihood
    (CTF, shift, contrast applied to the spectra) equals −Σ_pixels (y − x)²/2v with x built in
    real space by projection.apply_ctf_and_shift (Parseval; same shift and CTF conventions)."""
    model = _model()
    params = _params(model, 0)
    part = _particles(3, model, 1)
    d, apix, v = 32, 2.5, 0.7
    clean = part.contrast[:, None, None] * apply_ctf_and_shift(
        model.project(params, part.tau, part.rotations, d=d, apix=apix), apix=apix, ctf=CTF, shifts_a=part.shifts_a)
    g = torch.Generator().manual_seed(2)
    images = clean + v**0.5 * torch.randn(clean.shape, generator=g, dtype=clean.dtype)
    data = ImageData.from_images(images, apix=apix, ctf=CTF, noise_var=d * d * v)
    pred = shift_and_scale(projection_spectra(model, params, part.tau, part.rotations, d=d, apix=apix, ctf=data.ctf),
                           part.shifts_a, part.contrast, apix=apix)
    fourier = image_log_likelihood(pred, data.spectra, data.noise_var)
    real = -((images - clean) ** 2).sum((-2, -1)) / (2 * v)
    rel = float(((fourier - real) / real).abs().max())
    print(f"Fourier vs real-space log-likelihood: {fourier.tolist()} vs {real.tolist()} (rel {rel:.1e})")
    assert rel < 1e-10
    # the default noise estimate (background outside the inscribed circle) is near D² v
    est = float(ImageData.from_images(images, apix=apix).noise_var[0, 0])
    assert abs(est / (d * d * v) - 1) < 0.2


def test_theta_gradient_matches_finite_differences_and_batching():
    model = _model()
    params = _params(model, 3)
    part = _particles(5, model, 4)
    d, apix = 24, 3.0
    images = torch.randn(5, d, d, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    data = ImageData.from_images(images, apix=apix, noise_var=float(d * d))
    priors = HyperMoleculePriors(smoothness_weight=0.3, coefficient_std=2.0)
    theta = flatten_params(params)
    value, grad = theta_log_posterior_and_grad(model, theta, part, data, priors, batch_size=2)
    value_all, grad_all = theta_log_posterior_and_grad(model, theta, part, data, priors, batch_size=64)
    assert torch.allclose(value, value_all, rtol=1e-12) and torch.allclose(grad, grad_all, rtol=1e-10, atol=1e-10)
    g = torch.Generator().manual_seed(6)
    worst = 0.0
    for _ in range(4):
        direction = torch.randn(theta.shape, generator=g, dtype=theta.dtype)
        eps = 1e-5
        plus, _ = theta_log_posterior_and_grad(model, theta + eps * direction, part, data, priors)
        minus, _ = theta_log_posterior_and_grad(model, theta - eps * direction, part, data, priors)
        fd = float((plus - minus) / (2 * eps))
        an = float(grad @ direction)
        worst = max(worst, abs(fd - an) / abs(an))
    print(f"directional derivative: autograd vs central difference, worst rel {worst:.1e}")
    assert worst < 1e-6


def test_weight_sharing_holds_after_every_mala_update():
    """After each MALA update of θ, the copy's blobs are the C₂ image of the source's at the same state."""
    model = _model()
    params = _params(model, 7)
    part = _particles(6, model, 8)
    d, apix = 24, 3.0
    truth = model.project(params, part.tau, part.rotations, d=d, apix=apix)
    data = ImageData.from_images(truth, apix=apix, noise_var=float(d * d) * 0.01)
    shapes = model.parameter_shapes()
    theta = 0.5 * flatten_params(params)
    g = make_generator(9, 0)
    rot = torch.tensor(C2_Z, dtype=torch.float64)
    k_base, k_arm = len(model.blob_centres("base")), len(model.blob_centres("arm1"))
    t = torch.tensor([[0.2, 0.2]], dtype=torch.float64)
    part_id = ParticleVariables(part.tau, part.rotations, torch.zeros_like(part.shifts_a), torch.ones_like(part.contrast))

    def target(x):
        return theta_log_posterior_and_grad(model, x, part_id, data, HyperMoleculePriors())

    current = target(theta)
    accepted = 0
    for _ in range(5):
        res = mala_step(theta, target, step=1e-3, generator=g, current=current)
        theta, current = res.state, (res.log_prob, res.grad)
        accepted += int(res.accepted)
        pos, mass = model.blobs(unflatten_params(theta, shapes), t)
        src = slice(k_base, k_base + k_arm)
        cpy = slice(k_base + k_arm, k_base + 2 * k_arm)
        assert torch.allclose(pos[0, cpy], pos[0, src] @ rot.T, atol=1e-12)
        assert torch.allclose(mass[0, cpy], mass[0, src], atol=1e-12)
    assert accepted > 0


def test_state_mh_recovers_known_states():
    """θ and poses known, noisy images (pixel SNR 2): batched MH on each particle's two arm
    states (each arm slides 12 Å along z over τ ∈ [0, 1]) from uniform random starts ranks
    the true states (|Spearman ρ| per arm)."""
    model = _model()
    params = {k: v.abs() for k, v in _params(model, 10).items()}  # positive masses
    params["arm1.coefficients"][:, 1:] = 0.0  # a rigid arm: the state moves it (τ → position is one-to-one)
    params["arm1.trajectory"] = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 12.0]], dtype=torch.float64)
    n, d, apix = 60, 24, 3.0
    truth = _particles(n, model, 11)
    truth.shifts_a.zero_()
    truth.contrast.fill_(1.0)
    clean = model.project(params, truth.tau, truth.rotations, d=d, apix=apix)
    v = 0.5 * float(clean.var())
    g_noise = torch.Generator().manual_seed(12)
    images = clean + v**0.5 * torch.randn(clean.shape, generator=g_noise, dtype=clean.dtype)
    data = ImageData.from_images(images, apix=apix, noise_var=d * d * v)
    priors = HyperMoleculePriors()
    g = make_generator(13, 0)
    part = truth.clone()
    part.tau = torch.rand(n, 2, generator=g, dtype=torch.float64)
    idx = torch.arange(n)

    def logp(tau):
        return particle_log_posterior(model, params, ParticleVariables(tau, part.rotations, part.shifts_a,
                                                                       part.contrast), data, idx, priors)

    step = AdaptiveStep(0.3, target_acceptance=0.4, shape=(n,))
    lp = logp(part.tau)
    running = torch.zeros_like(part.tau)
    for it in range(80):
        res = metropolis_hastings_step(part.tau, lp, logp,
                                       lambda s, gen: (propose_unit_interval(s, step.value.to(s), gen), None),
                                       generator=g)
        part.tau, lp = res.state, res.log_prob
        step.update(res.accept_prob)
        if it == 40:
            step.freeze()
        if it >= 40:
            running += part.tau / 40
    rho = [abs(spearmanr(running[:, k], truth.tau[:, k])[0]) for k in range(2)]
    print(f"state recovery (posterior mean of 40 draws after burn-in), |Spearman ρ| per arm: "
          f"{rho[0]:.3f}, {rho[1]:.3f}")
    assert min(rho) > 0.9
