"""Benchmark of the refine stage (issue 13): clustering/refinement loop on mixed heterogeneity.

Data: :func:`napari_cryohet.stages.simulate.assembly_classes` with ``frames=(0, 101)`` and the
classes complete, −LID, −NMP: six classes ({closed, open} × {complete, −LID, −NMP}, AdK),
N particles of D px at a given SNR (full: 20 000, 64 px, SNR 0.1). The initial poses are the
true ones perturbed by 4° rms (random axes; rotation vectors ω ~ N(0, (4°/√3)² I₃), so
√⟨|ω|²⟩ = 4°) and 1.5 px rms (2-D shift offsets ~ N(0, (1.5/√2 px)² I₂)); the dataset
carries the perturbed poses, the truth is kept to score.

Embedding: the project's structural-basis VAE (:func:`napari_cryohet.stages.vae.train_vae`,
trained on the perturbed poses; full: 20 epochs, zdim 8), its latents the refine stage's input.
After 6 epochs its latents still put open-complete and open-−NMP particles together (final
ARI 0.69); after 20 they separate all six classes.

Loop: :func:`napari_cryohet.stages.refine.run.run_refine` (6 clusters, K-Means on a UMAP
(full) / PCA (--quick) embedding in the first iteration, then assignment of the particles to
the class maps; local pose refinement with σ_angle = 4°, σ_shift = 1.5 px, frequency marching
8/3 → 2 → 1.5 × Nyquist resolution). The stage keeps the labels and the poses of every
iteration (``RefineResult.iterations``); the benchmark scores them.

``iterations[0]`` is the start (perturbed poses, the first clustering; ``seconds`` 0);
``iterations[i]`` is the state after iteration ``i``: the labels iteration ``i`` clustered
and the poses it refined. Per entry: ``ari`` (adjusted Rand index of the labels against the
true classes), ``label_stability`` (the stage's ARI to the previous iteration's labels),
``angular_error_deg`` (mean geodesic angle to the true rotations), ``shift_error_px`` (mean
|Δshift|), ``class_resolution_A`` (half-map resolution at FSC 0.143, masked and
phase-randomisation corrected, :func:`core.postprocess.postprocess`) and
``class_fsc_truth_A`` (resolution where the FSC of the class map — the unmasked, unfiltered
average of the two half maps — to that class's true volume falls below 0.5), both per true
class (order of ``class_names``; each class scored with the cluster that overlaps it most,
Hungarian matching of the cluster/class overlap), and ``seconds`` (the stage's wall time of
that iteration). The maps of entry ``i`` are reconstructed by the benchmark from entry
``i``'s labels and poses with the stage's half sets (the stage's own maps of an iteration
are made before that iteration refines the poses). ``ceiling``: maps from the true labels
and the true poses, scored the same way; ``ceiling.angular_error_deg`` / ``shift_error_px``:
the starting poses refined once against the *true* class volumes with the true labels — what
per-particle local refinement can reach at this SNR with perfect maps and classes.

    python benchmarks/cluster_refine.py [--quick] [--json PATH] [--n-particles N] [--box D]

--quick: 1200 particles, 32 px, SNR 0.5, 4 VAE epochs, 2 iterations (< 60 s on 2 cores): a check
that everything runs and the keys are there; its figures say little about the targets.
``--vae-dir DIR`` saves the trained VAE and reuses it in later runs on the same data and
settings; ``--assignment embedding`` re-clusters the latents every iteration instead of
assigning particles to the class maps.
The last line printed is a summary with the targets of issue 13 and which are met.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CLASSES = (("CORE", "NMP", "LID"), ("CORE", "NMP"), ("CORE", "LID"))
FRAMES = (0, 101)
ANGLE_RMS_DEG, SHIFT_RMS_PX = 4.0, 1.5
PHYSICAL_BOX_A = 96.0  # 64 px × 1.5 Å; the same physical box at every size
FULL_N, FULL_D = 20_000, 64
ITERATION_TARGET_S = 300.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def perturb_poses(rotations: np.ndarray, shifts_a: np.ndarray, apix: float, *, seed: int = 1
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Rotations turned by random axis-angle vectors of rms angle 4° and shifts moved 1.5 px rms."""
    import torch

    from napari_cryohet.core.local_refine import axis_angle_to_matrix

    rng = np.random.default_rng(seed)
    n = len(rotations)
    omega = rng.normal(0.0, np.deg2rad(ANGLE_RMS_DEG) / np.sqrt(3.0), (n, 3))
    turn = axis_angle_to_matrix(torch.as_tensor(omega)).numpy()
    rot = np.einsum("nij,njk->nik", turn, np.asarray(rotations, np.float64))
    dshift = rng.normal(0.0, SHIFT_RMS_PX / np.sqrt(2.0), (n, 2)) * apix
    return rot, np.asarray(shifts_a, np.float64) + dshift


