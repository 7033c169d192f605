"""The known conformation a chain fit deforms (Assumption 2 of Esteve-Yagüe et al. 2022).

A reference is a Cα chain in the frame of the particles' poses: read from a PDB/mmCIF
model (:func:`reference_from_pdb`) or taken from a simulated dataset's ground truth
(:func:`reference_from_dataset`). :func:`reference_for` picks one for a dataset when the
user names none: its ground truth, else a model shipped beside its ``.star`` file
(:data:`SHIPPED_REFERENCE`, e.g. ``sample_data/adk_small/reference_ca.pdb``). Residue
ranges typed by a user (``"10-20,40-52"``) become angle indices with
:func:`parse_residue_ranges` and :func:`angles_for_residues`: angle ``j`` sits at atom
``j + 1``, the vertex between bonds ``j`` and ``j + 1``.
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
    "reference_for",
    "resolve_reference",
    "SHIPPED_REFERENCE",
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
        ``(G,)`` bond indices where the chain is broken (from ``io.pdb.read_ca_chains``): a
        gap inside a chain or the step from one chain to the next. The model keeps each gap
        bond at its reference length (``model.reference_bond_lengths``), never a 3.8 Å bond.
    source
        Where it came from (file path, ``"dataset:global/reference_coords_a"``, …).
    chain_ids, icodes
        ``(m,)`` chain name and insertion code of each atom (defaults ``""``).
    notes
        Sentences for the user from reading the file: each gap, residues left out (caps,
        ligands, waters), alternative locations chosen.
    """

    coords_a: np.ndarray
    resnames: np.ndarray | None = None
    resids: np.ndarray | None = None
    gaps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    source: str = ""
    chain_ids: np.ndarray | None = None
    icodes: np.ndarray | None = None
    notes: tuple[str, ...] = ()

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
        self.chain_ids = np.full(m, "") if self.chain_ids is None else np.asarray(self.chain_ids, dtype=str)
        self.icodes = np.full(m, "") if self.icodes is None else np.asarray(self.icodes, dtype=str)
        if len(self.chain_ids) != m or len(self.icodes) != m:
            raise ValueError(f"reference chain_ids/icodes: need {m} entries")
        self.gaps = np.unique(np.asarray(self.gaps, dtype=np.int64).reshape(-1))
        if self.gaps.size and not (0 <= self.gaps[0] and self.gaps[-1] <= m - 2):
            raise ValueError(f"reference gaps: bond indices must lie in [0, {m - 2}], got {self.gaps.tolist()}")
        self.notes = tuple(str(n) for n in self.notes)

    @property
    def n_atoms(self) -> int:
        return len(self.coords_a)

    @property
    def segments(self) -> tuple[tuple[int, int], ...]:
        """Half-open atom ranges ``(start, stop)`` of the connected pieces between gaps."""
        bounds = [0, *(int(g) + 1 for g in self.gaps), self.n_atoms]
        return tuple(zip(bounds[:-1], bounds[1:], strict=True))

    def gap_angles(self) -> tuple[int, ...]:
        """Angle indices at either end of a gap bond (angles ``j - 1`` and ``j`` of gap ``j``).

        Angle ``j`` sits at atom ``j + 1``, between bonds ``j`` and ``j + 1``: these are the
        angles that turn one segment against the next across missing residues; keeping
        them fixed (``coefficient_mask(frozen_angles=…)``) makes the gap a rigid link.
        """
        n_angles = self.n_atoms - 2
        return tuple(sorted({int(a) for g in self.gaps for a in (g - 1, g) if 0 <= a < n_angles}))

    def angles(self, ranges_text: str | None) -> tuple[int, ...]:
        """Angle indices of the residue ranges ``"10-20,33"`` of this chain (empty text: none)."""
        return tuple(int(j) for j in angles_for_residues(self.resids, parse_residue_ranges(ranges_text)))


