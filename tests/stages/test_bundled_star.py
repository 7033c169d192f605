"""The bundled sample ``sample_data/adk_small``: its ``.star`` through the per-particle
columns, and its shipped reference model ``reference_ca.pdb`` through ``reference_for``,
the chain-fit stage of a workspace and the CLI (pandas 3: text columns are ``StringDtype``)."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import starfile
import torch

from napari_cryohet.core.projection import apply_ctf_and_shift, project_gaussian_atoms
from napari_cryohet.io.load_particles import load_dataset
from napari_cryohet.stages.chainfit import ChainFitConfig
from napari_cryohet.stages.chainfit.reference import (
    SHIPPED_REFERENCE,
    reference_for,
    reference_from_dataset,
    reference_from_pdb,
)
from napari_cryohet.stages.particle_columns import particle_columns
from napari_cryohet.stages.simulate import adk_chain, sample_data_dir
from napari_cryohet.stages.workspace import Workspace

SAMPLE = sample_data_dir() / "adk_small"
STAR = SAMPLE / "particles.star"
PDB = SAMPLE / SHIPPED_REFERENCE

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def truth() -> dict[str, np.ndarray]:
    """The sample's ground truth, read with numpy (not the loader)."""
    with np.load(SAMPLE / "particles_truth.npz", allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture
def star_without_truth(tmp_path):
    """The sample's ``.star`` and ``.mrcs`` copied without ``particles_truth.npz``: real data
    as a user has it. Returns ``(folder, star path)``; the caller adds the PDB or not."""
    for name in ("particles.star", "particles.mrcs"):
        shutil.copy(SAMPLE / name, tmp_path / name)
    return tmp_path, tmp_path / "particles.star"


# ------------------------------------------------------------------- per-particle columns
def test_columns_of_the_bundled_star_are_the_star_values_as_float64(truth):
    ds = load_dataset(STAR)
    n = len(ds)
    assert isinstance(ds.table["rlnImageName"].dtype, pd.StringDtype) or ds.table["rlnImageName"].dtype == object
    cols = particle_columns(ds)
    for name, values in cols.items():
        assert isinstance(values, np.ndarray) and values.dtype == np.float64, name
        assert values.shape == (n,) and np.isfinite(values).all(), name
    # oracle: the file read by starfile, not by the loader
    file = starfile.read(STAR, always_dict=True)["particles"]
    numeric = [c for c in file.columns if pd.api.types.is_numeric_dtype(file[c])]
    text = [c for c in file.columns if c not in numeric]
    assert len(numeric) >= 10 and text == ["rlnImageName"]
    for name in numeric:
        np.testing.assert_array_equal(cols[name], file[name].to_numpy(dtype=np.float64), err_msg=name)
    assert "rlnImageName" not in cols  # text that is not numbers is left out
    assert set(cols) == {"index", *numeric, "defocus_a", "truth_state", "truth_state_params"}
    np.testing.assert_array_equal(cols["truth_state"], truth["state"])
    # every column is usable as numpy data (what the widgets do with them)
    stacked = np.column_stack(list(cols.values()))
    assert stacked.dtype == np.float64 and stacked.shape == (n, len(cols))


# ------------------------------------------------------------------- the shipped reference
def test_shipped_pdb_is_the_simulators_reference_frame(truth):
    ref = reference_from_pdb(PDB)
    expected = truth["global/reference_coords_a"]  # (214, 3) the simulator's known conformation
    assert ref.coords_a.shape == expected.shape == (214, 3)
    assert np.abs(ref.coords_a - expected).max() < 1e-3  # PDB precision: 0.001 Å
    np.testing.assert_array_equal(ref.resids, np.arange(1, 215))
    assert ref.resnames[0] == "MET" and len(ref.gaps) == 0
    # the same frame as the particles' chains: the particles simulated from frame 0 have it
    for i in np.flatnonzero(truth["state"] == 0):
        assert np.abs(ref.coords_a - truth["coords_a"][i]).max() < 1e-3
    # and as the simulator's declaration, whatever the particle count or box
    simulated = reference_from_dataset(adk_chain(2, box_size=16, apix=8.0, snr=None, seed=5))
    assert np.abs(ref.coords_a - simulated.coords_a).max() < 1e-3


def test_shipped_pdb_is_in_the_frame_of_the_star_poses(truth):
    """Projected with the ``.star`` poses, CTF and shifts, the PDB matches the images of the
    particles simulated from frame 0 better than a mirrored or turned copy, or other
    particles' poses, do."""
    ds = load_dataset(STAR, ground_truth=False)
    idx = np.flatnonzero(truth["state"] == 0)
    assert len(idx) >= 2
    coords = torch.as_tensor(reference_from_pdb(PDB).coords_a, dtype=torch.float32)

    def correlation(chain: torch.Tensor, poses: np.ndarray) -> np.ndarray:
        rot = torch.as_tensor(np.asarray(ds.rotations)[poses], dtype=torch.float32)
        proj = project_gaussian_atoms(chain.expand(len(idx), -1, -1), rot, d=ds.box_size, apix=ds.apix,
                                      sigma_a=float(truth["global/sigma_a"]))
        pred = apply_ctf_and_shift(proj, apix=ds.apix, ctf=ds.ctf.to_torch(indices=idx),
                                   shifts_a=torch.as_tensor(np.asarray(ds.shifts_a)[idx])).numpy()
        images = np.asarray(ds.get_images(idx), dtype=np.float64)
        a = pred.reshape(len(idx), -1) - pred.reshape(len(idx), -1).mean(1, keepdims=True)
        b = images.reshape(len(idx), -1) - images.reshape(len(idx), -1).mean(1, keepdims=True)
        return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)

    right = correlation(coords, idx)
    # SNR 0.3: a perfect prediction correlates sqrt(0.3 / 1.3) ≈ 0.48 with its noisy image
    assert (right > 0.35).all(), right
    mirrored = coords * torch.tensor([-1.0, 1.0, 1.0])
    # wrong frames score ≈ 0.34-0.41 (the CTF-filtered blob alone correlates): a margin of
    # 0.05 is 3 standard errors of a correlation over 64² pixels; the data are fixed files
    wrong = {"mirrored": correlation(mirrored, idx),
             "turned 90° about z": correlation(coords @ torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0],
                                                                    [0.0, 0.0, 1.0]]), idx),
             "other particles' poses": correlation(coords, (idx + 1) % len(ds))}
    for name, value in wrong.items():
        assert (value < right - 0.05).all(), (name, value, right)


