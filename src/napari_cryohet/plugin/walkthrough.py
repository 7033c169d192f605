"""The *Walkthrough* dock: one session from a simulated stack to results, step by step.

For each step of :mod:`napari_cryohet.walkthrough_steps` (simulate → spectral → chain fit →
VAE → clustering/refinement → hyper-molecule toy → truth check) the dock shows what the
stage does and which paper it follows, what to look at and what a good result looks like,
and the step's settings (editable: ``epochs=8, zdim=2``). *Run this step* runs it off the
GUI thread (:class:`~napari_cryohet.plugin._runner.StageRunner`: progress that says what
is happening, *Cancel*); its result is drawn as the stage's scene (``present(session,
result)``, the same layers as the stage's own dock) and its headline figure is checked
against the simulation's ground truth. *Next* goes on; *Reset this step* forgets the
result so that it can be run again with other settings (teaching: docs/teaching.md).
The stage's own dock opens beside the walkthrough, on the same session, so every setting
of the stage can be tried there too.

``cryohet demo`` (``make demo``) opens napari with this dock; without a display it runs
the same steps under a virtual display and writes a screenshot per step
(:mod:`napari_cryohet.cli.demo`).
"""

from __future__ import annotations

import tempfile
from html import escape
from pathlib import Path
from typing import Any

from magicgui.widgets import Container, Label, LineEdit, PushButton
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QSizePolicy

from napari_cryohet.plugin._docking import ScrollDock
from napari_cryohet.plugin._runner import StageRunner
from napari_cryohet.walkthrough_steps import Walkthrough, format_settings, parse_settings

__all__ = ["WalkthroughWidget", "WalkthroughDock", "PLUGIN"]

PLUGIN = "napari-cryohet"


def _rich(label: Label) -> Label:
    native = label.native
    native.setWordWrap(True)
    native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    native.setTextFormat(Qt.TextFormat.RichText)
    native.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


