"""Adenylate kinase (AdK): the closed→open trajectory and the recipes imaged from it.

=====================  =====================================================  ==========================
function               what                                                   seed
=====================  =====================================================  ==========================
:func:`adk_chain`      Cα chains of the AdK closed→open trajectory, Gaussian  000 §3.2, Table 1, Fig. 12
                       atoms σ = 3 Å, 64 px, 200 kV, Cs 2 mm, Q0 0.1,
                       defocus ∈ {1.5, 1.75, 2, 2.25, 2.5} µm
:func:`adk_volumes`    heavy-atom AdK at 10 frames (discrete) or along the    004 §5.1
                       path (continuous), SNR 1/10, defocus 0.2–2 µm
=====================  =====================================================  ==========================

AdK coordinates come from ``sample_data/adk_dims_ca.npz`` and ``adk_dims_heavy.npz`` in
the repository (DIMS trajectory of Beckstein, Seyler & Kumar 2018, CC-BY 4.0; see
``sample_data/README.md``). All coordinates are centred on one fixed point (the mean Cα
centroid over the trajectory), so every frame shares the model frame.
"""

from __future__ import annotations

import numpy as np

from napari_cryohet.core.particle_dataset import ParticleDataset
from napari_cryohet.stages._common import CancelToken, ProgressCallback
from napari_cryohet.stages.simulate.engine import AtomicModel
from napari_cryohet.stages.simulate.recipe_support import _load_npz, _simulate_dataset, _volumes

__all__ = ["load_adk_ca", "load_adk_heavy", "ADK_DOMAINS", "adk_chain", "adk_volumes"]


_ADK_CACHE: dict[str, dict[str, np.ndarray]] = {}


def _adk_centre() -> np.ndarray:
    return load_adk_ca()["centre_a"]


def load_adk_ca() -> dict[str, np.ndarray]:
    """AdK Cα trajectory: ``coords (102, 214, 3)`` Å centred, ``resnames``, ``resids``.

    ``centre_a`` is the (x, y, z) subtracted from the file's coordinates (the mean Cα
    centroid over all frames), shared with :func:`load_adk_heavy`.
    """
    if "ca" not in _ADK_CACHE:
        data = _load_npz("adk_dims_ca.npz")
        coords = data["coords"].astype(np.float32)
        centre = coords.mean(axis=(0, 1))
        _ADK_CACHE["ca"] = {"coords": coords - centre, "resnames": data["resnames"], "resids": data["resids"],
                            "centre_a": centre.astype(np.float32)}
    return _ADK_CACHE["ca"]


#: Atomic numbers used as Gaussian-atom weights for heavy atoms.
_ATOMIC_NUMBER = {"C": 6.0, "N": 7.0, "O": 8.0, "S": 16.0, "P": 15.0, "H": 1.0}


def load_adk_heavy() -> dict[str, np.ndarray]:
    """AdK heavy atoms: ``coords (102, 1656, 3)`` Å (same frame as :func:`load_adk_ca`),
    ``elements``, ``resids``, ``weights`` (atomic numbers)."""
    if "heavy" not in _ADK_CACHE:
        data = _load_npz("adk_dims_heavy.npz")
        coords = data["coords"].astype(np.float32) - _adk_centre()
        elements = data["elements"].astype(str)
        weights = np.array([_ATOMIC_NUMBER.get(e[:1].upper(), 6.0) for e in elements], dtype=np.float32)
        _ADK_CACHE["heavy"] = {"coords": coords, "elements": elements, "resids": data["resids"], "weights": weights}
    return _ADK_CACHE["heavy"]


#: Domains of E. coli adenylate kinase by residue ranges (inclusive): the CORE, the
#: AMP-binding NMP domain and the ATP lid (LID).
ADK_DOMAINS: dict[str, tuple[tuple[int, int], ...]] = {
    "CORE": ((1, 29), (60, 121), (160, 214)),
    "NMP": ((30, 59),),
    "LID": ((122, 159),),
}


