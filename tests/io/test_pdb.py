"""Cα chains from PDB/mmCIF (gemmi as the independent writer/reader) and multi-model output."""

from __future__ import annotations

from pathlib import Path

import gemmi
import numpy as np
import pytest

from napari_cryohet.io.errors import CorruptFileError, CryohetInputError
from napari_cryohet.io.pdb import read_ca_chain, write_chains_pdb

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
