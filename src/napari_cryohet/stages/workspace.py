"""The workspace: a directory holding one dataset's runs, every result addressable by id.

Layout (docs/design.md, "The workspace")::

    ws/
      workspace.json            dataset source (a .star path or a simulator recipe), version
      simulate/0001/            the simulated dataset, when the source is a recipe
      spectral/0001/manifest.json + spectral.npz + result.json
      chainfit/0001/manifest.json + checkpoint.pt + chainfit_result.npz ...
      vae/0001/ ...

Every run of a stage lives in ``<stage>/<NNNN>/`` with a ``manifest.json``: stage, config,
config fingerprint, input run ids, particle-index hash, status (``running``, ``done``,
``failed``, ``cancelled``), start and end time, package version. Runs are never
overwritten: a new config (or other inputs, or other particles) makes a new run; the same
config and inputs return the finished run, or resume the unfinished one from its
checkpoint. Stages take their inputs as run ids (``"spectral/0002"``), so where every
result came from is always known — results are addressed by who made them, as copick does.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from napari_cryohet.io.atomic import remove_stale_partials
from napari_cryohet.io.errors import CryohetInputError, MissingFileError, OutputLocationError
from napari_cryohet.io.json_files import read_json, write_json
from napari_cryohet.stages._common import Cancelled, CancelToken, ProgressCallback, report
from napari_cryohet.stages.checkpoint import MANIFEST
from napari_cryohet.stages.output_location import check_output_location
from napari_cryohet.stages.protocol import (
    Embedding,
    StageConfig,
    StageResult,
    dataset_indices,
    particle_index_hash,
)
from napari_cryohet.stages.registry import StageSpec, stage_spec

__all__ = ["Workspace", "RunNotFoundError", "RunBusyError",
           "dataset_source", "WORKSPACE_FILE"]

WORKSPACE_FILE = "workspace.json"
FORMAT_VERSION = 1


class RunNotFoundError(CryohetInputError):
    """A run id names no run (or no finished run) in the workspace."""


class RunBusyError(CryohetInputError):
    """The run these settings would resume is running right now (this or another process)."""


#: Run folders this process is running now (two widgets must not run one run twice).
_ACTIVE: set[Path] = set()
_ACTIVE_LOCK = threading.Lock()


class _NotingProgress:
    """Relays a stage's progress and keeps the checkpointer's "resumed from epoch N …"
    message for ``result.run_note``. Attributes of the caller's callback (the chain fit's
    ``on_epoch``) stay reachable through it."""

    def __init__(self, progress: ProgressCallback | None) -> None:
        self._progress, self.note = progress, None

    def __call__(self, fraction: float, message: str = "") -> None:
        if message.startswith("resumed from epoch"):
            self.note = message
        report(self._progress, fraction, message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._progress, name)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _claim(run_dir: Path, manifest: dict[str, Any] | None) -> None:
    """Mark ``run_dir`` as running in this process, or raise :class:`RunBusyError`."""
    run_dir = run_dir.resolve()
    with _ACTIVE_LOCK:
        busy = run_dir in _ACTIVE
        if not busy and manifest is not None and manifest.get("status") == "running":
            pid, host = manifest.get("pid"), manifest.get("host")
            busy = (pid is not None and host == socket.gethostname() and int(pid) != os.getpid()
                    and _process_alive(pid))
        if busy:
            who = "this session" if run_dir in _ACTIVE else f"process {manifest.get('pid')}"
            raise RunBusyError(run_dir, f"this run is running right now ({who}); wait for it to finish or "
                               "cancel it, then run again to resume it", field="status")
        _ACTIVE.add(run_dir)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _package_version() -> str:
    from napari_cryohet import __version__

    return __version__


class Workspace:
    """A directory with one dataset and every run of every stage on it.

    Create with :meth:`create`, reopen with :meth:`open`; run stages with :meth:`run` and
    get results back by id with :meth:`result`.
    """

    def __init__(self, root: Path, info: dict[str, Any]):
        self.root = Path(root)
        self.info = info
        self._dataset = None

    # -------------------------------------------------------------- create / open

    @classmethod
    def create(cls, root: str | Path, source: str | Path | dict[str, Any]) -> Workspace:
        """Make a workspace at ``root`` for a dataset source.

        ``source`` is a ``.star`` (or ``.mrcs``) path, or a simulator recipe
        ``{"recipe": "adk_chain", "args": {"n_particles": 200, "seed": 0}}``. Reopening an
        existing workspace with the same source is allowed; another source is refused.
        """
        root = Path(root)
        src = _normalise_source(source, root)
        path = root / WORKSPACE_FILE
        if path.exists():
            ws = cls.open(root)
            if ws.info["source"] != src:
                raise OutputLocationError(root, f"already a workspace for another dataset "
                                          f"({ws.info['source']}); pick another directory", field="source")
            return ws
        check_output_location(root)
        info = {"format_version": FORMAT_VERSION, "source": src, "package_version": _package_version(),
                "created": _now()}
        write_json(path, info)
        return cls(root, info)

    @classmethod
    def open(cls, root: str | Path) -> Workspace:
        """Reopen a workspace written by :meth:`create` (also after copying it elsewhere)."""
        root = Path(root)
        info = read_json(root / WORKSPACE_FILE)
        if not isinstance(info, dict) or "source" not in info:
            raise CryohetInputError(root / WORKSPACE_FILE, "not a napari-cryohet workspace", field="source")
        if int(info.get("format_version", 0)) > FORMAT_VERSION:
            raise CryohetInputError(root / WORKSPACE_FILE, f"workspace format {info['format_version']} is newer "
                                    f"than this version reads ({FORMAT_VERSION})", field="format_version")
        return cls(root, info)

    # -------------------------------------------------------------- dataset

    @property
    def dataset(self):
        """The workspace's dataset (loaded, or simulated into ``simulate/NNNN``, once)."""
        if self._dataset is None:
            src = self.info["source"]
            if "recipe" in src:
                from napari_cryohet.stages.simulate.stage import SimulateConfig

                made = self.run("simulate", SimulateConfig.from_recipe(src["recipe"], src.get("args", {})))
                # read back from the run's files, so every session sees the very same dataset
                self._dataset = self.result(made.run_id).dataset
            else:
                from napari_cryohet.core.contrast import warn_if_inverted
                from napari_cryohet.io.load_particles import load_dataset

                self._dataset = load_dataset(self._source_path(src), **src.get("options", {}))
                warn_if_inverted(self._dataset)  # files only: the simulator's contrast is RELION's
        return self._dataset

    def _source_path(self, src: dict[str, Any]) -> Path:
        relative = self.root / src.get("relative_path", "")
        if src.get("relative_path") and relative.exists():
            return relative
        return Path(src["path"])

    # -------------------------------------------------------------- runs

    def runs(self, stage: str | None = None) -> list[dict[str, Any]]:
        """Manifests of the runs of ``stage`` (every stage when ``None``), oldest first."""
        stages = [stage] if stage else sorted(p.name for p in self.root.iterdir() if p.is_dir())
        out = []
        for name in stages:
            base = self.root / name
            if not base.is_dir():
                continue
            for run_dir in sorted(p for p in base.iterdir() if p.is_dir() and p.name.isdigit()):
                if (run_dir / MANIFEST).is_file():
                    out.append(read_json(run_dir / MANIFEST))
        return out

    def manifest(self, run_id: str, *, done: bool = False) -> dict[str, Any]:
        """The manifest of run ``run_id`` (``"spectral/0002"``, or ``"spectral"`` for the latest done)."""
        run_id = self.resolve(run_id, done=done)
        return read_json(self.root / run_id / MANIFEST)

    def resolve(self, ref: str, *, done: bool = True) -> str:
        """A concrete run id for ``ref``: ``"stage/NNNN"`` as is, ``"stage"`` → its latest done run."""
        ref = str(ref).strip().strip("/")
        stage, _, number = ref.partition("/")
        if number:
            run_id = f"{stage}/{int(number):04d}" if number.isdigit() else ref
            if not (self.root / run_id / MANIFEST).is_file():
                raise RunNotFoundError(self.root / run_id, f"no run {run_id} in this workspace "
                                       f"(runs: {[m['run_id'] for m in self.runs()]})", field="run")
            if done and read_json(self.root / run_id / MANIFEST).get("status") != "done":
                raise RunNotFoundError(self.root / run_id, f"run {run_id} has not finished", field="run")
            return run_id
        finished = [m for m in self.runs(stage) if m.get("status") == "done"]
        if not finished:
            raise RunNotFoundError(self.root / stage, f"no finished {stage} run in this workspace", field="run")
        return finished[-1]["run_id"]

    def result(self, ref: str, **load_options: Any) -> StageResult:
        """The result of run ``ref`` (``"spectral/0002"``, or ``"spectral"``: the latest done).

        ``load_options`` go to the stage's ``Result.load`` (the VAE's ``device``).
        """
        run_id = self.resolve(ref)
        spec = stage_spec(run_id.split("/")[0])
        result = spec.result.load(self.root / run_id, **load_options)
        result.run_id = run_id
        return result

    def embedding(self, ref: str) -> Embedding:
        """The per-particle vectors run ``ref`` hands to other stages."""
        result = self.result(ref)
        emb = result.embedding()
        if emb is None:
            raise RunNotFoundError(self.root / result.run_id, f"run {result.run_id} has no per-particle vectors",
                                   field="run")
        emb.run_id = result.run_id
        return emb

    def run(self, stage: str, config: StageConfig | dict[str, Any] | None = None, *,
            inputs: dict[str, str] | None = None, progress: ProgressCallback | None = None,
            cancel: CancelToken | None = None, dataset: Any = None) -> StageResult:
        """Run ``stage`` with ``config`` on the workspace's dataset (or ``dataset``, a subset of it).

        ``inputs`` maps the stage's input names to run ids. The same config, inputs and
        particles return the finished run (nothing recomputed) or resume the unfinished
        one; anything else makes a new run. The output location is checked before any
        work starts.
        """
        spec = stage_spec(stage)
        if config is None:
            config = spec.config()
        elif isinstance(config, dict):
            config = spec.config.from_dict(config)
        if not isinstance(config, spec.config):
            raise TypeError(f"config: expected a {spec.config.__name__}, got {type(config).__name__}")
        input_ids, resolved = self._resolve_inputs(spec, inputs or {})
        if spec.needs_dataset and dataset is None:
            dataset = self.dataset
        indices = dataset_indices(dataset) if spec.needs_dataset else np.zeros(0, dtype=np.int64)
        key = {"fingerprint": config.fingerprint(), "inputs": input_ids,
               "particle_index_hash": particle_index_hash(indices)}
        run_id, manifest = self._find_run(stage, key)
        if manifest is not None and manifest.get("status") == "done":
            note = "already done with these settings: nothing recomputed"
            report(progress, 1.0, f"{run_id}: {note}")
            result = self.result(run_id)
            result.run_note = note
            return result
        need = spec.estimate_bytes(dataset, config) if spec.estimate_bytes else 0
        if run_id is None:
            check_output_location(self.root / stage, need_bytes=need)
            run_id = self._new_run_dir(stage)
            _claim(self.root / run_id, None)
        else:
            check_output_location(self.root / run_id, need_bytes=need)
            _claim(self.root / run_id, manifest)
            remove_stale_partials(self.root / run_id)  # left by a killed write of this run
        run_dir = self.root / run_id
        manifest = {"run_id": run_id, "stage": stage, "config": config.to_dict(), **key,
                    "n_particles": int(len(indices)), "status": "running", "started": _now(), "ended": None,
                    "package_version": _package_version(), "pid": os.getpid(), "host": socket.gethostname(),
                    "processes": _processes()}
        try:
            write_json(run_dir / MANIFEST, manifest)
            report(progress, 0.0, f"{run_id}: {spec.title}")
            noted = _NotingProgress(progress)
            result = spec.run(dataset, config, inputs=resolved, progress=noted, cancel=cancel, run_dir=run_dir)
            result.run_id, result.run_note = run_id, noted.note
            result.save(run_dir)
            self._finish(run_dir, manifest, "done")
        except Cancelled:
            self._finish(run_dir, manifest, "cancelled")
            raise
        except BaseException as err:
            self._finish(run_dir, manifest, "failed", error=f"{type(err).__name__}: {err}")
            raise
        finally:
            with _ACTIVE_LOCK:
                _ACTIVE.discard(run_dir.resolve())
        return result

    # -------------------------------------------------------------- helpers

    def _resolve_inputs(self, spec: StageSpec, inputs: dict[str, str]) -> tuple[dict[str, str], dict[str, Any]]:
        unknown = sorted(set(inputs) - set(spec.inputs))
        if unknown:
            raise ValueError(f"inputs: stage {spec.name} takes {sorted(spec.inputs)}, got {unknown}")
        ids, resolved = {}, {}
        for name, ispec in spec.inputs.items():
            ref = inputs.get(name)
            if ref is None:
                if ispec.required:
                    raise ValueError(f"inputs: stage {spec.name} needs {name!r} (a run of "
                                     f"{' or '.join(ispec.stages)}: {ispec.help})")
                continue
            run_id = self.resolve(ref)
            if ispec.stages and run_id.split("/")[0] not in ispec.stages:
                raise ValueError(f"inputs: {name!r} must be a run of {' or '.join(ispec.stages)}, got {run_id}")
            ids[name] = run_id
            resolved[name] = self.embedding(run_id) if ispec.kind == "embedding" else self.result(run_id)
        return ids, resolved

    def _find_run(self, stage: str, key: dict[str, Any]) -> tuple[str | None, dict | None]:
        for manifest in reversed(self.runs(stage)):
            if all(manifest.get(k) == v for k, v in key.items()):
                return manifest["run_id"], manifest
        return None, None

    def _new_run_dir(self, stage: str) -> str:
        base = self.root / stage
        base.mkdir(parents=True, exist_ok=True)
        numbers = [int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()]
        n = max(numbers, default=0) + 1
        while True:
            try:
                (base / f"{n:04d}").mkdir()
                return f"{stage}/{n:04d}"
            except FileExistsError:  # another process took this number
                n += 1

    def _finish(self, run_dir: Path, manifest: dict[str, Any], status: str, *, error: str | None = None) -> None:
        manifest = dict(manifest, status=status, ended=_now())
        if error:
            manifest["error"] = error
        try:
            write_json(run_dir / MANIFEST, manifest)
        except OSError:  # a full disk must not hide the run's own error
            pass


