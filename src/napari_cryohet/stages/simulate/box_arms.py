"""The 2D box with two arms of Esteve-Yagüe et al. 2022 (seed 000 §3.1).

:func:`box_arms_2d` returns a :class:`Toy2DDataset`: 1D projections of a 2D chain of 149
points (δ = 3.5) whose two arms and box turn (eq. 3.1–3.3), noise variance 2500, plus the
noisy 64 × 64 densities of Assumption 3. The projections are not square images, so this
recipe does not go through :func:`~napari_cryohet.stages.simulate.engine.simulate`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "Toy2DDataset",
    "box_arms_angles",
    "box_arms_chain",
    "project_points_1d",
    "density_2d",
    "box_arms_2d",
    "superpose_2d",
    "LOW_DIM_FRAMES",
    "BOX_ARMS_AMPLITUDE",
]

#: ``ν`` of eq. 2.9 for the projections: puts the variance of the clean projections at
#: 182.6, the value reported in §3.1 of 000_8d73a95ce4c6e7ab.txt (measured on 20 000
#: random conformations and poses), so its noise variance 2500 gives its SNR 0.073.
BOX_ARMS_AMPLITUDE = 0.0699
#: 0-based index of ``θ_j`` for the paper's 1-based ``j``.
_J = {33: 32, 53: 52, 73: 72, 93: 92, 123: 122, 133: 132}


def box_arms_angles(arm1_rad: Any, arm2_rad: Any, box_rad: Any, *, m: int = 149) -> torch.Tensor:
    """Turning angles ``Θ (..., m-2)`` of the box with two arms, eq. 3.2–3.3 of seed 000.

    ``θ_33 = −π/2 + arm1``, ``θ_133 = −π/2 + arm2``, ``θ_53 = θ_93 = −π/2 + box``,
    ``θ_73 = θ_123 = −π/2 − box`` (1-based ``j`` as in the paper), all other angles 0.
    The reference conformation (arms aligned, square box) has all three parameters 0.
    """
    a1, a2, b = (torch.as_tensor(v, dtype=torch.float64) for v in (arm1_rad, arm2_rad, box_rad))
    a1, a2, b = torch.broadcast_tensors(a1, a2, b)
    theta = torch.zeros(*a1.shape, m - 2, dtype=torch.float64)
    half = -torch.pi / 2
    theta[..., _J[33]] = half + a1
    theta[..., _J[133]] = half + a2
    theta[..., _J[53]] = half + b
    theta[..., _J[93]] = half + b
    theta[..., _J[73]] = half - b
    theta[..., _J[123]] = half - b
    return theta


def box_arms_chain(theta: torch.Tensor, *, delta: float = 3.5, j0: int = 33) -> torch.Tensor:
    """Chain ``(..., m, 2)`` from turning angles, eq. 3.1 of seed 000, model frame.

    The reference atom ``z_{j0}`` (1-based ``j0``, default 33 as in the paper) sits at the
    origin with frame ``F_{j0} = I`` (its bond points along +y).
    """
    from napari_cryohet.core.frenet_2d import build_chain_2d

    theta = torch.as_tensor(theta, dtype=torch.float64)
    zero = torch.zeros(2, dtype=theta.dtype)
    return build_chain_2d(theta, ref_index=j0 - 1, ref_position=zero, ref_frame=torch.eye(2, dtype=theta.dtype),
                          bond_lengths_a=delta)


def _rotate_2d(coords: torch.Tensor, angle_rad: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(angle_rad)[..., None], torch.sin(angle_rad)[..., None]
    x, y = coords[..., 0], coords[..., 1]
    return torch.stack([c * x - s * y, s * x + c * y], -1)


def project_points_1d(coords: torch.Tensor, *, grid_x_a: torch.Tensor, sigma: float,
                      amplitude: float = 1.0) -> torch.Tensor:
    """Exact projection along y of a 2D Gaussian sum, eq. 3.4 of seed 000 (times ``ν``).

    ``∫ ν Σ_j exp(−|x − z_j|² / 2σ²) dy = ν √(2π) σ Σ_j exp(−(x − x_j)² / 2σ²)``.

    Parameters
    ----------
    coords
        ``(..., M, 2)`` posed point coordinates (x, y), differentiable.
    grid_x_a
        ``(L,)`` sample positions along x.

    Returns
    -------
    ``(..., L)`` projections.
    """
    diff = grid_x_a - coords[..., :, 0:1]  # (..., M, L)
    gauss = torch.exp(-0.5 * (diff / sigma) ** 2)
    return amplitude * np.sqrt(2 * np.pi) * sigma * gauss.sum(-2)


def density_2d(coords: torch.Tensor, *, grid_a: torch.Tensor, sigma: float) -> torch.Tensor:
    """2D density ``u(x) = Σ_j exp(−|x − z_j|² / 2σ²)`` (eq. 3.4 of seed 000) on a grid.

    ``coords (..., M, 2)``, ``grid_a (G,)`` (the same axis for x and y) → ``(..., G, G)``
    indexed (y, x). Separable: an outer product per point.
    """
    gx = torch.exp(-0.5 * ((grid_a - coords[..., :, 0:1]) / sigma) ** 2)  # (..., M, G)
    gy = torch.exp(-0.5 * ((grid_a - coords[..., :, 1:2]) / sigma) ** 2)  # (..., M, G)
    return torch.einsum("...my,...mx->...yx", gy, gx)


@dataclass
class Toy2DDataset:
    """The 2D box-with-two-arms dataset of seed 000 §3.1 (1D projections of 2D chains).

    Per particle ``i`` (first axis ``N``):

    Attributes
    ----------
    projections
        ``(N, L)`` noisy 1D projections ``Y_i = T(u_i) + ς_i`` (float32).
    clean_projections
        ``(N, L)`` noiseless projections ``T(u_i)``.
    rotation_angles_rad
        ``(N,)`` in-plane pose ``F̂_i = R(α_i)`` (uniform on SO(2)); the posed chain is
        ``R(α_i) z`` (see :meth:`posed_coords`), projected along y onto ``grid_x_a``.
    coords
        ``(N, m, 2)`` chain in the model frame (``z_{j0} = 0``, ``F_{j0} = I``), before
        the pose.
    angles_rad
        ``(N, m-2)`` turning angles ``Θ_i`` (eq. 3.1–3.3).
    state_params
        ``(N, 3)`` the three true parameters (``θ̃_33``, ``θ̃_133``, ``θ̃_box``) in radians:
        the two arm angles ∈ [−π/2, π/2] and the box angle ∈ [−π/4, π/4].
    low_dim
        ``(N, G, G)`` noisy 2D densities (eq. 3.4, noise variance ``low_dim_noise_var``):
        the low-dimensional representation of Assumption 3 used for the graph Laplacian in
        §3.1, in the frame ``low_dim_frame`` names.
    reference_coords, reference_angles_rad
        ``(m, 2)``, ``(m-2,)``: the known conformation (all three parameters 0).
    grid_x_a, low_dim_grid_a
        ``(L,)``, ``(G,)`` sample positions (Å) of the projections and of the densities.
    delta, sigma, amplitude, noise_var, low_dim_noise_var, j0
        Bond length, Gaussian width, ``ν`` of the projections, noise variances and the
        1-based reference atom.
    low_dim_frame
        Frame of ``low_dim``: ``"consensus"`` (each chain superposed on
        ``reference_coords`` by least squares over all atoms, centroid at the origin — the
        frame a consensus refinement aligns particles to; :func:`superpose_2d`) or
        ``"anchor"`` (the model frame of ``coords``, ``z_{j0} = 0``, ``F_{j0} = I``).
        Files written before this field existed load as ``"anchor"``.
    """

    projections: np.ndarray
    clean_projections: np.ndarray
    rotation_angles_rad: np.ndarray
    coords: np.ndarray
    angles_rad: np.ndarray
    state_params: np.ndarray
    low_dim: np.ndarray
    reference_coords: np.ndarray
    reference_angles_rad: np.ndarray
    grid_x_a: np.ndarray
    low_dim_grid_a: np.ndarray
    delta: float
    sigma: float
    amplitude: float
    noise_var: float
    low_dim_noise_var: float
    j0: int
    seed: int = 0
    low_dim_frame: str = "anchor"

    def __post_init__(self) -> None:
        # not a field (not saved): where the dataset came from, as for a ParticleDataset
        # (``meta["recipe"]``, set by the simulate stage's ``make_dataset``)
        self.meta: dict = {"name": "box_arms_2d"}

    def __len__(self) -> int:
        return len(self.projections)

    def posed_coords(self) -> np.ndarray:
        """``(N, m, 2)`` chains in their poses, ``R(α_i) z_i``."""
        return _rotate_2d(torch.as_tensor(self.coords, dtype=torch.float64),
                          torch.as_tensor(self.rotation_angles_rad, dtype=torch.float64)).numpy().astype(np.float32)

    def low_dim_coords(self) -> np.ndarray:
        """``(N, m, 2)`` chains in the frame of ``low_dim`` (``low_dim_frame``), float32."""
        return _low_dim_frame_coords(self.coords, self.reference_coords, self.low_dim_frame).astype(np.float32)

    def measured_snr(self) -> float:
        """``var(clean projections) / var(noise)``."""
        noise = self.projections.astype(np.float64) - self.clean_projections
        return float(self.clean_projections.var() / noise.var())

    def save(self, path: str | Path) -> Path:
        """Write every field to one ``.npz`` (atomic)."""
        from napari_cryohet.io.atomic import save_npz_atomic

        arrays = {f.name: np.asarray(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return save_npz_atomic(path, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> Toy2DDataset:
        """Read a dataset written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as data:
            kwargs = {}
            for f in dataclasses.fields(cls):
                if f.name not in data.files and f.default is not dataclasses.MISSING:
                    continue  # a field added later: its default (see the attribute docs)
                value = data[f.name]
                kwargs[f.name] = value.item() if value.ndim == 0 else value
        for name in ("j0", "seed"):
            kwargs[name] = int(kwargs[name])
        if "low_dim_frame" in kwargs:
            kwargs["low_dim_frame"] = str(kwargs["low_dim_frame"])
        return cls(**kwargs)


