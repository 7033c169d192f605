"""Rotations: RELION ZYZ Euler angles ⇄ rotation matrices, uniform sampling on SO(3).

Convention (stated once, linked from everywhere else)
-----------------------------------------------------
A pose is the rotation matrix ``R`` of RELION's ``Euler_angles2matrix(rot, tilt, psi)``
(Heymann, Chagoyen & Belnap 2005, "Common conventions for interchange and archiving of
three-dimensional electron microscopy information", J. Struct. Biol. 151:196): the
product ``R = R_z(psi) R_y(tilt) R_z(rot)`` of *passive* (coordinate-system) rotations,

    R_z(a) = [[ cos a, sin a, 0], [-sin a, cos a, 0], [0, 0, 1]]
    R_y(b) = [[ cos b, 0, -sin b], [0, 1, 0], [sin b, 0, cos b]]

``R`` maps a point of the reference volume (x, y, z in Å, origin at the box centre) to the
particle frame; the image is the line integral of the rotated volume along z:
``image(x, y) = ∫ V(Rᵀ (x, y, z)) dz``. In Fourier space (Fourier-slice theorem) the image
transform at frequency ``k = (kx, ky)`` is the volume transform at ``Rᵀ (kx, ky, 0)``.

Euler angles are in radians in code and degrees in files (RELION's star columns
``rlnAngleRot``, ``rlnAngleTilt``, ``rlnAnglePsi``).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "euler_to_matrix",
    "matrix_to_euler",
    "random_rotations",
]


def euler_to_matrix(euler: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """RELION ZYZ Euler angles (rot, tilt, psi) in radians → rotation matrices.

    Parameters
    ----------
    euler
        ``(..., 3)`` angles (rot, tilt, psi) in radians, numpy or torch.

    Returns
    -------
    ``(..., 3, 3)`` rotation matrices of the same library and dtype, following
    ``Euler_angles2matrix`` of RELION's ``src/euler.cpp`` (see module docstring).
    """
    xp = torch if isinstance(euler, torch.Tensor) else np
    alpha, beta, gamma = euler[..., 0], euler[..., 1], euler[..., 2]
    ca, cb, cg = xp.cos(alpha), xp.cos(beta), xp.cos(gamma)
    sa, sb, sg = xp.sin(alpha), xp.sin(beta), xp.sin(gamma)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    rows = [
        [cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb],
        [-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb],
        [sc, ss, cb],
    ]
    return xp.stack([xp.stack(r, -1) for r in rows], -2)


def matrix_to_euler(matrix: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Rotation matrices → RELION ZYZ Euler angles (rot, tilt, psi) in radians.

    Inverse of :func:`euler_to_matrix` with RELION's choice at the gimbal lock
    (``tilt`` = 0 or π: all rotation is put into ``psi`` and ``rot`` = 0), following
    ``Euler_matrix2angles`` of RELION's ``src/euler.cpp``. ``tilt`` ∈ [0, π];
    ``rot``, ``psi`` ∈ (-π, π].

    Parameters
    ----------
    matrix
        ``(..., 3, 3)`` rotation matrices (numpy or torch).
    """
    is_torch = isinstance(matrix, torch.Tensor)
    m = matrix.detach().cpu().double().numpy() if is_torch else np.asarray(matrix, np.float64)
    a22 = np.clip(m[..., 2, 2], -1.0, 1.0)
    sb = np.hypot(m[..., 0, 2], m[..., 1, 2])
    tilt = np.arctan2(sb, a22)
    regular = sb > 16 * np.finfo(np.float64).eps
    rot = np.where(regular, np.arctan2(m[..., 2, 1], m[..., 2, 0]), 0.0)
    psi_regular = np.arctan2(m[..., 1, 2], -m[..., 0, 2])
    # Gimbal lock: tilt = 0 gives R = R_z(rot + psi); tilt = π gives R_z(psi - rot) R_y(π).
    psi_lock = np.where(
        a22 > 0, np.arctan2(m[..., 0, 1], m[..., 0, 0]), np.arctan2(m[..., 0, 1], -m[..., 0, 0])
    )
    psi = np.where(regular, psi_regular, psi_lock)
    out = np.stack([rot, tilt, psi], -1)
    if is_torch:
        return torch.as_tensor(out, dtype=matrix.dtype, device=matrix.device)
    return out.astype(np.result_type(matrix.dtype, np.float32)) if hasattr(matrix, "dtype") else out


def random_rotations(
    n: int, *, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """``n`` rotations drawn uniformly (Haar measure) on SO(3).

    Uniform unit quaternions (normalised 4D Gaussians) mapped to matrices; uniform Euler
    angles would over-sample the poles. The Gaussians are drawn on ``generator``'s device
    (the CPU without one), so a stream gives the same rotations wherever they are used;
    the result is on ``device`` (default: that same device).

    Returns
    -------
    ``(n, 3, 3)`` torch tensor.
    """
    source = generator.device if generator is not None else torch.device("cpu")
    q = torch.randn(n, 4, generator=generator, dtype=torch.float64, device=source)
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    mat = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
            2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
            2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
        ],
        -1,
    ).reshape(n, 3, 3)
    return mat.to(device=source if device is None else torch.device(device), dtype=dtype)
