"""The spectral stage for the workspace: ``run`` and :data:`STAGE`.

``Workspace.run("spectral", config, inputs={"features": "vae/0001"})`` embeds the
workspace's particles; the optional ``features`` input hands another run's per-particle
vectors (VAE latents, eigenvectors, chain-fit coefficients) to the ``"table"``
representation, aligned by particle index.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari_cryohet.stages._common import CancelToken, ProgressCallback
from napari_cryohet.stages.registry import InputSpec, StageSpec
from napari_cryohet.stages.spectral.config import SpectralConfig
from napari_cryohet.stages.spectral.result import SpectralResult
from napari_cryohet.stages.spectral.run import run_spectral

__all__ = ["run", "STAGE"]


def run(dataset, config: SpectralConfig, *, inputs: dict[str, Any] | None = None,
        progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
        run_dir: str | Path | None = None) -> SpectralResult:
    """:func:`run_spectral` with the workspace's resolved inputs (``{"features": Embedding}``)."""
    features = (inputs or {}).get("features")
    return run_spectral(dataset, config, features=features, progress=progress, cancel=cancel, run_dir=run_dir)


def _estimate_bytes(dataset, config: SpectralConfig) -> int:
    n = len(dataset)
    return 8 * n * (int(config.n_eigenvectors) + 1) + 2**20


STAGE = StageSpec(
    name="spectral",
    title="Spectral embedding (Esteve-Yagüe et al. 2022)",
    config=SpectralConfig,
    result=SpectralResult,
    run=run,
    inputs={"features": InputSpec(
        kind="embedding", stages=("vae", "spectral", "chainfit"), required=False,
        help="Per-particle numbers to embed with the 'table' representation, e.g. a VAE run's latent "
             "coordinates (Kimanius, Jamali & Scheres 2022)")},
    estimate_bytes=_estimate_bytes,
    paper="Esteve-Yagüe, Diepeveen, Öktem & Schönlieb 2022, §2.2 and Appendix B",
)
