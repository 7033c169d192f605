"""Run the whole pipeline from one settings file, headless: ``cryohet run-all --config config.yaml``.

The file (YAML or JSON) names the workspace folder, its dataset (a particle file or a
simulator recipe) and the stages to run, in order, with their settings; every stage runs
through the Python API (napari_cryohet.api) into the workspace, which the napari window
opens as it is (session dock, workspace folder: every result's scene comes back). The same
file again reuses the finished runs and resumes an interrupted one. Under torchrun
(several GPUs or nodes, docs/scale-out.md) the VAE, the chain fit and the clustering share
their work; the spectral embedding runs on the first process. Example config.yaml:

  workspace: ws                    # relative to this file's folder
  dataset:
    sample: adk_chain              # a simulator recipe, or: star: particles.star
    n_particles: 500
    seed: 0
    args: {box_size: 64, snr: 0.05}
    # options: {datadir: stacks, contrast_inverted: true}   # reading a star file
  stages:
    - stage: spectral
      settings: {n_eigenvectors: 10}
    - stage: chainfit
      settings: {epochs: 30}
      inputs: {eigenvectors: spectral}   # a run id, or a stage: its newest finished run (default)
    - stage: vae
      settings: {epochs: 10, zdim: 4}
    - stage: refine
      settings: {n_clusters: 3}
      inputs: {embedding: vae}

Settings are the stage's own (cryohet <stage> --help lists them, with underscores:
n_eigenvectors). Examples:

  cryohet run-all --config config.yaml
  cryohet run-all --config config.yaml --workspace /scratch/ws2
  torchrun --nproc-per-node 4 -m napari_cryohet.cli run-all --config config.yaml
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

__all__ = ["add_args", "main", "read_pipeline", "run_pipeline"]

_TOP = {"workspace", "dataset", "stages", "device"}
_STEP = {"stage", "settings", "inputs"}
_DATASET = {"sample", "star", "n_particles", "seed", "args", "options"}


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, metavar="FILE",
                        help="the pipeline: workspace, dataset and stages with their settings (.yaml or .json)")
    parser.add_argument("--workspace", type=Path, default=None, metavar="DIR",
                        help="workspace folder, instead of the file's 'workspace'")


def _fail(path: Path, field: str, problem: str):
    from napari_cryohet.io.errors import CryohetInputError

    return CryohetInputError(path, problem, field=field)


def read_pipeline(path: str | Path) -> dict[str, Any]:
    """The pipeline of a ``run-all`` settings file, checked: names, types, stages, settings.

    Returns ``{"workspace": Path, "dataset": {...} | None, "stages": [{"stage", "settings",
    "inputs"}], "device": str | None}``; paths are made absolute against the file's folder.
    Raises :class:`~napari_cryohet.io.errors.CryohetInputError` naming the file and field.
    """
    from napari_cryohet.api import settings_of
    from napari_cryohet.io.errors import MissingFileError
    from napari_cryohet.stages.registry import STAGES, stage_spec

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, "pipeline settings file not found")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml  # PyYAML, installed with napari

            data = yaml.safe_load(text)
    except Exception as err:  # noqa: BLE001 - any parse error is the file's fault; say where
        raise _fail(path, "", f"not readable as {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {err}") \
            from err
    if not isinstance(data, dict):
        raise _fail(path, "", "expected a mapping with 'workspace', 'dataset' and 'stages'")
    unknown = sorted(set(data) - _TOP)
    if unknown:
        raise _fail(path, unknown[0], f"unknown key; expected {sorted(_TOP)}")
    base = path.resolve().parent
    pipeline: dict[str, Any] = {"device": data.get("device"), "dataset": None, "stages": []}
    pipeline["workspace"] = base / data["workspace"] if data.get("workspace") else None
    dataset = data.get("dataset")
    if dataset is not None:
        if not isinstance(dataset, dict) or ("sample" in dataset) == ("star" in dataset):
            raise _fail(path, "dataset", "expected a mapping with either 'sample: RECIPE' or 'star: FILE'")
        unknown = sorted(set(dataset) - _DATASET)
        if unknown:
            raise _fail(path, f"dataset.{unknown[0]}", f"unknown key; expected {sorted(_DATASET)}")
        dataset = dict(dataset)
        if "star" in dataset:
            dataset["star"] = base / dataset["star"]
            options = dict(dataset.get("options") or {})
            for key in ("datadir", "poses", "ctf", "project_dir"):
                if options.get(key):
                    options[key] = str(base / options[key])
            if options.get("passthrough"):
                options["passthrough"] = [str(base / p) for p in options["passthrough"]]
            dataset["options"] = options
        pipeline["dataset"] = dataset
    steps = data.get("stages") or []
    if not isinstance(steps, list):
        raise _fail(path, "stages", "expected a list of {stage: NAME, settings: {...}, inputs: {...}}")
    for i, step in enumerate(steps):
        where = f"stages[{i}]"
        if isinstance(step, str):
            step = {"stage": step}
        if not isinstance(step, dict) or "stage" not in step:
            raise _fail(path, where, "expected {stage: NAME, settings: {...}, inputs: {...}}")
        unknown = sorted(set(step) - _STEP)
        if unknown:
            raise _fail(path, f"{where}.{unknown[0]}", f"unknown key; expected {sorted(_STEP)}")
        name = step["stage"]
        if name not in STAGES or name == "simulate":
            raise _fail(path, f"{where}.stage", f"expected one of {sorted(set(STAGES) - {'simulate'})}, got "
                        f"{name!r} (the simulator is the 'dataset: sample:' entry)")
        settings, inputs = dict(step.get("settings") or {}), dict(step.get("inputs") or {})
        bad = sorted(set(settings) - set(settings_of(name)))
        if bad:
            raise _fail(path, f"{where}.settings.{bad[0]}", f"{name} has no such setting; its settings are "
                        f"{', '.join(settings_of(name))}")
        bad = sorted(set(inputs) - set(stage_spec(name).inputs))
        if bad:
            raise _fail(path, f"{where}.inputs.{bad[0]}", f"{name} takes the inputs "
                        f"{sorted(stage_spec(name).inputs) or 'none'}")
        try:
            stage_spec(name).config(**settings)
        except (ValueError, TypeError) as err:
            raise _fail(path, f"{where}.settings", str(err)) from err
        pipeline["stages"].append({"stage": name, "settings": settings, "inputs": inputs})
    return pipeline


def run_pipeline(pipeline: dict[str, Any], *, progress: Any = None, say: Any = print) -> list[Any]:
    """Make (or reopen) the workspace and run every stage in order; the results (``None`` on
    ranks other than 0 under ``torchrun``)."""
    from napari_cryohet import api

    root, dataset = pipeline["workspace"], pipeline["dataset"]
    if dataset is not None and "sample" in dataset:
        sim = api.simulate(root, recipe=dataset["sample"], n_particles=dataset.get("n_particles", 200),
                           seed=dataset.get("seed", 0), progress=progress, **(dataset.get("args") or {}))
        if sim is not None:
            say(f"dataset: {sim.run_id} ({dataset['sample']}, {len(sim.dataset)} particles)")
    elif dataset is not None:
        source = {"path": dataset["star"], "options": dataset["options"]} if dataset.get("options") else \
            dataset["star"]
        from napari_cryohet.stages import distributed

        distributed.main_first(lambda: api.open_workspace(root, source))
        say(f"dataset: {dataset['star']}")
    results = []
    for step in pipeline["stages"]:
        start = time.perf_counter()
        result = api.run_stage(step["stage"], root, inputs=step["inputs"], progress=progress, **step["settings"])
        results.append(result)
        if result is not None:
            note = f" ({result.run_note})" if getattr(result, "run_note", None) else ""
            say(f"{result.run_id}: done in {time.perf_counter() - start:.1f} s{note}")
    return results


def main(args: argparse.Namespace) -> int:
    from napari_cryohet.cli._config_args import print_progress
    from napari_cryohet.stages import distributed

    pipeline = read_pipeline(args.config)
    if args.workspace is not None:
        pipeline["workspace"] = args.workspace
    if pipeline["workspace"] is None:
        raise _fail(args.config, "workspace", "no workspace folder: give 'workspace: DIR' or --workspace DIR")
    ctx = distributed.init_from_env(pipeline["device"])  # several processes under torchrun (docs/scale-out.md)
    say = print if ctx.is_main else (lambda *a, **k: None)
    results = run_pipeline(pipeline, progress=print_progress() if ctx.is_main else None,
                           say=lambda text: say(text, flush=True))
    distributed.shutdown()
    if ctx.is_main:
        print(f"workspace {Path(pipeline['workspace']).resolve()}: {', '.join(r.run_id for r in results)}"
              "; open it in napari (session dock, workspace folder) or list it with cryohet ws ls")
    return 0
