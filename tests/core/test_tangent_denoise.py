"""Tangent-space (local-PCA) denoising: normal noise removed, position along the manifold kept."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryohet.core.graph import GraphError
from napari_cryohet.core.tangent_denoise import tangent_denoise


def test_tangent_denoise_removes_normal_noise_of_a_plane(rng):
    """A square in a 2-plane of R^12 plus isotropic noise: the 10 normal directions lose
    most of their noise, the in-plane position moves by no more than the noise itself."""
    n, q, s = 3000, 12, 0.02
    basis = np.linalg.qr(rng.standard_normal((q, q)))[0]  # orthonormal columns
    uv = rng.uniform(0, 1, (n, 2))
    clean = uv @ basis[:, :2].T
    noise = s * rng.standard_normal((n, q))
    out = tangent_denoise(clean + noise, dim=2, k=40, n_iter=1)
    normal = (out - clean) @ basis[:, 2:]  # (n, 10) residual off the plane
    before = np.sqrt(((noise @ basis[:, 2:]) ** 2).mean(0).sum())
    after = np.sqrt((normal**2).mean(0).sum())
    assert after < 0.35 * before  # ~sqrt(2/40)-level leftovers of the local centroid
    inplane = (out - clean) @ basis[:, :2]
    assert np.sqrt((inplane**2).mean(0).sum()) < 1.5 * s * np.sqrt(2)


def test_tangent_denoise_pulls_a_noisy_circle_onto_it(rng):
    """A unit circle in R^10 with noise: the distance to the circle shrinks, the angle stays."""
    n, q, s = 2000, 10, 0.03
    theta = rng.uniform(0, 2 * np.pi, n)
    clean = np.zeros((n, q))
    clean[:, 0], clean[:, 1] = np.cos(theta), np.sin(theta)
    noisy = clean + s * rng.standard_normal((n, q))
    out = tangent_denoise(noisy, dim=1, k=30, n_iter=2)

    def off_circle(x):  # distance to the circle: radial in-plane part and the 8 other axes
        return np.sqrt((np.hypot(x[:, 0], x[:, 1]) - 1) ** 2 + (x[:, 2:] ** 2).sum(1))

    assert np.sqrt((off_circle(out) ** 2).mean()) < 0.4 * np.sqrt((off_circle(noisy) ** 2).mean())
    dtheta = np.angle(np.exp(1j * (np.arctan2(out[:, 1], out[:, 0]) - theta)))
    assert np.sqrt((dtheta**2).mean()) < 1.5 * s


def test_tangent_denoise_bad_input(rng):
    x = rng.standard_normal((50, 4))
    with pytest.raises(GraphError, match="dim"):
        tangent_denoise(x, dim=4, k=10)
    with pytest.raises(GraphError, match="k"):
        tangent_denoise(x, dim=2, k=2)
    with pytest.raises(GraphError, match="n_iter"):
        tangent_denoise(x, dim=2, k=10, n_iter=0)
