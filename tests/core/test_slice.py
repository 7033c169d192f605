"""Sparse Fourier-slice extraction: adjointness, gradcheck, the Fourier-slice theorem."""

import math

import pytest
import torch

from napari_cryohet.core.fft import fft2_centered, fft3_centered
from napari_cryohet.core.rotation import euler_to_matrix, random_rotations
from napari_cryohet.core.slice import (
    extract_central_slices,
    insert_central_slices,
    slice_sample_mask,
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("d", [8, 11 + 1])
def test_adjoint_float64(d):
    g = _gen(d)
    rot = random_rotations(7, generator=g, dtype=torch.float64)
    vol = torch.randn(d, d, d, dtype=torch.complex128, generator=g)
    y = torch.randn(7, d, d, dtype=torch.complex128, generator=g)
    lhs = (extract_central_slices(vol, rot).conj() * y).sum()
    pty, _ = insert_central_slices(y, rot, d)
    rhs = (vol.conj() * pty).sum()
    assert abs(lhs - rhs) / abs(lhs) < 1e-12


def test_adjoint_batched_volumes_and_backward_is_insertion():
    g = _gen(3)
    d = 8
    rot = random_rotations(4, generator=g, dtype=torch.float64)
    vols = torch.randn(4, d, d, d, dtype=torch.complex128, generator=g)
    y = torch.randn(4, d, d, dtype=torch.complex128, generator=g)
    lhs = (extract_central_slices(vols, rot).conj() * y).sum()
    rhs = sum((vols[b].conj() * insert_central_slices(y[b:b + 1], rot[b:b + 1], d)[0]).sum() for b in range(4))
    assert abs(lhs - rhs) / abs(lhs) < 1e-12
    # autograd backward of the shared-volume extraction is the insertion
    vol = vols[0].clone().requires_grad_(True)
    out = extract_central_slices(vol, rot)
    (grad,) = torch.autograd.grad(out, vol, grad_outputs=y)
    assert torch.allclose(grad, insert_central_slices(y, rot, d)[0], atol=1e-12)


def test_gradcheck_volume_and_rotations():
    g = _gen(1)
    d = 6
    rot = random_rotations(3, generator=g, dtype=torch.float64).requires_grad_(True)
    vol = torch.randn(d, d, d, dtype=torch.complex128, generator=g).requires_grad_(True)
    assert torch.autograd.gradcheck(extract_central_slices, (vol, rot))
    real_vol = torch.randn(d, d, d, dtype=torch.float64, generator=g).requires_grad_(True)
    assert torch.autograd.gradcheck(extract_central_slices, (real_vol, rot), fast_mode=True)
    vols = torch.randn(3, d, d, d, dtype=torch.complex128, generator=g).requires_grad_(True)
    assert torch.autograd.gradcheck(extract_central_slices, (vols, rot.detach()), fast_mode=True)


def test_identity_pose_reads_the_central_plane_exactly():
    g = _gen(2)
    d = 10
    vol = torch.randn(d, d, d, dtype=torch.complex128, generator=g)
    out = extract_central_slices(vol, torch.eye(3, dtype=torch.float64)[None])[0]
    mask = slice_sample_mask(d)
    assert torch.allclose(out[mask], vol[d // 2][mask], atol=1e-12, rtol=0)
    assert out[~mask].abs().max() == 0  # beyond the Nyquist disc


def test_fourier_slice_theorem_on_axis_poses():
    """Axis-aligned poses need no interpolation: slice == FFT2 of the real-space projection."""
    g = _gen(4)
    d = 12
    vol = torch.randn(d, d, d, dtype=torch.float64, generator=g)
    spec = fft3_centered(vol)
    mask = slice_sample_mask(d)
    for euler in [(0.0, 0.0, 0.0), (0.0, math.pi / 2, 0.0), (math.pi / 2, math.pi / 2, -math.pi / 2)]:
        rot = euler_to_matrix(torch.tensor([euler], dtype=torch.float64))
        sl = extract_central_slices(spec, rot)[0]
        # image(x, y) = Σ_z V(Rᵀ (x, y, z)) by exact (periodic) index mapping: R permutes axes
        r = rot[0].round()
        u = torch.arange(d) - d // 2
        yy, xx, zz = torch.meshgrid(u, u, u, indexing="ij")
        p = torch.stack([xx, yy, zz], -1).to(torch.float64) @ r  # Rᵀ (x, y, z) in row-vector form
        idx = (p.round().long() + d // 2) % d
        proj = vol[idx[..., 2], idx[..., 1], idx[..., 0]].sum(-1)  # (y, x)
        ref = fft2_centered(proj)
        assert torch.allclose(sl[mask], ref[mask], atol=1e-9)


def test_insert_weights_count_samples():
    d = 8
    rot = torch.eye(3)[None].repeat(3, 1, 1)
    ones = torch.ones(3, d, d)
    vol, weights = insert_central_slices(ones, rot, d)
    mask = slice_sample_mask(d)
    assert torch.allclose(weights[d // 2][mask], torch.full((int(mask.sum()),), 3.0))
    assert torch.allclose(vol, weights)  # real slices give a real volume equal to the weights here
    _, w2 = insert_central_slices(ones, rot, d, slice_weights=2 * ones)
    assert torch.allclose(w2, 2 * weights)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="rotations"):
        extract_central_slices(torch.zeros(8, 8, 8, dtype=torch.complex64), torch.eye(3))
    with pytest.raises(ValueError, match="cubic"):
        extract_central_slices(torch.zeros(8, 8, 6, dtype=torch.complex64), torch.eye(3)[None])
    with pytest.raises(ValueError, match="slices_ft"):
        insert_central_slices(torch.zeros(2, 8, 8), torch.eye(3)[None].repeat(2, 1, 1), 10)
    with pytest.raises(ValueError, match="rotations"):
        insert_central_slices(torch.zeros(2, 8, 8), torch.eye(3)[None], 8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    g = _gen(5)
    d = 16
    rot = random_rotations(5, generator=g)
    vol = torch.randn(d, d, d, dtype=torch.complex64, generator=g)
    cpu = extract_central_slices(vol, rot)
    gpu = extract_central_slices(vol.cuda(), rot.cuda())
    assert gpu.device.type == "cuda"
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-4)
    y = torch.randn(5, d, d, dtype=torch.complex64, generator=g)
    assert torch.allclose(insert_central_slices(y.cuda(), rot.cuda(), d)[0].cpu(),
                          insert_central_slices(y, rot, d)[0], atol=1e-4)
