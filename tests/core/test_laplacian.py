"""Graph Laplacian eigenmaps against analytic answers (circle, torus) and each other."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse

from napari_cryohet.core.graph import GraphError, build_gaussian_graph, build_knn_graph
from napari_cryohet.core.laplacian import (
    density_normalize,
    laplacian_eigenmaps,
    normalized_laplacian,
)


def _circle(n, rng, noise=0.0):
    theta = rng.uniform(0, 2 * np.pi, n)
    x = np.c_[np.cos(theta), np.sin(theta)] + noise * rng.standard_normal((n, 2))
    return x, theta


def _torus(n, rng, radii=(1.0, 0.6), q=6):
    """Flat torus with unequal circle radii, isometrically rotated into R^q."""
    a, b = rng.uniform(0, 2 * np.pi, (2, n))
    x = np.c_[radii[0] * np.cos(a), radii[0] * np.sin(a), radii[1] * np.cos(b), radii[1] * np.sin(b)]
    basis = np.linalg.qr(rng.standard_normal((q, q)))[0][:4]  # (4, q) orthonormal rows
    return x @ basis, a, b


def _best_r2(vectors, targets):
    """R^2 of the least-squares fit of each target from ``vectors`` (+ constant)."""
    design = np.c_[np.ones(len(vectors)), vectors]
    out = []
    for t in targets.T:
        coef, *_ = np.linalg.lstsq(design, t, rcond=None)
        out.append(1 - np.var(t - design @ coef) / np.var(t))
    return np.array(out)


@pytest.mark.parametrize("graph", ["gaussian", "knn_binary", "knn_self_tuning"])
def test_circle_eigenvectors_are_cos_sin(graph, rng):
    x, theta = _circle(800, rng, noise=0.01)
    if graph == "gaussian":
        w = build_gaussian_graph(x, sigma=0.15)
    else:
        w = build_knn_graph(x, k=10, weights=graph.removeprefix("knn_"))
    emb = laplacian_eigenmaps(w, 4)
    assert emb.eigenvalues[0] < 1e-10 and emb.trivial[0] and not emb.trivial[1:].any()
    # trivial eigenvector = D^1/2 1 normalised, positive by the sign convention
    expect = np.sqrt(emb.degrees) / np.linalg.norm(np.sqrt(emb.degrees))
    np.testing.assert_allclose(emb.eigenvectors[:, 0], expect, atol=1e-8)
    pair = emb.eigenvectors[:, 1:3]
    # cos and sin each lie in the span of the first nontrivial pair ...
    assert np.all(_best_r2(pair, np.c_[np.cos(theta), np.sin(theta)]) >= 0.95**2)
    # ... and each eigenvector correlates with cos/sin of a shifted angle at >= 0.95
    for v in pair.T:
        phase = np.arctan2(v @ np.sin(theta), v @ np.cos(theta))
        assert abs(np.corrcoef(v, np.cos(theta - phase))[0, 1]) >= 0.95
    # eigenvalue ordering and orthonormality
    assert np.all(np.diff(emb.eigenvalues) >= -1e-12)
    np.testing.assert_allclose(emb.eigenvectors.T @ emb.eigenvectors, np.eye(4), atol=1e-8)


def test_torus_eigenvector_pairs_recover_both_angles(rng):
    # radii 1 and 0.6: the 0.6-circle is shorter, so its first harmonics have the larger
    # eigenvalue: pair (1, 2) ~ angle a, pair (3, 4) ~ angle b
    x, a, b = _torus(3000, rng)
    emb = laplacian_eigenmaps(build_knn_graph(x, k=12, weights="self_tuning"), 5, method="sparse")
    first, second = emb.eigenvectors[:, 1:3], emb.eigenvectors[:, 3:5]
    assert np.all(_best_r2(first, np.c_[np.cos(a), np.sin(a)]) >= 0.95**2)
    assert np.all(_best_r2(second, np.c_[np.cos(b), np.sin(b)]) >= 0.95**2)
    for v in first.T:  # individually: |corr| with cos of the (rotated) true angle
        phase = np.arctan2(v @ np.sin(a), v @ np.cos(a))
        assert abs(np.corrcoef(v, np.cos(a - phase))[0, 1]) >= 0.95
    for v in second.T:
        phase = np.arctan2(v @ np.sin(b), v @ np.cos(b))
        assert abs(np.corrcoef(v, np.cos(b - phase))[0, 1]) >= 0.95
    # and the pairs do not mix the angles
    assert np.all(_best_r2(first, np.c_[np.cos(b), np.sin(b)]) < 0.05)


def test_dense_and_sparse_give_the_same_subspace(rng):
    x, _, _ = _torus(2000, rng)
    w = build_knn_graph(x, k=10, weights="self_tuning")
    dense = laplacian_eigenmaps(w, 5, method="dense")
    sparse = laplacian_eigenmaps(w, 5, method="sparse")
    multi = laplacian_eigenmaps(w, 5, method="multilevel", tol_multilevel=1e-4)
    np.testing.assert_allclose(sparse.eigenvalues, dense.eigenvalues, atol=1e-9)
    assert np.max(scipy.linalg.subspace_angles(dense.eigenvectors, sparse.eigenvectors)) < 1e-3
    assert np.max(scipy.linalg.subspace_angles(dense.eigenvectors, multi.eigenvectors)) < 1e-3
    # same sign convention: non-degenerate columns agree entry by entry
    np.testing.assert_allclose(dense.eigenvectors[:, 0], sparse.eigenvectors[:, 0], atol=1e-8)


def test_normalized_laplacian_matches_definition(rng):
    x = rng.standard_normal((60, 3))
    w = build_gaussian_graph(x, sigma=1.0)
    d = w.sum(axis=1)
    expect = np.diag(d**-0.5) @ (np.diag(d) - w) @ np.diag(d**-0.5)  # Appendix B of seed 000
    np.testing.assert_allclose(normalized_laplacian(w), expect, atol=1e-12)
    sparse = normalized_laplacian(scipy.sparse.csr_matrix(w))
    assert scipy.sparse.issparse(sparse)
    np.testing.assert_allclose(sparse.toarray(), expect, atol=1e-12)
    # eq. 3.5: W_ij = exp(-|x_i - x_j|^2 / (2 sigma^2)), diagonal 1
    np.testing.assert_allclose(w[3, 7], np.exp(-np.sum((x[3] - x[7]) ** 2) / 2.0))
    assert w[5, 5] == 1.0
    thresholded = build_gaussian_graph(x, sigma=1.0, threshold=0.1)
    np.testing.assert_allclose(thresholded.toarray(), np.where(w >= 0.1, w, 0.0))


def test_degree_zero_nodes_raise(rng):
    x = np.r_[rng.standard_normal((50, 2)), [[1e3, 1e3]]]  # a far outlier
    w = build_gaussian_graph(x, sigma=0.5)
    with pytest.raises(GraphError, match="degree-zero"):
        laplacian_eigenmaps(w, 3)
    with pytest.raises(GraphError, match="degree-zero"):
        normalized_laplacian(scipy.sparse.csr_matrix(w))
    w_iso = np.ones((4, 4))
    w_iso[3, :3] = w_iso[:3, 3] = 0
    with pytest.raises(GraphError, match="index 3"):
        laplacian_eigenmaps(w_iso, 2, method="dense")


def test_disconnected_graph_reports_components(rng):
    x = np.r_[rng.standard_normal((100, 2)), 100 + rng.standard_normal((100, 2))]
    emb = laplacian_eigenmaps(build_knn_graph(x, k=5), 3)
    assert emb.n_components == 2
    np.testing.assert_allclose(emb.eigenvalues[:2], 0, atol=1e-8)


def test_reproducible_and_sign_convention(rng):
    x, _, _ = _torus(1500, rng)
    w = build_knn_graph(x, k=10)
    one = laplacian_eigenmaps(w, 6, method="sparse", seed=3)
    two = laplacian_eigenmaps(w, 6, method="sparse", seed=3)
    np.testing.assert_array_equal(one.eigenvectors, two.eigenvectors)
    rows = np.argmax(np.abs(one.eigenvectors), axis=0)
    assert np.all(one.eigenvectors[rows, np.arange(6)] > 0)


# ------------------------------------------------------------------ density normalisation


def test_alpha_one_gives_laplace_beltrami_eigenfunctions_on_a_nonuniform_circle(rng):
    """Coifman & Lafon 2006: with α = 1 the random-walk eigenvectors φ_k/φ_0 converge to the
    Laplace-Beltrami eigenfunctions cos θ, sin θ whatever the sampling density; α = 0
    (the plain normalised graph) is pulled by the density ∝ 1 + 0.8 cos θ."""
    n = 1500
    theta = np.empty(0)
    while len(theta) < n:  # rejection sampling
        t = rng.uniform(0, 2 * np.pi, 4 * n)
        theta = np.r_[theta, t[rng.uniform(0, 1.8, 4 * n) < 1 + 0.8 * np.cos(t)]]
    theta = theta[:n]
    x = np.c_[np.cos(theta), np.sin(theta)]
    w = build_gaussian_graph(x, sigma=0.1)
    target = np.c_[np.cos(theta), np.sin(theta)]
    r2 = {}
    for alpha in (0.0, 1.0):
        phi = laplacian_eigenmaps(density_normalize(w, alpha), 3).eigenvectors
        r2[alpha] = _best_r2(phi[:, 1:3] / phi[:, :1], target)
    assert np.all(r2[1.0] > 0.995)
    assert np.all(r2[0.0] < 0.97)
    # sparse and dense give the same matrix; α = 0 is the identity
    sparse = build_knn_graph(x, k=10, weights="self_tuning")
    np.testing.assert_allclose(density_normalize(sparse, 0.5).toarray(), density_normalize(sparse.toarray(), 0.5),
                               rtol=1e-12)
    assert density_normalize(sparse, 0.0) is sparse
    with pytest.raises(GraphError, match="alpha"):
        density_normalize(sparse, 1.5)
