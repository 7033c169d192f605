"""Forward-model throughput: analytic Gaussian-atom projection, sparse Fourier-slice
extraction and backprojection (slice insertion), at 64 and 128 px on CPU, each beside a
naive torch peer run on the same data in the same process.

Peers
-----
- analytic: dense evaluation of every atom's 2D Gaussian on every pixel, ``(B, D², M)``
  exponentials (what the separable matrix product avoids);
- slice: ``torch.nn.functional.grid_sample`` (trilinear) of the real and imaginary parts of
  the volume on the slice grid (dense library interpolation of the same samples), and a
  naive full-volume rotation (``grid_sample`` of all ``D³`` voxels, keep the central plane);
- backproject: the autograd backward of that ``grid_sample`` slice (its adjoint).

Usage: ``python benchmarks/forward.py [--quick] [--json PATH] [--threads N]``; prints
human-readable lines, then one JSON summary line last.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time

import torch
import torch.nn.functional as F

from napari_cryohet.core.fft import fft3_centered
from napari_cryohet.core.projection import project_gaussian_atoms
from napari_cryohet.core.rotation import random_rotations
from napari_cryohet.core.slice import extract_central_slices, insert_central_slices


def _best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _dense_atoms(coords, rot, d, apix, sigma):
    """Naive peer: all atoms on all pixels, (B, D², M) exponentials."""
    rotated = coords[None] @ rot[:, :2, :].transpose(1, 2)  # (B, M, 2)
    u = (torch.arange(d, dtype=coords.dtype) - d // 2) * apix
    yy, xx = torch.meshgrid(u, u, indexing="ij")
    pix = torch.stack([xx, yy], -1).reshape(-1, 2)  # (D², 2)
    out = []
    for b in range(rot.shape[0]):
        r2 = ((pix[:, None, :] - rotated[b][None]) ** 2).sum(-1)  # (D², M)
        out.append(torch.exp(-r2 / (2 * sigma**2)).sum(-1).reshape(d, d))
    return torch.stack(out) * apix**2 / (2 * math.pi * sigma**2)


def _slice_grid(rot, d):
    """grid_sample coordinates of the central slices, ``(B, 1, D, D, 3)``, align_corners=True."""
    k = torch.arange(d, dtype=rot.dtype) - d // 2
    ky, kx = torch.meshgrid(k, k, indexing="ij")
    plane = torch.stack([kx, ky, torch.zeros_like(kx)], -1).reshape(-1, 3)  # (D², 3)
    pos = plane @ rot + d // 2  # row form of Rᵀ k, (B, D², 3) (x, y, z) indices
    return (pos * (2.0 / (d - 1)) - 1.0).reshape(rot.shape[0], 1, d, d, 3)


def _grid_sample_slices(vol_ri, grid):
    """Peer: (B, 2, 1, D, D) trilinear samples of the (2, D, D, D) real/imag volume."""
    b = grid.shape[0]
    return F.grid_sample(vol_ri.expand(b, *vol_ri.shape[1:]), grid, mode="bilinear", align_corners=True)


def _dense_rotation_slices(vol_ri, rot, d):
    """Naive peer: rotate the whole volume (D³ samples per image) and keep the central plane."""
    k = torch.arange(d, dtype=rot.dtype) - d // 2
    kz, ky, kx = torch.meshgrid(k, k, k, indexing="ij")
    pts = torch.stack([kx, ky, kz], -1).reshape(-1, 3)
    out = []
    for r in rot:
        grid = ((pts @ r + d // 2) * (2.0 / (d - 1)) - 1.0).reshape(1, d, d, d, 3)
        rotated = F.grid_sample(vol_ri[None] if vol_ri.dim() == 4 else vol_ri, grid, mode="bilinear",
                                align_corners=True)
        out.append(rotated[0, :, d // 2])
    return torch.stack(out)


def _bench_size(d: int, *, batch: int, repeats: int, n_atoms: int, g: torch.Generator) -> dict:
    """All figures at box size ``d`` (a 128 Å box: apix = 128/d)."""
    out: dict = {}
    apix = 128.0 / d
    coords = torch.randn(n_atoms, 3, generator=g) * 12.0
    rot = random_rotations(batch, generator=g)
    t = _best_time(lambda: project_gaussian_atoms(coords, rot, d=d, apix=apix, sigma_a=3.0), repeats)
    out[f"analytic_images_per_s_{d}"] = batch / t
    n_peer = max(2, batch // 16)
    t_peer = _best_time(lambda: _dense_atoms(coords, rot[:n_peer], d, apix, 3.0), 1) * batch / n_peer
    out[f"peer_dense_atoms_images_per_s_{d}"] = batch / t_peer
    out[f"analytic_speedup_vs_dense_atoms_{d}"] = t_peer / t

    volume_ft = fft3_centered(torch.randn(d, d, d, generator=g))  # (D, D, D) complex64
    t = _best_time(lambda: extract_central_slices(volume_ft, rot), repeats)
    out[f"slice_images_per_s_{d}"] = batch / t
    vol_ri = torch.stack([volume_ft.real, volume_ft.imag])[None]  # (1, 2, D, D, D)
    grid = _slice_grid(rot, d)
    t_gs = _best_time(lambda: _grid_sample_slices(vol_ri, grid), repeats)
    out[f"peer_grid_sample_slice_images_per_s_{d}"] = batch / t_gs
    out[f"slice_speedup_vs_grid_sample_{d}"] = t_gs / t
    n_dense = 2 if batch <= 32 else 4
    t_dense = _best_time(lambda: _dense_rotation_slices(vol_ri, rot[:n_dense], d), 1) * batch / n_dense
    out[f"peer_dense_rotation_slice_images_per_s_{d}"] = batch / t_dense
    out[f"slice_speedup_vs_dense_rotation_{d}"] = t_dense / t

    slices = extract_central_slices(volume_ft, rot)
    t = _best_time(lambda: insert_central_slices(slices, rot, d), repeats)
    out[f"backproject_images_per_s_{d}"] = batch / t
    grad_out = torch.randn(batch, 2, 1, d, d, generator=g)

    def peer_backproject():
        v = vol_ri.clone().requires_grad_(True)
        (gv,) = torch.autograd.grad(_grid_sample_slices(v, grid), v, grad_outputs=grad_out)
        return gv

    t_bp = _best_time(peer_backproject, repeats)
    out[f"peer_grid_sample_backproject_images_per_s_{d}"] = batch / t_bp
    out[f"backproject_speedup_vs_grid_sample_{d}"] = t_bp / t
    print(
        f"D={d}: analytic {out[f'analytic_images_per_s_{d}']:.0f} img/s "
        f"(dense peer ×{out[f'analytic_speedup_vs_dense_atoms_{d}']:.1f}), "
        f"slice {out[f'slice_images_per_s_{d}']:.0f} img/s "
        f"(grid_sample ×{out[f'slice_speedup_vs_grid_sample_{d}']:.2f}, "
        f"full rotation ×{out[f'slice_speedup_vs_dense_rotation_{d}']:.0f}), "
        f"backproject {out[f'backproject_images_per_s_{d}']:.0f} img/s "
        f"(grid_sample adjoint ×{out[f'backproject_speedup_vs_grid_sample_{d}']:.2f})",
        flush=True,
    )
    return out


def run(quick: bool) -> dict:
    g = torch.Generator().manual_seed(0)
    batch = 32 if quick else 256
    repeats = 2 if quick else 3
    n_atoms = 500
    results: dict = {
        "quick": quick,
        "batch": batch,
        "n_atoms": n_atoms,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
    }
    for d in (64, 128):
        results.update(_bench_size(d, batch=batch, repeats=repeats, n_atoms=n_atoms, g=g))
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small batches (< 60 s on 2 cores), same keys")
    parser.add_argument("--json", default=None, help="write the results as JSON to this path")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = run(args.quick)
    text = json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in results.items()})
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text + "\n")
    print(text)
    r = results
    print(  # the summary line, last
        "forward: images/s at 64 | 128 px — analytic "
        f"{r['analytic_images_per_s_64']:.0f} | {r['analytic_images_per_s_128']:.0f}, slice "
        f"{r['slice_images_per_s_64']:.0f} | {r['slice_images_per_s_128']:.0f}, backproject "
        f"{r['backproject_images_per_s_64']:.0f} | {r['backproject_images_per_s_128']:.0f} "
        f"(batch {r['batch']}, {r['torch_threads']} threads)"
    )


if __name__ == "__main__":
    main()
