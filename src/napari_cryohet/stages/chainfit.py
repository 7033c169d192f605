"""Chain-fit stage: per-particle Cα backbones from spectral expansions of their angles.

Seed 000_8d73a95ce4c6e7ab.txt end to end. A known conformation (the *reference*, Assumption
2) gives the torsion and bond angles ``(Θ₀, Ψ₀)`` of its discrete Frenet frames
(:mod:`napari_cryohet.core.frenet`). Every particle ``i`` gets

    Θ_i = Θ₀ + A Φ_i,   Ψ_i = Ψ₀ + B Φ_i                           (eq. 2.6)

with ``Φ_i`` the ``i``-th row of the ``K`` Laplacian eigenvectors of the spectral stage
(eq. 2.5, scaled here to unit root-mean-square per column, ``√N φ`` — the O(1) scale of
the seed's convergence statement — so that ``A`` and ``B`` are in radians), its chain
``Z(Θ_i, Ψ_i, ẑ_i, F̂_i)`` (eq. 2.1 / 2.8), the analytic projection of Gaussian atoms in
the particle's known pose, its CTF and shift (eq. 2.9–2.10, Assumption 4), and the
mean-square misfit to its image (eq. 2.11), minimised over ``A, B`` by minibatch Adam or
SGD from ``A = B = 0`` (Remark 2.5: every particle starts as the reference).

Choices the seed leaves open, and what this module does
-------------------------------------------------------
- **Reference atom** ``j0`` (0-based): default the atom nearest the reference's centroid
  (the paper's code; §3.2.1 calls it "the middle point"), clipped to ``[0, m-2]``.
- **Anchor** ``(ẑ_i, F̂_i)``: ``"reference"`` uses the reference's position and frame at
  ``j0`` for every particle (the particle's pose then carries the rigid motion — right
  when ``j0`` lies in a rigid core); ``"truth"`` uses each particle's own ground-truth
  position and frame at ``j0`` — Assumption 4 read literally, as the paper's experiments
  do (synthetic data only).
- **Bond length** ``δ``: the mean reference Cα–Cα distance (§3.2.1), or the reference's
  per-bond distances (``bond_length_mode="reference"``), or a given value.
- **Masks** (Remark 2.3, §3.1.1): ``fixed`` angles keep ``Θ₀/Ψ₀`` exactly (no
  coefficient), ``rigid`` angles keep only the constant term ``k = 0``, the rest use all
  ``K``. :func:`angles_for_residues` turns residue ranges into angle indices; angle ``j``
  sits at atom ``j + 1`` (the vertex between bonds ``j`` and ``j + 1``).
- **Loss**: mean over images *and pixels* of the squared residual (eq. 2.11 divided by
  the pixel count, so learning rates do not depend on the box size).
- **Metrics** per epoch on the held-out test particles, scored against their *clean*
  images when the dataset has them (§3.1): test loss, average error (3.7) and
  mean-over-images max error (3.6) against ground-truth coordinates (model frame).

The 2D variant of §3.1 (:func:`run_chainfit_2d`) fits turning angles of a planar chain
(eq. 3.1) to 1D projections of a :class:`~napari_cryohet.stages.simulate.box_arms.Toy2DDataset`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_cryohet.core.ctf import compute_ctf_2d
from napari_cryohet.core.device import select_device
from napari_cryohet.core.fft import fft2_centered, phase_shift_2d
from napari_cryohet.core.frenet import (
    bond_lengths,
    build_chain,
    chain_angles,
    frenet_frames,
)
from napari_cryohet.core.frenet_2d import build_chain_2d, chain_angles_2d, chain_frames_2d
from napari_cryohet.core.particle_dataset import ParticleDataset
from napari_cryohet.core.projection import apply_ctf_and_shift, project_gaussian_atoms
from napari_cryohet.io.atomic import atomic_path, save_npz_atomic
from napari_cryohet.stages._common import (
    LR_SCHEDULES,
    CancelToken,
    ProgressCallback,
    check_cancel,
    report,
    set_scheduled_lr,
    stage_dir,
)

__all__ = [
    "ChainReference",
    "reference_from_pdb",
    "reference_from_dataset",
    "default_reference_atom",
    "angles_for_residues",
    "parse_residue_ranges",
    "ChainFitConfig",
    "ChainFitResult",
    "run_chainfit",
    "run_chainfit_2d",
    "chain_errors",
    "predict_images",
]

EpochCallback = Callable[[dict[str, float]], None]


# ---------------------------------------------------------------------------------------
# reference models


@dataclass
class ChainReference:
    """A known conformation (Assumption 2): Cα coordinates and residue labels.

    Attributes
    ----------
    coords_a
        ``(m, 3)`` (or ``(m, 2)`` for planar chains) float64 positions in Å, in the frame of
        the dataset's poses (model frame).
    resnames, resids
        ``(m,)`` residue names and numbers (defaults ``"ALA"``, ``1 … m``).
    gaps
        ``(G,)`` bond indices where the chain is broken (from :func:`read_ca_chain`).
    source
        Where it came from (file path, ``"dataset:global/reference_coords_a"``, …).
    """

    coords_a: np.ndarray
    resnames: np.ndarray | None = None
    resids: np.ndarray | None = None
    gaps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    source: str = ""

    def __post_init__(self) -> None:
        self.coords_a = np.asarray(self.coords_a, dtype=np.float64)
        if self.coords_a.ndim != 2 or self.coords_a.shape[1] not in (2, 3) or len(self.coords_a) < 3:
            raise ValueError(f"reference coords_a: expected (m, 3) or (m, 2) with m >= 3, got {self.coords_a.shape}")
        if not np.isfinite(self.coords_a).all():
            raise ValueError("reference coords_a: contains NaN or infinite values")
        m = len(self.coords_a)
        self.resids = np.arange(1, m + 1) if self.resids is None else np.asarray(self.resids, dtype=np.int64)
        self.resnames = np.full(m, "ALA") if self.resnames is None else np.asarray(self.resnames, dtype=str)
        if len(self.resids) != m or len(self.resnames) != m:
            raise ValueError(f"reference resids/resnames: need {m} entries")
        self.gaps = np.asarray(self.gaps, dtype=np.int64)

    @property
    def n_atoms(self) -> int:
        return len(self.coords_a)


def reference_from_pdb(path: str | Path, *, chain: str | None = None) -> ChainReference:
    """Reference chain from the Cα atoms of a PDB/mmCIF file (:func:`io.pdb.read_ca_chain`)."""
    from napari_cryohet.io.pdb import read_ca_chain

    coords, resnames, resids, gaps = read_ca_chain(path, chain=chain)
    return ChainReference(coords, resnames, resids, gaps, source=str(path))


def reference_from_dataset(dataset: ParticleDataset, *, particle: int | None = None,
                           frame: int | None = None) -> ChainReference:
    """Reference chain from a simulated dataset's ground truth.

    Parameters
    ----------
    dataset
        A dataset with ``ground_truth``.
    particle
        Take particle ``particle``'s true chain (``ground_truth["coords_a"]``).
    frame
        Take frame ``frame`` of ``ground_truth["global/trajectory_coords_a"]``.

    With neither, ``ground_truth["global/reference_coords_a"]`` (the known conformation the
    simulator declares, e.g. AdK frame 0).
    """
    truth = dataset.ground_truth or {}
    if particle is not None:
        if "coords_a" not in truth:
            raise ValueError("dataset has no ground_truth['coords_a']")
        return ChainReference(np.asarray(truth["coords_a"][int(particle)]), source=f"dataset:particle {particle}")
    if frame is not None:
        if "global/trajectory_coords_a" not in truth:
            raise ValueError("dataset has no ground_truth['global/trajectory_coords_a']")
        return ChainReference(np.asarray(truth["global/trajectory_coords_a"][int(frame)]),
                              source=f"dataset:frame {frame}")
    if "global/reference_coords_a" not in truth:
        raise ValueError("dataset has no ground_truth['global/reference_coords_a']; pass particle= or frame=")
    return ChainReference(np.asarray(truth["global/reference_coords_a"]), source="dataset:global/reference_coords_a")


def default_reference_atom(coords_a: np.ndarray) -> int:
    """The paper's reference atom: the atom nearest the centroid, clipped to ``[0, m-2]``."""
    coords = np.asarray(coords_a, dtype=np.float64)
    j0 = int(np.argmin(np.linalg.norm(coords - coords.mean(0), axis=1)))
    return min(j0, len(coords) - 2)


