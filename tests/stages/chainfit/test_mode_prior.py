"""The normal-mode model's learned prior (empirical Bayes) against the closed-form answer of a
linear-Gaussian model: amplitudes ``b_i ~ N(μ, S)`` observed through ``y_i = b_i + ε_i``,
``ε_i ~ N(0, I)`` (Å of RMSD). The maximum-likelihood ``μ`` and ``S`` are the mean of the ``y_i``
and their covariance minus the noise's, clipped at zero — what EM must converge to."""

from __future__ import annotations

import numpy as np
import torch

from napari_cryohet.stages.chainfit.normal_modes import NormalModeAmplitudes


class _QuadraticProblem:
    """``misfit_i = α ‖chain_i − target_i‖²``, with ``α`` making the likelihood of the amplitudes
    ``N(y_i, I)`` when the misfit is read as the model reads it (−log-likelihood = misfit / 2c)."""

    def __init__(self, targets: torch.Tensor, alpha: float):
        self.targets, self.alpha = targets, alpha

    def misfit(self, coords: torch.Tensor, idx: np.ndarray, clean: bool) -> torch.Tensor:
        t = self.targets[torch.as_tensor(idx)]
        return self.alpha * ((coords - t) ** 2).sum(dim=(1, 2)).mean()


def _setup(seed: int = 0, n: int = 3000, m: int = 20):
    rng = np.random.default_rng(seed)
    ref = torch.as_tensor(rng.normal(0, 10, (m, 3)))
    q, _ = np.linalg.qr(rng.normal(size=(3 * m, 3)))
    modes = torch.as_tensor((q.T * np.sqrt(m)).reshape(3, m, 3))  # 1 Å RMSD per unit amplitude, orthogonal
    true_mean = np.array([1.5, -0.5, 0.0])
    true_sd = np.array([2.0, 1.0, 0.0])  # the third mode is not used by the particles
    b_true = true_mean + rng.normal(size=(n, 3)) * true_sd
    y = b_true + rng.normal(size=(n, 3))  # what each image says, 1 Å of noise per mode
    targets = ref + torch.einsum("nk,kmd->nmd", torch.as_tensor(y), modes)
    c = 0.3  # the noise scale σ²/P; α = c/m makes the likelihood precision 1 per mode
    return ref, modes, y, _QuadraticProblem(targets, c / m), c


def _map_amplitudes(model: NormalModeAmplitudes, y: np.ndarray, c: float) -> np.ndarray:
    """The exact MAP amplitudes under the model's current prior (precision 1 likelihood)."""
    prior_inv = model.prior_precision.numpy() / c
    mean = model.prior_mean.numpy()
    post = np.linalg.inv(np.eye(3) + prior_inv)
    return (y + prior_inv @ mean) @ post.T


def test_learned_prior_converges_to_the_maximum_likelihood_spread():
    ref, modes, y, problem, c = _setup()
    start_sd = np.array([3.0, 3.0, 3.0])
    model = NormalModeAmplitudes(ref, modes, len(y), prior_weights=torch.as_tensor(c / start_sd**2),
                                 noise_scale=c, learn_prior_until=100)
    rows = np.arange(len(y))
    for _ in range(100):
        with torch.no_grad():
            model.amplitudes.weight.copy_(torch.as_tensor(_map_amplitudes(model, y, c)))
        model.learn_prior(problem, rows, batch_size=1000)
    expected_cov = np.cov(y.T, bias=True) - np.eye(3)
    np.testing.assert_allclose(model.prior_mean.numpy(), y.mean(0), atol=1e-6)
    spread = model.prior_spread_a()
    np.testing.assert_allclose(spread[:2], np.sqrt(np.diag(expected_cov)[:2]), rtol=0.03)  # ≈ 2.0 and 1.0 Å
    # the unused mode: EM takes a zero variance s down as ds/dt = −s³ (unit likelihood precision),
    # s ≈ 1/√(2t): spread ≈ 0.27 Å after 100 updates, from 3 Å
    assert spread[2] < 0.35
    # which holds its amplitudes near the mean: the MAP amplitudes shrink the noise 10-fold
    b_hat = _map_amplitudes(model, y, c)
    assert np.abs(b_hat[:, 2] - y.mean(0)[2]).mean() < 0.1 * np.abs(y[:, 2] - y.mean(0)[2]).mean()


def test_prior_enters_the_loss_as_a_gaussian():
    """``penalty`` = mean (b − μ)ᵀ W (b − μ): zero at the mean, quadratic away from it."""
    ref, modes, y, problem, c = _setup(n=10)
    model = NormalModeAmplitudes(ref, modes, 10, prior_weights=torch.as_tensor([1.0, 2.0, 3.0]), noise_scale=c)
    with torch.no_grad():
        model.amplitudes.weight.zero_()
        model.amplitudes.weight[:, 1] = 2.0
    assert float(model.penalty(torch.arange(10)).detach()) == np.float64(2.0 * 4.0)
    np.testing.assert_allclose(model.prior_spread_a(), np.sqrt(c / np.array([1.0, 2.0, 3.0])))
