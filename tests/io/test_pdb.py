"""Cα chains from PDB/mmCIF (gemmi as the independent writer/reader) and multi-model output."""

from __future__ import annotations

from pathlib import Path

import gemmi
import numpy as np
import pytest

from napari_cryohet.io.errors import CorruptFileError, CryohetInputError
from napari_cryohet.io.pdb import read_ca_chain, read_ca_chains, write_chains_pdb

ADK = Path(__file__).resolve().parents[2] / "sample_data" / "adk_dims_ca.npz"


def _adk():
    with np.load(ADK, allow_pickle=False) as data:
        return data["coords"][0].astype(np.float64), data["resnames"].astype(str), data["resids"]


def _structure(chains: dict[str, tuple[np.ndarray, list[str], list[int]]], *, with_n: bool = True) -> gemmi.Structure:
    """A gemmi structure with backbone N + CA (+ a water) per residue, built independently."""
    st = gemmi.Structure()
    model = gemmi.Model("1")
    for name, (coords, resnames, resids) in chains.items():
        chain = gemmi.Chain(name)
        for (x, y, z), rname, rid in zip(coords, resnames, resids, strict=True):
            res = gemmi.Residue()
            res.name = rname
            res.seqid = gemmi.SeqId(int(rid), " ")
            res.entity_type = gemmi.EntityType.Polymer
            for atom_name, element, offset in (("N", "N", 1.2), ("CA", "C", 0.0))[0 if with_n else 1:]:
                atom = gemmi.Atom()
                atom.name, atom.element = atom_name, gemmi.Element(element)
                atom.pos = gemmi.Position(x + offset, y, z)
                res.add_atom(atom)
            chain.add_residue(res)
        model.add_chain(chain)
    st.add_model(model)
    st.setup_entities()
    return st


@pytest.mark.parametrize("suffix", [".pdb", ".cif"])
def test_read_adk_chain_from_gemmi_file(tmp_path, suffix):
    coords, resnames, resids = _adk()
    st = _structure({"A": (coords, list(resnames), list(resids))})
    path = tmp_path / f"adk{suffix}"
    if suffix == ".pdb":
        st.write_pdb(str(path))
    else:
        st.make_mmcif_document().write_file(str(path))
    got, names, ids, gaps = read_ca_chain(path)
    assert got.shape == (214, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, coords, atol=1e-3)
    assert list(names) == list(resnames) and list(ids) == list(resids)
    assert gaps.size == 0  # AdK frame 0: every Cα–Cα distance below 4.2 Å


def test_gaps_by_distance_and_by_numbering(tmp_path):
    coords, resnames, resids = _adk()
    coords = coords[:30].copy()
    coords[20:] += np.array([6.0, 0.0, 0.0])  # a break between atoms 19 and 20
    ids = list(range(1, 31))
    ids[10:] = [i + 5 for i in ids[10:]]  # residues 11-15 missing: jump between atoms 9 and 10
    path = tmp_path / "gappy.pdb"
    _structure({"A": (coords, list(resnames[:30]), ids)}).write_pdb(str(path))
    *_, gaps = read_ca_chain(path)
    assert list(gaps) == [9, 19]


def test_chain_selection(tmp_path):
    coords, resnames, resids = _adk()
    st = _structure({"A": (coords[:10], list(resnames[:10]), list(resids[:10])),
                     "B": (coords[50:70] + 100.0, list(resnames[50:70]), list(resids[50:70]))})
    path = tmp_path / "two.pdb"
    st.write_pdb(str(path))
    first, *_ = read_ca_chain(path)
    second, _, ids, _ = read_ca_chain(path, chain="B")
    assert first.shape == (10, 3) and second.shape == (20, 3)
    np.testing.assert_allclose(second, coords[50:70] + 100.0, atol=1e-3)
    assert list(ids) == list(resids[50:70])
    with pytest.raises(CryohetInputError, match="chain 'C' not found"):
        read_ca_chain(path, chain="C")


def test_bad_files(tmp_path):
    with pytest.raises(CryohetInputError, match="does not exist"):
        read_ca_chain(tmp_path / "missing.pdb")
    garbage = tmp_path / "garbage.cif"
    garbage.write_text("data_x\nloop_\n_atom_site.id\n_atom_site.Cartn_x\n1\n")
    with pytest.raises(CryohetInputError):
        read_ca_chain(garbage)
    short = tmp_path / "short.pdb"
    coords, resnames, resids = _adk()
    _structure({"A": (coords[:2], list(resnames[:2]), list(resids[:2]))}).write_pdb(str(short))
    with pytest.raises(CryohetInputError, match="at least 3"):
        read_ca_chain(short)
    assert issubclass(CorruptFileError, CryohetInputError)


