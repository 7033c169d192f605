"""Screenshots for docs/refine.md: the clustering/refinement loop from its widget.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/figures/refine.py

Simulates 240 particles of two adenylate kinase assembly classes (complete and CORE only;
32 px, 3 Å/px, SNR 1), computes a spectral embedding in the window's session as the input
vectors, then runs the refine widget (2 clusters, 2 iterations, pose refinement on) from
its button. Saves ``refine_maps.png`` (the class maps side by side, the table and the FSC
curves in the dock) and ``refine_clusters.png`` (the particles coloured by cluster, one
cluster selected: the stack viewer lists exactly its particles).
"""

from __future__ import annotations

from _figure import SESSION, STACK, dock, label, new_viewer, settle, shot, wait

from napari_cryohet.plugin.refine_widget import RefineWidget
from napari_cryohet.plugin.session import Session
from napari_cryohet.plugin.session_widget import SessionWidget
from napari_cryohet.plugin.stack_viewer import StackViewerWidget
from napari_cryohet.stages.simulate import assembly_classes
from napari_cryohet.stages.spectral import SpectralConfig

REFINE = "5 · Clustering and refinement (Silvera Coeff 2025)"


def main() -> None:
    ds = assembly_classes(240, classes=(("CORE", "NMP", "LID"), ("CORE",)), box_size=32, apix=3.0, sigma_a=3.0,
                          snr=1.0, seed=3)
    viewer = new_viewer("napari-cryohet: clustering and refinement")
    session = Session.for_viewer(viewer)
    session.add_dataset(ds, "two assembly classes")
    dock(viewer, SessionWidget(viewer), SESSION, area="left")
    stack = StackViewerWidget(viewer)
    dock(viewer, stack, STACK)
    spectral = session.run("spectral", SpectralConfig(representation="pca_images", n_components=10, k=10,
                                                      n_eigenvectors=4))
    session.add_result(spectral)
    widget = RefineWidget(viewer)
    widget.form.n_clusters.value = 2
    widget.form.n_iterations.value = 2
    widget.form.min_cluster_size.value = 10
    refine_dock = dock(viewer, widget, REFINE)
    refine_dock.raise_()
    settle()
    widget.run()
    wait(widget.runner)
    settle(1.0)
    label(viewer, "class maps of the last iteration, side by side (Å)")
    shot(viewer, "refine_maps")
    widget.show_clusters()
    widget.cluster.value = widget.cluster.choices[-1]
    widget.select_cluster()
    settle(1.0)
    label(viewer, f"cluster {widget.cluster.value} selected: {len(stack.visible_rows)} particles")
    shot(viewer, "refine_clusters")
    viewer.close()


if __name__ == "__main__":
    main()
