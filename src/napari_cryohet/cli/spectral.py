"""Laplacian eigenvectors of the conformational manifold: ``cryohet spectral``.

Builds a per-particle representation (seed 000 Appendix B), a similarity graph and the
eigenvectors of its normalised Laplacian, and writes ``<workspace>/spectral/spectral.npz``
(eigenvalues, eigenvectors (N, K), particle indices, config). Examples:

  cryohet spectral --sample box_arms_2d --n-particles 4000 --workspace ws
  cryohet spectral --sample box_arms_2d --n-particles 4000 --lowpass-a 5 --denoise-dim 6 -k 8 \
      --alpha 1 --workspace ws          # the box-arms acceptance setting (docs/spectral.md)
  cryohet spectral --sample box_arms_2d --lowpass-a 10 --order parsimonious --workspace ws
  cryohet spectral --star particles.star --representation pca_images --workspace ws
  cryohet spectral --star particles.star --features latents.npz:mu --workspace ws
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_args", "main"]


def add_args(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--star", type=Path, help="a RELION .star file (or .mrcs stack) of particles")
    src.add_argument("--sample", help="a synthetic dataset: box_arms_2d, adk_chain, ...")
    parser.add_argument("--n-particles", type=int, default=None, help="particles of --sample")
    parser.add_argument("--workspace", type=Path, required=True, help="output directory")
    parser.add_argument("--representation", default=None,
                        help="table | lowres_volumes | pca_images (default: lowres_volumes for "
                             "--sample, pca_images for --star, table with --features)")
    parser.add_argument("--features", default=None,
                        help="per-particle array as FILE.npz:KEY or FILE.npy (e.g. VAE latents)")
    parser.add_argument("--columns", default=None, help="comma-separated table columns (table)")
    parser.add_argument("--standardize", action="store_true", help="z-score the features")
    parser.add_argument("--n-components", type=int, default=30, help="PCA dimensions (0: none)")
    parser.add_argument("--grid-size", type=int, default=16, help="volume/image grid size")
    parser.add_argument("--noise-var", type=float, default=0.5, help="noise of synthetic volumes")
    parser.add_argument("--graph", choices=("knn", "gaussian"), default="knn")
    parser.add_argument("--weights", choices=("self_tuning", "binary", "gaussian"), default="self_tuning")
    parser.add_argument("-k", "--k", type=int, default=30, help="kNN neighbours")
    parser.add_argument("--sigma", type=float, default=None, help="Gaussian kernel width")
    parser.add_argument("--n-eigenvectors", type=int, default=20, help="K, trivial one included")
    parser.add_argument("--lowpass-a", type=float, default=None,
                        help="Gaussian low-pass sigma (A) of the densities before PCA (lowres_volumes)")
    parser.add_argument("--order", choices=("eigenvalue", "parsimonious"), default="eigenvalue",
                        help="column order: eigenvalue, or unique directions first (Dsilva et al. 2018)")
    parser.add_argument("--n-candidates", type=int, default=None,
                        help="eigenvectors computed before the parsimonious selection (default 3K)")
    parser.add_argument("--denoise-dim", type=int, default=None,
                        help="tangent-space denoising of the representation: manifold dimension kept")
    parser.add_argument("--denoise-k", type=int, default=80, help="neighbours per local PCA of the denoising")
    parser.add_argument("--denoise-iter", type=int, default=3, help="passes of the denoising")
    parser.add_argument("--alpha", type=float, default=0.0,
                        help="graph density normalisation D^-a W D^-a (0 = paper, 1 = Laplace-Beltrami)")
    parser.add_argument("--solver", default="auto", choices=("auto", "dense", "sparse", "multilevel"))
    parser.add_argument("--device", default="auto",
                        help="torch device of the neighbour search: auto (CUDA if present), cpu, cuda")
    parser.add_argument("--seed", type=int, default=0)


def _load_features(spec: str):
    import numpy as np

    path, _, key = spec.partition(":")
    data = np.load(path, allow_pickle=False)
    if hasattr(data, "files"):
        with data:
            return data[key or data.files[0]]
    return data


def main(args: argparse.Namespace) -> int:
    from napari_cryohet.stages.spectral import SpectralConfig, run_spectral

    if args.sample:
        from napari_cryohet.stages.simulate import RECIPES

        if args.sample not in RECIPES:
            print(f"cryohet spectral: unknown sample {args.sample!r}; one of {sorted(RECIPES)}", file=sys.stderr)
            return 2
        kwargs = {} if args.n_particles is None else {"n_particles": args.n_particles}
        dataset = RECIPES[args.sample](**kwargs)
    else:
        from napari_cryohet.io.load_particles import load_dataset

        dataset = load_dataset(args.star)
    features = _load_features(args.features) if args.features else None
    representation = args.representation or (
        "table" if features is not None or args.columns else "lowres_volumes" if args.sample else "pca_images")
    config = SpectralConfig(
        representation=representation,
        columns=tuple(c.strip() for c in args.columns.split(",")) if args.columns else None,
        standardize=args.standardize, n_components=args.n_components or None, grid_size=args.grid_size,
        noise_var=args.noise_var, graph=args.graph, weights=args.weights, k=args.k, sigma=args.sigma,
        n_eigenvectors=args.n_eigenvectors, solver=args.solver, seed=args.seed, device=args.device,
        lowpass_a=args.lowpass_a, order=args.order, n_candidates=args.n_candidates,
        denoise_dim=args.denoise_dim, denoise_k=args.denoise_k, denoise_iter=args.denoise_iter, alpha=args.alpha,
    )

    def progress(fraction: float, message: str) -> None:
        print(f"[{100 * fraction:5.1f}%] {message}", file=sys.stderr)

    result = run_spectral(dataset, config, features=features, progress=progress, workspace=args.workspace)
    out = Path(args.workspace) / "spectral" / "spectral.npz"
    lam = ", ".join(f"{v:.4g}" for v in result.eigenvalues[:6])
    print(f"wrote {out}: {result.eigenvectors.shape[0]} particles x {result.eigenvectors.shape[1]} "
          f"eigenvectors; eigenvalues {lam} ...")
    return 0
