"""The chain fit on particle images (Esteve-Yagüe et al. 2022, §2.3 and §3.2).

:func:`run_chainfit` fits ``A``, ``B`` of eq. 2.6 to a particle stack with known poses:
each particle's chain is projected as Gaussian atoms in its pose (eq. 2.9), filtered by its
CTF and shifted (eq. 2.10), and compared with its image (eq. 2.11). The eigenvectors come as
an :class:`~napari_cryohet.stages.protocol.Embedding` and are matched to the particles by
particle index, never by row position.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from napari_cryohet.core.device import select_device
from napari_cryohet.core.frenet import chain_angles, frenet_frames
from napari_cryohet.core.particle_dataset import ParticleDataset
from napari_cryohet.core.projection import project_gaussian_atoms
from napari_cryohet.stages import distributed
from napari_cryohet.stages._common import CancelToken, ProgressCallback, report
from napari_cryohet.stages.chainfit.config import ChainFitConfig
from napari_cryohet.stages.chainfit.model import (
    SpectralAngles,
    angle_step_scales,
    coefficient_mask,
    reference_bond_lengths,
    reference_index,
    scaled_eigenvectors,
)
from napari_cryohet.stages.chainfit.normal_modes import (
    ModeExpansion,
    NormalModeAmplitudes,
    mode_displacements,
    prior_weights,
)
from napari_cryohet.stages.chainfit.reference import ChainReference, resolve_reference
from napari_cryohet.stages.chainfit.result import ChainFitResult
from napari_cryohet.stages.chainfit.targets import FourierTargets
from napari_cryohet.stages.chainfit.train import (
    EpochCallback,
    Problem,
    make_result,
    train,
)
from napari_cryohet.stages.protocol import Embedding, array_hash, dataset_indices

__all__ = ["run_chainfit", "aligned_eigenvectors", "box_restraint"]


def aligned_eigenvectors(eigenvectors: Embedding, dataset, k: int) -> np.ndarray:
    """The ``(N, k)`` unit-RMS eigenvector rows of ``dataset``'s particles, in its order.

    Raises ``TypeError`` for a bare array (its rows could belong to any particles) and
    :class:`~napari_cryohet.stages.protocol.ParticleMismatchError` when particles are missing.
    """
    if not isinstance(eigenvectors, Embedding):
        raise TypeError("eigenvectors: expected an Embedding (per-particle values with their particle indices, "
                        "e.g. SpectralResult.embedding() or Embedding.for_dataset(values, dataset)), got "
                        f"{type(eigenvectors).__name__}")
    rows = eigenvectors.aligned_to(dataset)
    return scaled_eigenvectors(rows, len(rows), k)


def box_restraint(half_width_a: float, sigma_a: float, fit_d: int, fit_apix: float, amplitude: float,
                  device: torch.device, dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
    """A penalty that pulls atoms back into the box: ``E₁ Σ_atoms (max(|r| − R, 0) / σ)²`` per particle.

    An atom that leaves the image (``|r| > R = half-width − 2σ``, model frame centred on the
    box) stops contributing to the misfit, so nothing would bring it back. ``E₁`` is the
    misfit's value for one missing atom (mean square per pixel of one projected atom), so an
    atom ``σ`` beyond the edge costs what losing it from the image costs. Zero for every
    chain inside the box: it changes nothing while the fit behaves.
    """
    radius = max(half_width_a - 2 * sigma_a, 0.5 * half_width_a)
    one = project_gaussian_atoms(torch.zeros(1, 1, 3, dtype=dtype, device=device),
                                 torch.eye(3, dtype=dtype, device=device)[None], d=fit_d, apix=fit_apix,
                                 sigma_a=sigma_a) * amplitude
    energy = float((one**2).mean())

    def restraint(coords: torch.Tensor) -> torch.Tensor:
        outside = (torch.linalg.vector_norm(coords, dim=-1) - radius).clamp_min(0.0) / sigma_a
        return energy * (outside**2).sum(dim=-1).mean()

    return restraint


def run_chainfit(
    dataset: ParticleDataset,
    config: ChainFitConfig | None = None,
    *,
    eigenvectors: Embedding | None = None,
    reference: ChainReference | None = None,
    run_dir: str | Path | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    on_epoch: EpochCallback | None = None,
) -> ChainFitResult:
    """Fit ``A``, ``B`` of eq. 2.6 to a particle stack (Esteve-Yagüe et al. 2022, §2.3, §3.2).

    Parameters
    ----------
    dataset
        Particles with poses (rotations, optional shifts) and optional CTF; ground truth
        (``coords_a``, ``clean_images``) is used for metrics and ``anchor="truth"``.
    config
        :class:`ChainFitConfig`.
    eigenvectors
        Laplacian eigenvectors of (at least) the dataset's particles, an
        :class:`~napari_cryohet.stages.protocol.Embedding` (``SpectralResult.embedding()``,
        ``Workspace.embedding("spectral/0002")``), ``K' ≥ config.n_eigenvectors`` columns in
        ascending eigenvalue order. Rows are matched to the particles by particle index.
        Not used (may be ``None``) with ``config.basis == "normal_modes"``.
    reference
        The known conformation; ``None``: ``config.reference`` (a PDB/mmCIF file), else the
        dataset's own (:func:`~napari_cryohet.stages.chainfit.reference.reference_from_dataset`).
    run_dir
        Directory for the checkpoint (resumed when it matches, refused when it does not);
        ``None`` keeps everything in memory. The result itself is not saved here: the
        workspace saves it (or call ``result.save(run_dir)``).
    progress, cancel
        Progress callback; cancel token checked every batch. A progress callback with an
        ``on_epoch`` attribute receives each epoch's metrics too (how a widget draws live
        curves of a run it starts through a workspace).
    on_epoch
        Called with each epoch's metrics record (from the worker thread).

    Returns
    -------
    ChainFitResult
    """
    config = config or ChainFitConfig()
    on_epoch = on_epoch or getattr(progress, "on_epoch", None)
    n = len(dataset)
    if dataset.rotations is None:
        raise ValueError("dataset has no poses (rotations); the chain fit needs known poses (Assumption 4)")
    reference = reference or resolve_reference(config, dataset)
    for note in getattr(reference, "notes", ()) or ():  # gaps, residues left out: say so before fitting
        report(progress, 0.0, f"reference: {note}")
    ref_np = reference.coords_a
    if ref_np.shape[1] != 3:
        raise ValueError("reference: a 3D chain (m, 3) is needed for particle images; use run_chainfit_2d")
    k = int(config.n_eigenvectors)
    normal_modes = config.basis == "normal_modes"
    if normal_modes and config.mode_amplitudes == "per_particle":  # amplitudes of their own: no eigenvectors
        phi = np.zeros((n, 0), dtype=np.float32)
    elif eigenvectors is None:
        raise ValueError("eigenvectors: this model needs a spectral embedding of the particles (or set "
                         "basis='normal_modes' with mode_amplitudes='per_particle')")
    else:
        phi = aligned_eigenvectors(eigenvectors, dataset, k)
    truth = dataset.ground_truth or {}
    truth_coords = np.asarray(truth["coords_a"], dtype=np.float64) if "coords_a" in truth else None
    if truth_coords is not None and truth_coords.shape[1:] != ref_np.shape:
        raise ValueError(f"ground-truth chains {truth_coords.shape[1:]} do not match the reference {ref_np.shape}")
    device = distributed.rank_device(select_device(config.device))  # cuda:LOCAL_RANK under torchrun
    dtype = torch.float32
    j0 = reference_index(config, ref_np)
    sigma_a = config.sigma_a if config.sigma_a is not None else float(truth.get("global/sigma_a", 3.0))
    ref = torch.as_tensor(ref_np, dtype=torch.float64)
    theta0, psi0 = chain_angles(ref)
    if config.anchor == "truth":
        if truth_coords is None:
            raise ValueError("anchor='truth' needs ground_truth['coords_a']")
        lo = max(j0 - 1, 0)
        window = torch.as_tensor(truth_coords[:, lo:j0 + 3], dtype=torch.float64)  # enough atoms for F_{j0}
        frames = frenet_frames(window)[:, j0 - lo]
        positions = torch.as_tensor(truth_coords[:, j0], dtype=torch.float64)
    else:
        frames = frenet_frames(ref)[j0].expand(n, 3, 3)
        positions = ref[j0].expand(n, 3)
    mask = coefficient_mask(len(theta0), k, config)

    rotations = torch.as_tensor(np.asarray(dataset.rotations), dtype=dtype, device=device)
    d = dataset.box_size
    fit_d = d if config.fit_box_size is None else int(config.fit_box_size)
    if fit_d > d:
        raise ValueError(f"fit_box_size {fit_d} exceeds the box size {d}")
    fit_apix = float(dataset.apix) * d / fit_d
    targets = FourierTargets(dataset, device, dtype, fit_box_size=fit_d)

    def misfit(coords: torch.Tensor, idx: np.ndarray, clean: bool) -> torch.Tensor:
        images = project_gaussian_atoms(coords, rotations[torch.as_tensor(idx, device=device)], d=fit_d,
                                        apix=fit_apix, sigma_a=sigma_a)  # (B, D', D')
        return targets.misfit(images * config.amplitude, idx, clean)

    restraint = box_restraint(d * float(dataset.apix) / 2, sigma_a, fit_d, fit_apix, config.amplitude, device, dtype)
    problem = Problem(
        n=n, planar=False, restraint=restraint, phi=torch.as_tensor(phi, device=device),
        anchor_positions=positions.to(device, dtype), anchor_frames=frames.to(device, dtype),
        ref_index=j0, delta=reference_bond_lengths(ref, config, gaps=reference.gaps).to(device, dtype), misfit=misfit,
        truth_coords=truth_coords, particle_indices=dataset_indices(dataset),
        data_hash=array_hash(phi, ref_np, positions.numpy(), frames.numpy()),
    )
    model: SpectralAngles | NormalModeAmplitudes | ModeExpansion
    if normal_modes:
        report(progress, 0.0, f"elastic-network normal modes of the reference ({len(ref_np)} atoms)")
        displacements, eigenvalues, note = mode_displacements(ref_np, int(config.n_modes), float(config.mode_cutoff_a),
                                                              float(config.mode_min_collectivity))
        if note:
            report(progress, 0.0, note)
        weights, noise_scale = None, None
        if config.mode_prior_a is not None and config.mode_amplitudes == "per_particle":
            # noise variance per pixel ≈ the misfit of the reference itself (at low SNR almost all
            # noise), over the share of the spectrum the misfit keeps (with fit_box_size, (D'/D)²)
            sample = np.arange(0, n, max(n // 256, 1))[:256]
            with torch.no_grad():
                noise_var = float(misfit(ref.to(device, dtype).expand(len(sample), -1, -1), sample, False))
            noise_var /= targets.kept_fraction
            weights = torch.as_tensor(prior_weights(eigenvalues, config.mode_prior_a, noise_var, d * d))
            noise_scale = noise_var / (d * d)
        if config.mode_amplitudes == "eigenvectors":
            model = ModeExpansion(ref.to(device, dtype), torch.as_tensor(displacements, device=device, dtype=dtype), k)
        else:
            model = NormalModeAmplitudes(ref.to(device, dtype), torch.as_tensor(displacements, device=device,
                                                                                dtype=dtype),
                                         n, steps_per_batch=config.mode_steps, prior_weights=weights,
                                         noise_scale=noise_scale,
                                         learn_prior_until=(2 * config.epochs) // 3
                                         if config.mode_prior_learned and weights is not None else 0)
    else:
        scales = None
        if config.step_scaling == "lever_arm":
            scales = angle_step_scales(theta0, psi0, ref[j0], frenet_frames(ref)[j0], j0, problem.delta, False)
        model = SpectralAngles(theta0.to(device, dtype), psi0.to(device, dtype),
                               torch.as_tensor(mask, device=device), config.fit_bond_angles, scales=scales)
    history, train_idx, test_idx = train(problem, model, config, run_dir=run_dir, progress=progress,
                                         cancel=cancel, on_epoch=on_epoch)
    result = make_result(problem, model, reference, config, history, train_idx, test_idx)
    report(progress, 1.0, "chain fit done")
    return result
