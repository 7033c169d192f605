"""Spectral-embedding stage: Laplacian eigenvectors of the conformational manifold.

Esteve-Yagüe, Diepeveen, Öktem & Schönlieb 2022 (seed 000), §2.2 (eq. 2.5-2.6), §3.1-3.2
and Appendix B: a low-dimensional representation ``beta_i`` of each particle's
conformation (Assumption 3) → a similarity graph → the symmetric normalised Laplacian
``L`` → the eigenvectors of its ``K`` smallest eigenvalues, ``Phi (N, K)``, which the
chain-fit stage expands the torsion and bond angles on (eq. 2.6).

Modules: :mod:`.config` (:class:`SpectralConfig`, :data:`BOX_ARMS_ACCEPTANCE`),
:mod:`.representations` (the registry :data:`REPRESENTATIONS`: ``"table"`` — table
columns or another run's :class:`~napari_cryohet.stages.protocol.Embedding`, e.g. VAE
latents; ``"lowres_volumes"``; ``"pca_images"``), :mod:`.run` (:func:`run_spectral`),
:mod:`.result` (:class:`SpectralResult`, ``spectral.npz``), :mod:`.regression`
(:func:`regression_r2`, the box-arms acceptance check) and :mod:`.stage` (the workspace's
``STAGE``, with the optional input ``features``).

Graphs: ``"gaussian"`` — dense kernel eq. 3.5 (``sigma``; default: the median over
points of the distance to the ``k``-th neighbour); ``"knn"`` — symmetric kNN, ``weights``
``"binary"`` / ``"gaussian"`` / ``"self_tuning"`` (Appendix B; sparse, scales to 10^6).
Additions against weak, short conformational directions under noise (docs/spectral.md):
``lowpass_a`` (:func:`lowpass_densities`), ``denoise_dim``
(:func:`~napari_cryohet.core.tangent_denoise.tangent_denoise`), ``alpha``
(:func:`~napari_cryohet.core.laplacian.density_normalize`) and
``order="parsimonious"`` (Dsilva et al. 2018,
:func:`~napari_cryohet.core.harmonics.harmonic_residuals`). The box-arms acceptance
setting (:data:`BOX_ARMS_ACCEPTANCE`) combines the first three.

Results are handed to other stages through the workspace (``ws.run("chainfit", ...,
inputs={"eigenvectors": "spectral/0002"})``) or as return values, never through
``dataset.meta``.
"""

from napari_cryohet.stages.spectral.config import BOX_ARMS_ACCEPTANCE, ORDERS, SpectralConfig
from napari_cryohet.stages.spectral.regression import regression_r2
from napari_cryohet.stages.spectral.representations import (
    REPRESENTATIONS,
    build_representation,
    lowpass_densities,
)
from napari_cryohet.stages.spectral.result import RESULT_FILE, SpectralResult
from napari_cryohet.stages.spectral.run import run_spectral

__all__ = [
    "SpectralConfig",
    "SpectralResult",
    "REPRESENTATIONS",
    "ORDERS",
    "run_spectral",
    "build_representation",
    "regression_r2",
    "lowpass_densities",
    "RESULT_FILE",
    "BOX_ARMS_ACCEPTANCE",
]
