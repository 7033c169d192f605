"""The clustering/refinement loop (Silvera Coeff 2025, §4.1), one stage with no external binaries.

Each iteration (§4.1.2–4.1.5):

1. **cluster** the embedded input vectors (:func:`~.clustering.cluster_vectors`; K-Means and
   GMM warm-start from the previous iteration's clusters when ``warm_start``);
2. **align the labels** to the previous iteration (Hungarian assignment on the particle
   overlap, :func:`~napari_cryohet.core.label_alignment.align_labels`): ids stay put,
   merges and splits are reported, noise stays noise; the adjusted Rand index between the
   two iterations is the label stability;
3. **reconstruct** every cluster's two gold-standard half maps from the current poses
   (:func:`~napari_cryohet.core.half_maps.reconstruct_half_maps`; half sets fixed once for
   the run, from ``rlnRandomSubset`` when the ``.star`` has it) and postprocess them
   (masked FSC with phase-randomisation correction, resolution at 0.143, FSC-weighted
   sharpened map: :func:`~napari_cryohet.core.postprocess.postprocess`);
4. **refine the poses** of each cluster locally against its own half maps, half 1 against
   map 1 only (:func:`~napari_cryohet.core.local_refine.refine_half_sets`), up to the
   iteration's resolution (``resolution_schedule_a``: frequency marching); particles in no
   cluster keep their pose.

A checkpoint after every iteration holds the labels, poses and history, so a killed run
resumes at the next iteration and ends as an uninterrupted one would. The loop's re-VAE
step (§4.1.6) and agglomerative clustering of decoded volumes are not in this version.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_cryohet.core.device import select_device
from napari_cryohet.core.half_maps import assign_half_sets, reconstruct_half_maps
from napari_cryohet.core.label_alignment import align_labels
from napari_cryohet.core.local_refine import refine_half_sets
from napari_cryohet.core.postprocess import postprocess
from napari_cryohet.stages._common import CancelToken, ProgressCallback, check_cancel, report
from napari_cryohet.stages.checkpoint import Checkpointer
from napari_cryohet.stages.protocol import Embedding, array_hash, dataset_indices
from napari_cryohet.stages.refine.clustering import CLUSTERERS, cluster_vectors, embed_vectors
from napari_cryohet.stages.refine.config import RefineConfig
from napari_cryohet.stages.refine.result import RefineResult

__all__ = ["run_refine"]


def _initial_labels(labels: np.ndarray) -> np.ndarray:
    """First iteration: ids 0, 1, … by decreasing cluster size (noise stays −1)."""
    ids, counts = np.unique(labels[labels >= 0], return_counts=True)
    order = ids[np.argsort(-counts, kind="stable")]
    lut = {int(old): new for new, old in enumerate(order)}
    return np.array([lut.get(int(v), -1) for v in labels], dtype=np.int64)


def _half_sets(dataset: Any, n: int, seed: int) -> np.ndarray:
    table = getattr(dataset, "table", None)
    existing = None
    if table is not None and "rlnRandomSubset" in getattr(table, "columns", ()):
        existing = table["rlnRandomSubset"].to_numpy()
    return assign_half_sets(n, seed=seed, existing=existing)


def run_refine(dataset: Any, config: RefineConfig, *, embedding: Embedding, progress: ProgressCallback | None = None,
               cancel: CancelToken | None = None, run_dir: str | Path | None = None) -> RefineResult:
    """Run the loop on ``dataset`` (with poses and CTF) clustering ``embedding`` (one vector per particle)."""
    if getattr(dataset, "rotations", None) is None:
        raise ValueError("refine: the dataset has no particle poses; the loop refines existing poses")
    indices = dataset_indices(dataset)
    vectors = embedding.aligned_to(indices)
    n, apix = len(indices), float(dataset.apix)
    device = select_device(config.device)
    report(progress, 0.0, f"embedding {n} particles ({config.embedding_method})")
    embedded = embed_vectors(vectors, config.embedding_method, n_components=config.n_components, seed=config.seed,
                             progress=None, cancel=cancel)
    halves = _half_sets(dataset, n, config.seed)
    # copies: the poses are refined in place, and a loaded dataset's arrays may be read-only
    rotations = torch.tensor(np.array(dataset.rotations, dtype=np.float64))
    shifts = torch.tensor(np.zeros((n, 2)) if dataset.shifts_a is None else np.array(dataset.shifts_a, dtype=np.float64))
    ckpt = None if run_dir is None else Checkpointer(run_dir, config=config, n_particles=n, particle_indices=indices,
                                                     identity={"input vectors": array_hash(vectors)})
    state = None if ckpt is None else ckpt.load(map_location="cpu", progress=progress)
    labels: list[np.ndarray] = []
    history: list[dict[str, Any]] = []
    next_id = 0
    if state is not None:
        labels = [row for row in state["labels"].numpy()]
        rotations, shifts = state["rotations"].to(torch.float64), state["shifts_a"].to(torch.float64)
        history, next_id = list(state["history"]), int(state["next_id"])
    images = torch.tensor(np.array(dataset.get_images(np.arange(n)), dtype=np.float32))
    ctf = None if dataset.ctf is None else dataset.ctf.to_torch(dtype=torch.float32)
    spec = CLUSTERERS[config.cluster_method]
    params = {"n_clusters": int(config.n_clusters)} if "n_clusters" in [p.name for p in spec.params] else {}
    last_maps: dict[int, Any] = {}
    start = len(labels)
    for it in range(start, config.n_iterations):
        t0 = time.perf_counter()
        check_cancel(cancel)
        base = it / config.n_iterations
        report(progress, base, f"iteration {it + 1}/{config.n_iterations}: clustering ({config.cluster_method})")
        previous = labels[-1] if labels else None
        warm = previous if (config.warm_start and spec.warm_start and previous is not None
                            and len(np.unique(previous[previous >= 0])) == params.get("n_clusters")) else None
        clustered = cluster_vectors(embedded, config.cluster_method, seed=config.seed, init_labels=warm, **params)
        record: dict[str, Any] = {"iteration": it + 1}
        if previous is None:
            current = _initial_labels(clustered.labels)
            next_id = int(current.max()) + 1 if (current >= 0).any() else 0
            record.update(label_stability=None, merges=[], splits=[])
        else:
            aligned = align_labels(previous, clustered.labels, next_id=next_id)
            current, next_id = aligned.labels, int(aligned.next_id)
            record.update(label_stability=float(aligned.stability),
                          merges=[{"into": m.current_id, "from": list(m.previous_ids)} for m in aligned.merges],
                          splits=[{"from": s.previous_id, "into": list(s.current_ids)} for s in aligned.splits])
        resolution = float(config.resolution_schedule_a[min(it, len(config.resolution_schedule_a) - 1)])
        ids = [int(k) for k in np.unique(current) if k >= 0]
        clusters: dict[str, Any] = {}
        last_maps = {}
        for j, k in enumerate(ids):
            check_cancel(cancel)
            sel = np.flatnonzero(current == k)
            if len(sel) < config.min_cluster_size:
                clusters[str(k)] = {"particles": int(len(sel)), "resolution_a": None, "note": "too small"}
                continue
            frac = base + (j + 0.5) / (len(ids) * config.n_iterations)
            report(progress, frac, f"iteration {it + 1}: cluster {k} ({len(sel)} particles): half maps")
            sub_ctf = None if ctf is None else {key: v[sel] for key, v in ctf.items()}
            map_a, map_b, _ = reconstruct_half_maps(images[sel], rotations[sel], shifts[sel], sub_ctf, apix,
                                                    halves[sel], device=device)
            post = postprocess(map_a, map_b, apix=apix)
            entry = {"particles": int(len(sel)), "resolution_a": float(post.resolution_a)}
            if config.refine_poses and (config.sigma_angle_deg > 0 or config.sigma_shift_a > 0):
                report(progress, frac, f"iteration {it + 1}: cluster {k}: refining poses to {resolution:g} Å")
                refined = refine_half_sets(images[sel], rotations[sel], shifts[sel], sub_ctf, halves[sel],
                                           map_a, map_b, apix=apix, sigma_angle_deg=config.sigma_angle_deg,
                                           sigma_shift_a=config.sigma_shift_a, max_resolution_a=resolution,
                                           n_angle_steps=config.grid_steps, n_shift_steps=config.grid_steps,
                                           n_steps=config.refine_steps,
                                           device=device, cancel=lambda: check_cancel(cancel))
                rotations[sel] = refined.rotations.to(torch.float64)
                shifts[sel] = refined.shifts_a.to(torch.float64)
                entry.update(mean_angle_change_deg=float(refined.angle_moved_deg.mean()),
                             mean_shift_change_a=float(refined.shift_moved_a.mean()))
            clusters[str(k)] = entry
            last_maps[k] = post
        labels.append(current)
        record.update(n_clusters=len(ids), clusters=clusters, seconds=time.perf_counter() - t0)
        history.append(record)
        if ckpt is not None:
            ckpt.save({"epoch": it + 1, "labels": torch.as_tensor(np.stack(labels)), "rotations": rotations,
                       "shifts_a": shifts, "history": history, "next_id": next_id})
    if not last_maps or config.refine_poses:
        # the class maps of the result come from the final poses (the loop's maps were made
        # before the last refinement), and after a resume at the end from the saved poses
        report(progress, 1.0, "class maps from the refined poses")
        last_maps = _final_maps(images, rotations, shifts, ctf, halves, labels[-1], apix, config, device)
    report(progress, 1.0, f"{config.n_iterations} iterations, {len(last_maps)} class maps")
    return _result(indices, labels, halves, rotations, shifts, last_maps, apix, history, config)


def _final_maps(images, rotations, shifts, ctf, halves, current, apix, config, device) -> dict[int, Any]:
    out = {}
    for k in (int(k) for k in np.unique(current) if k >= 0):
        sel = np.flatnonzero(current == k)
        if len(sel) < config.min_cluster_size:
            continue
        sub_ctf = None if ctf is None else {key: v[sel] for key, v in ctf.items()}
        map_a, map_b, _ = reconstruct_half_maps(images[sel], rotations[sel], shifts[sel], sub_ctf, apix, halves[sel],
                                                device=device)
        out[k] = postprocess(map_a, map_b, apix=apix)
    return out


def _result(indices, labels, halves, rotations, shifts, maps, apix, history, config) -> RefineResult:
    ids = sorted(maps)
    d = int(np.asarray(next(iter(maps.values())).map).shape[-1]) if maps else 1
    stack = np.stack([np.asarray(maps[k].map, dtype=np.float32) for k in ids]) if ids else np.zeros((0, d, d, d))
    curves = [maps[k].curves for k in ids]
    fsc = np.stack([np.asarray(c.corrected) for c in curves]) if curves else np.zeros((0, 0))
    freq = np.asarray(curves[0].freq_per_px) / apix if curves else np.zeros(0)
    return RefineResult(indices=indices, labels=np.stack(labels), half_sets=halves, rotations=rotations.numpy(),
                        shifts_a=shifts.numpy(), cluster_ids=ids, maps=stack, fsc=fsc, fsc_freq=freq, apix=apix,
                        history=history, config=config)
