"""Fixtures of the VAE stage tests: a two-conformation toy dataset and tiny settings.

``vae_toy(n, d=32, apix=3.0, snr=0.1, seed=0)`` simulates analytic projections of two
conformations (a body with an arm along +x or +y) with CTF, shifts and white noise;
``vae_small(n=192, **settings) -> (dataset, VAEConfig)`` is a 16-px version with a tiny
model for tests of the machinery (3 epochs in well under a second).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_cryohet.core.atoms import gaussian_density_3d
from napari_cryohet.core.particle_dataset import CTFParams, ParticleDataset
from napari_cryohet.core.projection import apply_ctf_and_shift, project_gaussian_atoms
from napari_cryohet.core.rotation import random_rotations
from napari_cryohet.stages.vae import VAEConfig

#: The bundled sample (200 AdK particles, 64 px, poses and CTF).
SAMPLE_STAR = Path(__file__).resolve().parents[3] / "sample_data" / "adk_small" / "particles.star"

#: A tiny model for the 64-px sample: a few seconds per epoch on 2 cores.
SAMPLE_SETTINGS = {"zdim": 2, "n_basis": 2, "enc_dim": 16, "dec_dim": 8, "radius": 6.0, "batch_size": 50,
                   "seed": 1}


def _two_state_atoms() -> np.ndarray:
    """(2, M, 3) Å: a compact body plus an arm pointing along +x (state 0) or +y (state 1)."""
    rng = np.random.default_rng(7)
    body = rng.normal(0.0, 5.0, (12, 3))
    arm = np.stack([np.linspace(10.0, 32.0, 10), np.zeros(10), np.zeros(10)], -1)
    arm1 = arm[:, [1, 0, 2]]
    return np.stack([np.concatenate([body, arm]), np.concatenate([body, arm1])]).astype(np.float32)


def toy_dataset(n: int, *, d: int = 32, apix: float = 3.0, snr: float = 0.1, seed: int = 0) -> ParticleDataset:
    """Two conformations, analytic projections, CTF, shifts and white noise at ``snr``."""
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    atoms = torch.as_tensor(_two_state_atoms())
    state = rng.permutation(np.arange(n) % 2)
    rot = random_rotations(n, generator=g)
    shifts = rng.normal(0.0, 2.0, (n, 2)).astype(np.float32)
    ctf = CTFParams.constant(n, defocus_u_a=rng.uniform(5000, 20000, n), voltage_kv=300.0, cs_mm=2.7,
                             amplitude_contrast=0.1)
    clean = project_gaussian_atoms(atoms[state], rot, d=d, apix=apix, sigma_a=3.0)
    clean = apply_ctf_and_shift(clean, apix=apix, ctf=ctf.to_torch(), shifts_a=torch.as_tensor(shifts))
    noise_var = float(clean.var()) / snr
    images = clean + np.sqrt(noise_var) * torch.randn(clean.shape, generator=g)
    volumes = gaussian_density_3d(atoms, d=d, apix=apix, sigma_a=3.0).numpy()
    return ParticleDataset(images=images.numpy().astype(np.float32), apix=apix, rotations=rot.numpy(),
                           shifts_a=shifts, ctf=ctf,
                           ground_truth={"state": state, "global/volumes": volumes})


def small(n: int = 192, **settings) -> tuple[ParticleDataset, VAEConfig]:
    """16-px toy data and a tiny model (3 epochs unless ``settings`` say otherwise)."""
    base = {"epochs": 3, "batch_size": 64, "enc_dim": 32, "dec_dim": 16, "n_basis": 4, "zdim": 2, "seed": 5}
    return toy_dataset(n, d=16, apix=6.0, seed=3), VAEConfig(**{**base, **settings})


@pytest.fixture(scope="session")
def vae_toy():
    """The :func:`toy_dataset` function."""
    return toy_dataset


@pytest.fixture(scope="session")
def vae_small():
    """The :func:`small` function."""
    return small


@pytest.fixture(scope="session")
def sample_settings():
    """Tiny VAE settings for the bundled 64-px sample (:data:`SAMPLE_SETTINGS`)."""
    return dict(SAMPLE_SETTINGS)


@pytest.fixture(scope="session")
def sample_star():
    """Path of the bundled sample's ``particles.star``."""
    return SAMPLE_STAR


def cancel_in_epoch(token, epoch: int):
    """A progress callback that cancels ``token`` at the first batch message of ``epoch``."""
    def progress(fraction, message):
        if message.startswith(f"epoch {epoch}/") and "batch" in message:
            token.cancel()

    return progress


@pytest.fixture(scope="session")
def cancel_at():
    """The :func:`cancel_in_epoch` function."""
    return cancel_in_epoch
