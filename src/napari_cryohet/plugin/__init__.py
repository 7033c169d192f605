"""napari contributions (readers, writers, sample data, widgets). The only ring that
imports napari, Qt and magicgui. No science here: widgets build stage configs and
turn stage results into layers."""
