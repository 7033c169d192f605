"""Hyper-molecule sampler (Lederman, Andén & Singer 2020): ``cryohet hypermolecule``.

Samples a composite hyper-molecule V(r, τ) — a map with one or more "knobs" τ in [0, 1]
that move parts of the molecule — together with every particle's knob settings, pose,
shift and contrast, by Markov chain Monte Carlo. The regions (balls; rigid or with their own
knob; copies of another region under a rotation) come from --layout regions.json, or the
simulator's own layout for pretzel and cat data. The result is kept as a run of the
workspace (``<workspace>/hypermolecule/NNNN/``): posterior mean and standard deviation
maps on a grid of knob settings, each particle's states, acceptance rates and traces; a
stopped run continues from its last sweep. Examples:

  cryohet hypermolecule --workspace ws --sample pretzel --n-particles 2000 --no-estimate-poses
  cryohet hypermolecule --workspace ws --layout regions.json --n-burnin-sweeps 60
  cryohet hypermolecule --workspace ws --initial-map start.mrc --theta-update crude
"""

from __future__ import annotations

import argparse

__all__ = ["add_args", "main"]


def add_args(parser: argparse.ArgumentParser) -> None:
    from napari_cryohet.cli._config_args import add_config_args, add_workspace_args
    from napari_cryohet.stages.hypermolecule.config import HyperMoleculeConfig

    add_workspace_args(parser)
    parser.add_argument("--layout", dest="layout_file", default=None, metavar="FILE",
                        help="regions.json: {\"components\": [{name, centre_a, radius_a, state_dim, state_order, "
                             "trajectory, copy_of, copy_rotation, copy_translation_a}, ...]} (Å from the box "
                             "centre), or a built-in layout: auto (the simulator's own layout for pretzel and cat "
                             "data, one heterogeneous ball otherwise), pretzel, cat (default: auto)")
    add_config_args(parser, HyperMoleculeConfig, exclude=("layout",), title="hyper-molecule settings (Lederman, Andén & Singer 2020)")


def main(args: argparse.Namespace) -> int:
    from napari_cryohet.cli._config_args import config_from_args, open_workspace, print_progress
    from napari_cryohet.stages.hypermolecule.config import DEFAULT_LAYOUTS, HyperMoleculeConfig

    overrides = {}
    if args.layout_file in ("auto", *DEFAULT_LAYOUTS):
        overrides["layout"] = args.layout_file
    elif args.layout_file:
        from napari_cryohet.io.json_files import read_json

        overrides["regions"] = read_json(args.layout_file)
    ws = open_workspace(args)
    config = config_from_args(HyperMoleculeConfig, args, **overrides)
    result = ws.run("hypermolecule", config, progress=print_progress())
    acc = ", ".join(f"{k} {v:.2f}" for k, v in result.acceptance.items())
    print(f"{result.run_id}: {len(result.indices)} particles, states {result.state_names}, maps "
          f"{result.volumes_mean.shape[0]} × {result.box_size}³ at {result.apix:.2f} Å; acceptance {acc}; "
          f"in {ws.root / result.run_id}")
    return 0