def pose_errors(rotations, shifts_a, true_rot, true_shifts_a, apix: float) -> tuple[float, float]:
    import torch

    from napari_cryohet.core.local_refine import geodesic_angle_deg

    ang = geodesic_angle_deg(torch.as_tensor(np.asarray(rotations)), torch.as_tensor(np.asarray(true_rot)))
    shift = np.linalg.norm(np.asarray(shifts_a) - np.asarray(true_shifts_a), axis=1) / apix
    return float(ang.mean()), float(shift.mean())


def match_clusters(labels: np.ndarray, state: np.ndarray, n_classes: int) -> list[int | None]:
    """For each true class the cluster id that overlaps it most (Hungarian on the overlap)."""
    from scipy.optimize import linear_sum_assignment

    ids = [int(k) for k in np.unique(labels) if k >= 0]
    overlap = np.array([[np.sum((labels == k) & (state == c)) for k in ids] for c in range(n_classes)])
    out: list[int | None] = [None] * n_classes
    if ids:
        rows, cols = linear_sum_assignment(-overlap)
        for r, c in zip(rows, cols, strict=True):
            out[int(r)] = ids[int(c)]
    return out


def class_maps(images, ctf, rotations, shifts_a, labels, halves, apix: float, volumes_true: np.ndarray,
               assignment: list[int | None], device) -> tuple[list[float | None], list[float | None]]:
    """Per true class: half-map resolution (0.143, masked, corrected) and FSC-to-truth resolution (0.5)."""
    import torch

    from napari_cryohet.core.fsc import fourier_shell_correlation, resolution_at
    from napari_cryohet.core.half_maps import reconstruct_half_maps
    from napari_cryohet.core.postprocess import postprocess

    half_res, truth_res = [], []
    rot_t, sh_t = torch.as_tensor(np.asarray(rotations, np.float64)), torch.as_tensor(np.asarray(shifts_a, np.float64))
    for c, k in enumerate(assignment):
        sel = np.flatnonzero(labels == k) if k is not None else np.zeros(0, np.int64)
        if len(sel) < 20 or len(np.unique(halves[sel])) < 2:
            half_res.append(None)
            truth_res.append(None)
            continue
        sub_ctf = None if ctf is None else {key: v[sel] for key, v in ctf.items()}
        map_a, map_b, full = reconstruct_half_maps(images[sel], rot_t[sel], sh_t[sel], sub_ctf, apix, halves[sel],
                                                   device=device)
        half_res.append(float(postprocess(map_a, map_b, apix=apix).resolution_a))
        f, fsc = fourier_shell_correlation(full.detach().cpu().numpy().astype(np.float64),
                                           np.asarray(volumes_true[c], np.float64))
        truth_res.append(float(resolution_at(f, fsc, apix=apix, threshold=0.5)))
    return half_res, truth_res


