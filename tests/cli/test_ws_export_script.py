"""``cryohet ws export-script``: the printed script, run into a new folder, makes the same runs
(same settings fingerprints, inputs mapped to the new ids) with the same arrays."""

from __future__ import annotations

import runpy
import sys

import numpy as np
import pytest

from napari_cryohet import api
from napari_cryohet.cli import main
from napari_cryohet.stages._common import Cancelled, CancelToken
from napari_cryohet.stages.workspace import Workspace

TINY_VAE = dict(epochs=1, zdim=2, n_basis=4, enc_dim=32, enc_blocks=1, dec_dim=16, dec_blocks=1,
                normalisation_images=32, batch_size=30)


@pytest.fixture
def original(tmp_path, one_thread):
    """A tiny workspace with a cancelled run (it takes spectral/0001), a run on a subset of the
    particles, and a chain spectral → chain fit, VAE → clustering."""
    root = tmp_path / "original"
    api.simulate(root, recipe="adk_chain", n_particles=60, box_size=32, apix=4.0)
    ws = Workspace.open(root)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        ws.run("spectral", {"representation": "lowres_volumes", "n_components": 8, "k": 8}, cancel=token)
    api.spectral(ws, n_components=10, k=10, n_eigenvectors=4)
    ws.run("spectral", {"representation": "lowres_volumes", "n_components": 10, "k": 8, "n_eigenvectors": 3},
           dataset=ws.dataset.subset(np.arange(40)))
    api.chainfit(ws, eigenvectors="spectral/0002", n_eigenvectors=4, epochs=2, batch_size=30)
    api.vae(ws, **TINY_VAE)
    api.refine(ws, embedding="vae/0001", n_clusters=2, n_iterations=1, refine_poses=False, min_cluster_size=5,
               embedding_method="none", device="cpu")
    return root


def test_exported_script_reproduces_the_runs(original, tmp_path, capsys, monkeypatch):
    assert main(["ws", "export-script", str(original)]) == 0
    script = capsys.readouterr().out
    assert "# spectral/0003: not reproduced: it ran on a subset of 40 particles" in script
    path = tmp_path / "reproduce.py"
    path.write_text(script)
    compile(script, str(path), "exec")  # a valid Python file
    monkeypatch.setattr(sys, "argv", [str(path), str(tmp_path / "again")])
    g = runpy.run_path(str(path), run_name="__main__")
    assert g["runs"] == {"simulate/0001": "simulate/0001", "spectral/0002": "spectral/0001",
                         "chainfit/0001": "chainfit/0001", "vae/0001": "vae/0001", "refine/0001": "refine/0001"}
    old, new = Workspace.open(original), Workspace.open(tmp_path / "again")
    assert new.info["source"] == old.info["source"]
    for before, after in g["runs"].items():
        m_old, m_new = old.manifest(before), new.manifest(after)
        assert m_new["status"] == "done" and m_new["fingerprint"] == m_old["fingerprint"], before
        assert m_new["particle_index_hash"] == m_old["particle_index_hash"]
        assert m_new["inputs"] == {k: g["runs"][v] for k, v in m_old["inputs"].items()}
    np.testing.assert_array_equal(new.result("simulate/0001").dataset.get_images(np.arange(60)),
                                  old.result("simulate/0001").dataset.get_images(np.arange(60)))
    np.testing.assert_allclose(new.result("spectral/0001").eigenvectors, old.result("spectral/0002").eigenvectors,
                               atol=1e-6)
    np.testing.assert_allclose(new.result("chainfit/0001").chains(), old.result("chainfit/0001").chains(), atol=1e-4)
    np.testing.assert_allclose(new.result("vae/0001").latents, old.result("vae/0001").latents, atol=1e-5)
    np.testing.assert_array_equal(new.result("refine/0001").final_labels, old.result("refine/0001").final_labels)


def test_exported_script_opens_the_same_file_with_the_same_options(tmp_path, capsys, monkeypatch):
    """A workspace on a .star file with reading options: the script's workspace reads the same
    file with them (the options are part of the dataset)."""
    from pathlib import Path

    star = Path(__file__).resolve().parents[2] / "sample_data" / "adk_small" / "particles.star"
    root = tmp_path / "ws"
    old = Workspace.create(root, {"path": star, "options": {"datadir": star.parent, "apix": 2.5}})
    assert main(["ws", "export-script", str(root)]) == 0
    path = tmp_path / "reproduce.py"
    path.write_text(capsys.readouterr().out)
    monkeypatch.setattr(sys, "argv", [str(path), str(tmp_path / "again")])
    runpy.run_path(str(path), run_name="__main__")
    new = Workspace.open(tmp_path / "again")
    assert new.info["source"]["path"] == old.info["source"]["path"] == str(star.resolve())
    assert new.info["source"]["options"] == {"datadir": str(star.parent.resolve()), "apix": 2.5}
    assert new.dataset.apix == 2.5
    np.testing.assert_array_equal(new.dataset.get_images(np.arange(3)), old.dataset.get_images(np.arange(3)))
