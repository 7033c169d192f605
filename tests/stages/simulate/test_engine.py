"""The simulator: SNR calibration, uniform poses, reproducibility, shifts, writing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from napari_cryohet.core.atoms import gaussian_density_3d
from napari_cryohet.stages._common import Cancelled, CancelToken
from napari_cryohet.stages.simulate.engine import (
    AtomicModel,
    SimulationConfig,
    VolumeModel,
    measured_snr,
    save_simulation,
    simulate,
)


def _blob_model(n: int, rng: np.random.Generator, m: int = 12, spread_a: float = 8.0) -> AtomicModel:
    atoms = (rng.normal(0.0, spread_a, (1, m, 3))).astype(np.float32)
    return AtomicModel(atoms, sigma_a=3.0, conformation=np.zeros(n, dtype=np.int64))


@pytest.mark.parametrize("snr", [1.0, 0.1, 0.01])
def test_measured_snr_within_5_percent(snr, rng):
    model = _blob_model(48, rng)
    ds = simulate(model, SimulationConfig(box_size=32, apix=2.0, snr=snr, seed=3))
    assert measured_snr(ds) == pytest.approx(snr, rel=0.05)
    truth = ds.ground_truth
    assert truth["global/noise_var"] == pytest.approx(truth["global/signal_var"] / snr, rel=1e-9)
    assert truth["global/signal_var"] == pytest.approx(np.var(truth["clean_images"].astype(np.float64)), rel=1e-6)


def test_two_pass_equals_kept_clean(rng):
    """Not keeping the clean images (two passes) gives the very same stack."""
    model = _blob_model(20, rng)
    kept = simulate(model, SimulationConfig(box_size=32, snr=0.2, seed=5))
    lean = simulate(model, SimulationConfig(box_size=32, snr=0.2, seed=5, keep_clean_images=False, batch_size=7))
    assert "clean_images" not in lean.ground_truth
    np.testing.assert_allclose(lean.images, kept.images, rtol=0, atol=1e-5)


def test_poses_uniform_on_so3(rng):
    """Viewing direction z-component uniform on [-1, 1] and psi uniform (KS): Haar measure."""
    model = _blob_model(1500, rng, m=1)
    ds = simulate(model, SimulationConfig(box_size=8, snr=None, apply_ctf=False, seed=11, batch_size=1500))
    rot = ds.rotations.astype(np.float64)
    np.testing.assert_allclose(rot @ rot.transpose(0, 2, 1), np.broadcast_to(np.eye(3), rot.shape), atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-5)
    cos_tilt = rot[:, 2, 2]  # z-component of the viewing direction Rᵀ e_z
    assert stats.kstest(cos_tilt, stats.uniform(loc=-1, scale=2).cdf).pvalue > 0.01
    psi = np.arctan2(rot[:, 1, 2], -rot[:, 0, 2])
    assert stats.kstest(psi, stats.uniform(loc=-np.pi, scale=2 * np.pi).cdf).pvalue > 0.01
    # uniform Euler angles would fail: their cos(tilt) piles up at ±1
    bad = np.cos(np.random.default_rng(0).uniform(0, np.pi, 1500))
    assert stats.kstest(bad, stats.uniform(loc=-1, scale=2).cdf).pvalue < 0.01


def test_reproducible_from_seed_and_batch_independent(rng):
    model = _blob_model(30, rng)
    cfg = dict(box_size=32, snr=0.1, shift_std_a=2.0, astigmatism_a=300.0)
    a = simulate(model, SimulationConfig(seed=1, batch_size=30, **cfg))
    b = simulate(model, SimulationConfig(seed=1, batch_size=4, **cfg))
    c = simulate(model, SimulationConfig(seed=2, batch_size=30, **cfg))
    np.testing.assert_allclose(a.images, b.images, atol=1e-5)
    np.testing.assert_array_equal(a.rotations, b.rotations)
    np.testing.assert_array_equal(a.ctf.defocus_u_a, b.ctf.defocus_u_a)
    assert not np.allclose(a.images, c.images)
    assert not np.allclose(a.rotations, c.rotations)


def test_defocus_from_set_and_range(rng):
    model = _blob_model(200, rng, m=1)
    values = (15000.0, 20000.0, 25000.0)
    ds = simulate(model, SimulationConfig(box_size=8, snr=None, defocus_values_a=values, seed=0))
    assert set(np.unique(ds.ctf.defocus_u_a)) == set(values)
    ds = simulate(model, SimulationConfig(box_size=8, snr=None, defocus_range_a=(2000.0, 20000.0), seed=0))
    assert ds.ctf.defocus_u_a.min() >= 2000.0 and ds.ctf.defocus_u_a.max() <= 20000.0
    np.testing.assert_array_equal(ds.ctf.defocus_u_a, ds.ctf.defocus_v_a)


def test_shift_moves_particle_to_centre_minus_shift():
    """A single atom at the origin appears at image centre − shifts_a (RELION origin)."""
    n, d, apix = 40, 48, 2.0
    model = AtomicModel(np.zeros((1, 1, 3), np.float32), sigma_a=3.0, conformation=np.zeros(n, dtype=np.int64))
    ds = simulate(model, SimulationConfig(box_size=d, apix=apix, snr=None, apply_ctf=False, shift_std_a=6.0, seed=4))
    assert np.std(ds.shifts_a) == pytest.approx(6.0, rel=0.3)
    img = ds.images.astype(np.float64)
    grid = (np.arange(d) - d // 2) * apix
    mass = img.sum((1, 2))
    np.testing.assert_allclose(mass, 1.0, atol=1e-4)  # pixel sum = atom weight
    x = (img.sum(1) * grid).sum(1) / mass
    y = (img.sum(2) * grid).sum(1) / mass
    np.testing.assert_allclose(np.column_stack([x, y]), -ds.shifts_a, atol=0.05)


def test_volume_model_matches_atomic_model(rng):
    """Fourier-slice projection of the Gaussian-atom volume ≈ the analytic projection."""
    n, d, apix, sigma = 12, 32, 2.0, 3.0
    atoms = rng.normal(0.0, 7.0, (1, 20, 3)).astype(np.float32)
    vol = gaussian_density_3d(torch.as_tensor(atoms[0]), d=d, apix=apix, sigma_a=sigma).numpy()
    cfg = SimulationConfig(box_size=d, apix=apix, snr=None, seed=9)
    a = simulate(AtomicModel(atoms, sigma, conformation=np.zeros(n, dtype=np.int64)), cfg)
    v = simulate(VolumeModel(vol[None], np.zeros(n, dtype=np.int64)), cfg)
    err = np.linalg.norm(v.images - a.images) / np.linalg.norm(a.images)
    assert err < 0.05
    assert v.ground_truth["global/volumes"].shape == (1, d, d, d)


def test_progress_and_cancel(rng):
    model = _blob_model(20, rng)
    seen = []
    simulate(model, SimulationConfig(box_size=16, batch_size=5), progress=lambda f, msg: seen.append(f))
    assert seen[-1] == 1.0 and all(0 <= f <= 1 for f in seen) and len(seen) >= 4
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        simulate(model, SimulationConfig(box_size=16), cancel=token)


@pytest.mark.parametrize("bad", [dict(box_size=31), dict(apix=0.0), dict(snr=-1.0), dict(defocus_range_a=(0.0, 1.0)),
                                 dict(defocus_values_a=()), dict(shift_std_a=-1.0), dict(batch_size=0)])
def test_bad_config_raises(bad):
    with pytest.raises(ValueError):
        SimulationConfig(**bad)


def test_bad_model_raises():
    with pytest.raises(ValueError, match="coords_a"):
        AtomicModel(np.zeros((4, 3)), 3.0)
    with pytest.raises(ValueError, match="conformation"):
        AtomicModel(np.zeros((2, 4, 3)), 3.0, conformation=np.array([0, 2]))
    with pytest.raises(ValueError, match="weights"):
        AtomicModel(np.zeros((2, 4, 3)), 3.0, weights=np.ones(5))


def test_write_then_load_round_trip(tmp_path, rng):
    from napari_cryohet.io.load_particles import load_dataset

    model = _blob_model(10, rng)
    ds = simulate(model, SimulationConfig(box_size=32, apix=1.5, snr=0.5, shift_std_a=2.0, astigmatism_a=400.0,
                                          seed=2))
    paths = save_simulation(tmp_path, ds, name="sim")
    assert {"stack", "star", "poses", "ctf", "truth"} <= set(paths)
    for loaded in (load_dataset(paths["star"]),
                   load_dataset(paths["stack"], poses=paths["poses"], ctf=paths["ctf"])):
        assert loaded.apix == pytest.approx(1.5)
        np.testing.assert_allclose(loaded.get_images(slice(None)), ds.images, atol=1e-6)
        np.testing.assert_allclose(loaded.rotations, ds.rotations, atol=1e-4)
        np.testing.assert_allclose(loaded.shifts_a, ds.shifts_a, atol=1e-4)
        for field in ("defocus_u_a", "defocus_v_a", "voltage_kv", "cs_mm", "amplitude_contrast"):
            np.testing.assert_allclose(getattr(loaded.ctf, field), getattr(ds.ctf, field), rtol=1e-5)
        np.testing.assert_allclose(np.cos(2 * loaded.ctf.defocus_angle_rad), np.cos(2 * ds.ctf.defocus_angle_rad),
                                   atol=1e-4)
    truth = load_dataset(paths["star"]).ground_truth
    np.testing.assert_allclose(truth["clean_images"], ds.ground_truth["clean_images"])
    np.testing.assert_allclose(truth["coords_a"], ds.ground_truth["coords_a"])
    assert float(truth["global/snr"]) == 0.5


def test_cli_simulate_writes_a_loadable_dataset(tmp_path):
    from napari_cryohet.cli import main
    from napari_cryohet.io.load_particles import load_dataset

    out = tmp_path / "cat"
    assert main(["simulate", "cat", "--n", "6", "--box-size", "32", "--apix", "5", "--snr", "0.5",
                 "--out", str(out)]) == 0
    ds = load_dataset(out / "cat.star")
    assert ds.images.shape == (6, 32, 32) and ds.apix == pytest.approx(5.0)
    assert ds.ground_truth["state"].shape == (6, 1)
    assert float(ds.ground_truth["global/snr"]) == 0.5
    assert main(["simulate", "box_arms_2d", "--n", "5", "--out", str(tmp_path / "box")]) == 0
    from napari_cryohet.stages.simulate.box_arms import Toy2DDataset

    assert len(Toy2DDataset.load(tmp_path / "box" / "box_arms_2d.npz")) == 5
    assert main(["simulate", "box_arms_2d", "--n", "3", "--low-dim-frame", "anchor", "--out", str(tmp_path / "box"),
                 "--name", "anchor"]) == 0
    anchor = Toy2DDataset.load(tmp_path / "box" / "anchor.npz")
    assert anchor.low_dim_frame == "anchor"
    np.testing.assert_array_equal(anchor.low_dim_coords(), anchor.coords)
    assert main(["simulate", "cat", "--n", "2", "--noise-var", "3", "--out", str(tmp_path / "bad")]) == 2
