"""Simulate a test dataset of particle images whose true answer is known: ``cryohet simulate <dataset>``.

Datasets (recipes of ``napari_cryohet.stages.simulate``):

  box_arms_2d       2D box with two arms, 1D projections (Esteve-Yagüe et al. 2022)
  adk_chain         adenylate kinase backbone (Cα), closed to open (Esteve-Yagüe et al. 2022)
  adk_volumes       adenylate kinase, all atoms, several conformations (Kimanius, Jamali & Scheres 2022)
  assembly_classes  adenylate kinase lacking some domains (Silvera Coeff 2025)
  cat, pretzel      blob models with moving parts (Lederman, Andén & Singer 2020)
  trajectory        your own protein (Cα): --topology PDB with --trajectory DCD/XTC/multi-model PDB,
                    or --normal-modes N --amplitude-a A (elastic-network modes, Atilgan et al. 2001)

Particle datasets are written to ``--out`` as ``<name>.mrcs`` + RELION ``<name>.star`` +
cryoDRGN ``<name>_poses.pkl`` / ``<name>_ctf.pkl`` + ``<name>_truth.npz`` (the true
conformations); ``box_arms_2d`` as ``<name>.npz``. With ``--workspace DIR`` the dataset
becomes the source of a new workspace instead: it is simulated once into
``DIR/simulate/0001`` and every stage run with ``--workspace DIR`` uses it. Options left
unset keep the dataset's own imaging conditions (those of its paper). Examples::

    cryohet simulate adk_chain --n 4000 --snr 0.0136 --out adk4000 --device cuda
    cryohet simulate adk_chain --n 200 --workspace ws     # then: cryohet spectral --workspace ws
    cryohet simulate trajectory --topology my.pdb --normal-modes 3 --amplitude-a 5 --n 4000 --out mine
    cryohet simulate trajectory --topology my.pdb --trajectory md.pdb --chain A --n 4000 --out mine
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

__all__ = ["add_args", "main"]

#: CLI option → dataset keyword (only passed when given and accepted by the dataset).
_OPTIONS = {
    "snr": "snr",
    "box_size": "box_size",
    "apix": "apix",
    "shift_std_a": "shift_std_a",
    "device": "device",
    "batch_size": "batch_size",
    "n_conformations": "n_conformations",
    "continuous": "continuous",
    "noise_var": "noise_var",
    "low_dim_frame": "low_dim_frame",
    "topology": "topology",
    "trajectory": "trajectory",
    "chain": "chain",
    "normal_modes": "normal_modes",
    "amplitude_a": "amplitude_a",
    "n_frames": "n_frames",
    "amplitudes": "amplitudes",
    "cutoff_a": "cutoff_a",
}


def _absolute(path: str) -> str:
    """A file argument as an absolute path (a workspace made here stays valid from anywhere)."""
    return str(Path(path).resolve())


def add_args(parser: argparse.ArgumentParser) -> None:
    from napari_cryohet.stages.simulate import RECIPES

    parser.add_argument("dataset", choices=sorted(RECIPES), metavar="DATASET",
                        help="which dataset to simulate: " + ", ".join(sorted(RECIPES)))
    parser.add_argument("--n", type=int, default=1000, metavar="N", help="number of particles (default: 1000)")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", type=Path, metavar="DIR", help="folder the files are written to")
    where.add_argument("--workspace", type=Path, metavar="DIR",
                       help="make this dataset the source of a new workspace folder instead")
    parser.add_argument("--name", default=None, metavar="NAME",
                        help="start of the file names (default: the dataset name)")
    parser.add_argument("--seed", type=int, default=0, metavar="N",
                        help="random seed of poses, defocus, noise and conformations (default: 0)")
    parser.add_argument("--snr", type=float, default=None, metavar="X",
                        help="signal-to-noise ratio: variance of the clean images over that of the noise, e.g. "
                             "0.1 (default: the dataset's)")
    parser.add_argument("--box-size", type=int, default=None, metavar="N",
                        help="image edge in pixels, even (default: the dataset's)")
    parser.add_argument("--apix", type=float, default=None, metavar="X",
                        help="pixel size in Å (default: the dataset's)")
    parser.add_argument("--shift-std-a", type=float, default=None, metavar="X",
                        help="standard deviation of the particles' off-centre shifts, in Å")
    parser.add_argument("--n-conformations", type=int, default=None, metavar="N",
                        help="adk_volumes: number of distinct conformations")
    parser.add_argument("--continuous", action="store_true", default=None,
                        help="adk_chain, adk_volumes: conformations anywhere along the path instead of a few "
                             "distinct ones")
    parser.add_argument("--noise-var", type=float, default=None, metavar="X",
                        help="box_arms_2d: variance of the noise added to the projections (default: 2500, as in "
                             "Esteve-Yagüe et al. 2022)")
    parser.add_argument("--low-dim-frame", choices=("consensus", "anchor"), default=None,
                        help="box_arms_2d: frame of the 64x64 low-resolution densities: consensus = each chain "
                             "superposed on the reference, as a consensus refinement aligns it; anchor = the anchor atom "
                             "fixed at the centre (default: consensus)")
    own = parser.add_argument_group("your own protein (dataset 'trajectory')")
    own.add_argument("--topology", type=_absolute, default=None, metavar="PDB",
                     help="PDB/mmCIF of the protein: its standard amino acids' Cα atoms are the chain")
    own.add_argument("--trajectory", type=_absolute, default=None, metavar="FILE",
                     help="its motion: a multi-model PDB/mmCIF, or DCD/XTC/TRR (needs MDAnalysis)")
    own.add_argument("--chain", default=None, metavar="A[,B]", help="chain(s) of --topology to use (default: all)")
    own.add_argument("--normal-modes", type=int, default=None, metavar="N",
                     help="instead of --trajectory: deform along the N slowest elastic-network modes")
    own.add_argument("--amplitude-a", type=float, default=None, metavar="A",
                     help="largest deformation along the modes, Å of RMSD from the reference (default: 5)")
    own.add_argument("--n-frames", type=int, default=None, metavar="N", help="frames of the deformation (default: 100)")
    own.add_argument("--amplitudes", choices=("random", "sinusoidal"), default=None,
                     help="random mixtures of the modes, or one smooth path from the reference (default: random)")
    own.add_argument("--cutoff-a", type=float, default=None, metavar="X",
                     help="elastic-network spring cutoff between Cα atoms in Å (default: 15)")
    parser.add_argument("--device", default=None, metavar="DEVICE",
                        help="where to compute: cpu, cuda (graphics card) or auto (default: cpu)")
    parser.add_argument("--batch-size", type=int, default=None, metavar="N",
                        help="particles simulated at once (more is faster but uses more memory)")


def main(args: argparse.Namespace) -> int:
    from napari_cryohet.stages.simulate import RECIPES, Toy2DDataset, save_simulation

    func = RECIPES[args.dataset]
    accepted = set(inspect.signature(func).parameters)
    kwargs = {"seed": args.seed}
    for option, keyword in _OPTIONS.items():
        value = getattr(args, option, None)
        if value is None:
            continue
        if keyword not in accepted:
            print(f"cryohet simulate: --{option.replace('_', '-')} does not apply to {args.dataset}",
                  file=sys.stderr)
            return 2
        kwargs[keyword] = value

    def progress(fraction: float, message: str) -> None:
        print(f"\r[{fraction:6.1%}] {message:<60}", end="", file=sys.stderr, flush=True)

    if args.workspace is not None:
        from napari_cryohet.stages.workspace import Workspace

        kwargs.pop("device", None)  # runtime only: not part of the recipe's identity
        ws = Workspace.create(args.workspace, {"recipe": args.dataset, "args": {"n_particles": args.n, **kwargs}})
        dataset = ws.dataset
        run_id = ws.resolve("simulate")
        print(file=sys.stderr)
        print(f"{run_id}: {len(dataset)} particles of {args.dataset} in {ws.root / run_id}")
        return 0
    if "progress" in accepted:
        kwargs["progress"] = progress
    result = func(args.n, **kwargs)
    print(file=sys.stderr)
    name = args.name or args.dataset
    if isinstance(result, Toy2DDataset):
        path = result.save(Path(args.out) / f"{name}.npz")
        print(f"wrote {len(result)} 1D projections to {path}")
        return 0
    paths = save_simulation(args.out, result, name=name)
    truth = result.ground_truth or {}
    print(f"wrote {len(result)} particles ({result.box_size} px, {result.apix:g} Å/px, "
          f"SNR {float(truth.get('global/snr', float('nan'))):g}) to {paths['star']}")
    return 0