def _processes() -> int:
    """How many processes run the stage (``torchrun`` workers; 1 without torchrun)."""
    from napari_cryohet.stages.distributed import context

    return int(context().world_size)


def dataset_source(dataset: Any) -> str | dict[str, Any] | None:
    """The workspace source a dataset was made from, or ``None`` when unknown.

    A simulator recipe records itself in ``dataset.meta["recipe"]`` (``{"recipe": name,
    "args": {...}}``), the particle loader the file it read in ``dataset.meta["source"]`` and
    the options it was given (``load_dataset``'s ``datadir``, ``contrast_inverted``, pickles
    ...) in ``dataset.meta["load_options"]``: ``{"path": ..., "options": {...}}``.
    """
    meta = getattr(dataset, "meta", None) or {}
    if isinstance(meta.get("recipe"), dict) and "recipe" in meta["recipe"]:
        return {"recipe": meta["recipe"]["recipe"], "args": dict(meta["recipe"].get("args", {}))}
    if meta.get("source"):
        if meta.get("load_options"):  # poses / CTF pickles, datadir, contrast_inverted ...
            return {"path": str(meta["source"]), "options": dict(meta["load_options"])}
        return str(meta["source"])
    return None


_PATH_OPTIONS = frozenset({"poses", "ctf", "datadir", "project_dir", "passthrough"})


