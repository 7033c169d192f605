"""CTF against RELION's formula (typed independently here) and torch-ctf (independent library)."""

import math

import numpy as np
import pytest
import torch

from napari_cryohet.core.ctf import compute_ctf_1d, compute_ctf_2d, electron_wavelength_a

ASTIGMATIC_CASES = [
    # defocus_u_a, defocus_v_a, angle_rad, voltage_kv, cs_mm, Q0, phase_shift_rad, apix, d
    (15000.0, 12000.0, 0.0, 300.0, 2.7, 0.07, 0.0, 1.3, 64),
    (21000.0, 18500.0, 0.7, 200.0, 2.0, 0.10, 0.0, 2.0, 48),
    (9000.0, 8000.0, -1.2, 300.0, 0.01, 0.10, 0.5, 1.0, 64),
    (25000.0, 15000.0, 2.5, 300.0, 2.7, 0.15, 1.2, 1.7, 32),
]


def relion_get_ctf(x_per_a, y_per_a, *, dfu, dfv, azimuth_rad, kv, cs_mm, q0, phase_shift_rad, bfac=0.0):
    """RELION ``CTF::getCTF`` (src/ctf.h, ctf.cpp initialise) transcribed in plain Python."""
    local_cs = cs_mm * 1e7
    local_kv = kv * 1e3
    defocus_average = -(dfu + dfv) * 0.5
    defocus_deviation = -(dfu - dfv) * 0.5
    lam = 12.2643247 / math.sqrt(local_kv * (1.0 + local_kv * 0.978466e-6))
    k1 = math.pi / 2 * 2 * lam
    k2 = math.pi / 2 * local_cs * lam**3
    k3 = math.atan(q0 / math.sqrt(1 - q0 * q0))
    k4 = -bfac / 4.0
    k5 = phase_shift_rad
    u2 = x_per_a**2 + y_per_a**2
    u4 = u2 * u2
    if abs(x_per_a) < 1e-12 and abs(y_per_a) < 1e-12:
        deltaf = 0.0
    else:
        ellipsoid_ang = math.atan2(y_per_a, x_per_a) - azimuth_rad
        deltaf = defocus_average + defocus_deviation * math.cos(2 * ellipsoid_ang)
    argument = k1 * deltaf * u2 + k2 * u4 - k5 - k3
    return -math.sin(argument) * math.exp(k4 * u2)


def test_wavelengths():
    assert abs(electron_wavelength_a(200.0) - 0.02508) < 1e-5
    assert abs(electron_wavelength_a(300.0) - 0.01969) < 1e-5
    lam = electron_wavelength_a(torch.tensor([200.0, 300.0], dtype=torch.float64))
    assert torch.allclose(lam, torch.tensor([0.025079, 0.019687], dtype=torch.float64), atol=1e-6)


