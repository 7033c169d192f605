"""Similarity graphs on particle representations, and the nearest-neighbour search behind them.

The graph step of the manifold learning of seed 000_8d73a95ce4c6e7ab.txt (§2.2, Appendix B):
from a low-dimensional representation ``x`` ``(N, q)`` of each particle's conformation, build
a weighted similarity graph ``W`` ``(N, N)``. Its symmetric normalised Laplacian and the
eigenvectors ``Phi`` of eq. 2.5 are in :mod:`napari_cryohet.core.laplacian`.

Graphs
------
* :func:`build_gaussian_graph` — the dense Gaussian kernel of eq. 3.5 / Appendix B,
  ``W_ij = exp(-|x_i - x_j|^2 / (2 sigma^2))`` including the diagonal ``W_ii = 1``;
  optionally sparsified by dropping weights below a threshold (Appendix B).
* :func:`build_knn_graph` — the symmetric k-nearest-neighbour graph of Appendix B
  (``i ~ j`` when either is among the other's ``k`` nearest neighbours), binary, with a
  fixed Gaussian scale, or self-tuning (Zelnik-Manor & Perona 2004):
  ``sigma_i`` = distance from ``x_i`` to its ``k``-th neighbour and
  ``W_ij = exp(-d_ij^2 / (sigma_i sigma_j))``. Stored as ``scipy.sparse`` CSR, so
  ``N = 10^6`` fits in memory (seed 000 §4, future step (i)).
* :func:`find_nearest_neighbors` — the ``k`` nearest neighbours of every point: exact
  (scikit-learn), approximate (NN-descent, pynndescent) or exact blocked brute force in
  torch (``_torch_knn``, the GPU path).

Optional pre- and post-processing of a graph live next door:
:func:`~napari_cryohet.core.tangent_denoise.tangent_denoise` (local-PCA denoising of ``x``
before the graph) and :func:`~napari_cryohet.core.laplacian.density_normalize`
(Coifman-Lafon ``D^-α W D^-α``).

Conventions
-----------
* :class:`GraphError` is raised for input that cannot give a graph with a normalised
  Laplacian, here (bad points, bad parameters) and in :mod:`napari_cryohet.core.laplacian`
  (degree-zero nodes, e.g. ``sigma`` far too small).
* Duplicated points: harmless for the Gaussian and binary graphs (distance 0 → weight 1);
  for the self-tuning graph a point with ``>= k`` exact duplicates has ``sigma_i = 0`` and
  raises :class:`GraphError` (deduplicate, add jitter, or use another weighting). The kNN
  search removes each point itself, not one of its duplicates.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

__all__ = [
    "EXACT_KNN_MAX_POINTS",
    "GAUSSIAN_DENSE_MAX_NODES",
    "TORCH_KNN_BLOCK_BYTES",
    "GraphError",
    "build_gaussian_graph",
    "build_knn_graph",
    "find_nearest_neighbors",
]

#: ``build_gaussian_graph`` refuses to allocate a dense matrix beyond this many nodes.
GAUSSIAN_DENSE_MAX_NODES = 30000
#: ``method="torch"`` kNN: bytes of one block of squared distances (rows × N).
TORCH_KNN_BLOCK_BYTES = 1 << 30
#: ``find_nearest_neighbors(method="auto")`` switches to NN-descent above this many points.
EXACT_KNN_MAX_POINTS = 200_000


class GraphError(ValueError):
    """A similarity graph that cannot give a normalised Laplacian (isolated nodes, bad input)."""


def _as_points(x: np.ndarray, name: str = "x") -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise GraphError(f"{name}: expected an (N, q) array of points, got shape {x.shape}")
    if x.shape[0] < 2:
        raise GraphError(f"{name}: need at least 2 points, got {x.shape[0]}")
    if not np.all(np.isfinite(x)):
        raise GraphError(f"{name}: contains NaN or infinite values")
    return np.ascontiguousarray(x, dtype=np.float64)


def _check_positive(value: float | None, name: str) -> float:
    if value is None or not np.isfinite(value) or value <= 0:
        raise GraphError(f"{name}: expected a positive finite number, got {value!r}")
    return float(value)


def build_gaussian_graph(
    x: np.ndarray,
    *,
    sigma: float,
    threshold: float | None = None,
    chunk_size: int = 2048,
) -> np.ndarray | scipy.sparse.csr_matrix:
    """Dense Gaussian-kernel similarity graph (eq. 3.5 and Appendix B of 000).

    ``W_ij = exp(-|x_i - x_j|^2 / (2 sigma^2))`` for all pairs, diagonal included.

    Parameters
    ----------
    x
        ``(N, q)`` representation of each particle (PCA coefficients, latents, voxels).
    sigma
        Kernel width, in the units of ``x`` (σ = 96 for the 64×64 densities of §3.1).
    threshold
        If given, weights below it are set to 0 and a CSR matrix is returned
        (the sparsification mentioned in Appendix B); otherwise a dense ``(N, N)`` array.
    chunk_size
        Rows computed at a time (bounds the temporary memory).

    Returns
    -------
    ndarray or csr_matrix
        ``(N, N)`` symmetric float64 weights.

    Examples
    --------
    >>> w = build_gaussian_graph(np.array([[0.0], [1.0]]), sigma=1.0)
    >>> float(w[0, 1]) == float(np.exp(-0.5))
    True
    """
    x = _as_points(x)
    sigma = _check_positive(sigma, "sigma")
    n = x.shape[0]
    if threshold is None and n > GAUSSIAN_DENSE_MAX_NODES:
        raise GraphError(
            f"build_gaussian_graph: {n} points need a dense {n}x{n} matrix; use build_knn_graph "
            f"(or pass threshold=...) above {GAUSSIAN_DENSE_MAX_NODES} points"
        )
    sq_norms = np.einsum("ij,ij->i", x, x)  # (N,)
    scale = -1.0 / (2.0 * sigma**2)
    rows, cols, vals = [], [], []
    dense = np.empty((n, n), dtype=np.float64) if threshold is None else None
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        d2 = sq_norms[start:stop, None] + sq_norms[None, :] - 2.0 * (x[start:stop] @ x.T)  # (c, N)
        np.maximum(d2, 0.0, out=d2)
        d2[np.arange(stop - start), np.arange(start, stop)] = 0.0
        w = np.exp(d2 * scale, out=d2)
        if dense is not None:
            dense[start:stop] = w
        else:
            r, c = np.nonzero(w >= threshold)
            rows.append(r + start)
            cols.append(c)
            vals.append(w[r, c])
    if dense is not None:
        return 0.5 * (dense + dense.T)  # exact symmetry despite rounding
    w = scipy.sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )
    return w.maximum(w.T).tocsr()


def _torch_knn(x: np.ndarray, n_neighbors: int, device) -> tuple[np.ndarray, np.ndarray]:
    """Exact brute-force kNN with torch, in row blocks of ``TORCH_KNN_BLOCK_BYTES``.

    ``|a - b|² = |a|² + |b|² − 2 a·b`` per block, then ``torch.topk``; the point itself is
    forced first. float64 on CPU, float32 on a GPU (neighbours closer than float32 rounding
    of the squared norms may swap order). Written here rather than taken from a library
    because scikit-learn and pynndescent are CPU-only and faiss is not a dependency.
    """
    import torch

    from napari_cryohet.core.device import select_device

    dev = select_device(device)
    dtype = torch.float64 if dev.type == "cpu" else torch.float32
    xt = torch.as_tensor(np.ascontiguousarray(x), dtype=dtype, device=dev)
    n = xt.shape[0]
    sq = (xt * xt).sum(dim=1)
    block = max(1, min(n, int(TORCH_KNN_BLOCK_BYTES // (n * xt.element_size()))))
    idx = np.empty((n, n_neighbors), dtype=np.int64)
    dist = np.empty((n, n_neighbors), dtype=np.float64)
    with torch.no_grad():
        for s in range(0, n, block):
            rows = torch.arange(s, min(s + block, n), device=dev)
            d2 = (sq[rows, None] + sq[None, :] - 2.0 * (xt[rows] @ xt.T)).clamp_(min=0.0)  # (b, N)
            d2[torch.arange(len(rows), device=dev), rows] = -1.0  # self first, whatever the rounding
            val, ind = torch.topk(d2, n_neighbors, dim=1, largest=False, sorted=True)
            idx[s:s + len(rows)] = ind.cpu().numpy()
            dist[s:s + len(rows)] = val.clamp(min=0.0).sqrt().double().cpu().numpy()
    return idx, dist


def find_nearest_neighbors(
    x: np.ndarray,
    k: int,
    *,
    method: str = "auto",
    seed: int = 0,
    n_jobs: int | None = None,
    device: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest neighbours of every point, the point itself excluded.

    Parameters
    ----------
    x
        ``(N, q)`` points.
    k
        Neighbours per point (``1 <= k < N``).
    method
        ``"exact"`` (scikit-learn KD-/ball tree), ``"nndescent"`` (approximate, pynndescent),
        ``"torch"`` (exact brute force on ``device``, blocked) or ``"auto"``: ``"torch"``
        when a ``device`` is given and resolves to CUDA, else exact up to
        ``EXACT_KNN_MAX_POINTS`` points and NN-descent beyond.
    seed
        Seed of the NN-descent random projections.
    n_jobs
        Parallel jobs (``None``: all cores).
    device
        Torch device (``"auto"``: ``cuda`` → ``mps`` → ``cpu``,
        :func:`~napari_cryohet.core.device.select_device`). ``None`` (default): CPU
        libraries for ``"auto"`` without importing torch; the best device for ``"torch"``.

    Returns
    -------
    indices, distances
        ``(N, k)`` int64 neighbour indices and float64 Euclidean distances, ascending.
        With duplicated points the point itself is removed, not one of its duplicates.
    """
    x = _as_points(x)
    n = x.shape[0]
    if not 1 <= int(k) < n:
        raise GraphError(f"k: expected 1 <= k < N = {n}, got {k}")
    k = int(k)
    if method == "auto":
        on_cuda = False
        if device is not None:
            from napari_cryohet.core.device import select_device

            on_cuda = select_device(device).type == "cuda"
        if on_cuda:
            method = "torch"
        else:
            method = "exact" if n <= EXACT_KNN_MAX_POINTS else "nndescent"
    if method == "torch":
        idx, dist = _torch_knn(x, k + 1, device)
    elif method == "exact":
        from sklearn.neighbors import NearestNeighbors

        nn = NearestNeighbors(n_neighbors=k + 1, n_jobs=n_jobs or -1).fit(x)
        dist, idx = nn.kneighbors(x)
    elif method == "nndescent":
        from pynndescent import NNDescent

        index = NNDescent(x, n_neighbors=k + 1, random_state=seed, n_jobs=n_jobs or -1,
                          low_memory=True, compressed=True)
        idx, dist = index.neighbor_graph
    else:
        raise GraphError(f"method: expected 'auto', 'exact', 'nndescent' or 'torch', got {method!r}")
    idx = np.asarray(idx, dtype=np.int64)  # (N, k+1)
    dist = np.asarray(dist, dtype=np.float64)
    is_self = idx == np.arange(n)[:, None]
    no_self = ~is_self.any(axis=1)
    is_self[no_self, -1] = True  # point absent from its list (ties/approximation): drop the farthest
    keep = ~is_self  # exactly one entry removed per row (indices within a row are distinct)
    return idx[keep].reshape(n, k), dist[keep].reshape(n, k)