def run(args: argparse.Namespace) -> dict:
    import torch
    from sklearn.metrics import adjusted_rand_score

    from napari_cryohet.core.device import select_device
    from napari_cryohet.stages.refine.config import RefineConfig
    from napari_cryohet.stages.refine.run import run_refine
    from napari_cryohet.stages.simulate import assembly_classes
    from napari_cryohet.stages.vae import VAEConfig, train_vae

    torch.manual_seed(0)
    n, d, snr = args.n_particles, args.box, args.snr
    apix = PHYSICAL_BOX_A / d
    t0 = time.perf_counter()
    ds = assembly_classes(n, classes=CLASSES, frames=FRAMES, box_size=d, apix=apix, snr=snr, seed=0)
    truth = ds.ground_truth
    state, volumes_true = np.asarray(truth["state"]), np.asarray(truth["global/volumes"])
    names = [str(s) for s in truth["global/class_names"]]
    n_classes = len(names)
    true_rot = np.asarray(ds.rotations, np.float64)
    true_sh = np.zeros((n, 2)) if ds.shifts_a is None else np.asarray(ds.shifts_a, np.float64)
    ds.rotations, ds.shifts_a = perturb_poses(true_rot, true_sh, apix)
    sim_s = time.perf_counter() - t0
    log(f"simulated {n} particles, {d} px, {apix:.2f} Å/px, SNR {snr}, {n_classes} classes in {sim_s:.1f} s")

    t0 = time.perf_counter()
    vae_config = VAEConfig(epochs=args.epochs, zdim=8, seed=0, **args.vae_extra)
    vae = _cached_vae(args.vae_dir, vae_config, n, d, snr) if args.vae_dir else None
    if vae is None:
        vae = train_vae(ds, vae_config)
        if args.vae_dir:
            vae.save(args.vae_dir)
    vae_s = time.perf_counter() - t0
    log(f"VAE: {args.epochs} epochs in {vae_s:.1f} s")

    nyq = 2.0 * apix
    schedule = tuple(round(f * nyq, 2) for f in (8.0 / 3.0, 2.0, 1.5))
    cfg = RefineConfig(embedding_method=args.embedding, n_components=3, cluster_method=args.cluster,
                       n_clusters=n_classes, n_iterations=args.iterations, resolution_schedule_a=schedule,
                       sigma_angle_deg=ANGLE_RMS_DEG, sigma_shift_a=SHIFT_RMS_PX * apix, refine_poses=True,
                       seed=0, device=args.device, vae_epochs=args.vae_epochs_per_iteration,
                       assignment=args.assignment)
    last = [0.0]

    def progress(frac: float, msg: str) -> None:
        now = time.perf_counter()
        if now - last[0] > 5.0 or frac >= 1.0:
            last[0] = now
            log(f"  refine {100 * frac:5.1f} %  {msg}")

    with tempfile.TemporaryDirectory(prefix="cluster_refine_") as run_dir:
        t0 = time.perf_counter()
        res = run_refine(ds, cfg, embedding=vae.embedding(), progress=progress, run_dir=run_dir)
        refine_s = time.perf_counter() - t0
    log(f"refine: {cfg.n_iterations} iterations in {refine_s:.1f} s")
    log("true classes (rows) over the clusters of the last iteration (columns):\n"
        + confusion(res.labels[-1], state, names))

    # score every state: 0 = start, i = after iteration i
    device = select_device(args.device)
    images = torch.tensor(np.array(ds.get_images(np.arange(n)), dtype=np.float32))
    ctf = None if ds.ctf is None else ds.ctf.to_torch(dtype=torch.float32)
    halves = res.half_sets
    states = [{"labels": res.labels[0], "rotations": ds.rotations, "shifts_a": ds.shifts_a, "history": None}]
    for i, rec in enumerate(res.iterations):
        states.append({"labels": res.labels[i], "rotations": np.asarray(rec["rotations"], np.float64),
                       "shifts_a": np.asarray(rec["shifts_a"], np.float64), "history": res.history[i]})
    iterations = []
    for i, st in enumerate(states):
        labels = np.asarray(st["labels"])
        assignment = match_clusters(labels, state, n_classes)
        half_res, truth_res = class_maps(images, ctf, st["rotations"], st["shifts_a"], labels, halves, apix,
                                         volumes_true, assignment, device)
        ang, sh = pose_errors(st["rotations"], st["shifts_a"], true_rot, true_sh, apix)
        h = st["history"]
        entry = {"iteration": i, "ari": float(adjusted_rand_score(state, labels)),
                 "label_stability": None if h is None else h.get("label_stability"),
                 "angular_error_deg": ang, "shift_error_px": sh, "class_resolution_A": half_res,
                 "class_fsc_truth_A": truth_res, "seconds": 0.0 if h is None else float(h["seconds"]),
                 "cluster_of_class": assignment,
                 "stage_class_resolution_A": None if h is None else [
                     None if k is None else h["clusters"].get(str(k), {}).get("resolution_a") for k in assignment]}
        iterations.append(entry)
        log(f"iteration {i}: ARI {entry['ari']:.3f}, stability {entry['label_stability']}, "
            f"angle {ang:.2f}°, shift {sh:.2f} px, half-map {_fmt(half_res)} Å, FSC-truth {_fmt(truth_res)} Å, "
            f"{entry['seconds']:.1f} s")
    true_assignment = list(range(n_classes))
    ceil_half, ceil_truth = class_maps(images, ctf, true_rot, true_sh, state, halves, apix, volumes_true,
                                       true_assignment, device)
    log(f"ceiling (true labels and poses): half-map {_fmt(ceil_half)} Å, FSC-truth {_fmt(ceil_truth)} Å")
    pose_ceiling = oracle_pose_error(images, ctf, ds.rotations, ds.shifts_a, state, volumes_true, true_rot, true_sh,
                                     apix, cfg, device)
    log(f"pose ceiling (the perturbed poses refined once against the true class volumes, true labels): "
        f"angle {pose_ceiling[0]:.2f}°, shift {pose_ceiling[1]:.2f} px")
    return {"iterations": iterations, "ceiling": {"class_fsc_truth_A": ceil_truth, "class_resolution_A": ceil_half,
                                                  "angular_error_deg": pose_ceiling[0],
                                                  "shift_error_px": pose_ceiling[1]},
            "n_particles": n, "n_classes": n_classes, "class_names": names, "box_size": d, "apix": apix, "snr": snr,
            "settings": {"refine": cfg.to_dict(), "vae_epochs": args.epochs,
                         "perturbation": {"angle_rms_deg": ANGLE_RMS_DEG, "shift_rms_px": SHIFT_RMS_PX}},
            "seconds": {"simulate": sim_s, "vae": vae_s, "refine": refine_s}}


