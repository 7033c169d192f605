"""Discrete Frenet frames of a chain: coordinates ⇄ (torsion, bond) angles.

Appendix A of 000_8d73a95ce4c6e7ab.txt (after Hu, Lundgren & Niemi 2011). Indices here
are 0-based; a chain has ``m`` atoms ``z_0 … z_{m-1}``:

- tangents ``t_j = (z_{j+1} - z_j) / |z_{j+1} - z_j|``, ``j = 0 … m-2``;
- binormals ``b_j = t_{j-1} × t_j / |…|`` for ``j = 1 … m-2`` and ``b_0 = b_1`` (eq. A.5);
  where consecutive tangents are (anti)parallel the binormal of the nearest regular bond is
  reused, which keeps ``b_j ⊥ t_j``;
- normals ``n_j = b_j × t_j``; frames ``F_j`` with rows ``(n_j, b_j, t_j)`` (eq. A.6);
- transfer rotations ``R_j = F_{j+1} F_jᵀ``, ``j = 0 … m-3`` (eq. A.7), each of the form
  ``R(θ_j, ψ_j)`` of eq. A.4 (torsion ``θ``, bond angle ``ψ``, ``cos ψ_j = t_{j+1}·t_j``).

The inverse map ``Z(Θ, Ψ, ẑ, F̂)`` (eq. 2.1 / A.3) rebuilds the chain from a reference
atom ``j0`` with position ``ẑ = z_{j0}`` and frame ``F̂ = F_{j0}``:
``F_{j+1} = R_j F_j`` forward and ``F_j = R_jᵀ F_{j+1}`` backward, ``z_{j+1} = z_j + δ_j t_j``.
The ``m − 2`` rotations are composed with a parallel (Hillis–Steele) prefix product —
``⌈log₂ m⌉`` batched 3×3 matrix products instead of a Python loop over atoms — and the
positions with a cumulative sum, so :func:`build_chain` is differentiable, batched over
particles and fast enough for a training loop.

The planar variant (eq. 3.1) lives in :mod:`napari_cryohet.core.frenet_2d`.

All functions accept leading batch dimensions ``(...)``; lengths in Å, angles in radians.
"""

from __future__ import annotations

import torch

__all__ = [
    "bond_lengths",
    "frenet_frames",
    "transfer_rotations",
    "rotation_from_angles",
    "angles_from_rotations",
    "chain_angles",
    "cumulative_rotations",
    "build_chain",
]

_EPS = 1e-12


def _check_chain(coords: torch.Tensor, dim: int) -> None:
    if coords.ndim < 2 or coords.shape[-1] != dim:
        raise ValueError(f"coords: expected shape (..., m, {dim}), got {tuple(coords.shape)}")
    if coords.shape[-2] < 3:
        raise ValueError(f"coords: a chain needs at least 3 atoms, got {coords.shape[-2]}")


def bond_lengths(coords: torch.Tensor) -> torch.Tensor:
    """Distances ``|z_{j+1} - z_j|`` between consecutive atoms.

    Parameters
    ----------
    coords
        ``(..., m, d)`` atom positions in Å (``d`` = 2 or 3).

    Returns
    -------
    ``(..., m-1)`` bond lengths in Å.
    """
    return torch.linalg.vector_norm(coords[..., 1:, :] - coords[..., :-1, :], dim=-1)


