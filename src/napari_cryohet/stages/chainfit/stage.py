"""The chain fit as a workspace stage: ``ws.run("chainfit", config, inputs={"eigenvectors": "spectral/0002"})``.

:func:`run` takes the eigenvectors from the spectral run named in ``inputs`` (an
:class:`~napari_cryohet.stages.protocol.Embedding`, matched to the particles by index) and
the reference from ``config.reference`` or the dataset; the workspace saves the result in
the run directory (docs/design.md, "The workspace").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari_cryohet.stages._common import CancelToken, ProgressCallback
from napari_cryohet.stages.chainfit.config import ChainFitConfig
from napari_cryohet.stages.chainfit.fit import run_chainfit
from napari_cryohet.stages.chainfit.result import ChainFitResult
from napari_cryohet.stages.workspace import InputSpec, StageSpec

__all__ = ["run", "STAGE"]


def run(dataset: Any, config: ChainFitConfig, *, inputs: dict[str, Any] | None = None,
        progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
        run_dir: str | Path | None = None) -> ChainFitResult:
    """Fit the chains of ``dataset`` on the eigenvectors ``inputs["eigenvectors"]``."""
    inputs = inputs or {}
    if "eigenvectors" not in inputs:
        raise ValueError("inputs: the chain fit needs 'eigenvectors' (a spectral run)")
    return run_chainfit(dataset, config, eigenvectors=inputs["eigenvectors"], run_dir=run_dir,
                        progress=progress, cancel=cancel)


def _estimate_bytes(dataset: Any, config: ChainFitConfig) -> int:
    """Result + checkpoint: per-particle eigenvector rows and anchors, coefficients (generous)."""
    n = len(dataset)
    return int(n * (4 * config.n_eigenvectors + 8 * 12) + 4 * 2000 * config.n_eigenvectors * 8 + (1 << 20))


STAGE = StageSpec(
    name="chainfit",
    title="chain fit (Esteve-Yagüe et al. 2022)",
    config=ChainFitConfig,
    result=ChainFitResult,
    run=run,
    inputs={"eigenvectors": InputSpec(kind="embedding", stages=("spectral",),
                                      help="Laplacian eigenvectors of the particles (a spectral embedding run)")},
    estimate_bytes=_estimate_bytes,
    paper="Esteve-Yagüe, Diepeveen, Öktem & Schönlieb 2022, Spectral decomposition of atomic structures "
          "in heterogeneous cryo-EM",
)
