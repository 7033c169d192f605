"""Benchmark of the spectral stage: kNN graph + Laplacian eigenvectors at 10^4-10^6 points.

Data: a noisy flat torus (circle radii 1 and 0.6) isometrically embedded in q = 8 dims,
the kind of manifold a conformational landscape with two coupled motions gives. Per N:
symmetric self-tuning kNN graph (k = 15) and K = 10 eigenvectors with the solver chosen by
``method="auto"`` (ARPACK on the normalised adjacency up to 5·10^4 points, the multilevel
Chebyshev solver beyond). Each N runs in its own subprocess so peak RSS (``ru_maxrss`` of
that process) is not contaminated by the others. Peer, side by side on the same data:
``sklearn.manifold.SpectralEmbedding(affinity="nearest_neighbors", n_neighbors=15)``.
Also the issue-4 acceptance figure: R² of the box-arms parameters from 20 eigenvectors
(``box_arms_r2``, seed 0) with the acceptance setting ``stages.spectral.BOX_ARMS_ACCEPTANCE`` (5 Å low-pass, PCA
30, tangent-space denoising of dimension 6, self-tuning kNN k = 8, density-normalised graph
α = 1), the same on other datasets (``box_arms_r2_seeds``: seeds 1-5; 1-3 were used while
choosing the setting, 4-5 were not), the paper's plain graph on the same densities
(``box_arms_r2_paper_graph``: PCA 30, k = 30) and the acceptance setting on densities in
the anchor frame of eq. 3.1 (``box_arms_r2_anchor_frame``).

    python benchmarks/spectral.py [--quick] [--json PATH]

--quick: N = 10^3, 10^4 (peer at 10^4, box-arms with 2000 particles, seeds 1-2), < 60 s on
2 cores.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

K_NEIGHBOURS, N_EIGENVECTORS, Q_DIMS = 15, 10, 8


def torus_points(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(n, 8)`` noisy torus and its ``(n, 2)`` angles."""
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(0, 2 * np.pi, (2, n))
    x = np.c_[np.cos(a), np.sin(a), 0.6 * np.cos(b), 0.6 * np.sin(b)]
    basis = np.linalg.qr(rng.standard_normal((Q_DIMS, Q_DIMS)))[0][:4]
    return x @ basis + 0.01 * rng.standard_normal((n, Q_DIMS)), np.c_[a, b]


def _angle_r2(phi: np.ndarray, angles: np.ndarray) -> float:
    """R² of cos/sin of the first torus angle from eigenvectors 1-2 (a quality check)."""
    target = np.c_[np.cos(angles[:, 0]), np.sin(angles[:, 0])]
    design = np.c_[np.ones(len(phi)), phi[:, 1:3]]
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    return float(np.min(1 - ((target - design @ coef) ** 2).mean(0) / target.var(0)))


def child(n: int, which: str, device: str | None = None) -> dict:
    x, angles = torus_points(n)
    on_cuda = False
    if which == "ours" and device:  # torch loaded before the clock starts (the stage has it); not for the peer
        from napari_cryohet.core.device import select_device

        on_cuda = select_device(device).type == "cuda"
    t0 = time.perf_counter()
    out: dict = {"n": n}
    if which == "ours":
        from napari_cryohet.core.graph import EXACT_KNN_MAX_POINTS, build_knn_graph
        from napari_cryohet.core.laplacian import laplacian_eigenmaps

        w = build_knn_graph(x, k=K_NEIGHBOURS, weights="self_tuning", n_jobs=2, device=device)
        t1 = time.perf_counter()
        emb = laplacian_eigenmaps(w, N_EIGENVECTORS, method="auto", device=device)
        phi = emb.eigenvectors
        out.update(knn_seconds=t1 - t0, eigen_seconds=time.perf_counter() - t1, solver=emb.method,
                   knn_method="torch on cuda" if on_cuda else "exact" if n <= EXACT_KNN_MAX_POINTS else "nndescent",
                   device=None if device is None else "cuda" if on_cuda else "cpu",
                   lambda_1=float(emb.eigenvalues[1]),
                   **{k: v for k, v in emb.info.items() if k in ("block_matvecs", "max_residual")})
    else:
        from sklearn.manifold import SpectralEmbedding

        phi = SpectralEmbedding(n_components=N_EIGENVECTORS, affinity="nearest_neighbors",
                                n_neighbors=K_NEIGHBOURS, random_state=0, n_jobs=2).fit_transform(x)
        phi = np.c_[np.ones(n), phi]  # sklearn drops the trivial eigenvector (drop_first=True)
    out["seconds"] = time.perf_counter() - t0
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    out["angle_r2"] = _angle_r2(phi, angles)
    return out


