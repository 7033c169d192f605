"""The clustering/refinement loop (Silvera Coeff 2025, §4.1), one stage with no external binaries.

Each iteration (§4.1.2–4.1.5):

1. **cluster** the embedded input vectors (:func:`~.clustering.cluster_vectors`; K-Means and
   GMM warm-start from the previous iteration's clusters when ``warm_start``; ``"landscape"``
   clusters volumes decoded from the raw latents with the input VAE run's decoder);
2. **align the labels** to the previous iteration (Hungarian assignment on the particle
   overlap, :func:`~napari_cryohet.core.label_alignment.align_labels`): ids stay put,
   merges and splits are reported, noise stays noise; the adjusted Rand index between the
   two iterations is the label stability;
3. **reconstruct** every cluster's two gold-standard half maps from the current poses
   (:func:`~napari_cryohet.core.half_maps.reconstruct_half_maps`; half sets fixed once for
   the run, from ``rlnRandomSubset`` when the ``.star`` has it; GMM memberships as
   per-particle weights when ``soft_weights``) and postprocess them (masked FSC with
   phase-randomisation correction, resolution at 0.143, FSC-weighted sharpened map:
   :func:`~napari_cryohet.core.postprocess.postprocess`);
4. **refine the poses** of each cluster locally against its own FSC-weighted half maps, half 1
   against map 1 only (:func:`~napari_cryohet.core.local_refine.refine_half_sets`), up to the
   iteration's resolution (``resolution_schedule_a``: frequency marching); the search covers
   ±3σ around the current pose, the Gaussian prior stays centred on the poses the run began
   with (so the iterations converge to one maximum a posteriori pose rather than re-centring
   the prior on each iteration's noisy estimate); particles in no cluster keep their pose;
5. optionally (``vae_epochs`` > 0, a VAE run as input) **re-train the VAE** for a few
   warm-started epochs on the refined poses and cluster its new latents next time (§4.1.6;
   :func:`~napari_cryohet.stages.vae.train.fine_tune_vae`).

Every iteration keeps its labels, the poses after it, its class maps and FSC curves, the
clustering method and parameters, the resolution limit and its seconds
(:class:`~.result.RefineResult` ``iterations`` and ``history``). A checkpoint after every
iteration holds all of it (and the re-trained VAE's weights), so a killed run resumes at
the next iteration and ends as an uninterrupted one would.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_cryohet.core.classify import map_log_likelihoods
from napari_cryohet.core.device import select_device
from napari_cryohet.core.half_maps import assign_half_sets
from napari_cryohet.core.label_alignment import align_labels
from napari_cryohet.core.local_refine import refine_half_sets
from napari_cryohet.core.postprocess import fsc_weighted_filter, postprocess
from napari_cryohet.stages._common import CancelToken, ProgressCallback, check_cancel, report
from napari_cryohet.stages.checkpoint import Checkpointer
from napari_cryohet.stages.distributed import (
    reconstruct_half_maps_distributed as reconstruct_half_maps,
)
from napari_cryohet.stages.protocol import Embedding, array_hash, dataset_indices
from napari_cryohet.stages.refine.clustering import (
    CLUSTERERS,
    ClusterResult,
    align_embedding,
    cluster_vectors,
    embed_vectors,
)
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


def _membership_columns(clustered, current: np.ndarray) -> dict[int, np.ndarray]:
    """Aligned cluster id → that cluster's column of the soft memberships (GMM), when there are any.

    The aligned id of an algorithm cluster is the id most of its particles got after alignment."""
    if clustered.memberships is None:
        return {}
    out = {}
    for j in range(clustered.memberships.shape[1]):
        got = current[(clustered.labels == j) & (current >= 0)]
        if len(got):
            out[int(np.bincount(got).argmax())] = clustered.memberships[:, j]
    return out


def run_refine(dataset: Any, config: RefineConfig, *, embedding: Embedding, progress: ProgressCallback | None = None,
               cancel: CancelToken | None = None, run_dir: str | Path | None = None) -> RefineResult:
    """Run the loop on ``dataset`` (with poses and CTF) clustering ``embedding`` (one vector per particle)."""
    if getattr(dataset, "rotations", None) is None:
        raise ValueError("refine: the dataset has no particle poses; the loop refines existing poses")
    spec = CLUSTERERS[config.cluster_method]
    source = getattr(embedding, "source", None)
    decode = getattr(source, "decode", None)
    if spec.needs_decoder and decode is None:
        raise ValueError(f"refine: clustering method {config.cluster_method!r} decodes volumes from the latents; "
                         f"the input run {embedding.run_id or embedding.name} has no decoder (use a VAE run)")
    if config.vae_epochs > 0 and not hasattr(source, "model"):
        raise ValueError(f"refine: vae_epochs={config.vae_epochs} re-trains the input VAE on the refined poses; "
                         f"the input run {embedding.run_id or embedding.name} is not a VAE run")
    indices = dataset_indices(dataset)
    # spectral eigenvectors are clustered in their commute-time coordinates (SpectralResult.clustering_embedding)
    clustering_embedding = getattr(source, "clustering_embedding", None)
    vectors = (clustering_embedding() if callable(clustering_embedding) else embedding).aligned_to(indices)
    n, apix = len(indices), float(dataset.apix)
    device = select_device(config.device)
    halves = _half_sets(dataset, n, config.seed)
    # copies: the poses are refined in place, and a loaded dataset's arrays may be read-only
    rotations = torch.tensor(np.array(dataset.rotations, dtype=np.float64))
    shifts = torch.tensor(np.zeros((n, 2)) if dataset.shifts_a is None else np.array(dataset.shifts_a, dtype=np.float64))
    start_rot, start_sh = rotations.clone(), shifts.clone()  # the prior's centre in every iteration
    ckpt = None if run_dir is None else Checkpointer(run_dir, config=config, n_particles=n, particle_indices=indices,
                                                     identity={"input vectors": array_hash(vectors)})
    state = None if ckpt is None else ckpt.load(map_location="cpu", progress=progress)
    labels: list[np.ndarray] = []
    history: list[dict[str, Any]] = []
    iterations: list[dict[str, Any]] = []  # poses after, maps and FSC curves of every iteration
    next_id = 0
    vae = source if config.vae_epochs > 0 else None
    pending: np.ndarray | None = None  # labels from the class maps, for the next iteration
    if state is not None:
        labels = [row for row in state["labels"].numpy()]
        rotations, shifts = state["rotations"].to(torch.float64), state["shifts_a"].to(torch.float64)
        history, next_id = list(state["history"]), int(state["next_id"])
        iterations = list(state.get("iterations", []))
        if "pending_labels" in state:
            pending = state["pending_labels"].numpy()
        if "vectors" in state:
            vectors = state["vectors"].numpy()
        if vae is not None and "vae_state" in state:
            vae = _vae_from_state(source, state["vae_state"])
    report(progress, 0.0, f"embedding {n} particles ({config.embedding_method})")
    embedded = embed_vectors(vectors, config.embedding_method, n_components=config.n_components, seed=config.seed,
                             progress=None, cancel=cancel)
    images = torch.tensor(np.array(dataset.get_images(np.arange(n)), dtype=np.float32))
    ctf = None if dataset.ctf is None else dataset.ctf.to_torch(dtype=torch.float32)
    params = {"n_clusters": int(config.n_clusters)} if "n_clusters" in [p.name for p in spec.params] else {}
    start = len(labels)
    for it in range(start, config.n_iterations):
        t0 = time.perf_counter()
        check_cancel(cancel)
        base = it / config.n_iterations
        step = 1.0 / config.n_iterations
        previous = labels[-1] if labels else None
        if pending is not None:  # the previous iteration assigned every particle to a class map
            report(progress, base, f"iteration {it + 1}/{config.n_iterations}: particles assigned to the class maps")
            clustered = ClusterResult(pending, None, None, "maps", {"by": "class map likelihood"})
        else:
            report(progress, base, f"iteration {it + 1}/{config.n_iterations}: clustering ({config.cluster_method})")
            warm = previous if (config.warm_start and spec.warm_start and previous is not None
                                and len(np.unique(previous[previous >= 0])) == params.get("n_clusters")) else None
            clustered = cluster_vectors(vectors if spec.needs_decoder else embedded, config.cluster_method,
                                        seed=config.seed, init_labels=warm, decode=decode, **params)
        pending = None
        record: dict[str, Any] = {"iteration": it + 1, "cluster_method": clustered.method,
                                  "cluster_params": {k: v for k, v in clustered.params.items()},
                                  "resolution_limit_a": None}
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
        soft = _membership_columns(clustered, current) if config.soft_weights else {}
        resolution = float(config.resolution_schedule_a[min(it, len(config.resolution_schedule_a) - 1)])
        record["resolution_limit_a"] = resolution
        ids = [int(k) for k in np.unique(current) if k >= 0]
        clusters: dict[str, Any] = {}
        maps: dict[int, Any] = {}
        refs: dict[int, tuple[Any, Any]] = {}  # FSC-weighted half maps, the references of this iteration
        for j, k in enumerate(ids):
            check_cancel(cancel)
            sel = np.flatnonzero(current == k)
            if len(sel) < config.min_cluster_size:
                clusters[str(k)] = {"particles": int(len(sel)), "resolution_a": None, "note": "too small"}
                continue
            frac = base + step * (j + 0.5) / (len(ids) + (1 if vae is not None else 0))
            report(progress, frac, f"iteration {it + 1}: cluster {k} ({len(sel)} particles): half maps")
            sub_ctf = None if ctf is None else {key: v[sel] for key, v in ctf.items()}
            weights = None if k not in soft else torch.as_tensor(soft[k][sel], dtype=torch.float32)
            map_a, map_b, _ = reconstruct_half_maps(images[sel], rotations[sel], shifts[sel], sub_ctf, apix,
                                                    halves[sel], weights=weights, device=device)
            post = postprocess(map_a, map_b, apix=apix)
            entry = {"particles": int(len(sel)), "resolution_a": float(post.resolution_a),
                     "weighted": weights is not None}
            ref_a = fsc_weighted_filter(map_a, post.curves.corrected)
            ref_b = fsc_weighted_filter(map_b, post.curves.corrected)
            refs[k] = (ref_a, ref_b)
            if config.refine_poses and (config.sigma_angle_deg > 0 or config.sigma_shift_a > 0):
                report(progress, frac, f"iteration {it + 1}: cluster {k}: refining poses to {resolution:g} Å")
                # references: each half map weighted by the FSC (Rosenthal & Henderson 2003), as RELION's are
                refined = refine_half_sets(images[sel], rotations[sel], shifts[sel], sub_ctf, halves[sel],
                                           ref_a, ref_b, apix=apix, sigma_angle_deg=config.sigma_angle_deg,
                                           sigma_shift_a=config.sigma_shift_a, max_resolution_a=resolution,
                                           n_angle_steps=config.grid_steps, n_shift_steps=config.grid_steps,
                                           n_steps=config.refine_steps,
                                           prior_rotations=start_rot[sel], prior_shifts_a=start_sh[sel],
                                           device=device, cancel=lambda: check_cancel(cancel))
                rotations[sel] = refined.rotations.to(torch.float64)
                shifts[sel] = refined.shifts_a.to(torch.float64)
                entry.update(mean_angle_change_deg=float(refined.angle_moved_deg.mean()),
                             mean_shift_change_a=float(refined.shift_moved_a.mean()))
            clusters[str(k)] = entry
            maps[k] = post
        if config.assignment == "maps" and it + 1 < config.n_iterations and len(refs) > 1:
            report(progress, base + step * 0.99, f"iteration {it + 1}: assigning particles to the {len(refs)} "
                                                 "class maps")
            pending, changed, _ = _assign_to_maps(images, rotations, shifts, ctf, halves, current, apix, resolution,
                                                  config, device, cancel)
            record["reassigned_fraction"] = changed
        if vae is not None:
            report(progress, base + step * len(ids) / (len(ids) + 1),
                   f"iteration {it + 1}: {config.vae_epochs} VAE epochs on the refined poses (Silvera Coeff 2025, "
                   "§4.1.6)")
            vae = _retrain_vae(vae, dataset, rotations, shifts, config, cancel)
            previous_vectors = vectors
            vectors = vae.embedding().aligned_to(indices)
            record["vae"] = {"epochs": int(config.vae_epochs),
                             "loss": float(vae.history[-1]["loss"]) if vae.history else None,
                             "latent_change": float(np.linalg.norm(vectors - previous_vectors, axis=1).mean())}
            embedded = align_embedding(embedded, embed_vectors(vectors, config.embedding_method,
                                                               n_components=config.n_components, seed=config.seed,
                                                               cancel=cancel)) \
                if config.embedding_method != "none" else vectors
        labels.append(current)
        iterations.append(_iteration_arrays(rotations, shifts, maps))
        record.update(n_clusters=len(ids), clusters=clusters, seconds=time.perf_counter() - t0)
        history.append(record)
        if ckpt is not None:
            saved = {"epoch": it + 1, "labels": torch.as_tensor(np.stack(labels)), "rotations": rotations,
                     "shifts_a": shifts, "history": history, "next_id": next_id, "iterations": iterations}
            if pending is not None:
                saved["pending_labels"] = torch.as_tensor(pending)
            if vae is not None:
                saved["vectors"] = torch.as_tensor(vectors)
                saved["vae_state"] = {k: v.detach().cpu() for k, v in vae.model.state_dict().items()}
            ckpt.save(saved)
    # the class maps of the result come from the final poses (each iteration's maps were
    # made before it refined the poses)
    report(progress, 1.0, "class maps from the refined poses")
    last_maps = _final_maps(images, rotations, shifts, ctf, halves, labels[-1], apix, config, device)
    report(progress, 1.0, f"{config.n_iterations} iterations, {len(last_maps)} class maps")
    return _result(indices, labels, halves, rotations, shifts, last_maps, apix, history, config, iterations)


def _assign_to_maps(images, rotations, shifts, ctf, halves, current, apix, resolution, config, device, cancel):
    """Each particle in a cluster with a map → the cluster whose map explains its image best, at its
    refined pose, as RELION's 3D classification does (Scheres 2012): log-likelihood
    (:func:`~napari_cryohet.core.classify.map_log_likelihoods`) plus the log of the cluster's share.

    A particle is never compared with a map it is part of: within each gold-standard half, the
    particles are split in two alternate quarters, each cluster gets one map per quarter, and a
    particle is scored against the map of the *other* quarter of its own half. (Against maps that
    contain it, a particle prefers its own cluster: with 10 particles per half map no particle moved
    at all.) Half 1 never sees half 2. Particles in no cluster (noise) keep their label; those of a
    cluster too small for a map join the cluster they match best. Returns the new labels, the fraction of particles that changed cluster, and each
    cluster's map (the mean of its four FSC-weighted quarter maps)."""
    n = len(current)
    quarter = np.zeros(n, dtype=np.int64)
    for h in (1, 2):
        idx = np.flatnonzero(halves == h)
        quarter[idx[1::2]] = 1
    ids = [int(k) for k in np.unique(current) if k >= 0 and np.sum(current == k) >= config.min_cluster_size]
    movable = (current >= 0) if ids else np.zeros(n, dtype=bool)  # clusters too small for a map dissolve
    ll = torch.full((n, len(ids)), -torch.inf, dtype=torch.float64)
    maps: dict[int, Any] = {}
    for j, k in enumerate(ids):
        for h in (1, 2):
            check_cancel(cancel)
            sel = np.flatnonzero((current == k) & (halves == h))
            if len(sel) < 4 or len(np.unique(quarter[sel])) < 2:
                continue
            sub_ctf = None if ctf is None else {key: v[sel] for key, v in ctf.items()}
            map_0, map_1, _ = reconstruct_half_maps(images[sel], rotations[sel], shifts[sel], sub_ctf, apix,
                                                    quarter[sel] + 1, device=device)
            fsc = postprocess(map_0, map_1, apix=apix).curves.corrected
            quarter_maps = (fsc_weighted_filter(map_0, fsc), fsc_weighted_filter(map_1, fsc))
            maps[k] = maps.get(k, 0.0) + 0.25 * (quarter_maps[0] + quarter_maps[1])
            for q in (0, 1):
                target = np.flatnonzero(movable & (halves == h) & (quarter == q))
                if len(target) == 0:
                    continue
                t_ctf = None if ctf is None else {key: v[target] for key, v in ctf.items()}
                ll[target, j] = map_log_likelihoods(images[target], rotations[target], shifts[target], t_ctf,
                                                    quarter_maps[1 - q].to(torch.float32).cpu()[None], apix=apix,
                                                    max_resolution_a=resolution, device=device,
                                                    cancel=lambda: check_cancel(cancel))[:, 0]
    new = current.copy()
    if ids:
        counts = np.array([np.sum(current == k) for k in ids], dtype=np.float64)
        score = ll + torch.as_tensor(np.log(counts / counts.sum()))
        rows = np.flatnonzero(movable)
        best = score[rows].argmax(1).numpy()
        ok = torch.isfinite(score[rows].max(1).values).numpy()
        new[rows[ok]] = np.asarray(ids)[best[ok]]
    moved = movable & (new != current)
    return new, float(moved.sum() / max(1, movable.sum())), maps


