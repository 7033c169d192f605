"""VAE stage (stages/vae.py): latent separation, reconstruction quality, resume, cancel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from napari_cryohet.core.atoms import gaussian_density_3d
from napari_cryohet.core.fsc import fourier_shell_correlation, resolution_at
from napari_cryohet.core.particle_dataset import CTFParams, ParticleDataset
from napari_cryohet.core.projection import apply_ctf_and_shift, project_gaussian_atoms
from napari_cryohet.core.rotation import random_rotations
from napari_cryohet.io.errors import CryohetInputError, MissingColumnError
from napari_cryohet.stages._common import Cancelled, CancelToken
from napari_cryohet.stages.vae import (
    VAEConfig,
    VAEResult,
    embed_latents,
    embedding_to_latent,
    latent_path,
    train_vae,
)


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


@pytest.fixture(scope="module")
def trained():
    ds = toy_dataset(1500)
    # Larger steps than the defaults (which are tuned on the 10 000-particle benchmark):
    # 1500 particles give few optimiser steps, and this keeps the fixture short.
    cfg = VAEConfig(epochs=12, batch_size=64, lr=3e-3, lr_basis=3e-3, lr_schedule="constant", beta=0.3,
                    prior_weight=0.0, seed=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: one thread is faster on a shared 2-core machine
    try:
        return ds, train_vae(ds, cfg)
    finally:
        torch.set_num_threads(threads)


def test_latents_separate_two_conformations(trained):
    ds, res = trained
    y = ds.ground_truth["state"]
    assert res.latents.shape == (len(ds), 8)
    acc = cross_val_score(LogisticRegression(max_iter=2000), res.latents, y, cv=5).mean()
    assert acc >= 0.95, acc
    # the loss went down, epoch by epoch on the whole
    losses = [h["loss"] for h in res.history]
    assert len(losses) == 12 and losses[-1] < losses[0]


def test_decoded_volumes_match_their_conformation(trained):
    """FSC(decoded, truth) reaches 0.5 at ≤ 14 Å (Nyquist 6 Å, SNR 0.1, 750 particles/state);
    each decoded volume is closer to its own conformation than to the other one."""
    ds, res = trained
    y = ds.ground_truth["state"]
    truth = ds.ground_truth["global/volumes"]
    picks = np.concatenate([np.flatnonzero(y == 0)[:3], np.flatnonzero(y == 1)[:3]])
    vols = res.decode(res.latents[picks])
    assert vols.shape == (6, 32, 32, 32)
    for vol, state in zip(vols, y[picks], strict=True):
        f, own = fourier_shell_correlation(vol, truth[state])
        _, other = fourier_shell_correlation(vol, truth[1 - state])
        assert resolution_at(f, own, apix=ds.apix, threshold=0.5) <= 14.0
        assert own[1:9].mean() > other[1:9].mean()


def _small(n=192, **kw):
    return toy_dataset(n, d=16, apix=6.0, seed=3), VAEConfig(epochs=3, batch_size=64, enc_dim=32, dec_dim=16,
                                                             n_basis=4, zdim=2, seed=5, **kw)


def test_cancel_then_resume_reproduces_uninterrupted_run(tmp_path):
    ds, cfg = _small(workspace=str(tmp_path / "a"))
    full = train_vae(ds, cfg)

    token = CancelToken()

    def progress(fraction, message):
        if message.startswith("epoch 2/3 batch"):
            token.cancel()

    cfg_b = VAEConfig(**{**cfg.__dict__, "workspace": str(tmp_path / "b")})
    with pytest.raises(Cancelled):
        train_vae(ds, cfg_b, progress=progress, cancel=token)
    # epoch 1 was checkpointed; epoch 2 was interrupted within its first batches
    assert (tmp_path / "b" / "vae" / "latents_epoch_001.npz").exists()
    assert not (tmp_path / "b" / "vae" / "latents_epoch_002.npz").exists()
    resumed = train_vae(ds, cfg_b)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    np.testing.assert_array_equal(full.latents, resumed.latents)
    # per-epoch latents of all particles in the workspace
    for e in (1, 2, 3):
        lat = np.load(tmp_path / "a" / "vae" / f"latents_epoch_{e:03d}.npz")
        assert lat["mu"].shape == (len(ds), 2) and np.isfinite(lat["mu"]).all()
        np.testing.assert_array_equal(lat["indices"], ds.indices)


def test_result_save_load_round_trip(tmp_path):
    ds, cfg = _small(n=128)
    cfg.epochs = 1
    res = train_vae(ds, cfg)
    res.save(tmp_path)
    back = VAEResult.load(tmp_path)
    np.testing.assert_array_equal(back.latents, res.latents)
    z = res.latents[:2]
    np.testing.assert_allclose(back.decode(z), res.decode(z), rtol=1e-6, atol=1e-6)
    assert back.history == res.history and back.config.zdim == 2


def test_bad_inputs(tmp_path):
    ds, cfg = _small(n=64)
    no_pose = ParticleDataset(images=ds.images, apix=ds.apix)
    with pytest.raises(MissingColumnError):
        train_vae(no_pose, cfg)
    with pytest.raises(ValueError, match="batch_size"):
        train_vae(ds, VAEConfig(batch_size=0))
    # resuming a workspace with another model shape is refused with a named error
    cfg.epochs, cfg.workspace = 1, str(tmp_path)
    train_vae(ds, cfg)
    other = VAEConfig(**{**cfg.__dict__, "zdim": 3})
    with pytest.raises(CryohetInputError, match="model_shape"):
        train_vae(ds, other)
    with pytest.raises(CryohetInputError, match="train first"):
        VAEResult.load(tmp_path / "nothing")


def test_latent_helpers():
    rng = np.random.default_rng(0)
    lat = np.concatenate([rng.normal(0, 0.1, (50, 4)), rng.normal(3, 0.1, (50, 4))]).astype(np.float32)
    emb = embed_latents(lat, method="pca2")
    assert emb.shape == (100, 2)
    # PCA's first axis separates the two clusters
    assert abs(emb[:50, 0].mean() - emb[50:, 0].mean()) > 5
    back = embedding_to_latent(emb[[0, 75]], emb, lat, k=5)
    np.testing.assert_allclose(back[0], lat[:50].mean(0), atol=0.2)
    np.testing.assert_allclose(back[1], lat[50:].mean(0), atol=0.2)
    path = latent_path(np.stack([lat[0], lat[60], lat[99]]), 5)
    assert path.shape == (5, 4)
    np.testing.assert_allclose(path[0], lat[0])
    np.testing.assert_allclose(path[-1], lat[99])
    straight = latent_path(np.stack([lat[0], lat[99]]), 5)  # two end points: equal steps
    steps = np.linalg.norm(np.diff(straight, axis=0), axis=1)
    np.testing.assert_allclose(steps, np.linalg.norm(lat[99] - lat[0]) / 4, rtol=1e-5)
    with pytest.raises(ValueError, match="method"):
        embed_latents(lat, method="tsne")
    with pytest.raises(ValueError, match="n_steps"):
        latent_path(lat[:2], 1)
