"""Project → backproject of noiseless views reconstructs the volume (FSC > 0.99 to 0.8 Nyquist)."""

import pytest
import torch

from napari_cryohet.core.atoms import gaussian_density_3d
from napari_cryohet.core.fsc import fourier_shell_correlation, resolution_at
from napari_cryohet.core.projection import apply_ctf_and_shift, project_gaussian_atoms
from napari_cryohet.core.reconstruct import reconstruct_volume
from napari_cryohet.core.rotation import random_rotations

D, APIX, SIGMA, N_VIEWS = 32, 3.0, 3.0, 1000


@pytest.fixture(scope="module")
def views():
    g = torch.Generator().manual_seed(0)
    coords = torch.randn(50, 3, generator=g) * 10.0
    rot = random_rotations(N_VIEWS, generator=g)  # uniform on SO(3)
    images = project_gaussian_atoms(coords, rot, d=D, apix=APIX, sigma_a=SIGMA)  # exact line integrals
    volume = gaussian_density_3d(coords, d=D, apix=APIX, sigma_a=SIGMA)
    return g, rot, images, volume


def _fsc_up_to(rec, volume, fraction_of_nyquist):
    freq, fsc = fourier_shell_correlation(rec, volume)
    return fsc[(freq > 0) & (freq <= 0.5 * fraction_of_nyquist + 1e-9)], freq, fsc


def test_noiseless_views_reconstruct_the_volume(views):
    _, rot, images, volume = views
    rec = reconstruct_volume(images, rot, apix=APIX)
    shells, freq, fsc = _fsc_up_to(rec, volume, 0.8)
    assert float(shells.min()) > 0.99
    assert resolution_at(freq, fsc, apix=APIX, threshold=0.5) < 2.5 * APIX
    # the scale is the density's (mass per voxel), not an arbitrary one
    assert abs(float(rec.sum() / volume.sum()) - 1.0) < 2e-2


def test_ctf_and_shifts_are_undone(views):
    g, rot, images, volume = views
    n = images.shape[0]
    defocus = 10000.0 + 15000.0 * torch.rand(n, generator=g)
    ctf = dict(defocus_u_a=defocus, defocus_v_a=defocus - 300.0, defocus_angle_rad=3.0 * torch.rand(n, generator=g),
               voltage_kv=torch.full((n,), 300.0), cs_mm=torch.full((n,), 2.7),
               amplitude_contrast=torch.full((n,), 0.1))
    shifts_a = (torch.rand(n, 2, generator=g) - 0.5) * 8.0
    observed = apply_ctf_and_shift(images, apix=APIX, ctf=ctf, shifts_a=shifts_a)
    # pad 1 uses the very CTF samples the (simulated) images were filtered with
    rec = reconstruct_volume(observed, rot, apix=APIX, ctf=ctf, shifts_a=shifts_a, pad_factor=1)
    shells, _, _ = _fsc_up_to(rec, volume, 0.8)
    assert float(shells.min()) > 0.98
    # ignoring the shifts destroys the agreement at high frequency
    wrong = reconstruct_volume(observed, rot, apix=APIX, ctf=ctf, pad_factor=1)
    shells_wrong, _, _ = _fsc_up_to(wrong, volume, 0.8)
    assert float(shells_wrong.min()) < 0.9


def test_bad_input_raises(views):
    _, rot, images, _ = views
    with pytest.raises(ValueError, match="rotations"):
        reconstruct_volume(images[:4], rot[:3], apix=APIX)
    with pytest.raises(ValueError, match="shifts_a"):
        reconstruct_volume(images[:4], rot[:4], apix=APIX, shifts_a=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="unknown keys"):
        reconstruct_volume(images[:4], rot[:4], apix=APIX, ctf={"df": torch.zeros(4)})
