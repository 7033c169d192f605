"""Structural-basis VAE model (core/vae_model.py): forward model, normalisation, decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cryohet.core.basis_slice import basis_from_volume
from napari_cryohet.core.ctf import compute_ctf_2d
from napari_cryohet.core.fft import fft3_centered, ifft2_centered, phase_shift_2d
from napari_cryohet.core.rotation import random_rotations
from napari_cryohet.core.slice import extract_central_slices
from napari_cryohet.core.vae_model import ModelShape, StructuralBasisVAE


def _blob_volume(d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u = torch.arange(d, dtype=torch.float64) - d // 2
    zz, yy, xx = torch.meshgrid(u, u, u, indexing="ij")
    vol = torch.zeros(d, d, d, dtype=torch.float64)
    for _ in range(6):
        c = (torch.rand(3, generator=g, dtype=torch.float64) - 0.5) * d * 0.4
        vol += torch.exp(-((xx - c[0]) ** 2 + (yy - c[1]) ** 2 + (zz - c[2]) ** 2) / (2 * 1.5**2))
    return vol


def _model_with_volume(vol: torch.Tensor, sigma: torch.Tensor | None = None, k: int = 2) -> StructuralBasisVAE:
    d = vol.shape[-1]
    model = StructuralBasisVAE(ModelShape(box_size=d, zdim=2, n_basis=k, enc_dim=16, dec_dim=8)).double()
    if sigma is not None:
        model.set_spectral_normalisation(sigma, 1.0)
    stored = basis_from_volume(fft3_centered(vol), model.lookup)  # (P,)
    scale = model.sigma_shell[model.voxel_shell]
    with torch.no_grad():
        model.basis.zero_()
        model.basis[:, :, 0] = torch.view_as_real(stored / scale)
    return model


def test_forward_model_matches_ctf_shifted_projection():
    """preprocess(y) = C · H(φ) g(z) for noise-free data made by core.slice + CTF + shift."""
    d, apix, b = 16, 2.0, 4
    vol = _blob_volume(d)
    # a constant σ̄ keeps the test exact (a varying one is interpolated across shells)
    sigma = torch.full((d // 2 + 2,), 2.5, dtype=torch.float64)
    model = _model_with_volume(vol, sigma)
    g = torch.Generator().manual_seed(3)
    rot = random_rotations(b, generator=g, dtype=torch.float64)
    shifts_a = torch.tensor([[2.0, -4.0], [0.0, 0.0], [-3.0, 1.0], [5.0, 2.0]], dtype=torch.float64)
    ctf = compute_ctf_2d(d, apix, defocus_u_a=torch.full((b,), 12000.0, dtype=torch.float64),
                         defocus_v_a=torch.full((b,), 11000.0, dtype=torch.float64), defocus_angle_rad=0.4,
                         voltage_kv=300.0, cs_mm=2.7, amplitude_contrast=0.1)
    slices = extract_central_slices(fft3_centered(vol), rot)  # (B, D, D)
    # the observed image: centred projection translated by −shift, then CTF (docs/design.md, "Poses")
    images = ifft2_centered(ctf * phase_shift_2d(slices, -shifts_a / apix)).real
    y_points, enc = model.preprocess(images, shifts_a / apix)
    with torch.no_grad():  # s(z) = 0: only the bias volume V^(0) contributes
        model.weights_net.out.weight.zero_()
        model.weights_net.out.bias.zero_()
    pred = model.ctf_at_points(ctf) * model.slices(torch.zeros(b, 2, dtype=torch.float64), rot)
    # the outermost shell differs only by edge conventions (off-grid neighbours)
    inner = model.point_freqs.norm(dim=-1) < d / 2 - 1
    err = (y_points - pred).detach()[:, inner].abs().max() / y_points.abs().max()
    assert err < 1e-10
    assert enc.shape == (b, int(model.mask_pixels.numel()))


def test_decode_volume_recovers_the_basis_volume():
    d = 16
    vol = _blob_volume(d, seed=1)
    model = _model_with_volume(vol)
    with torch.no_grad():
        model.weights_net.out.weight.zero_()
        model.weights_net.out.bias.zero_()
    out = model.decode_volume(torch.zeros(3, 2, dtype=torch.float64), batch=2)
    assert out.shape == (3, d, d, d) and out.dtype == torch.float32
    # a smooth volume is band-limited well inside the Nyquist sphere: recovered almost exactly
    corr = np.corrcoef(out[1].numpy().ravel(), vol.numpy().ravel())[0, 1]
    assert corr > 0.999
    assert model.decode_volume(torch.zeros(2, dtype=torch.float64)).shape == (d, d, d)


def test_decode_is_linear_in_basis_weights():
    """g(z) = V0 + Σ s_k V_k (eq. 3): decoded volumes are affine in s(z)."""
    d = 12
    torch.manual_seed(0)
    model = StructuralBasisVAE(ModelShape(box_size=d, zdim=2, n_basis=3, enc_dim=8, dec_dim=8)).double()
    with torch.no_grad():
        model.basis.normal_()
    z = torch.randn(2, 2, dtype=torch.float64)
    w = model.basis_weights(z)  # (2, 4)
    vols = model.decode_volume(z).double()
    basis_vols = []
    for k in range(4):
        ek = torch.zeros(1, 4, dtype=torch.float64)
        ek[0, k] = 1.0
        coeffs = torch.view_as_complex(torch.einsum("prk,bk->bpr", model.basis, ek).contiguous())
        coeffs = coeffs * model.sigma_shell[model.voxel_shell]
        from napari_cryohet.core.basis_slice import basis_to_volume
        from napari_cryohet.core.fft import ifft3_centered

        basis_vols.append(ifft3_centered(basis_to_volume(coeffs, model.lookup, d)).real[0])
    expected = torch.einsum("bk,kzyx->bzyx", w.detach(), torch.stack(basis_vols))
    torch.testing.assert_close(vols, expected, rtol=1e-5, atol=1e-5)


def test_loss_terms():
    d, b = 16, 8
    torch.manual_seed(0)
    model = StructuralBasisVAE(ModelShape(box_size=d, zdim=3, n_basis=2, enc_dim=16, dec_dim=8))
    images = torch.randn(b, d, d)
    y, enc = model.preprocess(images)
    rot = random_rotations(b)
    out = model.loss(y, enc, rot, None, beta=1.0, generator=torch.Generator().manual_seed(0))
    assert out["mu"].shape == (b, 3) and out["logvar"].shape == (b, 3)
    assert float(out["kl"]) >= 0 and float(out["reconstruction"]) > 0
    out["loss"].backward()
    assert model.basis.grad is not None and torch.isfinite(model.basis.grad).all()
    assert all(p.grad is not None for p in model.encoder.parameters())


def test_prior_term_is_the_basis_norm_and_spares_the_bias():
    """λP of eq. 4: the loss grows by exactly scale·Σ_k≥1 ‖V^(k)‖² / Σ weights, and its
    gradient pulls every structural basis coefficient towards 0 but leaves V^(0) alone."""
    d, b = 16, 4
    torch.manual_seed(1)
    model = StructuralBasisVAE(ModelShape(box_size=d, zdim=2, n_basis=3, enc_dim=8, dec_dim=8))
    with torch.no_grad():
        model.basis[..., 0].normal_()
    y, enc = model.preprocess(torch.randn(b, d, d))
    rot = random_rotations(b)
    plain = model.loss(y, enc, rot, None, generator=torch.Generator().manual_seed(0))["loss"]
    scale = 0.7
    with_prior = model.loss(y, enc, rot, None, prior_scale=scale, generator=torch.Generator().manual_seed(0))["loss"]
    expected = scale * float(model.basis[..., 1:].detach().pow(2).sum()) / float(model.point_weight.sum())
    assert abs(float((with_prior - plain).detach()) - expected) < 1e-5 * max(1.0, expected)
    model.zero_grad()
    (with_prior - plain).backward()
    g = model.basis.grad
    assert torch.count_nonzero(g[..., 0]) == 0
    torch.testing.assert_close(g[..., 1:], 2 * scale * model.basis[..., 1:].detach() / model.point_weight.sum())


def test_model_shape_validation():
    with pytest.raises(ValueError, match="box_size"):
        StructuralBasisVAE(ModelShape(box_size=15))
    with pytest.raises(ValueError, match="zdim"):
        StructuralBasisVAE(ModelShape(box_size=16, zdim=0))
