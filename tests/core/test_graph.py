"""Similarity graphs and the neighbour search (kNN union, self-tuning weights, duplicates, torch kNN)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryohet.core.graph import (
    GraphError,
    build_gaussian_graph,
    build_knn_graph,
    find_nearest_neighbors,
)
from napari_cryohet.core.laplacian import laplacian_eigenmaps


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


# ------------------------------------------------------------------ torch kNN (GPU path)


def _check_torch_knn(x, device, rtol):
    idx, dist = find_nearest_neighbors(x, 7, method="torch", device=device)
    ref_idx, ref_dist = find_nearest_neighbors(x, 7, method="exact")
    np.testing.assert_allclose(dist, ref_dist, rtol=rtol, atol=1e-6)
    assert np.mean(idx == ref_idx) > 0.995  # only near-ties may swap
    assert not np.any(idx == np.arange(len(x))[:, None])  # the point itself is excluded


def test_torch_knn_matches_scikit_learn_on_cpu(rng, monkeypatch):
    import napari_cryohet.core.graph as graph

    x = rng.standard_normal((1500, 5))
    _check_torch_knn(x, "cpu", rtol=1e-10)
    # several blocks of rows give the same answer as one
    monkeypatch.setattr(graph, "TORCH_KNN_BLOCK_BYTES", 1500 * 8 * 37)
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
