"""Compositional heterogeneity: AdK assembly classes lacking domains (seed 003 §2.5–2.7, §4.2.1).

:func:`assembly_classes` splits heavy-atom AdK by residue ranges into the domains of
:data:`~napari_cryohet.stages.simulate.adk.ADK_DOMAINS` (CORE, NMP, LID); each class keeps
some of them.
"""

from __future__ import annotations

import numpy as np

from napari_cryohet.core.particle_dataset import ParticleDataset
from napari_cryohet.stages._common import CancelToken, ProgressCallback
from napari_cryohet.stages.simulate.adk import ADK_DOMAINS, load_adk_heavy
from napari_cryohet.stages.simulate.engine import AtomicModel
from napari_cryohet.stages.simulate.recipe_support import _simulate_dataset, _volumes

__all__ = ["assembly_classes"]


def _domain_of(resids: np.ndarray) -> np.ndarray:
    out = np.full(len(resids), "", dtype="<U8")
    for name, ranges in ADK_DOMAINS.items():
        for lo, hi in ranges:
            out[(resids >= lo) & (resids <= hi)] = name
    return out


def assembly_classes(
    n_particles: int = 200,
    *,
    classes: tuple[tuple[str, ...], ...] = (("CORE", "NMP", "LID"), ("CORE", "NMP"), ("CORE", "LID"), ("CORE",)),
    class_probabilities: tuple[float, ...] | None = None,
    frame: int = 0,
    frames: tuple[int, ...] | None = None,
    box_size: int = 64,
    apix: float = 1.5,
    sigma_a: float = 1.5,
    snr: float | None = 0.1,
    defocus_range_um: tuple[float, float] = (0.5, 2.5),
    voltage_kv: float = 300.0,
    cs_mm: float = 2.7,
    amplitude_contrast: float = 0.1,
    shift_std_a: float = 0.0,
    seed: int = 0,
    batch_size: int = 256,
    device: str | None = "cpu",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> ParticleDataset:
    """Compositional heterogeneity: AdK assembly intermediates lacking domains.

    Like the L17-depleted 50S intermediates of 003 §4.2.1 (subunits present or absent),
    the complex is heavy-atom AdK (one ``frame``) split by residue ranges into the
    domains of :data:`ADK_DOMAINS`; class ``c`` keeps the domains named in
    ``classes[c]`` (default: complete, −LID, −NMP, CORE only). The particles' class is
    drawn with ``class_probabilities`` (default uniform); images follow the forward model
    of 003 eq. 2.1–2.2 (projection, CTF, noise).

    ``frames`` mixes composition with conformation: every domain set of ``classes`` in
    every trajectory frame of ``frames`` is a class (e.g. ``frames=(0, 101)`` with the
    default classes gives 8: {closed, open} × {complete, −LID, −NMP, CORE}), named
    ``"frame 0: CORE+NMP"``; ``class_probabilities`` then has one entry per such class,
    frames outermost. This is the mixed heterogeneity of the clustering/refinement
    benchmark (Silvera Coeff 2025, §4.1; issue "clustering/refinement loop").

    Ground truth
    ------------
    ``state``
        ``(N,)`` int class index.
    ``global/volumes``
        ``(C, D, D, D)`` density of each class.
    ``global/class_masks``
        ``(C, M)`` bool: atom ``j`` present in class ``c``.
    ``global/class_names``
        ``(C,)`` str, e.g. ``"CORE+NMP"``.
    ``global/reference_coords_a``
        ``(M, 3)`` heavy-atom coordinates (all domains); ``global/atom_domains`` ``(M,)``
        str; ``global/atom_weights`` ``(M,)`` atomic numbers.
    """
    heavy = load_adk_heavy()
    frame_list = (int(frame),) if frames is None else tuple(int(f) for f in frames)
    for f in frame_list:
        if not 0 <= f < len(heavy["coords"]):
            raise ValueError(f"frame must lie in [0, {len(heavy['coords'])}), got {f}")
    coords = heavy["coords"][frame_list[0]]  # (M, 3): the reference conformation
    domains = _domain_of(heavy["resids"])
    for c in classes:
        unknown = set(c) - set(ADK_DOMAINS)
        if unknown or not c:
            raise ValueError(f"classes: each class must be a non-empty subset of {sorted(ADK_DOMAINS)}, got {c}")
    domain_masks = np.stack([np.isin(domains, list(c)) for c in classes])  # (C0, M)
    masks = np.concatenate([domain_masks] * len(frame_list))  # (C, M), frames outermost
    class_coords = np.concatenate([np.broadcast_to(heavy["coords"][f], (len(classes), *coords.shape))
                                   for f in frame_list])  # (C, M, 3)
    names = ["+".join(c) for c in classes]
    class_names = names if frames is None else [f"frame {f}: {n}" for f in frame_list for n in names]
    n_classes = len(class_names)
    if class_probabilities is None:
        probs = np.full(n_classes, 1.0 / n_classes)
    else:
        probs = np.asarray(class_probabilities, dtype=np.float64)
        if probs.shape != (n_classes,) or (probs < 0).any() or probs.sum() <= 0:
            raise ValueError(f"class_probabilities: expected {n_classes} non-negative numbers")
        probs = probs / probs.sum()
    rng = np.random.default_rng([int(seed), 50])
    state = rng.choice(n_classes, size=n_particles, p=probs).astype(np.int64)
    class_weights = masks * heavy["weights"][None, :]  # (C, M)
    truth = {
        "state": state,
        "global/class_masks": masks,
        "global/class_names": np.array(class_names),
        "global/reference_coords_a": coords,
        "global/atom_domains": domains,
        "global/atom_weights": heavy["weights"],
    }
    if frames is not None:
        truth["global/class_frames"] = np.repeat(np.asarray(frame_list, dtype=np.int64), len(classes))
    truth["global/volumes"] = _volumes(class_coords, d=box_size, apix=apix,
                                       sigma_a=sigma_a, weights=class_weights, device=device, progress=progress)
    model = AtomicModel(coords_a=np.ascontiguousarray(class_coords), sigma_a=sigma_a,
                        conformation=state, weights=class_weights, truth=truth, store_coords=False)
    return _simulate_dataset("assembly_classes", model, box_size=box_size, apix=apix, snr=snr,
                             voltage_kv=voltage_kv, cs_mm=cs_mm, amplitude_contrast=amplitude_contrast,
                             defocus_range_um=defocus_range_um, shift_std_a=shift_std_a, seed=seed,
                             batch_size=batch_size, device=device, progress=progress, cancel=cancel)
