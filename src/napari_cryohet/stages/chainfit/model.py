"""The chain model of Esteve-Yagüe et al. 2022: angles expanded on eigenvectors (eq. 2.6).

Every particle ``i`` gets ``Θ_i = Θ₀ + A Φ_i`` and ``Ψ_i = Ψ₀ + B Φ_i`` (:class:`SpectralAngles`),
with ``Φ_i`` its row of the ``K`` Laplacian eigenvectors scaled to unit root-mean-square per
column (``√N φ``, :func:`scaled_eigenvectors`, so that ``A`` and ``B`` are in radians), and
its chain ``Z(Θ_i, Ψ_i, ẑ_i, F̂_i)`` is rebuilt from discrete Frenet frames (eq. 2.1 / 2.8,
:func:`build_chains`). Masks (Remark 2.3, §3.1.1) keep *fixed* angles at the reference,
give *rigid* angles only the constant term ``k = 0``, or fit only the *varying* ones.
"""

from __future__ import annotations

import numpy as np
import torch

from napari_cryohet.core.frenet import bond_lengths, build_chain
from napari_cryohet.core.frenet_2d import build_chain_2d
from napari_cryohet.io.pdb import MAX_CA_DISTANCE_A
from napari_cryohet.stages.chainfit.config import ChainFitConfig
from napari_cryohet.stages.chainfit.reference import default_reference_atom

__all__ = ["SpectralAngles", "angle_step_scales", "build_chains", "coefficient_mask", "scaled_eigenvectors", "chain_errors",
           "reference_bond_lengths", "reference_index", "gap_bonds"]


def build_chains(theta: torch.Tensor, psi: torch.Tensor, positions: torch.Tensor, frames: torch.Tensor, j0: int,
                 delta: torch.Tensor, planar: bool) -> torch.Tensor:
    """Chains ``(B, m, d)`` from angles, the anchor position/frame at atom ``j0`` and bond lengths."""
    if planar:
        return build_chain_2d(theta, ref_index=j0, ref_position=positions, ref_frame=frames, bond_lengths_a=delta)
    return build_chain(theta, psi, ref_index=j0, ref_position=positions, ref_frame=frames, bond_lengths_a=delta)


