"""Structural-basis VAE (ours, seed 004) vs cryoDRGN train_vae on the same simulated data.

Dataset: ``stages.simulate.adk_volumes`` — 10 discrete AdK conformations, 64 px, SNR 0.1,
defocus 0.2–2 µm (seed 004 §5.1 style), ≥ 10 000 particles; written once as .mrcs + star +
cryoDRGN pose/CTF pickles. Each tool trains for the same number of epochs (zdim 8) in a
subprocess of its own, so its peak memory is its own:

- ``ours``: :func:`napari_cryohet.stages.vae.train_vae` (K = 16; checkpoint, per-epoch latents and
  the result written to a run directory, as in a workspace run);
- ``cryodrgn_small``: ``cryodrgn train_vae --enc-dim 256 --enc-layers 3 --dec-dim 256
  --dec-layers 3`` (the paper's "small"), from ``.venv-cryodrgn`` (``make cryodrgn-venv``);
- ``cryodrgn_default``: ``cryodrgn train_vae`` with its default architecture.

Per tool: ``seconds_per_epoch`` (training wall time / epochs), ``seconds_per_volume``
(decoding 30 volumes of D³, wall time / 30, model loading included for cryoDRGN's
``eval_vol``), ``peak_rss_mb``, ``fsc_mean_auc`` (mean over shells up to Nyquist of the FSC
to the ground-truth volume, averaged over 30 particles, 3 per conformation, as in §5.1),
``resolution_A`` (where that mean FSC crosses 0.5) and ``knn_accuracy`` (5-fold k-NN, k = 10,
accuracy of the true conformation from the latents).

Usage::

    python benchmarks/vae_vs_cryodrgn.py [--quick] [--json out.json] [--epochs E] [--n-particles N]

Default: 3 epochs (what fits 45 minutes on 2 cores with cryoDRGN-small). cryoDRGN's default
architecture (1024-wide, ~16x the decoder cost: ~30 min per epoch of 10 000 64-px images on 2
cores, measured) is trained on the whole dataset only with ``--with-cryodrgn-default``; otherwise it runs
one epoch on ``--default-subset`` particles (256) and reports its speed and memory (per-epoch
time from cryoDRGN's own epoch timer, scaled to the dataset) with the quality entries ``null``.
``--quick``: 300 particles, 32 px, 1 epoch, FSC over 10 particles (1 per conformation) (cryoDRGN's default architecture skipped);
entries of a tool that is not installed are ``null``. The last line printed is a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CRYODRGN = ROOT / ".venv-cryodrgn" / "bin" / "cryodrgn"
KEYS = ("seconds_per_epoch", "seconds_per_volume", "peak_rss_mb", "fsc_mean_auc", "resolution_A", "knn_accuracy")


PER_CLASS = 3  # particles per conformation for the FSC (§5.1: 30 = 3 × 10); --quick: 1


def _picks(states: np.ndarray, per_class: int | None = None) -> np.ndarray:
    per_class = per_class or PER_CLASS
    return np.concatenate([np.flatnonzero(states == c)[:per_class] for c in np.unique(states)])


def _scores(volumes: np.ndarray, picks: np.ndarray, states: np.ndarray, truth: np.ndarray, apix: float,
            latents: np.ndarray) -> dict:
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    from napari_cryohet.core.fsc import fourier_shell_correlation, resolution_at

    curves = []
    for vol, i in zip(volumes, picks, strict=True):
        f, fsc = fourier_shell_correlation(np.asarray(vol, np.float64), truth[states[i]])
        curves.append(fsc)
    mean = np.mean(curves, 0)
    knn = cross_val_score(KNeighborsClassifier(n_neighbors=10), latents, states, cv=5).mean()
    return {"fsc_mean_auc": float(mean[1:].mean()), "resolution_A": float(resolution_at(f, mean, apix=apix,
                                                                                          threshold=0.5)),
            "knn_accuracy": float(knn), "fsc_curve": [round(float(v), 4) for v in mean]}


def _peak_rss_mb(children: bool) -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    return r.ru_maxrss / 1024.0  # Linux: kB


# ----------------------------------------------------------------------------- ours (child)

def _ours_child(spec: dict) -> dict:
    import torch

    from napari_cryohet.io.load_particles import load_dataset
    from napari_cryohet.stages.vae import VAEConfig, train_vae

    torch.manual_seed(0)
    ds = load_dataset(spec["star"])
    truth = np.load(spec["truth"])
    states, volumes_true = truth["state"], truth["global/volumes"]
    cfg = VAEConfig(epochs=spec["epochs"], seed=0)  # shipped defaults
    run_dir = Path(spec["workspace"])
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run (a reused --workdir holds the last one's checkpoint)
    t0 = time.perf_counter()
    res = train_vae(ds, cfg, run_dir=run_dir)  # checkpoint and per-epoch latents written as in a workspace run
    res.save(run_dir)
    train_s = time.perf_counter() - t0
    picks = _picks(states, spec.get("per_class", 3))
    res.decode(res.latents[picks[:2]])  # warm-up
    t0 = time.perf_counter()
    vols = res.decode(res.latents[picks], batch=1)
    per_volume = (time.perf_counter() - t0) / len(picks)
    out = {"seconds_per_epoch": float(np.mean([h["seconds"] for h in res.history])),
           "train_seconds": train_s, "seconds_per_volume": per_volume}
    out.update(_scores(vols, picks, states, volumes_true, ds.apix, res.latents))
    out["peak_rss_mb"] = _peak_rss_mb(children=False)
    return out


def run_ours(spec: dict) -> dict:
    spec_path = Path(spec["workdir"]) / "ours_spec.json"
    spec_path.write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, __file__, "--_ours-child", str(spec_path)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ours failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- cryoDRGN

def _timed(cmd: list[str], log: Path) -> tuple[float, float]:
    """Run ``cmd`` in a wrapper process that reports the child's peak RSS; (seconds, MB)."""
    wrapper = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
               "r = subprocess.run(sys.argv[1:]).returncode; dt = time.perf_counter() - t; "
               "print(dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0); sys.exit(r)")
    with open(log, "a") as fh:
        proc = subprocess.run([sys.executable, "-c", wrapper, *cmd], stdout=subprocess.PIPE, stderr=fh, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed, see {log}")
    seconds, mb = proc.stdout.strip().splitlines()[-1].split()
    return float(seconds), float(mb)


def _epoch_seconds_from_log(run_log: Path) -> list[float]:
    """cryoDRGN's own per-epoch wall times (``Finished in H:MM:SS.ffffff`` lines of run.log)."""
    import re

    out = []
    for h, m, sec in re.findall(r"Epoch: \d+ .*Finished in (\d+):(\d+):([\d.]+)", run_log.read_text()):
        out.append(3600 * int(h) + 60 * int(m) + float(sec))
    return out


def run_cryodrgn(spec: dict, name: str, arch: list[str], *, timing_subset: int | None = None) -> dict | None:
    """Train and evaluate cryoDRGN; with ``timing_subset`` train one epoch on that many particles
    only and report its speed and memory, per-epoch time scaled to the whole dataset by
    cryoDRGN's own epoch timer (quality entries ``None``: the model never saw the data)."""
    import mrcfile

    if not CRYODRGN.exists():
        return None
    work = Path(spec["workdir"]) / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log = work / "log.txt"
    epochs = spec["epochs"]
    subset = []
    if timing_subset is not None:
        import pickle

        ind = work / "ind.pkl"
        with open(ind, "wb") as fh:
            pickle.dump(np.arange(int(timing_subset)), fh)
        subset, epochs = ["--ind", str(ind)], 1
    cmd = [str(CRYODRGN), "train_vae", spec["stack"], "--poses", spec["poses"], "--ctf", spec["ctf"], "--zdim", "8",
           "-n", str(epochs), "-o", str(work / "out"), "--no-analysis", "--seed", "0", *subset, *arch]
    train_s, train_mb = _timed(cmd, log)
    truth = np.load(spec["truth"])
    states, volumes_true = truth["state"], truth["global/volumes"]
    out_dir = work / "out"
    z_files = sorted(out_dir.glob("z.*.pkl"), key=lambda p: int(p.stem.split(".")[1]) if p.stem.split(".")[1].isdigit()
                     else -1)
    z_path = out_dir / "z.pkl" if (out_dir / "z.pkl").exists() else z_files[-1]
    weights = out_dir / "weights.pkl" if (out_dir / "weights.pkl").exists() else sorted(
        out_dir.glob("weights.*.pkl"), key=lambda p: int(p.stem.split(".")[1]))[-1]
    import pickle

    with open(z_path, "rb") as fh:
        latents = np.asarray(pickle.load(fh))
    if timing_subset is not None:  # one volume per conformation: ~half a minute each at 64 px
        states = states[:timing_subset]
    picks = _picks(states, 1 if timing_subset is not None else spec.get("per_class", 3))
    zfile = work / "picks_z.txt"
    np.savetxt(zfile, latents[picks])
    vol_dir = work / "vols"
    cmd = [str(CRYODRGN), "eval_vol", str(weights), "--config", str(out_dir / "config.yaml"), "--zfile", str(zfile),
           "-o", str(vol_dir), "--Apix", str(spec["apix"])]
    decode_s, decode_mb = _timed(cmd, log)
    files = sorted(vol_dir.glob("*.mrc"))
    vols = [mrcfile.read(f) for f in files]
    result = {"seconds_per_epoch": train_s / epochs, "train_seconds": train_s,
              "seconds_per_volume": decode_s / len(picks), "peak_rss_mb": max(train_mb, decode_mb)}
    if timing_subset is not None:
        epoch_s = _epoch_seconds_from_log(out_dir / "run.log")
        n_total = len(truth["state"])
        result.update({"seconds_per_epoch": (epoch_s[-1] if epoch_s else train_s) * n_total / timing_subset,
                       "timing_subset": int(timing_subset), "fsc_mean_auc": None, "resolution_A": None,
                       "knn_accuracy": None,
                       "note": f"speed only: one epoch on {timing_subset} particles, scaled to {n_total}"})
        return result
    result.update(_scores(np.stack(vols), picks, states, volumes_true, spec["apix"], latents))
    return result


# ----------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", type=Path)
    p.add_argument("--epochs", type=int)
    p.add_argument("--n-particles", type=int)
    p.add_argument("--box", type=int)
    p.add_argument("--with-cryodrgn-default", action="store_true",
                   help="also train cryoDRGN's default architecture on all particles (~30 min per epoch at 64 px on 2 cores)")
    p.add_argument("--default-subset", type=int, default=256,
                   help="particles of the speed-only run of cryoDRGN's default architecture (default 256)")
    p.add_argument("--workdir", type=Path)
    p.add_argument("--_ours-child", dest="ours_child", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.ours_child is not None:
        print(json.dumps(_ours_child(json.loads(args.ours_child.read_text()))))
        return 0

    n = args.n_particles or (300 if args.quick else 10000)
    box = args.box or (32 if args.quick else 64)
    # 3 epochs (--quick: 1): cryoDRGN-small needs ~4 min per epoch of 10 000 64-px images on
    # an idle 2-core machine (measured), so three epochs of both tools fit the 45-minute budget.
    epochs = args.epochs or (1 if args.quick else 3)
    apix = 1.5 * 64 / box  # the same physical box (96 Å) at every size
    work = args.workdir or Path(tempfile.mkdtemp(prefix="vae_bench_"))
    work.mkdir(parents=True, exist_ok=True)

    from napari_cryohet.io.write_particles import save_dataset
    from napari_cryohet.stages.simulate import adk_volumes

    t0 = time.perf_counter()
    ds = adk_volumes(n, n_conformations=10, box_size=box, apix=apix, snr=0.1, seed=0)
    paths = save_dataset(work / "data", ds, name="adk")
    print(f"simulated {n} particles ({box} px) in {time.perf_counter() - t0:.0f} s → {work}", file=sys.stderr)
    spec = {"star": str(paths["star"]), "stack": str(paths["stack"]), "poses": str(paths["poses"]),
            "ctf": str(paths["ctf"]), "truth": str(paths["truth"]), "epochs": epochs, "apix": apix,
            "workdir": str(work), "workspace": str(work / "ours"), "per_class": 1 if args.quick else 3}
    results = {"n_particles": n, "epochs": epochs, "box_size": box, "apix": apix}
    results["ours"] = run_ours(spec)
    print(f"ours: {json.dumps({k: results['ours'][k] for k in KEYS})}", file=sys.stderr)
    small = ["--enc-dim", "256", "--enc-layers", "3", "--dec-dim", "256", "--dec-layers", "3"]
    results["cryodrgn_small"] = run_cryodrgn(spec, "cryodrgn_small", small)
    print(f"cryodrgn_small: {results['cryodrgn_small'] and {k: results['cryodrgn_small'][k] for k in KEYS}}",
          file=sys.stderr)
    if args.quick:
        results["cryodrgn_default"] = None
    elif args.with_cryodrgn_default:
        results["cryodrgn_default"] = run_cryodrgn(spec, "cryodrgn_default", [])
    else:  # ~30 min per epoch on 2 cores: time it on a subset (speed, memory), no quality figures
        results["cryodrgn_default"] = run_cryodrgn(spec, "cryodrgn_default", [], timing_subset=args.default_subset)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)

    def fmt(name):
        r = results[name]
        if r is None:
            return f"{name}=n/a"
        if r.get("fsc_mean_auc") is None:
            return (f"{name} (speed only, {r.get('timing_subset')} particles): {r['seconds_per_epoch']:.0f} s/epoch "
                    f"(scaled), {1000 * r['seconds_per_volume']:.0f} ms/vol, {r['peak_rss_mb']:.0f} MB")
        return (f"{name}: {r['seconds_per_epoch']:.1f} s/epoch, {1000 * r['seconds_per_volume']:.0f} ms/vol, "
                f"{r['peak_rss_mb']:.0f} MB, FSC-AUC {r['fsc_mean_auc']:.3f}, FSC0.5 {r['resolution_A']:.1f} Å, "
                f"kNN {r['knn_accuracy']:.3f}")

    speed = ""
    if results["cryodrgn_small"]:
        s = results["cryodrgn_small"]
        o = results["ours"]
        speed = (f" | speed-up vs small: {s['seconds_per_epoch'] / o['seconds_per_epoch']:.1f}x/epoch, "
                 f"{s['seconds_per_volume'] / o['seconds_per_volume']:.0f}x/volume")
    print(f"vae_vs_cryodrgn N={n} D={box} epochs={epochs} | " + " | ".join(
        fmt(k) for k in ("ours", "cryodrgn_small", "cryodrgn_default")) + speed)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