def oracle_pose_error(images, ctf, rotations, shifts_a, state, volumes_true, true_rot, true_sh, apix, cfg,
                      device) -> tuple[float, float]:
    """Mean angular (°) and shift (px) error after refining the starting poses once against the *true* class
    volumes with the true labels, at the loop's last resolution limit and prior: what per-particle local
    refinement can reach at this SNR when the maps and the classes are perfect."""
    import torch

    from napari_cryohet.core.local_refine import refine_poses

    rot = torch.as_tensor(np.asarray(rotations, np.float64)).clone()
    sh = torch.as_tensor(np.asarray(shifts_a, np.float64)).clone()
    for c in range(len(volumes_true)):
        sel = np.flatnonzero(state == c)
        sub = None if ctf is None else {k: v[sel] for k, v in ctf.items()}
        res = refine_poses(images[sel], rot[sel], sh[sel], sub, torch.as_tensor(np.asarray(volumes_true[c])),
                           apix=apix, sigma_angle_deg=cfg.sigma_angle_deg, sigma_shift_a=cfg.sigma_shift_a,
                           max_resolution_a=float(cfg.resolution_schedule_a[-1]), n_angle_steps=cfg.grid_steps,
                           n_shift_steps=cfg.grid_steps, n_steps=cfg.refine_steps, device=device)
        rot[sel], sh[sel] = res.rotations, res.shifts_a
    return pose_errors(rot.numpy(), sh.numpy(), true_rot, true_sh, apix)


def _cached_vae(folder: Path, config, n: int, d: int, snr: float):
    """A VAE saved by an earlier run with ``--vae-dir`` on the same data and settings, or None."""
    from napari_cryohet.stages.vae import VAEResult

    if not (folder / "config.json").is_file():
        return None
    vae = VAEResult.from_folder(folder)
    same = (vae.config.to_dict() == config.to_dict() and len(vae.latents) == n and vae.box_size == d)
    if not same:
        log(f"--vae-dir {folder}: the saved VAE has other settings; training a new one")
        return None
    log(f"VAE loaded from {folder} (trained by an earlier run on the same data; SNR {snr})")
    return vae


def confusion(labels: np.ndarray, state: np.ndarray, names: list[str]) -> str:
    """One line per true class: how its particles spread over the clusters."""
    ids = [int(k) for k in np.unique(labels)]
    lines = [f"{'class':<28}" + "".join(f"{k:>7}" for k in ids)]
    for c, name in enumerate(names):
        row = [int(np.sum((state == c) & (labels == k))) for k in ids]
        lines.append(f"{name:<28}" + "".join(f"{v:>7}" for v in row))
    return "\n".join(lines)


def _fmt(values) -> str:
    return "[" + ", ".join("–" if v is None else f"{v:.1f}" for v in values) + "]"


