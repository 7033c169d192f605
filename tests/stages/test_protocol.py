"""The stage protocol: config validation and round trip, fingerprints, embeddings, results."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_cryohet.io.errors import CorruptFileError, MissingFileError
from napari_cryohet.stages.protocol import ConfigWarning, Embedding, ParticleMismatchError


def test_config_validation_names_the_field(toy):
    with pytest.raises(ValueError, match=r"ToyConfig\.rate: expected a value <= 1"):
        toy.ToyConfig(rate=2.0)
    with pytest.raises(ValueError, match=r"ToyConfig\.mode: expected one of \('table', 'input'\)"):
        toy.ToyConfig(mode="other")
    with pytest.raises(ValueError, match=r"ToyConfig\.epochs: expected at least 1"):
        toy.ToyConfig(mode="input", epochs=0)


def test_from_dict_survives_unknown_and_missing_keys(toy):
    saved = toy.ToyConfig(epochs=7, masked=(1, 3)).to_dict()
    assert saved["masked"] == [1, 3]  # JSON-friendly
    saved = json.loads(json.dumps(saved))
    saved["renamed_long_ago"] = 5  # a field this version does not know
    del saved["rate"]  # a field added after the file was written
    with pytest.warns(ConfigWarning, match="renamed_long_ago"):
        cfg = toy.ToyConfig.from_dict(saved)
    assert cfg.epochs == 7 and cfg.masked == (1, 3) and cfg.rate == toy.ToyConfig().rate


def test_fingerprint_tracks_science_fields_only(toy):
    base = toy.ToyConfig()
    assert base.fingerprint() == toy.ToyConfig().fingerprint()
    assert base.fingerprint() == toy.ToyConfig(device="cuda").fingerprint()  # runtime-only
    assert base.fingerprint() != toy.ToyConfig(rate=0.25).fingerprint()
    assert base.fingerprint() != toy.ToyConfig(masked=(0,)).fingerprint()
    # survives a JSON round trip (tuples → lists → tuples)
    assert toy.ToyConfig.from_dict(json.loads(json.dumps(base.to_dict()))).fingerprint() == base.fingerprint()
    assert base.differences(toy.ToyConfig(rate=0.25).to_dict()) == {"rate": (0.25, 0.5)}


def test_embedding_from_shuffled_subset_aligns_by_particle_index(rng):
    from napari_cryohet.core.particle_dataset import ParticleDataset

    n = 30
    ds = ParticleDataset(images=np.zeros((n, 4, 4), np.float32), apix=1.0)
    values = rng.normal(size=(n, 3))
    full = Embedding.for_dataset(values, ds, name="latents")
    order = rng.permutation(n)
    shuffled = Embedding(values[order], ds.indices[order], name="latents")  # same particles, other rows
    np.testing.assert_array_equal(shuffled.aligned_to(ds), values)
    subset = ds.subset(rng.permutation(n)[:10])  # a shuffled subset of the dataset
    np.testing.assert_array_equal(shuffled.aligned_to(subset), values[subset.indices])
    np.testing.assert_array_equal(full.aligned_to(subset), shuffled.aligned_to(subset))
    partial = Embedding(values[:20], ds.indices[:20], run_id="vae/0001")
    with pytest.raises(ParticleMismatchError, match=r"vae/0001 has no values for 10 of the 30 particles"):
        partial.aligned_to(ds)


def test_embedding_file_round_trip(tmp_path, rng):
    emb = Embedding(rng.normal(size=(5, 2)), np.array([4, 0, 9, 2, 7]), run_id="spectral/0002", name="eigenvectors")
    emb.save(tmp_path / "e.npz")
    back = Embedding.load(tmp_path / "e.npz")
    np.testing.assert_array_equal(back.values, emb.values)
    np.testing.assert_array_equal(back.indices, emb.indices)
    assert (back.run_id, back.name) == ("spectral/0002", "eigenvectors")
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(CorruptFileError, match="bad.npz"):
        Embedding.load(tmp_path / "bad.npz")


def test_result_load_named_errors(toy, tmp_path):
    with pytest.raises(MissingFileError, match="no toy result"):
        toy.ToyResult.load(tmp_path / "nowhere")
    res = toy.ToyResult(np.arange(3.0), np.arange(3), 2)
    res.save(tmp_path / "r")
    back = toy.ToyResult.load(tmp_path / "r")
    np.testing.assert_array_equal(back.values, res.values)
    (tmp_path / "r" / "toy.npz").write_bytes(b"garbage")
    with pytest.raises(CorruptFileError, match="unreadable toy result"):
        toy.ToyResult.load(tmp_path / "r")
    info = json.loads((tmp_path / "r" / "result.json").read_text())
    info["format_version"] = 99
    (tmp_path / "r" / "result.json").write_text(json.dumps(info))
    with pytest.raises(CorruptFileError, match="format 99"):
        toy.ToyResult.load(tmp_path / "r")


def test_retired_settings_are_dropped_without_a_warning():
    import warnings

    from napari_cryohet.stages.vae import VAEConfig

    saved = {**VAEConfig(beta=0.3).to_dict(), "workspace": "old/ws", "resume": True}  # an older version's file
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert VAEConfig.from_dict(saved) == VAEConfig(beta=0.3)
    with pytest.warns(ConfigWarning, match="no_such_setting"):
        VAEConfig.from_dict({**saved, "no_such_setting": 1})
