"""Structural-basis VAE (sparse Fourier backpropagation, seed 004): train, decode.

  cryohet vae train particles.star -o WORKSPACE [--epochs 20 --zdim 8 --n-basis 16 ...]
      trains on a .star file (or a .mrcs stack with cryoDRGN --poses/--ctf pickles);
      writes WORKSPACE/vae/: checkpoint.pt after every epoch (a second call resumes it),
      latents_epoch_NNN.npz, and finally model.pt, latents.npz, history.json, config.json.
  cryohet vae decode WORKSPACE -o volumes.mrc [--particles 0,10,20 | --z-file z.npy | --z 0,0,...]
      decodes volumes at latent points (one MRC per point: volumes_000.mrc, ...).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

__all__ = ["add_args", "main"]


def add_args(parser: argparse.ArgumentParser) -> None:
    from napari_cryohet.stages._common import LR_SCHEDULES
    from napari_cryohet.stages.vae import VAEConfig

    defaults = VAEConfig()
    sub = parser.add_subparsers(dest="vae_command", required=True, metavar="{train,decode}")
    t = sub.add_parser("train", help="train the VAE on a particle dataset")
    t.add_argument("particles", type=Path, help=".star file or .mrcs/.mrc stack")
    t.add_argument("-o", "--workspace", type=Path, required=True, help="workspace directory (results in <dir>/vae)")
    t.add_argument("--poses", type=Path, help="cryoDRGN poses .pkl (overrides the star file's)")
    t.add_argument("--ctf", type=Path, help="cryoDRGN CTF .pkl (overrides the star file's)")
    t.add_argument("--apix", type=float, help="pixel size in Å/px (overrides the files)")
    for field in ("zdim", "n_basis", "epochs", "batch_size", "enc_dim", "enc_blocks", "dec_dim", "dec_blocks",
                  "seed", "normalisation_images"):
        t.add_argument(f"--{field.replace('_', '-')}", type=int, default=getattr(defaults, field),
                       help=f"(default {getattr(defaults, field)})")
    for field in ("lr", "lr_basis", "beta", "prior_weight", "mask_radius"):
        t.add_argument(f"--{field.replace('_', '-')}", type=float, default=getattr(defaults, field),
                       help=f"(default {getattr(defaults, field)})")
    t.add_argument("--radius", type=float, default=None, help="Fourier radius in px of frequency (default D/2)")
    t.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=defaults.lr_schedule,
                   help=f"learning-rate schedule (default {defaults.lr_schedule})")
    t.add_argument("--enc-whiten", action="store_true",
                   help="spectrally normalise the encoder's input by σ̄_y (eq. 5) instead of standardising it")
    t.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    t.add_argument("--no-resume", action="store_true", help="start afresh even when a checkpoint exists")

    d = sub.add_parser("decode", help="decode volumes at latent points")
    d.add_argument("workspace", type=Path, help="workspace (or its vae/ folder) of a finished training")
    d.add_argument("-o", "--output", type=Path, required=True, help="output .mrc; one file per point (_NNN)")
    which = d.add_mutually_exclusive_group(required=True)
    which.add_argument("--particles", help="comma-separated particle rows whose latents to decode")
    which.add_argument("--z-file", type=Path, help=".npy or text file of latent points (rows)")
    which.add_argument("--z", help="one latent point, comma-separated")
    d.add_argument("--device", default="cpu")


def _progress(fraction: float, message: str) -> None:
    if message.startswith("epoch") and ":" in message or message.startswith("done"):
        print(message, file=sys.stderr, flush=True)


def _train(args: argparse.Namespace) -> int:
    from napari_cryohet.io.load_particles import load_dataset
    from napari_cryohet.stages.vae import VAEConfig, train_vae

    ds = load_dataset(args.particles, poses=args.poses, ctf=args.ctf, apix=args.apix, require=("images", "poses"))
    names = {f.name for f in dataclasses.fields(VAEConfig)}
    values = {k: v for k, v in vars(args).items() if k in names and k not in ("workspace", "device", "resume")}
    cfg = VAEConfig(**values, workspace=str(args.workspace), device=args.device, resume=not args.no_resume)
    res = train_vae(ds, cfg, progress=_progress)
    print(f"latents: {Path(args.workspace) / 'vae' / 'latents.npz'}  ({len(res.latents)} × {cfg.zdim})")
    return 0


def _decode(args: argparse.Namespace) -> int:
    from napari_cryohet.io.mrc_volume import write_volume
    from napari_cryohet.stages.vae import VAEResult

    folder = args.workspace / "vae" if (args.workspace / "vae" / "model.pt").exists() else args.workspace
    res = VAEResult.load(folder, device=args.device)
    if args.particles is not None:
        rows = np.array([int(v) for v in args.particles.split(",") if v.strip()], dtype=np.int64)
        if len(rows) == 0 or rows.min() < 0 or rows.max() >= len(res.latents):
            raise SystemExit(f"cryohet vae decode: --particles must lie in [0, {len(res.latents) - 1}]")
        z = res.latents[rows]
    elif args.z_file is not None:
        z = np.load(args.z_file) if args.z_file.suffix == ".npy" else np.loadtxt(args.z_file, ndmin=2)
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