def _fill_from_nearest(vectors: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Replace rows where ``valid`` is False by the nearest earlier valid row (else later).

    ``vectors (..., L, 3)``, ``valid (..., L)`` bool; returns ``(..., L, 3)``.
    """
    if bool(valid.all()):
        return vectors
    length = valid.shape[-1]
    pos = torch.arange(length, device=vectors.device).expand_as(valid)
    before = torch.where(valid, pos, torch.full_like(pos, -1)).cummax(dim=-1).values  # (..., L)
    after = torch.where(valid, pos, torch.full_like(pos, length)).flip(-1).cummin(dim=-1).values.flip(-1)
    source = torch.where(before >= 0, before, after).clamp(0, length - 1)
    return torch.gather(vectors, -2, source.unsqueeze(-1).expand_as(vectors))


def frenet_frames(coords: torch.Tensor) -> torch.Tensor:
    """Discrete Frenet frames ``F_j`` with rows ``(n_j, b_j, t_j)`` (eqs. A.5–A.6).

    Parameters
    ----------
    coords
        ``(..., m, 3)`` atom positions in Å, ``m ≥ 3``.

    Returns
    -------
    ``(..., m-1, 3, 3)`` rotation matrices; ``F_j[2]`` is the unit tangent of bond ``j``.

    Raises
    ------
    ValueError
        A chain shorter than 3 atoms, a wrong last dimension, a zero-length bond, or a
        completely straight chain (no binormal defined anywhere).
    """
    _check_chain(coords, 3)
    steps = coords[..., 1:, :] - coords[..., :-1, :]  # (..., m-1, 3)
    length = torch.linalg.vector_norm(steps, dim=-1, keepdim=True)
    if bool((length <= _EPS).any()):
        raise ValueError("coords: two consecutive atoms coincide (zero-length bond)")
    tangents = steps / length  # (..., m-1, 3)
    cross = torch.linalg.cross(tangents[..., :-1, :], tangents[..., 1:, :], dim=-1)  # (..., m-2, 3)
    cross_norm = torch.linalg.vector_norm(cross, dim=-1)  # (..., m-2)
    regular = cross_norm > 1e-6
    if not bool(regular.any(dim=-1).all()):
        raise ValueError("coords: the chain is a straight line, its Frenet frames are undefined")
    binormals = cross / cross_norm.clamp_min(_EPS).unsqueeze(-1)
    binormals = _fill_from_nearest(binormals, regular)  # b_1 … b_{m-2}
    binormals = torch.cat([binormals[..., :1, :], binormals], dim=-2)  # b_0 = b_1, (..., m-1, 3)
    normals = torch.linalg.cross(binormals, tangents, dim=-1)
    return torch.stack([normals, binormals, tangents], dim=-2)  # (..., m-1, 3, 3)


def transfer_rotations(frames: torch.Tensor) -> torch.Tensor:
    """``R_j = F_{j+1} F_jᵀ`` for consecutive frames (eq. A.7).

    ``frames (..., m-1, 3, 3)`` → ``(..., m-2, 3, 3)``.
    """
    return frames[..., 1:, :, :] @ frames[..., :-1, :, :].transpose(-1, -2)


def rotation_from_angles(theta: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
    """Rotation ``R(θ, ψ)`` of eq. A.4 (eq. 2.1) of 000_8d73a95ce4c6e7ab.txt.

    ``R(θ, ψ) = [[cψ cθ, cψ sθ, -sψ], [-sθ, cθ, 0], [sψ cθ, sψ sθ, cψ]]``.

    Parameters
    ----------
    theta, psi
        ``(...)`` torsion and bond angles in radians (broadcast together).

    Returns
    -------
    ``(..., 3, 3)`` rotation matrices.
    """
    theta, psi = torch.broadcast_tensors(theta, psi)
    ct, st, cp, sp = torch.cos(theta), torch.sin(theta), torch.cos(psi), torch.sin(psi)
    zero = torch.zeros_like(ct)
    rows = [
        torch.stack([cp * ct, cp * st, -sp], dim=-1),
        torch.stack([-st, ct, zero], dim=-1),
        torch.stack([sp * ct, sp * st, cp], dim=-1),
    ]
    return torch.stack(rows, dim=-2)


def angles_from_rotations(rotations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`rotation_from_angles`: ``(θ, ψ)`` from ``R(θ, ψ)``.

    ``θ = atan2(-R₁₀, R₁₁)`` ∈ (-π, π], ``ψ = atan2(-R₀₂, R₂₂)``; for transfer rotations of
    Frenet frames ``ψ ∈ [0, π]`` (the angle between consecutive tangents).
    """
    theta = torch.atan2(-rotations[..., 1, 0], rotations[..., 1, 1])
    psi = torch.atan2(-rotations[..., 0, 2], rotations[..., 2, 2])
    return theta, psi


def chain_angles(coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Torsion and bond angles ``(Θ, Ψ)`` of a chain (App. A of 000_8d73a95ce4c6e7ab.txt).

    Parameters
    ----------
    coords
        ``(..., m, 3)`` atom positions in Å.

    Returns
    -------
    theta, psi
        ``(..., m-2)`` each, radians; ``θ_0 = 0`` by the convention ``b_0 = b_1``.
    """
    return angles_from_rotations(transfer_rotations(frenet_frames(coords)))


def _matmul_cf(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """3×3 product in component-first layout: ``a, b (3, 3, ...)`` → ``(3, 3, ...)``.

    Three broadcast multiply-adds over the whole batch; much faster on CPU than ``bmm``
    on many tiny matrices.
    """
    a0, a1, a2 = (col.unsqueeze(1) for col in a.unbind(1))
    b0, b1, b2 = (row.unsqueeze(0) for row in b.unbind(0))
    return a0 * b0 + a1 * b1 + a2 * b2


def _prefix_product_cf(a: torch.Tensor) -> torch.Tensor:
    """Inclusive prefix product along the last axis of ``a (3, 3, ..., L)``.

    Recursive doubling: multiply neighbouring pairs, scan the half-length sequence of pairs,
    then fill in the even positions — ``⌈log₂ L⌉`` levels, ``O(L)`` products in total.
    """
    length = a.shape[-1]
    if length == 1:
        return a
    if length % 2:
        eye = torch.eye(3, dtype=a.dtype, device=a.device).reshape(3, 3, *([1] * (a.ndim - 2)))
        padded = torch.cat([a, eye.expand(*a.shape[:-1], 1)], dim=-1)
        return _prefix_product_cf(padded)[..., :length]
    even, odd = a.unflatten(-1, (length // 2, 2)).unbind(-1)
    pairs = _prefix_product_cf(_matmul_cf(odd, even))  # P_{2i+1}
    evens = torch.cat([even[..., :1], _matmul_cf(even[..., 1:], pairs[..., :-1])], dim=-1)  # P_{2i}
    return torch.stack([evens, pairs], dim=-1).reshape(a.shape)


def _to_cf(matrices: torch.Tensor) -> torch.Tensor:
    """``(..., 3, 3)`` → component-first ``(3, 3, ...)``."""
    return matrices.movedim(-1, 0).movedim(-1, 0)


def _from_cf(matrices: torch.Tensor) -> torch.Tensor:
    """Component-first ``(3, 3, ...)`` → ``(..., 3, 3)``."""
    return matrices.movedim(0, -1).movedim(0, -1)


def cumulative_rotations(rotations: torch.Tensor) -> torch.Tensor:
    """Inclusive prefix product ``P_k = R_k R_{k-1} ⋯ R_0`` along the chain axis.

    A parallel scan (recursive doubling): ``⌈log₂ L⌉`` levels of batched 3×3 products
    instead of a Python loop over the chain, so autograd records ``O(log L)`` operations.

    Parameters
    ----------
    rotations
        ``(..., L, 3, 3)``; later elements multiply from the left.

    Returns
    -------
    ``(..., L, 3, 3)`` prefix products.
    """
    return _from_cf(_prefix_product_cf(_to_cf(rotations)))  # via (3, 3, ..., L)


def _rotations_from_angles_cf(theta: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
    """Eq. A.4 in component-first layout: ``(...)`` angles → ``(3, 3, ...)``."""
    ct, st, cp, sp = torch.cos(theta), torch.sin(theta), torch.cos(psi), torch.sin(psi)
    zero = torch.zeros_like(ct)
    return torch.stack([
        torch.stack([cp * ct, cp * st, -sp]),
        torch.stack([-st, ct, zero]),
        torch.stack([sp * ct, sp * st, cp]),
    ])


def _as_batched(value: torch.Tensor, batch: torch.Size, tail: tuple[int, ...], name: str) -> torch.Tensor:
    if tuple(value.shape[-len(tail):]) != tail:
        raise ValueError(f"{name}: expected shape (..., {', '.join(map(str, tail))}), got {tuple(value.shape)}")
    return value.expand(*batch, *tail)


def build_chain(
    theta: torch.Tensor,
    psi: torch.Tensor,
    *,
    ref_index: int,
    ref_position: torch.Tensor,
    ref_frame: torch.Tensor,
    bond_lengths_a: torch.Tensor | float,
) -> torch.Tensor:
    """Chain coordinates ``Z(Θ, Ψ, ẑ, F̂)`` from angles and a reference atom (eq. 2.1 / A.3).

    Parameters
    ----------
    theta, psi
        ``(..., m-2)`` torsion and bond angles in radians (``R_j = R(θ_j, ψ_j)`` maps frame
        ``j`` to frame ``j+1``).
    ref_index
        ``j0`` ∈ ``[0, m-2]``: the atom whose position and frame are given.
    ref_position
        ``(..., 3)`` or ``(3,)``: ``ẑ = z_{j0}`` in Å.
    ref_frame
        ``(..., 3, 3)`` or ``(3, 3)``: ``F̂ = F_{j0}`` (rows normal, binormal, tangent).
    bond_lengths_a
        ``δ``: a float, or ``(m-1,)`` / ``(..., m-1)`` per-bond lengths in Å.

    Returns
    -------
    ``(..., m, 3)`` atom positions in Å. Differentiable in every tensor argument.

    Examples
    --------
    >>> coords = torch.randn(10, 3, dtype=torch.float64).cumsum(0)
    >>> theta, psi = chain_angles(coords)
    >>> rebuilt = build_chain(theta, psi, ref_index=4, ref_position=coords[4],
    ...                       ref_frame=frenet_frames(coords)[4],
    ...                       bond_lengths_a=bond_lengths(coords))
    >>> bool(torch.allclose(rebuilt, coords))
    True
    """
    theta, psi = torch.broadcast_tensors(theta, psi)
    n_rot = theta.shape[-1]
    m = n_rot + 2
    if not 0 <= int(ref_index) <= m - 2:
        raise ValueError(f"ref_index: must lie in [0, {m - 2}] for a chain of {m} atoms, got {ref_index}")
    j0 = int(ref_index)
    batch = theta.shape[:-1]
    rotations = _rotations_from_angles_cf(theta, psi)  # (3, 3, ..., m-2)
    frame = _as_batched(torch.as_tensor(ref_frame, dtype=theta.dtype, device=theta.device), batch, (3, 3),
                        "ref_frame")
    frame0 = _to_cf(frame).unsqueeze(-1)  # (3, 3, ..., 1)
    # Both directions in one scan: forward F_{j0+s} = R_{j0+s-1} ⋯ R_{j0} F_{j0} and backward
    # F_{j0-s} = R_{j0-s}ᵀ ⋯ R_{j0-1}ᵀ F_{j0}, padded with identities to a common length.
    n_fwd, n_bwd = m - 2 - j0, j0
    length = max(n_fwd, n_bwd)
    eye = torch.eye(3, dtype=theta.dtype, device=theta.device).reshape(3, 3, *([1] * (len(batch) + 1)))

    def padded(seq: torch.Tensor) -> torch.Tensor:
        missing = length - seq.shape[-1]
        return torch.cat([seq, eye.expand(3, 3, *batch, missing)], dim=-1) if missing else seq

    forward = padded(rotations[..., j0:])
    backward = padded(rotations[..., :j0].flip(-1).transpose(0, 1))
    prefix = _prefix_product_cf(torch.stack([forward, backward], dim=2))  # (3, 3, 2, ..., length)
    rows = _matmul_cf(prefix[2:3], frame0.unsqueeze(2))[0]  # tangent rows: (3, 2, ..., length)
    tangents = torch.cat([rows[:, 1, ..., :n_bwd].flip(-1), frame0[2], rows[:, 0, ..., :n_fwd]], dim=-1)
    tangents = tangents.movedim(0, -1)  # (..., m-1, 3)
    delta = torch.as_tensor(bond_lengths_a, dtype=theta.dtype, device=theta.device)
    steps = tangents * (delta.unsqueeze(-1) if delta.ndim else delta)  # (..., m-1, 3)
    origin = _as_batched(torch.as_tensor(ref_position, dtype=theta.dtype, device=theta.device), batch, (3,),
                         "ref_position").unsqueeze(-2)  # (..., 1, 3)
    after = origin + steps[..., j0:, :].cumsum(dim=-2)  # z_{j0+1} … z_{m-1}
    before = origin - steps[..., :j0, :].flip(-2).cumsum(dim=-2).flip(-2)  # z_0 … z_{j0-1}
    return torch.cat([before, origin, after], dim=-2)
