"""The symmetric normalised graph Laplacian and its eigenvectors (Laplacian eigenmaps).

The manifold-learning step of seed 000_8d73a95ce4c6e7ab.txt (§2.2, Appendix B): from a
weighted similarity graph ``W`` ``(N, N)`` (:mod:`napari_cryohet.core.graph`), its
symmetric normalised Laplacian

    L = D^-1/2 (D - W) D^-1/2 = I - D^-1/2 W D^-1/2,      D_ii = sum_j W_ij

(Appendix B of 000) and the eigenvectors of ``L`` for its ``K`` smallest eigenvalues,
the matrix ``Phi = [phi^(0) | ... | phi^(K-1)]`` of eq. 2.5 that the chain-fit stage
expands torsion and bond angles on (eq. 2.6).

* :func:`density_normalize` — optional Coifman-Lafon ``D^-α W D^-α`` (diffusion maps).
* :func:`normalized_adjacency`, :func:`normalized_laplacian` — ``A = D^-1/2 W D^-1/2``
  and ``L = I - A``.
* :func:`laplacian_eigenmaps` — the ``K`` smallest eigenpairs of ``L``, returned as
  :class:`LaplacianEigenmaps`.

Eigen-solvers (:func:`laplacian_eigenmaps`)
-------------------------------------------
* ``"dense"`` — LAPACK ``eigh`` of ``L`` restricted to the ``K`` smallest eigenvalues.
* ``"sparse"`` — ARPACK ``eigsh`` (Lanczos) for the ``K`` *largest* eigenvalues ``mu`` of
  the normalised adjacency ``A = D^-1/2 W D^-1/2``; ``L = I - A`` has the same eigenvectors
  and eigenvalues ``lambda = 1 - mu``. This needs only sparse mat-vecs (no factorisation,
  unlike shift-invert on ``L``) and is what makes ``N = 10^6`` feasible.
* ``"multilevel"`` — for ``N`` in the 10^5-10^6 range: graph aggregation, a recursive
  coarse solve and Chebyshev-filtered subspace iteration (Zhou & Saad 2007) on ``A``, in
  :mod:`napari_cryohet.core.multilevel_eigensolver` (the sparse/approximate route of
  seed 000 §4, step (i)).
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
  small) raise :class:`~napari_cryohet.core.graph.GraphError`. A disconnected graph is
  allowed (clustered data): ``n_components`` is recorded and the zero eigenvalue then has
  that multiplicity.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.sparse.csgraph
import scipy.sparse.linalg

from napari_cryohet.core.graph import GraphError
from napari_cryohet.core.multilevel_eigensolver import _multilevel_eigenpairs

__all__ = [
    "DENSE_MAX_NODES",
    "SPARSE_MAX_NODES",
    "LaplacianEigenmaps",
    "density_normalize",
    "normalized_adjacency",
    "normalized_laplacian",
    "laplacian_eigenmaps",
    "fix_eigenvector_signs",
]

#: ``method="auto"`` uses dense ``eigh`` up to this many nodes.
DENSE_MAX_NODES = 1000
#: ``method="auto"`` uses ARPACK up to this many nodes, the multilevel solver beyond.
SPARSE_MAX_NODES = 50_000


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
    >>> from napari_cryohet.core.graph import build_knn_graph
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
