"""The multilevel eigensolver (laplacian_eigenmaps(method="multilevel")): torch backend vs NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from napari_cryohet.core.graph import build_knn_graph
from napari_cryohet.core.laplacian import laplacian_eigenmaps


def _torus(n, rng, radii=(1.0, 0.6), q=6):
    """Flat torus with unequal circle radii, isometrically rotated into R^q."""
    a, b = rng.uniform(0, 2 * np.pi, (2, n))
    x = np.c_[radii[0] * np.cos(a), radii[0] * np.sin(a), radii[1] * np.cos(b), radii[1] * np.sin(b)]
    basis = np.linalg.qr(rng.standard_normal((q, q)))[0][:4]  # (4, q) orthonormal rows
    return x @ basis, a, b


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