def targets(result: dict) -> dict:
    """The issue's targets, each ``(met, text)``; ``met`` is None when it cannot be judged at this size."""
    it = result["iterations"]
    first, final = it[0], it[-1]
    ceil = result["ceiling"]["class_fsc_truth_A"]
    out = {}
    out["ari"] = (final["ari"] >= 0.9, f"final ARI {final['ari']:.3f} ≥ 0.9")
    out["angle"] = (final["angular_error_deg"] <= 0.5 * first["angular_error_deg"],
                    f"angular error {first['angular_error_deg']:.2f}° → {final['angular_error_deg']:.2f}° (≤ half; "
                    f"against the true maps {result['ceiling'].get('angular_error_deg', float('nan')):.2f}°)")

    def better(a, b):
        return a is not None and b is not None and a < b

    def within(a, c):
        return a is not None and c is not None and a <= 1.1 * c

    ok_better = all(better(a, b) for a, b in zip(final["class_fsc_truth_A"], first["class_fsc_truth_A"], strict=True))
    ok_ceiling = all(within(a, c) for a, c in zip(final["class_fsc_truth_A"], ceil, strict=True))
    out["fsc_better"] = (ok_better, f"every class FSC-to-truth better than at iteration 0 "
                                    f"({_fmt(first['class_fsc_truth_A'])} → {_fmt(final['class_fsc_truth_A'])} Å)")
    out["fsc_ceiling"] = (ok_ceiling, f"within 10 % of the ceiling {_fmt(ceil)} Å")
    stab = final["label_stability"]
    out["stability"] = (None if stab is None else stab >= 0.95,
                        f"label stability {'n/a' if stab is None else f'{stab:.3f}'} ≥ 0.95")
    secs = max(e["seconds"] for e in it[1:]) if len(it) > 1 else 0.0
    n, d = result["n_particles"], result["box_size"]
    full = n >= FULL_N and d >= FULL_D
    scaled = secs * (FULL_N / n) * (FULL_D / d) ** 2
    out["speed"] = (secs < ITERATION_TARGET_S if full else None,
                    f"slowest iteration {secs:.1f} s" + ("" if full else
                    f" (≈ {scaled:.0f} s scaled to {FULL_N} × {FULL_D} px, linear in N and D²; not judged)")
                    + f" < {ITERATION_TARGET_S:.0f} s")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1200 particles, 32 px, SNR 0.5, 4 epochs, 2 iterations")
    p.add_argument("--json", type=Path)
    p.add_argument("--n-particles", type=int)
    p.add_argument("--box", type=int)
    p.add_argument("--snr", type=float)
    p.add_argument("--epochs", type=int, help="VAE epochs (full: 20, --quick: 4)")
    p.add_argument("--iterations", type=int, help="refine iterations (full: 4, --quick: 2)")
    p.add_argument("--embedding", help="umap (full) or pca (--quick)")
    p.add_argument("--cluster", default="kmeans", help="clustering method of the refine stage (kmeans, gmm, ...)")
    p.add_argument("--device", default="auto")
    p.add_argument("--assignment", default="maps", choices=("embedding", "maps"),
                   help="after the first iteration: re-cluster the embedding, or assign particles to the class maps")
    p.add_argument("--vae-dir", type=Path, help="save the trained VAE here, and reuse it when a later run has the "
                                                 "same data and settings")
    p.add_argument("--vae-epochs-per-iteration", type=int, default=0,
                   help="re-train the VAE this many epochs on the refined poses after each iteration (§4.1.6)")
    args = p.parse_args(argv)
    args.n_particles = args.n_particles or (1200 if args.quick else FULL_N)
    args.box = args.box or (32 if args.quick else FULL_D)
    args.snr = args.snr if args.snr is not None else (0.5 if args.quick else 0.1)
    args.epochs = args.epochs if args.epochs is not None else (4 if args.quick else 20)
    args.iterations = args.iterations or (2 if args.quick else 4)
    args.embedding = args.embedding or ("pca" if args.quick else "umap")
    args.vae_extra = {"batch_size": 32} if args.quick else {}
    t0 = time.perf_counter()
    result = run(args)
    result["seconds"]["total"] = time.perf_counter() - t0
    tg = targets(result)
    result["targets"] = {k: {"met": m, "text": t} for k, (m, t) in tg.items()}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    met = sum(1 for m, _ in tg.values() if m)
    judged = sum(1 for m, _ in tg.values() if m is not None)

    def mark(m):
        return "n/a" if m is None else ("met" if m else "NOT met")

    print(f"cluster_refine N={result['n_particles']} D={result['box_size']} SNR={result['snr']} "
          f"{len(result['iterations']) - 1} iterations, {result['seconds']['total']:.0f} s | "
          + "; ".join(f"{t}: {mark(m)}" for m, t in tg.values()) + f" | {met}/{judged} targets met")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