def angles_for_residues(resids: np.ndarray, ranges: Sequence[tuple[int, int]]) -> np.ndarray:
    """Angle indices whose vertex atom lies in any of the inclusive residue ``ranges``.

    Angle ``j`` (``0 … m-3``) sits at atom ``j + 1``. Returns sorted unique int64 indices.
    """
    resids = np.asarray(resids)
    vertex = resids[1:-1]  # residue of the vertex atom of each angle
    hit = np.zeros(len(vertex), dtype=bool)
    for lo, hi in ranges:
        if lo > hi:
            raise ValueError(f"residue range ({lo}, {hi}): start after end")
        hit |= (vertex >= lo) & (vertex <= hi)
    return np.flatnonzero(hit).astype(np.int64)


def parse_residue_ranges(text: str | None) -> list[tuple[int, int]]:
    """``"10-20,33,40-52"`` → ``[(10, 20), (33, 33), (40, 52)]`` (inclusive residue ranges)."""
    out: list[tuple[int, int]] = []
    for part in (text or "").replace(" ", "").split(","):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise ValueError(f"residue range {part!r}: expected START-END or a single number") from None
        if a > b:
            raise ValueError(f"residue range {part!r}: start after end")
        out.append((a, b))
    return out


# ---------------------------------------------------------------------------------------
# configuration and result


