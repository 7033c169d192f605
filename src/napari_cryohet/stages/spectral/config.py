"""Settings of the spectral embedding (Esteve-Yagüe et al. 2022, §2.2, §3 and App. B).

Every field is declared once, with its help text and unit (:func:`~napari_cryohet.stages.protocol.param`):
the widget form and the ``cryohet spectral`` flags are generated from these declarations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

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

    #: Fields the settings form always shows; the others sit under "Advanced settings".
    PRIMARY: ClassVar[tuple[str, ...]] = ("representation", "n_eigenvectors", "k", "n_components")

    representation: str = param(
        "lowres_volumes", choices=tuple(REPRESENTATIONS), label="particle description",
        help="How each particle is described before particles are compared: 'lowres_volumes' = its "
             "low-resolution 3-D density (simulated data only, as in Esteve-Yagüe et al. 2022), 'pca_images' = "
             "principal components of its image (real data), 'table' = numbers per particle (table columns, or "
             "another run's values such as VAE latents)")
    columns: tuple[str, ...] | None = param(
        None, label="table columns",
        help="With 'table' and no input run: the particle-table columns that describe each particle, "
             "comma-separated (e.g. rlnDefocusU,rlnAngleTilt)")
    standardize: bool = param(
        False, label="rescale columns",
        help="Rescale every column to mean 0 and standard deviation 1, so that columns in different units "
             "(Å, degrees) weigh the same")
    n_components: int | None = param(
        30, minimum=0, unit="components", label="principal components",
        help="Principal components (PCA) kept of each particle's description before particles are compared; "
             "fewer keeps the strongest variations and drops noise; 0 or empty = no PCA; 10-50 typical")
    grid_size: int = param(
        16, minimum=1, unit="voxels per edge", label="grid size",
        help="'lowres_volumes': edge of the coarse grid each density is drawn on (16 in Esteve-Yagüe et al. "
             "2022); 'pca_images': images are binned to about this many pixels per edge; 8-32 typical")
    sigma_a: float | None = param(
        None, unit="Å", label="atom width",
        help="'lowres_volumes': width (standard deviation) of the Gaussian blob drawn for each atom; empty = "
             "the simulation's width, else 3 Å (as in Esteve-Yagüe et al. 2022); 2-6 Å typical")
    noise_var: float = param(
        0.5, minimum=0.0, unit="height²", label="added noise variance",
        help="'lowres_volumes' on 3-D data: variance of the noise added to the densities (each atom a blob of "
             "height 1) so that they mimic low-resolution reconstructions; 0.5 or 1 in Esteve-Yagüe et al. 2022; "
             "the 2-D box-with-two-arms sample carries its own noise")
    graph: str = param(
        "knn", choices=("knn", "gaussian"), label="similarity graph",
        help="Which particles are linked as similar: 'knn' = each particle to its k nearest ones (sparse, scales "
             "to a million particles, Esteve-Yagüe et al. 2022 App. B) or 'gaussian' = every pair with a "
             "weight falling with distance (dense, up to about 20 000 particles, eq. 3.5)")
    weights: str = param(
        "self_tuning", choices=("self_tuning", "binary", "gaussian"), label="link weights",
        help="Strength of each link of the 'knn' graph: 'self_tuning' = falls with distance, scaled by each "
             "particle's distance to its k-th neighbour (adapts to dense and sparse regions); 'binary' = all 1; "
             "'gaussian' = falls with distance at the fixed width σ")
    k: int | None = param(
        None, minimum=1, unit="neighbours", label="neighbours k",
        help="Number of nearest particles each particle is linked to; also sets the automatic graph width; "
             "empty = automatic: the square root of the number of particles, at least 30 (30 up to 900 "
             "particles, 63 for 4000); 8-100 typical: small (8-10) follows thin directions of change, large "
             "(30-100) resists noise and bridges particles that share one shape")
    sigma: float | None = param(
        None, unit="description units", label="graph width σ",
        help="Distance over which link weights fall off, in the units of the particle description; empty = the "
             "median distance to the k-th neighbour (Esteve-Yagüe et al. 2022 used 96 for the box-with-two-arms "
             "densities)")
    n_eigenvectors: int = param(
        20, minimum=1, unit="eigenvectors", label="eigenvectors",
        help="Number of eigenvectors kept: smooth per-particle coordinates along which the shapes change, from "
             "slow to fast (the first, constant one included); the chain fit uses them; 10-30 typical (20 for the "
             "box with two arms, 10 for adenylate kinase in Esteve-Yagüe et al. 2022)")
    lowpass_a: float | None = param(
        None, unit="Å", label="low-pass blur",
        help="'lowres_volumes': blur each noisy density with a Gaussian of this width before PCA, which removes "
             "fine noise; empty = no blur; 5 Å for the box with two arms; 3-10 Å typical")
    denoise_dim: int | None = param(
        None, minimum=1, unit="directions", label="denoising dimension",
        help="Number of local directions kept when denoising each particle's neighbourhood (tangent-space "
             "denoising: each particle is moved onto the surface its neighbours lie on, removing the noise across "
             "it); empty = off; about the number of ways the shape can change, plus a few; 5-20 typical (6 for "
             "the box with two arms)")
    denoise_k: int = param(80, minimum=1, unit="neighbours", label="denoising neighbours",
                           help="Neighbours used to find each particle's local directions when denoising; "
                                "must exceed the denoising dimension; 40-150 typical")
    denoise_iter: int = param(3, minimum=1, unit="passes", label="denoising passes",
                              help="How many times the denoising is repeated; 1-5 typical")
    alpha: float = param(
        1.0, minimum=0.0, maximum=1.0, label="density correction α",
        help="Correct the graph for particles being more common in some shapes than others (diffusion maps, "
             "Coifman & Lafon 2006): 1 = how often a shape occurs is fully factored out (default: it helped on "
             "every dataset measured, docs/spectral.md); 0 = no correction, as in Esteve-Yagüe et al. 2022")
    order: str = param(
        "eigenvalue", choices=ORDERS, label="eigenvector order",
        help="Order of the eigenvectors: 'eigenvalue' = smoothest first; 'parsimonious' = new directions of "
             "change first, before eigenvectors that only repeat an earlier one at a higher frequency (Dsilva "
             "et al. 2018)")
    n_candidates: int | None = param(
        None, minimum=1, unit="eigenvectors", label="candidate eigenvectors",
        help="'parsimonious': eigenvectors computed before choosing the kept ones; empty = 3 × the eigenvectors "
             "kept")
    unique_threshold: float = param(
        0.5, minimum=0.0, maximum=1.0, label="new-direction threshold",
        help="'parsimonious': an eigenvector counts as a new direction when earlier ones predict it this badly "
             "(relative error, between 0 and 1; 0.5 in Dsilva et al. 2018; 0.3-0.7 typical)")
    harmonic_regress_on: str = param(
        "unique", choices=("unique", "all"), label="predict from",
        help="'parsimonious': predict each eigenvector from the new directions found so far ('unique', robust to "
             "noise) or from every earlier eigenvector ('all', as in Dsilva et al. 2018)")
    solver: str = param(
        "auto", choices=("auto", "dense", "sparse", "multilevel"), label="eigenvector solver",
        help="How the eigenvectors are computed: 'auto' picks 'dense' up to 1000 particles, 'sparse' up to "
             "50 000 and 'multilevel' beyond; the results agree, only the time differs")
    device: str = param(
        "auto", runtime=True, label="compute on",
        help="Where neighbour searches and the large-scale solver run: 'auto' = the graphics card (GPU) when "
             "there is one, 'cpu', or 'cuda'; does not change the result")
    seed: int = param(0, label="random seed",
                      help="Seed of the random numbers (added noise, PCA, solvers); the same seed gives the same "
                           "result")
    batch_size: int = param(
        512, minimum=1, unit="particles", label="batch size",
        help="Particles processed at once for densities and image PCA; larger is faster but uses more memory; "
             "cancelling waits for the current batch; changes the 'pca_images' components slightly; 128-4096 "
             "typical")

    exclude_outliers: bool = param(
        False, label="exclude outlier particles",
        help="Compute the embedding again without the particles that form their own group in the similarity "
             "graph or dominate an eigenvector (blank, constant or wrongly scaled images; a warning names them "
             "when this is off)")

    def science_dict(self) -> dict:
        """As :meth:`StageConfig.science_dict`, without ``exclude_outliers`` while it is off, so that
        runs saved before the option existed keep their fingerprint."""
        d = super().science_dict()
        if not d.get("exclude_outliers"):
            d.pop("exclude_outliers", None)
        return d

    def neighbours(self, n_points: int) -> int:
        """The ``k`` used on ``n_points`` particles: the setting, or ``max(30, round(√n))`` when it is
        empty, at most ``n_points − 1``.

        Why grow with the data: a simulated trajectory has a few hundred frames, so thousands
        of particles share each shape and, with ``k`` below that count, the graph splits into
        one tight group per frame whose links to the next frame are noise (the eigenvectors
        then describe single groups: the outlier warning). ``k ≈ √n`` keeps each particle's
        neighbourhood a vanishing share of the data while it grows (a usual consistency rule
        for k-nearest-neighbour graphs). Measured in ``benchmarks/chainfit_proteins.py`` on CFTR
        (1181 residues, 4000 particles from 100 frames): eigenvectors explain 93/81/76 % of the
        three motions with k = 30 and 97/94/89 % with k = 63 and α = 1 (docs/spectral.md).
        """
        k = int(self.k) if self.k is not None else max(30, int(round(float(n_points) ** 0.5)))
        return max(1, min(k, int(n_points) - 1))

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