class SpectralAngles(torch.nn.Module):
    """``Θ = Θ₀ + A Φ``, ``Ψ = Ψ₀ + B Φ`` (eq. 2.6), A = B = 0 at start (Remark 2.5).

    The optimiser sees ``U``, ``V`` with ``A = U ⊙ mask ⊙ s_θ``, ``B = V ⊙ mask ⊙ s_ψ``:
    ``s`` (per angle, :func:`angle_step_scales`; 1 = the paper's plain parametrisation)
    makes one unit of ``U`` move the atoms by one Å whatever the angle's lever arm, so a
    step size means the same on a 200- and a 1000-residue protein. :meth:`coefficients`
    gives ``A``, ``B`` in radians.
    """

    def __init__(self, theta0: torch.Tensor, psi0: torch.Tensor, mask: torch.Tensor, fit_psi: bool,
                 scales: tuple[torch.Tensor, torch.Tensor] | None = None):
        super().__init__()
        self.register_buffer("theta0", theta0)
        self.register_buffer("psi0", psi0)
        self.register_buffer("mask", mask)
        ones = torch.ones(mask.shape[0], 1, dtype=mask.dtype, device=mask.device)
        s_theta, s_psi = scales if scales is not None else (ones[:, 0], ones[:, 0])
        self.register_buffer("scale_theta", s_theta.to(mask)[:, None] * mask)
        self.register_buffer("scale_psi", s_psi.to(mask)[:, None] * mask)
        self.coeff_theta = torch.nn.Parameter(torch.zeros_like(mask))
        self.coeff_psi = torch.nn.Parameter(torch.zeros_like(mask), requires_grad=fit_psi)

    def coefficients(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``A``, ``B`` of eq. 2.6: ``(m-2, K)`` radians per unit of eigenvector."""
        return self.coeff_theta * self.scale_theta, self.coeff_psi * self.scale_psi

    def forward(self, phi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = self.coefficients()
        return self.theta0 + phi @ a.T, self.psi0 + phi @ b.T  # (B, m-2) each

    def coords(self, problem, idx: torch.Tensor) -> torch.Tensor:  # noqa: ANN001 (train.Problem: no cycle)
        """Chains ``(B, m, d)`` of the particles in rows ``idx`` of ``problem`` (eq. 2.1 / 2.6)."""
        theta, psi = self(problem.phi[idx])
        return build_chains(theta, psi, problem.anchor_positions[idx], problem.anchor_frames[idx],
                            problem.ref_index, problem.delta, problem.planar)


#: Floor of the lever arm in :func:`angle_step_scales`, Å per radian (about the median of adenylate
#: kinase's 214-residue chain): angles that move few atoms keep a plain step of ``lr / 100`` radians.
MIN_LEVER_ARM_A_PER_RAD = 100.0


def angle_step_scales(theta0: torch.Tensor, psi0: torch.Tensor, position: torch.Tensor, frame: torch.Tensor,
                      j0: int, delta: torch.Tensor, planar: bool, *, eps: float = 1e-4,
                      chunk: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-angle preconditioner ``s_j = 1 / max(‖∂Z/∂angle_j‖, L_min)``, rad per Å, ``(m-2,)`` each.

    ``‖∂Z/∂θ_j‖`` (Å per radian, over all atoms, at the reference angles ``theta0``,
    ``psi0`` with the anchor ``position``/``frame`` at atom ``j0``) is the lever arm of
    angle ``j`` seen from the anchor: next to the anchor of a 600-residue chain ~1000
    Å/rad, at a chain end one bond length. Plain Adam moves every coefficient by about the
    learning rate per step, so the step that suits adenylate kinase (214 residues, median
    ~120 Å/rad) throws a large protein's far end across the box. With ``A = U ⊙ s`` one
    step of ``U`` moves the atoms by about the learning rate in Å for every angle, whatever
    the protein's size or the anchor's place. Forward differences through
    :func:`build_chains` (exact enough for a preconditioner; right for gaps, planar chains
    and any anchor). Floored at ``L_min`` = :data:`MIN_LEVER_ARM_A_PER_RAD`: an angle near a
    chain end moves a few atoms, and an unbounded step there follows the noise (measured on
    adenylate kinase, Table 1 of Esteve-Yagüe et al. 2022: a floor of one bond length left
    the hardest row at 1.46-1.48 Å, this floor at 1.37-1.38 Å). Planar chains have no bond
    angles: their ``ψ`` scales are 1.
    """
    dt = torch.float64
    theta0, psi0 = theta0.to(dt).cpu(), psi0.to(dt).cpu()
    position, frame, delta = position.to(dt).cpu(), frame.to(dt).cpu(), torch.as_tensor(delta).to(dt).cpu()
    n = theta0.shape[-1]
    floor = MIN_LEVER_ARM_A_PER_RAD
    base = build_chains(theta0[None], psi0[None], position, frame, j0, delta, planar)
    scales = []
    for which in range(1 if planar else 2):  # 0: θ, 1: ψ
        norms = []
        for s in range(0, n, chunk):
            rows = torch.arange(s, min(s + chunk, n))
            angles = [theta0.expand(len(rows), n).clone(), psi0.expand(len(rows), n).clone()]
            angles[which][torch.arange(len(rows)), rows] += eps
            coords = build_chains(angles[0], angles[1], position, frame, j0, delta, planar)
            norms.append(torch.linalg.vector_norm((coords - base).reshape(len(rows), -1), dim=1) / eps)
        scales.append(1.0 / torch.cat(norms).clamp_min(floor))
    if planar:
        scales.append(torch.ones(n, dtype=dt))
    return scales[0], scales[1]


def coefficient_mask(n_angles: int, k: int, config: ChainFitConfig,
                     frozen_angles: tuple[int, ...] | list[int] = ()) -> np.ndarray:
    """``(m-2, K)`` float32: 1 where a coefficient is fitted (fixed / rigid / varying angles).

    ``frozen_angles`` are kept at the reference like ``config.fixed_angles`` (e.g. the
    angles at a gap, ``ChainReference.gap_angles()``).
    """
    mask = np.ones((n_angles, k), dtype=np.float32)
    for name, indices in (("fixed_angles", config.fixed_angles), ("rigid_angles", config.rigid_angles),
                          ("varying_angles", config.varying_angles or ()), ("frozen_angles", frozen_angles)):
        bad = [j for j in indices if not 0 <= j < n_angles]
        if bad:
            raise ValueError(f"{name}: angle indices {bad[:5]} outside [0, {n_angles - 1}]")
    if config.varying_angles is not None:
        keep = np.zeros(n_angles, dtype=bool)
        keep[list(config.varying_angles)] = True
        mask[~keep] = 0.0
    mask[list(config.rigid_angles), 1:] = 0.0
    mask[list(config.fixed_angles)] = 0.0
    mask[list(frozen_angles)] = 0.0
    return mask


def scaled_eigenvectors(eigenvectors: np.ndarray, n: int, k: int) -> np.ndarray:
    """The first ``k`` columns of ``(n, K')`` eigenvectors, scaled to unit RMS: float32 ``(n, k)``."""
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


def gap_bonds(reference: torch.Tensor | np.ndarray) -> np.ndarray:
    """Bond indices of a chain whose length says it is broken (missing residues, two chains).

    A bond longer than ``io.pdb.MAX_CA_DISTANCE_A`` (4.2 Å) *and* 1.5 × the median bond:
    the first rule finds Cα gaps, the second keeps chains with longer regular bonds (toy
    models) whole.
    """
    lengths = bond_lengths(torch.as_tensor(reference, dtype=torch.float64)).numpy()
    return np.flatnonzero((lengths > MAX_CA_DISTANCE_A) & (lengths > 1.5 * np.median(lengths))).astype(np.int64)


def reference_bond_lengths(reference: torch.Tensor, config: ChainFitConfig,
                           gaps: np.ndarray | None = None) -> torch.Tensor:
    """δ: the given ``bond_length_a``, the mean reference bond, or every reference bond.

    Gap bonds (``gaps``, bond indices; ``None``: found by :func:`gap_bonds`) always keep
    their reference length, so the chain is rebuilt exactly across a gap instead of
    with a 3.8 Å bond that is not there; the mean is taken over the other bonds. Returns
    a scalar when the chain has no gap and ``bond_length_mode`` is not ``"reference"``,
    else ``(m-1,)`` per-bond lengths.
    """
    lengths = bond_lengths(reference)
    gaps = gap_bonds(reference) if gaps is None else np.asarray(gaps, dtype=np.int64).reshape(-1)
    if config.bond_length_a is None and config.bond_length_mode == "reference":
        return lengths
    regular = torch.ones(len(lengths), dtype=torch.bool)
    regular[torch.as_tensor(gaps, dtype=torch.long)] = False
    if not bool(regular.any()):
        return lengths
    value = (torch.tensor(float(config.bond_length_a), dtype=lengths.dtype) if config.bond_length_a is not None
             else lengths[regular].mean())
    if bool(regular.all()):
        return value
    return torch.where(regular, value, lengths)


def reference_index(config: ChainFitConfig, coords: np.ndarray) -> int:
    """``j0``: the configured reference atom, or the atom nearest the centroid; checked."""
    j0 = default_reference_atom(coords) if config.reference_atom is None else int(config.reference_atom)
    if not 0 <= j0 <= len(coords) - 2:
        raise ValueError(f"reference_atom must lie in [0, {len(coords) - 2}], got {j0}")
    return j0
