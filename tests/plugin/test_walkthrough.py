"""The Walkthrough dock (issue 19, items 1–2) driven through every step under Xvfb at tiny sizes:
each step's headline is computed, its scene is shown (the scene a stage's own dock would draw),
the stage's dock opens beside it, Reset forgets a step and a rerun with other settings makes a new
run, and the last step sums up the truth checks."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def test_walkthrough_dock_runs_every_step(make_napari_viewer, qtbot, tmp_path, one_thread):
    from napari_cryohet.plugin.session import Session
    from napari_cryohet.plugin.walkthrough import WalkthroughWidget
    from napari_cryohet.stages.workspace import Workspace

    viewer = make_napari_viewer()
    widget = WalkthroughWidget(viewer, folder=tmp_path, size="tiny")
    viewer.window.add_dock_widget(widget, name="Walkthrough")
    walk = widget.walk
    names = [s.name for s in walk.steps]
    assert names == ["simulate", "spectral", "chainfit", "vae", "refine", "hypermolecule", "truth_check"]
    assert not widget.previous_button.enabled and widget.next_button.enabled
    assert "Esteve-Yagüe" in widget.heading.value and "What to look at" in widget.text.value

    # running a step whose input is missing says so and runs nothing
    widget.go_to(2)
    widget.run_step()
    assert "simulate, spectral first" in widget.runner.status.value and walk.records["chainfit"].result is None

    session = Session.for_viewer(viewer)
    for i, name in enumerate(names):
        widget.go_to(i)
        widget.run_button.native.click()
        qtbot.waitUntil(lambda: not widget.runner.busy, timeout=120000)
        assert widget.runner.last_error is None, widget.runner.last_error
        rec = walk.records[name]
        if rec.skipped:
            assert "Skipped" in widget.headline.value
            continue
        assert rec.passed is not None and np.isfinite(rec.value), name
        assert ("passed" in widget.headline.value) or ("failed" in widget.headline.value)
        step = walk.step(name)
        if step.widget is not None:  # the stage's own dock opened beside the walkthrough
            assert step.widget in widget.stage_docks
        if name == "simulate":
            assert session.workspace is not None and session.workspace.root == tmp_path / "workspace"
            assert session.scenes.current.name.startswith("Particles")
            assert len(session.dataset) == 60
        elif name in ("spectral", "chainfit", "vae", "refine", "hypermolecule"):
            run_id = rec.result.run_id
            assert run_id.startswith(name + "/")
            current = session.scenes.current
            assert current is not None and run_id in current.name, (name, current.name)
            assert any(layer in viewer.layers for layer in current.layers)
        if name == "refine":  # its dock offers the run the step clustered, not the newest (the VAE)
            picked = widget.stage_docks[step.widget].workspace.inputs["embedding"].value
            assert picked == walk.records["spectral"].result.run_id, picked
    assert not widget.next_button.enabled  # the last step

    # the check step: its figure is the fraction of the stages that passed, and the table lists them
    checked = [walk.records[n].passed for n in names[:-1] if not walk.records[n].skipped]
    assert walk.records["truth_check"].value == pytest.approx(sum(checked) / len(checked))
    assert all(n in widget.checks.value for n in names[:-1])
    # sanity of the tiny data: the simulation's noise is as requested and eigenvector 1 orders the frames
    assert walk.records["simulate"].value < 0.2 and walk.records["spectral"].value > 0.6

    # teaching: reset the spectral step, change its settings, run again -> a second spectral run
    widget.go_to(1)
    first = walk.records["spectral"].result.run_id
    widget.reset_button.native.click()
    assert walk.records["spectral"].result is None and "Not run yet" in widget.headline.value
    widget.settings.value = "n_components=10, k=8, n_eigenvectors=3"
    assert walk.settings["spectral"]["k"] == 8
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=60000)
    assert widget.runner.last_error is None, widget.runner.last_error
    second = walk.records["spectral"].result
    assert second.run_id != first and second.eigenvectors.shape == (60, 3)
    assert {m["run_id"] for m in Workspace.open(tmp_path / "workspace").runs()} >= {first, second.run_id}
