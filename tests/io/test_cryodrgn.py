"""cryoDRGN pickles: convention pinned to cryoDRGN's formula; pkl ↔ star poses agree."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from napari_cryohet.core.particle_dataset import CTFParams
from napari_cryohet.core.rotation import euler_to_matrix
from napari_cryohet.io.cryodrgn import read_ctf_pkl, read_poses_pkl, write_ctf_pkl, write_poses_pkl
from napari_cryohet.io.errors import CorruptFileError
from napari_cryohet.io.load_particles import load_dataset


def cryodrgn_r_from_relion(rot_deg: float, tilt_deg: float, psi_deg: float) -> np.ndarray:
    """cryoDRGN's ``utils.R_from_relion`` as published (active z rotations, then sign flips)."""
    a, b, y = np.deg2rad([rot_deg, tilt_deg, psi_deg])
    ra = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rb = np.array([[np.cos(b), 0, -np.sin(b)], [0, 1, 0], [np.sin(b), 0, np.cos(b)]])
    ry = np.array([[np.cos(y), -np.sin(y), 0], [np.sin(y), np.cos(y), 0], [0, 0, 1]])
    r = ry @ rb @ ra
    r[0, 1] *= -1
    r[1, 0] *= -1
    r[1, 2] *= -1
    r[2, 1] *= -1
    return r


def test_cryodrgn_rotation_convention_is_relions_matrix():
    rng = np.random.default_rng(0)
    euler = np.stack([rng.uniform(-180, 180, 50), rng.uniform(0, 180, 50), rng.uniform(-180, 180, 50)], -1)
    ours = euler_to_matrix(np.deg2rad(euler))
    theirs = np.stack([cryodrgn_r_from_relion(*e) for e in euler])
    np.testing.assert_allclose(ours, theirs, atol=1e-12)


def test_pose_pickle_round_trip_and_layout(tmp_path):
    rng = np.random.default_rng(1)
    rot = euler_to_matrix(rng.uniform(-1, 1, (6, 3)))
    shifts = rng.normal(0, 5, (6, 2))
    write_poses_pkl(tmp_path / "p.pkl", rot, shifts, box_size=64, apix=1.5)
    with open(tmp_path / "p.pkl", "rb") as f:
        raw_rot, raw_trans = pickle.load(f)
    np.testing.assert_allclose(raw_trans, shifts / (64 * 1.5), rtol=1e-12)  # box fraction, same sign
    np.testing.assert_allclose(raw_rot, rot, atol=1e-12)
    got_rot, got_shifts = read_poses_pkl(tmp_path / "p.pkl", box_size=64, apix=1.5)
    np.testing.assert_allclose(got_rot, rot, atol=1e-6)
    np.testing.assert_allclose(got_shifts, shifts, atol=1e-5)


def test_rotation_only_pickle_gives_zero_shifts(tmp_path):
    rot = euler_to_matrix(np.zeros((3, 3)))
    with open(tmp_path / "r.pkl", "wb") as f:
        pickle.dump(rot, f)
    r, s = read_poses_pkl(tmp_path / "r.pkl", box_size=32, apix=1.0)
    assert r.shape == (3, 3, 3) and np.all(s == 0)


@pytest.mark.parametrize("relion31", [True, False])
def test_pose_pickle_agrees_with_star(tmp_path, star_maker, relion31):
    case = star_maker(tmp_path, n=10, d=16, apix=2.5, relion31=relion31)
    from_star = load_dataset(case.path)
    pkl = write_poses_pkl(tmp_path / "poses.pkl", from_star.rotations, from_star.shifts_a,
                          box_size=16, apix=2.5)
    with open(pkl, "rb") as f:
        raw_rot, raw_trans = pickle.load(f)
    # rotations: cryoDRGN's formula applied to the star's angles
    want_rot = np.stack([cryodrgn_r_from_relion(*e) for e in case.euler_deg])
    np.testing.assert_allclose(raw_rot, want_rot, atol=1e-6)
    # translations: star origin in Å → px (÷ apix) → box fraction (÷ D)
    origin_px = case.shifts_a / 2.5
    np.testing.assert_allclose(raw_trans * 16, origin_px, atol=1e-6)
    # and a stack + pickle dataset matches the star dataset particle by particle
    stack_path = tmp_path / case.stack_names[0]
    from_pkl_rot, from_pkl_shifts = read_poses_pkl(pkl, box_size=16, apix=2.5)
    np.testing.assert_allclose(from_pkl_rot, from_star.rotations, atol=1e-6)
    np.testing.assert_allclose(from_pkl_shifts, case.shifts_a, atol=1e-5)
    assert stack_path.is_file()


