"""The spectral stage in the workspace and from the command line: runs by id, inputs by run id."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from napari_cryohet.stages.spectral import SpectralConfig, SpectralResult
from napari_cryohet.stages.workspace import Workspace

STAR = Path(__file__).resolve().parents[2] / "sample_data" / "adk_small" / "particles.star"

TABLE = dict(representation="table", columns=("value",), n_components=None, k=6, n_eigenvectors=4)


@pytest.fixture
def ws(toy, tmp_path):
    w = Workspace.create(tmp_path / "ws", STAR)
    w._dataset = toy.toy_dataset(40)
    return w


def test_runs_by_id_new_config_new_run(toy, ws):
    first = ws.run("spectral", SpectralConfig(**TABLE))
    assert first.run_id == "spectral/0001" and first.eigenvectors.shape == (40, 4)
    saved = ws.result("spectral/0001")
    np.testing.assert_array_equal(saved.eigenvectors, first.eigenvectors)
    assert saved.config == first.config and saved.run_id == "spectral/0001"
    assert (ws.root / "spectral" / "0001" / "spectral.npz").is_file()
    emb = ws.embedding("spectral/0001")
    assert emb.name == "eigenvectors" and emb.run_id == "spectral/0001"
    np.testing.assert_array_equal(emb.indices, np.arange(40))
    # the same settings: the finished run; device is not a science setting
    assert ws.run("spectral", SpectralConfig(**TABLE, device="cpu")).run_id == "spectral/0001"
    # another setting: a new run, the old one untouched
    second = ws.run("spectral", SpectralConfig(**dict(TABLE, k=8)))
    assert second.run_id == "spectral/0002"
    assert [m["config"]["k"] for m in ws.runs("spectral")] == [6, 8]
    np.testing.assert_array_equal(ws.result("spectral/0001").eigenvectors, first.eigenvectors)
    # a spectral run's eigenvectors can be embedded again (input by run id)
    third = ws.run("spectral", SpectralConfig(representation="table", n_components=None, k=6, n_eigenvectors=3),
                   inputs={"features": "spectral/0001"})
    assert ws.manifest(third.run_id)["inputs"] == {"features": "spectral/0001"}
    assert third.provenance["representation"]["input_run"] == "spectral/0001"
    # only runs with per-particle vectors of the accepted stages are taken
    ws.run("toy", toy.ToyConfig(epochs=1))
    with pytest.raises(ValueError, match="'features' must be a run of vae or spectral or chainfit, got toy/0001"):
        ws.run("spectral", SpectralConfig(representation="table"), inputs={"features": "toy/0001"})


def test_features_input_from_another_run_on_a_shuffled_subset(spectral_takes_toy, ws, rng):
    toy = spectral_takes_toy
    latents = ws.run("toy", toy.ToyConfig(epochs=3))  # stands in for a VAE run: one value per particle
    subset = ws.dataset.subset(rng.permutation(40)[:30])
    cfg = SpectralConfig(representation="table", n_components=None, k=6, n_eigenvectors=4)
    res = ws.run("spectral", cfg, inputs={"features": latents.run_id}, dataset=subset)
    np.testing.assert_array_equal(res.indices, subset.indices)
    manifest = ws.manifest(res.run_id)
    assert manifest["inputs"] == {"features": "toy/0001"} and manifest["n_particles"] == 30
    # the same as handing the subset's own values over in its row order
    from napari_cryohet.stages.protocol import Embedding
    from napari_cryohet.stages.spectral import run_spectral

    direct = run_spectral(subset, cfg, features=Embedding.for_dataset(latents.values[subset.indices], subset))
    np.testing.assert_array_equal(res.eigenvalues, direct.eigenvalues)
    # the input is part of what identifies a run: without it, a new run from the table column
    plain = ws.run("spectral", dataclasses.replace(cfg, columns=("value",)), dataset=subset)
    assert plain.run_id != res.run_id


def test_cli_runs_in_the_workspace_and_prints_the_run_id(tmp_path, capsys):
    from napari_cryohet.cli import main

    args = ["spectral", "--workspace", str(tmp_path / "ws"), "--star", str(STAR), "--n-components", "12",
            "--k", "8", "--n-eigenvectors", "5", "--lowpass-a", "5", "--denoise-dim", "4", "--denoise-k", "40",
            "--denoise-iter", "2", "--alpha", "1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "spectral/0001: 200 particles x 5 eigenvectors (lowres_volumes)" in out
    res = SpectralResult.load(tmp_path / "ws" / "spectral" / "0001")
    cfg = res.config
    assert (cfg.denoise_dim, cfg.denoise_k, cfg.denoise_iter, cfg.alpha, cfg.lowpass_a) == (4, 40, 2, 1.0, 5.0)
    assert res.provenance["representation"]["denoise"] == {"dim": 4, "k": 40, "n_iter": 2}
    # the Laplacian of D^-1 W D^-1 still has orthonormal eigenvectors and a zero eigenvalue
    np.testing.assert_allclose(res.eigenvectors.T @ res.eigenvectors, np.eye(5), atol=1e-8)
    assert abs(res.eigenvalues[0]) < 1e-8
    # the same call again: the finished run, nothing recomputed; the workspace is reopened without --star
    assert main(args[:3] + args[5:]) == 0
    assert "spectral/0001:" in capsys.readouterr().out
    # a run's vectors as input: the table representation is chosen for them
    assert main(["spectral", "--workspace", str(tmp_path / "ws"), "--features", "spectral/0001", "--k", "8",
                 "--n-eigenvectors", "3"]) == 0
    assert "spectral/0002: 200 particles x 3 eigenvectors (table)" in capsys.readouterr().out
    # bad values end as one error line
    assert main(["spectral", "--workspace", str(tmp_path / "ws"), "--alpha", "2"]) == 2
    assert "SpectralConfig.alpha: expected a value <= 1" in capsys.readouterr().err
