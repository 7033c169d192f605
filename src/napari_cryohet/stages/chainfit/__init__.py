"""Chain-fit stage: per-particle Cα backbones from spectral expansions of their angles.

After Esteve-Yagüe, Diepeveen, Öktem & Schönlieb 2022, *Spectral decomposition of atomic
structures in heterogeneous cryo-EM* (seed 000_8d73a95ce4c6e7ab.txt). A known conformation
(the *reference*, Assumption 2) gives the torsion and bond angles ``(Θ₀, Ψ₀)`` of its
discrete Frenet frames (:mod:`napari_cryohet.core.frenet`). Every particle ``i`` gets

    Θ_i = Θ₀ + A Φ_i,   Ψ_i = Ψ₀ + B Φ_i                           (eq. 2.6)

with ``Φ_i`` its row of the ``K`` Laplacian eigenvectors of the spectral stage (eq. 2.5,
scaled to unit root-mean-square per column, ``√N φ``, so that ``A`` and ``B`` are in
radians), its chain ``Z(Θ_i, Ψ_i, ẑ_i, F̂_i)`` (eq. 2.1 / 2.8), the analytic projection of
Gaussian atoms in the particle's known pose, its CTF and shift (eq. 2.9–2.10, Assumption 4),
and the mean-square misfit to its image (eq. 2.11), minimised over ``A, B`` by minibatch
Adam or SGD from ``A = B = 0`` (Remark 2.5: every particle starts as the reference).

Choices the paper leaves open, and what this stage does
-------------------------------------------------------
- **Reference atom** ``j0`` (0-based): default the atom nearest the reference's centroid
  (the paper's code; §3.2.1 calls it "the middle point"), clipped to ``[0, m-2]``.
- **Anchor** ``(ẑ_i, F̂_i)``: ``"reference"`` uses the reference's position and frame at
  ``j0`` for every particle (the particle's pose then carries the rigid motion — right
  when ``j0`` lies in a rigid core); ``"truth"`` uses each particle's own ground-truth
  position and frame at ``j0`` — Assumption 4 read literally, as the paper's experiments
  do (synthetic data only).
- **Bond length** ``δ``: the mean reference Cα–Cα distance (§3.2.1), or the reference's
  per-bond distances (``bond_length_mode="reference"``), or a given value.
- **Masks** (Remark 2.3, §3.1.1): ``fixed`` angles keep ``Θ₀/Ψ₀`` exactly, ``rigid``
  angles keep only the constant term ``k = 0``, the rest use all ``K``.
- **Loss**: mean over images *and pixels* of the squared residual (eq. 2.11 divided by
  the pixel count, so learning rates do not depend on the box size).
- **Metrics** per epoch on the held-out test particles, scored against their *clean*
  images when the dataset has them (§3.1): test loss, average error (3.7) and
  mean-over-images max error (3.6) against ground-truth coordinates (model frame).

Modules, by concept: :mod:`.reference` (the known conformation, residue ranges),
:mod:`.config` (:class:`ChainFitConfig`), :mod:`.model` (eq. 2.6, masks, chains, errors),
:mod:`.targets` (the Fourier-space misfit, predicted images), :mod:`.train` (the loop and
its checkpoint), :mod:`.result` (:class:`ChainFitResult`), :mod:`.fit` (:func:`run_chainfit`,
particle images), :mod:`.planar` (:func:`run_chainfit_2d`, the box with two arms of §3.1)
and :mod:`.stage` (the workspace stage ``"chainfit"``).
"""

from __future__ import annotations

from napari_cryohet.stages.chainfit.config import ChainFitConfig
from napari_cryohet.stages.chainfit.fit import run_chainfit
from napari_cryohet.stages.chainfit.model import chain_errors
from napari_cryohet.stages.chainfit.planar import run_chainfit_2d
from napari_cryohet.stages.chainfit.reference import (
    ChainReference,
    angles_for_residues,
    default_reference_atom,
    parse_residue_ranges,
    reference_from_dataset,
    reference_from_pdb,
    resolve_reference,
)
from napari_cryohet.stages.chainfit.result import ChainFitResult
from napari_cryohet.stages.chainfit.targets import predict_images

__all__ = [
    "ChainReference",
    "reference_from_pdb",
    "reference_from_dataset",
    "resolve_reference",
    "default_reference_atom",
    "angles_for_residues",
    "parse_residue_ranges",
    "ChainFitConfig",
    "ChainFitResult",
    "run_chainfit",
    "run_chainfit_2d",
    "chain_errors",
    "predict_images",
]