def test_ctf_pickle_round_trip_and_columns(tmp_path):
    n = 5
    ctf = CTFParams.constant(n, defocus_u_a=np.linspace(1e4, 2e4, n), defocus_v_a=np.linspace(9e3, 1.9e4, n),
                             defocus_angle_rad=np.deg2rad(np.linspace(-40, 40, n)), voltage_kv=200.0, cs_mm=2.0,
                             amplitude_contrast=0.07, phase_shift_rad=np.deg2rad(30.0))
    write_ctf_pkl(tmp_path / "c.pkl", ctf, box_size=48, apix=1.1)
    with open(tmp_path / "c.pkl", "rb") as f:
        raw = pickle.load(f)
    assert raw.shape == (n, 9) and raw.dtype == np.float32
    np.testing.assert_allclose(raw[0], [48, 1.1, 1e4, 9e3, -40, 200, 2.0, 0.07, 30], rtol=1e-6)
    back, d, apix = read_ctf_pkl(tmp_path / "c.pkl")
    assert d == 48 and apix == pytest.approx(1.1)
    for name, value in ctf.as_dict().items():
        np.testing.assert_allclose(getattr(back, name), value, rtol=1e-6, atol=1e-6, err_msg=name)


def test_ctf_pickle_nan_phase_shift_and_named_nan_columns(tmp_path):
    """cryoDRGN 4.3 writes NaN phase shifts when the .star has no rlnPhaseShift: read as 0° with a
    warning; a NaN anywhere else is refused, naming the column and the first particle."""
    row = [64, 1.5, 1.5e4, 1.4e4, 10.0, 300.0, 2.7, 0.1, np.nan]
    arr = np.array([row] * 4, dtype=np.float32)
    with open(tmp_path / "nan_phase.pkl", "wb") as f:
        pickle.dump(arr, f)
    with pytest.warns(UserWarning, match=r"phase shift\) is NaN for every particle.*read as 0°"):
        ctf, d, apix = read_ctf_pkl(tmp_path / "nan_phase.pkl")
    assert d == 64 and np.all(ctf.phase_shift_rad == 0.0) and np.all(ctf.voltage_kv == 300.0)
    bad = arr.copy()
    bad[:, 8] = 0.0
    bad[2, 3] = np.nan
    with open(tmp_path / "nan_defocus.pkl", "wb") as f:
        pickle.dump(bad, f)
    with pytest.raises(CorruptFileError, match=r"column 3 \(defocus_v_a\), first at particle 2") as err:
        read_ctf_pkl(tmp_path / "nan_defocus.pkl")
    assert "nan_defocus.pkl" in str(err.value)


def test_stack_with_pickles_matches_star_dataset(tmp_path, star_maker, mrcs_writer):
    case = star_maker(tmp_path, n=8, d=16)
    ds = load_dataset(case.path)
    stack = mrcs_writer(tmp_path / "flat.mrcs", case.images)  # no voxel size in the header
    write_poses_pkl(tmp_path / "p.pkl", ds.rotations, ds.shifts_a, box_size=16, apix=ds.apix)
    write_ctf_pkl(tmp_path / "c.pkl", ds.ctf, box_size=16, apix=ds.apix)
    ds2 = load_dataset(stack, poses=tmp_path / "p.pkl", ctf=tmp_path / "c.pkl", require=("poses", "ctf"))
    assert ds2.apix == pytest.approx(ds.apix)  # taken from the CTF pickle
    np.testing.assert_allclose(ds2.rotations, ds.rotations, atol=1e-6)
    np.testing.assert_allclose(ds2.shifts_a, ds.shifts_a, atol=1e-4)
    np.testing.assert_allclose(ds2.ctf.defocus_u_a, ds.ctf.defocus_u_a, rtol=1e-6)
    np.testing.assert_allclose(ds2.ctf.voltage_kv, case.voltage)
    np.testing.assert_array_equal(ds2.get_images([3, 0]), case.images[[3, 0]])
