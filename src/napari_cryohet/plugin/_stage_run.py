"""The *Run* button every stage widget shares: form → config, session → workspace, pickers → inputs.

:func:`start_stage_run` reads the widget's settings form (``widget.config()``), applies its
workspace folder, collects the picked input runs (refusing, with a message, when a
required one is missing), and runs the stage through the window's
:class:`~napari_cryohet.plugin.session.Session` in the widget's
:class:`~napari_cryohet.plugin._runner.StageRunner` — in the workspace when a folder is
chosen, in memory otherwise. Errors in the settings are shown in the runner's status line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["start_stage_run"]


def start_stage_run(widget: Any, stage: str, on_result: Callable[[Any], Any]) -> bool:
    """Start ``stage`` for ``widget`` (``dataset``, ``session``, ``workspace``, ``runner``,
    ``config()``); ``on_result`` gets the result on the GUI thread. ``False`` when refused."""
    status = widget.runner.status
    if widget.dataset is None:
        status.value = "no dataset: open a .star file or a sample (File ▸ Open Sample)"
        return False
    try:
        config = widget.config()
        widget.workspace.workspace_for()
    except ValueError as err:  # a bad setting, or a folder that cannot be a workspace
        status.value = f"error: {err}"
        return False
    inputs = widget.workspace.input_ids()
    for name, spec in widget.workspace.spec.inputs.items():
        if spec.required and name not in inputs:
            status.value = (f"no run to take '{name.replace('_', ' ')}' from: run "
                            f"{' or '.join(spec.stages)} first, then pick it under '{name.replace('_', ' ')} from'")
            return False
    dataset, session = widget.dataset, widget.session

    def job(progress, cancel):
        return session.run(stage, config, inputs=inputs, progress=progress, cancel=cancel, dataset=dataset)

    widget.runner.start(job, on_result)
    return True