def _absolute(value: Any) -> Any:
    """A path option as an absolute path (a list of them element-wise), so a workspace reopens
    it from any working directory."""
    if isinstance(value, (list, tuple)):
        return [_absolute(v) for v in value]
    return None if value is None else str(Path(value).resolve())


def _normalise_source(source: str | Path | dict[str, Any], root: Path) -> dict[str, Any]:
    if isinstance(source, dict):
        if "recipe" in source:
            from napari_cryohet.stages.simulate import RECIPES

            if source["recipe"] not in RECIPES:
                raise ValueError(f"source recipe: expected one of {sorted(RECIPES)}, got {source['recipe']!r}")
            return {"recipe": str(source["recipe"]), "args": dict(source.get("args", {}))}
        if "path" in source:
            options = {k: _absolute(v) if k in _PATH_OPTIONS else v for k, v in source.get("options", {}).items()}
            return _normalise_source(source["path"], root) | {"options": options}
        raise ValueError(f"source: expected a .star path or {{'recipe': ..., 'args': ...}}, got {source!r}")
    path = Path(source).resolve()
    if not path.exists():
        raise MissingFileError(path, "dataset source not found")
    try:
        relative = os.path.relpath(path, root.resolve())
    except ValueError:  # another drive (Windows)
        relative = ""
    return {"path": str(path), "relative_path": relative}

