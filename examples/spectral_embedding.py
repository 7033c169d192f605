"""
Spectral embedding of the particles
===================================

Esteve-Yagüe et al. 2022 (§2.2, Appendix B) describe each particle by a few numbers,
link particles with similar descriptions in a k-nearest-neighbour graph and take the
eigenvectors of the graph's normalised Laplacian: smooth coordinates along which the
particles' shapes change. For the simulated AdK particles, the first non-trivial
eigenvector follows the open–closed motion, which the ground truth (the frame each
particle shows) confirms.

With a viewer the eigenvectors appear as a 3-D point cloud, coloured by any per-particle
value (here the true frame); selecting points selects the particles in the stack viewer.
"""

import os

import numpy as np
from scipy.stats import spearmanr

from napari_cryohet import api

TINY = os.environ.get("CRYOHET_EXAMPLE_SIZE") == "tiny"
WORKSPACE = os.environ.get("CRYOHET_EXAMPLE_WORKSPACE", "cryohet_example_ws")
SIMULATION = dict(recipe="adk_chain", n_particles=60, box_size=32, apix=4.0) if TINY else \
    dict(recipe="adk_chain", n_particles=1000, box_size=64, apix=2.0)
SPECTRAL = dict(n_components=10, k=10, n_eigenvectors=4) if TINY else dict(n_eigenvectors=10)

viewer = api.viewer_if_available()
dataset = api.simulate(WORKSPACE, viewer, **SIMULATION).dataset

###############################################################################
# The embedding: settings are SpectralConfig's fields (``cryohet spectral --help``).
embedding = api.spectral(WORKSPACE, viewer, **SPECTRAL)
phi = embedding.embedding().aligned_to(dataset)
rho = abs(spearmanr(phi[:, 1], dataset.ground_truth["state"]).statistic)
print(f"{embedding.run_id}: eigenvalues {np.round(embedding.eigenvalues[:4], 4)}; "
      f"first eigenvector vs true frame: |Spearman rho| = {rho:.2f}")

if viewer is not None and __name__ == "__main__":
    import napari

    napari.run()