def test_write_multi_model_round_trip(tmp_path, rng):
    coords, resnames, resids = _adk()
    chains = coords[None] + rng.normal(scale=2.0, size=(4, 214, 3))
    path = write_chains_pdb(tmp_path / "fits.pdb", chains, resnames=resnames, resids=resids)
    st = gemmi.read_structure(str(path))
    assert len(st) == 4
    for k, model in enumerate(st):
        ca = np.array([[a.pos.x, a.pos.y, a.pos.z] for r in model["A"] for a in r if a.name == "CA"])
        np.testing.assert_allclose(ca, chains[k], atol=1e-3)
        assert [r.name for r in model["A"]] == list(resnames)
    back, names, ids, gaps = read_ca_chain(path)  # first model
    np.testing.assert_allclose(back, chains[0], atol=1e-3)
    assert list(ids) == list(resids)


def test_write_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="coords_a"):
        write_chains_pdb(tmp_path / "x.pdb", np.zeros((2, 5, 2)))
    with pytest.raises(ValueError, match="NaN"):
        write_chains_pdb(tmp_path / "x.pdb", np.full((5, 3), np.nan))
    with pytest.raises(ValueError, match="resnames"):
        write_chains_pdb(tmp_path / "x.pdb", np.zeros((5, 3)), resnames=["ALA"])


# ------------------------------------------------------------- a PDB as it comes from the PDB
# An ideal α-helix of Cα atoms (radius 2.3 Å, rise 1.5 Å, 100° per residue: Cα–Cα 3.83 Å),
# written by hand in fixed PDB columns so that the reader is tested against the format, not
# against gemmi's own writer.


def _helix(slot: float) -> np.ndarray:
    angle = np.deg2rad(100.0) * slot
    return np.array([2.3 * np.cos(angle), 2.3 * np.sin(angle), 1.5 * slot])


def _line(record, serial, name4, alt, resname, chain, num, icode, xyz, occ, element):
    x, y, z = xyz
    return (f"{record:<6}{serial:>5} {name4:<4}{alt:1}{resname:>3} {chain:1}{num:>4}{icode:1}   "
            f"{x:8.3f}{y:8.3f}{z:8.3f}{occ:6.2f}{20.0:6.2f}          {element:>2}")


#: chain A: residue number, insertion code, helix slot (residues 11-14 missing: a gap)
CHAIN_A = [(n, "", n - 1) for n in range(1, 11)] + [(n, "", n - 1) for n in range(15, 21)] + [(20, "A", 20)] + [
    (n, "", n) for n in range(21, 25)]
SHIFT_B = np.array([30.0, 0.0, 0.0])


def _messy_pdb_text() -> str:
    """Chain A with a gap, an ACE and an NME cap (the NME carbon named CA, numbered like the last
    residue), altlocs (residue 5: B more occupied; residue 7: a tie), an insertion code, a calcium
    ion named CA, a ligand and waters; chain B: 8 residues."""
    lines, serial = [], 1

    def add(*args):
        nonlocal serial
        lines.append(_line(args[0], serial, *args[1:]))
        serial += 1

    add("ATOM", "CH3", "", "ACE", "A", 0, "", _helix(-1.2), 1.0, "C")
    for num, icode, slot in CHAIN_A:
        name = {3: "HSD", 5: "SER", 7: "LEU"}.get(num, "ALA")
        add("ATOM", "N", "", name, "A", num, icode, _helix(slot - 0.3), 1.0, "N")
        if num == 5:
            add("ATOM", "CA", "A", name, "A", num, icode, _helix(slot) + [0.6, 0.0, 0.0], 0.4, "C")
            add("ATOM", "CA", "B", name, "A", num, icode, _helix(slot), 0.6, "C")
        elif num == 7:
            add("ATOM", "CA", "A", name, "A", num, icode, _helix(slot), 0.5, "C")
            add("ATOM", "CA", "B", name, "A", num, icode, _helix(slot) + [0.0, 0.7, 0.0], 0.5, "C")
        else:
            add("ATOM", "CA", "", name, "A", num, icode, _helix(slot), 1.0, "C")
    add("ATOM", "CA", "", "NME", "A", 24, "", _helix(25), 1.0, "C")  # the cap's methyl carbon
    lines.append("TER")
    for num in range(1, 9):
        add("ATOM", "CA", "", "GLY", "B", num, "", _helix(num - 1) + SHIFT_B, 1.0, "C")
    lines.append("TER")
    add("HETATM", "CA", "", "CA", "A", 101, "", (5.0, 5.0, 5.0), 1.0, "CA")  # a calcium ion
    add("HETATM", "C1", "", "ATP", "A", 102, "", (6.0, 5.0, 5.0), 1.0, "C")
    add("HETATM", "CA", "", "MSE", "A", 103, "", (7.0, 5.0, 5.0), 1.0, "C")
    for k in range(2):
        add("HETATM", "O", "", "HOH", "A", 201 + k, "", (8.0 + k, 5.0, 5.0), 1.0, "O")
    return "\n".join([*lines, "END"]) + "\n"