def _trajectory_at(coords: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Coordinates at path positions ``t ∈ [0, 1]`` by linear interpolation between frames.

    ``coords (F, M, 3)``, ``t (N,)`` → ``(N, M, 3)``.
    """
    f = np.clip(np.asarray(t, dtype=np.float64), 0.0, 1.0) * (len(coords) - 1)
    lo = np.floor(f).astype(np.int64)
    hi = np.minimum(lo + 1, len(coords) - 1)
    w = (f - lo).astype(np.float32)[:, None, None]
    return (1 - w) * coords[lo] + w * coords[hi]


def adk_chain(
    n_particles: int = 200,
    *,
    box_size: int = 64,
    apix: float = 2.0,
    snr: float | None = 0.05,
    sigma_a: float = 3.0,
    continuous: bool = False,
    voltage_kv: float = 200.0,
    cs_mm: float = 2.0,
    amplitude_contrast: float = 0.1,
    defocus_values_um: tuple[float, ...] = (1.5, 1.75, 2.0, 2.25, 2.5),
    shift_std_a: float = 0.0,
    seed: int = 0,
    batch_size: int = 256,
    device: str | None = "cpu",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> ParticleDataset:
    """Cα chains of the AdK closed→open trajectory (000_8d73a95ce4c6e7ab.txt §3.2.1).

    Each particle takes a frame drawn uniformly from the 102 frames (or, with
    ``continuous=True``, a position ``t ~ U[0, 1]`` along the path, linearly interpolated
    between frames), a uniform pose on SO(3), and a defocus drawn from
    ``defocus_values_um``; its density is a sum of Gaussians of σ = 3 Å at the Cα atoms
    (eq. 3.8), imaged at 200 kV, Cs 2 mm, amplitude contrast 0.1 on 64 × 64 pixels
    (Table 1 conditions). The paper gives no pixel size; 2 Å/px (a 128 Å box) holds the
    largest frame (radius 35 Å) with its CTF fringes. Its SNRs are 0.055 and 0.0136.

    Ground truth
    ------------
    ``state``
        ``(N,)`` int frame index (discrete) or ``(N, 1)`` float path position ``t``
        (continuous).
    ``state_params``
        ``(N, 1)`` path position ``t = frame / 101`` ∈ [0, 1].
    ``coords_a``
        ``(N, 214, 3)`` Cα coordinates, model frame, Å.
    ``global/reference_coords_a``
        ``(214, 3)`` frame 0, the known conformation of §3.2 (Assumption 2).
    ``global/trajectory_coords_a``
        ``(102, 214, 3)`` all frames.
    ``global/sigma_a``, ``clean_images``, ``global/snr``, ``global/noise_var``.
    """
    ca = load_adk_ca()
    traj = ca["coords"]  # (F, 214, 3)
    n_frames = len(traj)
    rng = np.random.default_rng([int(seed), 30])
    if continuous:
        t = rng.uniform(0.0, 1.0, n_particles)
        coords = _trajectory_at(traj, t)
        state: np.ndarray = t[:, None].astype(np.float32)
    else:
        frame = rng.integers(0, n_frames, n_particles)
        coords = traj[frame]
        t = frame / (n_frames - 1)
        state = frame.astype(np.int64)
    truth = {
        "state": state,
        "state_params": t[:, None].astype(np.float32),
        "global/reference_coords_a": traj[0],
        "global/trajectory_coords_a": traj,
    }
    model = AtomicModel(coords_a=coords, sigma_a=sigma_a, truth=truth)
    return _simulate_dataset("adk_chain", model, box_size=box_size, apix=apix, snr=snr, voltage_kv=voltage_kv,
                             cs_mm=cs_mm, amplitude_contrast=amplitude_contrast, defocus_values_um=defocus_values_um,
                             shift_std_a=shift_std_a, seed=seed, batch_size=batch_size, device=device,
                             progress=progress, cancel=cancel)


def adk_volumes(
    n_particles: int = 200,
    *,
    n_conformations: int = 10,
    continuous: bool = False,
    box_size: int = 64,
    apix: float = 1.5,
    sigma_a: float = 1.5,
    snr: float | None = 0.1,
    defocus_range_um: tuple[float, float] = (0.2, 2.0),
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
    """Heavy-atom AdK volumes at chosen frames, seed 004 §5.1 style.

    ``n_conformations`` frames evenly spaced along the closed→open trajectory; discrete
    mode gives each conformation an equal share of the particles (like the ten states of
    004 §5.1), continuous mode draws ``t ~ U[0, 1]`` along the whole path. Heavy atoms
    are Gaussians of σ = ``sigma_a`` weighted by atomic number; images are their exact
    analytic projections (no voxel grid), SNR 1/10, defocus uniform in 0.2–2 µm.

    Ground truth
    ------------
    ``state``
        ``(N,)`` int conformation index (discrete) or ``(N, 1)`` float ``t`` (continuous).
    ``state_params``
        ``(N, 1)`` path position ``t`` ∈ [0, 1].
    ``coords_a``
        continuous mode only: ``(N, 1656, 3)`` heavy-atom coordinates.
    ``global/volumes``
        ``(C, D, D, D)`` densities of the chosen frames (``core.atoms.gaussian_density_3d``).
    ``global/volume_states``
        ``(C,)`` path positions of those frames; ``global/frames`` ``(C,)`` frame indices.
    ``global/conformation_coords_a``
        ``(C, 1656, 3)``; ``global/atom_weights`` ``(1656,)``.
    """
    heavy = load_adk_heavy()
    traj, weights = heavy["coords"], heavy["weights"]
    n_frames = len(traj)
    if not 1 <= n_conformations <= n_frames:
        raise ValueError(f"n_conformations must lie in [1, {n_frames}], got {n_conformations}")
    frames = np.unique(np.linspace(0, n_frames - 1, n_conformations).round().astype(np.int64))
    conf_coords = traj[frames]  # (C, M, 3)
    volume_states = (frames / (n_frames - 1)).astype(np.float32)
    rng = np.random.default_rng([int(seed), 40])
    truth: dict[str, np.ndarray] = {
        "global/volume_states": volume_states,
        "global/frames": frames,
        "global/conformation_coords_a": conf_coords,
        "global/atom_weights": weights,
    }
    if continuous:
        t = rng.uniform(0.0, 1.0, n_particles)
        truth["state"] = t[:, None].astype(np.float32)
        truth["state_params"] = t[:, None].astype(np.float32)
        model = AtomicModel(coords_a=_trajectory_at(traj, t), sigma_a=sigma_a, weights=weights, truth=truth)
    else:
        conformation = rng.permutation(np.arange(n_particles) % len(frames))
        truth["state"] = conformation.astype(np.int64)
        truth["state_params"] = volume_states[conformation][:, None]
        model = AtomicModel(coords_a=conf_coords, sigma_a=sigma_a, conformation=conformation, weights=weights,
                            truth=truth, store_coords=False)
    truth["global/volumes"] = _volumes(conf_coords, d=box_size, apix=apix, sigma_a=sigma_a, weights=weights,
                                       device=device, progress=progress)
    return _simulate_dataset("adk_volumes", model, box_size=box_size, apix=apix, snr=snr, voltage_kv=voltage_kv,
                             cs_mm=cs_mm, amplitude_contrast=amplitude_contrast, defocus_range_um=defocus_range_um,
                             shift_std_a=shift_std_a, seed=seed, batch_size=batch_size, device=device,
                             progress=progress, cancel=cancel)