def build_knn_graph(
    x: np.ndarray,
    *,
    k: int,
    weights: str = "binary",
    sigma: float | None = None,
    method: str = "auto",
    seed: int = 0,
    n_jobs: int | None = None,
    device: str | None = None,
) -> scipy.sparse.csr_matrix:
    """Symmetric k-nearest-neighbour similarity graph (Appendix B of 000), sparse.

    ``i ~ j`` when ``x_i`` is among the ``k`` nearest neighbours of ``x_j`` or vice versa.

    Parameters
    ----------
    x
        ``(N, q)`` representation of each particle.
    k
        Neighbours per point.
    weights
        ``"binary"`` (``W_ij = 1``, Appendix B), ``"gaussian"`` (``exp(-d^2 / (2 sigma^2))``,
        eq. 3.5 restricted to the kNN edges; needs ``sigma``) or ``"self_tuning"``
        (``exp(-d_ij^2 / (sigma_i sigma_j))`` with ``sigma_i`` the distance from ``x_i`` to
        its ``k``-th neighbour).
    sigma
        Kernel width for ``weights="gaussian"`` (units of ``x``).
    method, seed, n_jobs, device
        Neighbour search, see :func:`find_nearest_neighbors`.

    Returns
    -------
    csr_matrix
        ``(N, N)`` symmetric float64 weights, no self-loops.

    Raises
    ------
    GraphError
        Bad parameters; ``self_tuning`` with points that have ``>= k`` exact duplicates.
    """
    if weights not in ("binary", "gaussian", "self_tuning"):
        raise GraphError(f"weights: expected 'binary', 'gaussian' or 'self_tuning', got {weights!r}")
    if weights == "gaussian":
        sigma = _check_positive(sigma, "sigma")
    idx, dist = find_nearest_neighbors(x, k, method=method, seed=seed, n_jobs=n_jobs, device=device)  # (N, k)
    n = idx.shape[0]
    if weights == "binary":
        vals = np.ones_like(dist)
    elif weights == "gaussian":
        vals = np.exp(-(dist**2) / (2.0 * sigma**2))
    else:
        scales = dist[:, -1]  # (N,) distance to the k-th neighbour
        bad = np.flatnonzero(scales <= 0)
        if len(bad):
            raise GraphError(
                f"self_tuning weights: {len(bad)} point(s) (e.g. index {int(bad[0])}) have >= k={k} "
                "exact duplicates, so their scale sigma_i is 0; deduplicate, add jitter, "
                "raise k, or use weights='binary'"
            )
        vals = np.exp(-(dist**2) / (scales[:, None] * scales[idx]))
    rows = np.repeat(np.arange(n, dtype=np.int64), idx.shape[1])
    w = scipy.sparse.csr_matrix((vals.ravel(), (rows, idx.ravel())), shape=(n, n))
    w = w.maximum(w.T).tocsr()  # the weight formulas are symmetric, so max = either entry
    w.eliminate_zeros()
    return w
