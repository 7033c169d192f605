"""The VAE stage in a workspace (issue 11): new runs for new settings, resume, latents by id."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cryohet.stages._common import Cancelled, CancelToken
from napari_cryohet.stages.protocol import ParticleMismatchError
from napari_cryohet.stages.registry import stage_spec
from napari_cryohet.stages.vae import VAEConfig, VAEResult, latents_epoch_path, train_vae
from napari_cryohet.stages.vae.stage import STAGE
from napari_cryohet.stages.workspace import Workspace


@pytest.fixture
def ws(tmp_path, sample_star):
    return Workspace.create(tmp_path / "ws", sample_star)


def test_stage_is_registered():
    spec = stage_spec("vae")
    assert spec is STAGE and spec.config is VAEConfig and spec.result is VAEResult and spec.inputs == {}
    assert "Kimanius" in spec.title


def test_other_beta_in_the_same_workspace_is_a_new_run_and_model(ws, sample_settings):
    """The issue's reproduction: the second run (β = 5) used to return the first run's model."""
    cfg = VAEConfig(epochs=1, **sample_settings)
    first = ws.run("vae", cfg)
    second = ws.run("vae", VAEConfig(**{**cfg.to_dict(), "beta": 5.0}))
    assert (first.run_id, second.run_id) == ("vae/0001", "vae/0002")
    assert ws.manifest("vae/0002")["config"]["beta"] == 5.0
    a, b = first.model.state_dict(), second.model.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in ("basis", "encoder.inp.weight"))
    assert not np.array_equal(first.latents, second.latents)
    # both runs are kept and load back as they were
    np.testing.assert_array_equal(ws.result("vae/0001").latents, first.latents)
    np.testing.assert_array_equal(ws.result("vae/0002").latents, second.latents)
    # the same settings again: the finished run, nothing recomputed
    messages = []
    again = ws.run("vae", cfg, progress=lambda f, m: messages.append(m))
    assert again.run_id == "vae/0001" and any("already done" in m for m in messages)
    assert [m["run_id"] for m in ws.runs("vae")] == ["vae/0001", "vae/0002"]


def test_cancelled_run_resumes_from_its_checkpoint(ws, sample_settings, cancel_at):
    cfg = VAEConfig(epochs=2, **sample_settings)
    token = CancelToken()
    with pytest.raises(Cancelled):
        ws.run("vae", cfg, progress=cancel_at(token, 2), cancel=token)
    assert ws.runs("vae")[0]["status"] == "cancelled"
    assert latents_epoch_path(ws.root / "vae" / "0001", 1).exists()
    messages = []
    resumed = ws.run("vae", cfg, progress=lambda f, m: messages.append(m))
    assert "resumed from epoch 1 of run vae/0001" in messages
    assert resumed.run_id == "vae/0001" and ws.manifest("vae/0001")["status"] == "done"
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    # resumed = uninterrupted
    full = train_vae(ws.dataset, cfg)
    np.testing.assert_array_equal(resumed.latents, full.latents)


def test_latents_by_run_id_are_aligned_to_the_dataset(ws, sample_settings):
    cfg = VAEConfig(epochs=1, **sample_settings)
    result = ws.run("vae", cfg)
    emb = ws.embedding("vae/0001")
    assert emb.run_id == "vae/0001" and emb.name == "latents" and emb.dim == 2
    np.testing.assert_array_equal(emb.aligned_to(ws.dataset), result.latents)
    # a run on part of the particles covers only them, and says so when used with all of them
    subset = ws.dataset.subset(np.arange(0, 200, 2))
    ws.run("vae", cfg, dataset=subset)
    part = ws.embedding("vae/0002")
    assert len(part) == 100
    np.testing.assert_array_equal(part.indices, subset.indices)
    with pytest.raises(ParticleMismatchError, match="vae/0002 has no values for 100 of the 200 particles"):
        part.aligned_to(ws.dataset)
