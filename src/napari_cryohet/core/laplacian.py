"""Similarity graphs, the symmetric normalised graph Laplacian and its eigenvectors.

The manifold-learning step of seed 000_8d73a95ce4c6e7ab.txt (§2.2, Appendix B): from a
low-dimensional representation ``x`` ``(N, q)`` of each particle's conformation, build a
weighted similarity graph ``W`` ``(N, N)``, its symmetric normalised Laplacian

    L = D^-1/2 (D - W) D^-1/2 = I - D^-1/2 W D^-1/2,      D_ii = sum_j W_ij

(Appendix B of 000) and the eigenvectors of ``L`` for its ``K`` smallest eigenvalues,
the matrix ``Phi = [phi^(0) | ... | phi^(K-1)]`` of eq. 2.5 that the chain-fit stage
expands torsion and bond angles on (eq. 2.6).

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
* :func:`density_normalize` — optional Coifman-Lafon ``D^-α W D^-α`` (diffusion maps).
* :func:`tangent_denoise` — optional pre-step: local-PCA projection of each point onto
  the manifold's tangent space, which removes the noise normal to the manifold.

Eigen-solvers (:func:`laplacian_eigenmaps`)
-------------------------------------------
* ``"dense"`` — LAPACK ``eigh`` of ``L`` restricted to the ``K`` smallest eigenvalues.
* ``"sparse"`` — ARPACK ``eigsh`` (Lanczos) for the ``K`` *largest* eigenvalues ``mu`` of
  the normalised adjacency ``A = D^-1/2 W D^-1/2``; ``L = I - A`` has the same eigenvectors
  and eigenvalues ``lambda = 1 - mu``. This needs only sparse mat-vecs (no factorisation,
  unlike shift-invert on ``L``) and is what makes ``N = 10^6`` feasible.
* ``"multilevel"`` — for ``N`` in the 10^5-10^6 range, where Lanczos needs thousands of
  mat-vecs because the wanted eigenvalues (~k/N) are tiny next to the spectral width 2:
  aggregate the graph into ``~N/50`` connected pieces (multi-source BFS from random seed
  nodes), solve the aggregated (Galerkin) problem ``P^T (D - W) P y = lambda P^T D P y``
  (itself a normalised-Laplacian problem, solved recursively), interpolate it back and
  refine by Chebyshev-filtered subspace iteration (Zhou & Saad 2007) on ``A`` with a block of
  ``K + 8`` vectors until the first ``K`` residuals ``|A v - mu v|`` fall below
  ``tol_multilevel * lambda_K`` (or ``max_matvecs`` block mat-vecs are spent: the achieved
  residual is in ``info``). This is the sparse/approximate route of seed 000 §4, step (i).
* ``"lobpcg"`` — block LOBPCG for the largest eigenvalues of ``A`` with the exact trivial
  eigenvector ``D^1/2 1`` in the starting block.
* ``"auto"`` — ``"dense"`` for ``N <= 1000``, ``"sparse"`` up to ``N = 50000``,
  ``"multilevel"`` beyond.

Conventions (read these before using the output)
------------------------------------------------
* Eigenvalues ascending; eigenvectors are the eigenvectors of the *symmetric* ``L``
  (as in eq. 2.5 of 000), orthonormal columns (unit Euclidean norm, so
  ``sqrt(N) * phi`` is the O(1) scale of the seed's convergence statement).
* Column 0 is the trivial eigenvector ``D^1/2 1 / |D^1/2 1|`` (eigenvalue 0 for a connected
  graph); it is computed, not imposed, and flagged by ``LaplacianEigenmaps.trivial``.
* Sign convention: every column is flipped so that its entry of largest absolute value is
  positive (the same rule as ``sklearn.utils.extmath._deterministic_vector_sign_flip``).
  The result is deterministic for given input; within a degenerate eigenspace (a circle's
  cos/sin pair) the basis is solver-dependent, so compare subspaces, not columns.
* Degree-zero nodes (a point with no neighbour of non-zero weight, e.g. ``sigma`` far too
  small) raise :class:`GraphError`. A disconnected graph is allowed (clustered data):
  ``n_components`` is recorded and the zero eigenvalue then has that multiplicity.
* Duplicated points: harmless for the Gaussian and binary graphs (distance 0 → weight 1);
  for the self-tuning graph a point with ``>= k`` exact duplicates has ``sigma_i = 0`` and
  raises :class:`GraphError` (deduplicate, add jitter, or use another weighting). The kNN
  search removes each point itself, not one of its duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.sparse.csgraph
import scipy.sparse.linalg

__all__ = [
    "GraphError",
    "LaplacianEigenmaps",
    "build_gaussian_graph",
    "build_knn_graph",
    "find_nearest_neighbors",
    "tangent_denoise",
    "density_normalize",
    "normalized_adjacency",
    "normalized_laplacian",
    "laplacian_eigenmaps",
    "fix_eigenvector_signs",
    "harmonic_residuals",
    "parsimonious_order",
]

#: ``method="auto"`` uses dense ``eigh`` up to this many nodes.
DENSE_MAX_NODES = 1000
#: ``method="auto"`` uses ARPACK up to this many nodes, the multilevel solver beyond.
SPARSE_MAX_NODES = 50_000
#: ``build_gaussian_graph`` refuses to allocate a dense matrix beyond this many nodes.
GAUSSIAN_DENSE_MAX_NODES = 30000
#: ``method="torch"`` kNN: bytes of one block of squared distances (rows × N).
TORCH_KNN_BLOCK_BYTES = 1 << 30
#: ``find_nearest_neighbors(method="auto")`` switches to NN-descent above this many points.
EXACT_KNN_MAX_POINTS = 200_000


class GraphError(ValueError):
    """A similarity graph that cannot give a normalised Laplacian (isolated nodes, bad input)."""


@dataclass
class LaplacianEigenmaps:
    """The ``K`` smallest eigenpairs of the symmetric normalised Laplacian (eq. 2.5 of 000).

    Attributes
    ----------
    eigenvalues
        ``(K,)`` ascending eigenvalues of ``L`` (in ``[0, 2]``).
    eigenvectors
        ``(N, K)`` orthonormal eigenvectors of ``L``; column 0 is the trivial one.
    degrees
        ``(N,)`` node degrees ``D_ii``.
    trivial
        ``(K,)`` bool, True for the trivial eigenvector (column 0).
    method
        Solver actually used (``"dense"``, ``"sparse"`` or ``"lobpcg"``).
    n_components
        Connected components of the graph (1 for a connected graph).
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    degrees: np.ndarray
    trivial: np.ndarray
    method: str
    n_components: int
    info: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- graphs


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


