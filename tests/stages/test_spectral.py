"""Spectral stage end to end: the eigenvectors recover the true conformational parameters."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryohet.core.dataset import ParticleDataset
from napari_cryohet.stages._common import Cancelled, CancelToken
from napari_cryohet.stages.spectral import (
    SpectralConfig,
    SpectralResult,
    particle_columns,
    regression_r2,
    run_spectral,
)


def _spearman(a, b):
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return np.corrcoef(ra, rb)[0, 1]


def _dumbbell_dataset(n, rng, d=32, apix=4.0):
    """Two 10-atom blobs whose separation t ∈ [0, 1] is the conformational coordinate."""
    t = rng.uniform(0, 1, n)
    blob = rng.normal(0, 4.0, (10, 3))
    coords = np.concatenate([blob[None] - [[20 + 20 * ti, 0, 0]] for ti in t], axis=0).reshape(n, 10, 3)
    coords = np.concatenate([coords, blob[None] + np.c_[20 + 20 * t, 0 * t, 0 * t][:, None]], axis=1)
    return ParticleDataset(
        images=np.zeros((n, d, d), np.float32), apix=apix,
        ground_truth={"coords_a": coords.astype(np.float32), "state_params": t[:, None],
                      "global/sigma_a": np.array(5.0)},
    ), t


def test_lowres_volumes_recover_a_1d_path(rng, tmp_path):
    ds, t = _dumbbell_dataset(300, rng)
    config = SpectralConfig(representation="lowres_volumes", grid_size=16, noise_var=0.05,
                            n_components=10, k=10, n_eigenvectors=4)
    result = run_spectral(ds, config, workspace=tmp_path)
    assert abs(_spearman(result.eigenvectors[:, 1], t)) > 0.97  # phi_1 orders the path
    assert result.trivial[0] and result.eigenvalues[0] < 1e-8
    assert ds.meta["spectral"] is result  # stored for the chain-fit stage
    np.testing.assert_array_equal(result.indices, np.arange(300))
    back = SpectralResult.load(tmp_path / "spectral")
    np.testing.assert_array_equal(back.eigenvectors, result.eigenvectors)
    np.testing.assert_array_equal(back.eigenvalues, result.eigenvalues)
    assert back.config == config
    assert back.provenance["representation"]["raw_dim"] == 16**3
    assert back.provenance["representation"]["noise_var"] == 0.05


def test_table_features_on_a_circle_and_subset_indices(rng):
    n = 400
    theta = rng.uniform(0, 2 * np.pi, n)
    ds = ParticleDataset(images=np.zeros((n, 8, 8), np.float32), apix=1.0)
    ds.table["cx"], ds.table["cy"] = 10 * np.cos(theta), 0.1 * np.sin(theta)  # mixed scales
    sub = ds.subset(np.arange(0, n, 2))
    cfg = SpectralConfig(representation="table", columns=("cx", "cy"), standardize=True,
                         n_components=None, k=8, n_eigenvectors=3)
    res = run_spectral(sub, cfg)
    np.testing.assert_array_equal(res.indices, np.arange(0, n, 2))
    th = theta[::2]
    r2 = regression_r2(res.eigenvectors[:, 1:3], np.c_[np.cos(th), np.sin(th)], train_fraction=0.5)
    assert np.all(r2 > 0.9)  # standardising makes both columns count
    # the same from a features array (e.g. VAE latents), with a dense Gaussian graph
    feats = np.c_[np.cos(th), np.sin(th)]
    res2 = run_spectral(sub, SpectralConfig(representation="table", graph="gaussian", n_components=None,
                                            k=25, n_eigenvectors=3), features=feats)
    assert res2.provenance["sigma_used"] > 0
    assert np.all(regression_r2(res2.eigenvectors[:, 1:3], feats, train_fraction=0.5) > 0.9)


def test_pca_images_orders_a_moving_blob(rng):
    n, d = 240, 32
    t = rng.uniform(-8, 8, n)
    yy, xx = np.mgrid[:d, :d] - d // 2
    images = np.exp(-((xx[None] - t[:, None, None]) ** 2 + yy[None] ** 2) / (2 * 3.0**2))
    images = (images + 0.05 * rng.standard_normal(images.shape)).astype(np.float32)
    ds = ParticleDataset(images=images, apix=2.0)
    res = run_spectral(ds, SpectralConfig(representation="pca_images", grid_size=16, n_components=8,
                                          k=10, n_eigenvectors=3, batch_size=64))
    assert abs(_spearman(res.eigenvectors[:, 1], t)) > 0.95


def test_cancel_and_bad_input(rng):
    ds, _ = _dumbbell_dataset(50, rng)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        run_spectral(ds, SpectralConfig(grid_size=8, batch_size=10), cancel=token)
    with pytest.raises(ValueError, match="representation"):
        SpectralConfig(representation="tsne")
    with pytest.raises(ValueError, match="graph"):
        SpectralConfig(graph="full")
    with pytest.raises(ValueError, match="columns"):
        run_spectral(ds, SpectralConfig(representation="table", columns=("nope",)))
    no_truth = ParticleDataset(images=np.zeros((20, 8, 8), np.float32), apix=1.0)
    with pytest.raises(ValueError, match="coords_a"):
        run_spectral(no_truth, SpectralConfig())
    cols = particle_columns(ds)
    assert set(cols) >= {"index", "state_params_0"} and len(cols["index"]) == 50


@pytest.fixture(scope="module")
def box_arms_result():
    from napari_cryohet.stages.datasets import box_arms_2d

    ds = box_arms_2d(4000, seed=0)  # seed 000 §3.1: 4000 particles, 64x64 densities, noise var 9
    return ds, run_spectral(ds, SpectralConfig(representation="lowres_volumes", n_components=30,
                                               graph="knn", weights="self_tuning", k=30,
                                               n_eigenvectors=20, seed=0))


@pytest.mark.slow
def test_box_arms_parameters_from_20_eigenvectors(box_arms_result):
    ds, result = box_arms_result
    assert result.eigenvectors.shape == (4000, 20)
    r2 = regression_r2(result.eigenvectors, ds.state_params)  # (arm1, arm2, box), 80/20 split
    assert r2[0] >= 0.9  # arm at θ_33: rotates box + second arm (117 atoms)
    assert r2[2] >= 0.9  # box angle
    cols = particle_columns(ds)
    np.testing.assert_array_equal(cols["arm2_rad"], ds.state_params[:, 1])


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="the 16-atom arm at θ_133 changes the noisy 64x64 densities ~3x "
                   "less than the other parameters: its first eigenfunction lies beyond the 20th "
                   "(docs/spectral.md, 'Acceptance on the box-arms toy')")
def test_box_arms_short_arm_from_20_eigenvectors(box_arms_result):
    ds, result = box_arms_result
    assert regression_r2(result.eigenvectors, ds.state_params)[1] >= 0.9


def test_cli_writes_eigenvectors_to_workspace(tmp_path, capsys):
    from napari_cryohet.cli import main

    status = main(["spectral", "--sample", "box_arms_2d", "--n-particles", "200", "--workspace",
                   str(tmp_path), "-k", "10", "--n-eigenvectors", "5", "--n-components", "10"])
    assert status == 0
    res = SpectralResult.load(tmp_path / "spectral")
    assert res.eigenvectors.shape == (200, 5) and res.config.representation == "lowres_volumes"
    np.testing.assert_allclose(res.eigenvectors.T @ res.eigenvectors, np.eye(5), atol=1e-8)
    assert "wrote" in capsys.readouterr().out
