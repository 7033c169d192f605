"""Chain-fit stage (seed 000_8d73a95ce4c6e7ab.txt §2.3, §3): science on tiny synthetic data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cryohet.core.atoms import gaussian_density_3d
from napari_cryohet.core.graph import build_gaussian_graph
from napari_cryohet.core.laplacian import laplacian_eigenmaps
from napari_cryohet.core.projection import apply_ctf_and_shift, project_gaussian_atoms
from napari_cryohet.io.pdb import write_chains_pdb
from napari_cryohet.stages._common import Cancelled, CancelToken
from napari_cryohet.stages.chainfit import (
    ChainFitConfig,
    ChainFitResult,
    angles_for_residues,
    chain_errors,
    default_reference_atom,
    predict_images,
    reference_from_dataset,
    reference_from_pdb,
    run_chainfit,
    run_chainfit_2d,
)
from napari_cryohet.stages.chainfit.targets import FourierTargets
from napari_cryohet.stages.protocol import Embedding, ParticleMismatchError
from napari_cryohet.stages.simulate import adk_chain, box_arms_2d

pytestmark = pytest.mark.usefixtures("one_thread")


#: 0-based indices of the six angles that vary in the box with two arms (eq. 3.2–3.3).
BOX_ARMS_VARYING = (32, 52, 72, 92, 122, 132)


@pytest.fixture(scope="module")
def adk_small():
    """150 AdK particles, 32 px (4 Å/px), SNR 1, with Laplacian eigenvectors of 16³ volumes."""
    ds = adk_chain(150, box_size=32, apix=4.0, snr=1.0, seed=3)
    coords = torch.as_tensor(ds.ground_truth["coords_a"])
    vols = gaussian_density_3d(coords, d=16, apix=6.0, sigma_a=3.0).reshape(len(ds), -1).double().numpy()
    vols *= (2 * np.pi * 9.0) ** 1.5 / 6.0**3  # eq. 3.8 scale: peak 1 per atom
    noisy = vols + np.random.default_rng(0).normal(0.0, np.sqrt(0.5), vols.shape)
    phi = laplacian_eigenmaps(build_gaussian_graph(noisy, sigma=80 * np.sqrt(0.5)), 10).eigenvectors
    return ds, Embedding.for_dataset(phi, ds, name="eigenvectors")


def test_fourier_misfit_equals_image_space_misfit(adk_small, rng):
    """‖CTF·S·P − Y‖² computed in Fourier space equals the image-space value (Parseval; the
    image-space path drops the imaginary part a sub-pixel shift leaves at Nyquist, ~1e-4)."""
    ds, _ = adk_small
    ds = ds.subset(np.arange(20))
    ds.shifts_a = rng.normal(0, 3.0, (20, 2)).astype(np.float32)
    idx = np.array([1, 4, 9, 17])
    proj = project_gaussian_atoms(torch.as_tensor(ds.ground_truth["coords_a"][idx]) + 0.7,
                                  torch.as_tensor(ds.rotations[idx]), d=32, apix=4.0, sigma_a=3.0)
    image = apply_ctf_and_shift(proj, apix=4.0, ctf=ds.ctf.to_torch(indices=idx),
                                shifts_a=torch.as_tensor(ds.shifts_a[idx]))
    for max_bytes in (1 << 30, 0):  # cached stack and per-batch paths
        targets = FourierTargets(ds, torch.device("cpu"), torch.float32, max_bytes=max_bytes)
        noisy = float(((image - torch.as_tensor(ds.get_images(idx))) ** 2).mean())
        clean = float(((image - torch.as_tensor(ds.ground_truth["clean_images"][idx])) ** 2).mean())
        assert float(targets.misfit(proj, idx, False)) == pytest.approx(noisy, rel=1e-3)
        assert float(targets.misfit(proj, idx, True)) == pytest.approx(clean, rel=1e-3)


def test_fourier_cropped_misfit_keeps_the_low_frequencies():
    """``fit_box_size``: the true chains still fit the clean images (aliasing bias tiny
    compared with a 1 Å perturbation), on a 2 Å/px box cropped to 4 Å/px."""
    ds = adk_chain(12, box_size=64, apix=2.0, snr=1.0, seed=1)
    idx = np.arange(12)
    coords = torch.as_tensor(ds.ground_truth["coords_a"])
    rot = torch.as_tensor(ds.rotations)
    moved = coords + torch.as_tensor(np.random.default_rng(0).normal(0, 1.0, coords.shape), dtype=coords.dtype)
    targets = FourierTargets(ds, torch.device("cpu"), torch.float32, fit_box_size=32)
    true = float(targets.misfit(project_gaussian_atoms(coords, rot, d=32, apix=4.0, sigma_a=3.0), idx, True))
    off = float(targets.misfit(project_gaussian_atoms(moved, rot, d=32, apix=4.0, sigma_a=3.0), idx, True))
    full = FourierTargets(ds, torch.device("cpu"), torch.float32)
    off_full = float(full.misfit(project_gaussian_atoms(moved, rot, d=64, apix=2.0, sigma_a=3.0), idx, True))
    assert true < 0.02 * off
    assert off == pytest.approx(off_full, rel=0.15)  # the perturbation's signal sits at low frequency


def test_noise_variance_from_the_misfit_does_not_depend_on_the_fit_box():
    """Images of pure noise (σ² = 4 per pixel) against blank predictions: the misfit divided by
    the share of the spectrum it keeps is σ², whether the whole 64-px box is fitted or its
    central 32² or 16² frequencies (the normal-mode prior is scaled by it; before 2026-12-01 a
    cropped fit took the cropped misfit for σ² and weakened the prior (D/D')²-fold)."""
    ds = adk_chain(200, box_size=64, apix=2.0, snr=1.0, seed=1)
    ds.images = np.random.default_rng(3).normal(0, 2.0, (200, 64, 64)).astype(np.float32)
    idx = np.arange(200)
    for fit in (None, 32, 16):
        targets = FourierTargets(ds, torch.device("cpu"), torch.float64, fit_box_size=fit)
        blank = torch.zeros(200, targets.d, targets.d, dtype=torch.float64)
        assert float(targets.misfit(blank, idx, False)) / targets.kept_fraction == pytest.approx(4.0, rel=0.02)


def test_zero_coefficients_predict_the_reference_images(adk_small):
    """A = B = 0 (Remark 2.5) with the particle's own chain as reference and anchor rebuilds
    its clean image (the forward model of eq. 2.10 matches the simulator's)."""
    ds, phi = adk_small
    i = 5
    cfg = ChainFitConfig(epochs=0, anchor="truth", bond_length_mode="reference")
    result = run_chainfit(ds, cfg, eigenvectors=phi, reference=reference_from_dataset(ds, particle=i))
    assert np.abs(result.chains([i])[0] - ds.ground_truth["coords_a"][i]).max() < 1e-3
    predicted = predict_images(result, ds, [i])[0]
    clean = ds.ground_truth["clean_images"][i]
    assert np.abs(predicted - clean).max() < 1e-4 * np.abs(clean).max() + 1e-6


def test_adk_fit_reduces_error(adk_small, tmp_path):
    ds, phi = adk_small
    # K = 2: the trivial eigenvector and the path-like first one (135 training images are
    # too few for K = 10 coefficients on every angle)
    # 30 optimiser steps in all: a bolder step than the default (0.1 Å), which is sized for ~1000 steps
    cfg = ChainFitConfig(n_eigenvectors=2, epochs=10, batch_size=45, learning_rate=1.0, seed=0)
    result = run_chainfit(ds, cfg, eigenvectors=phi, reference=reference_from_dataset(ds), run_dir=tmp_path)
    start, end = result.history[0], result.history[-1]
    assert start["avg_error_a"] > 3.0  # frame 0 vs the trajectory
    assert end["avg_error_a"] < 0.8 * start["avg_error_a"]
    assert end["test_loss"] < start["test_loss"]
    assert len(result.test_indices) == 15 and len(result.train_indices) == 135
    assert not set(result.test_indices) & set(result.train_indices)
    # metrics agree with a direct evaluation of eq. 3.6 / 3.7 on the test particles
    avg, mx = chain_errors(result.chains(result.test_indices), ds.ground_truth["coords_a"][result.test_indices])
    assert avg == pytest.approx(end["avg_error_a"], rel=1e-3) and mx == pytest.approx(end["max_error_a"], rel=1e-3)
    assert not (tmp_path / "chainfit_result.npz").exists()  # the run function does not save (the workspace does)
    result.save(tmp_path)
    loaded = ChainFitResult.load(tmp_path)
    np.testing.assert_array_equal(loaded.particle_indices, ds.indices)
    np.testing.assert_allclose(loaded.chains([0, 7]), result.chains([0, 7]), atol=1e-4)
    assert loaded.history == result.history


def test_resume_continues_where_it_stopped(adk_small, tmp_path):
    """Cancel during epoch 2, resume from the epoch-1 checkpoint: same result as one run."""
    ds, phi = adk_small
    ref = reference_from_dataset(ds)
    cfg = ChainFitConfig(epochs=2, batch_size=45, n_eigenvectors=4)
    full = run_chainfit(ds, cfg, eigenvectors=phi, reference=ref)
    token = CancelToken()

    def progress(fraction, message):
        if message.startswith("epoch 2/2  batch 2/"):
            token.cancel()

    with pytest.raises(Cancelled):
        run_chainfit(ds, cfg, eigenvectors=phi, reference=ref, run_dir=tmp_path, progress=progress, cancel=token)
    assert (tmp_path / "checkpoint.pt").is_file()
    messages = []
    resumed = run_chainfit(ds, cfg, eigenvectors=phi, reference=ref, run_dir=tmp_path,
                           progress=lambda f, m: messages.append(m))
    assert any(m.startswith("resumed from epoch 1 of run") for m in messages)
    assert [r["epoch"] for r in resumed.history] == [0, 1, 2]
    np.testing.assert_allclose(resumed.coeff_theta, full.coeff_theta, atol=1e-6)
    assert resumed.history[-1]["avg_error_a"] == pytest.approx(full.history[-1]["avg_error_a"], rel=1e-5)


def test_cancel_stops_within_a_batch(adk_small, tmp_path):
    ds, phi = adk_small
    token = CancelToken()
    calls = []

    def progress(fraction, message):
        calls.append(message)
        if "batch 1/" in message:
            token.cancel()

    with pytest.raises(Cancelled):
        run_chainfit(ds, ChainFitConfig(epochs=3, batch_size=45), eigenvectors=phi,
                     reference=reference_from_dataset(ds), run_dir=tmp_path, progress=progress, cancel=token)
    assert sum("batch" in c for c in calls) == 1
    assert not (tmp_path / "chainfit_result.npz").exists()


def test_masks_fix_and_rigidify_angles(adk_small):
    ds, phi = adk_small
    rigid = tuple(angles_for_residues(np.arange(1, 215), [(10, 20)]))
    cfg = ChainFitConfig(epochs=1, batch_size=45, fixed_angles=(0, 1, 2), rigid_angles=rigid,
                         fit_bond_angles=False)
    result = run_chainfit(ds, cfg, eigenvectors=phi, reference=reference_from_dataset(ds))
    assert np.all(result.coeff_theta[[0, 1, 2]] == 0)
    assert np.all(result.coeff_theta[list(rigid), 1:] == 0) and np.any(result.coeff_theta[list(rigid), 0] != 0)
    assert np.all(result.coeff_psi == 0)
    theta, psi = result.angles([0, 1])
    np.testing.assert_allclose(psi, np.broadcast_to(result.psi0, psi.shape))
    assert np.any(result.coeff_theta[30:40, 1:] != 0)


def test_box_arms_varying_angles_below_one_angstrom():
    """§3.1.1: only the six varying angles are fitted; test set scored on clean projections.

    The expansion basis is exact here (``[1, θ̃_33, θ̃_133, θ̃_box]``: every angle is an
    affine function of it), so what is tested is the stage — forward model, gradients,
    optimiser and metrics — not the quality of a graph Laplacian.
    """
    toy = box_arms_2d(600, noise_var=250.0, seed=1)
    basis = np.column_stack([np.ones(len(toy)), toy.state_params])
    # three hinges swinging by up to a radian: the paper's plain step in radians (no lever-arm scaling)
    cfg = ChainFitConfig(n_eigenvectors=4, epochs=15, batch_size=50, learning_rate=0.05, step_scaling="none",
                         varying_angles=BOX_ARMS_VARYING)
    result = run_chainfit_2d(toy, cfg, eigenvectors=Embedding.for_dataset(basis, toy))
    assert result.history[0]["avg_error_a"] > 20.0
    assert result.history[-1]["avg_error_a"] < 1.0
    assert result.chains([0]).shape == (1, 149, 2)
    fixed = np.setdiff1d(np.arange(147), BOX_ARMS_VARYING)
    theta, _ = result.angles()
    np.testing.assert_allclose(theta[:, fixed], np.broadcast_to(result.theta0[fixed], (len(toy), len(fixed))),
                               atol=1e-6)


def test_references(tmp_path, adk_small):
    ds, _ = adk_small
    ref = reference_from_dataset(ds)
    np.testing.assert_allclose(ref.coords_a, ds.ground_truth["global/reference_coords_a"])
    path = write_chains_pdb(tmp_path / "ref.pdb", ref.coords_a)
    from_file = reference_from_pdb(path)
    np.testing.assert_allclose(from_file.coords_a, ref.coords_a, atol=1e-3)
    assert list(from_file.resids) == list(range(1, 215))
    j0 = default_reference_atom(ref.coords_a)
    centroid_dist = np.linalg.norm(ref.coords_a - ref.coords_a.mean(0), axis=1)
    assert centroid_dist[j0] == centroid_dist.min()
    assert list(angles_for_residues(np.arange(1, 11), [(3, 4), (9, 12)])) == [1, 2, 7]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"anchor": "centroid"}, "anchor"),
        ({"n_eigenvectors": 0}, "n_eigenvectors"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"lr_schedule": "step"}, "lr_schedule"),
        ({"fit_box_size": 33}, "fit_box_size"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ChainFitConfig(**kwargs)


def test_bad_inputs(adk_small):
    ds, phi = adk_small
    ref = reference_from_dataset(ds)
    with pytest.raises(ParticleMismatchError, match="eigenvectors has no values for 140 of the 150"):
        run_chainfit(ds, ChainFitConfig(epochs=0), eigenvectors=Embedding(phi.values[:10], ds.indices[:10],
                                                                          name="eigenvectors"), reference=ref)
    with pytest.raises(TypeError, match="Embedding"):
        run_chainfit(ds, ChainFitConfig(epochs=0), eigenvectors=phi.values, reference=ref)
    with pytest.raises(ValueError, match="columns"):
        run_chainfit(ds, ChainFitConfig(epochs=0, n_eigenvectors=12), eigenvectors=phi, reference=ref)
    with pytest.raises(ValueError, match="reference_atom"):
        run_chainfit(ds, ChainFitConfig(epochs=0, reference_atom=213), eigenvectors=phi, reference=ref)
    with pytest.raises(ValueError, match="fixed_angles"):
        run_chainfit(ds, ChainFitConfig(epochs=0, fixed_angles=(500,)), eigenvectors=phi, reference=ref)
    bare = ds.subset(np.arange(len(ds)))
    bare.ground_truth = None
    with pytest.raises(ValueError, match="anchor='truth'"):
        run_chainfit(bare, ChainFitConfig(epochs=0, anchor="truth"), eigenvectors=phi, reference=ref)
