"""Screenshots for docs/refine.md: the clustering/refinement loop from its widget.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/figures/refine.py

Simulates 240 particles of two adenylate kinase assembly classes (complete and CORE only;
32 px, 3 Å/px, SNR 1), computes a spectral embedding in the window's session as the input
vectors, then runs the refine widget (2 clusters, 2 iterations, pose refinement on) from
its button, the dock in its scroll area as the Plugins menu makes it. Saves
``refine_maps.png`` (the final class maps side by side; the dock scrolled to the table, the
FSC curves and the resolution per iteration), ``refine_iteration1.png`` (the slider at
iteration 1: that iteration's class maps and FSC curves) and ``refine_clusters.png`` (the
particles coloured by cluster, one cluster selected: the stack viewer lists exactly its
particles).
"""

from __future__ import annotations

from _figure import SESSION, STACK, dock, label, new_viewer, settle, shot, wait
from qtpy.QtCore import Qt

from napari_cryohet.plugin._docking import ScrollDock
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
    scroll = ScrollDock(widget)
    refine_dock = dock(viewer, scroll, REFINE)
    refine_dock.raise_()
    settle()
    # wide enough for the table's seven columns (a user drags the dock's edge the same way)
    refine_dock.parentWidget().resizeDocks([refine_dock], [600], Qt.Orientation.Horizontal)
    widget.run()
    wait(widget.runner)
    settle(1.0)
    scroll.ensureWidgetVisible(widget.resolution_canvas, 0, 0)  # the table and both plots
    label(viewer, "final class maps (refined poses)")
    shot(viewer, "refine_maps")
    widget.iteration.value = 1
    settle(1.0)
    label(viewer, "iteration 1: maps before pose refinement")
    shot(viewer, "refine_iteration1")
    widget.iteration.value = widget.iteration.max
    widget.show_clusters()
    widget.cluster.value = widget.cluster.choices[-1]
    widget.select_cluster()
    settle(1.0)
    label(viewer, f"cluster {widget.cluster.value} selected: {len(stack.visible_rows)} particles")
    shot(viewer, "refine_clusters")
    viewer.close()


if __name__ == "__main__":
    main()
