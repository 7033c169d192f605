"""The spectral stage's result: Laplacian eigenpairs keyed on particle indices.

Stored as ``spectral.npz`` in the run directory (the file name of earlier versions, so
results written before the workspace existed still load, from their directory or from the
``.npz`` itself). The eigenvectors go to other stages (the chain fit, eq. 2.6 of
Esteve-Yagüe et al. 2022) as an :class:`~napari_cryohet.stages.protocol.Embedding` named
``"eigenvectors"``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from napari_cryohet.io.atomic import save_npz_atomic
from napari_cryohet.io.json_files import jsonable
from napari_cryohet.stages.protocol import Embedding, StageResult
from napari_cryohet.stages.spectral.config import SpectralConfig

__all__ = ["SpectralResult", "RESULT_FILE"]

RESULT_FILE = "spectral.npz"


class SpectralResult(StageResult):
    """Eigenpairs of one embedding, keyed on particle indices.

    Attributes
    ----------
    eigenvalues
        ``(K,)`` eigenvalues of the normalised Laplacian, aligned with the columns
        (ascending for ``order="eigenvalue"``).
    eigenvectors
        ``(N, K)`` float64 eigenvectors (``Phi`` of eq. 2.5), column 0 trivial; for
        ``order="parsimonious"`` the unique directions follow it, then the harmonics.
    indices
        ``(N,)`` root-dataset index of each row (also :attr:`particle_indices`).
    trivial
        ``(K,)`` bool, True for the trivial eigenvector.
    config
        The :class:`SpectralConfig` that produced it.
    provenance
        What else was decided at run time: representation shape, PCA variance, sigma used,
        solver, graph size, timings, unique eigenvectors, the input run.
    eigenvalue_rank
        ``(K,)`` int, each column's position in eigenvalue order (``0..K-1`` for
        ``order="eigenvalue"``; ranks among the ``n_candidates`` for ``"parsimonious"``).
    harmonic_residual
        ``(K,)`` float, each column's local-linear-regression residual ``r_k`` (NaN where
        not computed: eigenvalue order, the trivial column, results saved before it existed).
    """

    STAGE = "spectral"
    FORMAT_VERSION = 1

    def __init__(self, eigenvalues: np.ndarray, eigenvectors: np.ndarray, indices: np.ndarray,
                 trivial: np.ndarray, config: SpectralConfig, provenance: dict[str, Any] | None = None,
                 eigenvalue_rank: np.ndarray | None = None, harmonic_residual: np.ndarray | None = None,
                 run_id: str | None = None) -> None:
        self.eigenvalues = np.asarray(eigenvalues)
        self.eigenvectors = np.asarray(eigenvectors)
        self.indices = np.asarray(indices, dtype=np.int64)
        self.trivial = np.asarray(trivial, dtype=bool)
        self.config = config
        self.provenance = dict(provenance or {})
        k = len(self.eigenvalues)
        self.eigenvalue_rank = np.asarray(np.arange(k) if eigenvalue_rank is None else eigenvalue_rank,
                                          dtype=np.int64)
        self.harmonic_residual = np.asarray(np.full(k, np.nan) if harmonic_residual is None else harmonic_residual,
                                            dtype=np.float64)
        self.run_id = run_id
        if self.eigenvectors.shape != (len(self.indices), k):
            raise ValueError(f"SpectralResult: eigenvectors {self.eigenvectors.shape} do not match "
                             f"{len(self.indices)} particles x {k} eigenvalues")

    def __repr__(self) -> str:
        return (f"SpectralResult(run_id={self.run_id!r}, particles={len(self.indices)}, "
                f"eigenvectors={self.eigenvectors.shape[1]}, order={self.config.order!r})")

    @property
    def particle_indices(self) -> np.ndarray:
        return self.indices

    def embedding(self) -> Embedding:
        """The eigenvectors as per-particle vectors (``name="eigenvectors"``) for other stages.

        ``source`` is this result, so a stage that clusters can ask for
        :meth:`clustering_embedding` instead."""
        return Embedding(self.eigenvectors, self.indices, run_id=self.run_id, name="eigenvectors", source=self)

    def clustering_embedding(self) -> Embedding:
        """The commute-time coordinates of the particles (``name="commute-time coordinates"``).

        The eigenvectors as they are (eq. 2.5 of Esteve-Yagüe et al. 2022, each of unit norm)
        make every direction count alike, so clustering them — or PCA of them — splits along
        whichever direction happens to win, often a fast, noisy one: on 600 simulated AdK
        particles k-means into two clusters matched the open and closed halves with an
        adjusted Rand index anywhere from 0.0 to 0.9 depending on the seed. Here each
        non-trivial eigenvector ``v_k`` of the symmetric normalised Laplacian becomes the
        random-walk eigenvector ``ψ_k = D^-1/2 v_k`` (``D^1/2`` read off the trivial column,
        which is ``D^1/2 1`` up to scale) divided by ``√λ_k``: Euclidean distances between
        these rows are then the graph's commute-time distances restricted to the ``K``
        slowest eigenvectors (von Luxburg 2007, "A tutorial on spectral clustering", §6;
        Qiu & Hancock 2007), so the slow, large-scale directions — the motion — count most.
        The same 600 particles then give 0.53-0.80. Without a trivial column the degree
        correction is skipped; eigenvalues are floored at 1e-12 (a graph in pieces puts
        its pieces far apart, as clustering should).
        """
        vectors = np.asarray(self.eigenvectors, dtype=np.float64)
        keep = ~self.trivial
        values = vectors[:, keep]
        if self.trivial.any():
            root_degree = vectors[:, np.flatnonzero(self.trivial)[0]]
            if np.all(np.abs(root_degree) > 1e-12):
                values = values / root_degree[:, None]
        values = values / np.sqrt(np.maximum(np.asarray(self.eigenvalues, dtype=np.float64)[keep], 1e-12))
        return Embedding(values, self.indices, run_id=self.run_id, name="commute-time coordinates")

    # ------------------------------------------------------------------ files

    def _save(self, run_dir: Path) -> None:
        save_npz_atomic(
            run_dir / RESULT_FILE,
            eigenvalues=self.eigenvalues,
            eigenvectors=self.eigenvectors,
            indices=self.indices,
            trivial=self.trivial,
            eigenvalue_rank=self.eigenvalue_rank,
            harmonic_residual=self.harmonic_residual,
            config_json=np.array(json.dumps(self.config.to_dict())),
            provenance_json=np.array(json.dumps(jsonable(self.provenance))),
        )

    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> SpectralResult:
        """Read a result from its run directory (or, for older results, the ``.npz`` itself)."""
        path = Path(path)
        if path.is_file():
            return super().load(path.parent, file=path.name, **kwargs)
        return super().load(path, **kwargs)

    @classmethod
    def _load(cls, run_dir: Path, file: str = RESULT_FILE) -> SpectralResult:
        with np.load(run_dir / file, allow_pickle=False) as data:
            return cls(
                eigenvalues=data["eigenvalues"],
                eigenvectors=data["eigenvectors"],
                indices=data["indices"],
                trivial=data["trivial"],
                config=SpectralConfig.from_dict(json.loads(str(data["config_json"])), source=run_dir / file),
                provenance=json.loads(str(data["provenance_json"])),
                eigenvalue_rank=data["eigenvalue_rank"] if "eigenvalue_rank" in data.files else None,
                harmonic_residual=data["harmonic_residual"] if "harmonic_residual" in data.files else None,
            )
