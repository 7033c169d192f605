"""Spectral stage end to end: the eigenvectors recover the true conformational parameters."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryohet.core.dataset import ParticleDataset
from napari_cryohet.stages._common import Cancelled, CancelToken
from napari_cryohet.stages.spectral import (
    SpectralConfig,
    SpectralResult,
    lowpass_densities,
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


def test_lowpass_lowers_white_noise_and_keeps_density_sums(rng):
    sigma_px = 2.0
    noise = rng.normal(0.0, 3.0, (64, 64, 64))  # variance 9, as the box-arms densities
    out = lowpass_densities(noise, sigma_px, batch_size=20)
    inner = out[:, 12:-12, 12:-12]  # away from the zero-padded edges
    expected = 9.0 / (4 * np.pi * sigma_px**2)  # white noise through a 2-D Gaussian
    assert abs(inner.var() / expected - 1) < 0.1
    yy, xx = np.mgrid[:64, :64] - 32
    blob = np.exp(-(xx**2 + yy**2) / (2 * 1.4**2))[None]  # sigma 7 A at 5 A/px
    smooth = lowpass_densities(blob, sigma_px)
    np.testing.assert_allclose(smooth.sum(), blob.sum(), rtol=1e-5)
    assert smooth.max() < blob.max()  # spread out, not rescaled
    zz, yy, xx = np.mgrid[:24, :24, :24] - 12  # 3-D volumes (voxel size apix_low) keep their sum too
    vol = np.exp(-(xx**2 + yy**2 + zz**2) / 2.0)[None].astype(np.float32)
    smooth3 = lowpass_densities(vol, 1.5)
    assert smooth3.dtype == np.float32 and abs(smooth3.sum() / vol.sum() - 1) < 1e-4
    with pytest.raises(ValueError, match="sigma"):
        lowpass_densities(noise, 0.0)
    with pytest.raises(ValueError, match="lowpass_a"):
        SpectralConfig(lowpass_a=-1.0)
    with pytest.raises(ValueError, match="order"):
        SpectralConfig(order="random")


def test_parsimonious_order_result_round_trip_and_old_files(rng, tmp_path):
    ds, t = _dumbbell_dataset(300, rng)
    config = SpectralConfig(representation="lowres_volumes", grid_size=16, noise_var=0.05, lowpass_a=4.0,
                            n_components=10, k=10, n_eigenvectors=4, order="parsimonious", n_candidates=8)
    result = run_spectral(ds, config, workspace=tmp_path)
    assert result.eigenvectors.shape == (300, 4) and result.trivial[0] and not result.trivial[1:].any()
    assert result.eigenvalue_rank[0] == 0 and result.eigenvalue_rank[1] == 1  # the path is unique
    assert np.isnan(result.harmonic_residual[0]) and result.harmonic_residual[1] == 1.0
    assert abs(_spearman(result.eigenvectors[:, 1], t)) > 0.97
    assert result.provenance["representation"]["lowpass_px"] == pytest.approx(4.0 / (4.0 * 32 / 16))
    ranks = set(result.provenance["unique_eigenvalue_ranks"])
    assert ranks <= set(result.eigenvalue_rank.tolist()) and len(result.eigenvalue_rank) == 4
    # eigenvalues follow their columns: ascending within the unique group and within the rest
    n_u = result.provenance["n_unique"]
    assert np.all(np.diff(result.eigenvalues[1:1 + n_u]) >= 0) and np.all(np.diff(result.eigenvalues[1 + n_u:]) >= 0)
    back = SpectralResult.load(tmp_path / "spectral")
    np.testing.assert_array_equal(back.eigenvalue_rank, result.eigenvalue_rank)
    np.testing.assert_array_equal(back.harmonic_residual, result.harmonic_residual)
    assert back.config == config
    # a file written before these fields existed still loads
    path = tmp_path / "spectral" / "spectral.npz"
    with np.load(path) as data:
        old = {k: data[k] for k in data.files if k not in ("eigenvalue_rank", "harmonic_residual")}
    np.savez(path, **old)
    legacy = SpectralResult.load(path)
    np.testing.assert_array_equal(legacy.eigenvalue_rank, np.arange(4))
    assert np.all(np.isnan(legacy.harmonic_residual))


BOX_ARMS_BASELINE = dict(representation="lowres_volumes", n_components=30, graph="knn",
                         weights="self_tuning", k=30, n_eigenvectors=20, seed=0)
#: best setting found (docs/spectral.md): 10 A low-pass + parsimonious order of 60 candidates
BOX_ARMS_BEST = dict(BOX_ARMS_BASELINE, lowpass_a=10.0, order="parsimonious", n_candidates=60)


@pytest.fixture(scope="module")
def box_arms_result():
    from napari_cryohet.stages.datasets import box_arms_2d

    ds = box_arms_2d(4000, seed=0)  # seed 000 §3.1: 4000 particles, 64x64 densities, noise var 9
    baseline = run_spectral(ds, SpectralConfig(**BOX_ARMS_BASELINE))
    return ds, run_spectral(ds, SpectralConfig(**BOX_ARMS_BEST)), baseline


@pytest.mark.slow
def test_box_arms_parameters_from_20_eigenvectors(box_arms_result):
    ds, result, baseline = box_arms_result
    assert result.eigenvectors.shape == (4000, 20)
    r2 = regression_r2(result.eigenvectors, ds.state_params)  # (arm1, arm2, box), 80/20 split
    assert r2[0] >= 0.9  # arm at θ_33: rotates box + second arm (117 atoms)
    assert r2[2] >= 0.9  # box angle
    # the short arm: low-pass + parsimonious order measured 0.57 vs 0.01 (raw, eigenvalue order)
    r2_base = regression_r2(baseline.eigenvectors, ds.state_params)
    assert r2[1] >= r2_base[1] + 0.4
    assert r2_base[0] >= 0.9 and r2_base[2] >= 0.9
    # columns: trivial, then the unique directions by eigenvalue, eigenvalues aligned
    assert result.eigenvalue_rank[0] == 0 and len(set(result.eigenvalue_rank.tolist())) == 20
    n_u = result.provenance["n_unique"]
    assert np.all(result.harmonic_residual[1:1 + n_u] > 0.5)
    assert np.all(np.diff(result.eigenvalue_rank[1:1 + n_u]) > 0)
    cols = particle_columns(ds)
    np.testing.assert_array_equal(cols["arm2_rad"], ds.state_params[:, 1])


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="the 16-atom arm at θ_133 changes the noisy 64x64 densities ~3x "
                   "less than the other parameters: even low-passed, with the unique eigenvectors first, "
                   "it reaches R² ≈ 0.57 from 20 eigenvectors (docs/spectral.md, 'Acceptance on the "
                   "box-arms toy')")
def test_box_arms_short_arm_from_20_eigenvectors(box_arms_result):
    ds, result, _ = box_arms_result
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