def reference_from_pdb(path: str | Path, *, chain: str | None = None,
                       chains: str | Sequence[str] | None = None) -> ChainReference:
    """Reference chain from the Cα atoms of a PDB/mmCIF file (``io.pdb.read_ca_chains``).

    Standard amino acids only (caps, ligands, waters and HETATM residues are left out), the
    most occupied alternative location, insertion codes as distinct residues. ``chain``:
    one chain name or several separated by commas (``"A,B"``); ``chains``: several names;
    neither: the first chain with amino acids. Each chain is its own segment; gaps are
    listed in ``gaps`` and described, with what was left out, in ``notes``.
    """
    from napari_cryohet.io.pdb import read_ca_chains

    read = read_ca_chains(path, chain=chain, chains=None if chains is None else tuple(chains))
    return ChainReference(read.coords, read.resnames, read.resids, read.gaps, source=str(path),
                          chain_ids=read.chain_ids, icodes=read.icodes, notes=read.notes)


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
        coords, source = np.asarray(truth["coords_a"][int(particle)]), f"dataset:particle {particle}"
    elif frame is not None:
        if "global/trajectory_coords_a" not in truth:
            raise ValueError("dataset has no ground_truth['global/trajectory_coords_a']")
        coords, source = np.asarray(truth["global/trajectory_coords_a"][int(frame)]), f"dataset:frame {frame}"
    elif "global/reference_coords_a" not in truth:
        raise ValueError("reference: the dataset has no known conformation (ground_truth"
                         "['global/reference_coords_a']); give a PDB/mmCIF file of it")
    else:
        coords, source = np.asarray(truth["global/reference_coords_a"]), "dataset:global/reference_coords_a"
    # the simulator's gaps (missing residues, chain ends) — found from the bond lengths when it has none
    if "global/gaps" in truth:
        gaps = np.asarray(truth["global/gaps"], dtype=np.int64).reshape(-1)
    else:
        from napari_cryohet.stages.chainfit.model import gap_bonds  # model imports this module

        gaps = gap_bonds(coords) if coords.shape[-1] == 3 else np.zeros(0, dtype=np.int64)
    resids = truth.get("global/resids")
    if resids is not None and len(resids) != len(coords):
        resids = None
    notes = tuple(f"gap after residue {int(resids[g]) if resids is not None else g + 1}: the chain is rebuilt "
                  f"across it with its own length" for g in gaps)
    return ChainReference(coords, resids=resids, gaps=gaps, source=source, notes=notes)


#: File name of a reference model shipped beside a dataset's ``.star`` file: the Cα chain of
#: the known conformation, in the frame of the poses (:func:`reference_for`).
SHIPPED_REFERENCE = "reference_ca.pdb"


def reference_for(dataset: Any) -> tuple[ChainReference, str]:
    """The known conformation of ``dataset`` when the user names no reference file.

    In this order: the dataset's ground truth (``ground_truth["global/reference_coords_a"]``,
    :func:`reference_from_dataset`), else the model :data:`SHIPPED_REFERENCE` beside the
    file the dataset was read from (``dataset.meta["star_path"]`` or ``["source"]``, as
    :func:`~napari_cryohet.io.load_particles.load_dataset` records it).

    Returns
    -------
    reference
        The :class:`ChainReference`.
    description
        Which one it is, in words for the user (names the file for a shipped model).

    Raises
    ------
    ValueError
        Neither exists; the message says what to provide.

    Examples
    --------
    >>> import numpy as np
    >>> from types import SimpleNamespace
    >>> coords = np.cumsum(np.full((5, 3), 2.2), axis=0)
    >>> ds = SimpleNamespace(ground_truth={"global/reference_coords_a": coords}, meta={})
    >>> reference_for(ds)[0].n_atoms
    5
    """
    truth = getattr(dataset, "ground_truth", None) or {}
    if getattr(dataset, "low_dim", None) is not None and getattr(dataset, "reference_coords", None) is not None:
        return (ChainReference(np.asarray(dataset.reference_coords, dtype=np.float64), source="toy reference"),
                "the box with two arms at rest (both arm angles and the box angle 0), Esteve-Yagüe et al. 2022 §3.1")
    if "global/reference_coords_a" in truth:
        return (reference_from_dataset(dataset),
                "the known conformation in the dataset's ground truth (the simulated particles' reference)")
    source = _source_file(dataset)
    shipped = source.parent / SHIPPED_REFERENCE if source is not None else None
    if shipped is not None and shipped.is_file():
        return reference_from_pdb(shipped), f"the reference model shipped with the data: {shipped}"
    where = f" (no {SHIPPED_REFERENCE} beside {source})" if source is not None else ""
    raise ValueError("the chain fit needs a reference model: the dataset has no known conformation in its "
                     f"ground truth{where}; give a PDB/mmCIF file of the Cα chain in the frame of the particles' "
                     f"poses (the 'reference' setting), or put it beside the .star file as {SHIPPED_REFERENCE}")


def _source_file(dataset: Any) -> Path | None:
    """The file ``dataset`` was read from (``meta["star_path"]``, else ``meta["source"]``), or ``None``."""
    meta = getattr(dataset, "meta", None)
    if not isinstance(meta, dict):
        return None
    for key in ("star_path", "source"):
        value = meta.get(key)
        if isinstance(value, (str, Path)) and str(value):
            return Path(value).expanduser().resolve()
    return None


def resolve_reference(config: Any, dataset: Any) -> ChainReference:
    """The reference a config names: its ``reference`` file, else :func:`reference_for` the dataset."""
    if getattr(config, "reference", None):
        return reference_from_pdb(config.reference, chain=config.reference_chain or None)
    return reference_for(dataset)[0]


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
