"""Composite hyper-molecules V[θ](r, τ) of Lederman, Andén & Singer 2020 (001_e1fd27914a9da292.txt).

A hyper-molecule is a 3D density that also depends on a state ``τ`` (eq. 20–21)::

    V(r, τ) = Σ_{k,q} a_kq ψ_k(r) P_q(τ)

and a *composite* hyper-molecule (eq. 25–27, Remark 5) is a sum of components ``V^m``, each
supported in a ball, each rigid (no state) or heterogeneous with its own 1D or 2D state
``τ^m``, optionally moving along an affine trajectory, and optionally a *copy* of another
component under a known rigid transform (the pretzel's two arms: one coefficient tensor,
two independent states).

Spatial basis ψ_k: isotropic Gaussian blobs on a grid
------------------------------------------------------
The paper used generalised prolate spheroidal functions. Here ψ_k are isotropic Gaussians
of width ``σ`` (default: the grid spacing ``h``) centred on a cubic grid of spacing ``h``
filling each component's ball, with the mass normalisation of :mod:`napari_cryohet.core.atoms`
(the coefficient ``a_kq`` is the blob's mass, so ``Σ_k a_k`` is the component's mass).

Why: the projection of a 3D Gaussian along any direction is the 2D Gaussian at the projected
centre, so a projection of V at any pose and state is exact and closed-form
(:func:`~napari_cryohet.core.projection.project_gaussian_atoms`: one ``(B,D,K) @ (B,K,D)``
product, no interpolation, differentiable in the coefficients and the blob centres).
Trade-offs: a Gaussian is not strictly band-limited nor compactly supported, but both in
practice — with ``σ = h`` its transform is ``exp(−2π²σ²k²)`` = 0.7 % at the grid's Nyquist
frequency ``1/2h`` (little aliasing) and it is below 10⁻¹³ beyond 7.7 σ. The price is
conditioning: overlapping blobs are far from orthogonal (neighbours overlap
``exp(−h²/4σ²)`` = 0.78), so the resolution of V is about ``πσ`` rather than ``2h``, and
gradient samplers need a preconditioner (:mod:`napari_cryohet.core.mcmc`). Resolution is
chosen with ``spacing_a`` (coarse grids for the early, low-resolution passes of §5).
Spherical Bessel × spherical harmonics would be orthogonal and strictly band-limited, but
their projections need a Fourier slice and interpolation, and their support is the whole
ball.

State basis P_q: on ``τ ∈ [0, 1]`` (the simulator's convention), orthonormal in
``L²([0, 1]^S)``: shifted Legendre polynomials ``√(2q+1) P_q(2τ−1)`` (``"legendre"``, the
paper's low-degree orthogonal polynomials, eq. 20) or ``√2 cos(πqτ)`` (``"cosine"``, the
paper's §5 cosines; no preferred state at the ends of the interval). For a 2D state
``(τ₁, τ₂)`` the products ``P_i(τ₁) P_j(τ₂)`` with ``i + j ≤ order``. Polynomials are exact
for motions that are low-order in τ; cosines behave better at high order (no Runge-like
growth at the ends).

Trajectory (eq. 27): a component with ``trajectory=True`` has its blobs displaced by
``d(τ) = t₀ + Σ_s τ_s t_s`` (a ``(1 + S, 3)`` parameter in Å), i.e.
``V^m(r − d(τ), τ)``; eq. 27 writes ``V^m(r + θ₁τ + θ₀)``, so ``t = −θ``.

Convention: blob centres and ``r`` are ``(x, y, z)`` in Å from the box centre; projections
follow :mod:`napari_cryohet.core.projection` (``image(x, y) = Σ_z V(Rᵀ (x, y, z))``, mass per
pixel) and poses :mod:`napari_cryohet.core.rotation`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from napari_cryohet.core.atoms import gaussian_density_3d
from napari_cryohet.core.projection import project_gaussian_atoms

__all__ = [
    "STATE_BASES",
    "Component",
    "HyperMolecule",
    "blob_grid",
    "evaluate_state_basis",
    "state_basis_size",
    "state_smoothness_gram",
]

#: Names of the state bases :func:`evaluate_state_basis` accepts.
STATE_BASES = ("legendre", "cosine")


def state_basis_size(state_dim: int, order: int) -> int:
    """Number of state functions ``Q``: 1 (rigid), ``order + 1`` (1D), ``(order+1)(order+2)/2`` (2D)."""
    if state_dim == 0:
        return 1
    if state_dim == 1:
        return order + 1
    return (order + 1) * (order + 2) // 2


def _basis_1d(x: torch.Tensor, order: int, kind: str) -> torch.Tensor:
    """``(..., order+1)`` orthonormal functions on [0, 1] at ``x (...)``."""
    if kind == "cosine":
        q = torch.arange(order + 1, device=x.device, dtype=x.dtype)
        scale = torch.where(q == 0, torch.ones_like(q), torch.full_like(q, math.sqrt(2.0)))
        return scale * torch.cos(math.pi * q * x[..., None])
    u = 2.0 * x - 1.0
    polys = [torch.ones_like(u)]
    if order >= 1:
        polys.append(u)
    for n in range(1, order):
        polys.append(((2 * n + 1) * u * polys[n] - n * polys[n - 1]) / (n + 1))
    return torch.stack([math.sqrt(2 * q + 1) * p for q, p in enumerate(polys)], -1)


def evaluate_state_basis(tau: torch.Tensor, *, order: int, kind: str = "legendre") -> torch.Tensor:
    """The state functions ``P_q(τ)`` of eq. 20–21, orthonormal on ``[0, 1]^S``.

    Parameters
    ----------
    tau
        ``(B, S)`` states in ``[0, 1]``, ``S`` = 0 (rigid), 1 or 2.
    order
        Highest degree (1D) or total degree (2D).
    kind
        ``"legendre"`` (shifted Legendre polynomials) or ``"cosine"`` (``√2 cos πqτ``).

    Returns
    -------
    ``(B, Q)`` with ``Q`` = :func:`state_basis_size`; 2D functions are ``P_i(τ₁) P_j(τ₂)``
    ordered by ``i`` then ``j`` (``i + j ≤ order``).
    """
    if kind not in STATE_BASES:
        raise ValueError(f"state basis {kind!r} is not one of {STATE_BASES}")
    if tau.dim() != 2 or tau.shape[1] > 2:
        raise ValueError(f"tau must have shape (B, S) with S = 0, 1 or 2 states, got {tuple(tau.shape)}")
    if tau.shape[1] == 0:
        return torch.ones(tau.shape[0], 1, dtype=tau.dtype, device=tau.device)
    p1 = _basis_1d(tau[:, 0], order, kind)  # (B, order+1)
    if tau.shape[1] == 1:
        return p1
    p2 = _basis_1d(tau[:, 1], order, kind)
    cols = [p1[:, i] * p2[:, j] for i in range(order + 1) for j in range(order + 1 - i)]
    return torch.stack(cols, -1)


def state_smoothness_gram(*, state_dim: int, order: int, kind: str = "legendre") -> torch.Tensor:
    """``(Q, Q)`` float64 matrix ``S_qq' = ∫_{[0,1]^S} ∇P_q · ∇P_q' dτ``.

    The continuous form of the smoothness penalty of eq. 24 (``Σ_t ‖V(·, t) − V(·, t+1)‖²``
    becomes ``∫ ‖∂_τ V‖² dτ``): for coefficients ``a_q`` the penalty is ``Σ_qq' S_qq' a_qᵀ G a_q'``.
    Computed by Gauss–Legendre quadrature (64 nodes per axis: exact for the polynomials,
    to round-off for the cosines up to order ~20) with autograd derivatives.
    """
    q = state_basis_size(state_dim, order)
    if state_dim == 0:
        return torch.zeros(1, 1, dtype=torch.float64)
    nodes, weights = np.polynomial.legendre.leggauss(64)
    x = torch.as_tensor((nodes + 1) / 2)
    w = torch.as_tensor(weights / 2)
    if state_dim == 1:
        tau, wt = x[:, None], w
    else:
        g1, g2 = torch.meshgrid(x, x, indexing="ij")
        tau = torch.stack([g1.reshape(-1), g2.reshape(-1)], -1)
        wt = (w[:, None] * w[None, :]).reshape(-1)
    tau = tau.clone().requires_grad_(True)
    basis = evaluate_state_basis(tau, order=order, kind=kind)  # (N, Q)
    grads = torch.stack([torch.autograd.grad(basis[:, i].sum(), tau, retain_graph=True)[0] for i in range(q)], 1)
    return torch.einsum("n,nqs,nps->qp", wt, grads, grads).detach()  # (Q, Q)


def blob_grid(centre_a, radius_a: float, spacing_a: float) -> torch.Tensor:
    """``(K, 3)`` float64 blob centres: the points of a cubic grid of spacing ``spacing_a`` (one
    point on ``centre_a``) within ``radius_a`` of ``centre_a`` (Å)."""
    if spacing_a <= 0 or radius_a <= 0:
        raise ValueError(f"spacing_a and radius_a must be positive, got {spacing_a} and {radius_a}")
    n = int(math.floor(radius_a / spacing_a))
    u = torch.arange(-n, n + 1, dtype=torch.float64) * spacing_a
    g = torch.stack(torch.meshgrid(u, u, u, indexing="ij"), -1).reshape(-1, 3)
    g = g[g.norm(dim=-1) <= radius_a + 1e-9]
    return g + torch.as_tensor(centre_a, dtype=torch.float64)


@dataclass(frozen=True)
class Component:
    """One component ``V^m`` of a composite hyper-molecule (001 eq. 25–27, Remark 5).

    Attributes
    ----------
    name
        Unique name (``"base"``, ``"arm1"``).
    centre_a, radius_a
        The ball (Å, ``(x, y, z)`` from the box centre) the component is supported in. For
        a copy these are ignored: its ball is the source's, transformed.
    state_dim
        0 rigid, 1 or 2 (its own state ``τ^m``).
    state_order
        Degree of the state basis (ignored for a rigid component).
    trajectory
        The component's blobs move along ``d(τ) = t₀ + Σ τ_s t_s`` (eq. 27).
    copy_of
        Name of a component whose coefficients (and trajectory) this one shares; it keeps
        its own state. ``copy_rotation`` and ``copy_translation_a`` give the rigid map
        ``r ↦ R r + t`` from the source to this copy (C₂ about z: ``diag(−1, −1, 1)``).
    """

    name: str
    centre_a: tuple[float, float, float] = (0.0, 0.0, 0.0)
    radius_a: float = 10.0
    state_dim: int = 0
    state_order: int = 2
    trajectory: bool = False
    copy_of: str | None = None
    copy_rotation: tuple[tuple[float, float, float], ...] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    copy_translation_a: tuple[float, float, float] = (0.0, 0.0, 0.0)


class HyperMolecule:
    """A composite hyper-molecule with Gaussian-blob spatial bases (see the module docstring).

    The model holds the geometry (blob centres, state layout, sharing); the coefficients θ
    live in a ``dict[str, Tensor]`` (:meth:`parameter_shapes`) so samplers can move them:
    ``"<source>.coefficients"`` ``(K_m, Q_m)`` and, with a trajectory,
    ``"<source>.trajectory"`` ``(1 + S_m, 3)`` Å. A copy has no parameters of its own — weight
    sharing holds by construction.

    The per-particle state vector ``τ (B, S_total)`` concatenates the states of the
    heterogeneous components in the order given (:attr:`state_columns`).

    Parameters
    ----------
    components
        The components; a copy's ``copy_of`` must name an earlier non-copy component.
    spacing_a
        Blob grid spacing in Å.
    sigma_a
        Blob width in Å (default ``spacing_a``).
    state_basis
        ``"legendre"`` or ``"cosine"``.
    device, dtype
        Where the geometry lives (parameters are created there by :meth:`init_params`).
    """

    def __init__(self, components: list[Component] | tuple[Component, ...], *, spacing_a: float,
                 sigma_a: float | None = None, state_basis: str = "legendre",
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> None:
        if state_basis not in STATE_BASES:
            raise ValueError(f"state basis {state_basis!r} is not one of {STATE_BASES}")
        if not components:
            raise ValueError("a hyper-molecule needs at least one component")
        self.components = tuple(components)
        self.spacing_a = float(spacing_a)
        self.sigma_a = float(sigma_a if sigma_a is not None else spacing_a)
        if self.sigma_a <= 0:
            raise ValueError(f"sigma_a must be positive, got {sigma_a}")
        self.state_basis = state_basis
        self.device, self.dtype = torch.device(device), dtype
        by_name: dict[str, Component] = {}
        self._centres: dict[str, torch.Tensor] = {}  # source name -> (K, 3)
        self._transforms: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # name -> (R, t)
        self.state_columns: dict[str, slice] = {}
        col = 0
        for comp in self.components:
            if comp.name in by_name:
                raise ValueError(f"component name {comp.name!r} is used twice")
            if comp.state_dim not in (0, 1, 2):
                raise ValueError(f"component {comp.name!r}: state_dim must be 0, 1 or 2, got {comp.state_dim}")
            if comp.copy_of is not None:
                src = by_name.get(comp.copy_of)
                if src is None or src.copy_of is not None:
                    raise ValueError(f"component {comp.name!r}: copy_of must name an earlier component that is "
                                     f"not itself a copy, got {comp.copy_of!r}")
                if (comp.state_dim, comp.state_order, comp.trajectory) != (src.state_dim, src.state_order,
                                                                            src.trajectory):
                    raise ValueError(f"component {comp.name!r} copies {src.name!r} but its state_dim, state_order "
                                     "or trajectory differ")
                rot = torch.as_tensor(comp.copy_rotation, dtype=torch.float64)
                if rot.shape != (3, 3) or not torch.allclose(rot @ rot.T, torch.eye(3, dtype=torch.float64),
                                                             atol=1e-6) or float(torch.det(rot)) < 0:
                    raise ValueError(f"component {comp.name!r}: copy_rotation must be a 3×3 proper rotation")
                self._transforms[comp.name] = (rot, torch.as_tensor(comp.copy_translation_a, dtype=torch.float64))
            else:
                self._centres[comp.name] = blob_grid(comp.centre_a, comp.radius_a, self.spacing_a)
            if comp.state_dim:
                self.state_columns[comp.name] = slice(col, col + comp.state_dim)
                col += comp.state_dim
            by_name[comp.name] = comp
        self._by_name = by_name
        self.state_dim = col
        self._smooth = {name: state_smoothness_gram(state_dim=c.state_dim, order=c.state_order, kind=state_basis)
                        for name, c in by_name.items() if c.copy_of is None}
        self._overlap: dict[str, torch.Tensor] = {}  # source name -> (K, K) blob overlap, built on first use

    # -- geometry ---------------------------------------------------------------------------
    def source_of(self, name: str) -> str:
        """The component whose parameters ``name`` uses (itself unless a copy)."""
        return self._by_name[name].copy_of or name

    def n_state_functions(self, name: str) -> int:
        c = self._by_name[name]
        return state_basis_size(c.state_dim, c.state_order)

    def blob_centres(self, name: str) -> torch.Tensor:
        """``(K_m, 3)`` rest positions of component ``name``'s blobs (Å; a copy's transformed)."""
        src = self.source_of(name)
        c = self._centres[src]
        if name in self._transforms:
            rot, t = self._transforms[name]
            c = c @ rot.T + t
        return c.to(self.device, self.dtype)

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """Names and shapes of θ (sources only)."""
        shapes: dict[str, tuple[int, ...]] = {}
        for name, c in self._by_name.items():
            if c.copy_of is None:
                shapes[f"{name}.coefficients"] = (len(self._centres[name]), self.n_state_functions(name))
                if c.trajectory:
                    shapes[f"{name}.trajectory"] = (1 + c.state_dim, 3)
        return shapes

    @property
    def n_blobs(self) -> int:
        """Total number of blobs over all components (copies included)."""
        return sum(len(self._centres[self.source_of(c.name)]) for c in self.components)

    def init_params(self, *, coefficient_value: float = 0.0) -> dict[str, torch.Tensor]:
        """θ with every coefficient ``coefficient_value`` (rigid term only) and trajectories 0."""
        params = {}
        for key, shape in self.parameter_shapes().items():
            p = torch.zeros(shape, device=self.device, dtype=self.dtype)
            if key.endswith(".coefficients"):
                p[:, 0] = coefficient_value
            params[key] = p
        return params

    def _check_tau(self, tau: torch.Tensor) -> torch.Tensor:
        tau = torch.as_tensor(tau, device=self.device, dtype=self.dtype)
        if tau.dim() != 2 or tau.shape[1] != self.state_dim:
            raise ValueError(f"tau must have shape (B, {self.state_dim}) (the states of "
                             f"{list(self.state_columns)}), got {tuple(tau.shape)}")
        return tau

    # -- evaluation -------------------------------------------------------------------------
    def blobs(self, params: dict[str, torch.Tensor], tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Blob positions and masses of every component at states ``tau``.

        Parameters
        ----------
        params
            θ (:meth:`parameter_shapes`).
        tau
            ``(B, S_total)`` states.

        Returns
        -------
        positions ``(B, K, 3)`` Å (or ``(K, 3)`` when nothing moves) and masses ``(B, K)``,
        ``K`` = :attr:`n_blobs`, components in order.
        """
        tau = self._check_tau(tau)
        b = tau.shape[0]
        moving = any(c.trajectory for c in self.components)
        positions, masses = [], []
        for comp in self.components:
            src = self.source_of(comp.name)
            cols = self.state_columns.get(comp.name, slice(0, 0))
            t = tau[:, cols]  # (B, S_m)
            basis = evaluate_state_basis(t, order=comp.state_order, kind=self.state_basis)  # (B, Q)
            masses.append(basis @ params[f"{src}.coefficients"].T)  # (B, K_m)
            centres = self.blob_centres(comp.name)  # (K_m, 3)
            if moving:
                pos = centres.expand(b, -1, -1)
                if comp.trajectory:
                    traj = params[f"{src}.trajectory"]  # (1 + S, 3)
                    disp = traj[0] + t @ traj[1:]  # (B, 3)
                    if comp.name in self._transforms:
                        disp = disp @ self._transforms[comp.name][0].to(disp).T
                    pos = pos + disp[:, None, :]
                positions.append(pos)
            else:
                positions.append(centres)
        return torch.cat(positions, -2), torch.cat(masses, -1)

    def project(self, params: dict[str, torch.Tensor], tau: torch.Tensor, rotations: torch.Tensor, *,
                d: int, apix: float) -> torch.Tensor:
        """``(B, D, D)`` exact projections ``Σ_z V(Rᵀ (x, y, z), τ_i)`` (eq. 22 without CTF, shift,
        contrast), mass per pixel, by :func:`~napari_cryohet.core.projection.project_gaussian_atoms`.

        ``tau (B, S_total)``, ``rotations (B, 3, 3)``; differentiable in ``params``.
        """
        positions, masses = self.blobs(params, tau)
        return project_gaussian_atoms(positions, rotations.to(self.device, self.dtype), d=d, apix=apix,
                                      sigma_a=self.sigma_a, weights=masses)

    def evaluate_volume(self, params: dict[str, torch.Tensor], tau: torch.Tensor, *, d: int,
                        apix: float) -> torch.Tensor:
        """``(B, D, D, D)`` voxelised ``V(·, τ_i)`` (mass per voxel, ``[z, y, x]``), one per row of ``tau``."""
        positions, masses = self.blobs(params, tau)
        if positions.dim() == 2:
            positions = positions.expand(masses.shape[0], -1, -1)
        with torch.no_grad():
            return gaussian_density_3d(positions, d=d, apix=apix, sigma_a=self.sigma_a, weights=masses)

    def evaluate_density(self, params: dict[str, torch.Tensor], points_a: torch.Tensor, tau: torch.Tensor, *,
                         chunk: int = 4096) -> torch.Tensor:
        """``(P,)`` density ``V(r, τ)`` in mass per Å³ at arbitrary ``points_a (P, 3)`` for one state
        ``tau (1, S_total)`` — a direct sum over blobs (no separability), the reference the
        projections are tested against."""
        positions, masses = self.blobs(params, tau)
        positions = positions.reshape(-1, 3)
        masses = masses.reshape(-1)
        pts = torch.as_tensor(points_a, device=self.device, dtype=self.dtype)
        norm = (2 * math.pi * self.sigma_a**2) ** -1.5
        out = []
        for start in range(0, pts.shape[0], chunk):
            r2 = torch.cdist(pts[start:start + chunk], positions).square()  # (p, K)
            out.append(norm * torch.exp(-r2 / (2 * self.sigma_a**2)) @ masses)
        return torch.cat(out)

    # -- priors -----------------------------------------------------------------------------
    def smoothness_penalty(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """``Σ_m Σ_qq' S_qq' a_qᵀ G a_q'`` (eq. 24 in continuous form, :func:`state_smoothness_gram`),
        with ``G_kl = exp(−|c_k − c_l|² / 4σ²)`` the blobs' overlap normalised to ``G_kk = 1``.
        Shared coefficients count once. Scalar, differentiable."""
        total = torch.zeros((), device=self.device, dtype=self.dtype)
        for name, smooth in self._smooth.items():
            if not bool(smooth.abs().sum() > 0):
                continue
            a = params[f"{name}.coefficients"]  # (K, Q)
            if name not in self._overlap:
                c = self._centres[name].to(self.device, self.dtype)
                self._overlap[name] = torch.exp(-torch.cdist(c, c).square() / (4 * self.sigma_a**2))  # (K, K)
            gram = self._overlap[name]
            total = total + ((gram @ a) * (a @ smooth.to(a))).sum()
        return total
