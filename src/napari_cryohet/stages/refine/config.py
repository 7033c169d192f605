"""Settings of the clustering/refinement loop (Silvera Coeff 2025, §4.1)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from napari_cryohet.stages.protocol import StageConfig, param
from napari_cryohet.stages.refine.clustering import CLUSTERERS, EMBEDDINGS

__all__ = ["RefineConfig"]


@dataclass
class RefineConfig(StageConfig):
    """embed → cluster → align labels → per-cluster half maps → local pose refinement, repeated."""

    STAGE = "refine"
    PRIMARY: ClassVar[tuple[str, ...]] = ("n_clusters", "n_iterations", "cluster_method", "embedding_method")

    embedding_method: str = param("pca", choices=tuple(EMBEDDINGS), label="embedding of the input vectors",
                           help="how the input run's per-particle vectors are arranged before clustering: "
                                "UMAP (McInnes et al. 2018; the choice of Silvera Coeff 2025 §2.8), PCA, or the "
                                "vectors as they are")
    n_components: int = param(3, minimum=1, maximum=50, label="embedding dimensions",
                              help="dimensions of the UMAP or PCA embedding; 2–3 in Silvera Coeff 2025 §2.8")
    cluster_method: str = param("kmeans", choices=tuple(CLUSTERERS), label="clustering method",
                                help="K-Means and GMM need the number of clusters; DBSCAN and HDBSCAN find it and "
                                     "mark outliers as noise (no cluster); landscape (with a VAE run as input) "
                                     "groups volumes decoded from the latents, as cryoDRGN's landscape analysis "
                                     "does (Zhong et al. 2021)")
    assignment: str = param("embedding", choices=("embedding", "maps"), label="particles join clusters by",
                            help="embedding: every iteration clusters the input vectors again (Silvera Coeff 2025, "
                                 "§4.1); maps: the first iteration clusters the input vectors, later iterations "
                                 "move each particle to the class map its image matches best at its refined pose, as "
                                 "RELION's 3D classification does (Scheres 2012) — sharper classes when the "
                                 "differences are discrete (missing domains, distinct states)")
    n_clusters: int = param(4, minimum=1, maximum=100, label="number of clusters",
                            help="clusters for K-Means and GMM (ignored by DBSCAN/HDBSCAN)")
    n_iterations: int = param(2, minimum=1, maximum=50, label="iterations",
                              help="rounds of cluster → reconstruct → refine poses; Silvera Coeff 2025 ran 3–5 (§5.2)")
    warm_start: bool = param(True, label="start from the previous clusters",
                             help="K-Means/GMM start from the previous iteration's clusters, so ids stay put "
                                  "(in Silvera Coeff 2025, Fig. 5.19, K-Means merged and split clusters between "
                                  "iterations)")
    resolution_schedule_a: tuple[float, ...] = param((8.0, 6.0, 4.0), unit="Å", label="refinement resolution",
                                                     help="highest resolution used to refine poses in each "
                                                          "iteration (the last value repeats): frequency marching")
    sigma_angle_deg: float = param(2.0, minimum=0.0, maximum=30.0, unit="°", label="angle prior σ",
                                   help="width of the Gaussian prior on the change of orientation from the input poses "
                                        "(RELION --sigma_ang); each iteration searches ±3σ around the current "
                                        "orientation; 0 keeps the angles")
    sigma_shift_a: float = param(1.5, minimum=0.0, maximum=50.0, unit="Å", label="shift prior σ",
                                 help="width of the Gaussian prior on the change of shift from the input poses; each "
                                      "iteration searches ±3σ around the current shift; 0 keeps the shifts")
    refine_poses: bool = param(True, label="refine poses",
                               help="local pose refinement per cluster against that cluster's half map "
                                    "(Silvera Coeff 2025 §4.1.5: local search only)")
    grid_steps: int = param(5, minimum=1, maximum=9, label="local search grid",
                            help="orientations per axis of the first local search grid across ±3σ of the current "
                                 "pose (1: no grid, start the refinement steps at the current pose)")
    refine_steps: int = param(6, minimum=0, maximum=50, label="refinement steps",
                              help="steps of a least-squares (Gauss–Newton) search on each particle's orientation "
                                   "and shift after the grid (0: grid only)")
    soft_weights: bool = param(True, label="weight particles by membership",
                               help="with a Gaussian mixture, each particle counts in its cluster's map by its "
                                    "membership probability (0–1) instead of fully")
    vae_epochs: int = param(0, minimum=0, maximum=50, label="VAE epochs per iteration",
                            help="with a VAE run as input: train it this many more epochs on the refined poses "
                                 "after each iteration and cluster its new latents (Silvera Coeff 2025, §4.1.6); "
                                 "0: keep the input latents")
    min_cluster_size: int = param(20, minimum=2, label="smallest cluster reconstructed",
                                  help="clusters with fewer particles get no map and their particles keep their pose")
    seed: int = param(0, help="random seed of the embedding, the clustering and the half sets")
    device: str | None = param("auto", runtime=True, help="where to compute: cpu, cuda or auto")

    def validate(self) -> None:
        if not self.resolution_schedule_a or any(float(r) <= 0 for r in self.resolution_schedule_a):
            self.fail("resolution_schedule_a", "one or more positive resolutions in Å", self.resolution_schedule_a)
