"""Screenshots of the hyper-molecule dock for docs/hypermolecule.md → docs/figures/hypermolecule_*.png.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/figures/hypermolecule.py

The simulator's pretzel (Lederman, Andén & Singer 2020, §5): 400 particles of 64 px at
3 Å, SNR 0.5, CTF, orientations known. The dock loads the pretzel's own regions (a rigid
base, an arm with one knob, its 180°-turned copy with its own knob): ``regions.png``. Then
the dock's own *Sample the hyper-molecule* (16 burn-in + 8 sampling sweeps, images cropped
to 24 px; about a minute on 2 CPU cores): the posterior-mean map's surface with both knobs
at 0, at the middle and at 1 (``tau_0/1/2.png``) and the posterior standard deviation
(``std.png``). The recovered states are printed (|Spearman ρ| with the truth per arm).
"""

from __future__ import annotations

import numpy as np
from _figure import camera, dock, new_viewer, settle, shot, wait
from qtpy.QtCore import Qt
from scipy.stats import spearmanr

from napari_cryohet.plugin import _hypermolecule_scene as scene_mod
from napari_cryohet.plugin._docking import ScrollDock
from napari_cryohet.plugin.hypermolecule_widget import HyperMoleculeWidget
from napari_cryohet.stages.simulate import RECIPES

HYPERMOLECULE = "7 · Hyper-molecule sampler (Lederman, Andén & Singer 2020)"


def grab(viewer, name: str) -> None:
    shot(viewer, f"hypermolecule_{name}")


def main() -> None:
    dataset = RECIPES["pretzel"](n_particles=400, box_size=64, snr=0.5, seed=1)
    viewer = new_viewer("napari-cryohet: hyper-molecule sampler")
    widget = HyperMoleculeWidget(viewer, dataset=dataset)
    docked = dock(viewer, ScrollDock(widget), HYPERMOLECULE)
    settle()
    docked.parentWidget().resizeDocks([docked], [520], Qt.Orientation.Horizontal)
    widget.load_layout("auto")
    widget.region.value = "arm1"
    camera(viewer).angles = (0, 35, 60)
    grab(viewer, "regions")
    for name, value in (("n_burnin_sweeps", 16), ("n_sample_sweeps", 8), ("working_size_px", 24),
                        ("estimate_poses", False), ("estimate_shifts", False), ("estimate_contrast", False)):
        widget.form.inputs[name].value = value
    widget.run()
    wait(widget.runner, timeout=900)
    result = widget.result
    truth = np.asarray(dataset.ground_truth["state"])
    rho = [abs(spearmanr(result.tau_mean[:, j], truth[:, j]).statistic) for j in range(truth.shape[1])]
    print(f"|Spearman rho| per arm: {rho[0]:.3f} / {rho[1]:.3f}; acceptance {result.acceptance}; "
          f"{result.seconds:.0f} s")
    camera(viewer).angles = (0, 35, 60)
    t = result.volumes_by_knob().shape[0]
    for i, step in enumerate((0, t // 2, t - 1)):
        viewer.dims.set_current_step(0, step)
        viewer.dims.set_current_step(1, step)
        grab(viewer, f"tau_{i}")
    current = widget.session.scenes.current
    current.layer(scene_mod.STD_LAYER).visible = True
    current.layer(scene_mod.MEAN_LAYER).visible = False
    current.layer(scene_mod.SURFACE_LAYER).visible = False
    grab(viewer, "std")
    viewer.close()


if __name__ == "__main__":
    main()
