"""Clustering and pose refinement (Silvera Coeff 2025, §4.1): ``cryohet refine``.

Clusters the particles on another run's per-particle vectors (a VAE run's latents, or a
spectral run's eigenvectors), then for every cluster reconstructs two independent half
maps from the current poses, measures their resolution (Fourier shell correlation at
0.143, masked and corrected for the mask) and refines each particle's pose locally
against its own cluster's half map. This repeats for the number of iterations asked;
cluster numbers are kept from one iteration to the next, and a stopped run continues from
its last finished iteration. The result is kept as a run of the workspace
(``<workspace>/refine/NNNN/``). Examples:

  cryohet refine --workspace ws --embedding vae/0001 --n-clusters 6 --n-iterations 3
  cryohet refine --workspace ws --embedding vae/0001 --cluster-method hdbscan --embedding-method umap
  cryohet refine --workspace ws --embedding spectral/0002 --no-refine-poses
  cryohet refine --workspace ws --embedding vae/0001 --export-dir clusters   # one .star per cluster
"""

from __future__ import annotations

import argparse

__all__ = ["add_args", "main"]


def add_args(parser: argparse.ArgumentParser) -> None:
    from napari_cryohet.cli._config_args import add_config_args, add_workspace_args
    from napari_cryohet.stages.refine.config import RefineConfig

    add_workspace_args(parser, inputs={"embedding": "run id whose per-particle vectors to cluster, e.g. vae/0001 "
                                                    "(VAE latents) or spectral/0001 (eigenvectors)"})
    add_config_args(parser, RefineConfig, title="clustering and refinement settings (Silvera Coeff 2025)")
    parser.add_argument("--export-dir", metavar="DIR", default=None,
                        help="also write each cluster as DIR/cluster_<id>.star: its particles with every original "
                             "column, the refined poses, the class number and the half set")


def main(args: argparse.Namespace) -> int:
    from napari_cryohet.cli._config_args import (
        config_from_args,
        input_ids,
        open_workspace,
        print_progress,
    )
    from napari_cryohet.stages import distributed
    from napari_cryohet.stages.refine.config import RefineConfig

    config = config_from_args(RefineConfig, args)
    # several processes under torchrun share the reconstructions (docs/scale-out.md); rank 0 writes and reports
    ctx = distributed.init_from_env(config.device)
    ws = distributed.main_first(lambda: open_workspace(args))
    result = distributed.run_in_workspace(ws, "refine", config, inputs=input_ids(args),
                                          progress=print_progress() if ctx.is_main else None)
    distributed.shutdown()
    if not ctx.is_main:
        return 0
    if args.export_dir:
        from pathlib import Path

        from napari_cryohet.stages.refine.export import export_cluster_star

        for k in result.cluster_ids:
            out = export_cluster_star(Path(args.export_dir) / f"cluster_{int(k)}.star", ws.dataset, result, int(k))
            print(f"wrote cluster {int(k)} to {out.resolve()}")
    last = result.history[-1]
    parts = [f"cluster {k}: {v['particles']} particles"
             + (f", {v['resolution_a']:.1f} Å" if v.get("resolution_a") else "")
             for k, v in last["clusters"].items()]
    stability = last.get("label_stability")
    print(f"{result.run_id}: {len(result.labels)} iterations; " + "; ".join(parts)
          + (f"; label stability {stability:.3f}" if stability is not None else "")
          + f"; in {ws.root / result.run_id}")
    return 0