def run_child(n: int, which: str, timeout: float, device: str | None = None) -> dict | None:
    cmd = [sys.executable, __file__, "--child", str(n), "--which", which] + (["--device", device] if device else [])
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return None
    except subprocess.CalledProcessError as err:
        print(err.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


BOX_ARMS_PAPER_GRAPH = dict(representation="lowres_volumes", n_components=30, graph="knn",
                            weights="self_tuning", k=30, alpha=0.0, n_eigenvectors=20, seed=0)


def _box_arms_best() -> dict:
    from napari_cryohet.stages.spectral import BOX_ARMS_ACCEPTANCE

    return dict(BOX_ARMS_ACCEPTANCE)


def box_arms_r2(n_particles: int, seeds: list[int]) -> dict:
    """R² of (arm1, arm2, box) from 20 eigenvectors: acceptance setting, other seeds, the
    paper's graph, and the anchor frame."""
    from napari_cryohet.stages.simulate import box_arms_2d
    from napari_cryohet.stages.spectral import SpectralConfig, regression_r2, run_spectral

    def r2(ds, cfg):
        return [float(v) for v in regression_r2(run_spectral(ds, SpectralConfig(**cfg)).eigenvectors,
                                                ds.state_params)]

    best = _box_arms_best()
    ds = box_arms_2d(n_particles, seed=0)
    t = time.perf_counter()
    out = {"best": r2(ds, best), "best_seconds": time.perf_counter() - t,
           "paper_graph": r2(ds, BOX_ARMS_PAPER_GRAPH),
           "anchor_frame": r2(box_arms_2d(n_particles, seed=0, low_dim_frame="anchor"), best),
           "seeds": {str(s): r2(box_arms_2d(n_particles, seed=s), best) for s in seeds}}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default=None)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--which", default="ours", help=argparse.SUPPRESS)
    parser.add_argument("--peer-timeout", type=float, default=900.0)
    parser.add_argument("--device", default="auto",
                        help="torch device of our multilevel eigensolver and (on CUDA) kNN search, as the "
                             "stage's SpectralConfig.device; 'none': SciPy/scikit-learn only, no torch")
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.which, None if args.device == "none" else args.device)))
        return
    sizes = [10**3, 10**4] if args.quick else [10**4, 10**5, 10**6]
    peer_sizes = [10**4] if args.quick else [10**4, 10**5]
    runs, peers = [], []
    for n in sizes:
        r = run_child(n, "ours", timeout=1800, device=args.device)  # "none" is passed through
        runs.append(r if r is not None else {"n": n, "seconds": None, "peak_rss_mb": None})
        print(f"ours  n={n:>8}: {runs[-1]}", file=sys.stderr)
    for n in peer_sizes:
        r = run_child(n, "sklearn", timeout=args.peer_timeout)
        peers.append(r if r is not None else {"n": n, "seconds": None, "peak_rss_mb": None, "timeout_s": args.peer_timeout})
        print(f"peer  n={n:>8}: {peers[-1]}", file=sys.stderr)
    ratios = {}
    for p in peers:
        mine = next((r for r in runs if r["n"] == p["n"]), None)
        if mine and mine.get("seconds") and p.get("seconds"):
            ratios[str(p["n"])] = p["seconds"] / mine["seconds"]
    n_box = 2000 if args.quick else 4000
    t = time.perf_counter()
    box = box_arms_r2(n_box, [1, 2] if args.quick else [1, 2, 3, 4, 5])
    r2 = box["best"]
    result = {
        "runs": runs,
        "box_arms_r2": r2,
        "box_arms_r2_seeds": box["seeds"],
        "box_arms_r2_paper_graph": box["paper_graph"],
        "box_arms_r2_anchor_frame": box["anchor_frame"],
        "box_arms_settings": {"box_arms_r2": _box_arms_best(), "box_arms_r2_paper_graph": BOX_ARMS_PAPER_GRAPH},
        "box_arms_n": n_box,
        "box_arms_best_seconds": box["best_seconds"],
        "box_arms_seconds": time.perf_counter() - t,
        "peer": "sklearn.manifold.SpectralEmbedding(affinity='nearest_neighbors', n_neighbors=15)",
        "peer_runs": peers,
        "peer_over_ours_seconds": ratios,
        "params": {"q": Q_DIMS, "k": K_NEIGHBOURS, "K": N_EIGENVECTORS, "weights": "self_tuning",
                   "device": args.device},
    }
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    summary = ", ".join(f"n={r['n']}: {r['seconds'] and round(r['seconds'], 1)} s / "
                        f"{r['peak_rss_mb'] and round(r['peak_rss_mb'])} MB" for r in runs)
    print(f"spectral: {summary}; peer/ours time {json.dumps({k: round(v, 2) for k, v in ratios.items()})}; "
          f"box_arms_r2 {[round(v, 3) for v in r2]} (N={n_box}; arm2 on seeds "
          f"{ {k: round(v[1], 3) for k, v in box['seeds'].items()} }; paper graph "
          f"{[round(v, 3) for v in box['paper_graph']]}; anchor frame {[round(v, 3) for v in box['anchor_frame']]})")


if __name__ == "__main__":
    main()
