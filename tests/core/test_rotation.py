"""RELION ZYZ Euler angles ⇄ rotation matrices, against RELION's published definition.

The expected matrices are typed by hand from the formula of RELION's
``Euler_angles2matrix`` (src/euler.cpp; Heymann, Chagoyen & Belnap 2005, JSB 151:196):

    A = [[ cg·cb·ca − sg·sa,   cg·cb·sa + sg·ca,  −cg·sb],
         [−sg·cb·ca − cg·sa,  −sg·cb·sa + cg·ca,   sg·sb],
         [ sb·ca,              sb·sa,              cb   ]]

with (a, b, g) = (rot, tilt, psi), c = cos, s = sin — never from the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.spatial.transform import Rotation

from napari_cryohet.core.rotation import euler_to_matrix, matrix_to_euler, random_rotations

S3 = np.sqrt(3.0)

# (rot, tilt, psi) in degrees → matrix typed from the formula above.
KNOWN = [
    ((0, 0, 0), np.eye(3)),
    # rot = 90: a passive rotation about z; ca=0, sa=1, cb=1, sb=0, cg=1, sg=0.
    ((90, 0, 0), [[0, 1, 0], [-1, 0, 0], [0, 0, 1]]),
    # tilt = 90: ca=1, sa=0, cb=0, sb=1, cg=1, sg=0.
    ((0, 90, 0), [[0, 0, -1], [0, 1, 0], [1, 0, 0]]),
    # psi = 90: ca=1, sa=0, cb=1, sb=0, cg=0, sg=1.
    ((0, 0, 90), [[0, 1, 0], [-1, 0, 0], [0, 0, 1]]),
    # (30, 60, 90): ca=√3/2, sa=1/2, cb=1/2, sb=√3/2, cg=0, sg=1.
    ((30, 60, 90), [[-1 / 2, S3 / 2, 0], [-S3 / 4, -1 / 4, S3 / 2], [3 / 4, S3 / 4, 1 / 2]]),
    # (90, 90, 90): ca=0, sa=1, cb=0, sb=1, cg=0, sg=1.
    ((90, 90, 90), [[-1, 0, 0], [0, 0, 1], [0, 1, 0]]),
    # gimbal lock tilt = 0: only rot + psi = 60 matters → passive z rotation by 60°.
    ((20, 0, 40), [[1 / 2, S3 / 2, 0], [-S3 / 2, 1 / 2, 0], [0, 0, 1]]),
    # gimbal lock tilt = 180 with rot = 30, psi = 0: cb=-1, sb=0, cg=1, sg=0.
    ((30, 180, 0), [[-S3 / 2, -1 / 2, 0], [-1 / 2, S3 / 2, 0], [0, 0, -1]]),
    # tilt = 180 with rot = 0, psi = 30: cb=-1, sb=0, ca=1, sa=0, cg=√3/2, sg=1/2.
    ((0, 180, 30), [[-S3 / 2, 1 / 2, 0], [1 / 2, S3 / 2, 0], [0, 0, -1]]),
]

# RELION's Euler_matrix2angles puts all in-plane rotation into psi at the gimbal lock.
CANONICAL = {(90, 0, 0): (0, 0, 90), (20, 0, 40): (0, 0, 60), (30, 180, 0): (0, 180, -30), (0, 180, 30): (0, 180, 30)}


@pytest.mark.parametrize(("angles_deg", "expected"), KNOWN)
def test_euler_to_matrix_matches_relion_table(angles_deg, expected):
    got = euler_to_matrix(np.deg2rad(np.array(angles_deg, dtype=np.float64)))
    np.testing.assert_allclose(got, np.array(expected, dtype=np.float64), atol=1e-12)


@pytest.mark.parametrize(("angles_deg", "expected"), KNOWN)
def test_matrix_to_euler_recovers_relion_angles(angles_deg, expected):
    back = np.rad2deg(matrix_to_euler(np.array(expected, dtype=np.float64)))
    want = CANONICAL.get(angles_deg, angles_deg)
    np.testing.assert_allclose(back, want, atol=1e-9)


def test_matches_scipy_intrinsic_zyz_transposed():
    """Independent oracle: RELION's passive ZYZ = (active intrinsic ZYZ)ᵀ."""
    rng = np.random.default_rng(0)
    euler = np.stack([rng.uniform(-np.pi, np.pi, 200), rng.uniform(0, np.pi, 200),
                      rng.uniform(-np.pi, np.pi, 200)], -1)
    want = Rotation.from_euler("ZYZ", euler).as_matrix().transpose(0, 2, 1)
    np.testing.assert_allclose(euler_to_matrix(euler), want, atol=1e-12)


def test_torch_and_numpy_agree_with_batch_dims():
    euler = np.random.default_rng(1).uniform(-3, 3, (4, 5, 3))
    mat_np = euler_to_matrix(euler)
    mat_t = euler_to_matrix(torch.as_tensor(euler))
    assert mat_np.shape == (4, 5, 3, 3)
    np.testing.assert_allclose(mat_t.numpy(), mat_np, atol=1e-12)
    back = matrix_to_euler(torch.as_tensor(mat_np))
    assert isinstance(back, torch.Tensor)
    np.testing.assert_allclose(euler_to_matrix(back.numpy()), mat_np, atol=1e-10)


angle = st.floats(-np.pi, np.pi, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(rot=angle, tilt=st.floats(0, np.pi), psi=angle)
def test_property_orthonormal_det1_and_round_trip(rot, tilt, psi):
    r = euler_to_matrix(np.array([rot, tilt, psi]))
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0, abs=1e-12)
    # matrix → angles → matrix is exact for every rotation (angles may differ at the lock).
    np.testing.assert_allclose(euler_to_matrix(matrix_to_euler(r)), r, atol=1e-9)


@settings(max_examples=200, deadline=None)
@given(rot=st.floats(-3.1, 3.1), tilt=st.floats(0.01, np.pi - 0.01), psi=st.floats(-3.1, 3.1))
def test_property_angles_round_trip_away_from_lock(rot, tilt, psi):
    back = matrix_to_euler(euler_to_matrix(np.array([rot, tilt, psi])))
    np.testing.assert_allclose(back, [rot, tilt, psi], atol=1e-7)


def test_matrix_to_euler_ranges():
    rots = random_rotations(500, generator=torch.Generator().manual_seed(3), dtype=torch.float64).numpy()
    e = matrix_to_euler(rots)
    assert (e[:, 1] >= 0).all() and (e[:, 1] <= np.pi).all()
    assert (np.abs(e[:, [0, 2]]) <= np.pi + 1e-12).all()


def test_random_rotations_are_uniform_on_so3():
    n = 20000
    r = random_rotations(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64).numpy()
    np.testing.assert_allclose(r @ r.transpose(0, 2, 1), np.broadcast_to(np.eye(3), r.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-12)
    # Haar measure: E[R] = 0 (each entry has variance 1/3 → std of the mean ≈ 0.004).
    assert np.abs(r.mean(0)).max() < 0.02
    # The image of a fixed axis is uniform on the sphere: R[2, 2] ~ U[-1, 1] (Archimedes).
    assert stats.kstest(r[:, 2, 2], stats.uniform(loc=-1, scale=2).cdf).pvalue > 1e-3
    # Uniform Euler angles would fail this: tilt = arccos(R22) must follow sin(tilt)/2.
    tilt = matrix_to_euler(r)[:, 1]
    assert stats.kstest(tilt, lambda t: (1 - np.cos(t)) / 2).pvalue > 1e-3
