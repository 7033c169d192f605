"""Refine stage: the clustering/refinement loop of issue 13 (Silvera Coeff 2025, §4.1).

embed → cluster → align labels → per-cluster gold-standard reconstruction → local pose
refinement → next iteration. The package holds

- :mod:`.config` (:class:`RefineConfig`), :mod:`.run` (:func:`run_refine`, the loop with a
  checkpoint per iteration), :mod:`.result` (:class:`RefineResult`), :mod:`.stage`
  (``STAGE`` for the workspace), :mod:`.export` (each cluster as ``.star``);
- :mod:`.clustering` — :func:`embed_vectors` (UMAP, PCA, none), the clustering registry
  :data:`CLUSTERERS` (K-Means, GMM, DBSCAN, HDBSCAN), :func:`cluster_vectors` with warm
  start, :class:`ClusterResult`, :func:`align_embedding` (display only).

Stable cluster ids across iterations and the "label stability" (ARI) are in
:mod:`napari_cryohet.core.label_alignment`.
"""

from napari_cryohet.stages.refine.clustering import (
    CLUSTERERS,
    EMBEDDINGS,
    ClustererParam,
    ClustererSpec,
    ClusterResult,
    align_embedding,
    cluster_vectors,
    embed_vectors,
)

__all__ = [
    "CLUSTERERS",
    "EMBEDDINGS",
    "ClustererParam",
    "ClustererSpec",
    "ClusterResult",
    "align_embedding",
    "cluster_vectors",
    "embed_vectors",
]
