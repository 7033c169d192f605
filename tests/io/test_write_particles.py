"""write_dataset_star / save_dataset: exact round trips through load_dataset."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_cryohet.core.particle_dataset import CTFParams, ParticleDataset
from napari_cryohet.core.rotation import euler_to_matrix
from napari_cryohet.io.load_particles import load_dataset
from napari_cryohet.io.star import read_star
from napari_cryohet.io.write_particles import save_dataset, write_dataset_star


def test_star_dataset_star_keeps_every_value(tmp_path, star31):
    original = read_star(star31.path)
    ds = load_dataset(star31.path)
    out = write_dataset_star(tmp_path / "copy.star", ds)
    back = read_star(out)
    pd.testing.assert_frame_equal(back.particles, original.particles, check_exact=True)
    pd.testing.assert_frame_equal(back.optics, original.optics, check_exact=True)


@pytest.mark.parametrize("relion31", [True, False])
def test_subset_written_back_keeps_rows_and_columns(tmp_path, star_maker, relion31):
    case = star_maker(tmp_path, n=14, relion31=relion31)
    original = read_star(case.path)
    ds = load_dataset(case.path)
    idx = np.array([9, 2, 13, 4])
    sub = ds.subset(np.arange(14)[::-1]).subset(13 - idx)  # composed subset == ds.subset(idx)
    out = write_dataset_star(tmp_path / "subset.star", sub)
    back = read_star(out)
    pd.testing.assert_frame_equal(back.particles, original.particles.iloc[idx].reset_index(drop=True),
                                  check_exact=True)
    if relion31:
        pd.testing.assert_frame_equal(back.optics, original.optics, check_exact=True)
    again = load_dataset(out)
    np.testing.assert_array_equal(np.asarray(again.images), case.images[idx])
    np.testing.assert_allclose(again.rotations, ds.rotations[idx])


def test_subset_written_elsewhere_rewrites_only_the_stack_path(tmp_path, star31):
    other = tmp_path.parent / f"{tmp_path.name}_out" / "deep" / "er"
    ds = load_dataset(star31.path)
    out = write_dataset_star(other / "s.star", ds.subset([1, 0]))
    original = read_star(star31.path).particles.iloc[[1, 0]].reset_index(drop=True)
    back = read_star(out).particles
    pd.testing.assert_frame_equal(back.drop(columns="rlnImageName"), original.drop(columns="rlnImageName"),
                                  check_exact=True)
    assert [n.split("@")[0] for n in back["rlnImageName"]] == [n.split("@")[0] for n in original["rlnImageName"]]
    np.testing.assert_array_equal(np.asarray(load_dataset(out).images), star31.images[[1, 0]])
    kept = write_dataset_star(other / "k.star", ds.subset([1, 0]), image_paths="keep")
    assert list(read_star(kept).particles["rlnImageName"]) == list(original["rlnImageName"])


def test_update_poses_rewrites_pose_columns_only(tmp_path, star31):
    ds = load_dataset(star31.path)
    ds.shifts_a = ds.shifts_a + np.float32(1.0)
    out = write_dataset_star(tmp_path / "u.star", ds, update=("poses",))
    back, original = read_star(out).particles, read_star(star31.path).particles
    np.testing.assert_allclose(back["rlnOriginXAngst"], original["rlnOriginXAngst"] + 1, atol=1e-5)
    pd.testing.assert_series_equal(back["rlnDefocusU"], original["rlnDefocusU"], check_exact=True)
    np.testing.assert_allclose(load_dataset(out).rotations, ds.rotations, atol=1e-5)


def _synthetic(n=9, d=12):
    rng = np.random.default_rng(5)
    euler = np.stack([rng.uniform(-3, 3, n), rng.uniform(0.1, 3, n), rng.uniform(-3, 3, n)], -1)
    ctf = CTFParams.constant(n, defocus_u_a=rng.uniform(1e4, 2e4, n), defocus_v_a=rng.uniform(1e4, 2e4, n),
                             defocus_angle_rad=rng.uniform(-1, 1, n), voltage_kv=300.0,
                             phase_shift_rad=0.3, bfactor_a2=40.0)
    ctf.voltage_kv[::3] = 200.0  # two optics groups
    return ParticleDataset(images=rng.normal(size=(n, d, d)).astype(np.float32), apix=1.9,
                           rotations=euler_to_matrix(euler).astype(np.float32),
                           shifts_a=rng.normal(0, 3, (n, 2)).astype(np.float32), ctf=ctf,
                           ground_truth={"state": np.arange(n) % 3, "global/noise_var": np.array(2.0)})


def test_synthetic_dataset_star_round_trip(tmp_path):
    ds = _synthetic()
    out = write_dataset_star(tmp_path / "syn.star", ds.subset([8, 1, 3]))  # also writes syn.mrcs
    t = read_star(out)
    assert len(t.optics) == 2 and set(t.optics["rlnVoltage"]) == {200.0, 300.0}
    assert list(t.particles["rlnImageName"]) == ["000001@syn.mrcs", "000002@syn.mrcs", "000003@syn.mrcs"]
    back = load_dataset(out, require=("poses", "ctf"))
    idx = [8, 1, 3]
    assert back.apix == pytest.approx(1.9)
    np.testing.assert_allclose(back.rotations, ds.rotations[idx], atol=1e-5)
    np.testing.assert_allclose(back.shifts_a, ds.shifts_a[idx], atol=1e-5)
    for name, value in ds.ctf.subset(idx).as_dict().items():
        np.testing.assert_allclose(getattr(back.ctf, name), value, rtol=1e-9, atol=1e-9, err_msg=name)
    np.testing.assert_array_equal(np.asarray(back.images), ds.images[idx])


def test_save_dataset_writes_everything_and_loads_back(tmp_path):
    ds = _synthetic()
    paths = save_dataset(tmp_path / "ws", ds.subset(np.arange(1, 9)), name="toy")
    assert set(paths) == {"stack", "star", "poses", "ctf", "truth"} and all(p.is_file() for p in paths.values())
    from_star = load_dataset(paths["star"])
    np.testing.assert_array_equal(from_star.ground_truth["state"], np.arange(1, 9) % 3)
    assert float(from_star.ground_truth["global/noise_var"]) == 2.0
    from_pkl = load_dataset(paths["stack"], poses=paths["poses"], ctf=paths["ctf"])
    np.testing.assert_allclose(from_pkl.rotations, from_star.rotations, atol=1e-5)
    np.testing.assert_allclose(from_pkl.shifts_a, from_star.shifts_a, atol=1e-4)
    np.testing.assert_array_equal(from_pkl.images[2], ds.images[3])
    assert from_pkl.apix == pytest.approx(1.9)


def test_mrcs_backed_subset_references_its_stack(tmp_path, mrcs_writer):
    data = np.random.default_rng(0).normal(size=(6, 8, 8)).astype(np.float32)
    stack = mrcs_writer(tmp_path / "data" / "s.mrcs" if (tmp_path / "data").mkdir() is None else None, data, 2.0)
    ds = load_dataset(stack)
    out = write_dataset_star(tmp_path / "o.star", ds.subset([5, 2]))
    assert list(read_star(out).particles["rlnImageName"]) == ["000006@data/s.mrcs", "000003@data/s.mrcs"]
    assert not (tmp_path / "o.mrcs").exists()
    np.testing.assert_array_equal(np.asarray(load_dataset(out).images), data[[5, 2]])
