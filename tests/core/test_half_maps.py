"""Gold-standard half sets and half-map reconstruction."""

import numpy as np
import pytest
import torch

from napari_cryohet.core.atoms import gaussian_density_3d
from napari_cryohet.core.fsc import fourier_shell_correlation
from napari_cryohet.core.half_maps import (
    HalfSetError,
    assign_half_sets,
    reconstruct_half_maps,
)
from napari_cryohet.core.projection import apply_ctf_and_shift, project_gaussian_atoms
from napari_cryohet.core.reconstruct import backproject_images, volume_from_sums
from napari_cryohet.core.rotation import random_rotations

D, APIX, SIGMA, N = 32, 3.0, 3.0, 2000


@pytest.fixture(scope="module")
def views():
    g = torch.Generator().manual_seed(1)
    coords = torch.randn(40, 3, generator=g) * 9.0  # smooth test volume: Gaussian blobs
    rot = random_rotations(N, generator=g)  # uniform on SO(3)
    images = project_gaussian_atoms(coords, rot, d=D, apix=APIX, sigma_a=SIGMA)  # exact line integrals
    volume = gaussian_density_3d(coords, d=D, apix=APIX, sigma_a=SIGMA)
    return g, rot, images, volume


def _min_fsc_to(a, b, fraction_of_nyquist=0.8):
    freq, fsc = fourier_shell_correlation(a, b)
    shells = fsc[(freq > 0) & (freq <= 0.5 * fraction_of_nyquist + 1e-9)]
    return float(shells.min()), fsc


def test_half_sets_are_balanced_deterministic_and_seeded():
    for n in (0, 1, 7, 1000, 1001):
        h = assign_half_sets(n, seed=3)
        assert h.shape == (n,) and set(np.unique(h)) <= {1, 2}
        assert abs(int((h == 1).sum()) - int((h == 2).sum())) <= 1
    np.testing.assert_array_equal(assign_half_sets(500, seed=3), assign_half_sets(500, seed=3))
    assert not np.array_equal(assign_half_sets(500, seed=3), assign_half_sets(500, seed=4))


def test_existing_column_is_honoured_and_validated():
    col = np.array([2, 2, 1, 2, 1])
    np.testing.assert_array_equal(assign_half_sets(5, seed=0, existing=col), col)
    np.testing.assert_array_equal(assign_half_sets(3, seed=0, existing=np.array([1.0, 2.0, 2.0])), [1, 2, 2])
    with pytest.raises(HalfSetError, match="only 1 and 2"):
        assign_half_sets(4, seed=0, existing=np.array([1, 2, 3, 0]))
    with pytest.raises(HalfSetError, match="only 1 and 2"):
        assign_half_sets(2, seed=0, existing=np.array([1.5, 2.0]))
    with pytest.raises(HalfSetError, match="shape"):
        assign_half_sets(4, seed=0, existing=np.array([1, 2]))
    with pytest.raises(HalfSetError, match="integers"):
        assign_half_sets(2, seed=0, existing=np.array(["a", "b"]))


def test_noiseless_half_maps_agree_beyond_0p99_to_0p8_nyquist(views):
    _, rot, images, volume = views
    halves = assign_half_sets(N, seed=0)
    map_a, map_b, full = reconstruct_half_maps(images, rot, None, None, APIX, halves, device="cpu")
    min_ab, fsc_ab = _min_fsc_to(map_a, map_b)
    min_truth, _ = _min_fsc_to(full, volume)
    print(f"half-map FSC min to 0.8 Nyquist: {min_ab:.5f}; full vs truth: {min_truth:.5f}")
    assert min_ab > 0.99
    assert min_truth > 0.99
    # the two halves use disjoint particles: a half map is not the full map
    assert float((map_a - full).abs().max()) > 0


def test_ctf_shifts_and_weights(views):
    g, rot, images, volume = views
    n = 600
    rot, images = rot[:n], images[:n]
    defocus = 10000.0 + 10000.0 * torch.rand(n, generator=g)
    ctf = dict(defocus_u_a=defocus, defocus_v_a=defocus - 200.0, defocus_angle_rad=torch.rand(n, generator=g),
               voltage_kv=torch.full((n,), 300.0), cs_mm=torch.full((n,), 2.7),
               amplitude_contrast=torch.full((n,), 0.1))
    shifts_a = (torch.rand(n, 2, generator=g) - 0.5) * 6.0
    observed = apply_ctf_and_shift(images, apix=APIX, ctf=ctf, shifts_a=shifts_a)
    halves = assign_half_sets(n, seed=1)
    a, b, full = reconstruct_half_maps(observed, rot, shifts_a, ctf, APIX, halves, device="cpu", pad_factor=1)
    # weights all one: the same maps as the unweighted path (backproject_images)
    a1, b1, full1 = reconstruct_half_maps(observed, rot, shifts_a, ctf, APIX, halves, device="cpu", pad_factor=1,
                                          weights=np.ones(n))
    for x, y in ((a, a1), (b, b1), (full, full1)):
        assert float((x - y).abs().max()) < 1e-5 * float(x.abs().max())
    assert _min_fsc_to(full, volume)[0] > 0.97
    # a weight of 2 counts as the particle twice; weight 0 drops it
    w = np.where(np.arange(n) % 3 == 0, 2.0, 0.0)
    idx = np.nonzero(w)[0]
    num_w, den_w = backproject_images(torch.cat([observed[idx]] * 2), torch.cat([rot[idx]] * 2), apix=APIX,
                                      ctf={k: torch.cat([v[idx]] * 2) for k, v in ctf.items()},
                                      shifts_a=torch.cat([shifts_a[idx]] * 2), pad_factor=1)
    expected_full = volume_from_sums(num_w, den_w, D, wiener_eps=1e-3)
    _, _, full_w = reconstruct_half_maps(observed, rot, shifts_a, ctf, APIX, halves, device="cpu", pad_factor=1,
                                         weights=w)
    assert float((full_w - expected_full).abs().max()) < 1e-4 * float(expected_full.abs().max())


def test_bad_input_raises(views):
    _, rot, images, _ = views
    with pytest.raises(ValueError, match="half_sets"):
        reconstruct_half_maps(images[:4], rot[:4], None, None, APIX, np.array([1, 2, 1]), device="cpu")
    with pytest.raises(HalfSetError):
        reconstruct_half_maps(images[:4], rot[:4], None, None, APIX, np.array([1, 2, 1, 0]), device="cpu")
    with pytest.raises(ValueError, match="weights"):
        reconstruct_half_maps(images[:4], rot[:4], None, None, APIX, np.array([1, 2, 1, 2]), device="cpu",
                              weights=np.array([1.0, -1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="rotations"):
        reconstruct_half_maps(images[:4], rot[:3], None, None, APIX, np.array([1, 2, 1, 2]), device="cpu")
