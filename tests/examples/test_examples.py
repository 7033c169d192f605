"""Every script of examples/ runs at tiny sizes: headless (the per-stage ones, sharing one
workspace as documented) and driving a napari viewer (the end-to-end one), with each
stage's result checked against the simulation's ground truth and its layers in the viewer."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pytest

from napari_cryohet import api
from napari_cryohet.stages.workspace import Workspace

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
STAGE_EXAMPLES = ["simulate_particles", "spectral_embedding", "chain_fit", "vae_latent_space",
                  "clustering_refinement"]


def run_example(name: str, monkeypatch, workspace: Path, *, viewer: bool = False) -> dict:
    monkeypatch.setenv("CRYOHET_EXAMPLE_SIZE", "tiny")
    monkeypatch.setenv("CRYOHET_EXAMPLE_WORKSPACE", str(workspace))
    if not viewer:
        monkeypatch.setenv("CRYOHET_NO_VIEWER", "1")
    return runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name="example")  # not __main__: no napari.run()


def test_every_example_is_a_gallery_script():
    """A docstring with a title underlined, one file per stage and one end to end."""
    names = sorted(p.stem for p in EXAMPLES.glob("*.py"))
    assert names == sorted([*STAGE_EXAMPLES, "end_to_end"])
    for name in names:
        doc = (EXAMPLES / f"{name}.py").read_text().split('"""')[1].strip().splitlines()
        assert len(doc) > 3 and set(doc[1]) == {"="} and len(doc[1]) == len(doc[0]), name


def test_stage_examples_headless_share_one_workspace(tmp_path, monkeypatch, one_thread, capsys):
    ws_dir = tmp_path / "ws"
    g = {name: run_example(name, monkeypatch, ws_dir) for name in STAGE_EXAMPLES}
    assert all(g[name]["viewer"] is None for name in STAGE_EXAMPLES)
    dataset = g["simulate_particles"]["dataset"]
    assert len(dataset) == 60 and dataset.box_size == 32
    # the first eigenvector orders the particles by their true trajectory frame
    assert g["spectral_embedding"]["rho"] > 0.6
    # chains fitted within a few Å of the truth after 2 epochs (atoms 3 Å wide, box 128 Å)
    last = g["chain_fit"]["fit"].history[-1]
    assert np.isfinite(last["avg_error_a"]) and last["avg_error_a"] < 8.0
    model = g["vae_latent_space"]["model"]
    assert g["vae_latent_space"]["latents"].shape == (60, 2)
    assert g["vae_latent_space"]["volume"].shape == (32, 32, 32)
    clusters = g["clustering_refinement"]["clusters"]
    assert clusters.run_id == "refine/0001" and set(np.unique(clusters.final_labels)) == {0, 1}
    assert np.array_equal(np.sort(clusters.particle_indices), np.sort(dataset.indices))
    # the examples use the same settings for the stages they share: each stage ran once
    ws = Workspace.open(ws_dir)
    assert sorted(m["run_id"] for m in ws.runs()) == ["chainfit/0001", "refine/0001", "simulate/0001",
                                                      "spectral/0001", "vae/0001"]
    assert ws.manifest("refine/0001")["inputs"] == {"embedding": model.run_id}
    out = capsys.readouterr().out
    print(out)
    assert "|Spearman rho|" in out and "Cα error" in out


@pytest.mark.gui
def test_end_to_end_example_drives_a_viewer(tmp_path, monkeypatch, make_napari_viewer, one_thread):
    """The end-to-end example in a napari window: each stage's result, and its scene's layers."""
    viewer = make_napari_viewer()
    monkeypatch.setattr(api, "viewer_if_available", lambda **kw: viewer)
    g = run_example("end_to_end", monkeypatch, tmp_path / "ws", viewer=True)
    assert g["viewer"] is viewer
    assert g["embedding"].eigenvectors.shape == (60, 4)
    assert g["fit"].history[-1]["avg_error_a"] < 8.0
    assert set(g["headlines"]) >= {"simulate", "spectral", "chainfit", "vae", "refine"}
    from napari_cryohet.plugin.session import Session

    session = Session.for_viewer(viewer)
    assert session.workspace is not None and session.workspace.root == tmp_path / "ws"
    scenes = session.scenes.scenes
    for name in ["Particles · adk_chain", "Spectral embedding · spectral/0001", "Chain fit · chainfit/0001",
                 "VAE latent space · vae/0001", "Clustering · refine/0001"]:
        assert name in scenes and scenes[name].layers, name
    latents = scenes["VAE latent space · vae/0001"].layers[0]
    assert len(latents.data) == 60
    # the last result's scene is the one shown
    shown = {layer.name for layer in viewer.layers}
    assert {layer.name for layer in scenes["Clustering · refine/0001"].layers} <= shown