# -------------------------------------------------------------------------- Laplacian


def _degrees(weights) -> np.ndarray:
    """Node degrees ``D_ii``; raise :class:`GraphError` for nodes without neighbours."""
    if scipy.sparse.issparse(weights):
        w = weights.tocsr()
        deg = np.asarray(w.sum(axis=1)).ravel()
        off = deg - w.diagonal()
        if w.nnz and w.data.min() < 0:
            raise GraphError("weights: similarity weights must be non-negative")
    else:
        w = np.asarray(weights)
        deg = w.sum(axis=1)
        off = deg - np.diagonal(w)
        if w.size and w.min() < 0:
            raise GraphError("weights: similarity weights must be non-negative")
    if not np.all(np.isfinite(deg)):
        raise GraphError("weights: contain NaN or infinite values")
    isolated = np.flatnonzero(off <= 0)
    if len(isolated):
        raise GraphError(
            f"graph has {len(isolated)} degree-zero node(s) (no neighbour with non-zero weight), "
            f"e.g. index {int(isolated[0])}: increase sigma or k, or remove outliers"
        )
    return deg


def _check_square(weights) -> int:
    shape = weights.shape
    if len(shape) != 2 or shape[0] != shape[1]:
        raise GraphError(f"weights: expected a square (N, N) matrix, got shape {shape}")
    if shape[0] < 2:
        raise GraphError(f"weights: need at least 2 nodes, got {shape[0]}")
    return shape[0]