class WalkthroughWidget(Container):
    """The guided walkthrough of every stage, in one napari window.

    Parameters
    ----------
    viewer
        The napari viewer.
    folder
        Where the walkthrough's workspaces go (default: a new temporary folder).
    size
        ``"laptop"`` (minutes on a laptop CPU) or ``"tiny"`` (seconds; tests).
    open_stage_docks
        Open each stage's own dock beside the walkthrough when its step is shown.

    Attributes
    ----------
    walk
        The :class:`~napari_cryohet.walkthrough_steps.Walkthrough` (steps, settings, records).
    index
        The step shown (0-based); :meth:`go_to` changes it.
    runner
        The :class:`StageRunner` running the step (``runner.busy``, ``runner.last_error``).
    run_button, next_button, previous_button, reset_button, settings
        The controls (``settings.value`` is the step's settings as ``name=value, ...``).
    stage_docks
        Display name → the stage docks opened so far.
    """

    def __init__(self, viewer: Any, *, folder: str | Path | None = None, size: str = "laptop",
                 open_stage_docks: bool = True) -> None:
        from napari_cryohet.plugin.session import Session

        self.viewer = viewer
        self.session = Session.for_viewer(viewer)  # the window's, shared with the stage docks
        folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="cryohet-walkthrough-"))
        self.walk = Walkthrough(folder, size=size)
        self.open_stage_docks = open_stage_docks
        self.stage_docks: dict[str, Any] = {}
        self.index = 0
        self.heading = _rich(Label(value=""))
        self.text = _rich(Label(value=""))
        self.settings = LineEdit(value="", label="settings")
        self.settings.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.settings.native.setToolTip("the step's settings, name=value separated by commas (the fields of the "
                                        "stage's config); change them, then Reset this step and Run this step")
        self.run_button = PushButton(text="Run this step")
        self.next_button = PushButton(text="Next")
        self.previous_button = PushButton(text="Previous")
        self.reset_button = PushButton(text="Reset this step")
        buttons = Container(widgets=[self.previous_button, self.run_button, self.reset_button, self.next_button],
                            layout="horizontal", labels=False)
        self.runner = StageRunner()
        self.headline = _rich(Label(value=""))
        self.checks = _rich(Label(value=""))
        super().__init__(widgets=[self.heading, self.text, self.settings, buttons, self.runner, self.headline,
                                  self.checks], labels=False)
        self.run_button.changed.connect(self.run_step)
        self.next_button.changed.connect(lambda: self.go_to(self.index + 1))
        self.previous_button.changed.connect(lambda: self.go_to(self.index - 1))
        self.reset_button.changed.connect(self.reset_step)
        self.settings.changed.connect(self._settings_edited)
        self.go_to(0)

    # ------------------------------------------------------------------ navigation
    @property
    def step(self):
        """The step shown."""
        return self.walk.steps[self.index]

    def go_to(self, index: int) -> None:
        """Show step ``index`` (clipped to the steps) and open its stage's dock beside this one."""
        self.index = max(0, min(int(index), len(self.walk.steps) - 1))
        step = self.step
        n = len(self.walk.steps)
        self.heading.value = (f"<b>{escape(step.title)}</b> <i>(step {self.index + 1} of {n})</i>"
                              + (f"<br><i>{escape(step.paper)}</i>" if step.paper else ""))
        self.text.value = (f"<p><b>What it does.</b> {escape(step.does)}</p><p><b>What to look at.</b> "
                           f"{escape(step.look_at)}</p><p><b>A good result.</b> {escape(step.good)}</p>"
                           f"<p><b>Checked against the truth:</b> {escape(step.metric)} {escape(step.rule())}</p>")
        self.settings.value = format_settings(self.walk.settings[step.name])
        self.settings.enabled = step.name != "truth_check"
        self.previous_button.enabled = self.index > 0
        self.next_button.enabled = self.index < n - 1
        self._show_record()
        if self.open_stage_docks and step.widget and not self.walk.records[step.name].skipped:
            self._open_stage_dock(step.widget)

    def _open_stage_dock(self, display_name: str) -> None:
        if display_name in self.stage_docks:
            return
        try:
            _, widget = self.viewer.window.add_plugin_dock_widget(PLUGIN, display_name)
        except Exception as err:  # the walkthrough goes on without the stage's dock
            self.runner.status.value = f"could not open the dock {display_name!r}: {err}"
            return
        self.stage_docks[display_name] = widget

    def _settings_edited(self, text: str) -> None:
        try:
            self.walk.settings[self.step.name] = parse_settings(text)
        except ValueError as err:
            self.runner.status.value = str(err)

    # ------------------------------------------------------------------ running
    def run_step(self) -> None:
        """Run the step shown (off the GUI thread); its scene and headline follow."""
        step = self.step
        if self.runner.busy:
            self.runner.status.value = "busy: wait for the running step or cancel it"
            return
        missing = self.walk.missing_before(step.name)
        if missing:
            self.runner.status.value = f"run {', '.join(missing)} first (Previous)"
            return
        self.runner.status.value = f"running {step.name} …"
        self.runner.start(lambda progress, cancel: self.walk.run(step.name, progress), self._show_result)

    def reset_step(self) -> None:
        """Forget the step's result and figure (settings kept: change them and run again)."""
        if self.runner.busy:
            self.runner.status.value = "busy: wait for the running step or cancel it"
            return
        self.walk.reset(self.step.name)
        self.runner.status.value = f"{self.step.name}: reset; change the settings if you like, then Run this step"
        self._show_record()

    def _show_result(self, record: Any):
        """Draw the record's result as its stage's scene (a generator: one step per event-loop turn)."""
        from napari_cryohet.plugin.presenters import PRESENTERS, present

        self._show_record()
        yield
        result = record.result
        if result is None or record.skipped or record.name == "truth_check":  # the table is the result
            return
        session = self.session
        ws_path = self.walk.workspace_of(record.name)
        if record.name == "simulate":
            session.add_dataset(result.dataset, "adk_chain", show=True)
        current = session.workspace
        if current is None or current.root.resolve() != ws_path.resolve():
            session.use_workspace(ws_path)
            yield
        if getattr(result, "STAGE", None) in PRESENTERS:
            present(session, result, show=True)
            self._pick_step_inputs(record.name, result)
        elif record.name == "simulate":
            scene = session.particles_scene(result.dataset)
            if scene is not None:
                session.scenes.show(scene.name)

    def _pick_step_inputs(self, name: str, result: Any) -> None:
        """Set the stage dock's input pickers to the runs the step used (its manifest's ``inputs``),
        so the dock's own Run repeats the step rather than taking the newest run of each kind
        (after the VAE step, the clustering dock would otherwise offer the VAE latents while the
        step clustered the spectral eigenvectors)."""
        step = self.walk.step(name)
        picker = getattr(self.stage_docks.get(step.widget or ""), "workspace", None)
        boxes = getattr(picker, "inputs", None)
        ws = self.session.workspace
        if not boxes or ws is None or not getattr(result, "run_id", None):
            return
        picker.refresh()
        for input_name, run_id in (ws.manifest(result.run_id).get("inputs") or {}).items():
            box = boxes.get(input_name)
            if box is not None and run_id in box.choices:
                box.value = run_id

    def _show_record(self) -> None:
        step = self.step
        rec = self.walk.records[step.name]
        if rec.skipped:
            self.headline.value = f"<b>Skipped:</b> {escape(rec.skipped)}"
        elif rec.passed is None:
            self.headline.value = "<i>Not run yet: press Run this step.</i>"
        else:
            verdict = "<b style='color:#3c3'>passed</b>" if rec.passed else "<b style='color:#e44'>failed</b>"
            self.headline.value = (f"<b>{escape(step.metric)}</b>: {rec.value:.3g} — {verdict} "
                                   f"({escape(step.rule())}); {escape(rec.detail)}; {rec.seconds:.1f} s")
        rows = "".join(f"<tr><td>{name}</td><td>{value}</td><td>{escape(rule)}</td><td>{escape(verdict)}</td></tr>"
                       for name, value, rule, verdict in self.walk.table())
        self.checks.value = (f"<b>Against the ground truth</b><table cellspacing=4><tr><th align=left>stage</th>"
                             f"<th align=left>figure</th><th align=left>rule</th><th align=left>verdict</th></tr>"
                             f"{rows}</table>")


class WalkthroughDock(ScrollDock):
    """The Plugins-menu entry: :class:`WalkthroughWidget` in a scroll area (not tabbed with the stages,
    which open beside it)."""

    def __init__(self, napari_viewer) -> None:
        super().__init__(WalkthroughWidget(napari_viewer), stage=False)
