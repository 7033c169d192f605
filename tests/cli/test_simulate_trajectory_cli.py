"""``cryohet simulate trajectory``: your own protein from a PDB, deformed along elastic-network modes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import starfile

from napari_cryohet.cli import main

PDB = Path(__file__).resolve().parents[2] / "sample_data" / "adk_small" / "reference_ca.pdb"


def test_normal_mode_dataset_from_a_pdb(tmp_path):
    code = main(["simulate", "trajectory", "--topology", str(PDB), "--normal-modes", "2", "--amplitude-a", "3",
                 "--n-frames", "10", "--n", "24", "--box-size", "32", "--apix", "3.0", "--out", str(tmp_path),
                 "--name", "mine"])
    assert code == 0
    particles = starfile.read(tmp_path / "mine.star", always_dict=True)["particles"]
    assert len(particles) == 24
    truth = np.load(tmp_path / "mine_truth.npz", allow_pickle=False)
    atoms = np.asarray(truth["coords_a"], dtype=np.float64)  # (n, m, 3) true Cα of each particle
    ref = np.asarray(truth["global/reference_coords_a"], dtype=np.float64)
    assert atoms.shape == (24,) + ref.shape
    bonds = np.linalg.norm(np.diff(atoms, axis=1), axis=-1)
    ref_bonds = np.linalg.norm(np.diff(ref, axis=0), axis=-1)
    assert np.abs(bonds - ref_bonds).max() < 0.05  # bond lengths kept along the deformation
    rmsd = np.sqrt(((atoms - ref) ** 2).sum(-1).mean(-1))
    assert rmsd.max() <= 3.0 + 1e-6 and rmsd.max() > 0.3  # deformed, never beyond the asked amplitude


def test_options_of_your_own_protein_do_not_apply_elsewhere(tmp_path, capsys):
    assert main(["simulate", "adk_chain", "--normal-modes", "2", "--n", "4", "--out", str(tmp_path)]) == 2
    assert "--normal-modes does not apply to adk_chain" in capsys.readouterr().err