@dataclass
class ChainFitConfig:
    """Settings of the chain fit (seed 000 §2.3 and §3).

    Attributes
    ----------
    n_eigenvectors
        ``K``: leading eigenvectors used (eq. 2.6), trivial one included.
    epochs, batch_size
        Passes over the training particles and particles per gradient step.
    optimizer
        ``"adam"`` or ``"sgd"`` (with ``momentum``).
    learning_rate, momentum
        Optimiser settings (``A``, ``B`` are in radians per unit-RMS eigenvector).
    lr_schedule
        ``"cosine"`` (decay to 0 over all steps, damping the gradient noise of low-SNR
        data) or ``"constant"`` (the paper's plain SGD).
    test_fraction
        Fraction of particles held out (scored on clean images when available).
    sigma_a
        Gaussian atom width σ in Å (eq. 2.9); ``None`` takes ``ground_truth["global/sigma_a"]``
        or 3 Å.
    amplitude
        Atom mass ``ν`` (the simulator's images use 1).
    reference_atom
        ``j0`` (0-based); ``None`` → :func:`default_reference_atom`.
    anchor
        ``"reference"`` or ``"truth"`` (see the module docstring).
    bond_length_mode, bond_length_a
        ``"mean"`` (constant δ = mean reference bond) or ``"reference"`` (per-bond); a
        given ``bond_length_a`` overrides both.
    fit_bond_angles
        Also fit ``B`` (else only torsions vary).
    fixed_angles, rigid_angles
        Angle indices with no coefficient / only the constant term (Remark 2.3).
    varying_angles
        If given, every *other* angle is fixed (the "varying angles only" case, §3.1.1).
    fit_box_size
        Fit on the central ``fit_box_size²`` Fourier components only (even, ≤ the box):
        images are Fourier-cropped and the atoms projected on the matching coarser grid
        (pixel ``apix · D / fit_box_size``) — fewer pixels per step for atoms much wider
        than a pixel. ``None``: the full box.
    seed
        Split and shuffling.
    device
        ``"cpu"``, ``"cuda"``, ``"auto"``.
    checkpoint_every
        Epochs between checkpoints (when a workspace is given).
    resume
        Continue from the workspace's checkpoint if there is one.
    """

    n_eigenvectors: int = 10
    epochs: int = 30
    batch_size: int = 100
    optimizer: str = "adam"
    learning_rate: float = 0.002
    lr_schedule: str = "cosine"
    momentum: float = 0.9
    test_fraction: float = 0.1
    sigma_a: float | None = None
    amplitude: float = 1.0
    reference_atom: int | None = None
    anchor: str = "reference"
    bond_length_mode: str = "mean"
    bond_length_a: float | None = None
    fit_bond_angles: bool = True
    fixed_angles: tuple[int, ...] = ()
    rigid_angles: tuple[int, ...] = ()
    varying_angles: tuple[int, ...] | None = None
    fit_box_size: int | None = None
    seed: int = 0
    device: str | None = "cpu"
    checkpoint_every: int = 1
    resume: bool = True

    def __post_init__(self) -> None:
        if self.n_eigenvectors < 1:
            raise ValueError(f"n_eigenvectors must be >= 1, got {self.n_eigenvectors}")
        if self.epochs < 0 or self.batch_size < 1:
            raise ValueError("epochs must be >= 0 and batch_size >= 1")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if not 0 <= self.test_fraction < 1:
            raise ValueError(f"test_fraction must lie in [0, 1), got {self.test_fraction}")
        if self.anchor not in ("reference", "truth"):
            raise ValueError(f"anchor must be 'reference' or 'truth', got {self.anchor!r}")
        if self.bond_length_mode not in ("mean", "reference"):
            raise ValueError(f"bond_length_mode must be 'mean' or 'reference', got {self.bond_length_mode!r}")
        if self.sigma_a is not None and not self.sigma_a > 0:
            raise ValueError(f"sigma_a must be positive, got {self.sigma_a}")
        if self.fit_box_size is not None and (self.fit_box_size < 2 or self.fit_box_size % 2):
            raise ValueError(f"fit_box_size must be an even number >= 2, got {self.fit_box_size}")
        if self.bond_length_a is not None and not self.bond_length_a > 0:
            raise ValueError(f"bond_length_a must be positive, got {self.bond_length_a}")
        self.fixed_angles = tuple(int(j) for j in self.fixed_angles)
        self.rigid_angles = tuple(int(j) for j in self.rigid_angles)
        if self.varying_angles is not None:
            self.varying_angles = tuple(int(j) for j in self.varying_angles)