@pytest.mark.parametrize("case", ASTIGMATIC_CASES)
def test_matches_relion_formula(case):
    dfu, dfv, ang, kv, cs, q0, ps, apix, d = case
    ctf = compute_ctf_2d(d, apix, defocus_u_a=dfu, defocus_v_a=dfv, defocus_angle_rad=ang, voltage_kv=kv,
                         cs_mm=cs, amplitude_contrast=q0, phase_shift_rad=ps,
                         bfactor_a2=torch.tensor(40.0, dtype=torch.float64))[0]
    rng = np.random.default_rng(1)
    for i, j in list(rng.integers(0, d, size=(40, 2))) + [(d // 2, d // 2), (0, 0), (d // 2, 0)]:
        kx, ky = (j - d // 2) / (d * apix), (i - d // 2) / (d * apix)
        ref = relion_get_ctf(kx, ky, dfu=dfu, dfv=dfv, azimuth_rad=ang, kv=kv, cs_mm=cs, q0=q0,
                             phase_shift_rad=ps, bfac=40.0)
        assert abs(float(ctf[i, j]) - ref) < 1e-9, (i, j)


@pytest.mark.parametrize("case", ASTIGMATIC_CASES)
def test_matches_torch_ctf(case):
    torch_ctf = pytest.importorskip("torch_ctf")
    dfu, dfv, ang, kv, cs, q0, ps, apix, d = case
    ours = compute_ctf_2d(d, apix, defocus_u_a=dfu, defocus_v_a=dfv, defocus_angle_rad=ang, voltage_kv=kv,
                          cs_mm=cs, amplitude_contrast=q0, phase_shift_rad=ps)[0]
    ref = torch_ctf.calculate_ctf_2d(
        defocus=(dfu + dfv) / 2e4, astigmatism=(dfu - dfv) / 2e4, astigmatism_angle=math.degrees(ang),
        voltage=kv, spherical_aberration=cs, amplitude_contrast=q0, phase_shift=math.degrees(ps),
        pixel_size=apix, image_shape=(d, d), rfft=False, fftshift=True,
    )
    # torch-ctf works in float32 with its own wavelength constants and an eps in the
    # astigmatism direction: agreement to 5e-3 over the whole grid (CTF values are O(1)).
    assert ref.shape == ours.shape
    assert float((ours - ref).abs().max()) < 5e-3


def test_value_at_dc_is_relion_sign():
    ctf = compute_ctf_2d(32, 1.5, defocus_u_a=15000.0, defocus_v_a=14000.0, defocus_angle_rad=0.3,
                         voltage_kv=300.0, cs_mm=2.7, amplitude_contrast=0.1)
    assert abs(float(ctf[0, 16, 16]) - 0.1) < 1e-6  # +Q0 (RELION), not −Q0 (eq. 1.2 of seed 000)
    ctf_ps = compute_ctf_2d(32, 1.5, defocus_u_a=15000.0, defocus_v_a=14000.0, defocus_angle_rad=0.3,
                            voltage_kv=300.0, cs_mm=2.7, amplitude_contrast=0.1, phase_shift_rad=math.pi / 2)
    assert abs(float(ctf_ps[0, 16, 16]) - math.sin(math.pi / 2 + math.atan(0.1 / math.sqrt(0.99)))) < 1e-6
    # underfocus: positive at low frequency before the first zero
    assert float(ctf[0, 16, 17]) > 0.1


def test_batched_shapes_devices_and_dtypes():
    dfu = torch.tensor([10000.0, 20000.0, 30000.0], dtype=torch.float64)
    ctf = compute_ctf_2d(16, 2.0, defocus_u_a=dfu, defocus_v_a=dfu - 500, defocus_angle_rad=0.1, voltage_kv=300.0,
                         cs_mm=2.7, amplitude_contrast=0.1)
    assert ctf.shape == (3, 16, 16) and ctf.dtype == torch.float64
    single = compute_ctf_2d(16, 2.0, defocus_u_a=20000.0, defocus_v_a=19500.0, defocus_angle_rad=0.1,
                            voltage_kv=300.0, cs_mm=2.7, amplitude_contrast=0.1)
    assert single.shape == (1, 16, 16) and single.dtype == torch.float32
    assert torch.allclose(ctf[1].float(), single[0], atol=1e-5)


def test_astigmatism_axes_swap_and_profile():
    kw = dict(voltage_kv=200.0, cs_mm=2.0, amplitude_contrast=0.1)
    a = compute_ctf_2d(32, 2.0, defocus_u_a=18000.0, defocus_v_a=15000.0, defocus_angle_rad=0.4, **kw)
    b = compute_ctf_2d(32, 2.0, defocus_u_a=15000.0, defocus_v_a=18000.0, defocus_angle_rad=0.4 + math.pi / 2, **kw)
    assert torch.allclose(a, b, atol=1e-5)
    # the row along the x axis of a non-astigmatic CTF is the 1D profile
    c = compute_ctf_2d(32, 2.0, defocus_u_a=16000.0, defocus_v_a=16000.0, defocus_angle_rad=0.0, **kw)
    freq = torch.arange(16, dtype=torch.float32) / (32 * 2.0)
    prof = compute_ctf_1d(freq, defocus_a=16000.0, **kw)
    assert prof.shape == (16,)
    assert torch.allclose(prof, c[0, 16, 16:], atol=1e-5)
    # defocus along u: the CTF along the direction at angle 0.4 equals the profile at defocus_u
    batch = compute_ctf_1d(freq, defocus_a=torch.tensor([15000.0, 18000.0]), **kw)
    assert batch.shape == (2, 16)


def test_bfactor_envelope():
    kw = dict(defocus_u_a=12000.0, defocus_v_a=12000.0, defocus_angle_rad=0.0, voltage_kv=300.0, cs_mm=2.7,
              amplitude_contrast=0.1)
    plain = compute_ctf_2d(32, 1.5, **kw)
    damped = compute_ctf_2d(32, 1.5, bfactor_a2=100.0, **kw)
    k2 = (torch.arange(32) - 16.0) ** 2 / (32 * 1.5) ** 2
    assert torch.allclose(damped[0, 16], plain[0, 16] * torch.exp(-100.0 * k2 / 4), atol=1e-6)


def test_bad_input_raises():
    kw = dict(defocus_u_a=12000.0, defocus_v_a=12000.0, defocus_angle_rad=0.0, voltage_kv=300.0, cs_mm=2.7)
    with pytest.raises(ValueError, match="amplitude_contrast"):
        compute_ctf_2d(16, 1.0, amplitude_contrast=1.5, **kw)
    with pytest.raises(ValueError, match="apix"):
        compute_ctf_2d(16, -1.0, amplitude_contrast=0.1, **kw)
    with pytest.raises(ValueError, match="voltage_kv"):
        electron_wavelength_a(0.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_follows_inputs():
    dfu = torch.tensor([15000.0], device="cuda")
    ctf = compute_ctf_2d(16, 1.5, defocus_u_a=dfu, defocus_v_a=dfu, defocus_angle_rad=0.0, voltage_kv=300.0,
                         cs_mm=2.7, amplitude_contrast=0.1)
    assert ctf.device.type == "cuda"
