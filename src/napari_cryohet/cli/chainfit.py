"""Fit per-particle Cα chains to a particle stack: ``cryohet chainfit``.

Seed 000_8d73a95ce4c6e7ab.txt: torsion and bond angles of a known conformation expanded
on Laplacian eigenvectors (eq. 2.6), fitted to the images by minibatch gradient descent.
Needs poses and CTF (a .star file or a synthetic sample), eigenvectors (``cryohet
spectral`` output, or computed here from the sample's low-resolution densities) and a
reference chain (PDB/mmCIF or the sample's known conformation). Writes
``<workspace>/chainfit/`` (coefficients, metrics, checkpoint) and optionally a
multi-model PDB of the fitted chains. Examples:

  cryohet chainfit --sample adk_chain --n-particles 1000 --workspace ws --epochs 10
  cryohet chainfit --star particles.star --eigenvectors ws/spectral --reference model.pdb \\
      --chain A --workspace ws --rigid 10-20,40-52 --export-pdb fits.pdb
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_args", "main"]


def add_args(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--star", type=Path, help="a RELION .star file (poses and CTF) of the particles")
    src.add_argument("--sample", choices=("adk_chain",), help="a synthetic dataset with ground truth")
    parser.add_argument("--n-particles", type=int, default=1000, help="particles of --sample")
    parser.add_argument("--snr", type=float, default=0.056, help="SNR of --sample")
    parser.add_argument("--workspace", type=Path, required=True, help="output directory")
    parser.add_argument("--eigenvectors", type=Path, default=None,
                        help="a spectral result (directory or spectral.npz) or an .npy (N, K) array; "
                             "default for --sample: computed from its 16³ densities")
    parser.add_argument("--reference", default=None,
                        help="PDB/mmCIF file of the known conformation (default for --sample: its frame 0)")
    parser.add_argument("--chain", default=None, help="chain of --reference (default: the first)")
    parser.add_argument("-K", "--n-eigenvectors", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    parser.add_argument("--lr", type=float, default=0.002, help="learning rate")
    parser.add_argument("--lr-schedule", choices=("cosine", "constant"), default="cosine")
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--sigma-a", type=float, default=None, help="Gaussian atom width (Å)")
    parser.add_argument("--reference-atom", type=int, default=None, help="j0, 0-based (default: nearest centroid)")
    parser.add_argument("--anchor", choices=("reference", "truth"), default="reference")
    parser.add_argument("--rigid", default=None, help="residue ranges keeping only the constant term")
    parser.add_argument("--fixed", default=None, help="residue ranges whose angles stay at the reference")
    parser.add_argument("--varying", default=None, help="fit only the angles in these residue ranges")
    parser.add_argument("--torsions-only", action="store_true", help="keep bond angles at the reference")
    parser.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--export-pdb", type=Path, default=None, help="write the fitted chains (multi-model PDB)")
    parser.add_argument("--seed", type=int, default=0)


def _eigenvectors(path: Path):
    import numpy as np

    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    from napari_cryohet.stages.spectral import SpectralResult

    return SpectralResult.load(path).eigenvectors


def main(args: argparse.Namespace) -> int:
    import numpy as np

    from napari_cryohet.io.pdb import write_chains_pdb
    from napari_cryohet.stages.chainfit import (
        ChainFitConfig,
        angles_for_residues,
        parse_residue_ranges,
        reference_from_dataset,
        reference_from_pdb,
        run_chainfit,
    )

    if args.sample:
        from napari_cryohet.stages.simulate import adk_chain

        dataset = adk_chain(args.n_particles, snr=args.snr, seed=args.seed)
    else:
        from napari_cryohet.io.load_particles import load_dataset

        dataset = load_dataset(args.star)
    if args.reference:
        reference = reference_from_pdb(args.reference, chain=args.chain)
    elif args.sample:
        reference = reference_from_dataset(dataset)
    else:
        raise SystemExit("cryohet chainfit: --reference is required with --star")
    if args.eigenvectors is not None:
        phi = _eigenvectors(args.eigenvectors)
    elif args.sample:
        from napari_cryohet.stages.spectral import SpectralConfig, run_spectral

        phi = run_spectral(dataset, SpectralConfig(n_eigenvectors=max(args.n_eigenvectors, 2)),
                           workspace=args.workspace).eigenvectors
    else:
        raise SystemExit("cryohet chainfit: --eigenvectors is required with --star (run cryohet spectral)")
    resids = reference.resids

    def angles(text):
        return tuple(int(j) for j in angles_for_residues(resids, parse_residue_ranges(text)))

    config = ChainFitConfig(
        n_eigenvectors=args.n_eigenvectors, epochs=args.epochs, batch_size=args.batch_size,
        optimizer=args.optimizer, learning_rate=args.lr, lr_schedule=args.lr_schedule,
        test_fraction=args.test_fraction, sigma_a=args.sigma_a, reference_atom=args.reference_atom,
        anchor=args.anchor, fit_bond_angles=not args.torsions_only, fixed_angles=angles(args.fixed),
        rigid_angles=angles(args.rigid), varying_angles=angles(args.varying) if args.varying else None,
        seed=args.seed, device=args.device, resume=not args.no_resume,
    )

    def progress(fraction: float, message: str) -> None:
        if message.startswith("epoch") and "batch" not in message:
            print(f"[{100 * fraction:5.1f}%] {message}", flush=True)

    result = run_chainfit(dataset, config, eigenvectors=np.asarray(phi), reference=reference,
                          workspace=args.workspace, progress=progress)
    last = result.history[-1]
    summary = f"chainfit: {len(result.history) - 1} epochs, test loss {last.get('test_loss', float('nan')):.4g}"
    if "avg_error_a" in last:
        summary += f", avg error {last['avg_error_a']:.2f} Å, max error {last['max_error_a']:.2f} Å"
    print(summary)
    print(f"results in {args.workspace / 'chainfit'}")
    if args.export_pdb is not None:
        write_chains_pdb(args.export_pdb, result.chains(), resnames=reference.resnames, resids=reference.resids)
        print(f"fitted chains: {args.export_pdb} ({len(result.phi)} models)")
    return 0
