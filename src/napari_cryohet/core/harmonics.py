"""Which Laplacian eigenvectors are new directions and which are harmonics of earlier ones.

Parsimonious selection of eigenvectors (Dsilva, Talmon, Coifman & Kevrekidis 2018,
"Parsimonious representation of nonlinear dynamical systems through manifold learning:
a chemotaxis case study", Appl. Comput. Harmon. Anal. 44:759-773): each eigenvector of
:func:`~napari_cryohet.core.laplacian.laplacian_eigenmaps` is regressed on the earlier ones
by leave-one-out local linear regression (:func:`_local_linear_fit`); a small residual marks
a harmonic (a function of earlier eigenvectors, no new coordinate), a large one a unique
direction (:func:`harmonic_residuals`). :func:`parsimonious_order` puts the unique columns
first.
"""

from __future__ import annotations

import numpy as np

__all__ = ["harmonic_residuals", "parsimonious_order"]


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
        Measured (tests/core/test_harmonics.py, docs/spectral.md): on a clean rectangle
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
