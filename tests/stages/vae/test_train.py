"""VAE training (stages/vae/train.py): latent separation, reconstruction quality, resume, cancel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from napari_cryohet.core.fsc import fourier_shell_correlation, resolution_at
from napari_cryohet.core.particle_dataset import ParticleDataset
from napari_cryohet.io.errors import MissingColumnError
from napari_cryohet.stages._common import Cancelled, CancelToken
from napari_cryohet.stages.checkpoint import CheckpointMismatchError
from napari_cryohet.stages.vae import VAEConfig, latents_epoch_path, train_vae


@pytest.fixture(scope="module")
def trained(vae_toy):
    ds = vae_toy(1500)
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


def test_cancel_then_resume_reproduces_uninterrupted_run(tmp_path, vae_small, cancel_at):
    ds, cfg = vae_small()
    full = train_vae(ds, cfg, run_dir=tmp_path / "a")

    token = CancelToken()
    with pytest.raises(Cancelled):
        train_vae(ds, cfg, run_dir=tmp_path / "b", progress=cancel_at(token, 2), cancel=token)
    # epoch 1 was checkpointed; epoch 2 was interrupted within its first batches
    assert latents_epoch_path(tmp_path / "b", 1).exists()
    assert not latents_epoch_path(tmp_path / "b", 2).exists()
    messages = []
    resumed = train_vae(ds, cfg, run_dir=tmp_path / "b", progress=lambda f, m: messages.append(m))
    assert f"resumed from epoch 1 of run {tmp_path.name}/b" in messages
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    np.testing.assert_array_equal(full.latents, resumed.latents)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
    # in memory (no run_dir) the same settings give the same model: checkpoints do not change it
    in_memory = train_vae(ds, cfg)
    np.testing.assert_array_equal(in_memory.latents, full.latents)
    # per-epoch latents of all particles in the run directory; the result itself is not written
    for e in (1, 2, 3):
        with np.load(latents_epoch_path(tmp_path / "a", e), allow_pickle=False) as lat:
            assert lat["mu"].shape == (len(ds), 2) and np.isfinite(lat["mu"]).all()
            np.testing.assert_array_equal(lat["indices"], ds.indices)
    assert not (tmp_path / "a" / "model.pt").exists()


def test_checkpoint_of_other_settings_is_refused_naming_them(tmp_path, vae_small):
    """Resuming a run directory with another β raises, naming β — never the old model."""
    ds, cfg = vae_small(n=64, epochs=1)
    train_vae(ds, cfg, run_dir=tmp_path)
    other = VAEConfig(**{**cfg.to_dict(), "beta": 5.0})
    with pytest.raises(CheckpointMismatchError, match=r"beta: 0\.1 → 5\.0"):
        train_vae(ds, other, run_dir=tmp_path)
    # the device is not a setting of the science: another one resumes the same run
    same = VAEConfig(**{**cfg.to_dict(), "device": "cpu"})
    messages = []
    train_vae(ds, same, run_dir=tmp_path, progress=lambda f, m: messages.append(m))
    assert any(m.startswith("resumed from epoch 1 of run") for m in messages)
    # other particles (same count) are refused too
    with pytest.raises(CheckpointMismatchError, match="particles differ"):
        train_vae(ds.subset(np.arange(64)[::-1].copy()), cfg, run_dir=tmp_path)


def test_bad_inputs(vae_small):
    ds, cfg = vae_small(n=64)
    no_pose = ParticleDataset(images=ds.images, apix=ds.apix)
    with pytest.raises(MissingColumnError):
        train_vae(no_pose, cfg)
    with pytest.raises(ValueError, match="batch_size"):
        train_vae(ds, VAEConfig(batch_size=0))
    with pytest.raises(ValueError, match=r"VAEConfig\.lr: expected a value > 0"):
        VAEConfig(lr=0.0)
    with pytest.raises(ValueError, match=r"VAEConfig\.lr_schedule"):
        VAEConfig(lr_schedule="linear")
