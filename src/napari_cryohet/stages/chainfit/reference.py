"""The known conformation a chain fit deforms (Assumption 2 of Esteve-Yagüe et al. 2022).

A reference is a Cα chain in the frame of the particles' poses: read from a PDB/mmCIF
model (:func:`reference_from_pdb`) or taken from a simulated dataset's ground truth
(:func:`reference_from_dataset`). Residue ranges typed by a user (``"10-20,40-52"``) become
angle indices with :func:`parse_residue_ranges` and :func:`angles_for_residues`: angle ``j``
sits at atom ``j + 1``, the vertex between bonds ``j`` and ``j + 1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ChainReference",
    "reference_from_pdb",
    "reference_from_dataset",
    "resolve_reference",
    "default_reference_atom",
    "angles_for_residues",
    "parse_residue_ranges",
]


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
        ``(G,)`` bond indices where the chain is broken (from ``io.pdb.read_ca_chain``).
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

    def angles(self, ranges_text: str | None) -> tuple[int, ...]:
        """Angle indices of the residue ranges ``"10-20,33"`` of this chain (empty text: none)."""
        return tuple(int(j) for j in angles_for_residues(self.resids, parse_residue_ranges(ranges_text)))


def reference_from_pdb(path: str | Path, *, chain: str | None = None) -> ChainReference:
    """Reference chain from the Cα atoms of a PDB/mmCIF file (``io.pdb.read_ca_chain``)."""
    from napari_cryohet.io.pdb import read_ca_chain

    coords, resnames, resids, gaps = read_ca_chain(path, chain=chain)
    return ChainReference(coords, resnames, resids, gaps, source=str(path))


def reference_from_dataset(dataset: Any, *, particle: int | None = None,
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
    truth = getattr(dataset, "ground_truth", None) or {}
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
        raise ValueError("reference: the dataset has no known conformation (ground_truth"
                         "['global/reference_coords_a']); give a PDB/mmCIF file of it")
    return ChainReference(np.asarray(truth["global/reference_coords_a"]), source="dataset:global/reference_coords_a")


def resolve_reference(config: Any, dataset: Any) -> ChainReference:
    """The reference a config names: its ``reference`` file, else the dataset's known conformation."""
    if getattr(config, "reference", None):
        return reference_from_pdb(config.reference, chain=config.reference_chain or None)
    return reference_from_dataset(dataset)


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
