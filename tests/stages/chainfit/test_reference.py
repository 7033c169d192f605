"""A reference read from a PDB with a gap, caps, altlocs and two chains is rebuilt exactly by the model.

The untrained chain (all coefficients zero, Remark 2.5) must sit on its own reference: every
gap bond keeps its reference length (never a 3.8 Å bond that is not there), in every bond-length
mode, from any anchor atom.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cryohet.core.frenet import bond_lengths, chain_angles, frenet_frames
from napari_cryohet.stages.chainfit.config import ChainFitConfig
from napari_cryohet.stages.chainfit.model import (
    SpectralAngles,
    build_chains,
    coefficient_mask,
    gap_bonds,
    reference_bond_lengths,
)
from napari_cryohet.stages.chainfit.reference import (
    ChainReference,
    default_reference_atom,
    reference_from_pdb,
)

RISE_A, RADIUS_A, TURN_DEG = 1.5, 2.3, 100.0  # an ideal α-helix of Cα atoms: bonds of 3.83 Å


def _helix(slot: float) -> np.ndarray:
    angle = np.deg2rad(TURN_DEG) * slot
    return np.array([RADIUS_A * np.cos(angle), RADIUS_A * np.sin(angle), RISE_A * slot])


def _atom(serial, name4, alt, resname, chain, num, xyz, occ=1.0, record="ATOM", element="C", icode=" "):
    x, y, z = xyz
    return (f"{record:<6}{serial:>5} {name4:<4}{alt:1}{resname:>3} {chain:1}{num:>4}{icode:1}   "
            f"{x:8.3f}{y:8.3f}{z:8.3f}{occ:6.2f}{20.0:6.2f}          {element:>2}")


def _pdb_text() -> str:
    """Chain A: residues 1-10, 15-20, 20A, 21-24 on one helix (11-14 missing), an altloc at 5,
    an NME cap whose carbon is named CA; chain B: 8 residues 30 Å away; a calcium ion and a water."""
    lines = [_atom(1, "CH3", "", "ACE", "A", 0, _helix(-1.2))]
    slots = [(n, " ", n - 1) for n in range(1, 11)] + [(n, " ", n - 1) for n in range(15, 21)] + [
        (20, "A", 20)] + [(n, " ", n) for n in range(21, 25)]
    for num, icode, slot in slots:
        if num == 5:
            lines.append(_atom(len(lines) + 1, "CA", "A", "SER", "A", num, _helix(slot) + 0.8, occ=0.3))
            lines.append(_atom(len(lines) + 1, "CA", "B", "SER", "A", num, _helix(slot), occ=0.7))
        else:
            lines.append(_atom(len(lines) + 1, "CA", "", "ALA", "A", num, _helix(slot), icode=icode))
    lines.append(_atom(len(lines) + 1, "CA", "", "NME", "A", 24, _helix(25)))
    lines.append("TER")
    lines += [_atom(100 + k, "CA", "", "GLY", "B", k + 1, _helix(k) + [30.0, 0.0, 0.0]) for k in range(8)]
    lines.append("TER")
    lines.append(_atom(200, "CA", "", "CA", "A", 301, (5.0, 5.0, 5.0), record="HETATM", element="CA"))
    lines.append(_atom(201, "O", "", "HOH", "A", 401, (6.0, 5.0, 5.0), record="HETATM", element="O"))
    return "\n".join([*lines, "END"]) + "\n"


@pytest.fixture
def reference(tmp_path) -> ChainReference:
    path = tmp_path / "two_chains.pdb"
    path.write_text(_pdb_text())
    return reference_from_pdb(path, chains=("A", "B"))


def test_reference_residues_segments_and_notes(reference):
    assert reference.n_atoms == 29
    assert list(reference.gaps) == [9, 20] and reference.segments == ((0, 10), (10, 21), (21, 29))
    assert list(reference.chain_ids[[0, 20, 21]]) == ["A", "A", "B"] and reference.icodes[16] == "A"
    assert "NME" not in reference.resnames and "CA" not in reference.resnames
    np.testing.assert_allclose(reference.coords_a[4], _helix(4), atol=1e-3)  # altloc B (occupancy 0.7)
    assert reference.gap_angles() == (8, 9, 19, 20)
    assert [n for n in reference.notes if "treated as a gap" in n][0].startswith(
        "two_chains.pdb: chain A: residues 10→15, 8.7 Å apart: treated as a gap")
    assert any("NME 24" in n and "HOH" not in n and "1 water" in n for n in reference.notes)
    assert list(gap_bonds(reference.coords_a)) == [9, 20]  # found again from the geometry alone
    # the same file, one chain given as "A,B" in the config's reference_chain text
    same = reference_from_pdb(reference.source, chain="A,B")
    np.testing.assert_array_equal(same.coords_a, reference.coords_a)
    with pytest.raises(ValueError, match="gaps"):
        ChainReference(reference.coords_a, gaps=[28])


def _rebuilt(reference: ChainReference, delta: torch.Tensor, j0: int, n: int = 3) -> np.ndarray:
    """The untrained model's chains for ``n`` particles anchored at the reference atom ``j0``."""
    ref = torch.as_tensor(reference.coords_a, dtype=torch.float64)
    theta0, psi0 = chain_angles(ref)
    mask = torch.as_tensor(coefficient_mask(len(theta0), 4, ChainFitConfig(), reference.gap_angles()),
                           dtype=torch.float64)
    model = SpectralAngles(theta0, psi0, mask, fit_psi=True).double()
    phi = torch.as_tensor(np.random.default_rng(0).normal(size=(n, 4)))
    theta, psi = model(phi)
    return build_chains(theta, psi, ref[j0].expand(n, 3), frenet_frames(ref)[j0].expand(n, 3, 3), j0, delta,
                        planar=False).detach().numpy()


