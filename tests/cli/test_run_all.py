"""``cryohet run-all --config``: a tiny pipeline from one YAML file into a workspace that napari
opens as is (every stage's scene and layers), reused when run again; bad files named."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryohet.cli import main
from napari_cryohet.stages.workspace import Workspace

TINY = """\
workspace: ws
dataset:
  sample: adk_chain
  n_particles: 60
  seed: 0
  args: {box_size: 32, apix: 4.0}
stages:
  - stage: spectral
    settings: {n_components: 10, k: 10, n_eigenvectors: 4}
  - stage: chainfit
    settings: {n_eigenvectors: 4, epochs: 2, batch_size: 30}
    inputs: {eigenvectors: spectral}
  - stage: vae
    settings: {epochs: 1, zdim: 2, n_basis: 4, enc_dim: 32, enc_blocks: 1, dec_dim: 16, dec_blocks: 1,
               normalisation_images: 32, batch_size: 30}
  - stage: refine
    settings: {n_clusters: 2, n_iterations: 1, refine_poses: false, min_cluster_size: 5,
               embedding_method: none, device: cpu}
    inputs: {embedding: vae}
"""
RUNS = ["chainfit/0001", "refine/0001", "simulate/0001", "spectral/0001", "vae/0001"]


@pytest.fixture
def pipeline(tmp_path, one_thread, capsys):
    """run-all on the tiny config (the workspace is relative to the file's folder)."""
    config = tmp_path / "config.yaml"
    config.write_text(TINY)
    assert main(["run-all", "--config", str(config)]) == 0, capsys.readouterr().err
    return config, tmp_path / "ws", capsys.readouterr().out


def test_run_all_makes_every_run_and_reuses_them(pipeline, capsys):
    config, root, out = pipeline
    ws = Workspace.open(root)
    assert sorted(m["run_id"] for m in ws.runs()) == RUNS
    assert all(m["status"] == "done" for m in ws.runs())
    assert ws.manifest("chainfit/0001")["inputs"] == {"eigenvectors": "spectral/0001"}
    assert ws.manifest("refine/0001")["inputs"] == {"embedding": "vae/0001"}
    assert ws.manifest("spectral/0001")["config"]["n_eigenvectors"] == 4
    assert ws.result("spectral").eigenvectors.shape == (60, 4)
    assert set(np.unique(ws.result("refine").final_labels)) == {0, 1}
    assert "refine/0001: done" in out and str(root.resolve()) in out
    # the same file again: nothing recomputed, no new run
    assert main(["run-all", "--config", str(config)]) == 0
    again = capsys.readouterr().out
    reused = [line for line in again.splitlines() if ": done in" in line and "nothing recomputed" in line]
    assert len(reused) == 4
    assert sorted(m["run_id"] for m in ws.runs()) == RUNS


@pytest.mark.gui
def test_napari_opens_the_run_all_workspace_as_is(pipeline, make_napari_viewer):
    from napari_cryohet.plugin.session import Session

    _, root, _ = pipeline
    viewer = make_napari_viewer()
    session = Session.for_viewer(viewer)
    session.use_workspace(root)
    assert len(session.dataset) == 60
    scenes = session.scenes.scenes
    for name, n_layers in [("Particles · adk_chain", 1), ("Spectral embedding · spectral/0001", 1),
                           ("Chain fit · chainfit/0001", 4), ("VAE latent space · vae/0001", 1),
                           ("Clustering · refine/0001", 2)]:
        assert name in scenes and len(scenes[name].layers) >= n_layers, name
    points = scenes["Spectral embedding · spectral/0001"].layers[0]
    assert len(points.data) == 60
    assert [r for r, _ in session.run_choices(["spectral"])] == ["spectral/0001"]


@pytest.mark.parametrize("text, field, words", [
    ("workspace: ws\nstages: [{stage: spectrl}]\n", "stages[0].stage", "expected one of"),
    ("workspace: ws\nstages: [{stage: spectral, settings: {n_eigen: 3}}]\n", "stages[0].settings.n_eigen",
     "spectral has no such setting"),
    ("workspace: ws\nstages: [{stage: spectral, settings: {k: 0}}]\n", "stages[0].settings", "k"),
    ("workspace: ws\nstages: [{stage: chainfit, inputs: {eigen: spectral}}]\n", "stages[0].inputs.eigen",
     "takes the inputs"),
    ("workspace: ws\ndataset: {sample: adk_chain, star: a.star}\n", "dataset", "either"),
    ("workspace: ws\nstagse: []\n", "stagse", "unknown key"),
    ("workspace: [ws\n", "", "not readable as YAML"),
])
def test_bad_settings_files_are_named(tmp_path, capsys, text, field, words):
    config = tmp_path / "config.yaml"
    config.write_text(text)
    assert main(["run-all", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{config}" in err and words in err and (f"[{field}]" in err if field else True), err
    assert not (tmp_path / "ws").exists()  # nothing started


def test_json_file_and_a_star_dataset(tmp_path, capsys, one_thread):
    """The same format in JSON, on the bundled .star file, workspace given on the command line."""
    import json
    from pathlib import Path

    star = Path(__file__).resolve().parents[2] / "sample_data" / "adk_small" / "particles.star"
    config = tmp_path / "pipeline.json"
    config.write_text(json.dumps({"dataset": {"star": str(star)}, "stages": [
        {"stage": "spectral", "settings": {"representation": "pca_images", "n_components": 10, "k": 10,
                                           "n_eigenvectors": 3}}]}))
    assert main(["run-all", "--config", str(config), "--workspace", str(tmp_path / "w2")]) == 0, \
        capsys.readouterr().err
    ws = Workspace.open(tmp_path / "w2")
    assert ws.info["source"]["path"] == str(star.resolve())
    assert ws.result("spectral/0001").eigenvectors.shape == (200, 3)
