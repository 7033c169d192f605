"""The hyper-molecule sampler as a workspace stage: ``ws.run("hypermolecule", config)``.

:func:`run_hypermolecule` Fourier-crops the particle images to the working size, builds the
composite hyper-molecule of the regions layout, starts the map from ``initial_map`` (which
decides the hand) and runs :class:`~.sampler.HyperMoleculeSampler` sweep by sweep, with a
checkpoint after every sweep (θ, every particle's variables, the chains' random streams,
step sizes and preconditioners), so a killed run continues the same chains.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_cryohet.core.atoms import gaussian_density_3d
from napari_cryohet.core.device import select_device
from napari_cryohet.core.fft import (
    fft2_centered,
    fft3_centered,
    fourier_crop,
    ifft2_centered,
    ifft3_centered,
)
from napari_cryohet.core.hypermolecule import HyperMolecule
from napari_cryohet.core.hypermolecule_posterior import ImageData, ParticleVariables, flatten_params
from napari_cryohet.core.mcmc import make_generator
from napari_cryohet.core.rotation import random_rotations
from napari_cryohet.io.json_files import jsonable
from napari_cryohet.stages._common import (
    CancelToken,
    ProgressCallback,
    check_cancel,
    report,
    report_busy,
)
from napari_cryohet.stages.checkpoint import Checkpointer
from napari_cryohet.stages.hypermolecule.config import (
    DEFAULT_LAYOUTS,
    HyperMoleculeConfig,
    default_layout,
    layout_components,
    layout_symmetries,
)
from napari_cryohet.stages.hypermolecule.result import HyperMoleculeResult
from napari_cryohet.stages.hypermolecule.sampler import HyperMoleculeSampler
from napari_cryohet.stages.protocol import dataset_indices
from napari_cryohet.stages.registry import StageSpec

__all__ = ["run", "run_hypermolecule", "STAGE", "resolve_layout", "working_images", "fit_map_coefficients",
           "initial_volume"]


def resolve_layout(dataset: Any, config: HyperMoleculeConfig) -> dict[str, Any]:
    """The regions of the run: ``config.regions``, else the named or automatic layout."""
    if config.regions is not None:
        return config.regions
    if config.layout in DEFAULT_LAYOUTS:
        return DEFAULT_LAYOUTS[config.layout]
    return default_layout(dataset)


def working_images(dataset: Any, d: int, *, device: torch.device, dtype: torch.dtype,
                   batch_size: int = 512) -> tuple[torch.Tensor, float]:
    """``(N, d, d)`` images Fourier-cropped to ``d`` px and their pixel size (Å).

    Cropping the centred (unnormalised) spectrum keeps every frequency ``|k| < 1/(2·apix')``
    unchanged, so a pixel of the cropped image holds the mass of the ``(D/d)²`` pixels it
    covers (the units of :func:`~napari_cryohet.core.projection.project_gaussian_atoms`)
    and white noise keeps its per-frequency variance ``σ_k²``.
    """
    big = int(dataset.box_size)
    d = min(int(d), big)
    out = []
    for start in range(0, len(dataset), batch_size):
        idx = np.arange(start, min(start + batch_size, len(dataset)))
        img = torch.as_tensor(np.asarray(dataset.get_images(idx), dtype=np.float64), device=device)
        if d < big:
            img = ifft2_centered(fourier_crop(fft2_centered(img), d)).real
        out.append(img.to(dtype))
    return torch.cat(out), float(dataset.apix) * big / d


def _crop_volume(volume: np.ndarray, d: int) -> np.ndarray:
    big = volume.shape[-1]
    if d >= big:
        return volume
    spec = fft3_centered(torch.as_tensor(np.asarray(volume, dtype=np.float64)))
    return ifft3_centered(fourier_crop(spec, d, dims=3)).real.numpy()


def initial_volume(dataset: Any, config: HyperMoleculeConfig) -> np.ndarray | None:
    """``(D, D, D)`` map at the dataset's box the coefficients start from (``None``: zero).

    ``truth``: the mean of the simulator's ground-truth volumes; ``truth_mirrored``: the same
    mirrored in z about the box centre (the other hand); a path: an .mrc map of the
    dataset's box and pixel size.
    """
    choice = config.initial_map
    truth = getattr(dataset, "ground_truth", None) or {}
    if choice == "auto":
        choice = "truth" if "global/volumes" in truth else "zero"
    if choice == "zero":
        return None
    if choice in ("truth", "truth_mirrored"):
        if "global/volumes" not in truth:
            raise ValueError(f"HyperMoleculeConfig.initial_map: {choice!r} needs simulated data with ground-truth "
                             "volumes; give 'zero' or the path of an .mrc map")
        vol = np.asarray(truth["global/volumes"], dtype=np.float64).mean(0)
        if choice == "truth_mirrored":
            vol = np.roll(vol[::-1], 1, axis=0)  # z → −z about voxel D//2
        return vol
    from napari_cryohet.io.mrc_volume import read_volume

    vol, apix = read_volume(choice)
    if vol.shape != (dataset.box_size,) * 3:
        raise ValueError(f"HyperMoleculeConfig.initial_map: {choice} is a {vol.shape} map; the particles are "
                         f"{dataset.box_size} px boxes (expected a map of that box)")
    if apix is not None and abs(apix - float(dataset.apix)) > 1e-3 * float(dataset.apix):
        raise ValueError(f"HyperMoleculeConfig.initial_map: {choice} has {apix} Å pixels, the particles "
                         f"{dataset.apix} Å")
    return np.asarray(vol, dtype=np.float64)


def fit_map_coefficients(model: HyperMolecule, volume: np.ndarray, *, apix: float,
                         iterations: int = 60) -> dict[str, torch.Tensor]:
    """θ whose state-independent terms (``q = 0``) best match ``volume`` (least squares over
    voxels, L-BFGS); state-dependent terms and trajectories 0."""
    d = volume.shape[-1]
    target = torch.as_tensor(volume, device=model.device, dtype=model.dtype)
    params = model.init_params()
    free = {k: v[:, :1].clone().requires_grad_(True) for k, v in params.items() if k.endswith(".coefficients")}
    tau = torch.full((1, model.state_dim), 0.5, device=model.device, dtype=model.dtype)
    scale = float(target.square().sum().clamp_min(1e-30))

    def full() -> dict[str, torch.Tensor]:
        out = dict(params)
        for k, v in free.items():
            q = params[k].shape[1]
            out[k] = torch.cat([v, torch.zeros(v.shape[0], q - 1, device=v.device, dtype=v.dtype)], 1)
        return out

    opt = torch.optim.LBFGS(list(free.values()), max_iter=iterations, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        positions, masses = model.blobs(full(), tau)
        if positions.dim() == 2:
            positions = positions[None]
        vol = gaussian_density_3d(positions, d=d, apix=apix, sigma_a=model.sigma_a, weights=masses)[0]
        loss = (vol - target).square().sum() / scale
        loss.backward()
        return loss

    opt.step(closure)
    return {k: v.detach() for k, v in full().items()}


def _initial_particles(dataset: Any, config: HyperMoleculeConfig, model: HyperMolecule) -> ParticleVariables:
    n, dev, dt = len(dataset), model.device, model.dtype
    gen = make_generator(config.seed, 10_000, device=dev)
    if config.initial_poses == "dataset" and getattr(dataset, "rotations", None) is not None:
        rot = torch.as_tensor(np.asarray(dataset.rotations), device=dev, dtype=dt)
    else:
        rot = random_rotations(n, generator=gen, device=dev, dtype=dt)
    if config.initial_poses == "dataset" and getattr(dataset, "shifts_a", None) is not None:
        shifts = torch.as_tensor(np.asarray(dataset.shifts_a), device=dev, dtype=dt)
    else:
        shifts = torch.zeros(n, 2, device=dev, dtype=dt)
    return ParticleVariables(torch.full((n, model.state_dim), 0.5, device=dev, dtype=dt), rot, shifts,
                             torch.ones(n, device=dev, dtype=dt))


def _state_names(model: HyperMolecule) -> list[str]:
    names = []
    for name, cols in model.state_columns.items():
        width = cols.stop - cols.start
        names += [name] if width == 1 else [f"{name}[{i}]" for i in range(width)]
    return names


def run_hypermolecule(dataset: Any, config: HyperMoleculeConfig, *, progress: ProgressCallback | None = None,
                      cancel: CancelToken | None = None, run_dir: str | Path | None = None) -> HyperMoleculeResult:
    """Sample the hyper-molecule posterior of ``dataset`` (module docstring); resumes from
    ``run_dir``'s checkpoint when there is one."""
    t0 = time.perf_counter()
    device = select_device(config.device)
    dtype = torch.float32
    layout = resolve_layout(dataset, config)
    components = layout_components(layout, source="regions layout")
    report_busy(progress, f"Fourier-cropping {len(dataset)} images to {config.working_size_px} px")
    images, apix_w = working_images(dataset, config.working_size_px, device=device, dtype=dtype,
                                    batch_size=config.batch_size)
    d = images.shape[-1]
    ctf = None if dataset.ctf is None else dataset.ctf.to_torch(device=device, dtype=dtype)
    data = ImageData.from_images(images, apix=apix_w, ctf=ctf)
    spacing = float(config.blob_spacing_a or apix_w)
    model = HyperMolecule(components, spacing_a=spacing, sigma_a=config.blob_width * spacing,
                          state_basis=config.state_basis, device=device, dtype=dtype)
    out_d = int(config.output_size_px or dataset.box_size)
    out_apix = float(dataset.apix) * dataset.box_size / out_d
    indices = dataset_indices(dataset)
    ckpt = None if run_dir is None else Checkpointer(run_dir, config=config, n_particles=len(dataset),
                                                     particle_indices=indices, identity={"working size": d})
    state = None if ckpt is None else ckpt.load(map_location="cpu", progress=progress, restore_random=False)
    if state is None:
        vol = initial_volume(dataset, config)
        if vol is None:
            params = model.init_params()
        else:
            report_busy(progress, "fitting the starting map with the regions' blobs")
            params = fit_map_coefficients(model, _crop_volume(vol, d), apix=apix_w)
        theta0 = flatten_params(params)
    else:
        theta0 = flatten_params(model.init_params())
    sampler = HyperMoleculeSampler(model, data, config, theta0=theta0,
                                   particles0=_initial_particles(dataset, config, model),
                                   volume_size_px=out_d, volume_apix=out_apix,
                                   symmetries=layout_symmetries(layout, source="regions layout"))
    if state is not None:
        sampler.load_state_dict(state["sampler"])
    total = sampler.total_sweeps
    while sampler.sweeps_done < total:
        s = sampler.sweeps_done
        plan = sampler.plan(s)
        summary = sampler.sweep(cancel=lambda: check_cancel(cancel))
        if ckpt is not None:
            ckpt.save({"epoch": sampler.sweeps_done, "sampler": sampler.state_dict()})
        phase = (f"burn-in sweep {s + 1}/{config.n_burnin_sweeps}" if plan.burnin
                 else f"sampling sweep {s + 1 - config.n_burnin_sweeps}/{config.n_sample_sweeps}")
        rates = ", ".join(f"{k} acceptance {summary[k]:.2f}" for k in ("tau", "pose_search", "pose", "shift", "contrast", "theta")
                          if k in summary)
        report(progress, sampler.sweeps_done / total,
               f"{phase}: {rates}; log posterior {summary.get('log_posterior', float('nan')):.4g}; "
               f"resolution {1 / plan.max_frequency_per_a:.1f} Å, state order {plan.order}")
    check_cancel(cancel)
    report_busy(progress, "computing the posterior mean and standard deviation maps")
    scores = sampler.chain_scores()
    best = int(np.argmax(scores))
    mean, std = sampler.volumes(best)
    tau_mean, tau_std = sampler.tau_moments(best)
    part = sampler.chains[best]["particles"]
    samples = torch.stack([sampler.theta_samples(c) for c in range(len(sampler.chains))])  # same count per chain
    traces = {k: np.array([ch["traces"][k] for ch in sampler.chains], dtype=np.float64)
              for k in sampler.chains[0]["traces"]}
    stored_layout = jsonable({"components": [dataclasses.asdict(c) for c in components], "spacing_a": model.spacing_a,
                     "sigma_a": model.sigma_a, "state_basis": model.state_basis})
    result = HyperMoleculeResult(
        indices=indices, state_names=_state_names(model), tau_grid=sampler.tau_grid().numpy(),
        volumes_mean=mean.numpy(), volumes_std=std.numpy(), apix=out_apix,
        tau_mean=tau_mean.cpu().double().numpy(), tau_std=tau_std.cpu().double().numpy(),
        tau_mean_chains=torch.stack([sampler.tau_moments(c)[0] for c in range(len(sampler.chains))]).cpu().double()
        .numpy(),
        rotations=part.rotations.cpu().double().numpy(), shifts_a=part.shifts_a.cpu().double().numpy(),
        contrast=part.contrast.cpu().double().numpy(),
        theta_mean=sampler.theta_samples(best).double().mean(0).cpu().numpy(),
        theta_samples=samples.cpu().float().numpy(), layout=stored_layout, acceptance=sampler.acceptance(best),
        traces=traces, chain=best, chain_scores=scores, seconds=time.perf_counter() - t0, config=config)
    report(progress, 1.0, f"done: {len(dataset)} particles, states {result.state_names}, acceptance "
           + ", ".join(f"{k} {v:.2f}" for k, v in result.acceptance.items()))
    return result


def run(dataset: Any, config: HyperMoleculeConfig, *, inputs: dict[str, Any] | None = None,
        progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
        run_dir: str | Path | None = None) -> HyperMoleculeResult:
    """:func:`run_hypermolecule` for the workspace (no inputs from other runs)."""
    return run_hypermolecule(dataset, config, progress=progress, cancel=cancel, run_dir=run_dir)


def _estimate_bytes(dataset: Any, config: HyperMoleculeConfig) -> int:
    """Maps (mean and std on the τ grid, assuming up to 2 knobs), per-particle variables and the
    checkpoint's θ samples (generously 20 000 coefficients each), float32/64, plus 1 MB."""
    d = int(config.output_size_px or dataset.box_size)
    maps = 2 * 4 * config.tau_grid_size**2 * d**3
    particles = len(dataset) * 8 * (9 + 2 + 1 + 4 * 2) * (1 + config.n_chains)
    theta = 2 * 4 * 20_000 * config.n_sample_sweeps * config.n_chains
    return int(maps + particles + theta + 2**20)


STAGE = StageSpec(
    name="hypermolecule",
    title="Hyper-molecule sampler (Lederman, Andén & Singer 2020)",
    config=HyperMoleculeConfig,
    result=HyperMoleculeResult,
    run=run,
    estimate_bytes=_estimate_bytes,
    paper="Lederman, Andén & Singer 2020, Hyper-molecules: on the representation and recovery of dynamical "
          "structures for applications in flexible macro-molecules in cryo-EM",
)
