"""Scale-out benchmark: VAE epoch time and throughput on 1 and 2 processes (issue 18, docs/scale-out.md).

Trains the structural-basis VAE on simulated AdK particles (``adk_chain``, poses and CTF)
in one process and under ``torchrun --nproc-per-node 2`` (gloo on the CPU, one thread per
process; NCCL with one GPU per process when ``--device cuda`` and GPUs are present), with
the same global batch, and reports seconds per epoch (the mean of the epochs after the
first, which pays for start-up), particles per second, the parallel efficiency
``t₁ / (2·t₂)`` and whether both runs end with the same weights (largest difference ≤ 1e-4
of each tensor's largest value).

    python benchmarks/scale_out.py [--quick] [--json PATH] [--device cpu|cuda] [--processes 1,2]

``--quick`` (< 60 s): 512 particles at 48 px, 3 epochs; the full run: 2048 at 64 px, 3 epochs.
JSON keys: ``runs`` (list of ``{processes, device, seconds_per_epoch, particles_per_s}``),
``efficiency_2``, ``same_result``, ``max_weight_difference``, ``settings``. The summary line is printed last.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

QUICK = {"n_particles": 512, "box_size": 48, "epochs": 3, "batch_size": 64}
FULL = {"n_particles": 2048, "box_size": 64, "epochs": 3, "batch_size": 64}
MODEL = {"zdim": 4, "n_basis": 8, "enc_dim": 128, "dec_dim": 32, "seed": 0}


def worker(out: Path, settings: dict, device: str) -> None:
    """One process of a timed run (also the only one): rank 0 writes weights and timings to ``out``."""
    from napari_cryohet.stages import distributed
    from napari_cryohet.stages.simulate import adk_chain
    from napari_cryohet.stages.vae import VAEConfig, train_vae

    torch.set_num_threads(1)
    ctx = distributed.init_from_env(device)
    try:
        ds = adk_chain(settings["n_particles"], box_size=settings["box_size"], apix=128.0 / settings["box_size"],
                       snr=0.1, seed=1)
        cfg = VAEConfig(epochs=settings["epochs"], batch_size=settings["batch_size"], device=device, **MODEL)
        tic = time.perf_counter()
        res = train_vae(ds, cfg)
        total = time.perf_counter() - tic
        if ctx.is_main:
            torch.save({"state": {k: v.cpu() for k, v in res.model.state_dict().items()},
                        "seconds": [h["seconds"] for h in res.history], "total_s": total,
                        "world_size": ctx.world_size}, out)
    finally:
        distributed.shutdown()


def timed_run(processes: int, settings: dict, device: str, folder: Path) -> dict:
    out = folder / f"p{processes}.pt"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    launcher = [] if processes == 1 else ["-m", "torch.distributed.run", "--standalone",
                                          f"--nproc-per-node={processes}"]
    cmd = [sys.executable, *launcher, __file__, "--worker", str(out), "--settings", json.dumps(settings),
           "--device", device]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"run on {processes} processes failed:\n{done.stderr[-3000:]}")
    blob = torch.load(out, weights_only=True)
    epochs = blob["seconds"][1:] or blob["seconds"]
    per_epoch = sum(epochs) / len(epochs)
    return {"processes": processes, "device": device, "seconds_per_epoch": per_epoch,
            "particles_per_s": settings["n_particles"] / per_epoch, "_state": blob["state"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run (< 60 s), same keys")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the figures there")
    parser.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, one GPU per process)")
    parser.add_argument("--processes", default="1,2", help="process counts, comma-separated (default 1,2)")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        worker(args.worker, json.loads(args.settings), args.device)
        return 0
    settings = QUICK if args.quick else FULL
    counts = [int(p) for p in args.processes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        runs = [timed_run(p, settings, args.device, Path(tmp)) for p in counts]
    by_count = {r["processes"]: r for r in runs}
    worst = 0.0
    for r in runs[1:]:
        for key, ref in runs[0]["_state"].items():
            diff = float((r["_state"][key].double() - ref.double()).abs().max())
            worst = max(worst, diff / max(float(ref.double().abs().max()), 1e-12))
    same = worst <= 1e-4
    efficiency = None
    if 1 in by_count and 2 in by_count:
        efficiency = by_count[1]["seconds_per_epoch"] / (2 * by_count[2]["seconds_per_epoch"])
    for r in runs:
        r.pop("_state")
        print(f"{r['processes']} process(es) on {r['device']}: {r['seconds_per_epoch']:.3f} s/epoch, "
              f"{r['particles_per_s']:.0f} particles/s")
    report = {"runs": runs, "efficiency_2": efficiency, "same_result": bool(same), "max_weight_difference": worst,
              "settings": {**settings, **MODEL, "threads_per_process": 1}}
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    eff = "n/a" if efficiency is None else f"{efficiency:.2f}"
    print(f"scale_out: {settings['n_particles']} particles at {settings['box_size']} px, "
          + ", ".join(f"{r['processes']} proc {r['particles_per_s']:.0f} particles/s" for r in runs)
          + f"; efficiency(2) {eff}; same result {same} (max weight difference {worst:.1e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
