"""The acceptance check of the spectral stage: true parameters predicted from the eigenvectors.

Issue 4 / Esteve-Yagüe et al. 2022 §3.1: each true conformational parameter of the
box-arms toy regressed linearly on the first 20 eigenvectors, R² on held-out particles.
"""

from __future__ import annotations

import numpy as np

__all__ = ["regression_r2"]


def regression_r2(
    eigenvectors: np.ndarray, targets: np.ndarray, *, train_fraction: float = 0.8, seed: int = 0
) -> np.ndarray:
    """Held-out R² of a least-squares fit ``target ≈ c + Phi a`` for each target column.

    Fitted on ``train_fraction`` of the particles (a seeded random split) and scored on
    the rest.

    Parameters
    ----------
    eigenvectors
        ``(N, K)`` features.
    targets
        ``(N,)`` or ``(N, T)`` true parameters.

    Returns
    -------
    ``(T,)`` R² on the held-out particles.
    """
    phi = np.asarray(eigenvectors, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    y = y[:, None] if y.ndim == 1 else y
    n = len(phi)
    perm = np.random.default_rng(seed).permutation(n)
    n_train = int(round(train_fraction * n))
    train, test = perm[:n_train], perm[n_train:]
    design = np.c_[np.ones(n), phi]
    coef, *_ = np.linalg.lstsq(design[train], y[train], rcond=None)
    resid = y[test] - design[test] @ coef
    return 1.0 - (resid**2).mean(axis=0) / y[test].var(axis=0)
