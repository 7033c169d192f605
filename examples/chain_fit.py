"""
Backbone chain fit on the eigenvectors
======================================

Esteve-Yagüe et al. 2022 (eq. 2.6) write every particle's backbone as a reference chain
whose torsion and bond angles move linearly with the particle's Laplacian eigenvectors,
``Θ_i = Θ₀ + A Φ_i``, and fit the coefficients ``A`` by comparing the projected chains
with the images. On simulated particles the fitted Cα chains are compared with the true
ones: the average error in Å is the headline figure (smaller is better; the atoms are
Gaussians of 3 Å).

With a viewer the chain-fit scene shows one particle's fitted, true and reference chains
in 3-D, the particle image and the fit's projection.
"""

import os

from napari_cryohet import api

TINY = os.environ.get("CRYOHET_EXAMPLE_SIZE") == "tiny"
WORKSPACE = os.environ.get("CRYOHET_EXAMPLE_WORKSPACE", "cryohet_example_ws")
SIMULATION = dict(recipe="adk_chain", n_particles=60, box_size=32, apix=4.0) if TINY else \
    dict(recipe="adk_chain", n_particles=1000, box_size=64, apix=2.0)
SPECTRAL = dict(n_components=10, k=10, n_eigenvectors=4) if TINY else dict(n_eigenvectors=10)
CHAINFIT = dict(n_eigenvectors=4, epochs=2, batch_size=30) if TINY else dict(n_eigenvectors=6, epochs=30)

viewer = api.viewer_if_available()
api.simulate(WORKSPACE, viewer, **SIMULATION)
embedding = api.spectral(WORKSPACE, viewer, **SPECTRAL)

###############################################################################
# The fit takes the eigenvectors of a spectral run: here the one just made (by default the
# newest finished spectral run of the workspace).
fit = api.chainfit(WORKSPACE, viewer, eigenvectors=embedding.run_id, **CHAINFIT)
last = fit.history[-1]
print(f"{fit.run_id} on {embedding.run_id}: {len(fit.history) - 1} epochs; Cα error against the truth "
      f"{last['avg_error_a']:.2f} Å on average, {last['max_error_a']:.2f} Å at most")

if viewer is not None and __name__ == "__main__":
    import napari

    napari.run()
