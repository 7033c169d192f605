"""Projections: analytic Gaussian atoms, real-space and Fourier-slice projections agree;
CTF and shift application (DC, known shifts)."""

import math

import pytest
import torch

from napari_cryohet.core.atoms import gaussian_density_3d
from napari_cryohet.core.ctf import compute_ctf_2d
from napari_cryohet.core.projection import (
    apply_ctf_and_shift,
    project_gaussian_atoms,
    project_volume_fourier,
    project_volume_real,
)
from napari_cryohet.core.rotation import euler_to_matrix, random_rotations

# Acceptance bounds (relative L2 error vs the analytic projection; 50 random atoms, σ = 3 Å,
# 64 px at 2 Å/px, 3 random poses). Measured: real-space 0.019 (oversample 1) and 0.005
# (oversample 2); Fourier slice 0.014 (pad 1) and 0.001 (pad 2, gridding correction).
REAL_BOUND, REAL_OVERSAMPLED_BOUND = 4e-2, 1e-2
FOURIER_BOUND, FOURIER_PADDED_BOUND = 5e-2, 5e-3


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def atoms_case():
    g = torch.Generator().manual_seed(0)
    coords = torch.randn(50, 3, generator=g) * 8.0  # Å, well inside the 128 Å box
    rot = random_rotations(3, generator=g)
    d, apix, sigma = 64, 2.0, 3.0
    analytic = project_gaussian_atoms(coords, rot, d=d, apix=apix, sigma_a=sigma)
    volume = gaussian_density_3d(coords, d=d, apix=apix, sigma_a=sigma)
    return coords, rot, volume, analytic


def test_three_projectors_agree(atoms_case):
    _, rot, volume, analytic = atoms_case
    assert _rel(project_volume_real(volume, rot), analytic) < REAL_BOUND
    assert _rel(project_volume_real(volume, rot, oversample=2), analytic) < REAL_OVERSAMPLED_BOUND
    assert _rel(project_volume_fourier(volume, rot, pad_factor=1), analytic) < FOURIER_BOUND
    assert _rel(project_volume_fourier(volume, rot, pad_factor=2), analytic) < FOURIER_PADDED_BOUND


def test_atom_lands_at_R_r():
    """Pose convention: an atom at r lands at (R r)[:2]; pixel sum = weight."""
    coords = torch.tensor([[12.0, -4.0, 6.0]], dtype=torch.float64)
    rot = euler_to_matrix(torch.tensor([[0.3, 1.1, -0.7]], dtype=torch.float64))
    img = project_gaussian_atoms(coords, rot, d=48, apix=1.0, sigma_a=1.5, weights=torch.tensor([3.0]))[0]
    assert abs(float(img.sum()) - 3.0) < 1e-9
    u = torch.arange(48, dtype=torch.float64) - 24
    cx = float((img.sum(0) * u).sum() / img.sum())
    cy = float((img.sum(1) * u).sum() / img.sum())
    expected = (rot[0] @ coords[0])[:2]
    assert abs(cx - float(expected[0])) < 1e-6 and abs(cy - float(expected[1])) < 1e-6
    # the real-space projector follows the same convention
    vol = gaussian_density_3d(coords, d=48, apix=1.0, sigma_a=1.5, weights=torch.tensor([3.0]))
    assert _rel(project_volume_real(vol, rot, oversample=2), img) < 3e-2  # σ = 1.5 px: interpolation-limited


def test_per_image_coordinates_and_gradient():
    g = torch.Generator().manual_seed(1)
    coords = torch.randn(2, 6, 3, dtype=torch.float64, generator=g) * 4
    rot = random_rotations(2, generator=g, dtype=torch.float64)
    both = project_gaussian_atoms(coords, rot, d=16, apix=2.0, sigma_a=2.0)
    one = project_gaussian_atoms(coords[1], rot[1:], d=16, apix=2.0, sigma_a=2.0)
    assert torch.allclose(both[1], one[0], atol=1e-12)
    c = coords[:, :3].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x: project_gaussian_atoms(x, rot, d=8, apix=2.0, sigma_a=2.0), (c,), fast_mode=True
    )


