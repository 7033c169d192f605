"""Build the bundled sample ``sample_data/adk_small/``: a small RELION 3.1 particle set.

200 particles, 64 px boxes at 1.5 Å/px, float32 (≈ 3.3 MB), simulated by the simulator
stage (:func:`napari_cryohet.stages.simulate.adk.adk_chain`, which reads the adenylate kinase
Cα frames in ``sample_data/adk_dims_ca.npz``; provenance in ``sample_data/README.md``)
with the forward model of seed 004 eq. 1 / seed 000 eq. 1.1-1.2::

    y_i = CTF_i · T_{-s_i}(P_{R_i} V_{f_i}) + ε_i

where ``V_f`` is frame ``f`` of the trajectory as Gaussian atoms (σ = 2 Å), ``R_i`` is
drawn uniformly on SO(3), shifts ``s_i`` ~ N(0, 2 Å) per axis, the imaging conditions of
Table 1 of seed 000 (200 kV, Cs 2 mm, Q0 0.1, defocus drawn from {1.5, 1.75, 2, 2.25,
2.5} µm), and white noise at SNR 0.3 (variance of the clean CTF-filtered images over the
noise variance) — a higher SNR than the paper's so that particles are visible by eye.
Ground truth (``particles_truth.npz``): ``state`` (frame index), ``state_params``
(frame / 101, the closed → open path position), ``coords_a`` (the Cα of each particle),
the reference Cα frame, σ, SNR and noise variance (the clean images and the whole
trajectory are left out to keep the sample small).

Written with :func:`napari_cryohet.stages.simulate.save_simulation`
(``particles.mrcs``, ``particles.star``, cryoDRGN pickles, truth). Usage::

    .venv/bin/python scripts/make_sample_data.py [--out sample_data/adk_small] [--seed 0]

The path ``sample_data/adk_small/particles.star`` stays stable.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_cryohet.core.particle_dataset import ParticleDataset

ROOT = Path(__file__).resolve().parents[1]
N_PARTICLES, BOX, APIX, SIGMA_A, SNR, SHIFT_STD_A = 200, 64, 1.5, 2.0, 0.3, 2.0
#: ground-truth entries not shipped in the sample (large and recomputable).
_DROP = ("clean_images", "global/trajectory_coords_a")


def build_sample(*, seed: int = 0) -> ParticleDataset:
    """The sample dataset, with ground truth (deterministic for a seed)."""
    from napari_cryohet.stages.simulate import adk_chain

    dataset = adk_chain(N_PARTICLES, box_size=BOX, apix=APIX, sigma_a=SIGMA_A, snr=SNR, shift_std_a=SHIFT_STD_A,
                        seed=seed)
    dataset.ground_truth = {k: v for k, v in dataset.ground_truth.items() if k not in _DROP}
    dataset.meta.update(name="adk_small", source="scripts/make_sample_data.py")
    return dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "sample_data" / "adk_small")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from napari_cryohet.stages.simulate import save_simulation

    dataset = build_sample(seed=args.seed)
    paths = save_simulation(args.out, dataset, name="particles")
    size = sum(Path(p).stat().st_size for p in Path(args.out).iterdir())
    print(f"wrote {len(dataset)} particles ({dataset.box_size} px, {dataset.apix} Å/px) to {args.out} "
          f"({size / 1e6:.2f} MB): {paths}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
