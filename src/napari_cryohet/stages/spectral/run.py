"""Representation → similarity graph → normalised Laplacian → ``K`` eigenvectors.

Esteve-Yagüe et al. 2022 (seed 000), §2.2 (eq. 2.5), §3.1-3.2 and Appendix B; the
numerics live in :mod:`napari_cryohet.core.graph`, :mod:`napari_cryohet.core.laplacian`,
:mod:`napari_cryohet.core.tangent_denoise` and :mod:`napari_cryohet.core.harmonics`.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from napari_cryohet.core.graph import build_gaussian_graph, build_knn_graph, find_nearest_neighbors
from napari_cryohet.core.harmonics import harmonic_residuals, parsimonious_order
from napari_cryohet.core.laplacian import LaplacianEigenmaps, density_normalize, laplacian_eigenmaps
from napari_cryohet.core.tangent_denoise import tangent_denoise
from napari_cryohet.stages._common import CancelToken, ProgressCallback, check_cancel, report
from napari_cryohet.stages.protocol import Embedding, dataset_indices
from napari_cryohet.stages.spectral.config import SpectralConfig
from napari_cryohet.stages.spectral.outliers import SpectralOutliers, find_spectral_outliers
from napari_cryohet.stages.spectral.representations import build_representation
from napari_cryohet.stages.spectral.result import SpectralResult

__all__ = ["run_spectral"]

_MAX_LISTED = 20  # particles named in the warning (all are in the provenance)


def run_spectral(
    dataset,
    config: SpectralConfig,
    *,
    features: Embedding | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    run_dir: str | Path | None = None,
) -> SpectralResult:
    """Representation → similarity graph → normalised Laplacian → ``K`` eigenvectors.

    Parameters
    ----------
    dataset
        A :class:`~napari_cryohet.core.particle_dataset.ParticleDataset` (or a subset of
        one) or a :class:`~napari_cryohet.stages.simulate.box_arms.Toy2DDataset`.
    config
        :class:`SpectralConfig`.
    features
        Per-particle vectors for the ``"table"`` representation (e.g. VAE latents): an
        :class:`~napari_cryohet.stages.protocol.Embedding`, aligned to ``dataset`` by root
        particle index (it may cover more particles, in any order; a missing one is a
        :class:`~napari_cryohet.stages.protocol.ParticleMismatchError`).
    progress, cancel
        Progress callback and cancel token (``stages._common``).
    run_dir
        The workspace's run directory (unused: the stage keeps no checkpoints, and the
        workspace saves the returned result itself).

    Particles that form their own group in the similarity graph or dominate an eigenvector
    (:mod:`~napari_cryohet.stages.spectral.outliers`) are named in a warning and in
    ``provenance["outlier_particles"]``; with ``config.exclude_outliers`` the embedding is
    computed again without them (``provenance["excluded_outliers"]``).

    Returns
    -------
    SpectralResult
        Not saved here: ``Workspace.run("spectral", ...)`` saves it as a run, or call
        ``result.save(directory)``.
    """
    result, outliers = _embed(dataset, config, features=features, progress=progress, cancel=cancel)
    if not outliers:
        return result
    root = dataset_indices(dataset)[outliers.rows]
    listed = ", ".join(str(int(i)) for i in root[:_MAX_LISTED]) + (", ..." if len(root) > _MAX_LISTED else "")
    record = {"particles": [int(i) for i in root], "why": outliers.describe()}
    if config.exclude_outliers:
        if not hasattr(dataset, "subset"):
            raise ValueError("exclude_outliers: this dataset cannot be subset; run on a ParticleDataset")
        keep = np.setdiff1d(np.arange(len(dataset)), outliers.rows)
        report(progress, 0.0, f"excluding {len(root)} outlier particle(s) ({listed}) and computing again")
        result, _ = _embed(dataset.subset(keep), config, features=features, progress=progress, cancel=cancel)
        result.provenance["excluded_outliers"] = record
        return result
    result.provenance["outlier_particles"] = record
    warnings.warn(
        f"spectral embedding: {len(root)} particle(s) dominate it: {listed} (0-based particle indices, in the "
        f"order of the particle file). {outliers.describe()[0].upper()}{outliers.describe()[1:]}. Such particles are "
        "usually blank, constant or wrongly scaled images, and the eigenvectors describe them rather than the "
        "shape changes. Run again with exclude_outliers=True ('exclude outlier particles' in the settings form, "
        "--exclude-outliers on the command line) to compute without them, or leave them out of the dataset "
        "(the full list is in the result's provenance['outlier_particles']).",
        UserWarning, stacklevel=2)
    return result


def _embed(dataset, config: SpectralConfig, *, features: Embedding | None, progress: ProgressCallback | None,
           cancel: CancelToken | None) -> tuple[SpectralResult, SpectralOutliers]:
    """The embedding of ``dataset`` and the particles that dominate it (rows of ``dataset``)."""
    t0 = time.perf_counter()
    report(progress, 0.0, f"representation: {config.representation}")
    x, info = build_representation(dataset, config, features=features, progress=progress, cancel=cancel)
    check_cancel(cancel)
    if config.denoise_dim is not None:
        if not int(config.denoise_dim) < x.shape[1]:
            raise ValueError(f"denoise_dim: expected < the representation's {x.shape[1]} dimensions, "
                             f"got {config.denoise_dim}")
        dk = min(int(config.denoise_k), len(x) - 1)
        report(progress, 0.35, f"tangent-space denoising (dim {config.denoise_dim}, k {dk})")
        x = tangent_denoise(x, dim=int(config.denoise_dim), k=dk, n_iter=int(config.denoise_iter),
                            seed=config.seed, device=config.device)
        info["denoise"] = {"dim": int(config.denoise_dim), "k": dk, "n_iter": int(config.denoise_iter)}
    t_rep = time.perf_counter()
    check_cancel(cancel)
    n = len(x)
    k = config.neighbours(n)
    report(progress, 0.45, f"{config.graph} graph on {n} points ({x.shape[1]} dims)")
    sigma = config.sigma
    if config.graph == "gaussian":
        if sigma is None:
            _, dist = find_nearest_neighbors(x, k, seed=config.seed, device=config.device)
            sigma = float(np.median(dist[:, -1]))
        weights = build_gaussian_graph(x, sigma=sigma)
    else:
        weights = build_knn_graph(x, k=k, weights=config.weights, sigma=sigma, seed=config.seed,
                                  device=config.device)
    weights = density_normalize(weights, config.alpha)
    t_graph = time.perf_counter()
    check_cancel(cancel)
    n_out = min(int(config.n_eigenvectors), n - 1)
    parsimonious = config.order == "parsimonious"
    n_compute = n_out
    if parsimonious:
        n_compute = min(int(config.n_candidates or 3 * int(config.n_eigenvectors)), n - 1)
    report(progress, 0.7, f"eigenvectors ({n_compute})")
    emb: LaplacianEigenmaps = laplacian_eigenmaps(weights, n_compute, method=config.solver, seed=config.seed,
                                                  device=config.device)
    t_eig = time.perf_counter()
    n_cols = emb.eigenvectors.shape[1]
    rank = np.arange(min(n_out, n_cols), dtype=np.int64)
    residual = np.full(n_cols, np.nan)
    unique_info: dict[str, Any] = {}
    if parsimonious:
        check_cancel(cancel)
        report(progress, 0.85, f"harmonic residuals of {n_cols} eigenvectors")
        residual, unique = harmonic_residuals(emb.eigenvectors, trivial=emb.trivial,
                                              threshold=config.unique_threshold,
                                              regress_on=config.harmonic_regress_on, seed=config.seed)
        rank = parsimonious_order(emb.trivial, unique, n_out)
        unique_info = {"n_candidates": n_cols, "unique_eigenvalue_ranks": unique,
                       "n_unique": int(len(unique))}
    t_sel = time.perf_counter()
    nnz = int(weights.nnz) if hasattr(weights, "nnz") else int(np.count_nonzero(weights))
    provenance = {
        "representation": dict(info),
        "n_particles": n,
        "sigma_used": sigma,
        "k_used": k,
        "graph_nnz": nnz,
        "solver": emb.method,
        "solver_info": {k_: v for k_, v in emb.info.items() if k_ != "residual_history"},
        "n_components_graph": emb.n_components,
        "seconds": {"representation": t_rep - t0, "graph": t_graph - t_rep, "eigen": t_eig - t_graph,
                    "selection": t_sel - t_eig},
        "order": config.order,
        **unique_info,
    }
    result = SpectralResult(
        eigenvalues=emb.eigenvalues[rank], eigenvectors=np.ascontiguousarray(emb.eigenvectors[:, rank]),
        indices=dataset_indices(dataset), trivial=emb.trivial[rank], config=config, provenance=provenance,
        eigenvalue_rank=rank, harmonic_residual=residual[rank],
    )
    report(progress, 1.0, f"done: lambda_1 = {emb.eigenvalues[min(1, len(emb.eigenvalues) - 1)]:.3g}")
    return result, find_spectral_outliers(weights, emb.eigenvectors)
