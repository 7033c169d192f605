"""Train a VAE on the particle images and make 3-D volumes from it (Kimanius, Jamali & Scheres 2022).

The VAE (variational autoencoder) gives each particle a latent point (a few numbers that
describe its shape) and learns to turn any latent point into a volume, built from a
structural basis of volumes. Two commands:

  cryohet vae train --workspace WS [--star particles.star | --sample adk_volumes] [--epochs 20 ...]
      trains on the workspace's particles (a new workspace takes --star or --sample; a
      .mrcs stack also takes cryoDRGN --poses/--ctf pickles and --apix). Every run gets its
      own folder WS/vae/NNNN: checkpoint.pt after every epoch, latents_epoch_NNN.npz, and
      finally model.pt, latents.npz, history.json, config.json. The same command again
      returns the finished run or resumes an interrupted one; other settings start a new run.
      Several GPUs or nodes: torchrun --nproc-per-node N -m napari_cryohet.cli vae train ...
      (--batch-size counts the images of one step over all processes; docs/scale-out.md).
  cryohet vae decode --workspace WS [--run vae/0001] -o volume.mrc
                     [--particles 0,10,20 | --z-file z.npy | --z 0,0,...]
      decodes volumes at latent points (one MRC per point: volume_000.mrc, ...); --run
      defaults to the newest finished VAE run; --result-dir reads a result folder instead.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

__all__ = ["add_args", "main"]


def add_args(parser: argparse.ArgumentParser) -> None:
    from napari_cryohet.cli._config_args import add_config_args, add_workspace_args
    from napari_cryohet.stages.vae import VAEConfig

    sub = parser.add_subparsers(dest="vae_command", required=True, metavar="{train,decode}")
    t = sub.add_parser("train", help="train the VAE on a workspace's particles",
                       description="Train the structural-basis VAE (Kimanius, Jamali & Scheres 2022) on a "
                                   "workspace's particles; the same command again resumes or returns the run.")
    add_workspace_args(t)
    add_config_args(t, VAEConfig, title="VAE settings (Kimanius, Jamali & Scheres 2022)")
    t.add_argument("--every-batch", action="store_true", help="print progress after every 10 batches too")

    d = sub.add_parser("decode", help="make volumes at latent points of a trained VAE",
                       description="Make one volume (MRC file) per latent point of a trained VAE: the latent "
                                   "points of chosen particles, of a file, or one point typed in.")
    where = d.add_mutually_exclusive_group(required=True)
    where.add_argument("--workspace", type=Path, metavar="DIR", help="workspace holding the trained VAE run")
    where.add_argument("--result-dir", type=Path, metavar="DIR",
                       help="a VAE result folder instead (model.pt, latents.npz; also older WS/vae folders)")
    d.add_argument("--run", default="vae", metavar="ID",
                   help="run id, e.g. vae/0001 (default: the newest finished VAE run)")
    d.add_argument("-o", "--output", type=Path, required=True, metavar="FILE",
                   help="output .mrc; with several points one file each, numbered _000, _001, ...")
    which = d.add_mutually_exclusive_group(required=True)
    which.add_argument("--particles", metavar="A,B,...",
                       help="particles (rows, counted from 0) whose latent points to decode, comma-separated")
    which.add_argument("--z-file", type=Path, metavar="FILE",
                       help=".npy or text file of latent points, one per row")
    which.add_argument("--z", metavar="A,B,...", help="one latent point, comma-separated")
    d.add_argument("--device", default="cpu", metavar="DEVICE",
                   help="where to compute: cpu, cuda (graphics card) or auto (default: cpu)")


def _train(args: argparse.Namespace) -> int:
    from napari_cryohet.cli._config_args import config_from_args, open_workspace, print_progress
    from napari_cryohet.stages import distributed
    from napari_cryohet.stages.vae import VAEConfig

    config = config_from_args(VAEConfig, args)
    ctx = distributed.init_from_env(config.device)  # several processes under torchrun (docs/scale-out.md)
    ws = distributed.main_first(lambda: open_workspace(args))
    progress = print_progress(every_batch=args.every_batch) if ctx.is_main else None
    result = distributed.run_in_workspace(ws, "vae", config, progress=progress)
    distributed.shutdown()
    if not ctx.is_main:  # rank 0 reports and writes
        return 0
    if ctx.active:
        print(f"trained on {ctx.world_size} processes, {config.batch_size} images per step in all")
    run_dir = ws.root / result.run_id
    print(f"{result.run_id}: {len(result.latents)} particles × {config.zdim} latent dimensions")
    print(f"results in {run_dir} (model.pt, latents.npz, history.json)")
    return 0


def _load_result(args: argparse.Namespace):
    from napari_cryohet.stages.vae import VAEResult
    from napari_cryohet.stages.workspace import Workspace

    if args.result_dir is not None:
        return VAEResult.from_folder(args.result_dir, device=args.device)
    ws = Workspace.open(args.workspace)
    run_id = ws.resolve(args.run)
    if not run_id.startswith("vae/"):
        raise SystemExit(f"cryohet vae decode: --run must be a VAE run (vae/NNNN), got {run_id}")
    return ws.result(run_id, device=args.device)


def _decode(args: argparse.Namespace) -> int:
    from napari_cryohet.io.mrc_volume import write_volume

    res = _load_result(args)
    if args.particles is not None:
        rows = np.array([int(v) for v in args.particles.split(",") if v.strip()], dtype=np.int64)
        if len(rows) == 0 or rows.min() < 0 or rows.max() >= len(res.latents):
            raise SystemExit(f"cryohet vae decode: --particles must lie in [0, {len(res.latents) - 1}]")
        z = res.latents[rows]
    elif args.z_file is not None:
        z = np.load(args.z_file, allow_pickle=False) if args.z_file.suffix == ".npy" else np.loadtxt(args.z_file,
                                                                                                    ndmin=2)
    else:
        z = np.array([[float(v) for v in args.z.split(",")]], dtype=np.float32)
    z = np.atleast_2d(np.asarray(z, dtype=np.float32))
    if z.shape[1] != res.model.shape.zdim:
        raise SystemExit(f"cryohet vae decode: latent points need {res.model.shape.zdim} values, got {z.shape[1]}")
    vols = res.decode(z)
    out = Path(args.output)
    for i, vol in enumerate(vols):
        path = out if len(vols) == 1 else out.with_name(f"{out.stem}_{i:03d}{out.suffix or '.mrc'}")
        write_volume(path, vol, res.apix)
        print(path)
    return 0


def main(args: argparse.Namespace) -> int:
    """Dispatch ``cryohet vae train|decode``."""
    return _train(args) if args.vae_command == "train" else _decode(args)