def density_normalize(weights, alpha: float):
    """Coifman-Lafon density normalisation ``W^(α) = D^-α W D^-α`` (``D_ii = Σ_j W_ij``).

    Diffusion maps (Coifman & Lafon 2006, *Appl. Comput. Harmon. Anal.* 21:5-30, §2.1):
    the normalised Laplacian of ``W`` converges to the Laplace-Beltrami operator plus a
    drift along the gradient of the sampling density; dividing the kernel by the degrees to
    the power ``α`` removes the drift for ``α = 1`` (``α = 0``: unchanged, the paper's
    graph; ``α = 1/2``: Fokker-Planck). Then build the Laplacian of ``W^(α)`` as usual.
    Here the density is that of the particles in representation space, which is not uniform
    even for uniformly drawn parameters (the map from parameters to densities stretches some
    regions); on the box-arms toy α = 1 raises all three R² (docs/spectral.md).

    Parameters
    ----------
    weights
        ``(N, N)`` symmetric non-negative similarities, dense or ``scipy.sparse``.
    alpha
        Exponent in ``[0, 1]``.

    Returns
    -------
    Same kind as ``weights`` (sparse → CSR), symmetric.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise GraphError(f"alpha: expected a density-normalisation exponent in [0, 1], got {alpha}")
    _check_square(weights)
    if float(alpha) == 0.0:
        return weights
    scale = _degrees(weights) ** -float(alpha)  # (N,)
    if scipy.sparse.issparse(weights):
        dm = scipy.sparse.diags(scale)
        return (dm @ weights.tocsr() @ dm).tocsr()
    return scale[:, None] * np.asarray(weights, dtype=np.float64) * scale[None, :]


def normalized_adjacency(weights, *, degrees: np.ndarray | None = None):
    """``A = D^-1/2 W D^-1/2`` (dense in → dense out, sparse in → CSR out).

    ``L = I - A`` (Appendix B of 000); ``A`` has the same eigenvectors and eigenvalues
    ``1 - lambda`` in ``[-1, 1]``.
    """
    _check_square(weights)
    deg = _degrees(weights) if degrees is None else degrees
    inv_sqrt = 1.0 / np.sqrt(deg)  # (N,)
    if scipy.sparse.issparse(weights):
        dm = scipy.sparse.diags(inv_sqrt)
        return (dm @ weights.tocsr() @ dm).tocsr()
    w = np.asarray(weights, dtype=np.float64)
    return inv_sqrt[:, None] * w * inv_sqrt[None, :]


def normalized_laplacian(weights):
    """Symmetric normalised graph Laplacian ``L = I - D^-1/2 W D^-1/2`` (Appendix B of 000).

    Parameters
    ----------
    weights
        ``(N, N)`` symmetric non-negative similarity matrix, dense or ``scipy.sparse``.

    Returns
    -------
    ndarray or csr_matrix
        ``(N, N)`` Laplacian, same storage as ``weights``.

    Raises
    ------
    GraphError
        Degree-zero nodes, negative or non-finite weights, a non-square matrix.
    """
    a = normalized_adjacency(weights)
    n = a.shape[0]
    if scipy.sparse.issparse(a):
        return (scipy.sparse.identity(n, format="csr") - a).tocsr()
    return np.eye(n) - a


def fix_eigenvector_signs(vectors: np.ndarray) -> np.ndarray:
    """Flip columns so the entry of largest absolute value of each is positive (in place)."""
    if vectors.size == 0:
        return vectors
    rows = np.argmax(np.abs(vectors), axis=0)  # (K,)
    signs = np.sign(vectors[rows, np.arange(vectors.shape[1])])
    signs[signs == 0] = 1.0
    vectors *= signs[None, :]
    return vectors


def laplacian_eigenmaps(
    weights,
    n_eigenvectors: int,
    *,
    method: str = "auto",
    seed: int = 0,
    tol: float = 1e-10,
    max_iter: int | None = None,
    tol_multilevel: float = 0.3,
    max_matvecs: int = 1500,
    device: str | None = None,
) -> LaplacianEigenmaps:
    """Eigenvectors of ``L`` for its ``K`` smallest eigenvalues (eq. 2.5 of 000).

    Parameters
    ----------
    weights
        ``(N, N)`` symmetric similarity matrix (dense or sparse), e.g. from
        :func:`build_gaussian_graph` or :func:`build_knn_graph`.
    n_eigenvectors
        ``K``, the number of eigenpairs, trivial one included (``K < N``).
    method
        ``"auto"``, ``"dense"``, ``"sparse"`` or ``"lobpcg"`` (see the module docstring).
    seed
        Seed of the iterative solvers' starting vectors (results are reproducible).
    tol
        Convergence tolerance of the iterative solvers (relative, on the eigenvalues of ``A``).
    max_iter
        Iteration cap of ``"sparse"``/``"lobpcg"`` (default: the solver's own).
    tol_multilevel
        ``"multilevel"`` stops when every residual ``|A v_i - mu_i v_i|`` of the first ``K``
        Ritz vectors is below ``tol_multilevel * lambda_{K-1}`` (a fraction of the spectral
        scale of the wanted eigenvectors, so the subspace error is a fraction of the gap).
    max_matvecs
        Cap on the block mat-vecs of ``"multilevel"``.
    device
        ``"multilevel"`` only: torch device of the Chebyshev-filtered subspace iteration
        (``"cuda"``: sparse mat-vecs on the GPU); ``None``: SciPy on CPU. The other solvers
        are SciPy/LAPACK on CPU.

    Returns
    -------
    LaplacianEigenmaps
        Eigenvalues ascending, orthonormal eigenvectors with the sign convention of
        :func:`fix_eigenvector_signs`, the trivial eigenvector first and flagged.

    Examples
    --------
    >>> theta = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    >>> x = np.c_[np.cos(theta), np.sin(theta)]
    >>> emb = laplacian_eigenmaps(build_knn_graph(x, k=6), 3)
    >>> bool(emb.eigenvalues[0] < 1e-8)
    True
    """
    n = _check_square(weights)
    k = int(n_eigenvectors)
    if not 1 <= k < n:
        raise GraphError(f"n_eigenvectors: expected 1 <= K < N = {n}, got {n_eigenvectors}")
    if method == "auto":
        method = "dense" if n <= DENSE_MAX_NODES else "sparse" if n <= SPARSE_MAX_NODES else "multilevel"
    if method not in ("dense", "sparse", "lobpcg", "multilevel"):
        raise GraphError(
            f"method: expected 'auto', 'dense', 'sparse', 'multilevel' or 'lobpcg', got {method!r}"
        )
    if scipy.sparse.issparse(weights):
        weights = weights.tocsr()
        if abs(weights - weights.T).max() > 1e-12 * max(1.0, abs(weights).max()):
            raise GraphError("weights: the similarity matrix must be symmetric")
        n_components = int(scipy.sparse.csgraph.connected_components(weights, directed=False)[0])
    else:
        weights = np.asarray(weights, dtype=np.float64)
        if not np.allclose(weights, weights.T, rtol=0, atol=1e-12 * max(1.0, np.abs(weights).max())):
            raise GraphError("weights: the similarity matrix must be symmetric")
        n_components = int(scipy.sparse.csgraph.connected_components(weights > 0, directed=False)[0])
    deg = _degrees(weights)
    a = normalized_adjacency(weights, degrees=deg)
    rng = np.random.default_rng(seed)
    info: dict = {}
    if method == "dense":
        a_dense = a.toarray() if scipy.sparse.issparse(a) else a
        lap = np.eye(n) - a_dense
        lam, vec = scipy.linalg.eigh(lap, subset_by_index=[0, k - 1], driver="evx")
    elif method == "sparse":
        v0 = rng.standard_normal(n)
        ncv = min(n, max(2 * k + 1, 40))
        mu, vec = scipy.sparse.linalg.eigsh(a, k=k, which="LA", v0=v0, tol=tol, ncv=ncv, maxiter=max_iter)
        order = np.argsort(-mu)
        lam, vec = 1.0 - mu[order], vec[:, order]
        info["ncv"] = ncv
    elif method == "multilevel":
        lam, vec, info = _multilevel_eigenpairs(
            weights, a, deg, k, seed=seed, rel_tol=tol_multilevel, max_matvecs=max_matvecs, device=device
        )
    else:
        x0 = rng.standard_normal((n, k))
        x0[:, 0] = np.sqrt(deg)  # the exact trivial eigenvector is a perfect start
        mu, vec = scipy.sparse.linalg.lobpcg(
            a, x0, largest=True, tol=max(tol, 1e-8), maxiter=max_iter or 500
        )
        order = np.argsort(-mu)
        lam, vec = 1.0 - mu[order], vec[:, order]
    vec = np.ascontiguousarray(vec, dtype=np.float64)
    vec /= np.linalg.norm(vec, axis=0, keepdims=True)
    fix_eigenvector_signs(vec)
    lam = np.clip(lam, 0.0, 2.0)
    trivial = np.zeros(k, dtype=bool)
    trivial[0] = True
    return LaplacianEigenmaps(
        eigenvalues=lam, eigenvectors=vec, degrees=deg, trivial=trivial,
        method=method, n_components=n_components, info=info,
    )


# ------------------------------------------------------------------------ multilevel


def _aggregate(weights: scipy.sparse.csr_matrix, n_aggregates: int, rng) -> np.ndarray:
    """Label every node with its nearest (in hops) of ``n_aggregates`` random seed nodes."""
    n = weights.shape[0]
    seeds = np.sort(rng.choice(n, n_aggregates, replace=False))
    _, _, sources = scipy.sparse.csgraph.dijkstra(
        weights, directed=False, indices=seeds, min_only=True, return_predecessors=True, unweighted=True
    )
    labels = np.full(n, -1, dtype=np.int64)
    reached = sources >= 0
    labels[reached] = np.searchsorted(seeds, sources[reached])
    unreached = np.flatnonzero(~reached)  # components without a seed: one aggregate each node
    labels[unreached] = n_aggregates + np.arange(len(unreached))
    return labels


def _multilevel_eigenpairs(weights, a, deg, k, *, seed, rel_tol, max_matvecs, coarsening=50, extra=8,
                           device=None):
    """Aggregation start + Chebyshev-filtered subspace iteration (see module docstring)."""
    rng = np.random.default_rng(seed)
    w = scipy.sparse.csr_matrix(weights)
    n = w.shape[0]
    block = min(k + extra, n - 1)
    n_agg = int(min(max(n // coarsening, 4 * block), n // 2))
    labels = _aggregate(w, n_agg, rng)
    m = int(labels.max()) + 1
    p = scipy.sparse.csr_matrix((np.ones(n), (np.arange(n), labels)), shape=(n, m))  # (N, m)
    coarse_w = (p.T @ w @ p).tocsr()  # aggregated graph (self-loops = intra-aggregate weight)
    coarse = laplacian_eigenmaps(coarse_w, block, method="auto", seed=seed, tol=1e-6,
                                 tol_multilevel=rel_tol, max_matvecs=max_matvecs)
    # coarse phi_c = Dc^1/2 psi_c; interpolate psi piecewise-constantly; back to phi = D^1/2 psi
    psi_c = coarse.eigenvectors / np.sqrt(coarse.degrees)[:, None]  # (m, B)
    x = np.sqrt(deg)[:, None] * (p @ psi_c)  # (N, B)
    theta, x, info = _chebyshev_subspace_iteration(a, x, k, rel_tol=rel_tol, max_matvecs=max_matvecs,
                                                   device=device)
    info.update(n_aggregates=m, coarse_method=coarse.method)
    return 1.0 - theta[:k], x[:, :k], info


def _chebyshev_subspace_iteration(a, x, k, *, rel_tol, max_matvecs, device=None):
    """Rayleigh-Ritz + Chebyshev filtering of the block ``x`` towards the top of ``A``'s spectrum.

    ``device=None``: NumPy/SciPy. A torch device (``"cuda"``; ``"cpu"`` runs the same torch
    code, which the tests compare with NumPy): ``A`` becomes a torch sparse CSR tensor there
    and every block mat-vec, QR and small ``eigh`` runs on it in float64. Returns the Ritz
    values (descending), vectors (NumPy) and an info dict.
    """
    if device is None:
        a_op, lin = a, np.linalg
        flip = lambda t: t[..., ::-1]  # noqa: E731
        colnorm = lambda t: np.linalg.norm(t, axis=0)  # noqa: E731
        to_numpy = np.asarray
    else:
        import warnings

        import torch

        from napari_cryohet.core.device import select_device

        dev = select_device(device)
        csr = scipy.sparse.csr_matrix(a, copy=True)
        csr.sort_indices()
        with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
            a_op = torch.sparse_csr_tensor(torch.as_tensor(csr.indptr, dtype=torch.int64),
                                           torch.as_tensor(csr.indices, dtype=torch.int64),
                                           torch.as_tensor(csr.data, dtype=torch.float64), size=csr.shape,
                                           check_invariants=True).to(dev)
        x, lin = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float64, device=dev), torch.linalg
        flip = lambda t: t.flip(-1)  # noqa: E731
        colnorm = lambda t: torch.linalg.norm(t, dim=0)  # noqa: E731
        to_numpy = lambda t: t.cpu().numpy()  # noqa: E731
    matvecs, history = 0, []
    while True:
        q, _ = lin.qr(x)
        aq = a_op @ q
        matvecs += 1
        h = q.T @ aq
        theta, u = lin.eigh(0.5 * (h + h.T))
        theta, u = flip(theta), flip(u)  # descending mu = ascending lambda
        x, ax = q @ u, aq @ u
        residual = colnorm(ax - x * theta)  # (B,)
        lam_k = max(1.0 - float(theta[k - 1]), 1e-12)
        worst = float(residual[:k].max())
        history.append(worst)
        if worst <= rel_tol * lam_k or matvecs >= max_matvecs:
            break
        # Chebyshev filter: damp [-1, theta_B] (unwanted), amplify (theta_B, 1]
        lo, hi = -1.0, float(theta[-1])
        half, centre = (hi - lo) / 2.0, (hi + lo) / 2.0
        degree = int(np.clip(2.0 / np.sqrt(2.0 * max(1.0 - hi, 1e-12)), 10, 200))
        degree = max(2, min(degree, max_matvecs - matvecs))
        y_prev, y = x, (ax - centre * x) / half
        for i in range(2, degree + 1):
            y_next = 2.0 * (a_op @ y - centre * y) / half - y_prev
            matvecs += 1
            y_prev, y = y, y_next
            if i % 10 == 0:
                scale = colnorm(y)
                y_prev, y = y_prev / scale, y / scale
        x = y
    info = {"block_matvecs": matvecs, "max_residual": worst, "residual_history": history,
            "device": "numpy" if device is None else str(select_device(device))}
    return to_numpy(theta), to_numpy(x), info


# ------------------------------------------------------------ parsimonious selection


def _local_linear_fit(u: np.ndarray, y: np.ndarray, eps_scale: float) -> np.ndarray:
    """Leave-one-out Gaussian-kernel local linear regression of ``y`` on ``u`` at every sample.

    ``u (n, m)``, ``y (n,)`` → ``f_hat (n,)``: for each ``i`` the weighted least-squares fit
    ``y_j ≈ a_i + b_i · (u_j - u_i)`` with weights ``w_ij = exp(-|u_i - u_j|^2 / eps^2)``
    (``w_ii = 0``), ``eps`` = median pairwise distance / ``eps_scale``; ``f_hat_i = a_i``.
    All ``n`` normal equations are formed with dense products (``O(n^2 m^2)``) and solved
    as one batch.
    """
    n, m = u.shape
    sq = np.einsum("ij,ij->i", u, u)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (u @ u.T), 0.0)  # (n, n)
    off = d2[np.triu_indices(n, 1)]
    eps2 = (np.median(np.sqrt(off)) / eps_scale) ** 2 if off.size else 0.0
    if not eps2 > 0:  # all regressor rows identical: the local fit is the leave-one-out mean
        return (y.sum() - y) / max(n - 1, 1)
    w = np.exp(-d2 / eps2)  # (n, n)
    np.fill_diagonal(w, 0.0)
    s0 = w.sum(axis=1)  # (n,)
    s1 = w @ u  # (n, m)
    s2 = (w @ (u[:, :, None] * u[:, None, :]).reshape(n, m * m)).reshape(n, m, m)
    wy = w @ y  # (n,)
    wuy = w @ (u * y[:, None])  # (n, m)
    # centred design [1, u_j - u_i]: normal matrix A_i (n, m+1, m+1) and right side b_i (n, m+1)
    c1 = s1 - s0[:, None] * u  # sum_j w_ij (u_j - u_i)
    c2 = (s2 - s1[:, :, None] * u[:, None, :] - u[:, :, None] * s1[:, None, :]
          + s0[:, None, None] * u[:, :, None] * u[:, None, :])
    a = np.empty((n, m + 1, m + 1))
    a[:, 0, 0] = s0
    a[:, 0, 1:] = c1
    a[:, 1:, 0] = c1
    a[:, 1:, 1:] = c2
    b = np.concatenate([wy[:, None], wuy - u * wy[:, None]], axis=1)  # (n, m+1)
    # tiny ridge relative to each system's scale keeps isolated samples / rank-deficient
    # neighbourhoods solvable (they then fall back towards the weighted mean)
    ridge = 1e-8 * (np.trace(a, axis1=1, axis2=2) + 1e-300)
    a[:, np.arange(m + 1), np.arange(m + 1)] += ridge[:, None]
    coef = np.linalg.solve(a, b[:, :, None])[:, :, 0]
    fit = coef[:, 0]
    empty = s0 < 1e-12 * max(float(s0.max()), 1e-300)  # no neighbour within reach
    fit[empty] = (y.sum() - y[empty]) / max(n - 1, 1)
    return fit


def harmonic_residuals(
    eigenvectors: np.ndarray,
    *,
    trivial: np.ndarray | None = None,
    threshold: float = 0.5,
    n_sample: int = 2000,
    eps_scale: float = 3.0,
    regress_on: str = "all",
    max_regressors: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Which eigenvectors are new directions, and which are harmonics of earlier ones.

    Dsilva, Talmon, Coifman & Kevrekidis (2018), "Parsimonious representation of nonlinear
    dynamical systems through manifold learning: a chemotaxis case study", Appl. Comput.
    Harmon. Anal. 44:759-773: on a manifold with one long and one short direction (a
    rectangle ``[0, L1] x [0, L2]``, ``L1 > L2``) the Laplacian eigenfunctions are products
    ``cos(pi a x / L1) cos(pi b y / L2)`` with eigenvalues ``(a/L1)^2 + (b/L2)^2``, so in
    eigenvalue order the short side's first eigenfunction comes after ``~L1/L2``
    *harmonics* ``cos(pi a x / L1)``, ``a >= 2``, of the long one — functions of
    ``phi_1`` that carry no new coordinate. Each eigenvector ``phi_k`` (eigenvalue order) is
    regressed on the earlier ones by leave-one-out local linear regression (Gaussian kernel
    of width ``eps`` = median pairwise distance / ``eps_scale``); the normalised
    leave-one-out residual

        r_k = |phi_k - f_hat(phi_1..phi_{k-1})| / |phi_k - mean(phi_k)|

    is ~0 for a harmonic (a smooth function of the earlier eigenvectors) and ~1 for a new
    direction (``r_1 = 1``). Eigenvectors with ``r_k > threshold`` are the *unique* ones.

    Parameters
    ----------
    eigenvectors
        ``(N, K)`` eigenvectors of the symmetric normalised Laplacian in eigenvalue order
        (columns of :attr:`LaplacianEigenmaps.eigenvectors`).
    trivial
        ``(K,)`` bool mask of the trivial (constant-eigenvalue-0) columns; ``None``: column 0
        is trivial if all its entries have one sign. The symmetric Laplacian's eigenvectors
        are ``D^1/2 psi`` with ``psi`` the random-walk eigenvectors (the discrete
        eigenfunctions whose harmonics are functions of each other); the residuals are
        computed on ``psi_k = phi_k / |phi_trivial|`` (row norm over the trivial columns,
        which is ``∝ sqrt(D_ii)``). Trivial columns get ``r = NaN`` and are never regressors.
    threshold
        ``r_k > threshold`` marks a unique direction (0.5 in Dsilva et al.).
    n_sample
        Rows used (a seeded random subsample when ``N > n_sample``; the cost is
        ``O(n_sample^2 m^2)`` per eigenvector with ``m`` regressors).
    eps_scale
        Kernel width = median pairwise distance of the regressors / ``eps_scale`` (3 in
        Dsilva et al.).
    regress_on
        ``"all"`` (Dsilva et al.): ``phi_k`` on every earlier nontrivial eigenvector;
        ``"unique"``: only on the earlier ones already flagged unique (a greedy variant;
        the kernel then lives in the low-dimensional space of the unique coordinates).
        Measured (tests/core/test_laplacian.py, docs/spectral.md): on a clean rectangle
        ``"all"`` is exact (uniques = the two sides; harmonics ``r < 0.1``) while
        ``"unique"`` also flags the product mode ``cos(pi x) cos(pi y / L2)`` (r ≈ 0.5);
        on the noisy box-arms densities with 40-60 candidates ``"all"`` over-fits — a local
        linear fit in 20-60 dimensions from 2000 samples explains every eigenvector, even
        the box direction falls to r ≈ 0.35, so only phi_1 is unique — whereas
        ``"unique"`` finds the box and short-arm directions (plus some noise-dominated
        eigenvectors: false uniques), which is what the spectral stage uses.
    max_regressors
        With ``regress_on="all"``: regress on at most this many of the most recent earlier
        eigenvectors (``None``: all). Keeps the cost bounded for large ``K``.
    seed
        Subsample seed.

    Returns
    -------
    residuals
        ``(K,)`` ``r_k`` (NaN for trivial columns; 0 for a column that is constant on the
        sample).
    unique
        ``(U,)`` int indices of the unique columns, ascending (eigenvalue order).
    """
    phi = np.asarray(eigenvectors, dtype=np.float64)
    if phi.ndim != 2:
        raise ValueError(f"eigenvectors: expected (N, K), got shape {phi.shape}")
    n, k_total = phi.shape
    if regress_on not in ("all", "unique"):
        raise ValueError(f"regress_on: expected 'all' or 'unique', got {regress_on!r}")
    if not eps_scale > 0:
        raise ValueError(f"eps_scale: expected > 0, got {eps_scale}")
    if int(n_sample) < 3:
        raise ValueError(f"n_sample: expected >= 3, got {n_sample}")
    if trivial is None:
        trivial = np.zeros(k_total, dtype=bool)
        if k_total and n and (np.all(phi[:, 0] > 0) or np.all(phi[:, 0] < 0)):
            trivial[0] = True
    trivial = np.asarray(trivial, dtype=bool)
    if trivial.shape != (k_total,):
        raise ValueError(f"trivial: expected a ({k_total},) bool mask, got shape {trivial.shape}")
    residuals = np.full(k_total, np.nan)
    if n < 3:
        residuals[~trivial] = 1.0
        return residuals, np.flatnonzero(~trivial)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, int(n_sample), replace=False)) if n > n_sample else np.arange(n)
    psi = phi[rows]  # (n_s, K)
    if trivial.any():
        scale = np.sqrt((psi[:, trivial] ** 2).sum(axis=1))  # ∝ sqrt(degree)
        if np.all(scale > 0):
            psi = psi / scale[:, None]
    psi = psi - psi.mean(axis=0)
    norms = np.sqrt((psi**2).sum(axis=0))  # (K,)
    scale_ref = float(norms[~trivial].max()) if (~trivial).any() else 0.0
    psi = psi / np.where(norms > 0, norms, 1.0) * np.sqrt(len(rows))  # unit RMS columns
    unique: list[int] = []
    previous: list[int] = []
    for j in range(k_total):
        if trivial[j]:
            continue
        if not norms[j] > 1e-12 * max(scale_ref, 1e-300):
            residuals[j] = 0.0  # constant on the sample: explains nothing new
            previous.append(j)
            continue
        regressors = unique if regress_on == "unique" else previous
        if max_regressors is not None and regress_on == "all":
            regressors = regressors[-int(max_regressors):] if int(max_regressors) > 0 else []
        if not regressors:
            residuals[j] = 1.0
        else:
            y = psi[:, j]
            fit = _local_linear_fit(psi[:, regressors], y, float(eps_scale))
            residuals[j] = float(np.sqrt(((y - fit) ** 2).sum() / (y**2).sum()))
        if residuals[j] > threshold:
            unique.append(j)
        previous.append(j)
    return residuals, np.asarray(unique, dtype=np.int64)


def parsimonious_order(trivial: np.ndarray, unique: np.ndarray, n_columns: int | None = None) -> np.ndarray:
    """Column order "trivial first, unique directions, then the rest by eigenvalue".

    Parameters
    ----------
    trivial
        ``(K,)`` bool mask of trivial columns.
    unique
        Indices of the unique columns (:func:`harmonic_residuals`).
    n_columns
        Keep the first ``n_columns`` of the order (``None``: all ``K``).

    Returns
    -------
    ``(n_columns,)`` int indices into the eigenvalue-ordered columns.
    """
    trivial = np.asarray(trivial, dtype=bool)
    k_total = len(trivial)
    first = list(np.flatnonzero(trivial)) + [int(j) for j in unique if not trivial[int(j)]]
    seen = set(first)
    order = first + [j for j in range(k_total) if j not in seen]
    order = np.asarray(order, dtype=np.int64)
    return order if n_columns is None else order[: int(n_columns)]