@pytest.mark.parametrize("settings", [{"bond_length_mode": "mean"}, {"bond_length_mode": "reference"},
                                      {"bond_length_a": 3.83}])
def test_untrained_chain_reproduces_the_reference_across_gaps(reference, settings):
    config = ChainFitConfig(**settings)
    ref = torch.as_tensor(reference.coords_a, dtype=torch.float64)
    lengths = bond_lengths(ref)
    delta = reference_bond_lengths(ref, config, gaps=reference.gaps)
    torch.testing.assert_close(delta, reference_bond_lengths(ref, config))  # the same gaps from geometry
    assert delta.shape == (28,)
    torch.testing.assert_close(delta[[9, 20]], lengths[[9, 20]])  # 8.7 Å and 30 Å kept, not 3.8 Å
    worst = 0.0
    for j0 in (0, default_reference_atom(reference.coords_a), 15, reference.n_atoms - 2):
        error = np.linalg.norm(_rebuilt(reference, delta, j0) - reference.coords_a, axis=-1).max()
        worst = max(worst, error)
    print(f"{settings}: gap bonds {delta[9]:.2f} Å, {delta[20]:.2f} Å; untrained chain max error {worst:.4f} Å")
    assert worst < 0.01
    # the old behaviour, one mean bond everywhere, puts the chain far from its own reference
    fake = lengths.mean()
    fake_error = np.linalg.norm(_rebuilt(reference, fake, 15) - reference.coords_a, axis=-1).max()
    print(f"  with one {float(fake):.2f} Å bond everywhere (no gaps): {fake_error:.1f} Å")
    assert fake_error > 5.0


def test_gap_angles_are_frozen_and_gapless_chains_keep_one_length(reference):
    mask = coefficient_mask(reference.n_atoms - 2, 3, ChainFitConfig(), reference.gap_angles())
    assert not mask[[8, 9, 19, 20]].any() and mask[[0, 10, 18, 21, 26]].all()
    one_chain = torch.as_tensor(reference.coords_a[21:], dtype=torch.float64)  # chain B alone: no gap
    delta = reference_bond_lengths(one_chain, ChainFitConfig(bond_length_mode="mean"))
    assert delta.ndim == 0 and abs(float(delta) - float(bond_lengths(one_chain).mean())) < 1e-12
