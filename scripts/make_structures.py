"""Write the Cα-only structures of ``sample_data/structures/`` from PDB entries.

The chain-fit benchmark on several proteins (``benchmarks/chainfit_proteins.py``, issue 14)
needs real structures of about 500 and at least 800 residues. Whole PDB files are large;
the fit uses only the Cα atoms, so this keeps, from the first model of a PDB file:

- ``HEADER`` and ``TITLE`` lines (what the entry is);
- ``ATOM`` records of atoms named ``CA`` in the 20 standard amino acids (``UNK`` and every
  ``HETATM`` record are dropped), with their residue names, numbers, insertion codes,
  alternative locations, occupancies and B factors as written, of the chains asked for;
- a ``TER`` after each chain and ``END``.

Used for the files in ``sample_data/structures/`` (see ``sample_data/README.md``), from the
PDB entries shipped in the MDAnalysisTests 2.11.0 sdist (PDB entries are public domain)::

    python scripts/make_structures.py .../MDAnalysisTests/data/1a28.pdb.gz \\
        sample_data/structures/1a28_ca.pdb --chains A,B
    python scripts/make_structures.py .../MDAnalysisTests/data/6msm.pdb.bz2 \\
        sample_data/structures/6msm_A_ca.pdb --chains A

Not run by the tests (the sources live outside the repository).
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import sys
from pathlib import Path

#: The 20 standard amino acids as the PDB names them.
STANDARD_AMINO_ACIDS = frozenset(
    "ALA ARG ASN ASP CYS GLN GLU GLY HIS ILE LEU LYS MET PHE PRO SER THR TRP TYR VAL".split()
)


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt")
    if path.suffix == ".bz2":
        return bz2.open(path, "rt")
    return open(path)


def ca_only_lines(lines, *, chains: list[str] | None = None) -> list[str]:
    """The kept lines (no newline) of a PDB text: header, Cα of standard amino acids, TER, END.

    Parameters
    ----------
    lines
        The PDB file's lines.
    chains
        Chain identifiers to keep, in file order; ``None``: every chain.
    """
    header: list[str] = []
    atoms: list[str] = []
    last_chain = None
    for raw in lines:
        line = raw.rstrip("\n")
        record = line[:6]
        if record in ("HEADER", "TITLE "):
            header.append(line)
        elif record == "ENDMDL":  # first model only
            break
        elif record == "ATOM  " and line[12:16] == " CA " and line[17:20] in STANDARD_AMINO_ACIDS:
            chain = line[21]
            if chains is not None and chain not in chains:
                continue
            if last_chain is not None and chain != last_chain:
                atoms.append("TER")
            atoms.append(line)
            last_chain = chain
    if not atoms:
        raise ValueError(f"no Cα atom of a standard amino acid in chains {chains}")
    return [*header, *atoms, "TER", "END"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="PDB file (.pdb, .pdb.gz or .pdb.bz2)")
    parser.add_argument("output", type=Path, help="Cα-only PDB file to write")
    parser.add_argument("--chains", default=None, help="chains to keep, e.g. A,B (default: all)")
    args = parser.parse_args(argv)
    chains = [c.strip() for c in args.chains.split(",") if c.strip()] if args.chains else None
    with _open_text(args.source) as fh:
        kept = ca_only_lines(fh, chains=chains)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(kept) + "\n")
    n_atoms = sum(1 for line in kept if line.startswith("ATOM"))
    print(f"{args.output}: {n_atoms} Cα atoms, {args.output.stat().st_size / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
