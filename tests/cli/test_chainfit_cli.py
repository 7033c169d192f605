"""``cryohet chainfit``: workspace runs, eigenvectors by run id, residue ranges, PDB export."""

from __future__ import annotations

import shutil
from pathlib import Path

import gemmi
import numpy as np
import pytest

from napari_cryohet.cli import main
from napari_cryohet.io.json_files import write_json
from napari_cryohet.stages.chainfit import angles_for_residues, reference_from_dataset
from napari_cryohet.stages.workspace import Workspace

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "adk_small" / "particles.star"
QUICK = ["-K", "3", "--epochs", "1", "--fit-box-size", "16"]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_chainfit_runs_spectral_first_then_reuses_it(tmp_path, capsys):
    ws_dir = tmp_path / "ws"
    pdb = tmp_path / "fits.pdb"
    assert main(["chainfit", "--workspace", str(ws_dir), "--star", str(SAMPLE), *QUICK, "--rigid", "10-20",
                 "--export-pdb", str(pdb)]) == 0
    out = capsys.readouterr().out
    assert "reference: the known conformation in the dataset's ground truth" in out
    assert "no spectral run in this workspace yet: running the spectral embedding with default settings" in out
    assert "run chainfit/0001 (eigenvectors from spectral/0001)" in out
    assert f"results in {ws_dir / 'chainfit' / '0001'}" in out
    ws = Workspace.open(ws_dir)
    manifest = ws.manifest("chainfit/0001")
    assert manifest["status"] == "done" and manifest["inputs"] == {"eigenvectors": "spectral/0001"}
    ref = reference_from_dataset(ws.dataset)
    assert tuple(manifest["config"]["rigid_angles"]) == tuple(angles_for_residues(ref.resids, [(10, 20)]))
    assert manifest["config"]["n_eigenvectors"] == 3
    assert len(gemmi.read_structure(str(pdb))) == 200

    # named eigenvectors and other settings: a new run; no name: the latest spectral run, said so
    assert main(["chainfit", "--workspace", str(ws_dir), "--eigenvectors", "spectral/0001", *QUICK,
                 "--lr", "0.5", "--anchor", "truth"]) == 0
    out = capsys.readouterr().out
    assert "run chainfit/0002" in out and "no spectral run" not in out
    assert ws.manifest("chainfit/0002")["config"]["learning_rate"] == 0.5
    assert main(["chainfit", "--workspace", str(ws_dir), *QUICK, "--rigid", "10-20"]) == 0
    out = capsys.readouterr().out
    assert "using the eigenvectors of spectral/0001, the latest finished spectral run" in out
    assert "already done with these settings" in out and "run chainfit/0001" in out
    # an interrupted run (here: marked so) is resumed from its checkpoint, and the CLI says so
    write_json(ws_dir / "chainfit" / "0002" / "manifest.json", {**ws.manifest("chainfit/0002"), "status": "failed"})
    assert main(["chainfit", "--workspace", str(ws_dir), "--eigenvectors", "spectral/0001", *QUICK,
                 "--lr", "0.5", "--anchor", "truth"]) == 0
    assert "resumed from epoch 1 of run chainfit/0002" in capsys.readouterr().out


def test_chainfit_bad_settings_are_named(tmp_path, capsys):
    # one error line naming the setting, exit status 2 (the CLI's handling of bad settings)
    assert main(["chainfit", "--workspace", str(tmp_path / "ws"), "--star", str(SAMPLE), "--learning-rate", "0"]) == 2
    assert "ChainFitConfig.learning_rate: expected a positive number" in capsys.readouterr().err
    assert main(["chainfit", "--workspace", str(tmp_path / "ws"), "--star", str(SAMPLE), "--rigid", "20-10"]) == 2
    assert "residue range" in capsys.readouterr().err


def test_chainfit_on_a_star_without_truth_uses_the_shipped_reference(tmp_path, capsys):
    """A .star as a user has it (no particles_truth.npz): the reference_ca.pdb beside it is
    the reference, and the CLI names it; without it, one line saying what to give."""
    for name in ("particles.star", "particles.mrcs"):
        shutil.copy(SAMPLE.parent / name, tmp_path / name)
    star = tmp_path / "particles.star"
    assert main(["chainfit", "--workspace", str(tmp_path / "bare"), "--star", str(star), *QUICK]) == 2
    err = capsys.readouterr().err
    assert "needs a reference model" in err and "reference_ca.pdb" in err
    shutil.copy(SAMPLE.parent / "reference_ca.pdb", tmp_path / "reference_ca.pdb")
    pdb = tmp_path / "fits.pdb"
    assert main(["chainfit", "--workspace", str(tmp_path / "ws"), "--star", str(star), *QUICK, "--rigid", "122-159",
                 "--export-pdb", str(pdb)]) == 0
    out = capsys.readouterr().out
    assert f"reference: the reference model shipped with the data: {tmp_path / 'reference_ca.pdb'}" in out
    ws = Workspace.open(tmp_path / "ws")
    assert not ws.dataset.ground_truth
    result = ws.result("chainfit/0001")
    truth = np.load(SAMPLE.parent / "particles_truth.npz")["global/reference_coords_a"]
    assert np.abs(result.reference.coords_a - truth).max() < 1e-3
    # residue ranges are read on the shipped model (the AdK lid, residues 122-159)
    rigid = ws.manifest("chainfit/0001")["config"]["rigid_angles"]
    assert tuple(rigid) == tuple(range(120, 158))  # angle j sits at atom j + 1 = residue j + 2
    # the exported chains carry the model's residue names
    fitted = gemmi.read_structure(str(pdb))
    assert len(fitted) == 200 and fitted[0][0][0].name == "MET"
