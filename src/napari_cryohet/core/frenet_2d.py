"""Planar (2D) discrete Frenet frames of a chain: coordinates ⇄ turning angles (eq. 3.1).

The 2D variant of Appendix A of 000_8d73a95ce4c6e7ab.txt (3D frames in
:mod:`napari_cryohet.core.frenet`), used by the box with two arms of Esteve-Yagüe et al.
2022 §3.1 (:mod:`napari_cryohet.stages.simulate.box_arms`) and the planar chain fit.
Indices are 0-based; a chain has ``m`` atoms ``z_0 … z_{m-1}``.

The 2D variant (eq. 3.1): ``z_{j+1} = z_j + δ e₂ F_j``, ``F_{j+1} = R(θ_j) F_j`` with
``R(θ) = [[cos θ, -sin θ], [sin θ, cos θ]]``; 2D rotations commute, so frames are
``F_j = R(α_j)`` with ``α`` a cumulative sum of the ``θ``.

All functions accept leading batch dimensions ``(...)``; lengths in Å, angles in radians.
"""

from __future__ import annotations

import torch

from napari_cryohet.core.frenet import _EPS, _as_batched, _check_chain

__all__ = [
    "chain_frames_2d",
    "chain_angles_2d",
    "build_chain_2d",
]


def _rotation_2d(alpha: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(alpha), torch.sin(alpha)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def chain_frames_2d(coords: torch.Tensor) -> torch.Tensor:
    """Frames ``F_j = R(α_j)`` of a planar chain, with ``e₂ F_j = t_j`` (eq. 3.1).

    ``coords (..., m, 2)`` → ``(..., m-1, 2, 2)``; ``α_j = atan2(t_x, t_y)``.
    """
    return _rotation_2d(_directions_2d(coords))


def _directions_2d(coords: torch.Tensor) -> torch.Tensor:
    _check_chain(coords, 2)
    steps = coords[..., 1:, :] - coords[..., :-1, :]  # (..., m-1, 2)
    if bool((torch.linalg.vector_norm(steps, dim=-1) <= _EPS).any()):
        raise ValueError("coords: two consecutive atoms coincide (zero-length bond)")
    return torch.atan2(steps[..., 0], steps[..., 1])  # (..., m-1)


def chain_angles_2d(coords: torch.Tensor) -> torch.Tensor:
    """Turning angles ``Θ`` of a planar chain, ``F_{j+1} = R(θ_j) F_j`` (eq. 3.1).

    Parameters
    ----------
    coords
        ``(..., m, 2)`` atom positions (x, y) in Å.

    Returns
    -------
    ``(..., m-2)`` angles in (-π, π].
    """
    alpha = _directions_2d(coords)
    turn = alpha[..., 1:] - alpha[..., :-1]
    return torch.atan2(torch.sin(turn), torch.cos(turn))


def build_chain_2d(
    theta: torch.Tensor,
    *,
    ref_index: int,
    ref_position: torch.Tensor,
    ref_frame: torch.Tensor,
    bond_lengths_a: torch.Tensor | float,
) -> torch.Tensor:
    """Planar chain from turning angles and a reference atom (eq. 3.1).

    Parameters
    ----------
    theta
        ``(..., m-2)`` turning angles in radians.
    ref_index
        ``j0`` ∈ ``[0, m-2]``.
    ref_position
        ``(..., 2)``: ``z_{j0}`` in Å.
    ref_frame
        ``(..., 2, 2)`` rotation ``F_{j0}`` (its second row is the tangent ``t_{j0}``).
    bond_lengths_a
        float or ``(..., m-1)`` bond lengths in Å.

    Returns
    -------
    ``(..., m, 2)`` atom positions.
    """
    m = theta.shape[-1] + 2
    if not 0 <= int(ref_index) <= m - 2:
        raise ValueError(f"ref_index: must lie in [0, {m - 2}] for a chain of {m} atoms, got {ref_index}")
    j0 = int(ref_index)
    batch = theta.shape[:-1]
    frame = _as_batched(torch.as_tensor(ref_frame, dtype=theta.dtype, device=theta.device), batch, (2, 2),
                        "ref_frame")
    alpha0 = torch.atan2(frame[..., 1, 0], frame[..., 1, 1]).unsqueeze(-1)  # (..., 1)
    zeros = torch.zeros_like(alpha0)
    cum = torch.cat([zeros, theta.cumsum(dim=-1)], dim=-1)  # (..., m-1): Σ_{k<j} θ_k
    alpha = alpha0 + cum - cum[..., j0:j0 + 1]  # α_j = α_{j0} + Σ_{j0≤k<j} θ_k
    tangents = torch.stack([torch.sin(alpha), torch.cos(alpha)], dim=-1)  # (..., m-1, 2)
    delta = torch.as_tensor(bond_lengths_a, dtype=theta.dtype, device=theta.device)
    steps = tangents * (delta.unsqueeze(-1) if delta.ndim else delta)
    origin = _as_batched(torch.as_tensor(ref_position, dtype=theta.dtype, device=theta.device), batch, (2,),
                         "ref_position").unsqueeze(-2)
    after = origin + steps[..., j0:, :].cumsum(dim=-2)
    before = origin - steps[..., :j0, :].flip(-2).cumsum(dim=-2).flip(-2)
    return torch.cat([before, origin, after], dim=-2)
