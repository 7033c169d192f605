"""The chain fit's result: coefficients, per-particle expansion values, and what rebuilds a chain.

Saved as ``chainfit_result.npz`` (arrays) + ``chainfit_result.json`` (reference atom,
per-epoch history, settings) in the run directory — the same file names as before the
stage protocol, so older results still load (their particle indices default to
``0 … N-1``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_cryohet.io.atomic import save_npz_atomic
from napari_cryohet.io.json_files import read_json, write_json
from napari_cryohet.stages.chainfit.model import build_chains
from napari_cryohet.stages.chainfit.reference import ChainReference
from napari_cryohet.stages.protocol import Embedding, StageResult

__all__ = ["ChainFitResult"]

ARRAYS = "chainfit_result.npz"
META = "chainfit_result.json"


class ChainFitResult(StageResult):
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
        Positions (rows) in the dataset the fit ran on.
    config
        The :class:`~napari_cryohet.stages.chainfit.config.ChainFitConfig` as a dict.
    particle_indices
        ``(N,)`` root particle index of each row (``ParticleDataset.indices``).
    mode_vectors
        The normal-mode basis only (``config["basis"] == "normal_modes"``): ``Δ (K, m, 3)``,
        Å per unit amplitude; ``phi`` then holds each particle's amplitudes ``b_i`` (Å of
        RMSD along each mode) and the chains are ``r⁰ + Σ_k b_ik Δ_k`` (eq. 7 of Toader et
        al. 2023; :mod:`~napari_cryohet.stages.chainfit.normal_modes`); ``coeff_*`` are zero.
    """

    STAGE = "chainfit"
    FORMAT_VERSION = 1

    def __init__(self, *, coeff_theta: np.ndarray, coeff_psi: np.ndarray, theta0: np.ndarray, psi0: np.ndarray,
                 phi: np.ndarray, anchor_positions: np.ndarray, anchor_frames: np.ndarray,
                 reference: ChainReference, ref_index: int, bond_lengths_a: np.ndarray, coeff_mask: np.ndarray,
                 history: list[dict[str, float]], train_indices: np.ndarray, test_indices: np.ndarray,
                 config: dict[str, Any], particle_indices: np.ndarray | None = None,
                 mode_vectors: np.ndarray | None = None) -> None:
        self.coeff_theta, self.coeff_psi = coeff_theta, coeff_psi
        self.theta0, self.psi0, self.phi = theta0, psi0, phi
        self.anchor_positions, self.anchor_frames = anchor_positions, anchor_frames
        self.reference, self.ref_index = reference, int(ref_index)
        self.bond_lengths_a, self.coeff_mask = bond_lengths_a, coeff_mask
        self.history = history
        self.train_indices, self.test_indices = np.asarray(train_indices), np.asarray(test_indices)
        self.config = config
        self.mode_vectors = None if mode_vectors is None else np.asarray(mode_vectors, dtype=np.float32)
        n = len(phi)
        self._particle_indices = (np.arange(n, dtype=np.int64) if particle_indices is None
                                  else np.asarray(particle_indices, dtype=np.int64))
        if len(self._particle_indices) != n:
            raise ValueError(f"particle_indices: {len(self._particle_indices)} for {n} particles")

    @property
    def particle_indices(self) -> np.ndarray:
        return self._particle_indices

    def rows(self, particles: np.ndarray) -> np.ndarray:
        """Rows of this result holding the root particle indices ``particles``, in their order.

        Raises :class:`~napari_cryohet.stages.protocol.ParticleMismatchError` for particles
        the fit did not cover.
        """
        positions = Embedding(np.arange(len(self.phi))[:, None], self.particle_indices, run_id=self.run_id,
                              name="chain fit")
        return positions.aligned_to(np.asarray(particles, dtype=np.int64))[:, 0]

    def embedding(self) -> Embedding:
        """Each particle's fitted deformation, for other stages: ``(N, F)`` radians.

        The changes from the reference ``Θ_i − Θ₀`` of every angle with a fitted coefficient,
        then ``Ψ_i − Ψ₀`` of those angles when bond angles were fitted (e.g. the spectral
        stage's ``"table"`` representation embeds them).
        """
        if self.mode_vectors is not None:
            return Embedding(self.phi, self.particle_indices, run_id=self.run_id, name="normal-mode amplitudes")
        fitted = np.flatnonzero(self.coeff_mask.any(axis=1))
        theta, psi = self.angles()
        parts = [theta[:, fitted] - self.theta0[fitted]]
        if not self.planar and self.config.get("fit_bond_angles", True):
            parts.append(psi[:, fitted] - self.psi0[fitted])
        return Embedding(np.concatenate(parts, axis=1), self.particle_indices, run_id=self.run_id,
                         name="chain-fit angle changes")

    @property
    def planar(self) -> bool:
        return self.reference.coords_a.shape[1] == 2

    def angles(self, indices: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """``(Θ_i, Ψ_i)`` of rows ``indices`` (default all): ``(n, m-2)`` each."""
        if self.mode_vectors is not None:  # the angles of the moved atoms
            from napari_cryohet.core.frenet import chain_angles

            theta, psi = chain_angles(torch.as_tensor(self.chains(indices), dtype=torch.float64))
            return theta.numpy(), psi.numpy()
        phi = self.phi if indices is None else self.phi[indices]
        theta = self.theta0 + phi @ self.coeff_theta.T
        psi = self.psi0 + phi @ self.coeff_psi.T
        return theta, psi

    def chains(self, indices: Any = None) -> np.ndarray:
        """Fitted chains of rows ``indices`` (default all), model frame: ``(n, m, d)``."""
        idx = np.arange(len(self.phi)) if indices is None else np.atleast_1d(np.arange(len(self.phi))[indices])
        if self.mode_vectors is not None:
            moved = np.einsum("nk,kmd->nmd", self.phi[idx].astype(np.float64), self.mode_vectors.astype(np.float64))
            return (self.reference.coords_a + moved).astype(np.float32)
        theta, psi = self.angles(idx)
        out = []
        for s in range(0, len(idx), 2048):
            sl = slice(s, s + 2048)
            out.append(build_chains(torch.as_tensor(theta[sl], dtype=torch.float64),
                                    torch.as_tensor(psi[sl], dtype=torch.float64),
                                    torch.as_tensor(self.anchor_positions[idx[sl]], dtype=torch.float64),
                                    torch.as_tensor(self.anchor_frames[idx[sl]], dtype=torch.float64),
                                    self.ref_index, torch.as_tensor(self.bond_lengths_a, dtype=torch.float64),
                                    self.planar).numpy())
        return np.concatenate(out, 0).astype(np.float32) if out else np.zeros((0, *self.reference.coords_a.shape),
                                                                              np.float32)

    def _save(self, run_dir: Path) -> None:
        save_npz_atomic(
            run_dir / ARRAYS,
            coeff_theta=self.coeff_theta, coeff_psi=self.coeff_psi, theta0=self.theta0, psi0=self.psi0,
            phi=self.phi, anchor_positions=self.anchor_positions, anchor_frames=self.anchor_frames,
            reference_coords_a=self.reference.coords_a, reference_resnames=self.reference.resnames.astype(str),
            reference_resids=self.reference.resids, reference_gaps=self.reference.gaps,
            reference_chain_ids=self.reference.chain_ids.astype(str), reference_icodes=self.reference.icodes.astype(str),
            bond_lengths_a=self.bond_lengths_a, coeff_mask=self.coeff_mask,
            train_indices=self.train_indices, test_indices=self.test_indices,
            particle_indices=self.particle_indices,
            **({} if self.mode_vectors is None else {"mode_vectors": self.mode_vectors}),
        )
        write_json(run_dir / META, {"ref_index": self.ref_index, "history": self.history, "config": self.config,
                                    "reference_source": self.reference.source,
                                    "reference_notes": list(self.reference.notes)})

    @classmethod
    def _load(cls, run_dir: Path) -> ChainFitResult:
        meta = read_json(run_dir / META)
        with np.load(run_dir / ARRAYS, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        reference = ChainReference(arrays.pop("reference_coords_a"), arrays.pop("reference_resnames"),
                                   arrays.pop("reference_resids"), arrays.pop("reference_gaps"),
                                   source=meta.get("reference_source", ""),
                                   chain_ids=arrays.pop("reference_chain_ids", None),
                                   icodes=arrays.pop("reference_icodes", None),
                                   notes=tuple(meta.get("reference_notes", ())))
        return cls(reference=reference, ref_index=int(meta["ref_index"]), history=meta["history"],
                   config=meta["config"], **arrays)
