"""Build the bundled sample ``sample_data/adk_small/``: a small RELION 3.1 particle set.

200 particles, 64 px boxes at 1.5 Å/px, float32 (≈ 3.3 MB), simulated from the adenylate
kinase Cα frames in ``sample_data/adk_dims_ca.npz`` (provenance in
``sample_data/README.md``) with the forward model of seed 004 eq. 1 / seed 000 eq. 1.1-1.2::

    y_i = CTF_i · T_{-s_i}(P_{R_i} V_{f_i}) + ε_i

where ``V_f`` is frame ``f`` of the trajectory as Gaussian atoms (σ = 2 Å), ``R_i`` is
drawn uniformly on SO(3), shifts ``s_i`` ~ N(0, 2 Å) per axis, defocus U ~ U(10 000,
25 000) Å with ≤ 600 Å astigmatism, 300 kV, Cs 2.7 mm, Q0 0.1, and white noise at
SNR 0.3 (variance of the clean CTF-filtered images over the noise variance).
Ground truth (``particles_truth.npz``): ``state`` (frame index), ``state_params``
(frame / 101, the closed → open path position), the reference Cα frame and the noise.

Written with :func:`napari_cryohet.io.dataset.save_dataset`
(``particles.mrcs``, ``particles.star``, cryoDRGN pickles, truth). Usage::

    .venv/bin/python scripts/make_sample_data.py [--out sample_data/adk_small] [--seed 0]

The simulator stage (``stages/simulate.py``) may regenerate this sample with its own
code; the path ``sample_data/adk_small/particles.star`` stays stable.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from napari_cryohet.core.ctf import compute_ctf_2d
from napari_cryohet.core.dataset import CTFParams, ParticleDataset
from napari_cryohet.core.fft import fft2_centered, ifft2_centered, phase_shift_2d
from napari_cryohet.core.rotation import random_rotations

ROOT = Path(__file__).resolve().parents[1]
N_PARTICLES, BOX, APIX, SIGMA_A, SNR = 200, 64, 1.5, 2.0, 0.3


def project_atoms(coords_a: np.ndarray, rotations: np.ndarray, *, d: int, apix: float,
                  sigma_a: float) -> np.ndarray:
    """Analytic projection of unit Gaussian atoms: a separable 2D Gaussian per atom.

    Uses ``core.projection.project_gaussian_atoms`` when it exists; otherwise the same
    formula in numpy: an atom at r lands at (R r)[:2] (CONTRACT pose convention), the image
    is ``Σ_atoms g(x - x_a) g(y - y_a)`` with ``g`` a 1D Gaussian of width ``sigma_a``.
    """
    try:
        from napari_cryohet.core.projection import project_gaussian_atoms
    except ImportError:
        project_gaussian_atoms = None
    if project_gaussian_atoms is not None:
        out = project_gaussian_atoms(torch.as_tensor(coords_a), torch.as_tensor(rotations), d=d, apix=apix,
                                     sigma_a=sigma_a)
        return np.asarray(out.detach().cpu().numpy() if hasattr(out, "detach") else out, dtype=np.float32)
    grid = (np.arange(d) - d // 2) * apix  # (D,) Å
    rotated = np.einsum("bij,bmj->bmi", rotations, coords_a)  # (B, M, 3)
    gx = np.exp(-((grid[None, None, :] - rotated[..., 0:1]) ** 2) / (2 * sigma_a**2))  # (B, M, D)
    gy = np.exp(-((grid[None, None, :] - rotated[..., 1:2]) ** 2) / (2 * sigma_a**2))  # (B, M, D)
    return np.einsum("bmy,bmx->byx", gy, gx).astype(np.float32)  # (B, D, D)


def apply_ctf_and_shift(images: np.ndarray, *, apix: float, ctf: CTFParams, shifts_a: np.ndarray) -> np.ndarray:
    """``CTF · T_{-shift}(image)`` in Fourier space (core.ctf, core.fft)."""
    d = images.shape[-1]
    spectra = fft2_centered(torch.as_tensor(images, dtype=torch.float64))  # (B, D, D)
    spectra = phase_shift_2d(spectra, torch.as_tensor(-shifts_a / apix, dtype=torch.float64))
    ctf_2d = compute_ctf_2d(d, apix, **ctf.to_torch(dtype=torch.float64))  # (B, D, D)
    return ifft2_centered(spectra * ctf_2d).real.numpy().astype(np.float32)


def build_sample(*, seed: int = 0) -> ParticleDataset:
    """The sample dataset, with ground truth (deterministic for a seed)."""
    frames = np.load(ROOT / "sample_data" / "adk_dims_ca.npz")["coords"].astype(np.float64)  # (F, M, 3)
    frames = frames - frames[0].mean(axis=0)  # model origin at the centre of the closed frame
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    n = N_PARTICLES
    state = rng.integers(0, len(frames), n)  # (N,) frame index
    rotations = random_rotations(n, generator=generator, dtype=torch.float64).numpy()  # (N, 3, 3)
    shifts_a = rng.normal(0.0, 2.0, (n, 2))  # (N, 2) Å
    defocus_u = rng.uniform(10_000, 25_000, n)
    ctf = CTFParams.constant(
        n, defocus_u_a=defocus_u, defocus_v_a=defocus_u - rng.uniform(0, 600, n),
        defocus_angle_rad=rng.uniform(0, np.pi, n), voltage_kv=300.0, cs_mm=2.7, amplitude_contrast=0.1,
    )
    clean = project_atoms(frames[state], rotations, d=BOX, apix=APIX, sigma_a=SIGMA_A)  # (N, D, D)
    clean = apply_ctf_and_shift(clean, apix=APIX, ctf=ctf, shifts_a=shifts_a)
    noise_var = float(clean.var() / SNR)
    images = (clean + rng.normal(0.0, np.sqrt(noise_var), clean.shape)).astype(np.float32)
    truth = {
        "state": state.astype(np.int64),
        "state_params": (state / (len(frames) - 1)).astype(np.float32)[:, None],
        "global/reference_coords_a": frames[0].astype(np.float32),
        "global/sigma_a": np.float32(SIGMA_A),
        "global/noise_var": np.float32(noise_var),
        "global/snr": np.float32(SNR),
    }
    return ParticleDataset(
        images=images, apix=APIX, rotations=rotations.astype(np.float32), shifts_a=shifts_a.astype(np.float32),
        ctf=ctf, ground_truth=truth, meta={"name": "adk_small", "source": "scripts/make_sample_data.py"},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "sample_data" / "adk_small")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from napari_cryohet.io.dataset import save_dataset

    dataset = build_sample(seed=args.seed)
    paths = save_dataset(args.out, dataset, name="particles")
    size = sum(Path(p).stat().st_size for p in Path(args.out).iterdir())
    print(f"wrote {len(dataset)} particles ({dataset.box_size} px, {dataset.apix} Å/px) to {args.out} "
          f"({size / 1e6:.2f} MB): {paths}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