def _retrain_vae(vae, dataset, rotations, shifts, config: RefineConfig, cancel):
    """A few warm-started epochs of the input VAE on the refined poses (Silvera Coeff 2025, §4.1.6:
    cryoDRGN re-trained with the poses of the refinement); returns the new VAE result."""
    import dataclasses

    from napari_cryohet.stages.vae.train import fine_tune_vae

    posed = dataclasses.replace(dataset, rotations=rotations.numpy().astype(np.float32),
                                shifts_a=shifts.numpy().astype(np.float32))
    return fine_tune_vae(vae, posed, int(config.vae_epochs), cancel=cancel, device=config.device)


def _vae_from_state(source, model_state: dict[str, Any]):
    """The input VAE result with the weights of a checkpointed re-training (resume)."""
    import copy

    vae = copy.copy(source)
    vae.model = copy.deepcopy(source.model)
    vae.model.load_state_dict(model_state)
    return vae


def _iteration_arrays(rotations, shifts, maps: dict[int, Any]) -> dict[str, Any]:
    """What an iteration keeps: the poses after it (float32) and its class maps and FSC curves."""
    ids = sorted(maps)
    return {"rotations": rotations.to(torch.float32).clone(), "shifts_a": shifts.to(torch.float32).clone(),
            "cluster_ids": torch.as_tensor(ids, dtype=torch.int64),
            "maps": torch.stack([maps[k].map.to(torch.float32).cpu() for k in ids]) if ids else torch.zeros(0),
            "fsc": torch.as_tensor(np.stack([np.asarray(maps[k].curves.corrected) for k in ids])) if ids
            else torch.zeros(0)}


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


def _result(indices, labels, halves, rotations, shifts, maps, apix, history, config, iterations) -> RefineResult:
    ids = sorted(maps)
    d = int(np.asarray(next(iter(maps.values())).map).shape[-1]) if maps else 1
    stack = np.stack([np.asarray(maps[k].map, dtype=np.float32) for k in ids]) if ids else np.zeros((0, d, d, d))
    curves = [maps[k].curves for k in ids]
    fsc = np.stack([np.asarray(c.corrected) for c in curves]) if curves else np.zeros((0, 0))
    freq = np.asarray(curves[0].freq_per_px) / apix if curves else np.zeros(0)
    return RefineResult(indices=indices, labels=np.stack(labels), half_sets=halves, rotations=rotations.numpy(),
                        shifts_a=shifts.numpy(), cluster_ids=ids, maps=stack, fsc=fsc, fsc_freq=freq, apix=apix,
                        history=history, config=config, iterations=[{k: np.asarray(v) for k, v in it.items()}
                                                                    for it in iterations])
