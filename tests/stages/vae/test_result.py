"""The VAE result (stages/vae/result.py): save/load, older results, safe loading, embedding."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch

from napari_cryohet.io.errors import CorruptFileError, MissingFileError
from napari_cryohet.io.json_files import read_json, write_json
from napari_cryohet.stages.protocol import RESULT_INFO, Embedding, ParticleMismatchError
from napari_cryohet.stages.vae import VAEResult, train_vae


@pytest.fixture(scope="module")
def one_epoch(vae_small):
    ds, cfg = vae_small(n=128, epochs=1)
    return ds, train_vae(ds, cfg)


def test_save_load_round_trip(tmp_path, one_epoch):
    ds, res = one_epoch
    res.save(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"model.pt", "latents.npz", "history.json", "config.json",
                                                    RESULT_INFO}
    back = VAEResult.load(tmp_path)
    np.testing.assert_array_equal(back.latents, res.latents)
    np.testing.assert_array_equal(back.particle_indices, ds.indices)
    z = res.latents[:2]
    np.testing.assert_allclose(back.decode(z), res.decode(z), rtol=1e-6, atol=1e-6)
    assert back.history == res.history and back.config == res.config


def test_result_of_an_earlier_version_loads(tmp_path, one_epoch):
    """No result.json, and config.json with the settings the workspace now decides."""
    _, res = one_epoch
    res.save(tmp_path)
    (tmp_path / RESULT_INFO).unlink()
    old = read_json(tmp_path / "config.json") | {"workspace": "/somewhere", "resume": True}
    write_json(tmp_path / "config.json", old)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = VAEResult.load(tmp_path)
    assert back.config == res.config


def test_unreadable_results_raise_named_errors(tmp_path, one_epoch):
    _, res = one_epoch
    with pytest.raises(MissingFileError, match="run it first"):
        VAEResult.load(tmp_path / "nothing")
    res.save(tmp_path)
    (tmp_path / "latents.npz").unlink()
    with pytest.raises(MissingFileError, match="latents.npz"):
        VAEResult.load(tmp_path)
    res.save(tmp_path)

    class Payload:  # unpickling this would run code: weights_only refuses it
        def __reduce__(self):
            return (print, ("ran code from the file",))

    torch.save({"model_shape": {}, "model": {}, "payload": Payload()}, tmp_path / "model.pt")
    with pytest.raises(CorruptFileError, match="model.pt"):
        VAEResult.load(tmp_path)
    res.save(tmp_path)
    with open(tmp_path / "latents.npz", "wb") as fh:
        pickle.dump({"mu": np.zeros(3)}, fh)
    with pytest.raises(CorruptFileError, match="latents.npz"):
        VAEResult.load(tmp_path)


def test_embedding_is_the_latents_keyed_on_particles(one_epoch):
    ds, res = one_epoch
    emb = res.embedding()
    assert isinstance(emb, Embedding) and emb.name == "latents"
    np.testing.assert_array_equal(emb.aligned_to(ds), res.latents)
    reordered = ds.subset(np.arange(len(ds))[::-1].copy())
    np.testing.assert_array_equal(emb.aligned_to(reordered), res.latents[::-1])
    part = VAEResult(model=res.model, config=res.config, latents=res.latents[:10], logvar=res.logvar[:10],
                     indices=res.indices[:10], apix=res.apix)
    with pytest.raises(ParticleMismatchError, match="no values for 118 of the 128 particles"):
        part.embedding().aligned_to(ds)
