"""
From a simulated stack to clusters: every stage in one script
=============================================================

The whole analysis on simulated adenylate kinase (AdK) particles, each stage one call of
``napari_cryohet.api`` on one workspace folder, each result checked against the
simulation's ground truth:

1. **simulate** the particles (Esteve-Yagüe et al. 2022, §3: AdK between open and closed);
2. **spectral embedding** (Esteve-Yagüe et al. 2022, §2.2): the first eigenvector should
   follow the open–closed motion;
3. **chain fit** (Esteve-Yagüe et al. 2022, eq. 2.6): Cα chains per particle, error in Å
   against the true chains;
4. **VAE** (Kimanius, Jamali & Scheres 2022): latent points and a volume decoder;
5. **clustering and refinement** (Silvera Coeff 2025, §4.1) of the VAE latents: per-cluster
   half maps and resolutions;
6. the **hyper-molecule sampler** (Lederman, Andén & Singer 2020) on the pretzel toy, in
   its own workspace, when this version has it.

With napari and a display every result appears in one window as its scene (the session
dock lists them; a click shows one); without a display the script runs headless. The
workspace folder opens in the napari window as it is (session dock, workspace folder).
"""

import os

import numpy as np
from scipy.stats import spearmanr

from napari_cryohet import api
from napari_cryohet.stages.registry import STAGES

TINY = os.environ.get("CRYOHET_EXAMPLE_SIZE") == "tiny"
WORKSPACE = os.environ.get("CRYOHET_EXAMPLE_WORKSPACE", "cryohet_example_ws")
SIMULATION = dict(recipe="adk_chain", n_particles=60, box_size=32, apix=4.0) if TINY else \
    dict(recipe="adk_chain", n_particles=1000, box_size=64, apix=2.0)
SPECTRAL = dict(n_components=10, k=10, n_eigenvectors=4) if TINY else dict(n_eigenvectors=10)
CHAINFIT = dict(n_eigenvectors=4, epochs=2, batch_size=30) if TINY else dict(n_eigenvectors=6, epochs=30)
VAE = dict(epochs=1, zdim=2, n_basis=4, enc_dim=32, enc_blocks=1, dec_dim=16, dec_blocks=1,
           normalisation_images=32, batch_size=30) if TINY else dict(epochs=10, zdim=4, n_basis=8, batch_size=32)
REFINE = dict(n_clusters=2, n_iterations=1, refine_poses=False, min_cluster_size=5, embedding_method="none",
              device="cpu") if TINY else dict(n_clusters=3, n_iterations=2)
PRETZEL = dict(recipe="pretzel", n_particles=40, box_size=32) if TINY else dict(recipe="pretzel", n_particles=500)
HYPERMOLECULE = dict(working_size_px=16, n_burnin_sweeps=2, n_sample_sweeps=1, theta_steps=1, output_size_px=16,
                     tau_grid_size=2, volume_samples=2, device="cpu") if TINY else {}

viewer = api.viewer_if_available()
headlines = {}

###############################################################################
# 1. Simulate.
dataset = api.simulate(WORKSPACE, viewer, **SIMULATION).dataset
frames = dataset.ground_truth["state"]
headlines["simulate"] = f"{len(dataset)} particles, {len(np.unique(frames))} frames"

###############################################################################
# 2. Spectral embedding: does the first eigenvector order the particles by true frame?
embedding = api.spectral(WORKSPACE, viewer, **SPECTRAL)
phi = embedding.embedding().aligned_to(dataset)
headlines["spectral"] = f"|Spearman rho| eigenvector 1 vs frame {abs(spearmanr(phi[:, 1], frames).statistic):.2f}"

###############################################################################
# 3. Chain fit on those eigenvectors: Cα error against the true chains.
fit = api.chainfit(WORKSPACE, viewer, eigenvectors=embedding.run_id, **CHAINFIT)
headlines["chainfit"] = f"Cα error {fit.history[-1]['avg_error_a']:.2f} Å on average"

###############################################################################
# 4. VAE: latent points and a decoder of volumes.
model = api.vae(WORKSPACE, viewer, **VAE)
headlines["vae"] = f"latents {model.latents.shape}"

###############################################################################
# 5. Clustering and refinement of the VAE latents.
clusters = api.refine(WORKSPACE, viewer, embedding=model.run_id, **REFINE)
resolutions = [info.get("resolution_a") or float("nan") for info in clusters.history[-1]["clusters"].values()]
headlines["refine"] = f"{len(resolutions)} clusters at " + ", ".join(f"{r:.1f}" for r in resolutions) + " Å"

###############################################################################
# 6. The hyper-molecule sampler on the pretzel toy (its own workspace: another dataset).
if "hypermolecule" in STAGES:
    pretzel_ws = f"{WORKSPACE}_pretzel"
    api.simulate(pretzel_ws, None, **PRETZEL)
    sampler = api.hypermolecule(pretzel_ws, None, **HYPERMOLECULE)
    headlines["hypermolecule"] = f"run {sampler.run_id}"

for stage, text in headlines.items():
    print(f"{stage:>14}: {text}")

if viewer is not None and __name__ == "__main__":
    import napari

    napari.run()
