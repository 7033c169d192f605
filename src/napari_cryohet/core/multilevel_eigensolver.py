"""Multilevel eigensolver for the normalised Laplacian of a large sparse graph.

``laplacian_eigenmaps(..., method="multilevel")`` (:mod:`napari_cryohet.core.laplacian`)
for ``N`` in the 10^5-10^6 range, where Lanczos needs thousands of mat-vecs because the
wanted eigenvalues (~k/N) are tiny next to the spectral width 2: aggregate the graph into
``~N/50`` connected pieces (multi-source BFS from random seed nodes, :func:`_aggregate`),
solve the aggregated (Galerkin) problem ``P^T (D - W) P y = lambda P^T D P y`` (itself a
normalised-Laplacian problem, solved recursively by ``laplacian_eigenmaps``), interpolate it
back and refine by Chebyshev-filtered subspace iteration (Zhou & Saad 2007,
:func:`_chebyshev_subspace_iteration`) on ``A = D^-1/2 W D^-1/2`` with a block of ``K + 8``
vectors until the first ``K`` residuals ``|A v - mu v|`` fall below
``tol_multilevel * lambda_K`` (or ``max_matvecs`` block mat-vecs are spent: the achieved
residual is in ``info``). This is the sparse/approximate route of seed 000 §4, step (i).
The subspace iteration runs in NumPy/SciPy, or in torch on a given device (sparse CSR
mat-vecs on CUDA).

The names are private to the package: the entry point is
:func:`~napari_cryohet.core.laplacian.laplacian_eigenmaps`.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph

__all__ = ["_aggregate", "_chebyshev_subspace_iteration", "_multilevel_eigenpairs"]


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
    # imported here, not at module level: laplacian imports this module (the coarse problem is
    # solved recursively by the same front end)
    from napari_cryohet.core.laplacian import laplacian_eigenmaps

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
