"""Parsimonious eigenvector selection (Dsilva et al. 2018): harmonics vs unique directions."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryohet.core.graph import build_knn_graph
from napari_cryohet.core.harmonics import harmonic_residuals, parsimonious_order
from napari_cryohet.core.laplacian import laplacian_eigenmaps


@pytest.fixture(scope="module")
def rectangle_embedding():
    """Uniform points on [0, 1] x [0, 0.28] rotated into R^3, 8 eigenvectors.

    Neumann eigenvalues ∝ a^2 + (b / 0.28)^2: the short side's first eigenfunction
    (b = 1, 12.8) comes after cos(pi a x) for a = 1, 2, 3 (1, 4, 9).
    """
    rng = np.random.default_rng(1)
    x, y = rng.uniform(0, 1, 1500), rng.uniform(0, 0.28, 1500)
    basis = np.linalg.qr(rng.standard_normal((3, 3)))[0]
    emb = laplacian_eigenmaps(build_knn_graph(np.c_[x, y, 0 * x] @ basis.T, k=20, weights="self_tuning"), 8)
    return emb, x, y


def _abs_corr(v, t):
    return abs(np.corrcoef(v, t)[0, 1])


def test_harmonic_residuals_find_the_short_side_of_a_rectangle(rectangle_embedding):
    emb, x, y = rectangle_embedding
    phi = emb.eigenvectors
    corr_y = [_abs_corr(phi[:, j], y) for j in range(1, 8)]
    j_y = 1 + int(np.argmax(corr_y))
    assert j_y >= 4  # after >= 3 eigenfunctions of the long side in eigenvalue order
    assert _abs_corr(phi[:, 1], x) >= 0.95
    residuals, unique = harmonic_residuals(phi, trivial=emb.trivial)  # Dsilva et al.: on all earlier
    assert np.isnan(residuals[0]) and residuals[1] == 1.0
    assert residuals[j_y] > 0.5 and j_y in unique
    assert residuals[2] < 0.2 and residuals[3] < 0.2  # cos(2 pi x), cos(3 pi x): harmonics of phi_1
    np.testing.assert_array_equal(unique, [1, j_y])
    order = parsimonious_order(emb.trivial, unique)
    assert sorted(order.tolist()) == list(range(8)) and order[0] == 0
    first_two = phi[:, order[1:3]]
    assert max(_abs_corr(v, x) for v in first_two.T) >= 0.95
    # the y eigenfunction mixes a little with the product mode cos(pi x) cos(pi y / L2)
    # (eigenvalue 8% higher): |corr| with y is 0.92-0.96 over sampling seeds, 0.96 here
    assert max(_abs_corr(v, y) for v in first_two.T) >= 0.95
    # the greedy variant (regress on earlier uniques only) finds the same two directions first
    res_u, uniq_u = harmonic_residuals(phi, trivial=emb.trivial, regress_on="unique")
    assert list(uniq_u[:2]) == [1, j_y] and res_u[2] < 0.2


def test_harmonic_residuals_degenerate_cases(rng):
    phi = np.linalg.qr(np.c_[np.ones(50), rng.standard_normal((50, 3))])[0]
    phi[:, 0] = np.abs(phi[:, 0])
    r, u = harmonic_residuals(phi[:, :1])
    assert np.isnan(r[0]) and len(u) == 0  # only the trivial vector
    r, u = harmonic_residuals(phi[:, :2])
    assert np.isnan(r[0]) and r[1] == 1.0 and list(u) == [1]
    const = np.c_[phi[:, :2], np.full(50, 0.1)]  # a constant column explains nothing new
    r, u = harmonic_residuals(const)
    assert r[2] == 0.0 and list(u) == [1]
    r, u = harmonic_residuals(phi[:, 1:], trivial=np.zeros(3, bool))  # no trivial column
    assert r[0] == 1.0 and 0 in u and np.all(np.isfinite(r))
    assert harmonic_residuals(phi[:2])[0].shape == (4,)  # N < 3: every column unique
    with pytest.raises(ValueError, match="regress_on"):
        harmonic_residuals(phi, regress_on="some")
    with pytest.raises(ValueError, match="trivial"):
        harmonic_residuals(phi, trivial=np.ones(2, bool))
    np.testing.assert_array_equal(parsimonious_order(np.array([True, False, False, False]), [3], 3), [0, 3, 1])
