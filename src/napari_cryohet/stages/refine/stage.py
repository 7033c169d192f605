"""The refine stage for the workspace: ``run`` and :data:`STAGE`.

``Workspace.run("refine", config, inputs={"embedding": "vae/0001"})`` clusters the
particles on another run's per-particle vectors (VAE latents, spectral eigenvectors) and
refines their poses per cluster (Silvera Coeff 2025, §4.1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari_cryohet.stages._common import CancelToken, ProgressCallback
from napari_cryohet.stages.refine.config import RefineConfig
from napari_cryohet.stages.refine.result import RefineResult
from napari_cryohet.stages.refine.run import run_refine
from napari_cryohet.stages.registry import InputSpec, StageSpec

__all__ = ["run", "STAGE"]


def run(dataset, config: RefineConfig, *, inputs: dict[str, Any] | None = None,
        progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
        run_dir: str | Path | None = None) -> RefineResult:
    """:func:`run_refine` with the workspace's resolved input (``{"embedding": Embedding}``)."""
    inputs = inputs or {}
    if "embedding" not in inputs:
        raise ValueError("inputs: the refine stage needs 'embedding' (a VAE or spectral run)")
    return run_refine(dataset, config, embedding=inputs["embedding"], progress=progress, cancel=cancel,
                      run_dir=run_dir)


def _estimate_bytes(dataset, config: RefineConfig) -> int:
    n, d = len(dataset), int(getattr(dataset, "box_size", 64))
    return int(n * (8 * (9 + 2 + config.n_iterations) + 8) + 4 * 64 * d**3 + 2**20)


STAGE = StageSpec(
    name="refine",
    title="Clustering and pose refinement (Silvera Coeff 2025)",
    config=RefineConfig,
    result=RefineResult,
    run=run,
    inputs={"embedding": InputSpec(kind="embedding", stages=("vae", "spectral"), required=True,
                                   help="the per-particle vectors to cluster: a VAE run's latents "
                                        "(Kimanius, Jamali & Scheres 2022) or a spectral run's eigenvectors")},
    estimate_bytes=_estimate_bytes,
    paper="Silvera Coeff 2025, §4.1",
)
