"""
Simulate particles with ground truth
====================================

The simulator makes a particle stack of adenylate kinase (AdK) moving between its open and
closed states, the test set of Esteve-Yagüe et al. 2022 (§3): Gaussian atoms on the Cα
positions of frames of a trajectory, projected at random orientations, CTF-modulated
(RELION's convention) and with Gaussian noise at a chosen signal-to-noise ratio. Every
particle keeps its ground truth (the frame it shows, its atoms, its clean image), which
the later stages are checked against.

The dataset becomes the dataset of a workspace folder: every later stage runs there, and
the napari window (or ``cryohet ws ls``) opens the folder as it is.
"""

import os

import numpy as np

from napari_cryohet import api

TINY = os.environ.get("CRYOHET_EXAMPLE_SIZE") == "tiny"
WORKSPACE = os.environ.get("CRYOHET_EXAMPLE_WORKSPACE", "cryohet_example_ws")
SIMULATION = dict(recipe="adk_chain", n_particles=60, box_size=32, apix=4.0) if TINY else \
    dict(recipe="adk_chain", n_particles=1000, box_size=64, apix=2.0)

viewer = api.viewer_if_available()

###############################################################################
# Simulate (or reopen: the same recipe in the same folder is simulated once).
simulation = api.simulate(WORKSPACE, viewer, **SIMULATION)
dataset = simulation.dataset
truth = dataset.ground_truth
print(f"{len(dataset)} particles of {dataset.box_size} px at {dataset.apix} Å/px; "
      f"{len(np.unique(truth['state']))} trajectory frames; SNR {float(truth['global/snr']):.3g}")

if viewer is not None and __name__ == "__main__":
    import napari

    napari.run()