@dataclass
class ChainFitResult:
    """Fitted coefficients and everything needed to rebuild each particle's chain.

    Attributes
    ----------
    coeff_theta, coeff_psi
        ``A``, ``B``: ``(m-2, K)`` float32 (eq. 2.6).
    theta0, psi0
        ``(m-2,)`` reference angles (``psi0`` all zero for planar chains).
    phi
        ``(N, K)`` float32 eigenvector rows of every particle, scaled to unit RMS per column.
    anchor_positions, anchor_frames
        ``(N, d)``, ``(N, d, d)``: ``ẑ_i``, ``F̂_i`` at the reference atom.
    reference
        The :class:`ChainReference`.
    ref_index
        ``j0``.
    bond_lengths_a
        ``(m-1,)`` the δ used.
    coeff_mask
        ``(m-2, K)`` float32, 1 where a coefficient is fitted.
    history
        One dict per epoch (epoch 0 = before training): ``epoch``, ``train_loss`` (absent
        at 0), ``test_loss``, ``avg_error_a``, ``max_error_a`` (when ground truth exists),
        ``seconds``.
    train_indices, test_indices
        Positions in the dataset.
    config
        The :class:`ChainFitConfig` as a dict.
    """

    coeff_theta: np.ndarray
    coeff_psi: np.ndarray
    theta0: np.ndarray
    psi0: np.ndarray
    phi: np.ndarray
    anchor_positions: np.ndarray
    anchor_frames: np.ndarray
    reference: ChainReference
    ref_index: int
    bond_lengths_a: np.ndarray
    coeff_mask: np.ndarray
    history: list[dict[str, float]]
    train_indices: np.ndarray
    test_indices: np.ndarray
    config: dict[str, Any]

    @property
    def planar(self) -> bool:
        return self.reference.coords_a.shape[1] == 2

    def angles(self, indices: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """``(Θ_i, Ψ_i)`` of particles ``indices`` (default all): ``(n, m-2)`` each."""
        phi = self.phi if indices is None else self.phi[indices]
        theta = self.theta0 + phi @ self.coeff_theta.T
        psi = self.psi0 + phi @ self.coeff_psi.T
        return theta, psi

    def chains(self, indices: Any = None) -> np.ndarray:
        """Fitted chains of particles ``indices`` (default all), model frame: ``(n, m, d)``."""
        idx = np.arange(len(self.phi)) if indices is None else np.atleast_1d(np.arange(len(self.phi))[indices])
        theta, psi = self.angles(idx)
        out = []
        for s in range(0, len(idx), 2048):
            sl = slice(s, s + 2048)
            out.append(_build(torch.as_tensor(theta[sl], dtype=torch.float64),
                              torch.as_tensor(psi[sl], dtype=torch.float64),
                              torch.as_tensor(self.anchor_positions[idx[sl]], dtype=torch.float64),
                              torch.as_tensor(self.anchor_frames[idx[sl]], dtype=torch.float64),
                              self.ref_index, torch.as_tensor(self.bond_lengths_a, dtype=torch.float64),
                              self.planar).numpy())
        return np.concatenate(out, 0).astype(np.float32) if out else np.zeros((0, *self.reference.coords_a.shape),
                                                                              np.float32)

    def save(self, directory: str | Path) -> Path:
        """Write ``chainfit_result.npz`` + ``chainfit_result.json`` (atomic) in ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_npz_atomic(
            directory / "chainfit_result.npz",
            coeff_theta=self.coeff_theta, coeff_psi=self.coeff_psi, theta0=self.theta0, psi0=self.psi0,
            phi=self.phi, anchor_positions=self.anchor_positions, anchor_frames=self.anchor_frames,
            reference_coords_a=self.reference.coords_a, reference_resnames=self.reference.resnames.astype(str),
            reference_resids=self.reference.resids, reference_gaps=self.reference.gaps,
            bond_lengths_a=self.bond_lengths_a, coeff_mask=self.coeff_mask,
            train_indices=self.train_indices, test_indices=self.test_indices,
        )
        meta = {"ref_index": self.ref_index, "history": self.history, "config": self.config,
                "reference_source": self.reference.source}
        with atomic_path(directory / "chainfit_result.json") as tmp:
            tmp.write_text(json.dumps(meta, indent=1))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> ChainFitResult:
        """Read a result written by :meth:`save`."""
        directory = Path(directory)
        meta = json.loads((directory / "chainfit_result.json").read_text())
        with np.load(directory / "chainfit_result.npz", allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        reference = ChainReference(arrays.pop("reference_coords_a"), arrays.pop("reference_resnames"),
                                   arrays.pop("reference_resids"), arrays.pop("reference_gaps"),
                                   source=meta.get("reference_source", ""))
        return cls(reference=reference, ref_index=int(meta["ref_index"]), history=meta["history"],
                   config=meta["config"], **arrays)


# ---------------------------------------------------------------------------------------
# the model


def _build(theta: torch.Tensor, psi: torch.Tensor, positions: torch.Tensor, frames: torch.Tensor, j0: int,
           delta: torch.Tensor, planar: bool) -> torch.Tensor:
    if planar:
        return build_chain_2d(theta, ref_index=j0, ref_position=positions, ref_frame=frames, bond_lengths_a=delta)
    return build_chain(theta, psi, ref_index=j0, ref_position=positions, ref_frame=frames, bond_lengths_a=delta)


class _SpectralAngles(torch.nn.Module):
    """``Θ = Θ₀ + (A ⊙ mask) Φ``, ``Ψ = Ψ₀ + (B ⊙ mask) Φ`` (eq. 2.6), A = B = 0 at start."""

    def __init__(self, theta0: torch.Tensor, psi0: torch.Tensor, mask: torch.Tensor, fit_psi: bool):
        super().__init__()
        self.register_buffer("theta0", theta0)
        self.register_buffer("psi0", psi0)
        self.register_buffer("mask", mask)
        self.coeff_theta = torch.nn.Parameter(torch.zeros_like(mask))
        self.coeff_psi = torch.nn.Parameter(torch.zeros_like(mask), requires_grad=fit_psi)

    def forward(self, phi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        theta = self.theta0 + phi @ (self.coeff_theta * self.mask).T  # (B, m-2)
        psi = self.psi0 + phi @ (self.coeff_psi * self.mask).T
        return theta, psi


def _coefficient_mask(n_angles: int, k: int, config: ChainFitConfig) -> np.ndarray:
    mask = np.ones((n_angles, k), dtype=np.float32)
    for name, indices in (("fixed_angles", config.fixed_angles), ("rigid_angles", config.rigid_angles),
                          ("varying_angles", config.varying_angles or ())):
        bad = [j for j in indices if not 0 <= j < n_angles]
        if bad:
            raise ValueError(f"{name}: angle indices {bad[:5]} outside [0, {n_angles - 1}]")
    if config.varying_angles is not None:
        keep = np.zeros(n_angles, dtype=bool)
        keep[list(config.varying_angles)] = True
        mask[~keep] = 0.0
    mask[list(config.rigid_angles), 1:] = 0.0
    mask[list(config.fixed_angles)] = 0.0
    return mask


def _scaled_eigenvectors(eigenvectors: np.ndarray, n: int, k: int) -> np.ndarray:
    phi = np.asarray(eigenvectors, dtype=np.float64)
    if phi.ndim != 2 or phi.shape[0] != n:
        raise ValueError(f"eigenvectors: expected ({n}, K) for {n} particles, got {phi.shape}")
    if phi.shape[1] < k:
        raise ValueError(f"eigenvectors: {phi.shape[1]} columns, n_eigenvectors asks for {k}")
    if not np.isfinite(phi).all():
        raise ValueError("eigenvectors: contain NaN or infinite values")
    phi = phi[:, :k]
    rms = np.sqrt(np.mean(phi**2, axis=0))
    rms[rms == 0] = 1.0
    return (phi / rms).astype(np.float32)


def chain_errors(predicted: np.ndarray | torch.Tensor, truth: np.ndarray | torch.Tensor) -> tuple[float, float]:
    """Average error (eq. 3.7) and mean-over-images max error (eq. 3.6), Å.

    ``predicted``, ``truth``: ``(n, m, d)`` chains in the same frame.
    """
    p = torch.as_tensor(predicted, dtype=torch.float64)
    t = torch.as_tensor(truth, dtype=torch.float64)
    dist = torch.linalg.vector_norm(p - t, dim=-1)  # (n, m)
    return float(dist.mean()), float(dist.max(dim=-1).values.mean())


# ---------------------------------------------------------------------------------------
# training loop shared by the 3D and 2D variants


@dataclass
class _Problem:
    """What the loop needs: data access and a forward model of a batch."""

    n: int
    planar: bool
    phi: torch.Tensor  # (N, K)
    anchor_positions: torch.Tensor  # (N, d)
    anchor_frames: torch.Tensor  # (N, d, d)
    ref_index: int
    delta: torch.Tensor  # (m-1,) or ()
    misfit: Callable[[torch.Tensor, np.ndarray, bool], torch.Tensor]  # (coords, idx, clean) → mean sq.
    truth_coords: np.ndarray | None  # (N, m, d) model frame


def _split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng([int(seed), 500]).permutation(n)
    n_test = int(round(test_fraction * n))
    if test_fraction > 0 and n > 1:
        n_test = min(max(n_test, 1), n - 1)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def _train(problem: _Problem, model: _SpectralAngles, config: ChainFitConfig, *, workspace: Path | None,
           progress: ProgressCallback | None, cancel: CancelToken | None, on_epoch: EpochCallback | None,
           eval_batch: int = 500) -> tuple[list[dict[str, float]], np.ndarray, np.ndarray]:
    train_idx, test_idx = _split(problem.n, config.test_fraction, config.seed)
    if len(train_idx) == 0:
        raise ValueError("no training particles (dataset too small for test_fraction)")
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=config.learning_rate)
    else:
        opt = torch.optim.SGD(params, lr=config.learning_rate, momentum=config.momentum)

    def chains(idx: np.ndarray) -> torch.Tensor:
        t = torch.as_tensor(idx)
        theta, psi = model(problem.phi[t])
        return _build(theta, psi, problem.anchor_positions[t], problem.anchor_frames[t], problem.ref_index,
                      problem.delta, problem.planar)

    def evaluate() -> dict[str, float]:
        record: dict[str, float] = {}
        if len(test_idx) == 0:
            return record
        total, preds = 0.0, []
        with torch.no_grad():
            for s in range(0, len(test_idx), eval_batch):
                idx = test_idx[s:s + eval_batch]
                coords = chains(idx)
                total += float(problem.misfit(coords, idx, True)) * len(idx)
                preds.append(coords.double())
        record["test_loss"] = total / len(test_idx)
        if problem.truth_coords is not None:
            avg, mx = chain_errors(torch.cat(preds), problem.truth_coords[test_idx])
            record["avg_error_a"], record["max_error_a"] = avg, mx
        return record

    checkpoint = workspace / "checkpoint.pt" if workspace is not None else None
    history: list[dict[str, float]] = []
    start_epoch = 1
    if checkpoint is not None and config.resume and checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if state["coeff_shape"] == tuple(model.coeff_theta.shape) and state["n"] == problem.n:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            history = list(state["history"])
            start_epoch = int(state["epoch"]) + 1
            report(progress, (start_epoch - 1) / max(config.epochs, 1), f"resumed after epoch {start_epoch - 1}")
    if not history:
        record = {"epoch": 0, **evaluate(), "seconds": 0.0}
        history.append(record)
        if on_epoch is not None:
            on_epoch(dict(record))
    n_batches = math.ceil(len(train_idx) / config.batch_size)
    total_steps = max(config.epochs * n_batches, 1)
    for epoch in range(start_epoch, config.epochs + 1):
        tic = time.perf_counter()
        order = train_idx[np.random.default_rng([int(config.seed), 501, epoch]).permutation(len(train_idx))]
        total, seen = 0.0, 0
        for b in range(n_batches):
            check_cancel(cancel)
            idx = order[b * config.batch_size:(b + 1) * config.batch_size]
            set_scheduled_lr(opt, [config.learning_rate] * len(opt.param_groups), config.lr_schedule,
                             (epoch - 1) * n_batches + b, total_steps)
            loss = problem.misfit(chains(idx), idx, False)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
            report(progress, ((epoch - 1) + (b + 1) / n_batches) / max(config.epochs, 1),
                   f"epoch {epoch}/{config.epochs}  batch {b + 1}/{n_batches}")
        seconds = time.perf_counter() - tic
        record = {"epoch": epoch, "train_loss": total / max(seen, 1), **evaluate(), "seconds": seconds}
        history.append(record)
        if on_epoch is not None:
            on_epoch(dict(record))
        msg = f"epoch {epoch}/{config.epochs}  train {record['train_loss']:.4g}"
        if "avg_error_a" in record:
            msg += f"  avg err {record['avg_error_a']:.2f} Å  max err {record['max_error_a']:.2f} Å"
        report(progress, epoch / max(config.epochs, 1), msg)
        if checkpoint is not None and (epoch % max(config.checkpoint_every, 1) == 0 or epoch == config.epochs):
            state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "history": history,
                     "epoch": epoch, "n": problem.n, "coeff_shape": tuple(model.coeff_theta.shape)}
            with atomic_path(checkpoint) as tmp:
                torch.save(state, tmp)
    return history, train_idx, test_idx


def _result(problem: _Problem, model: _SpectralAngles, reference: ChainReference, config: ChainFitConfig,
            history, train_idx, test_idx) -> ChainFitResult:
    def np32(t: torch.Tensor) -> np.ndarray:
        return t.detach().cpu().numpy().astype(np.float32)

    delta = problem.delta.detach().cpu().numpy().astype(np.float64)
    m = reference.n_atoms
    return ChainFitResult(
        coeff_theta=np32(model.coeff_theta * model.mask), coeff_psi=np32(model.coeff_psi * model.mask),
        theta0=model.theta0.detach().cpu().numpy().astype(np.float64),
        psi0=model.psi0.detach().cpu().numpy().astype(np.float64),
        phi=np32(problem.phi), anchor_positions=problem.anchor_positions.detach().cpu().numpy().astype(np.float64),
        anchor_frames=problem.anchor_frames.detach().cpu().numpy().astype(np.float64),
        reference=reference, ref_index=problem.ref_index,
        bond_lengths_a=np.broadcast_to(delta, (m - 1,)).copy(), coeff_mask=np32(model.mask),
        history=history, train_indices=train_idx, test_indices=test_idx, config=dataclasses.asdict(config),
    )


def _bond_lengths(reference: torch.Tensor, config: ChainFitConfig) -> torch.Tensor:
    if config.bond_length_a is not None:
        return torch.tensor(float(config.bond_length_a), dtype=torch.float64)
    lengths = bond_lengths(reference)
    return lengths.mean() if config.bond_length_mode == "mean" else lengths


def _check_ref_index(config: ChainFitConfig, coords: np.ndarray) -> int:
    j0 = default_reference_atom(coords) if config.reference_atom is None else int(config.reference_atom)
    if not 0 <= j0 <= len(coords) - 2:
        raise ValueError(f"reference_atom must lie in [0, {len(coords) - 2}], got {j0}")
    return j0


# ---------------------------------------------------------------------------------------
# 3D: particle images


def run_chainfit(
    dataset: ParticleDataset,
    config: ChainFitConfig | None = None,
    *,
    eigenvectors: np.ndarray,
    reference: ChainReference,
    workspace: str | Path | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    on_epoch: EpochCallback | None = None,
) -> ChainFitResult:
    """Fit ``A``, ``B`` of eq. 2.6 to a particle stack (seed 000 §2.3, §3.2).

    Parameters
    ----------
    dataset
        Particles with poses (rotations, optional shifts) and optional CTF; ground truth
        (``coords_a``, ``clean_images``) is used for metrics and ``anchor="truth"``.
    config
        :class:`ChainFitConfig`.
    eigenvectors
        ``(N, K')`` Laplacian eigenvectors of the dataset's particles (spectral stage),
        ``K' ≥ config.n_eigenvectors``; columns in ascending eigenvalue order.
    reference
        The known conformation (:func:`reference_from_pdb`, :func:`reference_from_dataset`).
    workspace
        Directory for checkpoints and the result (``<workspace>/chainfit/``); ``None``
        keeps everything in memory.
    progress, cancel
        Progress callback; cancel token checked every batch.
    on_epoch
        Called with each epoch's metrics record (from the worker thread).

    Returns
    -------
    ChainFitResult
    """
    config = config or ChainFitConfig()
    n = len(dataset)
    if dataset.rotations is None:
        raise ValueError("dataset has no poses (rotations); the chain fit needs known poses (Assumption 4)")
    ref_np = reference.coords_a
    if ref_np.shape[1] != 3:
        raise ValueError("reference: a 3D chain (m, 3) is needed for particle images; use run_chainfit_2d")
    truth = dataset.ground_truth or {}
    truth_coords = np.asarray(truth["coords_a"], dtype=np.float64) if "coords_a" in truth else None
    if truth_coords is not None and truth_coords.shape[1:] != ref_np.shape:
        raise ValueError(f"ground-truth chains {truth_coords.shape[1:]} do not match the reference {ref_np.shape}")
    device = select_device(config.device)
    dtype = torch.float32
    j0 = _check_ref_index(config, ref_np)
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
    k = int(config.n_eigenvectors)
    mask = _coefficient_mask(len(theta0), k, config)
    phi = _scaled_eigenvectors(eigenvectors, n, k)

    rotations = torch.as_tensor(np.asarray(dataset.rotations), dtype=dtype, device=device)
    d = dataset.box_size
    fit_d = d if config.fit_box_size is None else int(config.fit_box_size)
    if fit_d > d:
        raise ValueError(f"fit_box_size {fit_d} exceeds the box size {d}")
    fit_apix = float(dataset.apix) * d / fit_d
    targets = _FourierTargets(dataset, device, dtype, fit_box_size=fit_d)

    def misfit(coords: torch.Tensor, idx: np.ndarray, clean: bool) -> torch.Tensor:
        images = project_gaussian_atoms(coords, rotations[torch.as_tensor(idx, device=device)], d=fit_d,
                                        apix=fit_apix, sigma_a=sigma_a)  # (B, D', D')
        return targets.misfit(images * config.amplitude, idx, clean)

    problem = _Problem(
        n=n, planar=False, phi=torch.as_tensor(phi, device=device),
        anchor_positions=positions.to(device, dtype), anchor_frames=frames.to(device, dtype),
        ref_index=j0, delta=_bond_lengths(ref, config).to(device, dtype), misfit=misfit, truth_coords=truth_coords,
    )
    model = _SpectralAngles(theta0.to(device, dtype), psi0.to(device, dtype),
                            torch.as_tensor(mask, device=device), config.fit_bond_angles)
    out_dir = stage_dir(workspace, "chainfit") if workspace is not None else None
    history, train_idx, test_idx = _train(problem, model, config, workspace=out_dir, progress=progress,
                                          cancel=cancel, on_epoch=on_epoch)
    result = _result(problem, model, reference, config, history, train_idx, test_idx)
    if out_dir is not None:
        result.save(out_dir)
    report(progress, 1.0, "chain fit done")
    return result


class _FourierTargets:
    """Per-particle CTF and spectra of the observed images with their shifts undone.

    The misfit ``‖IFFT(CTF · S · FFT(P)) − Y‖²`` equals ``‖CTF · FFT(P) − S⁻¹ FFT(Y)‖² / D²``
    (Parseval; the shift ``S`` is a unit-modulus phase ramp), so the CTF and the
    un-shifted image spectra are computed once — for the whole stack when it fits in
    ``max_bytes``, else batch by batch — and a gradient step needs one real FFT of the
    predicted projections. Both are stored in ``torch.fft.rfft2`` layout (uncentred, half
    spectrum; the centring phase ``(−1)^(kx+ky)`` is folded into the targets), with
    :attr:`weights` counting the Hermitian twins of the half spectrum.
    ``clean=True`` uses ``ground_truth["clean_images"]`` when present (test scoring, §3.1).
    With ``fit_box_size`` only the central ``D'²`` frequencies are kept (Fourier crop); the
    projections they are compared with are sampled on the matching ``D'`` grid, whose DFT
    has the same physical frequencies and, for mass-per-pixel images, the same scale.
    """

    def __init__(self, dataset: ParticleDataset, device: torch.device, dtype: torch.dtype,
                 max_bytes: int = 1 << 30, fit_box_size: int | None = None):
        self.dataset, self.device, self.dtype = dataset, device, dtype
        self.clean = (dataset.ground_truth or {}).get("clean_images")
        n, self.full_d = len(dataset), dataset.box_size
        self.d = d = self.full_d if fit_box_size is None else int(fit_box_size)
        half = d // 2 + 1
        self.weights = torch.full((d, half), 2.0, dtype=dtype, device=device)
        self.weights[:, 0] = 1.0
        self.weights[:, -1] = 1.0
        k = torch.arange(d, device=device)
        self._sign = ((-1.0) ** (k[:, None] + k[None, :half])).to(dtype)  # centring phase, rfft layout
        self.shifts = None
        if dataset.shifts_a is not None and np.any(np.asarray(dataset.shifts_a) != 0):
            self.shifts = torch.as_tensor(np.asarray(dataset.shifts_a), dtype=dtype, device=device)
        self.cached: dict[bool, tuple[torch.Tensor, torch.Tensor]] = {}
        per_particle = d * half * 12 * (2 if self.clean is not None else 1)
        if n * per_particle <= max_bytes:
            every = np.arange(n)
            for clean in ((False, True) if self.clean is not None else (False,)):
                parts = [self._compute(every[s:s + 512], clean) for s in range(0, n, 512)]
                self.cached[clean] = (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))

    def _compute(self, idx: np.ndarray, clean: bool) -> tuple[torch.Tensor, torch.Tensor]:
        full_d, d, apix = self.full_d, self.d, float(self.dataset.apix)
        half = d // 2 + 1
        if clean and self.clean is not None:
            images = np.asarray(self.clean[idx], dtype=np.float32)
        else:
            images = self.dataset.get_images(np.asarray(idx))
        spectra = fft2_centered(torch.as_tensor(images, dtype=self.dtype, device=self.device))  # (B, D, D)
        if self.shifts is not None:
            spectra = phase_shift_2d(spectra, self.shifts[torch.as_tensor(idx, device=self.device)] / apix)
        lo = full_d // 2 - d // 2
        spectra = spectra[..., lo:lo + d, lo:lo + d]  # Fourier crop: same physical frequencies
        spectra = torch.fft.ifftshift(spectra, dim=(-2, -1))[..., :half] * self._sign  # (B, D', D'/2+1)
        if self.dataset.ctf is None:
            ctf = torch.ones(len(idx), d, half, dtype=self.dtype, device=self.device)
        else:
            ctf = compute_ctf_2d(d, apix * full_d / d, device=self.device,
                                 **self.dataset.ctf.to_torch(indices=idx, device=self.device, dtype=self.dtype))
            ctf = torch.fft.ifftshift(ctf.to(self.dtype), dim=(-2, -1))[..., :half].contiguous()
        return ctf, spectra

    def __call__(self, idx: np.ndarray, clean: bool) -> tuple[torch.Tensor, torch.Tensor]:
        key = bool(clean and self.clean is not None)
        if key in self.cached:
            ctf, spectra = self.cached[key]
            t = torch.as_tensor(idx, device=self.device)
            return ctf[t], spectra[t]
        return self._compute(idx, key)

    def misfit(self, images: torch.Tensor, idx: np.ndarray, clean: bool) -> torch.Tensor:
        """Per-pixel mean square of ``CTF · S · images − Y`` over the batch (eq. 2.11 / D²)."""
        ctf, target = self(idx, clean)
        residual = torch.fft.rfft2(images) * ctf - target  # (B, D', D'/2+1)
        power = (residual.real**2 + residual.imag**2) * self.weights
        return power.sum() / (images.shape[0] * self.full_d**4)


def predict_images(result: ChainFitResult, dataset: ParticleDataset, indices: Any, *,
                   apply_ctf: bool = True) -> np.ndarray:
    """CTF-filtered, shifted projections of the fitted chains of particles ``indices``.

    ``(n, D, D)`` float32 — what the fit predicts for each particle image (eq. 2.10).
    """
    idx = np.atleast_1d(np.arange(len(dataset))[indices])
    coords = torch.as_tensor(result.chains(idx))
    sigma_a = result.config.get("sigma_a") or float((dataset.ground_truth or {}).get("global/sigma_a", 3.0))
    rot = torch.as_tensor(np.asarray(dataset.rotations)[idx], dtype=torch.float32)
    images = project_gaussian_atoms(coords, rot, d=dataset.box_size, apix=dataset.apix, sigma_a=sigma_a)
    images = images * float(result.config.get("amplitude", 1.0))
    if apply_ctf:
        shifts = None if dataset.shifts_a is None else torch.as_tensor(np.asarray(dataset.shifts_a)[idx])
        ctf = None if dataset.ctf is None else dataset.ctf.to_torch(indices=idx)
        images = apply_ctf_and_shift(images, apix=dataset.apix, ctf=ctf, shifts_a=shifts)
    return images.numpy().astype(np.float32)


# ---------------------------------------------------------------------------------------
# 2D: the box with two arms (§3.1)


def run_chainfit_2d(
    toy: Any,
    config: ChainFitConfig | None = None,
    *,
    eigenvectors: np.ndarray,
    reference: ChainReference | None = None,
    workspace: str | Path | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    on_epoch: EpochCallback | None = None,
) -> ChainFitResult:
    """Fit the turning angles of planar chains to 1D projections (seed 000 §3.1, eq. 3.1).

    Parameters
    ----------
    toy
        A :class:`~napari_cryohet.stages.simulate.box_arms.Toy2DDataset` (``projections``,
        ``clean_projections``, ``rotation_angles_rad``, ``coords``, ``reference_coords``,
        ``grid_x_a``, ``sigma``, ``amplitude``, ``j0`` 1-based).
    config
        As for :func:`run_chainfit`; ``reference_atom=None`` takes the toy's ``j0`` and
        ``fit_bond_angles`` is ignored (planar chains have one angle per vertex).
    eigenvectors
        ``(N, K')`` eigenvectors (e.g. of the toy's ``low_dim`` densities).
    reference
        Default: the toy's reference conformation (arms aligned, square box).

    Returns
    -------
    ChainFitResult
        With ``(m, 2)`` chains (``psi0`` and ``coeff_psi`` zero).
    """
    from napari_cryohet.stages.simulate import project_points_1d

    config = config or ChainFitConfig()
    if config.reference_atom is None:
        config = dataclasses.replace(config, reference_atom=int(toy.j0) - 1)
    reference = reference or ChainReference(np.asarray(toy.reference_coords), source="toy reference")
    ref = torch.as_tensor(reference.coords_a, dtype=torch.float64)
    if ref.shape[1] != 2:
        raise ValueError("reference: a planar chain (m, 2) is needed for run_chainfit_2d")
    n = len(toy.projections)
    j0 = _check_ref_index(config, reference.coords_a)
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
    mask = _coefficient_mask(len(theta0), k, config)
    phi = _scaled_eigenvectors(eigenvectors, n, k)
    alpha = torch.as_tensor(np.asarray(toy.rotation_angles_rad), dtype=dtype, device=device)
    grid = torch.as_tensor(np.asarray(toy.grid_x_a), dtype=dtype, device=device)
    noisy = torch.as_tensor(np.asarray(toy.projections), dtype=dtype, device=device)
    clean = torch.as_tensor(np.asarray(toy.clean_projections), dtype=dtype, device=device)

    def render(coords: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
        a = alpha[torch.as_tensor(idx, device=device)][:, None]
        x = torch.cos(a) * coords[..., 0] - torch.sin(a) * coords[..., 1]  # posed x of R(α) z
        posed = torch.stack([x, torch.zeros_like(x)], -1)
        return project_points_1d(posed, grid_x_a=grid, sigma=float(toy.sigma), amplitude=float(toy.amplitude))

    problem = _Problem(
        n=n, planar=True, phi=torch.as_tensor(phi, device=device),
        anchor_positions=positions.to(device, dtype), anchor_frames=frames.to(device, dtype), ref_index=j0,
        delta=_bond_lengths(ref, config).to(device, dtype), truth_coords=truth_coords,
        misfit=lambda coords, idx, use_clean: ((render(coords, idx) - (clean if use_clean else noisy)[
            torch.as_tensor(idx, device=device)]) ** 2).mean(),
    )
    model = _SpectralAngles(theta0.to(device, dtype), torch.zeros_like(theta0, dtype=dtype, device=device),
                            torch.as_tensor(mask, device=device), fit_psi=False)
    out_dir = stage_dir(workspace, "chainfit") if workspace is not None else None
    history, train_idx, test_idx = _train(problem, model, config, workspace=out_dir, progress=progress,
                                          cancel=cancel, on_epoch=on_epoch)
    result = _result(problem, model, reference, config, history, train_idx, test_idx)
    if out_dir is not None:
        result.save(out_dir)
    report(progress, 1.0, "chain fit done")
    return result
