"""Landscape clustering: cluster particles by the volumes their latents decode to.

The last clustering method of issue 13, item 2, after cryoDRGN's landscape analysis
(Zhong, Bepler, Berger & Davis 2021, *Nat. Methods* 18:176, and cryoDRGN's
``cryodrgn analyze_landscape``), used in the thesis' analysis block (Silvera Coeff 2025,
§4.1.3, "CryoDRGN Analysis"):

1. sketch the latent distribution with K-Means (M centres);
2. decode one volume per centre with the run's decoder;
3. mask (union of thresholded volumes, dilated), flatten, PCA of the M volumes;
4. agglomerative clustering of the M volumes into K states;
5. every particle takes the state of its K-Means centre.

Clustering in *volume* space rather than latent space matters when the latent space is not
isometric to the structures: a VAE can place one conformation in two far-apart latent
regions (its latent space is only defined up to the decoder), which K-Means or GMM on the
latents would split and landscape clustering merges.

Differences from ``cryodrgn analyze_landscape``, all optional here: it clusters the masked
voxels themselves and uses PCA only for plots (pass ``n_pcs=None`` to do the same), it
snaps each K-Means centre onto the nearest particle latent (``on_data=True``), and its
defaults are M = 1000 centres, K = 10 states, ``average`` linkage, 20 PCs.
"""

from __future__ import annotations

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
from napari_cryohet.stages.refine.clustering import ClusterResult

__all__ = ["LINKAGES", "LandscapeResult", "landscape_clusters", "landscape_mask"]

#: Linkages of :class:`sklearn.cluster.AgglomerativeClustering` (all with Euclidean distance).
LINKAGES = ("ward", "average", "complete", "single")

#: ``decode(z)``: ``(M, zdim)`` latents → ``(M, D, D, D)`` volumes, e.g. ``VAEResult.decode``.
Decoder = Callable[[np.ndarray], Any]


@dataclass(frozen=True)
class LandscapeResult:
    """One landscape clustering: the particles' clusters plus the per-centre details.

    Attributes
    ----------
    clusters
        :class:`ClusterResult` of the N particles: ``labels`` ``(N,)`` in ``0 .. K−1``,
        ``memberships`` ``None``, ``centres`` ``(K, zdim)`` the mean latent of each
        cluster's particles (the mean of its centre latents when it has no particle),
        ``method`` ``"landscape"``, ``params`` every parameter of the call.
    centre_latents
        ``(M, zdim)`` the latents that were decoded (K-Means centres, or the nearest
        particle latents with ``on_data``).
    kmeans_labels
        ``(N,)`` int64, each particle's K-Means centre (``0 .. M−1``).
    centre_labels
        ``(M,)`` int64, each centre's cluster; ``clusters.labels == centre_labels[kmeans_labels]``.
    centre_counts
        ``(M,)`` int64, particles per centre.
    volume_pcs
        ``(M, P)`` PCA coordinates of the masked centre volumes (P = number of PCs kept).
    explained_variance_ratio
        ``(P,)`` fraction of the volumes' variance along each PC.
    mask
        ``(D, D, D)`` bool, the voxels that entered the PCA.
    mask_threshold
        The density threshold of the mask (−inf when every voxel was used).
    cluster_volumes
        ``(K, D, D, D)`` float32, each cluster's mean decoded volume, its centres weighted
        by their particle counts (cryoDRGN's ``state_<k>_mean.mrc``); zeros for a cluster
        without particles.
    """

    clusters: ClusterResult
    centre_latents: np.ndarray
    kmeans_labels: np.ndarray
    centre_labels: np.ndarray
    centre_counts: np.ndarray
    volume_pcs: np.ndarray
    explained_variance_ratio: np.ndarray
    mask: np.ndarray
    mask_threshold: float
    cluster_volumes: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)


def landscape_mask(volumes, *, threshold: float | None = None, dilate_px: int = 5) -> tuple[np.ndarray, float]:
    """The union of the volumes' thresholded supports, dilated: cryoDRGN's landscape mask.

    Parameters
    ----------
    volumes
        ``(M, D, D, D)``.
    threshold
        Density threshold. ``None``: cryoDRGN's automatic one, the mean over the volumes of
        half their 99.99th percentile (``make_mask`` in ``cryodrgn analyze_landscape``).
        ``-inf``: every voxel (no mask).
    dilate_px
        Binary dilation of the union (voxels; cryoDRGN's default is 5), so that densities
        that move in and out of the threshold stay inside.

    Returns
    -------
    ``(mask (D, D, D) bool, threshold)``.
    """
    from scipy.ndimage import binary_dilation

    vols = np.asarray(volumes)
    if threshold is None:
        threshold = float(np.mean([np.percentile(v, 99.99) / 2 for v in vols]))
    threshold = float(threshold)
    if threshold == -np.inf:
        return np.ones(vols.shape[1:], dtype=bool), threshold
    mask = (vols >= threshold).any(axis=0)  # (D, D, D)
    if not mask.any():
        raise ValueError(f"mask_threshold={threshold:g} is above every decoded voxel "
                         f"(max {float(vols.max()):g}): the mask is empty")
    if dilate_px > 0:
        mask = binary_dilation(mask, iterations=int(dilate_px))
    return mask, threshold


