"""The simulator as a workspace stage: a recipe and its settings in, a dataset with ground truth out.

A workspace whose source is a recipe (``{"recipe": "adk_chain", "args": {...}}``) makes
its dataset through this stage once, into ``simulate/0001/`` (``particles.mrcs`` +
``particles.star`` + cryoDRGN pickles + ``particles_truth.npz``, or ``toy2d.npz`` for the
box with two arms), and reads it back from there afterwards (docs/design.md, "The workspace").
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_cryohet.io.json_files import read_json
from napari_cryohet.stages._common import CancelToken, ProgressCallback, check_cancel, report
from napari_cryohet.stages.protocol import StageConfig, StageResult, dataset_indices, param
from napari_cryohet.stages.registry import StageSpec
from napari_cryohet.stages.simulate import RECIPES, Toy2DDataset, save_simulation

__all__ = ["SimulateConfig", "SimulateResult", "make_dataset", "run", "STAGE"]

STEM = "particles"
TOY_FILE = "toy2d.npz"


@dataclass
class SimulateConfig(StageConfig):
    """Which synthetic dataset to make (the recipes of :mod:`napari_cryohet.stages.simulate`)."""

    STAGE = "simulate"
    recipe: str = param("adk_chain", choices=tuple(RECIPES), help="which synthetic dataset to simulate")
    n_particles: int = param(200, minimum=1, help="number of particles", unit="particles")
    seed: int = param(0, help="random seed of poses, defocus, noise and conformations")
    args: dict[str, Any] = param(default_factory=dict,
                                 help="the recipe's other settings (snr, box_size, apix, ...), by name")
    device: str | None = param("cpu", runtime=True, help="where to compute: cpu, cuda or auto")

    def validate(self) -> None:
        accepted = set(inspect.signature(RECIPES[self.recipe]).parameters)
        unknown = sorted(set(self.args) - accepted)
        if unknown:
            self.fail("args", f"settings of {self.recipe} ({sorted(accepted - {'progress'})})", unknown)

    def source(self) -> dict[str, Any]:
        """The workspace source this config makes: ``{"recipe": ..., "args": {...}}``
        (the inverse of :meth:`from_recipe`; the device is left out, it changes nothing)."""
        return {"recipe": self.recipe, "args": dict(self.args, n_particles=self.n_particles, seed=self.seed)}

    @classmethod
    def from_recipe(cls, recipe: str, args: dict[str, Any]) -> SimulateConfig:
        """From a workspace source ``{"recipe": ..., "args": {...}}``."""
        rest = dict(args)
        fields = {k: rest.pop(k) for k in ("n_particles", "seed", "device") if k in rest}
        return cls(recipe=recipe, args=rest, **fields)


class SimulateResult(StageResult):
    """The simulated dataset (a ``ParticleDataset`` or the 2D toy's ``Toy2DDataset``)."""

    STAGE = "simulate"
    FORMAT_VERSION = 1

    def __init__(self, dataset: Any):
        self.dataset = dataset

    @property
    def particle_indices(self):
        return dataset_indices(self.dataset)

    def _save(self, run_dir: Path) -> None:
        if isinstance(self.dataset, Toy2DDataset):
            self.dataset.save(run_dir / TOY_FILE)
        else:
            save_simulation(run_dir, self.dataset, name=STEM)

    @classmethod
    def _load(cls, run_dir: Path) -> SimulateResult:
        if (run_dir / TOY_FILE).exists():
            dataset = Toy2DDataset.load(run_dir / TOY_FILE)
        else:
            from napari_cryohet.io.load_particles import load_dataset

            dataset = load_dataset(run_dir / f"{STEM}.star")
        manifest = run_dir / "manifest.json"
        if manifest.exists():  # the recipe that made it, so the dataset can remake its workspace
            dataset.meta["recipe"] = SimulateConfig.from_dict(read_json(manifest)["config"]).source()
        return cls(dataset)


def make_dataset(config: SimulateConfig, *, progress: ProgressCallback | None = None,
                 cancel: CancelToken | None = None) -> Any:
    """Call the recipe; a ``ParticleDataset`` records ``meta["recipe"]`` so it can be remade.

    ``progress`` and ``cancel`` go to recipes that take them (a cancelled recipe raises
    ``Cancelled`` between batches, not only at the next progress report).
    """
    func = RECIPES[config.recipe]
    accepted = set(inspect.signature(func).parameters)
    kwargs = dict(config.args, n_particles=config.n_particles, seed=config.seed)
    if "device" in accepted and config.device is not None:
        kwargs["device"] = config.device
    if "progress" in accepted:
        kwargs["progress"] = progress
    if "cancel" in accepted:
        kwargs["cancel"] = cancel
    dataset = func(**kwargs)
    meta = getattr(dataset, "meta", None)
    if isinstance(meta, dict):
        meta["recipe"] = config.source()
    return dataset


def run(dataset: Any, config: SimulateConfig, *, inputs: dict | None = None, progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None, run_dir: Path | None = None) -> SimulateResult:
    """Simulate ``config.recipe`` (``dataset`` is ignored: this stage makes it)."""
    check_cancel(cancel)
    report(progress, 0.0, f"simulating {config.n_particles} particles: {config.recipe}")
    result = SimulateResult(make_dataset(config, progress=progress, cancel=cancel))
    report(progress, 1.0, f"simulated {len(result.dataset)} particles")
    return result


STAGE = StageSpec(name="simulate", title="Simulated particles with ground truth", config=SimulateConfig,
                  result=SimulateResult, run=run, needs_dataset=False,
                  paper="Esteve-Yagüe et al. 2022; Kimanius, Jamali, Scheres 2022; Lederman, Andén, Singer 2020; "
                        "Silvera Coeff 2025")