def _centroid(img):
    d = img.shape[-1]
    u = torch.arange(d, dtype=img.dtype) - d // 2
    m = img.sum((-2, -1))
    return torch.stack([(img.sum(-2) * u).sum(-1) / m, (img.sum(-1) * u).sum(-1) / m], -1)


def test_shift_follows_relion_origin_convention():
    coords = torch.zeros(1, 3, dtype=torch.float64)
    rot = torch.eye(3, dtype=torch.float64)[None].repeat(2, 1, 1)
    img = project_gaussian_atoms(coords, rot, d=32, apix=1.5, sigma_a=3.0)
    shifts_a = torch.tensor([[4.5, -3.0], [-6.0, 1.5]], dtype=torch.float64)
    out = apply_ctf_and_shift(img, apix=1.5, shifts_a=shifts_a)
    # the particle centre moves to image centre − shift
    assert torch.allclose(_centroid(out), -shifts_a / 1.5, atol=1e-6)


def test_ctf_scales_dc_by_its_value_at_zero():
    g = torch.Generator().manual_seed(2)
    coords = torch.randn(10, 3, dtype=torch.float64, generator=g) * 5
    rot = random_rotations(2, generator=g, dtype=torch.float64)
    img = project_gaussian_atoms(coords, rot, d=32, apix=2.0, sigma_a=3.0)
    ctf = dict(defocus_u_a=torch.tensor([12000.0, 20000.0]), defocus_v_a=torch.tensor([11000.0, 20000.0]),
               defocus_angle_rad=torch.tensor([0.2, 0.0]), voltage_kv=torch.tensor([300.0, 300.0]),
               cs_mm=torch.tensor([2.7, 2.7]), amplitude_contrast=torch.tensor([0.1, 0.07]))
    out = apply_ctf_and_shift(img, apix=2.0, ctf=ctf, shifts_a=torch.tensor([[3.0, 1.0], [0.0, -2.0]]))
    assert out.dtype == torch.float64
    # image sum = DC term, multiplied by CTF(0) = +Q0 (RELION sign); shifts do not change it
    assert torch.allclose(out.sum((-2, -1)), img.sum((-2, -1)) * torch.tensor([0.1, 0.07], dtype=torch.float64),
                          rtol=1e-6)
    # and the whole spectrum is multiplied by the CTF
    from napari_cryohet.core.fft import fft2_centered

    ref = fft2_centered(img) * compute_ctf_2d(32, 2.0, **{k: v.double() for k, v in ctf.items()})
    got = fft2_centered(apply_ctf_and_shift(img, apix=2.0, ctf=ctf))
    # (row/column 0 hold the unpaired Nyquist frequency, which taking the real part symmetrises)
    assert torch.allclose(got[:, 1:, 1:], ref[:, 1:, 1:], atol=1e-9 * float(ref.abs().max()))


def test_bad_input_raises():
    rot = torch.eye(3)[None]
    with pytest.raises(ValueError, match="rotations"):
        project_gaussian_atoms(torch.zeros(3, 3), torch.eye(3), d=8, apix=1.0, sigma_a=1.0)
    with pytest.raises(ValueError, match="shifts_a"):
        apply_ctf_and_shift(torch.zeros(1, 8, 8), apix=1.0, shifts_a=torch.zeros(2, 2))
    with pytest.raises(ValueError, match="unknown keys"):
        apply_ctf_and_shift(torch.zeros(1, 8, 8), apix=1.0, ctf={"defocus": 1.0})
    with pytest.raises(ValueError, match="pad_factor"):
        project_volume_fourier(torch.zeros(8, 8, 8), rot, pad_factor=0)
    with pytest.raises(ValueError, match="volume"):
        project_volume_real(torch.zeros(8, 8), rot)
    assert math.isfinite(float(project_volume_real(torch.zeros(8, 8, 8), rot).sum()))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_projectors(atoms_case):
    coords, rot, volume, analytic = atoms_case
    gpu = project_gaussian_atoms(coords.cuda(), rot.cuda(), d=64, apix=2.0, sigma_a=3.0)
    assert gpu.device.type == "cuda" and _rel(gpu.cpu(), analytic) < 1e-5
    four = project_volume_fourier(volume.cuda(), rot.cuda(), pad_factor=2)
    assert _rel(four.cpu(), analytic) < FOURIER_PADDED_BOUND
