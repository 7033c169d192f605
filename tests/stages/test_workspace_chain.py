"""The whole chain on the bundled .star through one workspace, and every result back by run id.

spectral → chain fit → VAE → spectral on the VAE's latents, with tiny sizes, on
``sample_data/adk_small/particles.star``; then a *new process* reopens the workspace with
``Workspace.open`` and must get every result back, identical, by run id.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_cryohet.stages.chainfit import ChainFitConfig
from napari_cryohet.stages.spectral import SpectralConfig, run_spectral
from napari_cryohet.stages.vae import VAEConfig
from napari_cryohet.stages.workspace import Workspace

STAR = Path(__file__).resolve().parents[2] / "sample_data" / "adk_small" / "particles.star"

SPECTRAL = SpectralConfig(representation="lowres_volumes", n_components=10, k=10, n_eigenvectors=6)
CHAINFIT = ChainFitConfig(n_eigenvectors=4, epochs=2, batch_size=50)
VAE = VAEConfig(epochs=1, zdim=2, n_basis=4, enc_dim=32, enc_blocks=1, dec_dim=16, dec_blocks=1,
                normalisation_images=64, batch_size=32)
LATENT_SPECTRAL = SpectralConfig(representation="table", n_components=None, k=10, n_eigenvectors=4)

REOPEN = """
import json, sys
import numpy as np
from napari_cryohet.stages.workspace import Workspace
ws = Workspace.open(sys.argv[1])
out = {"runs": [[m["run_id"], m["status"], m["inputs"]] for m in ws.runs()]}
out["spectral/0001"] = ws.result("spectral/0001").eigenvectors.tolist()
out["chainfit/0001"] = ws.result("chainfit/0001").coeff_theta.tolist()
out["vae/0001"] = ws.result("vae/0001").latents.tolist()
out["spectral/0002"] = ws.result("spectral/0002").eigenvectors.tolist()
out["latest spectral"] = ws.result("spectral").run_id
print(json.dumps(out))
"""


@pytest.mark.slow
def test_star_workspace_chain_reopens_in_a_new_process(tmp_path):
    ws = Workspace.create(tmp_path / "ws", STAR)
    n = len(ws.dataset)
    spectral = ws.run("spectral", SPECTRAL)
    chains = ws.run("chainfit", CHAINFIT, inputs={"eigenvectors": spectral.run_id})
    vae = ws.run("vae", VAE)
    on_latents = ws.run("spectral", LATENT_SPECTRAL, inputs={"features": vae.run_id})
    assert [spectral.run_id, chains.run_id, vae.run_id, on_latents.run_id] == \
        ["spectral/0001", "chainfit/0001", "vae/0001", "spectral/0002"]

    # physics of each result: Laplacian spectra in [0, 2] with the trivial eigenvalue 0 first;
    # the fit starts from the reference and does not get worse on held-out particles
    for res in (spectral, on_latents):
        assert res.eigenvalues[0] == pytest.approx(0.0, abs=1e-6)
        assert np.all((res.eigenvalues >= -1e-8) & (res.eigenvalues <= 2 + 1e-8))
    first, last = chains.history[0], chains.history[-1]
    assert last["avg_error_a"] <= first["avg_error_a"] + 1e-6
    assert vae.latents.shape == (n, 2) and np.isfinite(vae.latents).all()
    # spectral-on-latents equals the embedding of the same latents computed outside the workspace
    direct = run_spectral(ws.dataset, LATENT_SPECTRAL, features=ws.embedding("vae/0001"))
    np.testing.assert_allclose(on_latents.eigenvalues, direct.eigenvalues, atol=1e-10)
    # every run covers the same particles, and says where its inputs came from
    manifests = {m["run_id"]: m for m in ws.runs()}
    assert {m["particle_index_hash"] for m in manifests.values()} == {manifests["spectral/0001"]["particle_index_hash"]}
    assert manifests["chainfit/0001"]["inputs"] == {"eigenvectors": "spectral/0001"}
    assert manifests["spectral/0002"]["inputs"] == {"features": "vae/0001"}

    proc = subprocess.run([sys.executable, "-c", REOPEN, str(ws.root)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    back = json.loads(proc.stdout.splitlines()[-1])
    assert back["runs"] == [["chainfit/0001", "done", {"eigenvectors": "spectral/0001"}],
                            ["spectral/0001", "done", {}], ["spectral/0002", "done", {"features": "vae/0001"}],
                            ["vae/0001", "done", {}]]
    np.testing.assert_array_equal(np.asarray(back["spectral/0001"]), spectral.eigenvectors)
    np.testing.assert_array_equal(np.asarray(back["chainfit/0001"], dtype=np.float32), chains.coeff_theta)
    np.testing.assert_array_equal(np.asarray(back["vae/0001"], dtype=np.float32), vae.latents)
    np.testing.assert_array_equal(np.asarray(back["spectral/0002"]), on_latents.eigenvectors)
    assert back["latest spectral"] == "spectral/0002"
