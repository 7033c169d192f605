"""The session: what one napari window is working on, shared by every widget in it.

One :class:`Session` per viewer (:meth:`Session.for_viewer`) holds

* the datasets opened in the window (from the reader, sample data or a script) and the
  one in use (:attr:`dataset`), each with its particles scene;
* the workspace (:attr:`workspace`; ``None``: runs are kept in memory for this window
  only) and every finished run of it — any stage's output feeds any stage that takes it
  (:meth:`run_choices` lists them with a one-line summary, :meth:`embedding` hands the
  vectors over), and every run's per-particle values become colour-by columns
  (:meth:`columns`);
* the scenes (:class:`~napari_cryohet.plugin.scenes.SceneManager`): each result drawn on
  its own, framed;
* the linked selection: selecting particles in any embedding (:meth:`select`) filters the
  particle stack viewer and can be written as ``.star`` (:meth:`export_selection`).

Widgets talk to the session and listen to its signals; none looks for another in the
window's docks. Opening a workspace (:meth:`use_workspace`) restores its dataset and the
scene of every finished run (docs/design.md, "The napari session").
"""

from __future__ import annotations

import itertools
import threading
import weakref
from pathlib import Path
from typing import Any

import numpy as np
from psygnal import Signal

from napari_cryohet.plugin._reader import DATASET_KEY, dataset_layer_data
from napari_cryohet.plugin.scenes import (
    PER_PARTICLE,
    ROLE_KEY,
    SCENE_KEY,
    TRUTH_3D,
    Scene,
    SceneManager,
    scene_name,
)
from napari_cryohet.stages.particle_columns import particle_columns
from napari_cryohet.stages.protocol import (
    Embedding,
    ParticleMismatchError,
    StageResult,
    dataset_indices,
)
from napari_cryohet.stages.registry import stage_spec
from napari_cryohet.stages.workspace import WORKSPACE_FILE, Workspace, dataset_source

__all__ = ["Session", "run_summary", "export_target", "IN_MEMORY"]

#: Marks run ids of results kept in memory (no workspace folder): ``"spectral/in-memory-1"``.
IN_MEMORY = "in-memory"
_SESSIONS: dict[int, Session] = {}
#: Columns per run offered for colouring (the first vectors of an embedding).
COLUMNS_PER_RUN = 3


def run_summary(stage: str, config: dict[str, Any], inputs: dict[str, str] | None = None) -> str:
    """One line saying what a run was: its settings that differ from the defaults, its inputs."""
    spec = stage_spec(stage)
    try:
        default = spec.config().science_dict()
        changed = {k: v for k, v in spec.config.from_dict(config).science_dict().items() if default.get(k) != v}
    except (TypeError, ValueError):
        changed = {}
    parts = [f"{k.replace('_', ' ')} {v}" for k, v in list(changed.items())[:3]]
    if len(changed) > 3:
        parts.append(f"+{len(changed) - 3} more")
    parts += [f"from {v}" for v in (inputs or {}).values()]
    return ", ".join(parts) or "default settings"


