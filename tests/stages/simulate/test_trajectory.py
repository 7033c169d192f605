"""Your own trajectories: bond restoration, ANM trajectories (bonds within 0.05 Å, RMSD ≤ the
asked amplitude), multi-model PDB reading, and datasets with AdK-like ground truth."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from napari_cryohet.core.projection import apply_ctf_and_shift, project_gaussian_atoms
from napari_cryohet.core.rotation import random_rotations
from napari_cryohet.io.errors import CryohetInputError
from napari_cryohet.io.pdb import write_chains_pdb
from napari_cryohet.stages.simulate import adk as D
from napari_cryohet.stages.simulate import trajectory as T


def _bonds(x: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.diff(np.asarray(x, dtype=np.float64), axis=-2), axis=-1)


def _rmsd(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return np.sqrt(((np.asarray(x, np.float64) - ref) ** 2).sum(axis=-1).mean(axis=-1))


@pytest.fixture(scope="module")
def adk_ref() -> np.ndarray:
    return D.load_adk_ca()["coords"][0].astype(np.float64)


def test_restore_bond_lengths_is_a_small_exact_correction(adk_ref):
    rng = np.random.default_rng(0)
    noisy = adk_ref + rng.normal(0, 0.3, adk_ref.shape)
    target = _bonds(adk_ref)
    fixed = T.restore_bond_lengths(noisy, target)
    err = np.abs(_bonds(fixed) - target).max()
    moved = _rmsd(fixed, noisy)
    print(f"bond error before {np.abs(_bonds(noisy) - target).max():.3f} Å, after {err:.1e} Å; moved {moved:.3f} Å")
    assert err < 1e-3
    assert moved < 0.3 * np.sqrt(3)  # a correction, not a new chain: less than the noise put in
    np.testing.assert_allclose(T.restore_bond_lengths(adk_ref, target), adk_ref, atol=1e-12)  # nothing to do
    with pytest.raises(ValueError, match="disagree"):
        T.restore_bond_lengths(adk_ref, target[:-1])


@pytest.mark.parametrize("amplitudes", ["random", "sinusoidal"])
def test_anm_trajectory_keeps_bonds_and_stays_within_amplitude(adk_ref, amplitudes):
    """Issue 14 acceptance: an ANM trajectory keeps bond lengths within 0.05 Å of the reference."""
    traj = T.normal_mode_trajectory(adk_ref, n_modes=3, amplitude_a=5.0, n_frames=12, amplitudes=amplitudes, seed=1)
    ref = traj.reference_a.astype(np.float64)
    np.testing.assert_allclose(ref, adk_ref - adk_ref.mean(axis=0), atol=1e-4)
    bond_err = np.abs(_bonds(traj.coords_a) - _bonds(ref)).max()
    rmsd = _rmsd(traj.coords_a, ref)
    raw = traj.modes.displace(traj.mode_amplitudes_a.astype(np.float64))  # before restoring bonds
    raw_err = np.abs(_bonds(raw) - _bonds(ref)).max()
    kept = np.linalg.norm(traj.modes.amplitudes_of(traj.coords_a), axis=1) / np.maximum(rmsd, 1e-9)
    print(f"{amplitudes}: worst bond {bond_err:.1e} Å (linear modes alone: {raw_err:.2f} Å), RMSD "
          f"{rmsd.min():.2f}–{rmsd.max():.2f} Å, share of the motion in the modes ≥ {kept[rmsd > 0.5].min():.2f}")
    assert traj.coords_a.shape == (12, 214, 3)
    assert bond_err < 0.05
    assert raw_err > 0.5  # the restoration did something
    assert rmsd.max() <= 5.0 and rmsd.max() > 3.0
    assert kept[rmsd > 0.5].min() > 0.8  # still a motion along the slow modes
    if amplitudes == "sinusoidal":
        np.testing.assert_allclose(traj.coords_a[0], ref, atol=1e-5)  # the path starts at the reference
        np.testing.assert_allclose(traj.params[:, 0], np.linspace(0, 1, 12), atol=1e-6)
    else:
        np.testing.assert_array_equal(traj.params, traj.mode_amplitudes_a)


def test_anm_trajectory_is_deterministic_and_checks_input(adk_ref):
    a = T.normal_mode_trajectory(adk_ref, n_modes=2, amplitude_a=2.0, n_frames=3, seed=4)
    b = T.normal_mode_trajectory(adk_ref, n_modes=2, amplitude_a=2.0, n_frames=3, seed=4)
    np.testing.assert_array_equal(a.coords_a, b.coords_a)
    with pytest.raises(ValueError, match="amplitude_a"):
        T.normal_mode_trajectory(adk_ref, n_modes=2, amplitude_a=0.0)
    with pytest.raises(ValueError, match="amplitudes"):
        T.normal_mode_trajectory(adk_ref, n_modes=2, amplitude_a=2.0, amplitudes="thermal")


# ------------------------------------------------------------------ files

_WATER = "HETATM 9001  O   HOH W   1       0.000   0.000   0.000  1.00  0.00           O"
_CAP = "HETATM 9002  CA  NME A 999       1.000   1.000   1.000  1.00  0.00           C"


def _write_models(tmp_path, frames: np.ndarray, resids: np.ndarray):
    """Multi-model PDB of ``frames``, each model rotated and shifted at random; a topology
    PDB (first frame) with a water and a methyl cap whose carbon is named CA."""
    rng = np.random.default_rng(2)
    rot = random_rotations(len(frames), generator=torch.Generator().manual_seed(3)).numpy().astype(np.float64)
    moved = np.einsum("fij,fmj->fmi", rot, frames) + rng.normal(0, 20, (len(frames), 1, 3))
    models = write_chains_pdb(tmp_path / "models.pdb", moved, resids=resids)
    top = write_chains_pdb(tmp_path / "top.pdb", frames[0] + 7.0, resids=resids)
    lines = top.read_text().splitlines()
    at = lines.index("TER")
    top.write_text("\n".join(lines[:at] + [_CAP, "TER", _WATER] + lines[at + 1:]) + "\n")
    return top, models


def test_read_trajectory_multi_model_pdb(tmp_path, adk_ref):
    frames = T.normal_mode_trajectory(adk_ref[:60], n_modes=2, amplitude_a=2.0, n_frames=4, seed=0).coords_a
    resids = np.arange(5, 65)
    top, models = _write_models(tmp_path, frames.astype(np.float64), resids)
    traj = T.read_trajectory(top, models)
    ref = frames[0] - frames[0].mean(axis=0)
    internal = np.linalg.norm(traj.coords_a[:, :, None] - traj.coords_a[:, None], axis=-1)
    expected = np.linalg.norm(frames[:, :, None] - frames[:, None], axis=-1)
    err = np.abs(internal - expected).max()
    before = _rmsd(frames - frames.mean(axis=1, keepdims=True), ref)
    after = _rmsd(traj.coords_a, ref)
    print(f"4 rotated, shifted models read back: internal distances within {err:.4f} Å; RMSD to the reference "
          f"{np.round(after, 3)} Å after superposition (as made: {np.round(before, 3)} Å)")
    assert traj.coords_a.shape == (4, 60, 3)  # the NME cap and the water are not residues
    np.testing.assert_array_equal(traj.resids, resids)
    assert any("NME 999" in note and "water" in note for note in traj.notes)  # left out, and said so
    assert err < 0.005
    np.testing.assert_allclose(traj.reference_a, ref, atol=0.002)
    np.testing.assert_allclose(traj.coords_a[0], ref, atol=0.002)
    assert (after <= before + 0.002).all()  # superposed: no worse than the frames as made
    np.testing.assert_allclose(traj.params[:, 0], [0, 1 / 3, 2 / 3, 1], atol=1e-6)
    lines = models.read_text().splitlines()
    lines.pop(next(i for i, line in enumerate(lines) if line.startswith("ATOM") and " A  10 " in line[17:27]))
    models.write_text("\n".join(lines) + "\n")  # model 1 now lacks residue 10
    with pytest.raises(CryohetInputError, match="model 1 lacks the Cα of residue A ALA 10"):
        T.read_trajectory(top, models)


@pytest.mark.skipif(importlib.util.find_spec("MDAnalysis") is not None, reason="MDAnalysis is installed")
def test_dcd_without_mdanalysis_names_package_and_file(tmp_path, adk_ref):
    top = write_chains_pdb(tmp_path / "top.pdb", adk_ref[:10])
    dcd = tmp_path / "run.dcd"
    dcd.write_bytes(b"\0" * 16)
    with pytest.raises(CryohetInputError, match=r"run\.dcd.*MDAnalysis"):
        T.read_trajectory(top, dcd)
    with pytest.raises(CryohetInputError, match="unknown trajectory format"):
        T.read_trajectory(top, tmp_path / "run.txt")


# ------------------------------------------------------------------ datasets


def test_anm_dataset_ground_truth_like_adk_chain(adk_ref):
    ds = T.trajectory_chain(10, normal_modes=3, amplitude_a=4.0, n_frames=6, snr=0.05, seed=2)
    truth = ds.ground_truth
    adk_keys = set(D.adk_chain(2, snr=0.05, seed=0).ground_truth)
    assert adk_keys <= set(truth)  # every key of the bundled AdK dataset
    ref = truth["global/reference_coords_a"].astype(np.float64)
    coords = truth["coords_a"]
    np.testing.assert_array_equal(coords, truth["global/trajectory_coords_a"][truth["state"]])
    rmsd = _rmsd(coords, ref)
    bond_err = np.abs(_bonds(coords) - _bonds(ref)).max()
    print(f"ANM dataset: RMSD to reference {rmsd.min():.2f}–{rmsd.max():.2f} Å (asked ≤ 4 Å), worst bond {bond_err:.1e} Å")
    assert rmsd.max() <= 4.0 and bond_err < 0.05
    assert truth["state_params"].shape == (10, 3) and truth["global/mode_vectors"].shape == (3, 214, 3)
    assert ds.images.shape == (10, 64, 64) and ds.apix == 2.0
    np.testing.assert_allclose(ds.ctf.voltage_kv, 200.0)
    # clean images are CTF · projection of the ground-truth atoms in the stored poses
    proj = project_gaussian_atoms(torch.as_tensor(coords), torch.as_tensor(ds.rotations), d=64, apix=ds.apix,
                                  sigma_a=3.0)
    expected = apply_ctf_and_shift(proj, apix=ds.apix, ctf=ds.ctf.to_torch()).numpy()
    np.testing.assert_allclose(truth["clean_images"], expected, atol=1e-5 * np.abs(expected).max())


def test_anm_dataset_from_a_gapped_topology(tmp_path, adk_ref):
    """Residues 31–35 missing: the gap is a long 'bond' whose length the deformation keeps."""
    keep = np.r_[0:30, 35:100]
    top = write_chains_pdb(tmp_path / "gapped.pdb", adk_ref[keep], resids=keep + 1)
    ds = T.trajectory_chain(6, topology=str(top), normal_modes=2, amplitude_a=3.0, n_frames=4, snr=None, seed=0)
    truth = ds.ground_truth
    ref = truth["global/reference_coords_a"].astype(np.float64)
    bond_err = np.abs(_bonds(truth["global/trajectory_coords_a"]) - _bonds(ref)).max()
    print(f"gapped topology: gap {_bonds(ref)[29]:.1f} Å kept, worst bond {bond_err:.1e} Å; notes: {ds.meta['trajectory_notes']}")
    np.testing.assert_array_equal(truth["global/gaps"], [29])
    assert _bonds(ref)[29] > 8.0 and bond_err < 0.05
    assert any("30→36" in note for note in ds.meta["trajectory_notes"])
    assert _rmsd(truth["coords_a"], ref).max() <= 3.0


def test_file_dataset_and_bad_recipes(tmp_path, adk_ref):
    frames = D.load_adk_ca()["coords"][::20].astype(np.float64)  # 6 frames of the real AdK path
    top, models = _write_models(tmp_path, frames, np.arange(1, 215))
    ds = T.trajectory_chain(6, topology=str(top), trajectory=str(models), snr=None, continuous=True, seed=1)
    truth = ds.ground_truth
    t = truth["state"][:, 0]
    assert truth["state"].shape == (6, 1) and ((t >= 0) & (t <= 1)).all()
    np.testing.assert_array_equal(truth["state_params"], truth["state"])
    ref = truth["global/reference_coords_a"]
    assert np.abs(ref - (frames[0] - frames[0].mean(axis=0))).max() < 0.005
    with pytest.raises(ValueError, match="either trajectory"):
        T.trajectory_chain(2, snr=None)
    with pytest.raises(ValueError, match="needs a path"):
        T.trajectory_chain(2, normal_modes=2, continuous=True, snr=None)
    with pytest.raises(ValueError, match="needs topology"):
        T.trajectory_chain(2, trajectory=str(models), snr=None)
