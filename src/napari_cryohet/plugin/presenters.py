"""Result → scene: how each stage's result is drawn, shared by its widget and by reopening a workspace.

``present(session, result, show=True)`` builds (or updates) the scene of ``result`` from
the stage's own presenter — ``present`` in the module :data:`PRESENTERS` names — and
returns it. A widget calls it when its run finishes; :meth:`Session.restore` calls it for
every finished run of a reopened workspace, so the same layers come back without the
widget being open. Adding a stage with a result to show adds one line here
(docs/design.md, "Adding a stage").
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["present", "PRESENTERS"]

#: Stage name → module with ``present(session, result, *, show) -> Scene``.
PRESENTERS: dict[str, str] = {
    "spectral": "napari_cryohet.plugin._spectral_scene",
    "chainfit": "napari_cryohet.plugin._chainfit_view",
    "vae": "napari_cryohet.plugin._vae_scene",
    "refine": "napari_cryohet.plugin._refine_scene",
    "hypermolecule": "napari_cryohet.plugin._hypermolecule_scene",
}


def present(session: Any, result: Any, *, show: bool = True, **options: Any) -> Any:
    """Draw ``result`` in its scene (made or updated); shown when ``show``. Returns the scene."""
    module = PRESENTERS.get(result.STAGE)
    if module is None:
        raise ValueError(f"no scene for results of stage {result.STAGE!r} (known: {sorted(PRESENTERS)})")
    session.add_result(result)
    return importlib.import_module(module).present(session, result, show=show, **options)
