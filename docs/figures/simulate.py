"""Screenshots of every simulated dataset's napari sample → docs/figures/simulate_<name>.png.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/figures/simulate.py [NAME ...]

For each sample of the plugin manifest (File ▸ Open Sample ▸ napari-cryohet) a fresh
viewer opens it exactly as a user would. The sample's layers land in two scenes
(docs/design.md, "Scenes"): the particles scene (2D: the noisy images with the
ground-truth atoms and chains of each particle over them, slider "particle") and, for
samples with volumes, the ground-truth scene (3D: the conformations' volumes with an
iso-surface, in Å about the box centre). The figure is the canvas of the particles scene
and, beside it, the canvas of the ground-truth scene, each framed by the scene itself.
"""

from __future__ import annotations

import sys

import numpy as np
from _figure import HERE, camera, label, new_viewer, settle
from PIL import Image

from napari_cryohet.plugin.session import Session

PLUGIN = "napari-cryohet"
SAMPLES = ("box_arms_2d", "adk_chain", "adk_volumes", "assembly_classes", "cat", "pretzel")
CANVAS = (900, 700)


def _canvas(viewer, text: str) -> np.ndarray:
    label(viewer, text)
    settle(0.8)
    return viewer.screenshot(canvas_only=True, flash=False, size=CANVAS[::-1])[..., :3]


def shoot(name: str):
    viewer = new_viewer(f"napari-cryohet sample: {name}")
    viewer.window.resize(1200, 900)
    viewer.open_sample(PLUGIN, name)
    settle(1.0)
    session = Session.for_viewer(viewer)
    scenes = session.scenes
    particles = next(s for s in scenes.scenes.values() if s.kind == "particles")
    scenes.show(particles)
    viewer.dims.set_point(0, 5.0 if name == "box_arms_2d" else 0.0)  # the particle slider
    panels = [_canvas(viewer, f"{name}: particles scene (2D), particle {int(viewer.dims.point[0])}")]
    truth = [s for s in scenes.scenes.values() if s.kind == "truth"]
    if truth:
        scenes.show(truth[0])
        scenes.frame()
        camera(viewer).angles = (0.0, 35.0, 60.0)
        panels.append(_canvas(viewer, f"{name}: ground-truth scene (3D), conformation 0"))
    gap = np.full((panels[0].shape[0], 8, 3), 255, dtype=np.uint8)
    out = np.concatenate([p if i == 0 else np.concatenate([gap, p], axis=1) for i, p in enumerate(panels)], axis=1)
    path = HERE / f"simulate_{name}.png"
    Image.fromarray(out).quantize(colors=160, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"wrote {path.name} ({path.stat().st_size / 1024:.0f} KB); scenes: {list(scenes.scenes)}", flush=True)
    viewer.close()
    return path


def main(names: list[str]) -> None:
    for name in names or SAMPLES:
        shoot(name)


if __name__ == "__main__":
    main(sys.argv[1:])
