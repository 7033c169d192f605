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
(``particles.mrcs``, ``particles.star``, cryoDRGN pickles, truth), plus
``reference_ca.pdb``: the reference conformation (AdK frame 0, the ``global/reference_coords_a``
of the truth) as a Cα PDB in the frame of the poses, so that a chain fit on the ``.star``
alone finds its reference (:func:`napari_cryohet.stages.chainfit.reference.reference_for`).
Usage::

    .venv/bin/python scripts/make_sample_data.py [--out sample_data/adk_small] [--seed 0]
    .venv/bin/python scripts/make_sample_data.py --reference-only   # only reference_ca.pdb

The path ``sample_data/adk_small/particles.star`` stays stable.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

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


#: First lines of ``reference_ca.pdb`` (replacing the writer's "fitted chains" remark).
_REFERENCE_REMARKS = (
    "REMARK   1 ADENYLATE KINASE CALPHA REFERENCE: FRAME 0 (CLOSED) OF THE DIMS TRAJECTORY",
    "REMARK   1 BECKSTEIN, SEYLER & KUMAR 2018 (CC-BY 4.0), CENTRED AS IN THE SIMULATOR;",
    "REMARK   1 FRAME OF THE POSES OF PARTICLES.STAR. WRITTEN BY SCRIPTS/MAKE_SAMPLE_DATA.PY",
)


def write_reference_model(out: Path) -> Path:
    """Write ``<out>/reference_ca.pdb``: the simulator's reference conformation, Cα only.

    The coordinates are ``ground_truth["global/reference_coords_a"]`` of
    :func:`~napari_cryohet.stages.simulate.adk_chain` (frame 0 of the AdK trajectory,
    centred; the model frame the poses rotate), written with
    :func:`~napari_cryohet.io.pdb.write_chains_pdb` (3 decimals: ≤ 0.0005 Å rounding),
    residue names and numbers from ``adk_dims_ca.npz``. When ``<out>/particles_truth.npz``
    exists, the PDB is checked against its reference frame.
    """
    from napari_cryohet.io.pdb import write_chains_pdb
    from napari_cryohet.stages.chainfit.reference import SHIPPED_REFERENCE
    from napari_cryohet.stages.simulate.adk import load_adk_ca

    ca = load_adk_ca()
    coords = ca["coords"][0]  # (214, 3) Å: what adk_chain declares as its known conformation
    truth = Path(out) / "particles_truth.npz"
    if truth.is_file():
        with np.load(truth, allow_pickle=False) as data:
            shipped = data["global/reference_coords_a"]
        if shipped.shape != coords.shape or not np.array_equal(shipped, coords):
            raise ValueError(f"{truth}: its reference frame differs from frame 0 of adk_dims_ca.npz; "
                             "regenerate the whole sample")
    path = write_chains_pdb(Path(out) / SHIPPED_REFERENCE, coords, resnames=ca["resnames"], resids=ca["resids"])
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*_REFERENCE_REMARKS, *lines[1:]]) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "sample_data" / "adk_small")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference-only", action="store_true",
                        help="write only reference_ca.pdb (the particle files are left as they are)")
    args = parser.parse_args(argv)
    from napari_cryohet.stages.simulate import save_simulation

    if args.reference_only:
        print(f"wrote {write_reference_model(args.out)}")
        return 0
    dataset = build_sample(seed=args.seed)
    paths = save_simulation(args.out, dataset, name="particles")
    paths["reference"] = write_reference_model(args.out)
    size = sum(Path(p).stat().st_size for p in Path(args.out).iterdir())
    print(f"wrote {len(dataset)} particles ({dataset.box_size} px, {dataset.apix} Å/px) to {args.out} "
          f"({size / 1e6:.2f} MB): {paths}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