class Session:
    """Datasets, workspace, runs, scenes and selection of one viewer (module docstring).

    Signals
    -------
    dataset_changed(object)
        The dataset in use changed.
    runs_changed()
        A run finished or the workspace changed: run pickers and colour columns refresh.
    workspace_changed(object)
        The workspace folder changed (a :class:`Workspace` or ``None``).
    selection_changed(object)
        Root particle indices selected (``np.ndarray``; empty: none).
    """

    dataset_changed = Signal(object)
    contrast_checked = Signal(object)
    runs_changed = Signal()
    workspace_changed = Signal(object)
    selection_changed = Signal(object)

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        self.scenes = SceneManager(viewer)
        self.datasets: dict[str, Any] = {}
        self.dataset: Any = None
        self.workspace: Workspace | None = None
        self.selection = np.zeros(0, dtype=np.int64)
        self._memory: dict[str, StageResult] = {}
        self._loaded: dict[str, StageResult] = {}
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self._columns_cache: dict[tuple, dict[str, np.ndarray]] = {}
        self._last_particles: Scene | None = None
        for layer in list(viewer.layers):
            self._adopt(layer)
        viewer.layers.events.inserted.connect(self._on_inserted)

    @classmethod
    def for_viewer(cls, viewer: Any) -> Session:
        """The session of ``viewer`` (made on first use).

        napari hands plugin widgets a proxy of the viewer (``PublicOnlyProxy``), a new one
        per widget; the session belongs to the viewer behind it.
        """
        viewer = getattr(viewer, "__wrapped__", viewer)
        key = id(viewer)
        session = _SESSIONS.get(key)
        if session is None or session.viewer is not viewer:
            session = _SESSIONS[key] = cls(viewer)
            weakref.finalize(viewer, _SESSIONS.pop, key, None)
        return session

    # ------------------------------------------------------------------ datasets
    def add_dataset(self, dataset: Any, name: str | None = None, *, layer: Any = None, show: bool = True,
                    _inserting: bool = False) -> Scene:
        """Register ``dataset`` (its particles scene holds ``layer`` or a new stack layer) and use it."""
        name = name or (layer.name if layer is not None else str(getattr(dataset, "meta", {}).get("name", "particles")))
        for known, ds in self.datasets.items():
            if ds is dataset:
                name = known
                break
        else:
            base, k = name, 2
            while name in self.datasets:
                name, k = f"{base} ({k})", k + 1
            self.datasets[name] = dataset
        scene = self.scenes.scene(scene_name("Particles", name), kind="particles", ndisplay=2)
        if layer is None and not scene.layers:
            layer = stack_layer(dataset, name)
        if layer is not None:
            layer.metadata.setdefault(ROLE_KEY, PER_PARTICLE)
            (self.scenes.claim if _inserting else self.scenes.add)(scene, layer)
        self._last_particles = scene
        self.set_dataset(dataset)
        if show:
            self.scenes.show(scene)
        if "contrast_check" not in getattr(dataset, "meta", {}):
            _later(lambda: self.check_contrast(dataset))
        return scene

    def check_contrast(self, dataset: Any = None) -> Any:
        """Which way ``dataset``'s contrast looks (:func:`napari_cryohet.core.contrast.check_contrast`).

        Files only (the simulator's contrast is RELION's by construction), once per dataset
        (kept in ``dataset.meta["contrast_check"]``), on at most 256 images. When the images
        look inverted, the window shows a warning saying what to do; :attr:`contrast_checked`
        is emitted either way. Returns the :class:`ContrastCheck`, or ``None`` when not checked.
        """
        from napari_cryohet.core.contrast import check_contrast
        from napari_cryohet.io.errors import CryohetInputError

        dataset = self.dataset if dataset is None else dataset
        meta = getattr(dataset, "meta", None)
        if meta is None or not meta.get("source") or meta.get("recipe"):
            return None
        if "contrast_check" not in meta:
            try:
                meta["contrast_check"] = check_contrast(dataset, n_particles=256)
            except (CryohetInputError, ValueError):  # unreadable images are reported when they are read
                return None
            if meta["contrast_check"].verdict == "inverted":
                from napari.utils.notifications import show_warning

                show_warning(self.contrast_text(dataset))
            self.contrast_checked.emit(dataset)
        return meta["contrast_check"]

    def contrast_text(self, dataset: Any = None) -> str:
        """One sentence on the contrast of ``dataset`` for the window (empty when not checked)."""
        dataset = self.dataset if dataset is None else dataset
        check = getattr(dataset, "meta", {}).get("contrast_check")
        if check is None:
            return ""
        flipped = bool(dataset.meta.get("contrast_inverted"))
        if check.verdict == "expected":
            head = "Contrast as expected (density white on dark)" + (", after inverting the images" if flipped else "")
        elif check.verdict == "inverted":
            head = ("The particles look INVERTED (density dark on light): reopen them "
                    + ("without" if flipped else "with") + " 'contrast inverted' ticked (session dock, Open particles)")
        else:
            head = "Contrast undecided (too little signal in the images checked)"
        return f"{head}: {check.evidence}."

    def set_dataset(self, dataset: Any) -> None:
        """Use ``dataset`` (registering it first if new); the workspace follows when it holds another."""
        if not any(ds is dataset for ds in self.datasets.values()):
            self.add_dataset(dataset, show=False)
            return
        if dataset is self.dataset:
            return
        self.dataset = dataset
        self.selection = np.zeros(0, dtype=np.int64)
        if self.workspace is not None and not _same_source(dataset, self.workspace):
            self.workspace = None
            self.workspace_changed.emit(None)
        self.dataset_changed.emit(dataset)
        self.runs_changed.emit()

    def dataset_name(self, dataset: Any = None) -> str | None:
        dataset = self.dataset if dataset is None else dataset
        return next((k for k, v in self.datasets.items() if v is dataset), None)

    def particles_scene(self, dataset: Any = None) -> Scene | None:
        name = self.dataset_name(dataset)
        return None if name is None else self.scenes.scenes.get(scene_name("Particles", name))

    def _on_inserted(self, event: Any) -> None:
        self._adopt(event.value)

    def _adopt(self, layer: Any) -> None:
        """Give a layer that arrived from the reader or sample data its scene (recorded now,
        settled once napari has finished inserting it: the dataset's particles scene is shown)."""
        if SCENE_KEY in layer.metadata:
            return
        dataset = layer.metadata.get(DATASET_KEY)
        if dataset is not None:
            self.add_dataset(dataset, layer.name, layer=layer, show=False, _inserting=True)
            _later(self._settle)
        elif layer.metadata.get(ROLE_KEY) == PER_PARTICLE and self._last_particles is not None:
            self.scenes.claim(self._last_particles, layer)
        elif layer.metadata.get(ROLE_KEY) == TRUTH_3D and self.dataset is not None:
            truth = self.scenes.scene(scene_name("Ground truth", self.dataset_name()), kind="truth", ndisplay=3)
            self.scenes.claim(truth, layer)
            _later(self._settle)

    def _settle(self) -> None:
        """Show the newest dataset's particles scene (layers of other scenes leave the viewer)."""
        if self._last_particles is not None and self._last_particles.name in self.scenes.scenes:
            self.scenes.show(self._last_particles)

    # ------------------------------------------------------------------ workspace
    def use_workspace(self, path: str | Path | None) -> Workspace | None:
        """Work in the workspace folder ``path`` (``None``: in memory).

        An existing workspace is opened: its dataset becomes the one in use (the dataset
        already open is kept when it is the workspace's) and every finished run's scene
        is restored. An empty folder becomes a workspace for the dataset in use.
        Raises ``ValueError`` / ``CryohetInputError`` naming the problem.
        """
        if path is None or str(path).strip() in ("", "."):
            ws = None
        elif (Path(path) / WORKSPACE_FILE).is_file():
            ws = Workspace.open(path)
        else:
            if self.dataset is None:
                raise ValueError(f"workspace folder {path}: open a dataset first, or pick an existing workspace")
            source = dataset_source(self.dataset)
            if source is None:
                raise ValueError(f"workspace folder {path}: this dataset was not read from a file nor made by the "
                                 "simulator, so a workspace could not reopen it; save it as .star first")
            ws = Workspace.create(path, source)
        if ws is not None and (self.workspace is not None and ws.root.resolve() == self.workspace.root.resolve()):
            return self.workspace
        self.workspace, self._loaded = ws, {}
        if ws is not None:
            if self.dataset is None or not _same_source(self.dataset, ws):
                self.add_dataset(ws.dataset, _dataset_label(ws), show=True)
            else:
                ws._dataset = self.dataset
            self.restore()
        self.workspace_changed.emit(ws)
        self.runs_changed.emit()
        return ws

    def restore(self) -> list[Scene]:
        """Rebuild the scene of every finished run of the workspace; show the newest."""
        from napari_cryohet.plugin.presenters import PRESENTERS, present

        scenes = []
        for manifest in self.workspace.runs() if self.workspace is not None else []:
            if manifest.get("status") != "done" or manifest.get("stage") not in PRESENTERS:
                continue  # the simulator's dataset, and stages with no scene yet
            scenes.append(present(self, self.result(manifest["run_id"]), show=False))
        if scenes:
            self.scenes.show(scenes[-1])
        return scenes

    # ------------------------------------------------------------------ runs
    def run(self, stage: str, config: Any, *, inputs: dict[str, str] | None = None, progress=None,
            cancel=None, dataset: Any = None) -> StageResult:
        """Run ``stage`` on the dataset in use (worker-thread safe; nothing touches Qt).

        In the workspace when there is one (kept, resumable); otherwise in memory, with
        inputs from this session's in-memory runs. Hand the result to :meth:`add_result`
        on the GUI thread.
        """
        dataset = self.dataset if dataset is None else dataset
        if self.workspace is not None:
            return self.workspace.run(stage, config, inputs=inputs, progress=progress, cancel=cancel, dataset=dataset)
        spec = stage_spec(stage)
        resolved = {name: self.embedding(ref) if spec.inputs[name].kind == "embedding" else self.result(ref)
                    for name, ref in (inputs or {}).items()}
        missing = [n for n, i in spec.inputs.items() if i.required and n not in resolved]
        if missing:
            raise ValueError(f"inputs: {spec.title} needs {missing[0]!r} (a run of "
                             f"{' or '.join(spec.inputs[missing[0]].stages)})")
        result = spec.run(dataset, config, inputs=resolved, progress=progress, cancel=cancel, run_dir=None)
        result.memory_inputs = dict(inputs or {})
        result.memory_dataset = dataset
        with self._lock:  # kept at once: a later step of the same job may take it as input
            result.run_id = f"{stage}/{IN_MEMORY}-{next(self._counter)}"
            self._memory[result.run_id] = result
        return result

    def add_result(self, result: StageResult) -> None:
        """Keep a finished run's result (GUI thread): pickers and colour columns refresh."""
        if result.run_id is None:
            return
        if IN_MEMORY in result.run_id:
            self._memory[result.run_id] = result
        else:
            self._loaded[result.run_id] = result
        self._columns_cache.clear()
        self.runs_changed.emit()

    def result(self, run_id: str) -> StageResult:
        """The result of run ``run_id`` (in memory, or loaded once from the workspace)."""
        if run_id in self._memory:
            return self._memory[run_id]
        if self.workspace is None:
            raise ValueError(f"run {run_id}: no such run in this window (no workspace folder is open)")
        run_id = self.workspace.resolve(run_id)
        if run_id not in self._loaded:
            self._loaded[run_id] = self.workspace.result(run_id)
        return self._loaded[run_id]

    def embedding(self, run_id: str) -> Embedding:
        """The per-particle vectors of run ``run_id``."""
        if run_id in self._memory:
            emb = self._memory[run_id].embedding()
            if emb is None:
                raise ValueError(f"run {run_id} has no per-particle vectors")
            emb.run_id = run_id
            return emb
        if self.workspace is None:
            raise ValueError(f"run {run_id}: no such run in this window")
        return self.workspace.embedding(run_id)

    def run_choices(self, stages: tuple[str, ...] | list[str]) -> list[tuple[str, str]]:
        """``(run_id, one-line summary)`` of the finished runs of ``stages`` on the dataset in use, newest first."""
        out = []
        if self.workspace is not None:
            for m in self.workspace.runs():
                if m.get("status") == "done" and m.get("stage") in stages:
                    out.append((m["run_id"], run_summary(m["stage"], m.get("config", {}), m.get("inputs"))))
        for run_id, res in self._memory.items():
            if res.STAGE in stages and getattr(res, "memory_dataset", None) is self.dataset:
                out.append((run_id, run_summary(res.STAGE, res.config if isinstance(res.config, dict) else
                                                res.config.to_dict(), getattr(res, "memory_inputs", {}))))
        return out[::-1]

    # ------------------------------------------------------------------ colour columns
    def columns(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """Per-particle float columns for the particles ``indices`` (root indices, in order):
        the dataset's own (star columns, defocus, ground truth) and the first vectors of
        every finished run that covers them (``"vae/0001 latents 0"``)."""
        indices = np.asarray(indices, dtype=np.int64)
        key = (id(self.dataset), indices.tobytes().__hash__(), len(indices))
        if key in self._columns_cache:
            return self._columns_cache[key]
        cols: dict[str, np.ndarray] = {}
        if self.dataset is not None:
            own = particle_columns(self.dataset)
            try:
                rows = Embedding(np.arange(len(self.dataset))[:, None], dataset_indices(self.dataset)).aligned_to(
                    indices)[:, 0]
                cols.update({k: np.asarray(v, dtype=np.float64)[rows] for k, v in own.items()})
            except ParticleMismatchError:
                pass
        run_ids = [r for r, _ in self.run_choices(("spectral", "vae", "chainfit", "refine"))]
        for run_id in reversed(run_ids):
            try:
                emb = self.embedding(run_id)
                values = emb.aligned_to(indices)
            except (ParticleMismatchError, ValueError, OSError):
                continue
            first = 1 if emb.name == "eigenvectors" else 0  # φ0 is constant
            for j in range(first, min(values.shape[1], first + COLUMNS_PER_RUN)):
                cols[f"{run_id} {emb.name} {j}"] = np.asarray(values[:, j], dtype=np.float64)
        self._columns_cache[key] = cols
        return cols

    # ------------------------------------------------------------------ selection
    def select(self, indices: Any) -> None:
        """Select particles by root index (from any embedding); the stack viewer follows."""
        self.selection = np.unique(np.asarray(indices, dtype=np.int64).ravel())
        self.selection_changed.emit(self.selection)

    def selected_rows(self) -> np.ndarray:
        """Positions in the dataset in use of the selected particles."""
        if self.dataset is None or not len(self.selection):
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(np.isin(dataset_indices(self.dataset), self.selection))

    def export_selection(self, path: str | Path) -> Path:
        """Write the selected particles (every original column) as a RELION ``.star``; returns the full path."""
        from napari_cryohet.io.write_particles import write_dataset_star

        target = export_target(path, ".star")
        rows = self.selected_rows()
        if not len(rows):
            raise ValueError("export: no particles selected (select points in an embedding first)")
        write_dataset_star(target, self.dataset.subset(rows))
        return target


def export_target(path: Any, suffix: str) -> Path:
    """The full path an export writes to: ``path`` with ``suffix`` (its folder made).

    Raises ``ValueError`` saying what to give when ``path`` is empty or a folder (every
    export button of the plugin refuses those with this message, not a traceback).
    """
    text = str(path or "").strip()
    if text in ("", "."):
        raise ValueError(f"export: choose a file name for the {suffix} file first")
    target = Path(text).expanduser()
    if target.is_dir():
        raise ValueError(f"export: {target} is a folder; give a file name ending in {suffix}")
    if target.suffix.lower() != suffix:
        target = target.with_suffix(suffix)
    target.parent.mkdir(parents=True, exist_ok=True)
    return target.resolve()


def stack_layer(dataset: Any, name: str) -> Any:
    """A napari image layer of the dataset's particle images, in Å about the box centre."""
    from napari.layers import Image

    from napari_cryohet.core.particle_dataset import ParticleDataset

    if isinstance(dataset, ParticleDataset):
        data, kwargs, _ = dataset_layer_data(dataset, name=name)
        c = (dataset.box_size // 2) * float(dataset.apix)
        kwargs["translate"] = (0.0, -c, -c)
    else:  # the 2D box-with-arms toy: its low-dimensional densities stand for the images
        spacing = float(dataset.low_dim_grid_a[1] - dataset.low_dim_grid_a[0])
        origin = float(dataset.low_dim_grid_a[0])
        lo, hi = np.percentile(dataset.low_dim, [0.5, 99.5])
        data = dataset.low_dim
        kwargs = {"name": name, "scale": (1.0, spacing, spacing), "translate": (0.0, origin, origin),
                  "colormap": "gray", "contrast_limits": (float(lo), float(hi)), "axis_labels": ("particle", "y", "x"),
                  "metadata": {DATASET_KEY: dataset}}
    return Image(data, **kwargs)


def _same_source(dataset: Any, ws: Workspace) -> bool:
    """``dataset`` is the one the workspace ``ws`` was made for (same file, or same recipe)."""
    mine, src = dataset_source(dataset), ws.info["source"]
    if mine is None:
        return False
    if "recipe" in src:
        return isinstance(mine, dict) and mine == {"recipe": src["recipe"], "args": dict(src.get("args", {}))}
    return isinstance(mine, str) and Path(mine).resolve() == Path(src["path"]).resolve()


def _dataset_label(ws: Workspace) -> str:
    src = ws.info["source"]
    return src["recipe"] if "recipe" in src else Path(src["path"]).stem


def _later(fn) -> None:
    """Run ``fn`` once the current Qt event is handled (layers cannot move inside an insert event)."""
    from qtpy.QtCore import QTimer

    QTimer.singleShot(0, fn)
