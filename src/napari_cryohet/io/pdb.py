"""Cα chains from PDB / mmCIF files (gemmi) and multi-model PDB output of fitted chains.

The chain-fit stage (seed 000_8d73a95ce4c6e7ab.txt, Remark 1.1) models a protein by the
discrete curve of its Cα atoms. :func:`read_ca_chains` reads them as they come from the
PDB or a simulation, from the first model:

- only *standard amino acids* written as ``ATOM`` records count (force-field names such as
  ``HSD``, ``HIE``, ``CYX`` included, :data:`FORCE_FIELD_NAMES`): caps (ACE, NME, NMA, NH2 —
  even a cap carbon named ``CA`` numbered like the last residue), ligands, ions, waters,
  modified residues and every ``HETATM`` residue are left out and named in a note;
- alternative locations: the Cα of highest occupancy (the first one on a tie); a residue
  written twice with the same number (micro-heterogeneity) keeps its most occupied copy;
- insertion codes (``52``, ``52A``, ``53``) are distinct residues, in file order;
- several chains (``chains=("A", "B")`` or ``chain="A,B"``) are concatenated, each its own
  *segment*;
- *gaps*: bonds ``j → j+1`` where consecutive Cα atoms lie more than
  :data:`MAX_CA_DISTANCE_A` apart or where the residue numbering jumps (missing residues)
  split a chain into segments; each is named in a note.

:func:`read_ca_chain` is the older single-chain form returning a tuple.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_cryohet.io.atomic import atomic_path
from napari_cryohet.io.errors import CorruptFileError, CryohetInputError

__all__ = ["MAX_CA_DISTANCE_A", "FORCE_FIELD_NAMES", "CaChains", "read_structure", "read_ca_chains", "read_ca_chain", "write_chains_pdb"]

#: Consecutive Cα atoms farther apart than this (Å) count as a chain break (trans peptide
#: Cα–Cα ≈ 3.8 Å, cis ≈ 2.9 Å).
MAX_CA_DISTANCE_A = 4.2


@dataclass(frozen=True)
class CaChains:
    """The Cα atoms :func:`read_ca_chains` keeps, in chain order.

    Attributes
    ----------
    coords
        ``(M, 3)`` float32 Cα positions in Å.
    resnames
        ``(M,)`` residue names.
    resids
        ``(M,)`` int64 residue sequence numbers.
    icodes
        ``(M,)`` insertion codes (``""`` where none).
    chain_ids
        ``(M,)`` chain name of each atom.
    gaps
        ``(G,)`` int64 bond indices ``j`` such that atoms ``j`` and ``j+1`` are not bonded:
        a gap inside a chain (distance > :data:`MAX_CA_DISTANCE_A` or a numbering jump) or
        the step from one chain to the next.
    segments
        ``((start, stop), …)`` half-open atom ranges of the connected pieces.
    excluded
        Residues left out, as ``"A NME 215"`` (chain, name, number).
    notes
        Sentences for the user: each gap, the residues left out, alternative locations chosen.
    """

    coords: np.ndarray
    resnames: np.ndarray
    resids: np.ndarray
    icodes: np.ndarray
    chain_ids: np.ndarray
    gaps: np.ndarray
    segments: tuple[tuple[int, int], ...]
    excluded: tuple[str, ...]
    notes: tuple[str, ...]


#: Residue names molecular-dynamics force fields (AMBER, CHARMM, GROMACS) give standard amino
#: acids in other protonation or bonding states; read as the amino acid they are.
FORCE_FIELD_NAMES = {
    "HSD": "HIS", "HSE": "HIS", "HSP": "HIS", "HID": "HIS", "HIE": "HIS", "HIP": "HIS", "HISD": "HIS",
    "HISE": "HIS", "HISH": "HIS", "HISA": "HIS", "HISB": "HIS", "HIS1": "HIS", "HIS2": "HIS",
    "CYX": "CYS", "CYM": "CYS", "CYS2": "CYS", "ASH": "ASP", "ASPH": "ASP", "GLH": "GLU", "GLUH": "GLU",
    "LYN": "LYS", "LSN": "LYS", "LYSN": "LYS", "ARN": "ARG", "TYM": "TYR",
}


def _is_standard_amino_acid(gemmi, name: str) -> bool:
    """A standard amino acid, under its PDB name, a force-field name, or an AMBER terminal
    name (``NALA``, ``CALA``)."""
    name = FORCE_FIELD_NAMES.get(name, name)
    if len(name) == 4 and name[0] in "NC":
        name = FORCE_FIELD_NAMES.get(name[1:], name[1:])
    info = gemmi.find_tabulated_residue(name)
    return info is not None and info.is_amino_acid() and info.is_standard()


def _chain_names(chain: str | None, chains: str | tuple[str, ...] | list[str] | None) -> list[str] | None:
    if chain is not None and chains is not None:
        raise ValueError("give either chain or chains, not both")
    if chains is None:
        if chain is None or not str(chain).strip():
            return None
        chains = str(chain).split(",")
    elif isinstance(chains, str):
        chains = chains.split(",")
    names = [str(c).strip() for c in chains]
    return [c for c in names if c] or None


def _label(resname: str, num: int, icode: str) -> str:
    return f"{resname} {num}{icode.strip()}"


def _read_one_chain(gemmi, residues):
    """Kept rows ``(x, y, z, resname, num, icode, occupancy)``, excluded labels, altloc notes."""
    rows: list[tuple] = []
    excluded: list[str] = []
    waters = 0
    altloc_notes: list[str] = []
    carbon = gemmi.Element("C")
    for residue in residues:
        info = gemmi.find_tabulated_residue(residue.name)
        label = _label(residue.name, residue.seqid.num, residue.seqid.icode)
        if info is not None and info.is_water():
            waters += 1
            continue
        if not _is_standard_amino_acid(gemmi, residue.name):
            excluded.append(label)
            continue
        if residue.het_flag == "H" and residue.name not in FORCE_FIELD_NAMES:  # tools write those as HETATM
            excluded.append(f"{label} (HETATM)")
            continue
        cas = [a for a in residue if a.name == "CA" and a.element == carbon]
        if not cas:
            excluded.append(f"{label} (no Cα atom)")
            continue
        best = max(cas, key=lambda a: a.occ)  # first of the most occupied on a tie
        if len(cas) > 1:
            altloc_notes.append(f"{label} altloc {best.altloc} (occupancy {best.occ:.2f})")
        row = (best.pos.x, best.pos.y, best.pos.z, residue.name, residue.seqid.num, residue.seqid.icode.strip(),
               best.occ)
        if rows and rows[-1][4:6] == row[4:6]:  # same number and insertion code: micro-heterogeneity
            if row[6] > rows[-1][6]:
                altloc_notes.append(f"{_label(*row[3:6])} instead of {rows[-1][3]} (occupancy {row[6]:.2f})")
                rows[-1] = row
            continue
        rows.append(row)
    if waters:
        excluded.append(f"{waters} water{'s' if waters > 1 else ''}")
    return rows, excluded, altloc_notes


def read_structure(path: str | Path):
    """A PDB/mmCIF file read with gemmi (every model); errors name the file: missing, unreadable,
    or without a model."""
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
    return structure


def read_ca_chains(
    path: str | Path, *, chain: str | None = None, chains: str | tuple[str, ...] | list[str] | None = None
) -> CaChains:
    """Cα atoms of the standard amino acids of one or several chains of a PDB/mmCIF file.

    Parameters
    ----------
    path
        ``.pdb``, ``.ent``, ``.cif`` or ``.mmcif`` file (gzip allowed), read with gemmi.
    chain
        Chain name (``auth_asym_id``), or several separated by commas (``"A,B"``); ``None``
        takes the first chain that has standard amino-acid Cα atoms.
    chains
        Several chain names, in the order they are concatenated (each its own segment).

    Returns
    -------
    :class:`CaChains`: coordinates, residue labels, gaps, segments and notes for the user.

    Raises
    ------
    CryohetInputError
        The file does not exist, a chain is absent, or fewer than 3 Cα atoms are kept.
    CorruptFileError
        gemmi cannot parse the file.
    ValueError
        Both ``chain`` and ``chains`` are given.

    Examples
    --------
    >>> import tempfile, os
    >>> text = "".join(f"ATOM  {i:5d}  CA  ALA A{i:4d}    {3.8 * i:8.3f}{(i % 2) * 1.0:8.3f}{0.0:8.3f}"
    ...                f"  1.00  0.00           C\\n" for i in range(1, 6))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = os.path.join(tmp, "five.pdb")
    ...     _ = open(path, "w").write(text + "END\\n")
    ...     read_ca_chains(path).coords.shape
    (5, 3)
    """
    import gemmi

    wanted = _chain_names(chain, chains)
    path = Path(path)
    structure = read_structure(path)
    model = structure[0]
    names = list(dict.fromkeys(ch.name for ch in model))

    def residues_of(name: str) -> list:  # a PDB chain name may come back after TER (waters, ligands)
        return [res for ch in model if ch.name == name for res in ch]

    picked: list[tuple[str, list, list[str], list[str]]] = []
    if wanted is None:
        for name in names:
            rows, excluded, altlocs = _read_one_chain(gemmi, residues_of(name))
            if rows:
                picked.append((name, rows, excluded, altlocs))
                break
        else:
            raise CryohetInputError(path, "no Cα atom of a standard amino acid in any chain", field="chain")
    else:
        missing = [c for c in wanted if c not in names]
        if missing:
            raise CryohetInputError(path, f"chain {missing[0]!r} not found (chains: {', '.join(names) or 'none'})",
                                    field="chain")
        for name in wanted:
            rows, excluded, altlocs = _read_one_chain(gemmi, residues_of(name))
            if not rows:
                raise CryohetInputError(path, f"no Cα atom of a standard amino acid in chain {name!r}",
                                        field="chain")
            picked.append((name, rows, excluded, altlocs))

    total = sum(len(rows) for _, rows, _, _ in picked)
    if total < 3:
        which = ", ".join(name for name, *_ in picked)
        raise CryohetInputError(path, f"chain {which!r} has {total} Cα atoms of standard amino acids, a chain "
                                      "needs at least 3", field="chain")
    notes: list[str] = []
    gaps: list[int] = []
    excluded_all: list[str] = []
    start = 0
    for name, rows, excluded, altlocs in picked:
        coords = np.array([r[:3] for r in rows], dtype=np.float64)
        nums = np.array([r[4] for r in rows], dtype=np.int64)
        icodes = [r[5] for r in rows]
        distance = np.linalg.norm(np.diff(coords, axis=0), axis=1)
        for j in range(len(rows) - 1):
            step = nums[j + 1] - nums[j]
            numbered = step == 1 or (step == 0 and icodes[j + 1] != icodes[j])
            if distance[j] > MAX_CA_DISTANCE_A or not numbered:
                gaps.append(start + j)
                notes.append(f"{path.name}: chain {name}: residues {nums[j]}{icodes[j]}→{nums[j + 1]}"
                             f"{icodes[j + 1]}, {distance[j]:.1f} Å apart: treated as a gap (missing residues or a "
                             "break; the chain fit keeps this distance and adds no bond across it)")
        if start > 0:
            gaps.append(start - 1)  # the step from the previous chain to this one
        if excluded:
            excluded_all.extend(e if e[0].isdigit() else f"{name} {e}" for e in excluded)
            notes.append(f"{path.name}: chain {name}: left out {', '.join(excluded)} (the chain fit uses the Cα "
                         "atoms of standard amino acids only: caps, ligands, ions, waters and HETATM residues are "
                         "not part of the chain)")
        if altlocs:
            notes.append(f"{path.name}: chain {name}: alternative locations, kept the most occupied Cα: "
                         f"{', '.join(altlocs)}")
        start += len(rows)
    rows_all = [(name, r) for name, rows, _, _ in picked for r in rows]
    bounds = [0, *(g + 1 for g in sorted(gaps)), total]
    return CaChains(
        coords=np.array([r[:3] for _, r in rows_all], dtype=np.float32),
        resnames=np.array([r[3] for _, r in rows_all], dtype=str),
        resids=np.array([r[4] for _, r in rows_all], dtype=np.int64),
        icodes=np.array([r[5] for _, r in rows_all], dtype=str),
        chain_ids=np.array([name for name, _ in rows_all], dtype=str),
        gaps=np.array(sorted(gaps), dtype=np.int64),
        segments=tuple(zip(bounds[:-1], bounds[1:], strict=True)),
        excluded=tuple(excluded_all),
        notes=tuple(notes),
    )


def read_ca_chain(
    path: str | Path, *, chain: str | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cα atoms of one chain (or ``"A,B"``: several) of a PDB or mmCIF file, as a tuple.

    The same reading as :func:`read_ca_chains` (standard amino acids only, most occupied
    alternative location, insertion codes, gaps), without the notes.

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
        consecutive: Cα–Cα distance > :data:`MAX_CA_DISTANCE_A`, a jump in numbering, or
        a change of chain.

    Raises
    ------
    CryohetInputError
        The file does not exist, the chain is absent, or it has fewer than 3 Cα atoms.
    CorruptFileError
        gemmi cannot parse the file.
    """
    read = read_ca_chains(path, chain=chain)
    return read.coords, read.resnames, read.resids, read.gaps


