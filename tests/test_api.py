"""napari_cryohet.api: settings checked by name, inputs defaulting to the newest run that fits,
workspaces opened or refused, the hyper-molecule call only when that stage is registered."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryohet import api
from napari_cryohet.stages.workspace import Workspace

SPECTRAL = dict(n_components=10, k=10, n_eigenvectors=3)


@pytest.fixture
def ws(tmp_path, one_thread):
    """A tiny simulated AdK workspace (60 particles, 32 px)."""
    api.simulate(tmp_path / "ws", recipe="adk_chain", n_particles=60, box_size=32, apix=4.0)
    return Workspace.open(tmp_path / "ws")


def test_simulate_makes_the_workspace_dataset(ws):
    assert ws.info["source"] == {"recipe": "adk_chain", "args": {"box_size": 32, "apix": 4.0, "n_particles": 60,
                                                                 "seed": 0}}
    assert len(ws.dataset) == 60 and ws.dataset.box_size == 32 and ws.dataset.apix == 4.0
    assert [m["run_id"] for m in ws.runs()] == ["simulate/0001"]
    # a path and a Workspace are the same workspace; a second call simulates nothing new
    again = api.simulate(ws.root, recipe="adk_chain", n_particles=60, box_size=32, apix=4.0)
    assert again.run_id == "simulate/0001" and "nothing recomputed" in again.run_note


def test_unknown_settings_and_inputs_are_named(ws):
    with pytest.raises(ValueError, match=r"spectral: unknown setting\(s\) \['n_eigen'\]; SpectralConfig takes "
                                         r"representation, .*n_eigenvectors"):
        api.spectral(ws, n_eigen=3)
    with pytest.raises(ValueError, match=r"chainfit: unknown input\(s\) \['features'\]; it takes \['eigenvectors'\]"):
        api.run_stage("chainfit", ws, inputs={"features": "spectral/0001"})
    with pytest.raises(ValueError, match="at least|expected"):  # the config's own bounds
        api.spectral(ws, k=0)
    with pytest.raises(ValueError, match=r"input 'eigenvectors' needs a finished run of spectral in workspace"):
        api.chainfit(ws, epochs=1)
    assert "n_eigenvectors" in api.settings_of("spectral") and "device" in api.settings_of("vae")


def test_open_workspace(tmp_path, ws):
    assert api.open_workspace(ws) is ws
    assert api.open_workspace(str(ws.root)).info == ws.info
    with pytest.raises(ValueError, match=r"empty: not a workspace yet .*give the dataset as source="):
        api.open_workspace(tmp_path / "empty")
    with pytest.raises(ValueError, match="already a workspace for another dataset"):
        api.open_workspace(ws.root, {"recipe": "adk_chain", "args": {"n_particles": 61}})


def test_inputs_default_to_the_newest_run_on_the_same_particles(ws):
    first = api.spectral(ws, **SPECTRAL)
    second = api.spectral(ws, **dict(SPECTRAL, k=8))
    subset = ws.run("spectral", dict(SPECTRAL, representation="lowres_volumes", k=9),
                    dataset=ws.dataset.subset(np.arange(40)))
    assert (first.run_id, second.run_id, subset.run_id) == ("spectral/0001", "spectral/0002", "spectral/0003")
    # the newest run is on a subset: the newest on every particle is taken
    assert api.default_input(ws, "chainfit", "eigenvectors") == "spectral/0002"
    fit = api.chainfit(ws, n_eigenvectors=3, epochs=1, batch_size=30)
    assert ws.manifest(fit.run_id)["inputs"] == {"eigenvectors": "spectral/0002"}
    # named explicitly, by id or by its result object
    fit1 = api.chainfit(ws, eigenvectors=first, n_eigenvectors=3, epochs=1, batch_size=30)
    assert ws.manifest(fit1.run_id)["inputs"] == {"eigenvectors": "spectral/0001"} and fit1.run_id != fit.run_id
    assert api.chainfit(ws, eigenvectors="spectral/0001", n_eigenvectors=3, epochs=1,
                        batch_size=30).run_id == fit1.run_id
    # the clustering takes a VAE or a spectral run: the newest finished of either
    model = api.vae(ws, epochs=1, zdim=2, n_basis=4, enc_dim=32, enc_blocks=1, dec_dim=16, dec_blocks=1,
                    normalisation_images=32, batch_size=30)
    assert api.default_input(ws, "refine", "embedding") == model.run_id


def test_spectral_picks_its_representation_as_the_command_line_does(ws):
    embedding = api.spectral(ws, **SPECTRAL)
    assert ws.manifest(embedding.run_id)["config"]["representation"] == "lowres_volumes"  # simulated: truth
    on_itself = api.spectral(ws, features=embedding.run_id, **dict(SPECTRAL, n_components=None))
    manifest = ws.manifest(on_itself.run_id)
    assert manifest["config"]["representation"] == "table" and manifest["inputs"] == {"features": "spectral/0001"}


def test_hypermolecule_needs_the_stage_registered(ws, monkeypatch):
    from napari_cryohet.stages import registry

    monkeypatch.delitem(registry.STAGES, "hypermolecule", raising=False)
    with pytest.raises(ValueError, match="hyper-molecule sampler is not part of this version"):
        api.hypermolecule(ws)