def test_reference_for_prefers_ground_truth_then_the_shipped_model(star_without_truth, truth):
    # with ground truth (the bundled sample as shipped): the truth itself
    ds = load_dataset(STAR)
    ref, described = reference_for(ds)
    np.testing.assert_array_equal(ref.coords_a, reference_from_dataset(ds).coords_a)
    np.testing.assert_array_equal(ref.coords_a, truth["global/reference_coords_a"])
    assert "ground truth" in described
    # without: the reference_ca.pdb beside the .star, named in the description
    folder, star = star_without_truth
    with pytest.raises(ValueError, match=r"reference_ca\.pdb") as err:
        reference_for(load_dataset(star))
    assert "PDB" in str(err.value)
    shutil.copy(PDB, folder / SHIPPED_REFERENCE)
    bare = load_dataset(star)
    assert not bare.ground_truth
    ref, described = reference_for(bare)
    assert str((folder / SHIPPED_REFERENCE).resolve()) in described and ref.source.endswith(SHIPPED_REFERENCE)
    assert np.abs(ref.coords_a - truth["global/reference_coords_a"]).max() < 1e-3
    assert np.abs(ref.coords_a - reference_from_dataset(ds).coords_a).max() < 1e-3
    # a dataset that says nothing of where it came from
    bare.meta.clear()
    with pytest.raises(ValueError, match="needs a reference model"):
        reference_for(bare)


def test_workspace_chainfit_on_a_star_takes_the_shipped_model(star_without_truth, truth):
    folder, star = star_without_truth
    shutil.copy(PDB, folder / SHIPPED_REFERENCE)
    ws = Workspace.create(folder / "ws", star)
    from napari_cryohet.stages.chainfit.stage import default_spectral_config

    spectral = ws.run("spectral", default_spectral_config(3, ws.dataset))
    result = ws.run("chainfit", ChainFitConfig(n_eigenvectors=3, epochs=1, fit_box_size=16),
                    inputs={"eigenvectors": spectral.run_id})
    assert result.reference.source.endswith(SHIPPED_REFERENCE)
    assert np.abs(result.reference.coords_a - truth["global/reference_coords_a"]).max() < 1e-3
    assert np.isfinite(result.history[-1]["test_loss"])
