"""Chain fit on three proteins of different sizes, at default settings, with two bases (issue 14).

Proteins (each with its own motion, 4000 particles, 64 × 64 images, SNR 0.05, Gaussian Cα
atoms of σ = 3 Å, CTF at 200 kV / Cs 2 mm / Q0 0.1 / defocus 1.5-2.5 µm as in Table 1 of
seed 000_8d73a95ce4c6e7ab.txt):

- ``adk`` — adenylate kinase, 214 residues, the bundled DIMS MD closed→open trajectory
  (``stages.simulate.adk_chain``, 2 Å/px);
- ``1a28`` — human progesterone receptor ligand-binding domain, chains A + B (250 + 250
  residues, two segments: the fit's multi-chain path), ``sample_data/structures/1a28_ca.pdb``;
- ``6msm`` — human CFTR chain A (cryo-EM, 1181 residues in 5 segments: four gaps of
  unresolved residues), ``sample_data/structures/6msm_A_ca.pdb``.

The two PDB structures move along their 3 slowest elastic-network (ANM) modes with RMSD
≤ 5 Å, bond lengths restored (``stages.simulate.trajectory.trajectory_chain``); their pixel
size is chosen so the reference's largest Cα–Cα extent fills ≈ 75 % of the box (rounded up
to 0.25 Å/px). The known conformation is each dataset's own reference (the undeformed
structure / AdK frame 0), with the gaps of the PDB kept as gaps.

Per protein: the Laplacian eigenvectors of the spectral stage at its default settings
(``SpectralConfig()``: k = max(30, √N) neighbours, density correction α = 1; ``--spectral
KEY=VALUE`` overrides one), then the chain fit at its default settings (``ChainFitConfig()``:
30 epochs, Adam, 10 eigenvectors, …) with ``basis="eigenvectors"`` (eq. 2.6 of seed 000)
and ``basis="normal_modes"`` (per-particle amplitudes of the reference's slowest ANM modes,
eq. 7 of 002_0d217c95809d417a.txt, fitted to each image as in HEMNMA), and
``normal_modes_pooled`` (the same modes, amplitudes expanded on the eigenvectors:
``mode_amplitudes="eigenvectors"``). A basis the stage refuses is skipped with a note
(``skipped`` in the JSON).

Prints one JSON document — ``rows``: one per protein and basis, ``protein``, ``n_residues``,
``basis``, ``avg_error_before_A`` / ``max_error_before_A`` (the untrained reference, held-out
particles, eqs. 3.7 / 3.6 of seed 000), ``avg_error_A`` / ``max_error_A`` (after the last
epoch), ``seconds_per_epoch``, ``diverged`` (a non-finite error, a final average error not
below the initial one, or any epoch's held-out average error above 1.2 × the initial one),
plus extras (``epochs``, ``backoffs`` when the fit reports them, ``snr``, ``apix``, …; for
the normal-mode rows ``avg_error_in_span_A`` / ``max_error_in_span_A``, the error of the
best chains in the modes' span, an oracle floor: :func:`in_span_errors`);
``targets``: ``no_divergence`` and ``halved_every_protein`` (final average error < 0.5 ×
initial on every row); settings — and a summary line last.

AdK's Table 1 check (avg error ≤ 1.45 Å against the paper's 2.43-2.49 Å, the paper's
low-dimensional noise settings) is ``benchmarks/chainfit_adk.py``; it is not repeated here.

``--quick``: 600 particles, 3 epochs, 32 × 32 images at twice the pixel size, same proteins
and keys: 35 s on one thread on an idle 2-core machine (the three elastic-network
diagonalisations of the 1181-residue CFTR, dense 3543² eigenproblems, take ≈ 1.5 s each
of it; with another job on the second core they took 15-25 s each and the run ≈ 150 s).
``--proteins adk,1a28`` and ``--bases eigenvectors`` run a subset.

Cost at full size (one thread, shared 2-core machine, eigenvector basis, whole 64² images):
about 1.5 / 3.0 / 10-12.5 s per epoch for AdK / 1a28 / 6msm, plus ≈ 1 min of simulation
(the 1181-residue ANM) and ≈ 20 s of spectral embeddings: ≈ 15-20 min for both bases at 30
epochs, so the fit keeps the whole image (``--fit-box-size 32`` would cut it further).

Usage::

    python benchmarks/chainfit_proteins.py [--quick] [--json out.json] [--threads 1]
        [--proteins adk,1a28,6msm] [--bases eigenvectors,normal_modes,normal_modes_pooled]
        [--fit-box-size 32]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
STRUCTURES = ROOT / "sample_data" / "structures"

#: name → (description, PDB file or None for the bundled AdK trajectory, chains)
PROTEINS = {
    "adk": ("adenylate kinase (DIMS MD trajectory)", None, None),
    "1a28": ("progesterone receptor LBD, chains A+B (ANM, 3 modes)", STRUCTURES / "1a28_ca.pdb", "A,B"),
    "6msm": ("CFTR chain A, cryo-EM, 4 gaps (ANM, 3 modes)", STRUCTURES / "6msm_A_ca.pdb", "A"),
}
BASES = ("eigenvectors", "normal_modes", "normal_modes_pooled")
#: chain-fit settings of each row's model ("normal_modes_pooled": amplitudes expanded on the eigenvectors)
BASIS_SETTINGS = {"eigenvectors": {"basis": "eigenvectors"}, "normal_modes": {"basis": "normal_modes"},
                  "normal_modes_pooled": {"basis": "normal_modes", "mode_amplitudes": "eigenvectors"}}
SNR = 0.05
SIGMA_A = 3.0
NORMAL_MODES = 3
AMPLITUDE_A = 5.0
ADK_APIX = 2.0
FILL = 0.75  # share of the box the reference's largest extent fills


def apix_for(coords_a: np.ndarray, box_size: int) -> float:
    """Pixel size (Å, rounded up to 0.25) at which the chain's largest extent fills ≈ 75 % of the box."""
    x = np.asarray(coords_a, dtype=np.float64)
    extent = max(float(np.linalg.norm(x[:, None] - x[None], axis=-1).max()), 1.0)
    return math.ceil(extent / (FILL * box_size) / 0.25) * 0.25


