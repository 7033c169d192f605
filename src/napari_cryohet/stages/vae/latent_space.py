"""Views of the latent space for the explorer: 2D/3D embeddings, back to latents, paths, selections.

Science rather than GUI, so it lives here and is tested without a viewer: low-dimensional
embeddings of the latents (PCA, or UMAP as in §5.1 of Kimanius, Jamali, Scheres 2022),
positions in an embedding mapped back to latent points, evenly spaced latent paths, and the
particles inside a drawn polygon.
"""

from __future__ import annotations

import numpy as np

from napari_cryohet.stages._common import (
    CancelToken,
    ProgressCallback,
    check_cancel,
    report,
    report_busy,
)

__all__ = ["EMBEDDING_METHODS", "embed_latents", "embedding_to_latent", "latent_path", "points_in_polygon"]

#: Embedding name → (description, n_components).
EMBEDDING_METHODS: dict[str, tuple[str, int]] = {
    "pca2": ("PCA, 2D (instant)", 2),
    "pca3": ("PCA, 3D (instant)", 3),
    "umap2": ("UMAP, 2D (McInnes et al. 2018)", 2),
    "umap3": ("UMAP, 3D (McInnes et al. 2018)", 3),
}


def embed_latents(latents: np.ndarray, *, method: str = "pca2", seed: int = 0,
                  progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> np.ndarray:
    """Low-dimensional view of the latents for display.

    UMAP reports a busy state (``report_busy``: an indeterminate bar with a message) while
    it loads, compiles and runs, since none of these steps reports its progress; its numba
    functions are compiled once per computer and kept in numba's on-disk cache
    (:func:`~napari_cryohet.core.numba_cache.cache_numba_functions`), so only the very
    first UMAP view takes the ~10 s of compiling.

    Parameters
    ----------
    latents
        ``(N, zdim)``.
    method
        A key of :data:`EMBEDDING_METHODS`. A latent space of lower dimension than asked is
        zero-padded.
    seed
        UMAP's random state.
    progress, cancel
        Progress callback and cancel token (``stages._common``); cancel is checked before
        UMAP starts (UMAP itself cannot be interrupted).

    Returns
    -------
    ``(N, 2)`` or ``(N, 3)`` float32.
    """
    if method not in EMBEDDING_METHODS:
        raise ValueError(f"method must be one of {sorted(EMBEDDING_METHODS)}, got {method!r}")
    x = np.asarray(latents, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"latents must have shape (N ≥ 2, zdim), got {x.shape}")
    k = EMBEDDING_METHODS[method][1]
    if method.startswith("pca"):
        xc = x - x.mean(0)
        _, _, vt = np.linalg.svd(xc, full_matrices=False)
        emb = xc @ vt[:k].T
    else:
        emb = _umap(x, k, int(seed), progress, cancel)
    if emb.shape[1] < k:
        emb = np.pad(emb, ((0, 0), (0, k - emb.shape[1])))
    return emb.astype(np.float32)


def _umap(x: np.ndarray, k: int, seed: int, progress: ProgressCallback | None,
          cancel: CancelToken | None) -> np.ndarray:
    """UMAP of ``x`` into ``k`` dimensions, its compiled code cached on disk across sessions."""
    from napari_cryohet.core.numba_cache import cache_numba_functions, configure_numba_cache

    cache = configure_numba_cache()  # before numba / pynndescent are imported
    compiled = cache.is_dir() and any(cache.rglob("umap_.*.nbi"))
    report_busy(progress, "loading UMAP (McInnes et al. 2018)" if compiled else
                "preparing UMAP (McInnes et al. 2018) for first use on this computer: compiling takes "
                "10-60 s once, later sessions reuse it")
    import umap

    cache_numba_functions("umap", "pynndescent")
    check_cancel(cancel)
    report_busy(progress, f"UMAP of {len(x)} latent vectors into {k} dimensions"
                + ("" if compiled else " (compiling on first use)"))
    emb = umap.UMAP(n_components=k, random_state=seed, n_neighbors=min(15, len(x) - 1)).fit_transform(x)
    report(progress, 1.0, "UMAP done")
    return emb


def embedding_to_latent(points: np.ndarray, embedding: np.ndarray, latents: np.ndarray, *,
                        k: int = 10) -> np.ndarray:
    """Latent points for positions in an embedding (UMAP has no inverse): the mean latent
    of the ``k`` particles nearest to each position.

    Parameters
    ----------
    points
        ``(M, c)`` positions in the embedding space.
    embedding
        ``(N, c)`` particle embedding; ``latents`` ``(N, zdim)`` their latents.

    Returns
    -------
    ``(M, zdim)`` float32.
    """
    points = np.atleast_2d(np.asarray(points, dtype=np.float64))
    embedding = np.asarray(embedding, dtype=np.float64)
    c = min(points.shape[1], embedding.shape[1])
    d2 = ((points[:, None, :c] - embedding[None, :, :c]) ** 2).sum(-1)  # (M, N)
    k = max(1, min(int(k), len(embedding)))
    nearest = np.argpartition(d2, k - 1, axis=1)[:, :k]
    return np.asarray(latents, dtype=np.float32)[nearest].mean(1)


def latent_path(anchors: np.ndarray, n_steps: int) -> np.ndarray:
    """``n_steps`` points evenly spaced (by arc length) along the polyline through ``anchors``.

    Parameters
    ----------
    anchors
        ``(A ≥ 2, zdim)`` latent points (two end points, or a drawn path mapped to latents).
    n_steps
        Number of volumes in the series (≥ 2).

    Returns
    -------
    ``(n_steps, zdim)`` float32, starting at ``anchors[0]`` and ending at ``anchors[-1]``.
    """
    a = np.asarray(anchors, dtype=np.float64)
    if a.ndim != 2 or len(a) < 2:
        raise ValueError(f"anchors must have shape (A ≥ 2, zdim), got {a.shape}")
    if int(n_steps) < 2:
        raise ValueError(f"n_steps must be ≥ 2, got {n_steps}")
    seg = np.linalg.norm(np.diff(a, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if s[-1] == 0:
        return np.repeat(a[:1], int(n_steps), 0).astype(np.float32)
    t = np.linspace(0.0, s[-1], int(n_steps))
    out = np.stack([np.interp(t, s, a[:, j]) for j in range(a.shape[1])], -1)
    return out.astype(np.float32)


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Indices of ``points`` ``(N, 2)`` inside ``polygon`` ``(V, 2)`` (same coordinate order)."""
    from matplotlib.path import Path as MplPath

    pts = np.asarray(points, dtype=np.float64)[:, :2]
    poly = np.asarray(polygon, dtype=np.float64)[:, -2:]
    if len(poly) < 3:
        raise ValueError(f"polygon needs at least 3 vertices, got {len(poly)}")
    return np.flatnonzero(MplPath(poly).contains_points(pts))
