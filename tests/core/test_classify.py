"""Class log-likelihoods (core/classify.py): noisy projections of two different maps are assigned
to the map they came from; the true map scores best on noiseless data."""

from __future__ import annotations

import math

import torch

from napari_cryohet.core.atoms import gaussian_density_3d
from napari_cryohet.core.classify import map_log_likelihoods
from napari_cryohet.core.projection import apply_ctf_and_shift, project_gaussian_atoms
from napari_cryohet.core.rotation import random_rotations

D, APIX, N = 32, 2.0, 80


def _two_classes():
    g = torch.Generator().manual_seed(4)
    coords = (torch.rand(14, 3, generator=g, dtype=torch.float64) - 0.5) * 0.5 * D * APIX
    weights = torch.ones(14, dtype=torch.float64)
    small = weights.clone()
    small[:3] = 0.0  # class 1 lacks three of the blobs (a missing domain)
    return coords, [weights, small]


def test_images_are_assigned_to_the_map_they_came_from():
    coords, masses = _two_classes()
    maps = torch.stack([gaussian_density_3d(coords, d=D, apix=APIX, sigma_a=2.0 * APIX, weights=w) for w in masses])
    g = torch.Generator().manual_seed(9)
    rot = random_rotations(N, generator=g, dtype=torch.float64)
    truth = torch.arange(N) % 2
    sh = torch.randn(N, 2, generator=g, dtype=torch.float64)
    du = torch.full((N,), 9000.0, dtype=torch.float64)
    ctf = dict(defocus_u_a=du, defocus_v_a=du, defocus_angle_rad=torch.zeros(N, dtype=torch.float64),
               voltage_kv=300.0, cs_mm=2.7, amplitude_contrast=0.1)
    clean = torch.stack([project_gaussian_atoms(coords, rot[i:i + 1], d=D, apix=APIX, sigma_a=2.0 * APIX,
                                                weights=masses[int(truth[i])])[0] for i in range(N)])
    clean = apply_ctf_and_shift(clean, apix=APIX, ctf=ctf, shifts_a=sh)
    # noiseless: the true class scores best for every particle, by a wide margin
    ll = map_log_likelihoods(clean, rot, sh, ctf, maps, apix=APIX, max_resolution_a=3 * APIX, noise_variance=1.0,
                             device="cpu")
    assert ll.shape == (N, 2)
    assert torch.equal(ll.argmax(1), truth)
    # SNR 0.5 with the noise measured on the background: still (almost) every particle right
    noisy = clean + torch.randn(clean.shape, generator=g, dtype=clean.dtype) * math.sqrt(float(clean.var()) / 0.5)
    ll = map_log_likelihoods(noisy, rot, sh, ctf, maps, apix=APIX, max_resolution_a=3 * APIX, device="cpu")
    accuracy = float((ll.argmax(1) == truth).double().mean())
    print(f"SNR 0.5: {accuracy:.1%} assigned to their own class")
    assert accuracy >= 0.95
