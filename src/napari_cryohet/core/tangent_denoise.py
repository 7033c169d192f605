"""Tangent-space (local-PCA) denoising of points on a manifold, a pre-step to the graph.

Each point is projected onto the tangent space of the manifold estimated by PCA of its
``k`` nearest neighbours (Zhang & Zha 2004; used as a projection as in moving-least-squares
manifold approximation, Sober & Levin 2020), which removes the noise normal to the manifold
before the similarity graph of :mod:`napari_cryohet.core.graph` is built (the box-arms toy,
docs/spectral.md). The neighbour search is
:func:`~napari_cryohet.core.graph.find_nearest_neighbors`.
"""

from __future__ import annotations

import numpy as np

from napari_cryohet.core.graph import GraphError, _as_points, find_nearest_neighbors

__all__ = ["tangent_denoise"]


def tangent_denoise(
    x: np.ndarray,
    *,
    dim: int,
    k: int = 80,
    n_iter: int = 3,
    method: str = "auto",
    seed: int = 0,
    n_jobs: int | None = None,
    device: str | None = None,
    batch_size: int = 4096,
) -> np.ndarray:
    """Project every point onto the local tangent space of the manifold the data lie on.

    Local-PCA manifold denoising: for each ``x_i``, the ``k`` nearest neighbours (itself
    excluded) give a centroid ``m_i`` and, by SVD of the centred neighbourhood, the ``dim``
    leading directions ``T_i`` ``(dim, q)``; the point becomes
    ``m_i + T_i^T T_i (x_i - m_i)`` — its noise along the ``q - dim`` normal directions is
    removed, its position along the manifold kept (the tangent estimate of local tangent
    space alignment, Zhang & Zha 2004, used as a projection as in moving-least-squares
    manifold approximation, Sober & Levin 2020). Repeated ``n_iter`` times, each on the
    previous output. With white noise of variance ``s²`` per coordinate the squared
    distance between neighbours carries ``2 q s²`` of noise before and about ``2 dim s²``
    after, which is what lets a kNN graph resolve a short direction of the manifold
    (the box-arms toy, docs/spectral.md). Neither scikit-learn nor SciPy has it; the
    neighbour search is :func:`find_nearest_neighbors` (exact, NN-descent or torch).

    Parameters
    ----------
    x
        ``(N, q)`` points.
    dim
        Tangent dimension kept (the manifold's dimension, or a little more: curvature
        inside a neighbourhood shows up as extra directions). ``1 <= dim < q``.
    k
        Neighbours per local PCA (``dim < k < N``).
    n_iter
        Passes (neighbours recomputed on each pass's output).
    method, seed, n_jobs, device
        Neighbour search, see :func:`find_nearest_neighbors`.
    batch_size
        Points per batched SVD (memory ``batch_size * k * q`` floats).

    Returns
    -------
    ``(N, q)`` float64 denoised points.
    """
    z = _as_points(x).copy()
    n, q = z.shape
    if not 1 <= int(dim) < q:
        raise GraphError(f"dim: expected 1 <= dim < q = {q}, got {dim}")
    if not int(dim) < int(k) < n:
        raise GraphError(f"k: expected dim = {dim} < k < N = {n}, got {k}")
    if int(n_iter) < 1:
        raise GraphError(f"n_iter: expected >= 1, got {n_iter}")
    dim, k = int(dim), int(k)
    for _ in range(int(n_iter)):
        idx, _dist = find_nearest_neighbors(z, k, method=method, seed=seed, n_jobs=n_jobs, device=device)
        out = np.empty_like(z)
        for s in range(0, n, batch_size):
            nb = z[idx[s:s + batch_size]]  # (b, k, q)
            centre = nb.mean(axis=1)  # (b, q)
            _, _, vt = np.linalg.svd(nb - centre[:, None], full_matrices=False)
            t = vt[:, :dim]  # (b, dim, q)
            r = z[s:s + batch_size] - centre
            out[s:s + batch_size] = centre + np.einsum("bd,bdq->bq", np.einsum("bq,bdq->bd", r, t), t)
        z = out
    return z