def landscape_clusters(latents, decode: Decoder, *, n_clusters: int = 6, n_centres: int = 50,
                       n_pcs: int | None = 10, linkage: str = "ward", seed: int = 0,
                       mask_threshold: float | None = None, mask_dilate_px: int = 5,
                       on_data: bool = False, decode_batch: int = 16,
                       progress: ProgressCallback | None = None,
                       cancel: CancelToken | None = None) -> LandscapeResult:
    """Cluster particles by the decoded volumes of their latent neighbourhoods.

    cryoDRGN's landscape analysis (Zhong et al. 2021, *Nat. Methods* 18:176;
    ``cryodrgn analyze_landscape``), the analysis the thesis builds on (Silvera Coeff 2025,
    §4.1.3): K-Means on the latents (M = ``n_centres`` centres, scikit-learn, seeded), one
    volume decoded per centre, the volumes masked (:func:`landscape_mask`), flattened and
    reduced by PCA (scikit-learn) to ``n_pcs`` components, agglomerative clustering
    (scikit-learn, ``linkage``) of the M volumes into ``n_clusters``, and each particle
    labelled with its centre's cluster. Negative densities are set to 0 before the PCA,
    as cryoDRGN does, so that solvent noise does not drive the clustering.

    Parameters
    ----------
    latents
        ``(N, zdim)`` per-particle latents (the VAE's ``mu``).
    decode
        ``decode(z (B, zdim)) -> (B, D, D, D)`` volumes; ``VAEResult.decode`` or any callable.
        Called in chunks of ``decode_batch`` centres.
    n_clusters
        K, the number of clusters (states); at most the number of centres.
    n_centres
        M, the K-Means sketch of the latent distribution (capped at N). More centres
        follow the landscape more finely and cost one decoded volume each.
    n_pcs
        PCA components of the masked volumes (capped at M and at the mask's voxel count);
        ``None`` clusters the masked voxels themselves (cryoDRGN's choice) and keeps
        ``min(M, 20)`` PCs for display only.
    linkage
        One of :data:`LINKAGES` (``"ward"`` merges the pair that increases the
        within-cluster variance least; cryoDRGN's default is ``"average"``).
    seed
        K-Means' and PCA's random state.
    mask_threshold
        See :func:`landscape_mask`: ``None`` (default) is cryoDRGN's automatic threshold
        (mean of half the 99.99th percentiles), ``-inf`` uses every voxel.
    mask_dilate_px
        Dilation of the mask (voxels).
    on_data
        Decode at the particle latent nearest to each K-Means centre instead of the centre
        itself (cryoDRGN's ``on_data=True``): no volume from an empty latent region.
    decode_batch
        Centres per ``decode`` call (progress and cancel are checked between calls).
    progress, cancel
        Progress callback and cancel token (``stages._common``).

    Returns
    -------
    :class:`LandscapeResult`; its ``clusters`` is the :class:`ClusterResult` the refine loop
    uses like any other method's.

    Raises
    ------
    ValueError
        Bad ``latents``, ``n_clusters`` above the number of centres, an unknown ``linkage``,
        ``decode`` returning the wrong shape or non-finite values, or an empty mask.
    """
    from sklearn.cluster import AgglomerativeClustering, KMeans
    from sklearn.decomposition import PCA

    z = np.asarray(latents, dtype=np.float64)
    if z.ndim != 2 or len(z) < 2:
        raise ValueError(f"latents must have shape (N ≥ 2, zdim), got {z.shape}")
    if not np.all(np.isfinite(z)):
        raise ValueError("latents hold NaN or infinite values")
    if linkage not in LINKAGES:
        raise ValueError(f"linkage must be one of {LINKAGES}, got {linkage!r}")
    if int(n_centres) < 2:
        raise ValueError(f"n_centres must be ≥ 2, got {n_centres}")
    m = min(int(n_centres), len(z))
    if not 1 <= int(n_clusters) <= m:
        raise ValueError(f"n_clusters must be in [1, n_centres={m}] (n_centres capped at N={len(z)}), "
                         f"got {n_clusters}")
    if n_pcs is not None and int(n_pcs) < 1:
        raise ValueError(f"n_pcs must be ≥ 1 or None, got {n_pcs}")
    if int(decode_batch) < 1:
        raise ValueError(f"decode_batch must be ≥ 1, got {decode_batch}")
    k = int(n_clusters)
    params = {"n_clusters": k, "n_centres": m, "n_pcs": n_pcs, "linkage": linkage, "seed": int(seed),
              "mask_threshold": mask_threshold, "mask_dilate_px": int(mask_dilate_px),
              "on_data": bool(on_data), "warm_start": False}

    # 1. K-Means sketch of the latent distribution
    check_cancel(cancel)
    report_busy(progress, f"K-Means sketch of {len(z)} latents with {m} centres")
    km = KMeans(n_clusters=m, n_init=1, random_state=int(seed)).fit(z)
    kmeans_labels = km.labels_.astype(np.int64)  # (N,)
    centres = km.cluster_centers_.copy()  # (M, zdim)
    if on_data:
        from scipy.spatial import cKDTree

        centres = z[cKDTree(z).query(centres)[1]]
    counts = np.bincount(kmeans_labels, minlength=m).astype(np.int64)  # (M,)

    # 2. one volume per centre
    vols = []
    for start in range(0, m, int(decode_batch)):
        check_cancel(cancel)
        report(progress, 0.8 * start / m, f"decoding volumes {start + 1}–{min(start + decode_batch, m)} of {m}")
        chunk = centres[start:start + decode_batch]
        v = np.asarray(decode(chunk.astype(np.float32)), dtype=np.float32)
        if v.ndim != 4 or len(v) != len(chunk) or not v.shape[1] == v.shape[2] == v.shape[3]:
            raise ValueError(f"decode must return ({len(chunk)}, D, D, D) volumes for {len(chunk)} latents, "
                             f"got shape {v.shape}")
        if vols and v.shape[1:] != vols[0].shape[1:]:
            raise ValueError(f"decode returned volumes of shape {v.shape[1:]} after {vols[0].shape[1:]}")
        vols.append(v)
    volumes = np.concatenate(vols)  # (M, D, D, D)
    if not np.all(np.isfinite(volumes)):
        raise ValueError("decode returned NaN or infinite values")

    # 3. mask, PCA
    check_cancel(cancel)
    report(progress, 0.85, "mask and PCA of the decoded volumes")
    mask, threshold = landscape_mask(volumes, threshold=mask_threshold, dilate_px=int(mask_dilate_px))
    x = np.maximum(volumes[:, mask], 0.0).astype(np.float64)  # (M, n_voxels)
    n_keep = min(20 if n_pcs is None else int(n_pcs), m, x.shape[1])
    pca = PCA(n_components=n_keep, random_state=int(seed))
    pcs = pca.fit_transform(x)  # (M, P)

    # 4. agglomerative clustering of the centre volumes
    check_cancel(cancel)
    report(progress, 0.95, f"{linkage} agglomerative clustering of {m} volumes into {k}")
    space = x if n_pcs is None else pcs
    centre_labels = AgglomerativeClustering(n_clusters=k, linkage=linkage).fit_predict(space).astype(np.int64)

    # 5. particles take their centre's cluster
    labels = centre_labels[kmeans_labels]  # (N,)
    cluster_centres = np.empty((k, z.shape[1]))  # (K, zdim)
    cluster_volumes = np.zeros((k, *volumes.shape[1:]), dtype=np.float32)  # (K, D, D, D)
    for c in range(k):
        in_c = labels == c
        cluster_centres[c] = z[in_c].mean(0) if in_c.any() else centres[centre_labels == c].mean(0)
        w = counts * (centre_labels == c)  # (M,)
        if w.sum() > 0:
            cluster_volumes[c] = np.tensordot(w / w.sum(), volumes, axes=1)
    report(progress, 1.0, "landscape clustering done")
    return LandscapeResult(
        clusters=ClusterResult(labels, None, cluster_centres, "landscape", params),
        centre_latents=centres, kmeans_labels=kmeans_labels, centre_labels=centre_labels,
        centre_counts=counts, volume_pcs=pcs.astype(np.float32),
        explained_variance_ratio=pca.explained_variance_ratio_.copy(), mask=mask,
        mask_threshold=threshold, cluster_volumes=cluster_volumes, params=params)
