"""The planar chain fit of the box with two arms (Esteve-Yagüe et al. 2022, §3.1).

:func:`run_chainfit_2d` fits the turning angles of a planar chain (eq. 3.1) to the 1D
projections of a :class:`~napari_cryohet.stages.simulate.Toy2DDataset`, with the same
model, loop and result as the 3D fit. The toy has no particle indices: its rows are
particles ``0 … N-1``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_cryohet.core.device import select_device
from napari_cryohet.core.frenet_2d import chain_angles_2d, chain_frames_2d
from napari_cryohet.stages._common import CancelToken, ProgressCallback, report
from napari_cryohet.stages.chainfit.config import ChainFitConfig
from napari_cryohet.stages.chainfit.fit import aligned_eigenvectors
from napari_cryohet.stages.chainfit.model import (
    SpectralAngles,
    angle_step_scales,
    coefficient_mask,
    reference_bond_lengths,
    reference_index,
)
from napari_cryohet.stages.chainfit.reference import ChainReference, reference_from_pdb
from napari_cryohet.stages.chainfit.result import ChainFitResult
from napari_cryohet.stages.chainfit.train import (
    EpochCallback,
    Problem,
    make_result,
    train,
)
from napari_cryohet.stages.protocol import Embedding, array_hash, dataset_indices

__all__ = ["run_chainfit_2d"]


def run_chainfit_2d(
    toy: Any,
    config: ChainFitConfig | None = None,
    *,
    eigenvectors: Embedding,
    reference: ChainReference | None = None,
    run_dir: str | Path | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    on_epoch: EpochCallback | None = None,
) -> ChainFitResult:
    """Fit the turning angles of planar chains to 1D projections (§3.1, eq. 3.1).

    Parameters
    ----------
    toy
        A :class:`~napari_cryohet.stages.simulate.Toy2DDataset` (``projections``,
        ``clean_projections``, ``rotation_angles_rad``, ``coords``, ``reference_coords``,
        ``grid_x_a``, ``sigma``, ``amplitude``, ``j0`` 1-based).
    config
        As for :func:`~napari_cryohet.stages.chainfit.fit.run_chainfit`;
        ``reference_atom=None`` takes the toy's ``j0`` and ``fit_bond_angles`` is ignored
        (planar chains have one angle per vertex).
    eigenvectors
        An :class:`~napari_cryohet.stages.protocol.Embedding` of the toy's particles
        (``Embedding.for_dataset(values, toy)``), e.g. eigenvectors of its ``low_dim``
        densities.
    reference
        Default: ``config.reference`` if set, else the toy's reference conformation (arms
        aligned, square box).
    run_dir, progress, cancel, on_epoch
        As for ``run_chainfit`` (the result is not saved here).

    Returns
    -------
    ChainFitResult
        With ``(m, 2)`` chains (``psi0`` and ``coeff_psi`` zero).
    """
    from napari_cryohet.stages.simulate import project_points_1d

    config = config or ChainFitConfig()
    on_epoch = on_epoch or getattr(progress, "on_epoch", None)
    if config.reference_atom is None:
        config = dataclasses.replace(config, reference_atom=int(toy.j0) - 1)
    if reference is None:
        reference = (reference_from_pdb(config.reference, chain=config.reference_chain) if config.reference
                     else ChainReference(np.asarray(toy.reference_coords), source="toy reference"))
    ref = torch.as_tensor(reference.coords_a, dtype=torch.float64)
    if ref.shape[1] != 2:
        raise ValueError("reference: a planar chain (m, 2) is needed for run_chainfit_2d")
    n = len(toy.projections)
    j0 = reference_index(config, reference.coords_a)
    device = select_device(config.device)
    dtype = torch.float32
    theta0 = chain_angles_2d(ref)
    truth_coords = np.asarray(toy.coords, dtype=np.float64)
    if config.anchor == "truth":
        coords_t = torch.as_tensor(truth_coords)
        frames = chain_frames_2d(coords_t)[:, j0]
        positions = coords_t[:, j0]
    else:
        frames = chain_frames_2d(ref)[j0].expand(n, 2, 2)
        positions = ref[j0].expand(n, 2)
    k = int(config.n_eigenvectors)
    mask = coefficient_mask(len(theta0), k, config)
    phi = aligned_eigenvectors(eigenvectors, toy, k)
    alpha = torch.as_tensor(np.asarray(toy.rotation_angles_rad), dtype=dtype, device=device)
    grid = torch.as_tensor(np.asarray(toy.grid_x_a), dtype=dtype, device=device)
    noisy = torch.as_tensor(np.asarray(toy.projections), dtype=dtype, device=device)
    clean = torch.as_tensor(np.asarray(toy.clean_projections), dtype=dtype, device=device)

    def render(coords: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
        a = alpha[torch.as_tensor(idx, device=device)][:, None]
        x = torch.cos(a) * coords[..., 0] - torch.sin(a) * coords[..., 1]  # posed x of R(α) z
        posed = torch.stack([x, torch.zeros_like(x)], -1)
        return project_points_1d(posed, grid_x_a=grid, sigma=float(toy.sigma), amplitude=float(toy.amplitude))

    def misfit(coords: torch.Tensor, idx: np.ndarray, use_clean: bool) -> torch.Tensor:
        target = (clean if use_clean else noisy)[torch.as_tensor(idx, device=device)]
        return ((render(coords, idx) - target) ** 2).mean()

    problem = Problem(
        n=n, planar=True, phi=torch.as_tensor(phi, device=device),
        anchor_positions=positions.to(device, dtype), anchor_frames=frames.to(device, dtype), ref_index=j0,
        delta=reference_bond_lengths(ref, config, gaps=reference.gaps).to(device, dtype), truth_coords=truth_coords, misfit=misfit,
        particle_indices=dataset_indices(toy),
        data_hash=array_hash(phi, reference.coords_a, positions.numpy(), frames.numpy()),
    )
    scales = None
    if config.step_scaling == "lever_arm":
        scales = angle_step_scales(theta0, torch.zeros_like(theta0), ref[j0], chain_frames_2d(ref)[j0], j0,
                                   problem.delta, True)
    model = SpectralAngles(theta0.to(device, dtype), torch.zeros_like(theta0, dtype=dtype, device=device),
                           torch.as_tensor(mask, device=device), fit_psi=False, scales=scales)
    history, train_idx, test_idx = train(problem, model, config, run_dir=run_dir, progress=progress,
                                         cancel=cancel, on_epoch=on_epoch)
    result = make_result(problem, model, reference, config, history, train_idx, test_idx)
    report(progress, 1.0, "chain fit done")
    return result
