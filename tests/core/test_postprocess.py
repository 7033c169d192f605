"""RELION-style postprocessing: soft mask, phase-randomised masked FSC, FSC weighting, Guinier B-factor."""

import numpy as np
import pytest
import torch

from napari_cryohet.core.atoms import gaussian_density_3d
from napari_cryohet.core.fft import fft3_centered, fftfreq_grid_3d, ifft3_centered
from napari_cryohet.core.fsc import fourier_shell_correlation, resolution_at
from napari_cryohet.core.postprocess import (
    fit_b_factor,
    fsc_weighted_filter,
    masked_fsc,
    postprocess,
    randomise_phases,
    sharpen,
    soft_mask,
)


def _sphere(d, radius_px):
    z, y, x = torch.meshgrid(*[torch.arange(d, dtype=torch.float64) - d // 2] * 3, indexing="ij")
    return ((x**2 + y**2 + z**2) < radius_px**2).to(torch.float64)


def _shells(d):
    return torch.round(fftfreq_grid_3d(d, dtype=torch.float64).norm(dim=-1) * d).long()


@pytest.mark.parametrize("seed", [100, 101, 102])
def test_corrected_masked_fsc_of_independent_noise_is_near_zero(seed):
    d = 48
    g = torch.Generator().manual_seed(seed)
    # two independent noise maps on a common positive background: the mask turns the
    # background into a correlation that inflates the masked FSC
    a = torch.randn(d, d, d, generator=g, dtype=torch.float64) + 0.5
    b = torch.randn(d, d, d, generator=g, dtype=torch.float64) + 0.5
    mask = soft_mask(_sphere(d, 0.4 * d), apix=2.0, threshold=0.5, extend_px=0, soft_edge_px=4)
    c = masked_fsc(a, b, mask, apix=2.0, seed=7)
    print(f"seed {seed}: cut shell {c.randomise_from_shell}; masked FSC shells 1-3 {np.round(c.masked[1:4], 3)}, "
          f"corrected {np.round(c.corrected[1:4], 3)}; max |corrected| from shell {d // 4}: "
          f"{np.abs(c.corrected[d // 4:]).max():.3f}; mean masked / corrected from shell 4: "
          f"{c.masked[4:].mean():.3f} / {c.corrected[4:].mean():.3f}")
    assert c.randomise_from_shell == 1  # the unmasked FSC of noise is below 0.8 at once
    assert np.abs(c.corrected[d // 4:]).max() < 0.1
    assert abs(c.corrected[4:].mean()) < 0.04
    # the uncorrected masked FSC is inflated, at low frequency and on average beyond
    assert c.masked[1:4].min() > 0.5
    assert (c.masked[1:4] > c.corrected[1:4]).all()
    assert c.masked[4:].mean() > 0.05


def test_phase_randomisation_keeps_amplitudes_and_randomises_beyond_the_cut():
    d, cut = 32, 6
    g = torch.Generator().manual_seed(0)
    vol = gaussian_density_3d(torch.randn(30, 3, generator=g) * 8.0, d=d, apix=2.0, sigma_a=2.5).to(torch.float64)
    vol = vol + 0.01 * torch.randn(d, d, d, generator=g, dtype=torch.float64)  # power at every shell
    out = randomise_phases(vol, from_shell=cut, generator=torch.Generator().manual_seed(1))
    assert out.dtype == torch.float64 and out.shape == vol.shape
    f_in, f_out = fft3_centered(vol), fft3_centered(out)
    scale = float(f_in.abs().max())
    assert float((f_in.abs() - f_out.abs()).abs().max()) < 1e-5 * scale
    shell = _shells(d)
    inside = shell < cut
    assert float((f_in[inside] - f_out[inside]).abs().max()) < 1e-5 * scale
    dphi = torch.angle(f_out[~inside]) - torch.angle(f_in[~inside])
    mean_cos = float(torch.cos(dphi).mean())
    print(f"mean cos(Δφ) beyond shell {cut}: {mean_cos:.4f}")
    assert abs(mean_cos) < 0.05
    _, fsc = fourier_shell_correlation(vol, out)
    assert float(np.abs(fsc[cut + 1:]).max()) < 0.35 and float(fsc[1:cut].min()) > 0.999999


def _flat_spectrum(d, seed):
    noise = torch.randn(d, d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    f = fft3_centered(noise)
    return f / f.abs()


def test_guinier_b_factor_of_a_blurred_flat_spectrum():
    d, apix, b_true = 48, 1.5, 100.0
    s2 = (fftfreq_grid_3d(d, dtype=torch.float64).norm(dim=-1) / apix) ** 2
    blurred = ifft3_centered(_flat_spectrum(d, 3) * torch.exp(-b_true * s2 / 4.0)).real
    b_fit = fit_b_factor(blurred, apix=apix, high_res_a=3.5, low_res_a=10.0)
    print(f"Guinier B: fitted {b_fit:.2f} Å² (true {b_true})")
    assert abs(b_fit - b_true) < 0.1 * b_true
    # automatic sharpening with a perfect FSC undoes the blur: the result is flat again
    sharp, b_used = sharpen(blurred, apix=apix, fsc=np.ones(d // 2 + 1), resolution_a=3.5)
    assert abs(b_used - b_true) < 0.1 * b_true
    assert abs(fit_b_factor(sharp, apix=apix, high_res_a=4.0, low_res_a=10.0)) < 10.0
    with pytest.raises(ValueError, match="shells"):
        fit_b_factor(blurred, apix=apix, high_res_a=9.5, low_res_a=10.0)


def test_fsc_weighting_scales_each_shell():
    d = 32
    flat = ifft3_centered(_flat_spectrum(d, 4)).real
    fsc = np.full(d // 2 + 1, 1.0 / 3.0)
    fsc[10:] = -0.2  # negative FSC weighs 0
    out = fsc_weighted_filter(flat, fsc)
    ratio = fft3_centered(out).abs() / fft3_centered(flat).abs()
    shell = _shells(d)
    assert float((ratio[shell < 10] - np.sqrt(0.5)).abs().max()) < 1e-6  # sqrt(2·(1/3)/(4/3))
    assert float(ratio[shell >= 10].abs().max()) < 1e-6


def test_soft_mask_shape_and_edge():
    d = 40
    mask = soft_mask(_sphere(d, 8), apix=2.0, threshold=0.5, extend_px=2, soft_edge_px=4, lowpass_a=4.0)
    assert float(mask.min()) >= 0.0 and float(mask.max()) <= 1.0
    z, y, x = torch.meshgrid(*[torch.arange(d, dtype=torch.float64) - d // 2] * 3, indexing="ij")
    r = (x**2 + y**2 + z**2).sqrt()
    assert float(mask[r < 8].min()) == 1.0
    assert float(mask[r > 8 + 2 + 4 + 2].max()) == 0.0
    edge = mask[d // 2, d // 2, d // 2 + 8:d // 2 + 18]  # along +x: non-increasing
    assert bool((edge[1:] <= edge[:-1] + 1e-12).all())
    assert 0.0 < float(edge[3]) < 1.0  # r = 11: inside the raised-cosine edge
    with pytest.raises(ValueError, match="threshold"):
        soft_mask(_sphere(d, 8), apix=2.0, threshold=10.0)


def test_postprocess_of_noisy_half_maps():
    d, apix = 40, 2.0
    g = torch.Generator().manual_seed(5)
    truth = gaussian_density_3d(torch.randn(40, 3, generator=g) * 7.0, d=d, apix=apix, sigma_a=2.0)
    truth = truth.to(torch.float64)
    sd = 0.5 * float(truth.std())
    a = truth + sd * torch.randn(d, d, d, generator=g, dtype=torch.float64)
    b = truth + sd * torch.randn(d, d, d, generator=g, dtype=torch.float64)
    res = postprocess(a, b, apix=apix)
    freq, fsc_truth = fourier_shell_correlation(0.5 * (a + b), truth)
    print(f"resolution {res.resolution_a:.2f} Å (unmasked cut shell {res.curves.randomise_from_shell}), "
          f"B {res.b_factor:.1f} Å²")
    assert np.isfinite(res.resolution_a) and 2 * apix <= res.resolution_a < 20.0
    # masking the solvent noise can only help: masked resolution at least the unmasked one
    unmasked_res = resolution_at(res.curves.freq_per_px, res.curves.unmasked, apix=apix)
    assert res.resolution_a <= unmasked_res + 1e-6
    assert res.map.shape == (d, d, d) and res.mask.shape == (d, d, d) and res.b_factor >= 0.0
    assert float(res.mask.min()) >= 0.0 and float(res.mask.max()) <= 1.0
    # the postprocessed map still resembles the truth at low resolution
    _, fsc_map = fourier_shell_correlation(res.map, truth)
    assert float(fsc_map[1:5].min()) > 0.9