def make_dataset(name: str, *, n: int, box_size: int, scale: float, seed: int):
    """The protein's particles and the pixel size used (``scale`` × the full-size one)."""
    from napari_cryohet.stages.simulate import adk_chain
    from napari_cryohet.stages.simulate.trajectory import trajectory_chain

    _, path, chains = PROTEINS[name]
    if path is None:
        apix = ADK_APIX * scale
        return adk_chain(n, snr=SNR, sigma_a=SIGMA_A, box_size=box_size, apix=apix, seed=seed), apix
    from napari_cryohet.io.pdb import read_ca_chains

    apix = apix_for(read_ca_chains(path, chain=chains).coords, 64) * scale
    ds = trajectory_chain(n_particles=n, topology=str(path), chain=chains, normal_modes=NORMAL_MODES,
                          amplitude_a=AMPLITUDE_A, snr=SNR, sigma_a=SIGMA_A, box_size=box_size, apix=apix, seed=seed)
    return ds, apix


def reference_of(dataset):
    """The dataset's known conformation, with the reference's gaps (``global/gaps``) kept as gaps."""
    from napari_cryohet.stages.chainfit import ChainReference, reference_from_dataset

    ref = reference_from_dataset(dataset)
    truth = dataset.ground_truth or {}
    gaps = np.asarray(truth.get("global/gaps", np.zeros(0)), dtype=np.int64)
    if gaps.size and not np.asarray(ref.gaps).size:
        resids = truth.get("global/resids")
        ref = ChainReference(ref.coords_a, resids=resids, gaps=gaps, source=ref.source + " + global/gaps")
    return ref


def in_span_errors(reference, dataset, config) -> tuple[float, float]:
    """Average / max error (eqs. 3.7 / 3.6 of seed 000) of the best chains the normal-mode basis can make.

    Each particle's true chain is projected, by least squares on the coordinates, onto the
    reference plus the span of the modes the fit uses (the same ``mode_displacements`` call as
    the stage): the error left is what no amplitudes, however well fitted, can remove — the
    floor of the normal-mode rows. An oracle with the ground truth, for the report only.
    """
    from napari_cryohet.stages.chainfit.model import chain_errors
    from napari_cryohet.stages.chainfit.normal_modes import mode_displacements

    ref = np.asarray(reference.coords_a, dtype=np.float64)
    truth = np.asarray(dataset.ground_truth["coords_a"], dtype=np.float64)
    delta, _, _ = mode_displacements(ref, int(config.n_modes), float(config.mode_cutoff_a),
                                     float(config.mode_min_collectivity))
    basis = delta.reshape(len(delta), -1).T  # (3m, K)
    amplitudes, *_ = np.linalg.lstsq(basis, (truth - ref).reshape(len(truth), -1).T, rcond=None)  # (K, n)
    best = ref + (basis @ amplitudes).T.reshape(truth.shape)
    return chain_errors(best, truth)


