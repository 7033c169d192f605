"""The stage registry: what the workspace, the CLI and the widgets need to know about each stage.

One :class:`StageSpec` per stage package (``stages/<name>/stage.py``, attribute ``STAGE``),
listed in :data:`STAGES` by name; adding a stage adds one line there (docs/design.md,
"Adding a stage").
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from napari_cryohet.stages.protocol import StageConfig, StageResult

__all__ = ["StageSpec", "InputSpec", "STAGES", "stage_spec"]


@dataclass(frozen=True)
class InputSpec:
    """An input a stage takes from another run.

    ``kind="embedding"`` hands the stage the run's :class:`Embedding` (per-particle
    vectors); ``kind="result"`` its whole result. ``stages`` lists the stages whose runs
    fit; ``required=False`` inputs may be left out.
    """

    kind: str = "embedding"
    stages: tuple[str, ...] = ()
    required: bool = True
    help: str = ""


@dataclass(frozen=True)
class StageSpec:
    """What the workspace needs to know about a stage (one per stage package, ``STAGE``).

    ``run(dataset, config, *, inputs, progress, cancel, run_dir) -> result``;
    ``needs_dataset=False`` for stages that make the dataset (simulate);
    ``estimate_bytes(dataset, config)`` sizes the output for the free-space check.
    """

    name: str
    title: str
    config: type[StageConfig]
    result: type[StageResult]
    run: Callable[..., StageResult]
    inputs: dict[str, InputSpec] = field(default_factory=dict)
    needs_dataset: bool = True
    estimate_bytes: Callable[[Any, StageConfig], int] | None = None
    paper: str = ""


#: Stage name → ``"module:attribute"`` of its :class:`StageSpec` (or the spec itself).
#: Add a line per stage.
STAGES: dict[str, str | StageSpec] = {
    "simulate": "napari_cryohet.stages.simulate.stage:STAGE",
    "spectral": "napari_cryohet.stages.spectral.stage:STAGE",
    "chainfit": "napari_cryohet.stages.chainfit.stage:STAGE",
    "vae": "napari_cryohet.stages.vae.stage:STAGE",
    "refine": "napari_cryohet.stages.refine.stage:STAGE",
    "hypermolecule": "napari_cryohet.stages.hypermolecule.stage:STAGE",
}


def stage_spec(name: str) -> StageSpec:
    """The :class:`StageSpec` of stage ``name`` (imported on first use)."""
    if name not in STAGES:
        raise ValueError(f"stage: expected one of {sorted(STAGES)}, got {name!r}")
    entry = STAGES[name]
    if isinstance(entry, StageSpec):
        return entry
    module, _, attr = entry.partition(":")
    return getattr(importlib.import_module(module), attr)