def write_chains_pdb(
    path: str | Path,
    coords_a: np.ndarray,
    *,
    resnames: np.ndarray | None = None,
    resids: np.ndarray | None = None,
    chain_id: str | np.ndarray = "A",
    icodes: np.ndarray | None = None,
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
        One-character chain name, or ``(M,)`` one per atom (a reference of several chains,
        ``ChainReference.chain_ids``; empty names become ``A``); a ``TER`` closes each chain.
    icodes
        ``(M,)`` insertion codes (default none).

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
    chains = np.full(m, chain_id) if isinstance(chain_id, str) else np.asarray(chain_id, dtype=str)
    chains = np.where(chains == "", "A", chains)
    codes = np.full(m, " ") if icodes is None else np.where(np.asarray(icodes, dtype=str) == "", " ",
                                                               np.asarray(icodes, dtype=str))
    if len(chains) != m or len(codes) != m:
        raise ValueError(f"chain_id/icodes: need one per atom ({m}), got {len(chains)} and {len(codes)}")
    bad = [c for c in set(chains.tolist()) | set(codes.tolist()) if len(c) != 1]
    if bad:
        raise ValueError(f"chain_id/icodes: must be one character each, got {sorted(bad)[:3]}")
    lines = ["REMARK   1 CALPHA CHAINS FITTED BY NAPARI-CRYOHET (ONE MODEL PER PARTICLE)"]
    for k in range(n_models):
        lines.append(f"MODEL     {k + 1:>4d}")
        for j in range(m):
            x, y, z = coords[k, j]
            lines.append(
                f"ATOM  {(j + 1) % 100000:>5d}  CA  {resnames[j][:3]:>3s} {chains[j]}{int(resids[j]) % 10000:>4d}"
                f"{codes[j]}   {x:8.3f}{y:8.3f}{z:8.3f}{1.0:6.2f}{0.0:6.2f}          {'C':>2s}"
            )
            if j + 1 < m and chains[j + 1] != chains[j]:
                lines.append("TER")
        lines.append("TER")
        lines.append("ENDMDL")
    lines.append("END")
    target = Path(path)
    with atomic_path(target) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return target
