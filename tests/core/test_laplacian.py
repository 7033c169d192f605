"""Graph Laplacian eigenmaps against analytic answers (circle, torus) and each other."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse

from napari_cryohet.core.laplacian import (
    GraphError,
    build_gaussian_graph,
    build_knn_graph,
    density_normalize,
    find_nearest_neighbors,
    harmonic_residuals,
    laplacian_eigenmaps,
    normalized_laplacian,
    parsimonious_order,
    tangent_denoise,
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


def test_knn_graph_is_symmetric_union_with_self_tuning_weights(rng):
    x = rng.standard_normal((300, 4))
    k = 7
    w = build_knn_graph(x, k=k, weights="self_tuning")
    assert abs(w - w.T).max() == 0 and w.diagonal().max() == 0
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    order = np.argsort(d, axis=1)[:, 1 : k + 1]
    nn = np.zeros_like(d, dtype=bool)
    nn[np.arange(300)[:, None], order] = True
    np.testing.assert_array_equal(w.toarray() > 0, nn | nn.T)  # i in NN_k(j) or j in NN_k(i)
    sig = np.sort(d, axis=1)[:, k]  # distance to the k-th neighbour
    i, j = np.argwhere(nn)[5]
    np.testing.assert_allclose(w[i, j], np.exp(-d[i, j] ** 2 / (sig[i] * sig[j])))
    binary = build_knn_graph(x, k=k)
    assert set(np.unique(binary.data)) == {1.0}


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


def test_duplicated_points(rng):
    base = rng.standard_normal((200, 3))
    x = np.r_[base, base[:50]]  # 50 points appear twice
    idx, dist = find_nearest_neighbors(x, 5)
    assert not np.any(idx == np.arange(len(x))[:, None])  # self removed, duplicate kept
    assert np.all(dist[:50, 0] == 0) and np.all(idx[:50, 0] == np.arange(200, 250))
    emb = laplacian_eigenmaps(build_knn_graph(x, k=5, weights="self_tuning"), 3)
    assert emb.n_components == 1
    # duplicates get (nearly: their neighbour lists differ by each other) the same
    # embedding coordinates (random-walk eigenvectors psi = D^-1/2 phi)
    psi = emb.eigenvectors / np.sqrt(emb.degrees)[:, None]
    assert np.abs(psi[:50] - psi[200:250]).max() < 0.05 * np.abs(psi).max()
    # a point with >= k exact copies has sigma_i = 0: self-tuning raises, binary works
    many = np.r_[base, np.repeat(base[:1], 6, axis=0)]
    with pytest.raises(GraphError, match="duplicates"):
        build_knn_graph(many, k=5, weights="self_tuning")
    assert laplacian_eigenmaps(build_knn_graph(many, k=5), 3).eigenvalues[0] < 1e-8


def test_disconnected_graph_reports_components(rng):
    x = np.r_[rng.standard_normal((100, 2)), 100 + rng.standard_normal((100, 2))]
    emb = laplacian_eigenmaps(build_knn_graph(x, k=5), 3)
    assert emb.n_components == 2
    np.testing.assert_allclose(emb.eigenvalues[:2], 0, atol=1e-8)


def test_bad_input_raises(rng):
    x = rng.standard_normal((20, 2))
    with pytest.raises(GraphError, match="sigma"):
        build_gaussian_graph(x, sigma=0)
    with pytest.raises(GraphError, match="k:"):
        build_knn_graph(x, k=20)
    with pytest.raises(GraphError, match="weights"):
        build_knn_graph(x, k=3, weights="cosine")
    with pytest.raises(GraphError, match="NaN"):
        build_knn_graph(np.r_[x, [[np.nan, 0]]], k=3)
    w = build_gaussian_graph(x, sigma=1.0)
    with pytest.raises(GraphError, match="n_eigenvectors"):
        laplacian_eigenmaps(w, 20)
    with pytest.raises(GraphError, match="symmetric"):
        laplacian_eigenmaps(w + np.triu(w, 1), 3)
    with pytest.raises(GraphError, match="method"):
        laplacian_eigenmaps(w, 3, method="magic")


def test_reproducible_and_sign_convention(rng):
    x, _, _ = _torus(1500, rng)
    w = build_knn_graph(x, k=10)
    one = laplacian_eigenmaps(w, 6, method="sparse", seed=3)
    two = laplacian_eigenmaps(w, 6, method="sparse", seed=3)
    np.testing.assert_array_equal(one.eigenvectors, two.eigenvectors)
    rows = np.argmax(np.abs(one.eigenvectors), axis=0)
    assert np.all(one.eigenvectors[rows, np.arange(6)] > 0)


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


# ------------------------------------------------------------------ tangent-space denoising


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


# ------------------------------------------------------------------ torch kNN (GPU path)


def _check_torch_knn(x, device, rtol):
    idx, dist = find_nearest_neighbors(x, 7, method="torch", device=device)
    ref_idx, ref_dist = find_nearest_neighbors(x, 7, method="exact")
    np.testing.assert_allclose(dist, ref_dist, rtol=rtol, atol=1e-6)
    assert np.mean(idx == ref_idx) > 0.995  # only near-ties may swap
    assert not np.any(idx == np.arange(len(x))[:, None])  # the point itself is excluded


def test_torch_knn_matches_scikit_learn_on_cpu(rng, monkeypatch):
    import napari_cryohet.core.laplacian as lap

    x = rng.standard_normal((1500, 5))
    _check_torch_knn(x, "cpu", rtol=1e-10)
    # several blocks of rows give the same answer as one
    monkeypatch.setattr(lap, "TORCH_KNN_BLOCK_BYTES", 1500 * 8 * 37)
    _check_torch_knn(x, "cpu", rtol=1e-10)
    # duplicates: the point itself is dropped, its copy kept at distance 0
    y = np.r_[x[:50], x[:50]]
    idx, dist = find_nearest_neighbors(y, 3, method="torch", device="cpu")
    np.testing.assert_array_equal(idx[:50, 0], np.arange(50, 100))
    np.testing.assert_allclose(dist[:, 0], 0.0, atol=1e-7)


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_torch_knn_on_cuda_matches_scikit_learn(rng):
    x = rng.standard_normal((3000, 8))
    _check_torch_knn(x, "cuda", rtol=1e-4)
    w = build_knn_graph(x, k=10, weights="self_tuning")  # auto → torch on CUDA
    ref = build_knn_graph(x, k=10, weights="self_tuning", method="exact")
    assert abs(w.nnz - ref.nnz) <= 0.01 * ref.nnz


def test_multilevel_torch_backend_matches_numpy(rng):
    """The Chebyshev subspace iteration in torch (the CUDA path, run here on CPU) gives the
    NumPy answer: same eigenvalues and subspace, same mat-vec count."""
    x, _, _ = _torus(2000, rng)
    w = build_knn_graph(x, k=10, weights="self_tuning")
    ref = laplacian_eigenmaps(w, 5, method="multilevel", tol_multilevel=1e-4)
    got = laplacian_eigenmaps(w, 5, method="multilevel", tol_multilevel=1e-4, device="cpu")
    assert got.info["device"] == "cpu" and ref.info["device"] == "numpy"
    np.testing.assert_allclose(got.eigenvalues, ref.eigenvalues, rtol=1e-8, atol=1e-12)
    assert np.max(scipy.linalg.subspace_angles(got.eigenvectors, ref.eigenvectors)) < 1e-6
    assert got.info["block_matvecs"] == ref.info["block_matvecs"]


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_multilevel_on_cuda_matches_numpy(rng):
    x, _, _ = _torus(3000, rng)
    w = build_knn_graph(x, k=10, weights="self_tuning")
    ref = laplacian_eigenmaps(w, 5, method="multilevel", tol_multilevel=1e-4)
    got = laplacian_eigenmaps(w, 5, method="multilevel", tol_multilevel=1e-4, device="cuda")
    assert got.info["device"].startswith("cuda")
    np.testing.assert_allclose(got.eigenvalues, ref.eigenvalues, rtol=1e-6, atol=1e-10)
    assert np.max(scipy.linalg.subspace_angles(got.eigenvectors, ref.eigenvectors)) < 1e-4