@pytest.fixture
def messy_pdb(tmp_path):
    path = tmp_path / "messy.pdb"
    path.write_text(_messy_pdb_text())
    return path


def test_messy_pdb_chain_a(messy_pdb):
    read = read_ca_chains(messy_pdb, chain="A")
    expected = np.array([_helix(slot) for _, _, slot in CHAIN_A])
    assert read.coords.shape == (21, 3)  # 24 numbers - 4 missing + 20A; no cap, ion or ligand
    np.testing.assert_allclose(read.coords, expected, atol=1e-3)  # altlocs: B at 5 (0.6), A at 7 (tie)
    assert list(read.resids) == [n for n, _, _ in CHAIN_A]
    assert list(read.icodes) == [c for _, c, _ in CHAIN_A] and read.icodes[16] == "A"
    assert read.resnames[2] == "HSD" and read.resnames[4] == "SER"
    assert list(read.gaps) == [9] and read.segments == ((0, 10), (10, 21))
    gap_a = np.linalg.norm(_helix(14) - _helix(9))
    print(f"gap 10→15: {gap_a:.2f} Å; notes:", *read.notes, sep="\n  ")
    assert any(f"chain A: residues 10→15, {gap_a:.1f} Å apart: treated as a gap" in n for n in read.notes)
    assert sum("treated as a gap" in n for n in read.notes) == 1  # 20 → 20A → 21 is not a gap
    assert set(read.excluded) == {"A ACE 0", "A NME 24", "A CA 101", "A ATP 102", "A MSE 103", "2 waters"}
    left_out = next(n for n in read.notes if "left out" in n)
    assert "messy.pdb" in left_out and "NME 24" in left_out and "ACE 0" in left_out
    assert any("SER 5 altloc B (occupancy 0.60)" in n for n in read.notes)
    # the tuple form reads the same
    coords, names, ids, gaps = read_ca_chain(messy_pdb, chain="A")
    np.testing.assert_array_equal(coords, read.coords)
    assert list(gaps) == [9] and list(ids) == list(read.resids)
    # the first chain with amino acids is A
    np.testing.assert_array_equal(read_ca_chains(messy_pdb).coords, read.coords)


@pytest.mark.parametrize("how", [{"chains": ("A", "B")}, {"chain": "A,B"}, {"chains": "A, B"}])
def test_messy_pdb_two_chains(messy_pdb, how):
    read = read_ca_chains(messy_pdb, **how)
    assert read.coords.shape == (29, 3)
    np.testing.assert_allclose(read.coords[21:], [_helix(k) + SHIFT_B for k in range(8)], atol=1e-3)
    assert list(read.chain_ids) == ["A"] * 21 + ["B"] * 8
    assert list(read.gaps) == [9, 20]  # the gap in A, then the step from A to B
    assert read.segments == ((0, 10), (10, 21), (21, 29))
    assert sum("treated as a gap" in n for n in read.notes) == 1  # a new chain is not a gap to warn about
    only_b = read_ca_chains(messy_pdb, chain="B")
    assert only_b.gaps.size == 0 and only_b.segments == ((0, 8),) and not only_b.notes


def test_messy_pdb_bad_selection(messy_pdb):
    with pytest.raises(CryohetInputError, match="chain 'C' not found"):
        read_ca_chains(messy_pdb, chains=("A", "C"))
    with pytest.raises(ValueError, match="either chain or chains"):
        read_ca_chains(messy_pdb, chain="A", chains=("B",))
    waters = messy_pdb.with_name("waters.pdb")
    waters.write_text("\n".join(line for line in _messy_pdb_text().splitlines() if "HOH" in line or "END" in line))
    with pytest.raises(CryohetInputError, match="no Cα atom of a standard amino acid"):
        read_ca_chains(waters)


def test_write_keeps_chains_and_insertion_codes(messy_pdb, tmp_path):
    """Fitted chains of a two-chain reference with an insertion code are written back as two
    chains with the same residue labels: reading the file gives the same residues and segments."""
    read = read_ca_chains(messy_pdb, chain="A,B")
    assert (read.icodes != "").any()
    moved = read.coords[None] + np.array([0.5, -0.25, 1.0])
    path = write_chains_pdb(tmp_path / "fits.pdb", moved, resnames=read.resnames, resids=read.resids,
                            chain_id=read.chain_ids, icodes=read.icodes)
    back = read_ca_chains(path, chain="A,B")
    np.testing.assert_allclose(back.coords, moved[0], atol=1e-3)
    assert list(back.chain_ids) == list(read.chain_ids) and list(back.icodes) == list(read.icodes)
    assert list(back.resids) == list(read.resids) and back.segments == read.segments
    with pytest.raises(ValueError, match="one per atom"):
        write_chains_pdb(tmp_path / "x.pdb", moved, chain_id=np.array(["A", "B"]))
