"""Ground-truth simulator: particle images from a model, poses, CTF and noise.

The forward model (eq. 1.1-1.2 of 000_8d73a95ce4c6e7ab.txt, eq. 1 of
004_0460feb3adf92bbd.txt, eq. 5-9 of 001_e1fd27914a9da292.txt)::

    y_i = CTF_i · T_{-s_i}(P_{R_i} V_i) + ε_i,      ε_i ~ N(0, σ² I)

- ``V_i`` is the particle's structure: Gaussian atoms (:class:`AtomicModel`, projected
  analytically, no 3D grid) or a voxel volume (:class:`VolumeModel`, Fourier-slice
  projection);
- ``R_i`` is drawn uniformly (Haar measure) on SO(3) by
  :func:`napari_cryohet.core.rotation.random_rotations` (not uniform Euler angles);
- ``s_i`` (Å, RELION ``rlnOriginX/YAngst``) is Gaussian with standard deviation
  ``shift_std_a`` per axis;
- the CTF (RELION convention, :mod:`napari_cryohet.core.ctf`) has a per-particle defocus
  drawn uniformly from a range or from a set of values;
- the noise is white Gaussian with variance ``σ² = var(clean) / snr``, where ``var(clean)``
  is the variance of all pixels of the clean CTF-filtered stack: the signal-to-noise ratio
  of seed 000 ("the ratio between the variance of the clean tomographic projection and
  [the noise]", Table 1 of 000_8d73a95ce4c6e7ab.txt).

Everything random is drawn from ``seed``: rotations from a torch generator, CTF/shifts
from a numpy generator, the noise from a second numpy stream consumed particle after
particle, so the stack does not depend on the batch size nor on the device.

:func:`simulate` returns a :class:`~napari_cryohet.core.particle_dataset.ParticleDataset` whose
``ground_truth`` holds the model's truth (``"state"``, ``"coords_a"``, ``"global/..."``),
``"clean_images"`` and ``"global/noise_var"``, ``"global/snr"``, ``"global/signal_var"``;
:func:`save_simulation` writes it as ``.mrcs`` + RELION ``.star`` + cryoDRGN pickles with
the ground truth beside them (``<name>_truth.npz``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from napari_cryohet.core.device import select_device
from napari_cryohet.core.particle_dataset import CTFParams, ParticleDataset
from napari_cryohet.core.rotation import random_rotations
from napari_cryohet.stages._common import CancelToken, ProgressCallback, check_cancel, report
from napari_cryohet.stages.simulate.imaging import SimulationConfig, draw_ctf, draw_shifts

__all__ = [
    "ProjectionModel",
    "AtomicModel",
    "VolumeModel",
    "simulate",
    "save_simulation",
    "measured_snr",
]


class ProjectionModel(Protocol):
    """What :func:`simulate` needs from a structure model.

    ``n_particles`` particles; ``project(indices, rotations, d=, apix=, device=)`` returns
    the ``(B, D, D)`` noiseless, CTF-free projections of particles ``indices`` in poses
    ``rotations (B, 3, 3)``; ``ground_truth()`` the model's truth (per-particle arrays with
    first axis ``n_particles`` and ``"global/..."`` entries).
    """

    n_particles: int

    def project(self, indices: np.ndarray, rotations: torch.Tensor, *, d: int, apix: float,
                device: torch.device) -> torch.Tensor: ...

    def ground_truth(self) -> dict[str, np.ndarray]: ...


@dataclass
class AtomicModel:
    """Isotropic Gaussian atoms, one set of coordinates per conformation.

    Parameters
    ----------
    coords_a
        ``(C, M, 3)`` atom coordinates (x, y, z) in Å, model frame (origin at the box centre).
    sigma_a
        Gaussian standard deviation in Å (eq. 2.9 / 3.8 of 000_8d73a95ce4c6e7ab.txt).
    conformation
        ``(N,)`` index into ``coords_a`` for each particle; ``None`` means one conformation
        per particle (``C == N``).
    weights
        ``None`` (all atoms weight 1), ``(M,)`` per-atom weights, or ``(C, M)`` per
        conformation (e.g. 0 for atoms absent from an assembly class).
    truth
        Extra ground truth to return (``"state"``, ``"state_params"``, ``"global/..."``).
    store_coords
        Add ``"coords_a"`` ``(N, M, 3)`` to the ground truth (per-particle coordinates).
    """

    coords_a: np.ndarray
    sigma_a: float
    conformation: np.ndarray | None = None
    weights: np.ndarray | None = None
    truth: dict[str, np.ndarray] = field(default_factory=dict)
    store_coords: bool = True

    def __post_init__(self) -> None:
        self.coords_a = np.asarray(self.coords_a, dtype=np.float32)
        if self.coords_a.ndim != 3 or self.coords_a.shape[-1] != 3:
            raise ValueError(f"coords_a: expected (C, M, 3), got {self.coords_a.shape}")
        if self.conformation is not None:
            self.conformation = np.asarray(self.conformation, dtype=np.int64)
            if self.conformation.ndim != 1 or (len(self.conformation) and (
                    self.conformation.min() < 0 or self.conformation.max() >= len(self.coords_a))):
                raise ValueError(f"conformation: expected (N,) indices in [0, {len(self.coords_a)})")
        if self.weights is not None:
            self.weights = np.asarray(self.weights, dtype=np.float32)
            m = self.coords_a.shape[1]
            if self.weights.shape not in ((m,), (len(self.coords_a), m)):
                raise ValueError(f"weights: expected ({m},) or ({len(self.coords_a)}, {m}), got {self.weights.shape}")
        if not self.sigma_a > 0:
            raise ValueError(f"sigma_a must be positive, got {self.sigma_a}")

    @property
    def n_particles(self) -> int:
        return len(self.coords_a) if self.conformation is None else len(self.conformation)

    def _conf(self, indices: np.ndarray) -> np.ndarray:
        return indices if self.conformation is None else self.conformation[indices]

    def project(self, indices: np.ndarray, rotations: torch.Tensor, *, d: int, apix: float,
                device: torch.device) -> torch.Tensor:
        """``(B, D, D)`` analytic projections (``core.projection.project_gaussian_atoms``)."""
        from napari_cryohet.core.projection import project_gaussian_atoms

        conf = self._conf(np.asarray(indices))
        coords = torch.as_tensor(self.coords_a[conf], device=device)  # (B, M, 3)
        w = None
        if self.weights is not None:  # (M,) shared or (B, M) per conformation
            w = torch.as_tensor(self.weights if self.weights.ndim == 1 else self.weights[conf], device=device)
        return project_gaussian_atoms(coords, rotations, d=d, apix=apix, sigma_a=self.sigma_a, weights=w)

    def ground_truth(self) -> dict[str, np.ndarray]:
        truth = dict(self.truth)
        if self.store_coords and "coords_a" not in truth:
            truth["coords_a"] = self.coords_a[self._conf(np.arange(self.n_particles))]
        truth.setdefault("global/sigma_a", np.float32(self.sigma_a))
        return truth


@dataclass
class VolumeModel:
    """Voxel volumes, one per conformation, projected through the Fourier-slice theorem.

    Projections are voxel sums along the beam (``core.projection`` convention), so a
    volume from ``core.atoms.gaussian_density_3d`` projects like its :class:`AtomicModel`.

    Parameters
    ----------
    volumes
        ``(C, D, D, D)`` (z, y, x) real-space volumes on the simulation grid (same ``D``
        and ``apix`` as the images).
    conformation
        ``(N,)`` index of each particle's volume.
    truth
        Extra ground truth; ``"global/volumes"`` and ``"state"`` are added.
    """

    volumes: np.ndarray
    conformation: np.ndarray
    truth: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.volumes = np.asarray(self.volumes, dtype=np.float32)
        if self.volumes.ndim != 4 or len(set(self.volumes.shape[1:])) != 1:
            raise ValueError(f"volumes: expected (C, D, D, D), got {self.volumes.shape}")
        self.conformation = np.asarray(self.conformation, dtype=np.int64)
        if len(self.conformation) and (self.conformation.min() < 0 or self.conformation.max() >= len(self.volumes)):
            raise ValueError(f"conformation: indices must lie in [0, {len(self.volumes)})")

    @property
    def n_particles(self) -> int:
        return len(self.conformation)

    def project(self, indices: np.ndarray, rotations: torch.Tensor, *, d: int, apix: float,
                device: torch.device) -> torch.Tensor:
        """``(B, D, D)`` projections by ``core.projection.project_volume_fourier``."""
        from napari_cryohet.core.projection import project_volume_fourier

        if self.volumes.shape[-1] != d:
            raise ValueError(f"volumes have edge {self.volumes.shape[-1]}, images {d}")
        conf = self.conformation[np.asarray(indices)]
        out = torch.empty(len(conf), d, d, device=device, dtype=torch.float32)
        for c in np.unique(conf):
            sel = np.flatnonzero(conf == c)
            vol = torch.as_tensor(self.volumes[c], device=device)
            out[sel] = project_volume_fourier(vol, rotations[sel]).to(out.dtype)
        return out

    def ground_truth(self) -> dict[str, np.ndarray]:
        truth = dict(self.truth)
        truth.setdefault("state", self.conformation.copy())
        truth.setdefault("global/volumes", self.volumes)
        return truth


def _render(model: ProjectionModel, idx: np.ndarray, rotations: torch.Tensor, ctf: CTFParams,
            shifts_a: np.ndarray, config: SimulationConfig, device: torch.device) -> np.ndarray:
    """Clean CTF-filtered, shifted images of particles ``idx``: ``(B, D, D)`` float32."""
    from napari_cryohet.core.projection import apply_ctf_and_shift

    rot = rotations[idx].to(device)
    proj = model.project(idx, rot, d=config.box_size, apix=config.apix, device=device)  # (B, D, D)
    ctf_b = ctf.to_torch(indices=idx, device=device) if config.apply_ctf else None
    shifts = torch.as_tensor(shifts_a[idx], device=device) if config.shift_std_a > 0 else None
    if ctf_b is not None or shifts is not None:
        proj = apply_ctf_and_shift(proj, apix=config.apix, ctf=ctf_b, shifts_a=shifts)
    return proj.detach().to("cpu", torch.float32).numpy()


def simulate(
    model: ProjectionModel,
    config: SimulationConfig | None = None,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> ParticleDataset:
    """Simulate a particle stack with ground truth (forward model in the module docstring).

    Parameters
    ----------
    model
        An :class:`AtomicModel`, :class:`VolumeModel` or any :class:`ProjectionModel`.
    config
        Imaging parameters; defaults to :class:`SimulationConfig()`.
    progress, cancel
        Progress callback and cancel token (``stages._common``); checked once per batch.

    Returns
    -------
    ParticleDataset
        ``images (N, D, D)`` float32 in memory, rotations, shifts, CTF and
        ``ground_truth``: the model's truth plus ``"clean_images"`` (if kept) and
        ``"global/snr"``, ``"global/noise_var"``, ``"global/signal_var"``.

    Examples
    --------
    >>> import numpy as np
    >>> atoms = np.zeros((1, 1, 3), np.float32)
    >>> ds = simulate(AtomicModel(atoms, 3.0, conformation=np.zeros(4, int)),
    ...               SimulationConfig(box_size=16, snr=1.0))
    >>> ds.images.shape
    (4, 16, 16)
    """
    config = config or SimulationConfig()
    n, d = int(model.n_particles), config.box_size
    device = select_device(config.device)
    gen = torch.Generator().manual_seed(int(config.seed))
    rotations = random_rotations(n, generator=gen)  # (N, 3, 3) float32, Haar on SO(3)
    rng = np.random.default_rng([int(config.seed), 1])
    ctf = draw_ctf(n, config, rng)
    shifts_a = draw_shifts(n, config, rng)
    noise_rng = np.random.default_rng([int(config.seed), 2])

    batches = [np.arange(s, min(s + config.batch_size, n)) for s in range(0, n, config.batch_size)]
    two_pass = config.snr is not None and not config.keep_clean_images
    n_steps = max(1, len(batches) * (2 if two_pass else 1))
    step = 0
    images = np.empty((n, d, d), dtype=np.float32)
    total, total_sq = 0.0, 0.0
    with torch.no_grad():
        for idx in batches:  # pass 1: clean images (kept) or their statistics
            check_cancel(cancel)
            clean = _render(model, idx, rotations, ctf, shifts_a, config, device)
            if config.keep_clean_images or config.snr is None:
                images[idx] = clean
            total += float(clean.sum(dtype=np.float64))
            total_sq += float(np.square(clean, dtype=np.float64).sum())
            step += 1
            report(progress, step / n_steps, f"projected {idx[-1] + 1}/{n} particles")
        count = max(n * d * d, 1)
        signal_var = total_sq / count - (total / count) ** 2
        clean_images = images.copy() if config.keep_clean_images and config.snr is not None else None
        noise_var = 0.0
        if config.snr is not None:
            noise_var = signal_var / config.snr
            std = np.sqrt(noise_var)
            for idx in batches:  # pass 2: add noise, particle after particle
                check_cancel(cancel)
                if two_pass:
                    images[idx] = _render(model, idx, rotations, ctf, shifts_a, config, device)
                    step += 1
                images[idx] += (std * noise_rng.standard_normal((len(idx), d, d))).astype(np.float32)
                report(progress, step / n_steps, f"noise added to {idx[-1] + 1}/{n} particles")
        elif config.keep_clean_images:
            clean_images = images
    truth = dict(model.ground_truth())
    if clean_images is not None:
        truth["clean_images"] = clean_images
    truth["global/snr"] = np.float64(config.snr if config.snr is not None else np.inf)
    truth["global/noise_var"] = np.float64(noise_var)
    truth["global/signal_var"] = np.float64(signal_var)
    report(progress, 1.0, f"simulated {n} particles")
    return ParticleDataset(
        images=images,
        apix=float(config.apix),
        rotations=rotations.numpy().astype(np.float32),
        shifts_a=shifts_a.astype(np.float32),
        ctf=ctf,
        ground_truth=truth,
        meta={"simulation": dataclasses.asdict(config), "model": type(model).__name__},
    )


def measured_snr(dataset: ParticleDataset) -> float:
    """``var(clean) / var(images − clean)`` of a simulated dataset with kept clean images."""
    truth = dataset.ground_truth or {}
    if "clean_images" not in truth:
        raise ValueError("dataset has no ground_truth['clean_images'] (simulate with keep_clean_images=True)")
    clean = np.asarray(truth["clean_images"], dtype=np.float64)
    noise = np.asarray(dataset.get_images(slice(None)), dtype=np.float64) - clean
    return float(clean.var() / noise.var())


def save_simulation(out_dir: str | Path, dataset: ParticleDataset, *, name: str = "particles") -> dict[str, Any]:
    """Write a simulated dataset: ``<name>.mrcs``, ``.star``, cryoDRGN pickles, truth npz.

    Delegates to :func:`napari_cryohet.io.write_particles.save_dataset` (atomic writes).

    Returns
    -------
    What ``save_dataset`` returns (the written paths).
    """
    from napari_cryohet.io.write_particles import save_dataset

    return save_dataset(Path(out_dir), dataset, name=name)
