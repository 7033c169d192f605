"""ParticleDataset / SubsetStack / CTFParams: subsets compose and read through the root."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_cryohet.core.particle_dataset import CTFParams, ParticleDataset, SubsetStack
from napari_cryohet.core.rotation import euler_to_matrix


class RecordingStack:
    """An (N, D, D) array that records which root indices were read."""

    def __init__(self, data: np.ndarray):
        self.data = data
        self.shape = data.shape
        self.dtype = data.dtype
        self.reads: list[int] = []

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        idx = np.arange(self.shape[0])[key[0]]
        self.reads.extend(np.atleast_1d(idx).tolist())
        return self.data[key]


def make_dataset(n: int = 20, d: int = 8, seed: int = 0) -> tuple[ParticleDataset, RecordingStack]:
    rng = np.random.default_rng(seed)
    stack = RecordingStack(rng.normal(size=(n, d, d)).astype(np.float32))
    euler = rng.uniform(-1, 1, (n, 3))
    ds = ParticleDataset(
        images=stack,
        apix=1.7,
        rotations=euler_to_matrix(euler).astype(np.float32),
        shifts_a=rng.normal(size=(n, 2)).astype(np.float32),
        ctf=CTFParams.constant(n, defocus_u_a=rng.uniform(1e4, 2e4, n)),
        table=pd.DataFrame({"label": [f"p{i}" for i in range(n)], "value": np.arange(n) * 1.5}),
        ground_truth={"state": np.arange(n) % 4, "global/volumes": np.zeros((2, d, d, d))},
    )
    return ds, stack


def test_subset_of_subset_equals_direct_subset():
    ds, stack = make_dataset()
    a = np.array([19, 3, 7, 11, 0, 5, 14])
    b = np.array([4, 0, 6, 2])
    two = ds.subset(a).subset(b)
    direct = ds.subset(a[b])
    np.testing.assert_array_equal(two.indices, a[b])
    np.testing.assert_array_equal(two.indices, direct.indices)
    np.testing.assert_array_equal(two.rotations, ds.rotations[a[b]])
    np.testing.assert_array_equal(two.shifts_a, direct.shifts_a)
    np.testing.assert_array_equal(two.ctf.defocus_u_a, ds.ctf.defocus_u_a[a[b]])
    pd.testing.assert_frame_equal(two.table, direct.table)
    assert list(two.table["label"]) == [f"p{i}" for i in a[b]]
    np.testing.assert_array_equal(two.ground_truth["state"], (a[b]) % 4)
    assert two.ground_truth["global/volumes"].shape == (2, 8, 8, 8)
    # images: same values, and the view points at the root stack (no chain of views).
    assert isinstance(two.images, SubsetStack) and two.images.base is stack
    stack.reads.clear()
    np.testing.assert_array_equal(two.get_images(np.arange(4)), stack.data[a[b]])
    assert sorted(stack.reads) == sorted(a[b].tolist())


def test_subset_reads_nothing_until_indexed_and_supports_numpy_keys():
    ds, stack = make_dataset()
    sub = ds.subset(np.arange(20) % 2 == 0)  # boolean mask
    assert len(sub) == 10 and stack.reads == []
    np.testing.assert_array_equal(sub.images[3], stack.data[6])
    np.testing.assert_array_equal(sub.images[1:3, 2:4], stack.data[[2, 4], 2:4])
    np.testing.assert_array_equal(np.asarray(sub.images), stack.data[::2])
    assert sub.images.shape == (10, 8, 8) and sub.images.ndim == 3


def test_subset_bounds_are_checked_and_negative_positions_normalised():
    ds, stack = make_dataset()
    with pytest.raises(IndexError):
        ds.subset([0, 20])
    sub = ds.subset([-1, 2])
    np.testing.assert_array_equal(sub.indices, [19, 2])
    np.testing.assert_array_equal(sub.images.indices, [19, 2])
    np.testing.assert_array_equal(sub.images[0], stack.data[19])


def test_dataset_rejects_inconsistent_lengths():
    ds, stack = make_dataset()
    with pytest.raises(ValueError, match="rotations"):
        ParticleDataset(images=stack, apix=1.0, rotations=ds.rotations[:5])


def test_ctfparams_constant_subset_and_torch():
    ctf = CTFParams.constant(5, defocus_u_a=np.arange(5) * 1000.0, voltage_kv=200.0)
    np.testing.assert_array_equal(ctf.defocus_v_a, ctf.defocus_u_a)
    sub = ctf.subset(np.array([4, 1]))
    assert len(sub) == 2 and sub.defocus_u_a.tolist() == [4000.0, 1000.0]
    t = ctf.to_torch(indices=np.array([2]))
    assert set(t) == {"defocus_u_a", "defocus_v_a", "defocus_angle_rad", "voltage_kv", "cs_mm",
                      "amplitude_contrast", "phase_shift_rad", "bfactor_a2"}
    assert float(t["voltage_kv"][0]) == 200.0
