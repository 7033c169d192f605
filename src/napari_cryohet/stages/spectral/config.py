"""Settings of the spectral embedding (Esteve-Yagüe et al. 2022, §2.2, §3 and App. B).

Every field is declared once, with its help text and unit (:func:`~napari_cryohet.stages.protocol.param`):
the widget form and the ``cryohet spectral`` flags are generated from these declarations.
"""

from __future__ import annotations

from dataclasses import dataclass

from napari_cryohet.stages.protocol import StageConfig, param
from napari_cryohet.stages.spectral.representations import REPRESENTATIONS

__all__ = ["SpectralConfig", "BOX_ARMS_ACCEPTANCE", "ORDERS"]

ORDERS = ("eigenvalue", "parsimonious")

#: The setting that passes issue 4's box-arms check (R² >= 0.9 for all three parameters
#: from 20 eigenvectors; docs/spectral.md): ``SpectralConfig(**BOX_ARMS_ACCEPTANCE)``.
BOX_ARMS_ACCEPTANCE = dict(representation="lowres_volumes", n_components=30, lowpass_a=5.0, denoise_dim=6,
                           graph="knn", weights="self_tuning", k=8, alpha=1.0, n_eigenvectors=20)


@dataclass
class SpectralConfig(StageConfig):
    """Settings of one spectral embedding (every field is recorded with the result).

    The representations (``"table"``, ``"lowres_volumes"``, ``"pca_images"``) are described
    in :mod:`napari_cryohet.stages.spectral.representations`; the additions against weak
    conformational directions under noise (``lowpass_a``, ``denoise_dim``, ``alpha``,
    ``order="parsimonious"``) in docs/spectral.md. ``device`` does not change the science
    (it is left out of the fingerprint); ``batch_size`` does for ``"pca_images"`` (the
    incremental PCA depends on its batches), so it is kept in.
    """

    STAGE = "spectral"

    representation: str = param(
        "lowres_volumes", choices=tuple(REPRESENTATIONS),
        help="What describes each particle's shape: 'lowres_volumes' (simulated data: its low-resolution "
             "density, Esteve-Yagüe et al. 2022), 'pca_images' (real data: principal components of its image) "
             "or 'table' (numbers per particle: table columns or another run's vectors, e.g. VAE latents)")
    columns: tuple[str, ...] | None = param(
        None, help="'table' without an input run: the particle-table columns to use (comma-separated)")
    standardize: bool = param(
        False, help="Rescale every feature to mean 0 and standard deviation 1 (for columns in different units)")
    n_components: int | None = param(
        30, minimum=0, unit="dimensions",
        help="Principal components kept before the graph (empty or 0: no PCA)")
    grid_size: int = param(
        16, minimum=1, unit="voxels per edge",
        help="'lowres_volumes': grid of each density (16 in Esteve-Yagüe et al. 2022); 'pca_images': binned "
             "image size in pixels")
    sigma_a: float | None = param(
        None, unit="Å",
        help="'lowres_volumes': width of each atom's Gaussian (empty: the simulation's, else 3 Å)")
    noise_var: float = param(
        0.5, minimum=0.0, unit="(unit height)²",
        help="'lowres_volumes' on 3-D data: variance of the noise added to the unit-height densities (0.5 or 1 in "
             "Esteve-Yagüe et al. 2022); the box-arms toy carries its own noise")
    graph: str = param(
        "knn", choices=("knn", "gaussian"),
        help="Similarity graph: 'knn' (each particle linked to its k nearest, sparse, scales to a million) or "
             "'gaussian' (every pair, dense, eq. 3.5)")
    weights: str = param(
        "self_tuning", choices=("self_tuning", "binary", "gaussian"),
        help="Weight of a k-nearest-neighbour link: 'self_tuning' (width from each particle's k-th neighbour), "
             "'binary' or 'gaussian' (fixed width sigma)")
    k: int = param(30, minimum=1, unit="neighbours",
                   help="Neighbours per particle in the graph (also sets the automatic Gaussian width)")
    sigma: float | None = param(
        None, unit="representation units",
        help="Gaussian width of the graph weights (empty: median distance to the k-th neighbour)")
    n_eigenvectors: int = param(
        20, minimum=1, unit="eigenvectors",
        help="Eigenvectors kept, the constant one included (20 for the box-arms toy, 10 for AdK in "
             "Esteve-Yagüe et al. 2022)")
    lowpass_a: float | None = param(
        None, unit="Å",
        help="'lowres_volumes': blur each noisy density with a Gaussian of this width before PCA (empty: none; "
             "5 Å for the box-arms toy)")
    denoise_dim: int | None = param(
        None, minimum=1, unit="dimensions",
        help="Project each particle onto the local shape manifold of this dimension before the graph, removing "
             "noise across it (empty: off; 6 for the box-arms toy)")
    denoise_k: int = param(80, minimum=1, unit="neighbours",
                           help="Neighbours of each local principal-component fit of the projection")
    denoise_iter: int = param(3, minimum=1, unit="passes", help="Passes of the projection onto the manifold")
    alpha: float = param(
        0.0, minimum=0.0, maximum=1.0,
        help="Correct the graph for uneven sampling (Coifman & Lafon 2006): 0 = as in Esteve-Yagüe et al. 2022, "
             "1 = sampling density fully factored out")
    order: str = param(
        "eigenvalue", choices=ORDERS,
        help="Column order: 'eigenvalue' (smallest first) or 'parsimonious' (new directions before harmonics of "
             "earlier ones, Dsilva et al. 2018)")
    n_candidates: int | None = param(
        None, minimum=1, unit="eigenvectors",
        help="'parsimonious': eigenvectors computed before choosing (empty: 3 × eigenvectors kept)")
    unique_threshold: float = param(
        0.5, minimum=0.0, maximum=1.0,
        help="'parsimonious': relative residual above which an eigenvector counts as a new direction (0.5 in "
             "Dsilva et al. 2018)")
    harmonic_regress_on: str = param(
        "unique", choices=("unique", "all"),
        help="'parsimonious': predict each eigenvector from the new directions found so far ('unique', robust to "
             "noise) or from every earlier one ('all', Dsilva et al. 2018)")
    solver: str = param(
        "auto", choices=("auto", "dense", "sparse", "multilevel"),
        help="Eigenvalue solver: 'auto' picks dense up to 1000 particles, sparse up to 50 000, multilevel beyond")
    device: str = param(
        "auto", runtime=True,
        help="Where neighbour searches and the large-scale solver run: 'auto' (graphics card if present), "
             "'cpu', 'cuda'")
    seed: int = param(0, help="Random seed of the noise, PCA and solvers")
    batch_size: int = param(
        512, minimum=1, unit="particles",
        help="Particles per batch of densities and image PCA (one cancel check per batch; changes the "
             "'pca_images' components slightly)")

    def validate(self) -> None:
        if self.graph == "knn" and self.weights == "gaussian" and self.sigma is None:
            self.fail("sigma", "a width with graph='knn' and weights='gaussian'", self.sigma)
        for name in ("sigma", "lowpass_a", "sigma_a"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                self.fail(name, "a value > 0 or empty", value)
        if self.n_candidates is not None and int(self.n_candidates) < int(self.n_eigenvectors):
            self.fail("n_candidates", f"a value >= n_eigenvectors ({self.n_eigenvectors}) or empty",
                      self.n_candidates)
        if not 0 < self.unique_threshold < 1:
            self.fail("unique_threshold", "a value strictly between 0 and 1", self.unique_threshold)
