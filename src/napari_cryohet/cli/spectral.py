"""Spectral embedding: smooth coordinates of each particle's shape (Esteve-Yagüe et al. 2022): ``cryohet spectral``.

As in Esteve-Yagüe et al. 2022 (§2.2, Appendix B): each particle is described by a few
numbers, particles with similar descriptions are linked in a graph, and the eigenvectors
of the graph's normalised Laplacian give every particle smooth coordinates along which
the shapes change. The result is kept as a run of the workspace (``<workspace>/spectral/NNNN/``: spectral.npz with the
eigenvalues, eigenvectors (N, K) and particle indices, manifest.json with the settings).
Prints the run id, which the next step takes (``cryohet chainfit --eigenvectors
spectral/0001``). The same settings on the same particles return the finished run; other
settings make a new run. Examples:

  cryohet spectral --workspace ws --sample box_arms_2d --n-particles 4000
  cryohet spectral --workspace ws --lowpass-a 5 --denoise-dim 6 --k 8 --alpha 1
      # the box-arms acceptance setting (docs/spectral.md)
  cryohet spectral --workspace ws --lowpass-a 10 --order parsimonious
  cryohet spectral --workspace ws2 --star particles.star --representation pca_images
  cryohet spectral --workspace ws2 --features vae/0001    # embed a VAE run's latents

Without --representation: 'table' with --features or --columns, 'lowres_volumes' for
simulated data (ground-truth densities), 'pca_images' otherwise.
"""

from __future__ import annotations

import argparse

__all__ = ["add_args", "main"]


def add_args(parser: argparse.ArgumentParser) -> None:
    from napari_cryohet.cli._config_args import add_config_args, add_workspace_args
    from napari_cryohet.stages.spectral import SpectralConfig

    add_workspace_args(parser, inputs={"features": "run id whose per-particle vectors to embed, e.g. vae/0001 "
                                                   "(VAE latents; uses the 'table' representation)"})
    add_config_args(parser, SpectralConfig, title="spectral embedding settings (Esteve-Yagüe et al. 2022)",
                    default_text={"representation": "table with --features or --columns, lowres_volumes for "
                                                    "simulated data, else pca_images"})


def _default_representation(args: argparse.Namespace, inputs: dict[str, str], dataset) -> str:
    if inputs.get("features") or getattr(args, "cfg_columns", None):
        return "table"
    truth = getattr(dataset, "ground_truth", None) or {}
    if getattr(dataset, "low_dim", None) is not None or "coords_a" in truth:
        return "lowres_volumes"
    return "pca_images"


def main(args: argparse.Namespace) -> int:
    from napari_cryohet.cli._config_args import (
        config_from_args,
        input_ids,
        open_workspace,
        print_progress,
    )
    from napari_cryohet.stages.spectral import SpectralConfig

    ws = open_workspace(args)
    inputs = input_ids(args)
    overrides = {}
    if not hasattr(args, "cfg_representation"):
        overrides["representation"] = _default_representation(args, inputs, ws.dataset)
    config = config_from_args(SpectralConfig, args, **overrides)
    result = ws.run("spectral", config, inputs=inputs, progress=print_progress())
    lam = ", ".join(f"{v:.4g}" for v in result.eigenvalues[:6])
    n, k = result.eigenvectors.shape
    print(f"{result.run_id}: {n} particles x {k} eigenvectors ({config.representation}); "
          f"eigenvalues {lam} ...; in {ws.root / result.run_id}")
    return 0