def diverged(history: list[dict]) -> bool:
    """A non-finite error, a final average error not below the initial one, or an epoch above 1.2 × initial."""
    avg = np.array([h["avg_error_a"] for h in history], dtype=np.float64)
    mx = np.array([h["max_error_a"] for h in history], dtype=np.float64)
    if not (np.isfinite(avg).all() and np.isfinite(mx).all()):
        return True
    return bool(avg[-1] >= avg[0] or (avg[1:] > 1.2 * avg[0]).any())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="600 particles, 3 epochs, 32-px images at twice the pixel size")
    parser.add_argument("--json", default=None, help="also write the JSON document here")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch (and BLAS) threads (default 1: on the 2-core machine shared with another job, "
                             "--quick took 150 s with 1 thread and 305 s with 2; 35 s with 1 on an idle machine)")
    parser.add_argument("--proteins", default=",".join(PROTEINS), help=f"subset of {', '.join(PROTEINS)}")
    parser.add_argument("--bases", default=",".join(BASES), help=f"subset of {', '.join(BASES)}")
    parser.add_argument("--n-particles", type=int, default=None, help="default 4000 (quick: 600)")
    parser.add_argument("--epochs", type=int, default=None, help="default: the chain fit's default (quick: 3)")
    parser.add_argument("--fit-box-size", type=int, default=None,
                        help="fit on the central N² Fourier components only (ChainFitConfig.fit_box_size); "
                             "default: the whole image (the chain fit's default)")
    parser.add_argument("--spectral", action="append", default=[], metavar="KEY=VALUE",
                        help="override a spectral setting (e.g. --spectral k=60); default: SpectralConfig() defaults")
    parser.add_argument("--chainfit", action="append", default=[], metavar="KEY=VALUE",
                        help="override a chain-fit setting for every row (e.g. --chainfit n_eigenvectors=20)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' shared helpers
    from _settings import parse_overrides

    spectral_overrides = parse_overrides(args.spectral)
    names = [p.strip() for p in args.proteins.split(",") if p.strip()]
    bases = [b.strip() for b in args.bases.split(",") if b.strip()]
    unknown = [p for p in names if p not in PROTEINS] + [b for b in bases if b not in BASES]
    if unknown:
        parser.error(f"unknown protein or basis {unknown[0]!r}")

    torch.set_num_threads(args.threads)
    try:  # numpy/scipy's BLAS too (the ANM's eigensolver), when threadpoolctl is there
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
    except ImportError:
        pass
    from napari_cryohet.stages.chainfit import ChainFitConfig, run_chainfit
    from napari_cryohet.stages.simulate import measured_snr
    from napari_cryohet.stages.spectral import SpectralConfig, run_spectral

    n = args.n_particles or (600 if args.quick else 4000)
    box_size, scale = (32, 2.0) if args.quick else (64, 1.0)
    fit_box = args.fit_box_size if args.fit_box_size and args.fit_box_size < box_size else None
    overrides: dict = {"seed": args.seed}
    if args.quick or args.epochs:
        overrides["epochs"] = args.epochs or 3
    if fit_box:
        overrides["fit_box_size"] = fit_box
    overrides.update(parse_overrides(args.chainfit))
    rows: list[dict] = []
    skipped: list[dict] = []
    setup: dict[str, float] = {}
    t_start = time.perf_counter()
    for name in names:
        tic = time.perf_counter()
        dataset, apix = make_dataset(name, n=n, box_size=box_size, scale=scale, seed=args.seed)
        setup[f"simulate_{name}"] = time.perf_counter() - tic
        snr = measured_snr(dataset)
        reference = reference_of(dataset)
        tic = time.perf_counter()
        eigenvectors = run_spectral(dataset, SpectralConfig(**{"seed": args.seed, **spectral_overrides})).embedding()
        setup[f"spectral_{name}"] = time.perf_counter() - tic
        for basis in bases:
            config = ChainFitConfig(**overrides, **BASIS_SETTINGS[basis])
            tic = time.perf_counter()
            try:
                result = run_chainfit(dataset, config, eigenvectors=eigenvectors, reference=reference)
            except ValueError as err:  # e.g. a basis value the stage refuses
                skipped.append({"protein": name, "basis": basis, "why": f"run_chainfit: {err}"})
                print(f"# {name} {basis}: skipped ({err})", file=sys.stderr)
                continue
            total = time.perf_counter() - tic
            history = result.history
            first, last = history[0], history[-1]
            row = {
                "protein": name,
                "n_residues": int(reference.n_atoms),
                "basis": basis,
                "avg_error_before_A": float(first["avg_error_a"]),
                "avg_error_A": float(last["avg_error_a"]),
                "max_error_A": float(last["max_error_a"]),
                "seconds_per_epoch": float(np.mean([h["seconds"] for h in history[1:]])) if len(history) > 1
                else 0.0,
                "diverged": diverged(history),
                "max_error_before_A": float(first["max_error_a"]),
                "worst_epoch_avg_error_A": float(max(h["avg_error_a"] for h in history)),
                "avg_error_per_epoch_A": [round(float(h["avg_error_a"]), 4) for h in history],
                "epochs": len(history) - 1,
                "backoffs": int(history[-1].get("backoffs", 0)),  # the guard's count is cumulative
                "segments": len(reference.segments),
                "snr": round(float(snr), 5),
                "apix": apix,
                "box_size": box_size,
                "total_seconds": total,
                "description": PROTEINS[name][0],
            }
            if config.basis == "normal_modes":
                row["avg_error_in_span_A"], row["max_error_in_span_A"] = in_span_errors(reference, dataset, config)
            rows.append(row)
            floor = f" (best in the modes' span {row['avg_error_in_span_A']:.2f} Å)" if "avg_error_in_span_A" in row else ""
            print(f"# {name} ({row['n_residues']} residues) {basis}: avg {row['avg_error_before_A']:.2f} → "
                  f"{row['avg_error_A']:.2f} Å{floor}, max {row['max_error_A']:.2f} Å, "
                  f"{row['seconds_per_epoch']:.1f} s/epoch, diverged={row['diverged']}", file=sys.stderr)
    halved_by_basis = {b: all(r["avg_error_A"] < 0.5 * r["avg_error_before_A"] for r in rows if r["basis"] == b)
                       for b in bases if any(r["basis"] == b for r in rows)}
    doc = {
        "benchmark": "chainfit_proteins",
        "quick": bool(args.quick),
        "rows": rows,
        "targets": {
            "no_divergence": not any(r["diverged"] for r in rows),
            "halved_every_protein": bool(rows) and all(halved_by_basis.values()),
        },
        "halved_by_basis": halved_by_basis,
        "skipped": skipped,
        "n_particles": n,
        "box_size": box_size,
        "snr": SNR,
        "sigma_a": SIGMA_A,
        "normal_modes": NORMAL_MODES,
        "amplitude_a": AMPLITUDE_A,
        "chainfit_overrides": overrides,
        "spectral": spectral_overrides or "SpectralConfig() defaults",
        "threads": args.threads,
        "setup_seconds": setup,
        "wall_seconds": time.perf_counter() - t_start,
    }
    text = json.dumps(doc, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text + "\n")
    proteins_run = sorted({r["protein"] for r in rows}, key=names.index)
    per_basis = ", ".join(
        f"{sum(r['avg_error_A'] < 0.5 * r['avg_error_before_A'] for r in rows if r['basis'] == b)}/"
        f"{sum(r['basis'] == b for r in rows)} ({b})" for b in halved_by_basis)
    slowest = max((r["seconds_per_epoch"] for r in rows), default=0.0)
    sizes = ", ".join(f"{p} {next(r['n_residues'] for r in rows if r['protein'] == p)}" for p in proteins_run)
    print(f"chainfit_proteins: {len(rows)} rows on {len(proteins_run)} proteins ({sizes} residues), "
          f"{sum(r['diverged'] for r in rows)} diverged, error halved on {per_basis or 'none'}, "
          f"≤ {slowest:.1f} s per epoch, {len(skipped)} skipped, N={n}, {box_size} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
