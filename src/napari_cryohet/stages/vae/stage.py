"""The VAE stage as the workspace runs it: ``run`` and its :class:`StageSpec` (``STAGE``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from napari_cryohet.stages._common import CancelToken, ProgressCallback
from napari_cryohet.stages.registry import StageSpec
from napari_cryohet.stages.vae.config import VAEConfig
from napari_cryohet.stages.vae.result import VAEResult
from napari_cryohet.stages.vae.train import train_vae

__all__ = ["run", "estimate_bytes", "STAGE", "PAPER"]

PAPER = ("Kimanius, Jamali, Scheres 2022: sparse Fourier backpropagation in cryo-EM reconstruction "
         "(structural-basis VAE)")


def run(dataset: Any, config: VAEConfig, *, inputs: dict[str, Any] | None = None,
        progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
        run_dir: str | Path | None = None) -> VAEResult:
    """Train the VAE on ``dataset`` (the stage takes no inputs from other runs)."""
    if inputs:
        raise ValueError(f"inputs: the VAE stage takes none, got {sorted(inputs)}")
    return train_vae(dataset, config, run_dir=run_dir, progress=progress, cancel=cancel)


def estimate_bytes(dataset: Any, config: VAEConfig) -> int:
    """Disk a run needs: model, checkpoint (with Adam's two moments), per-epoch latents."""
    d = int(dataset.box_size)
    radius = d / 2 if config.radius is None else float(config.radius)
    basis = 2 * math.pi / 3 * (radius + 2) ** 3 * 2 * (config.n_basis + 1)
    encoder = math.pi * (config.mask_radius * d / 2) ** 2 * config.enc_dim + config.enc_blocks * config.enc_dim ** 2
    weights = 4 * (basis + encoder + config.dec_blocks * config.dec_dim ** 2)
    latents = len(dataset) * (2 * config.zdim * 4 + 8)
    return int(5 * weights + (config.epochs + 1) * latents)


STAGE = StageSpec(name="vae", title="Structural-basis VAE (Kimanius, Jamali, Scheres 2022)", config=VAEConfig,
                  result=VAEResult, run=run, inputs={}, estimate_bytes=estimate_bytes, paper=PAPER)
