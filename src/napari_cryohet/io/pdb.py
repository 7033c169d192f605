"""Cα chains from PDB / mmCIF files (gemmi) and multi-model PDB output of fitted chains.

The chain-fit stage (seed 000_8d73a95ce4c6e7ab.txt, Remark 1.1) models a protein by the
discrete curve of its Cα atoms. :func:`read_ca_chain` takes the Cα atoms of one polymer
chain of the first model (first alternative conformation only) and reports *gaps*: bonds
``j → j+1`` where consecutive Cα atoms lie more than :data:`MAX_CA_DISTANCE_A` apart or
where the residue numbering jumps (missing residues). The chain-fit model assumes a
connected chain of near-constant bond length (Assumption 1), so callers decide what to do
with gaps (warn, refuse, or fit anyway).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_cryohet.io.atomic import atomic_path
from napari_cryohet.io.errors import CorruptFileError, CryohetInputError

__all__ = ["MAX_CA_DISTANCE_A", "read_ca_chain", "write_chains_pdb"]

#: Consecutive Cα atoms farther apart than this (Å) count as a chain break (trans peptide
#: Cα–Cα ≈ 3.8 Å, cis ≈ 2.9 Å).
MAX_CA_DISTANCE_A = 4.2


def read_ca_chain(
    path: str | Path, *, chain: str | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cα atoms of one chain of a PDB or mmCIF file.

    Parameters
    ----------
    path
        ``.pdb``, ``.ent``, ``.cif`` or ``.mmcif`` file (gzip allowed), read with gemmi.
    chain
        Chain name (``auth_asym_id``); ``None`` takes the first chain that has Cα atoms.

    Returns
    -------
    coords
        ``(M, 3)`` float32 Cα positions in Å, in chain order.
    resnames
        ``(M,)`` str residue names.
    resids
        ``(M,)`` int64 residue sequence numbers.
    gaps
        ``(G,)`` int64 bond indices ``j`` such that atoms ``j`` and ``j+1`` are not
        consecutive: Cα–Cα distance > :data:`MAX_CA_DISTANCE_A` or a jump in numbering.

    Raises
    ------
    CryohetInputError
        The file does not exist, the chain is absent, or it has fewer than 3 Cα atoms.
    CorruptFileError
        gemmi cannot parse the file.
    """
    import gemmi

    path = Path(path)
    if not path.is_file():
        raise CryohetInputError(path, "file does not exist")
    try:
        structure = gemmi.read_structure(str(path))
    except (RuntimeError, ValueError) as err:
        raise CorruptFileError(path, f"not a readable PDB/mmCIF file ({err})") from err
    if len(structure) == 0:
        raise CryohetInputError(path, "no model in the file", field="MODEL")
    structure.setup_entities()
    structure.remove_alternative_conformations()
    model = structure[0]
    names = [ch.name for ch in model]
    candidates = [ch for ch in model if chain is None or ch.name == chain]
    if chain is not None and not candidates:
        raise CryohetInputError(path, f"chain {chain!r} not found (chains: {', '.join(names) or 'none'})",
                                field="chain")
    for ch in candidates:
        rows = []
        for residue in ch.get_polymer() or ch:
            atom = residue.find_atom("CA", "*", gemmi.Element("C"))
            if atom is not None:
                rows.append((atom.pos.x, atom.pos.y, atom.pos.z, residue.name, residue.seqid.num))
        if rows:
            break
    else:
        which = f"chain {chain!r}" if chain is not None else "any chain"
        raise CryohetInputError(path, f"no Cα atoms in {which}", field="chain")
    if len(rows) < 3:
        raise CryohetInputError(path, f"chain {ch.name!r} has {len(rows)} Cα atoms, a chain needs at least 3",
                                field="chain")
    coords = np.array([r[:3] for r in rows], dtype=np.float32)
    resnames = np.array([r[3] for r in rows], dtype=str)
    resids = np.array([r[4] for r in rows], dtype=np.int64)
    distance = np.linalg.norm(np.diff(coords.astype(np.float64), axis=0), axis=1)
    jump = np.diff(resids)
    gaps = np.flatnonzero((distance > MAX_CA_DISTANCE_A) | ((jump != 1) & (jump != 0))).astype(np.int64)
    return coords, resnames, resids, gaps


def write_chains_pdb(
    path: str | Path,
    coords_a: np.ndarray,
    *,
    resnames: np.ndarray | None = None,
    resids: np.ndarray | None = None,
    chain_id: str = "A",
) -> Path:
    """Write Cα chains as a multi-model PDB file (one ``MODEL`` per chain), atomically.

    Parameters
    ----------
    path
        Output ``.pdb`` path.
    coords_a
        ``(N, M, 3)`` (or ``(M, 3)``) Cα positions in Å, e.g. the fitted chain of each
        particle.
    resnames
        ``(M,)`` residue names (default ``"ALA"``).
    resids
        ``(M,)`` residue numbers (default ``1 … M``).
    chain_id
        One-character chain name.

    Returns
    -------
    The path written.
    """
    coords = np.asarray(coords_a, dtype=np.float64)
    if coords.ndim == 2:
        coords = coords[None]
    if coords.ndim != 3 or coords.shape[-1] != 3:
        raise ValueError(f"coords_a: expected shape (N, M, 3), got {coords.shape}")
    if not np.isfinite(coords).all():
        raise ValueError("coords_a: contains NaN or infinite values")
    if np.abs(coords).max(initial=0.0) >= 9999.0:
        raise ValueError("coords_a: coordinates beyond ±9999 Å do not fit the PDB format")
    n_models, m = coords.shape[:2]
    resnames = np.full(m, "ALA") if resnames is None else np.asarray(resnames, dtype=str)
    resids = np.arange(1, m + 1) if resids is None else np.asarray(resids, dtype=np.int64)
    if len(resnames) != m or len(resids) != m:
        raise ValueError(f"resnames/resids: need {m} entries, got {len(resnames)} and {len(resids)}")
    if len(chain_id) != 1:
        raise ValueError(f"chain_id: must be one character, got {chain_id!r}")
    lines = ["REMARK   1 CALPHA CHAINS FITTED BY NAPARI-CRYOHET (ONE MODEL PER PARTICLE)"]
    for k in range(n_models):
        lines.append(f"MODEL     {k + 1:>4d}")
        for j in range(m):
            x, y, z = coords[k, j]
            lines.append(
                f"ATOM  {(j + 1) % 100000:>5d}  CA  {resnames[j][:3]:>3s} {chain_id}{int(resids[j]) % 10000:>4d}    "
                f"{x:8.3f}{y:8.3f}{z:8.3f}{1.0:6.2f}{0.0:6.2f}          {'C':>2s}"
            )
        lines.append("TER")
        lines.append("ENDMDL")
    lines.append("END")
    target = Path(path)
    with atomic_path(target) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return target
