"""Fit per-particle Cα chains to a particle stack: ``cryohet chainfit``.

Esteve-Yagüe et al. 2022: the torsion and bond angles of a known conformation are expanded
on Laplacian eigenvectors (eq. 2.6) and fitted to the particle images by minibatch gradient
descent. Needs poses and CTF (a .star file or a simulated sample), the eigenvectors of a
spectral run of the same workspace (``--eigenvectors spectral/0002``; default: the latest
finished one, or a spectral run with default settings made first) and a reference chain
(``--reference`` PDB/mmCIF; without it, a simulated sample's known conformation, else a
``reference_ca.pdb`` beside the .star file, as the bundled sample ships). Every run is kept
in ``<workspace>/chainfit/NNNN`` (settings, coefficients, metrics, checkpoint); the same
settings resume an unfinished run. Examples:

  cryohet chainfit --workspace ws --sample adk_chain --n-particles 1000 --epochs 10
  cryohet chainfit --workspace ws --star particles.star --eigenvectors spectral/0002 \\
      --reference model.pdb --reference-chain A --rigid 10-20,40-52 --export-pdb fits.pdb
  torchrun --nproc-per-node 4 -m napari_cryohet.cli chainfit --workspace ws ...   (docs/scale-out.md)
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from napari_cryohet.cli._config_args import (
    add_config_args,
    add_workspace_args,
    config_from_args,
    input_ids,
    open_workspace,
    print_progress,
)

__all__ = ["add_args", "main"]


def add_args(parser: argparse.ArgumentParser) -> None:
    from napari_cryohet.stages.chainfit import ChainFitConfig

    add_workspace_args(parser, inputs={
        "eigenvectors": "spectral run id, e.g. spectral/0002 (default: the latest finished spectral run of "
                        "the workspace; none: one with default settings is run first)"})
    add_config_args(parser, ChainFitConfig, title="chain-fit settings (Esteve-Yagüe et al. 2022)")
    short = parser.add_argument_group("short forms and residue ranges")
    short.add_argument("-K", dest="cfg_n_eigenvectors", type=int, metavar="N", default=argparse.SUPPRESS,
                       help="same as --n-eigenvectors")
    short.add_argument("--lr", dest="cfg_learning_rate", type=float, metavar="X", default=argparse.SUPPRESS,
                       help="same as --learning-rate")
    short.add_argument("--chain", dest="cfg_reference_chain", metavar="ID", default=argparse.SUPPRESS,
                       help="same as --reference-chain")
    short.add_argument("--rigid", default=None, metavar="RANGES",
                       help="residue ranges (e.g. 10-20,40-52) whose angles only get the constant term")
    short.add_argument("--fixed", default=None, metavar="RANGES",
                       help="residue ranges whose angles stay at the reference")
    short.add_argument("--varying", default=None, metavar="RANGES",
                       help="fit only the angles of these residue ranges (every other angle stays fixed)")
    parser.add_argument("--export-pdb", type=Path, default=None, metavar="FILE",
                        help="also write the fitted chains as a multi-model PDB file")


def _eigenvectors_run(ws, n_eigenvectors: int, progress) -> str:
    """The spectral run to use when none is named: the latest finished, else a new default one."""
    from napari_cryohet.stages.chainfit.stage import default_spectral_config
    from napari_cryohet.stages.workspace import RunNotFoundError

    try:
        run_id = ws.resolve("spectral")
    except RunNotFoundError:
        print("no spectral run in this workspace yet: running the spectral embedding with default settings "
              "first", flush=True)
        run_id = ws.run("spectral", default_spectral_config(n_eigenvectors, ws.dataset), progress=progress).run_id
        print(f"spectral run {run_id} done", flush=True)
        return run_id
    print(f"using the eigenvectors of {run_id}, the latest finished spectral run of this workspace "
          "(pick another with --eigenvectors)", flush=True)
    return run_id


def main(args: argparse.Namespace) -> int:
    from napari_cryohet.io.pdb import write_chains_pdb
    from napari_cryohet.stages import distributed
    from napari_cryohet.stages.chainfit import ChainFitConfig
    from napari_cryohet.stages.chainfit.reference import reference_for, reference_from_pdb

    config = config_from_args(ChainFitConfig, args)
    if config.reference:  # the same file from any working folder is the same setting
        config = dataclasses.replace(config, reference=str(Path(config.reference).expanduser().resolve()))
    ctx = distributed.init_from_env(config.device)  # several processes under torchrun (docs/scale-out.md)
    ws = distributed.main_first(lambda: open_workspace(args))
    progress = print_progress() if ctx.is_main else None
    say = print if ctx.is_main else (lambda *a, **k: None)  # rank 0 reports
    if config.reference:
        reference = reference_from_pdb(config.reference, chain=config.reference_chain or None)
        say(f"reference: {config.reference}", flush=True)
    else:  # what the stage takes when no file is named (stages.chainfit.reference.resolve_reference)
        reference, described = reference_for(distributed.main_first(lambda: ws.dataset))
        say(f"reference: {described} (give another with --reference)", flush=True)
    ranges = {"rigid_angles": args.rigid, "fixed_angles": args.fixed, "varying_angles": args.varying}
    if any(ranges.values()):  # residue ranges → angle indices of the reference chain
        extra = {name: tuple(sorted(set(getattr(config, name) or ()) | set(reference.angles(text))))
                 for name, text in ranges.items() if text}
        config = dataclasses.replace(config, **extra)
    inputs = input_ids(args)
    if "eigenvectors" not in inputs:  # rank 0 finds (or computes) them, the others take its run id
        inputs["eigenvectors"] = distributed.broadcast_object(
            _eigenvectors_run(ws, config.n_eigenvectors, progress) if ctx.is_main else None)
    result = distributed.run_in_workspace(ws, "chainfit", config, inputs=inputs, progress=progress)
    distributed.shutdown()
    if not ctx.is_main:
        return 0
    if ctx.active:
        print(f"fitted on {ctx.world_size} processes, {config.batch_size} particles per step in all")
    last = result.history[-1]
    summary = f"chainfit: {len(result.history) - 1} epochs, test loss {last.get('test_loss', float('nan')):.4g}"
    if "avg_error_a" in last:
        summary += f", avg error {last['avg_error_a']:.2f} Å, max error {last['max_error_a']:.2f} Å"
    print(summary)
    print(f"run {result.run_id} (eigenvectors from {inputs['eigenvectors']})")
    print(f"results in {ws.root / result.run_id}")
    if args.export_pdb is not None:
        ref = result.reference
        write_chains_pdb(args.export_pdb, result.chains(), resnames=ref.resnames, resids=ref.resids,
                         chain_id=ref.chain_ids, icodes=ref.icodes)
        print(f"fitted chains: {args.export_pdb} ({len(result.phi)} models)")
    return 0
