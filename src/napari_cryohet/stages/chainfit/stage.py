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
from napari_cryohet.stages.registry import InputSpec, StageSpec

__all__ = ["run", "STAGE", "default_spectral_config"]


def run(dataset: Any, config: ChainFitConfig, *, inputs: dict[str, Any] | None = None,
        progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
        run_dir: str | Path | None = None) -> ChainFitResult:
    """Fit the chains of ``dataset`` on the eigenvectors ``inputs["eigenvectors"]``."""
    inputs = inputs or {}
    if "eigenvectors" not in inputs and config.basis != "normal_modes":
        raise ValueError("inputs: the chain fit needs 'eigenvectors' (a spectral run), or basis='normal_modes'")
    if getattr(dataset, "low_dim", None) is not None:  # the planar box with two arms (§3.1)
        from napari_cryohet.stages.chainfit.planar import run_chainfit_2d

        if config.basis == "normal_modes":
            raise ValueError("ChainFitConfig.basis: the planar toy has no normal modes; use 'eigenvectors'")
        return run_chainfit_2d(dataset, config, eigenvectors=inputs["eigenvectors"], run_dir=run_dir,
                               progress=progress, cancel=cancel, on_epoch=getattr(progress, "on_epoch", None))
    return run_chainfit(dataset, config, eigenvectors=inputs.get("eigenvectors"), run_dir=run_dir,
                        progress=progress, cancel=cancel)


def default_spectral_config(n_eigenvectors: int, dataset: Any = None) -> Any:
    """Spectral settings for a chain fit that names no spectral run (what the CLI and the
    widget run first): the defaults with at least ``n_eigenvectors`` eigenvectors, on the
    low-resolution densities for simulated data (ground-truth atoms known) and on principal
    components of the images for real data."""
    from napari_cryohet.stages.registry import stage_spec

    config_cls = stage_spec("spectral").config
    truth = getattr(dataset, "ground_truth", None) or {}
    simulated = dataset is None or "coords_a" in truth or getattr(dataset, "low_dim", None) is not None
    representation = "lowres_volumes" if simulated else "pca_images"
    return config_cls(n_eigenvectors=max(int(config_cls().n_eigenvectors), int(n_eigenvectors)),
                      representation=representation)


def _estimate_bytes(dataset: Any, config: ChainFitConfig) -> int:
    """Result + checkpoint, generously: per particle its eigenvector row (float32) and anchor
    position and frame (float64); A, B and the optimiser's two moments for up to 2000 angles,
    in the result and the checkpoint; 1 MB of metadata."""
    k = int(config.n_eigenvectors)
    per_particle = 4 * k + 8 * 12
    coefficients = 2 * 4 * (2 * 2000 * k) * 2
    return int(len(dataset) * per_particle + coefficients + 2**20)


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
