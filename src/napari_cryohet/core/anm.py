"""Elastic-network normal modes of a Cα chain: the anisotropic network model (ANM).

The ANM (Atilgan, Akinci, Bahar et al. 2001, *Biophys. J.* 80:505–515; Bahar, Lezon,
Bakan & Shrivastava 2010, *Chem. Rev.* 110:1463) joins every pair of Cα atoms closer than
a cutoff ``r_c`` (15 Å by default) by a Hookean spring of stiffness ``γ`` at its rest
length. Its potential is ``U = γ/2 Σ_{i<j, d_ij<r_c} (|r_i − r_j| − d_ij)²``, whose Hessian
at the reference is made of ``3 × 3`` super-elements

    H_ij = −γ / d_ij² · (r_j − r_i)(r_j − r_i)ᵀ          (i ≠ j, d_ij < r_c)
    H_ii = −Σ_{j≠i} H_ij

(eq. 4–5 of Atilgan et al. 2001). Its eigenvectors are the normal modes; the six with zero
eigenvalue are the rigid-body translations and rotations, the next ones the slowest, most
collective motions (hinge bending, domain closure). These modes are also the basis of the
normal-mode alternative of eq. 7 of ``002_0d217c95809d417a.txt`` (HEMNMA).

Why hand-written: ProDy (the reference ANM implementation) is not a dependency of this
project; the Hessian is ~20 lines of numpy and :func:`scipy.linalg.eigh` gives its lowest
eigenpairs, which is all the chain fit and the simulator need. For ``M`` atoms the Hessian is
dense ``3M × 3M`` (1000 residues: 3000 × 3000, 72 MB, a few seconds).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ANMModes", "anm_hessian", "anm_modes", "rigid_body_basis"]

#: Number of rigid-body motions of a 3D body (3 translations + 3 rotations).
N_RIGID_BODY = 6


@dataclass
class ANMModes:
    """The lowest non-trivial ANM modes of a reference.

    Attributes
    ----------
    vectors
        ``(K, M, 3)`` modes; each is a unit vector of ``R^{3M}`` (``Σ_{j,a} v² = 1``) and the
        ``K`` are mutually orthonormal and orthogonal to the rigid-body motions. A
        displacement ``c · vectors[k]`` moves the atoms by an RMSD of ``|c| / sqrt(M)`` Å.
    eigenvalues
        ``(K,)`` Hessian eigenvalues in units of ``γ`` / Å², ascending, all > 0.
    reference_a
        ``(M, 3)`` the coordinates the modes were computed at, Å.
    cutoff_a
        The spring cutoff, Å.
    """

    vectors: np.ndarray
    eigenvalues: np.ndarray
    reference_a: np.ndarray
    cutoff_a: float

    @property
    def n_modes(self) -> int:
        return len(self.eigenvalues)

    def displace(self, amplitudes_a: np.ndarray) -> np.ndarray:
        """Reference moved along the modes: ``reference + Σ_k c_k · sqrt(M) · v_k``.

        ``amplitudes_a (..., K)`` are per-mode RMSDs in Å (the displacement along mode ``k``
        alone has RMSD ``|c_k|``); returns ``(..., M, 3)``.
        """
        c = np.asarray(amplitudes_a, dtype=np.float64)
        if c.shape[-1] != self.n_modes:
            raise ValueError(f"amplitudes_a: expected (..., {self.n_modes}), got {c.shape}")
        m = len(self.reference_a)
        return self.reference_a + np.sqrt(m) * np.einsum("...k,kmd->...md", c, self.vectors)

    def amplitudes_of(self, coords_a: np.ndarray) -> np.ndarray:
        """Projection of ``coords_a (..., M, 3) − reference`` on the modes, as per-mode RMSDs
        in Å (the inverse of :meth:`displace` within the modes' span); ``(..., K)``."""
        d = np.asarray(coords_a, dtype=np.float64) - self.reference_a
        return np.einsum("...md,kmd->...k", d, self.vectors) / np.sqrt(len(self.reference_a))


def _check_coords(coords_a: np.ndarray) -> np.ndarray:
    x = np.asarray(coords_a, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 3 or len(x) < 3:
        raise ValueError(f"coords_a: expected (M, 3) with M >= 3 atoms, got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("coords_a: contains NaN or infinite values")
    return x


def anm_hessian(coords_a: np.ndarray, *, cutoff_a: float = 15.0, gamma: float = 1.0) -> np.ndarray:
    """ANM Hessian ``(3M, 3M)`` of Cα positions ``coords_a (M, 3)`` (eq. 4–5 of Atilgan et al. 2001).

    Row/column ``3 i + a`` is coordinate ``a`` (x, y, z) of atom ``i``. Springs of stiffness
    ``gamma`` join atoms closer than ``cutoff_a`` Å.
    """
    x = _check_coords(coords_a)
    if not cutoff_a > 0:
        raise ValueError(f"cutoff_a must be positive, got {cutoff_a}")
    m = len(x)
    diff = x[None, :, :] - x[:, None, :]  # (M, M, 3): r_j − r_i
    d2 = np.einsum("ijk,ijk->ij", diff, diff)  # (M, M)
    contact = (d2 < cutoff_a**2) & ~np.eye(m, dtype=bool)
    if (d2[contact] < 1e-12).any():
        raise ValueError("coords_a: two atoms at the same position")
    scale = np.where(contact, -gamma / np.where(contact, d2, 1.0), 0.0)  # (M, M)
    blocks = scale[:, :, None, None] * diff[:, :, :, None] * diff[:, :, None, :]  # (M, M, 3, 3)
    idx = np.arange(m)
    blocks[idx, idx] = -blocks.sum(axis=1)
    return blocks.transpose(0, 2, 1, 3).reshape(3 * m, 3 * m)


def rigid_body_basis(coords_a: np.ndarray) -> np.ndarray:
    """``(6, M, 3)`` orthonormal basis of the rigid-body motions (3 translations, 3
    infinitesimal rotations about the centroid) of ``coords_a (M, 3)``."""
    x = _check_coords(coords_a)
    m = len(x)
    c = x - x.mean(axis=0)
    basis = np.zeros((N_RIGID_BODY, m, 3))
    for a in range(3):
        basis[a, :, a] = 1.0
        basis[3 + a] = np.cross(np.eye(3)[a], c)  # ω × r
    q, _ = np.linalg.qr(basis.reshape(N_RIGID_BODY, 3 * m).T)
    return q.T.reshape(N_RIGID_BODY, m, 3)


def anm_modes(coords_a: np.ndarray, *, n_modes: int, cutoff_a: float = 15.0, gamma: float = 1.0) -> ANMModes:
    """The ``n_modes`` slowest non-trivial ANM modes of ``coords_a (M, 3)``.

    The Hessian (:func:`anm_hessian`) is diagonalised with :func:`scipy.linalg.eigh`
    (LAPACK ``syevx``, the lowest ``n_modes`` pairs only) after the six rigid-body motions
    (:func:`rigid_body_basis`, zero eigenvalues) are lifted above the spectrum, so the
    modes returned are orthogonal to them. A network that falls apart into pieces (atoms
    farther than ``cutoff_a`` from the rest) is refused, naming the atoms and the cutoff:
    its "slowest modes" would be pieces drifting apart.

    Parameters
    ----------
    coords_a
        ``(M, 3)`` Cα coordinates, Å.
    n_modes
        Number of non-trivial modes to return, ``1 ≤ n_modes ≤ 3M − 6``.
    cutoff_a
        Spring cutoff in Å (15 Å, the usual Cα ANM choice of Atilgan et al. 2001).
    gamma
        Spring stiffness (sets the eigenvalues' scale only).

    Returns
    -------
    :class:`ANMModes` with ``vectors (n_modes, M, 3)`` and ``eigenvalues (n_modes,)``.

    Examples
    --------
    >>> t = np.linspace(0, 6 * np.pi, 40)
    >>> helix = np.stack([2.3 * np.cos(t), 2.3 * np.sin(t), 1.5 * t], axis=1)
    >>> modes = anm_modes(helix, n_modes=3)
    >>> modes.vectors.shape
    (3, 40, 3)
    """
    from scipy.linalg import eigh
    from scipy.sparse.csgraph import connected_components

    x = _check_coords(coords_a)
    m = len(x)
    if not 1 <= n_modes <= 3 * m - N_RIGID_BODY:
        raise ValueError(f"n_modes must lie in [1, {3 * m - N_RIGID_BODY}] for {m} atoms, got {n_modes}")
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=-1)  # (M, M)
    n_pieces, label = connected_components(d2 < cutoff_a**2, directed=False)
    if n_pieces > 1:
        lonely = np.flatnonzero(label != np.bincount(label).argmax())
        raise ValueError(
            f"the elastic network of {m} atoms with cutoff {cutoff_a:g} Å falls apart into {n_pieces} pieces "
            f"(atoms {', '.join(str(i) for i in lonely[:5])}{' …' if len(lonely) > 5 else ''} are farther than "
            f"{cutoff_a:g} Å from the rest): its slowest modes would be pieces drifting apart; raise cutoff_a")
    hessian = anm_hessian(x, cutoff_a=cutoff_a, gamma=gamma)
    # H r = 0 for every rigid-body motion r, so H + s R Rᵀ has the same eigenvectors, the
    # rigid ones lifted to eigenvalue s > λ_max (Gershgorin bound): the lowest pairs are
    # then exactly the non-trivial modes, even where a floppy (near-zero) mode would mix
    # with the rigid ones.
    rigid = rigid_body_basis(x).reshape(N_RIGID_BODY, 3 * m)
    lift = 2.0 * float(np.abs(hessian).sum(axis=1).max()) + 1.0
    # "evx" (bisection + inverse iteration) takes 0.02 s on 642 × 642 where the default
    # "evr" took 3 s on a busy machine.
    values, vectors = eigh(hessian + lift * rigid.T @ rigid, subset_by_index=[0, n_modes - 1], driver="evx")
    return ANMModes(vectors=vectors.T.reshape(n_modes, m, 3).copy(), eigenvalues=values.copy(),
                    reference_a=x.copy(), cutoff_a=float(cutoff_a))
