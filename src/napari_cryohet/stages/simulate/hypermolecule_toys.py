"""Hyper-molecule toys of Lederman, Andén & Singer 2020 (seed 001): the cat and the pretzel.

=====================  =====================================================  ==========================
function               what                                                   seed
=====================  =====================================================  ==========================
:func:`cat`            Gaussian blobs, 1D state τ: the head turns             001 §3.1.1
:func:`pretzel`        rigid base + two identical, independent arms (τ₁, τ₂)  001 §3.1.2, §5
=====================  =====================================================  ==========================
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_cryohet.core.particle_dataset import ParticleDataset
from napari_cryohet.stages._common import CancelToken, ProgressCallback
from napari_cryohet.stages.simulate.engine import AtomicModel
from napari_cryohet.stages.simulate.recipe_support import _simulate_dataset, _volumes

__all__ = ["cat_blobs", "cat", "pretzel_blobs", "pretzel", "pretzel_symmetries", "CAT_PARTS", "PRETZEL_PARTS"]


def _rot_z(angle: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    z, o = np.zeros_like(c), np.ones_like(c)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def _rot_y(angle: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    z, o = np.zeros_like(c), np.ones_like(c)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


_CAT_BODY = np.array(
    [[x, 0.0, 0.0] for x in range(-30, 31, 10)]  # torso
    + [[sx * 24.0, sy * 8.0, z] for sx in (-1, 1) for sy in (-1, 1) for z in (-10.0, -20.0, -30.0)]  # legs
    + [[-38.0, 0.0, 6.0], [-45.0, 0.0, 14.0], [-50.0, 0.0, 23.0], [-52.0, 0.0, 32.0]]  # tail
    + [[36.0, 0.0, 10.0]],  # neck
    dtype=np.float64,
)
_CAT_PIVOT = np.array([36.0, 0.0, 10.0])
_CAT_HEAD = np.array([[10.0, 0.0, 8.0], [8.0, 6.0, 18.0], [8.0, -6.0, 18.0], [18.0, 0.0, 6.0]])  # about the pivot
_CAT_WEIGHTS = np.concatenate([np.full(7, 1.5), np.ones(12), np.ones(4), [1.0], [2.0, 1.0, 1.0, 1.0]]).astype(np.float32)
#: part of each cat blob: 0 rigid body, 1 head (moves with τ).
CAT_PARTS = np.concatenate([np.zeros(len(_CAT_BODY)), np.ones(len(_CAT_HEAD))]).astype(np.int64)


def cat_blobs(tau: Any) -> np.ndarray:
    """Blob centres of the cat at states ``τ`` (001 §3.1.1): ``(N,)`` → ``(N, 28, 3)`` Å.

    A rigid body (torso, four legs, tail, neck) and a head whose blobs turn about the
    vertical axis through the neck by ``φ(τ) = (τ − ½) π`` (−90° … +90°): every centre
    follows a continuous trajectory in ``τ ∈ [0, 1]``. Centred so that ``τ = ½`` has its
    centroid at the origin.
    """
    tau = np.atleast_1d(np.asarray(tau, dtype=np.float64))
    head = _CAT_PIVOT + np.einsum("nij,mj->nmi", _rot_z((tau - 0.5) * np.pi), _CAT_HEAD)  # (N, 4, 3)
    body = np.broadcast_to(_CAT_BODY, (len(tau), *_CAT_BODY.shape))
    blobs = np.concatenate([body, head], axis=1)
    centre = np.concatenate([_CAT_BODY, _CAT_PIVOT + _CAT_HEAD]).mean(0)
    return (blobs - centre).astype(np.float32)


def _pretzel_base() -> np.ndarray:
    s = np.linspace(0, 2 * np.pi, 10, endpoint=False)
    rings = [np.column_stack([cx + 12 * np.cos(s), 12 * np.sin(s), np.zeros_like(s)]) for cx in (-14.0, 14.0)]
    return np.concatenate(rings)


_PRETZEL_BASE = _pretzel_base()
_PRETZEL_ARM_BLOBS = 5
#: part of each pretzel blob: 0 rigid base, 1 arm 1, 2 arm 2.
PRETZEL_PARTS = np.concatenate([np.zeros(len(_PRETZEL_BASE)), np.ones(_PRETZEL_ARM_BLOBS),
                                np.full(_PRETZEL_ARM_BLOBS, 2)]).astype(np.int64)


def _pretzel_arm(tau: np.ndarray) -> np.ndarray:
    """One arm at states ``τ (N,)``: 5 blobs from (30, 0, 0) outwards, bending in x–z."""
    beta = (tau - 0.5) * (2 * np.pi / 3)  # ±60°
    j = np.arange(_PRETZEL_ARM_BLOBS)
    angles = beta[:, None] * (0.6 + 0.4 * j / (_PRETZEL_ARM_BLOBS - 1))  # (N, 5): a curling arm
    steps = 8.0 * np.stack([np.cos(angles), np.zeros_like(angles), np.sin(angles)], -1)
    return np.array([30.0, 0.0, 0.0]) + np.cumsum(steps, axis=1) - steps[:, :1]


def pretzel_blobs(tau: Any) -> np.ndarray:
    """Blob centres of the pretzel at states ``τ (N, 2)`` (001 §3.1.2) → ``(N, 30, 3)`` Å.

    A rigid base (two touching rings of 10 blobs in the x–y plane) and two identical arms
    related by the C₂ rotation about z (001 §5, Remark 5), each bending independently in
    its own state ``τ_k ∈ [0, 1]`` (±60° at its root, curling further along the arm).
    """
    tau = np.atleast_2d(np.asarray(tau, dtype=np.float64))
    if tau.shape[-1] != 2:
        raise ValueError(f"tau: expected (N, 2) arm states, got {tau.shape}")
    arm1 = _pretzel_arm(tau[:, 0])
    arm2 = _pretzel_arm(tau[:, 1]) * np.array([-1.0, -1.0, 1.0])  # C2 about z
    base = np.broadcast_to(_PRETZEL_BASE, (len(tau), *_PRETZEL_BASE.shape))
    return np.concatenate([base, arm1, arm2], axis=1).astype(np.float32)


def pretzel_symmetries() -> list[tuple[np.ndarray, bool, bool]]:
    """The pretzel's exact symmetries: ``(g, reverse, swap)`` with ``V_τ(g r) = V_σ(τ)(r)``.

    ``g`` is a 180° rotation ``(3, 3)``; ``σ`` reverses both arms' states (``τ → 1 − τ``) when
    ``reverse`` and swaps the arms when ``swap``. The base (two rings in the x–y plane) is
    unchanged by a half turn about x, y or z; each arm bends in its own vertical plane
    through the x axis, so a half turn about x mirrors its bend (``β → −β``, i.e. ``τ → 1 − τ``)
    and one about z carries arm 1 onto arm 2 (001 §5, Remark 5). Hence an image at pose ``R``
    and states ``τ`` is *identical* to one at pose ``R g`` and states ``σ(τ)``: the data
    cannot tell them apart, and a comparison with the truth must allow all four
    (:func:`~napari_cryohet.stages.hypermolecule.C2_Z` is the swap alone).
    """
    return [(np.eye(3), False, False),
            (np.diag([-1.0, -1.0, 1.0]), False, True),   # half turn about z
            (np.diag([1.0, -1.0, -1.0]), True, False),   # about x
            (np.diag([-1.0, 1.0, -1.0]), True, True)]    # about y


def _toy(name: str, blobs: np.ndarray, weights: np.ndarray, state: np.ndarray, volume_states: np.ndarray,
         volume_blobs: np.ndarray, parts: np.ndarray, *, sigma_a: float, box_size: int, apix: float,
         snr: float | None, defocus_range_um: tuple[float, float], shift_std_a: float, seed: int,
         batch_size: int, device: str | None, progress: ProgressCallback | None,
         cancel: CancelToken | None) -> ParticleDataset:
    truth = {
        "state": state.astype(np.float32),
        "state_params": state.astype(np.float32),
        "global/volume_states": volume_states.astype(np.float32),
        "global/blob_weights": weights,
        "global/blob_parts": parts,
    }
    truth["global/volumes"] = _volumes(volume_blobs, d=box_size, apix=apix, sigma_a=sigma_a, weights=weights,
                                       device=device, progress=progress)
    model = AtomicModel(coords_a=blobs, sigma_a=sigma_a, weights=weights, truth=truth)
    return _simulate_dataset(name, model, box_size=box_size, apix=apix, snr=snr, defocus_range_um=defocus_range_um,
                             shift_std_a=shift_std_a, seed=seed, batch_size=batch_size, device=device,
                             progress=progress, cancel=cancel)


def cat(
    n_particles: int = 200,
    *,
    box_size: int = 64,
    apix: float = 3.0,
    sigma_a: float = 5.0,
    snr: float | None = 0.1,
    n_volumes: int = 5,
    defocus_range_um: tuple[float, float] = (1.0, 2.5),
    shift_std_a: float = 0.0,
    seed: int = 0,
    batch_size: int = 256,
    device: str | None = "cpu",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> ParticleDataset:
    """The "cat" of 001_e1fd27914a9da292.txt §3.1.1: Gaussian blobs, 1D state τ.

    ``τ ~ U[0, 1]`` per particle (the direction the head is turned, :func:`cat_blobs`),
    uniform pose, CTF (300 kV, Cs 2.7 mm, defocus uniform in ``defocus_range_um``) and
    white noise at ``snr``, the imaging model of eq. 5–9.

    Ground truth
    ------------
    ``state``, ``state_params``
        ``(N, 1)`` float τ.
    ``coords_a``
        ``(N, 28, 3)`` blob centres.
    ``global/volumes``, ``global/volume_states``
        ``(n_volumes, D, D, D)`` densities at ``τ = linspace(0, 1, n_volumes)``.
    ``global/blob_weights`` ``(28,)``, ``global/blob_parts`` ``(28,)`` (0 body, 1 head),
    ``global/sigma_a``.
    """
    rng = np.random.default_rng([int(seed), 60])
    tau = rng.uniform(0.0, 1.0, n_particles)
    vol_tau = np.linspace(0.0, 1.0, n_volumes)
    return _toy("cat", cat_blobs(tau), _CAT_WEIGHTS, tau[:, None], vol_tau[:, None], cat_blobs(vol_tau), CAT_PARTS,
                sigma_a=sigma_a, box_size=box_size, apix=apix, snr=snr, defocus_range_um=defocus_range_um,
                shift_std_a=shift_std_a, seed=seed, batch_size=batch_size, device=device, progress=progress,
                cancel=cancel)


def pretzel(
    n_particles: int = 200,
    *,
    box_size: int = 64,
    apix: float = 3.0,
    sigma_a: float = 4.0,
    snr: float | None = 1 / 30,
    n_volumes_per_arm: int = 3,
    defocus_range_um: tuple[float, float] = (1.0, 2.5),
    shift_std_a: float = 3.0,
    seed: int = 0,
    batch_size: int = 256,
    device: str | None = "cpu",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> ParticleDataset:
    """The "pretzel" of 001_e1fd27914a9da292.txt §3.1.2 / §5: rigid base, two arms.

    Each arm's state ``τ_k ~ U[0, 1]`` independently (:func:`pretzel_blobs`); uniform
    pose, Gaussian in-plane shifts (``shift_std_a``), CTF and noise at SNR 1/30 as in
    001 §5 (which used 151 px; 64 px here by default).

    Ground truth
    ------------
    ``state``, ``state_params``
        ``(N, 2)`` float ``(τ₁, τ₂)``.
    ``coords_a``
        ``(N, 30, 3)`` blob centres.
    ``global/volumes``, ``global/volume_states``
        ``(k², D, D, D)`` densities on a ``k × k`` grid of arm states and those states
        ``(k², 2)``, ``k = n_volumes_per_arm``.
    ``global/blob_weights`` ``(30,)``, ``global/blob_parts`` ``(30,)`` (0 base, 1 arm 1,
    2 arm 2), ``global/sigma_a``.
    """
    rng = np.random.default_rng([int(seed), 70])
    tau = rng.uniform(0.0, 1.0, (n_particles, 2))
    g = np.linspace(0.0, 1.0, n_volumes_per_arm)
    vol_tau = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    weights = np.ones(len(PRETZEL_PARTS), dtype=np.float32)
    return _toy("pretzel", pretzel_blobs(tau), weights, tau, vol_tau, pretzel_blobs(vol_tau), PRETZEL_PARTS,
                sigma_a=sigma_a, box_size=box_size, apix=apix, snr=snr, defocus_range_um=defocus_range_um,
                shift_std_a=shift_std_a, seed=seed, batch_size=batch_size, device=device, progress=progress,
                cancel=cancel)
