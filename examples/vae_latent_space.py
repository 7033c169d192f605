"""
VAE latent space and decoded volumes
====================================

Kimanius, Jamali & Scheres 2022 train a variational autoencoder whose decoder builds
each particle's volume from a small structural basis (eq. 3), compared with the image
through the forward model with sparse Fourier slices (§4.3). Every particle gets a latent
point; nearby points mean similar volumes. On the simulated AdK particles the latent
space's main direction follows the open–closed motion (the Spearman correlation with the
true frame is printed; it grows with the epochs).

With a viewer the latent points appear coloured by the true frame; the VAE widget decodes
a volume at any picked point.
"""

import os

import numpy as np
from scipy.stats import spearmanr

from napari_cryohet import api

TINY = os.environ.get("CRYOHET_EXAMPLE_SIZE") == "tiny"
WORKSPACE = os.environ.get("CRYOHET_EXAMPLE_WORKSPACE", "cryohet_example_ws")
SIMULATION = dict(recipe="adk_chain", n_particles=60, box_size=32, apix=4.0) if TINY else \
    dict(recipe="adk_chain", n_particles=1000, box_size=64, apix=2.0)
VAE = dict(epochs=1, zdim=2, n_basis=4, enc_dim=32, enc_blocks=1, dec_dim=16, dec_blocks=1,
           normalisation_images=32, batch_size=30) if TINY else dict(epochs=10, zdim=4, n_basis=8, batch_size=32)

viewer = api.viewer_if_available()
dataset = api.simulate(WORKSPACE, viewer, **SIMULATION).dataset

###############################################################################
# Train (or reuse the finished run with these settings); settings are VAEConfig's fields.
model = api.vae(WORKSPACE, viewer, **VAE)
latents = model.embedding().aligned_to(dataset)
centred = latents - latents.mean(0)
main_axis = centred @ np.linalg.svd(centred, full_matrices=False)[2][0]
rho = abs(spearmanr(main_axis, dataset.ground_truth["state"]).statistic)
print(f"{model.run_id}: latents {latents.shape}; main latent direction vs true frame: |Spearman rho| = {rho:.2f}")

###############################################################################
# Decode the volume at the latent point of the first particle: (D, D, D) in the box frame.
volume = model.decode(latents[:1])[0]
print(f"decoded volume {volume.shape} at {model.apix} Å/px")

if viewer is not None and __name__ == "__main__":
    import napari

    napari.run()