LOW_DIM_FRAMES = ("consensus", "anchor")


def superpose_2d(coords: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Least-squares superposition of 2D point clouds on a reference (Kabsch in 2D).

    Each ``coords[i]`` is centred on its centroid and turned by the proper rotation that
    minimises ``Σ_j |R (z_ij − c_i) − (r_j − c_r)|²``; in 2D that angle is closed-form,
    ``atan2(Σ_j x_j × y_j, Σ_j x_j · y_j)`` with ``x`` the centred points and ``y`` the
    centred reference (``scipy.linalg.orthogonal_procrustes`` would also allow a reflection).

    Parameters
    ----------
    coords
        ``(N, m, 2)`` point clouds.
    reference
        ``(m, 2)`` the cloud to superpose on.

    Returns
    -------
    ``(N, m, 2)`` float64 superposed clouds, centroid at the origin.
    """
    x = np.asarray(coords, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if x.ndim != 3 or x.shape[-1] != 2 or r.shape != x.shape[1:]:
        raise ValueError(f"superpose_2d: expected coords (N, m, 2) and reference (m, 2), "
                         f"got {x.shape} and {r.shape}")
    x = x - x.mean(axis=1, keepdims=True)
    r = r - r.mean(axis=0)
    dot = np.einsum("nmi,mi->n", x, r)
    cross = np.einsum("nm,m->n", x[..., 0], r[:, 1]) - np.einsum("nm,m->n", x[..., 1], r[:, 0])
    return _rotate_2d(torch.as_tensor(x), torch.as_tensor(np.arctan2(cross, dot))).numpy()


def _low_dim_frame_coords(coords: np.ndarray, reference: np.ndarray, frame: str) -> np.ndarray:
    """Chains ``(N, m, 2)`` in the frame ``frame`` of the low-dimensional densities."""
    if frame == "consensus":
        return superpose_2d(coords, reference)
    return np.asarray(coords, dtype=np.float64)


def box_arms_2d(
    n_particles: int = 400,
    *,
    noise_var: float = 2500.0,
    grid_size: int = 128,
    grid_spacing_a: float = 2.5,
    low_dim_size: int = 64,
    low_dim_spacing_a: float = 5.0,
    low_dim_noise_var: float = 9.0,
    sigma: float = 7.0,
    delta: float = 3.5,
    amplitude: float = BOX_ARMS_AMPLITUDE,
    low_dim_frame: str = "consensus",
    seed: int = 0,
) -> Toy2DDataset:
    """The 2D box with two arms of 000_8d73a95ce4c6e7ab.txt §3.1.

    A chain of ``m = 149`` points, ``δ = 3.5`` (eq. 3.1), all turning angles 0 except at
    the corners (eq. 3.2–3.3): arm angles ``θ̃_33, θ̃_133 ~ U[−π/2, π/2]``, box angle
    ``θ̃_box ~ U[−π/4, π/4]``; reference atom ``j0 = 33``. Each chain is rotated by
    ``F̂ ~ U(SO(2))``; its density (eq. 3.4, σ = 7) is projected along the vertical axis
    onto ``grid_size`` = 128 points and Gaussian noise of variance 2500 is added. With
    ``ν`` = :data:`BOX_ARMS_AMPLITUDE` the clean projections have variance ≈ 182.6 and the
    SNR is 0.073, as in the paper. The low-dimensional representation is the density of
    each chain on a 64 × 64 grid plus noise of variance 9 (§3.1).

    The paper does not state the grid spacing; 2.5 Å (projections) and 5 Å (densities)
    cover the largest conformation (radius 133 Å about ``z_{j0}`` plus 3σ; 135 Å about the
    centroid of a superposed chain).

    Nor does it state the frame of the densities. Assumption 3 has them come from a
    low-resolution reconstruction of each particle, which in cryo-EM is aligned to the
    consensus map; ``low_dim_frame="consensus"`` (default) superposes each chain on the
    reference conformation over all atoms (:func:`superpose_2d`). ``"anchor"`` keeps the
    frame of eq. 3.1 (``z_{33}``, ``F_{33}`` fixed), in which the hinge at θ_33 swings the
    box and the second arm (115 atoms) about atom 34 and the short arm sweeps the whole
    field of view; there its density spreads over hundreds of principal components and even
    a supervised regressor on 30 of them predicts θ̃_133 with R² ≈ 0.74 only
    (docs/spectral.md).

    Parameters
    ----------
    n_particles
        ``N`` (the paper uses 4000).
    low_dim_frame
        ``"consensus"`` or ``"anchor"`` (see above).
    seed
        Everything random derives from it.

    Returns
    -------
    Toy2DDataset
    """
    if n_particles < 1:
        raise ValueError(f"n_particles must be >= 1, got {n_particles}")
    if low_dim_frame not in LOW_DIM_FRAMES:
        raise ValueError(f"low_dim_frame: expected one of {LOW_DIM_FRAMES}, got {low_dim_frame!r}")
    rng = np.random.default_rng([int(seed), 20])
    arms = rng.uniform(-np.pi / 2, np.pi / 2, (n_particles, 2))
    box = rng.uniform(-np.pi / 4, np.pi / 4, n_particles)
    alpha = rng.uniform(0.0, 2 * np.pi, n_particles)
    theta = box_arms_angles(arms[:, 0], arms[:, 1], box)  # (N, m-2)
    coords = box_arms_chain(theta, delta=delta)  # (N, m, 2)
    posed = _rotate_2d(coords, torch.as_tensor(alpha))
    grid = (torch.arange(grid_size, dtype=torch.float64) - grid_size // 2) * grid_spacing_a
    clean = project_points_1d(posed, grid_x_a=grid, sigma=sigma, amplitude=amplitude).numpy()
    noisy = clean + rng.normal(0.0, np.sqrt(noise_var), clean.shape)
    low_grid = (torch.arange(low_dim_size, dtype=torch.float64) - low_dim_size // 2) * low_dim_spacing_a
    ref_theta = box_arms_angles(0.0, 0.0, 0.0)
    reference = box_arms_chain(ref_theta, delta=delta)
    low_coords = torch.as_tensor(_low_dim_frame_coords(coords.numpy(), reference.numpy(), low_dim_frame))
    low = np.empty((n_particles, low_dim_size, low_dim_size), dtype=np.float32)
    for s in range(0, n_particles, 256):
        low[s:s + 256] = density_2d(low_coords[s:s + 256], grid_a=low_grid, sigma=sigma).numpy()
    low += rng.normal(0.0, np.sqrt(low_dim_noise_var), low.shape).astype(np.float32)
    return Toy2DDataset(
        projections=noisy.astype(np.float32),
        clean_projections=clean.astype(np.float32),
        rotation_angles_rad=alpha.astype(np.float32),
        coords=coords.numpy().astype(np.float32),
        angles_rad=theta.numpy().astype(np.float32),
        state_params=np.column_stack([arms, box]).astype(np.float32),
        low_dim=low,
        reference_coords=reference.numpy().astype(np.float32),
        reference_angles_rad=ref_theta.numpy().astype(np.float32),
        grid_x_a=grid.numpy().astype(np.float32),
        low_dim_grid_a=low_grid.numpy().astype(np.float32),
        delta=float(delta), sigma=float(sigma), amplitude=float(amplitude), noise_var=float(noise_var),
        low_dim_noise_var=float(low_dim_noise_var), j0=33, seed=int(seed), low_dim_frame=low_dim_frame,
    )
