"""Warm-started VAE training (train_vae(initial=...), fine_tune_vae): a few more epochs of a
trained model on refined poses, as the thesis re-trains cryoDRGN on them (Silvera Coeff 2025,
§4.1.6)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from napari_cryohet.core.particle_dataset import ParticleDataset
from napari_cryohet.stages._common import Cancelled, CancelToken
from napari_cryohet.stages.checkpoint import CheckpointMismatchError
from napari_cryohet.stages.vae import VAEConfig, train_vae
from napari_cryohet.stages.vae.train import fine_tune_vae

_FIRST_BATCH = re.compile(r"^epoch 1/\d+ batch 1/\d+ loss (\S+)$")


def _first_batch_loss(messages: list[str]) -> float:
    return next(float(m.group(1)) for m in map(_FIRST_BATCH.match, messages) if m)


def _refined(ds: ParticleDataset, *, deg: float, seed: int) -> ParticleDataset:
    """``ds`` with every rotation changed by a random ``deg``-degree rotation (stand-in for refined poses)."""
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=(len(ds), 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    k = np.zeros((len(ds), 3, 3))
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    k -= k.transpose(0, 2, 1)
    t = np.deg2rad(deg)
    delta = np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k
    rot = (delta @ ds.rotations).astype(np.float32)
    return ParticleDataset(images=ds.images, apix=ds.apix, rotations=rot, shifts_a=ds.shifts_a, ctf=ds.ctf,
                           ground_truth=ds.ground_truth)


def _r2(target: np.ndarray, source: np.ndarray) -> float:
    """R² of the best affine map ``source → target`` (least squares), over all coordinates."""
    x = np.column_stack([source, np.ones(len(source))])
    coef, *_ = np.linalg.lstsq(x, target, rcond=None)
    resid = target - x @ coef
    return float(1.0 - (resid ** 2).sum() / ((target - target.mean(0)) ** 2).sum())


@pytest.fixture(scope="module")
def initial(vae_small):
    ds, cfg = vae_small(n=256, epochs=6, lr=3e-3, lr_basis=3e-3, beta=0.3, prior_weight=0.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return ds, cfg, train_vae(ds, cfg)
    finally:
        torch.set_num_threads(threads)


def test_one_warm_epoch_starts_from_the_initial_weights(initial):
    ds, cfg, init = initial
    before = {k: v.detach().clone() for k, v in init.model.state_dict().items()}
    latents_before = init.latents.copy()
    refined = _refined(ds, deg=2.0, seed=11)

    warm_msgs, fresh_msgs = [], []
    warm = fine_tune_vae(init, refined, 1, progress=lambda f, m: warm_msgs.append(m))
    fresh = train_vae(refined, VAEConfig(**{**cfg.to_dict(), "epochs": 1}), progress=lambda f, m: fresh_msgs.append(m))
    warm_loss, fresh_loss = _first_batch_loss(warm_msgs), _first_batch_loss(fresh_msgs)
    r2_warm, r2_fresh = _r2(warm.latents, init.latents), _r2(fresh.latents, init.latents)
    print(f"\nfirst-batch loss: warm {warm_loss:.4f}, fresh {fresh_loss:.4f}, initial's last epoch "
          f"{init.history[-1]['loss']:.4f}; latent R² vs initial: warm {r2_warm:.3f}, fresh {r2_fresh:.3f}")
    assert any(m.startswith("warm start") for m in warm_msgs)
    # the first batch already sees the trained model: its loss is far below a fresh model's
    # (and near the initial run's final epoch loss), not the fresh model's start
    assert warm_loss < fresh_loss - 0.5 * (fresh_loss - init.history[-1]["loss"]), (warm_loss, fresh_loss)
    # the latent space is the initial one (same axes up to an affine map), unlike a fresh model's
    assert r2_warm >= 0.8 and r2_warm > r2_fresh + 0.2, (r2_warm, r2_fresh)
    assert len(warm.history) == 1 and warm.history[0]["epoch"] == 1 and warm.config.epochs == 1
    # the initial result is not changed
    after = init.model.state_dict()
    assert after.keys() == before.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    np.testing.assert_array_equal(init.latents, latents_before)
    # the warm model is a copy, not the same tensors
    assert warm.model is not init.model
    assert not torch.equal(warm.model.basis.detach(), init.model.basis.detach())


def test_mismatching_model_shape_is_refused_naming_the_field(initial, vae_toy):
    ds, cfg, init = initial
    with pytest.raises(ValueError, match=r"zdim: 2 \(initial\) vs 3"):
        train_vae(ds, VAEConfig(**{**cfg.to_dict(), "zdim": 3}), initial=init)
    with pytest.raises(ValueError, match=r"n_basis: 4 \(initial\) vs 8.*enc_dim: 32 \(initial\) vs 64"):
        train_vae(ds, VAEConfig(**{**cfg.to_dict(), "n_basis": 8, "enc_dim": 64}), initial=init)
    with pytest.raises(ValueError, match=r"box_size: 16 \(initial\) vs 32"):
        fine_tune_vae(init, vae_toy(8, d=32, apix=3.0), 1)
    with pytest.raises(ValueError, match=r"apix: 6\.0 \(initial\) vs 5\.0"):
        fine_tune_vae(init, ParticleDataset(images=ds.images, apix=5.0, rotations=ds.rotations), 1)
    with pytest.raises(TypeError):
        fine_tune_vae(init, ds, 1, zdimm=3)


def test_warm_start_resumes_from_its_checkpoint(tmp_path, initial, cancel_at):
    """A cancelled warm start resumes from its checkpoint (not from ``initial``) and ends with
    the weights of an uninterrupted warm start; a checkpoint of other weights is refused."""
    ds, _, init = initial
    refined = _refined(ds, deg=2.0, seed=12)
    full = fine_tune_vae(init, refined, 2)
    token = CancelToken()
    with pytest.raises(Cancelled):
        fine_tune_vae(init, refined, 2, run_dir=tmp_path / "w", progress=cancel_at(token, 2), cancel=token)
    messages = []
    resumed = fine_tune_vae(init, refined, 2, run_dir=tmp_path / "w", progress=lambda f, m: messages.append(m))
    assert any(m.startswith("resumed from epoch 1 of run") for m in messages)
    assert not any(m.startswith("warm start") for m in messages)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
    # a fresh (not warm-started) run's checkpoint does not belong to a warm start, nor does a
    # warm start's checkpoint to a warm start from other weights
    cfg1 = VAEConfig(**{**init.config.to_dict(), "epochs": 1})
    train_vae(refined, cfg1, run_dir=tmp_path / "fresh")
    with pytest.raises(CheckpointMismatchError, match="initial weights"):
        train_vae(refined, cfg1, run_dir=tmp_path / "fresh", initial=init)
    with pytest.raises(CheckpointMismatchError, match="initial weights"):
        fine_tune_vae(full, refined, 2, run_dir=tmp_path / "w")
