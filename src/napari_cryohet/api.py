"""The Python API: every stage as one call on a workspace, its layers added when a viewer is given.

A script, a notebook or a batch job drives the whole analysis with these calls; each
takes a workspace (a folder, or a :class:`~napari_cryohet.stages.workspace.Workspace`),
runs the stage there (kept, resumable, reused when run again with the same settings) and
returns its result. Given a ``napari.Viewer``, the window's session
(:class:`napari_cryohet.plugin.session.Session`) opens the workspace and the result is drawn
as the stage's scene, exactly as its dock widget draws it (docs/design.md, "The napari
session and its scenes")::

    import napari
    from napari_cryohet import api

    viewer = napari.Viewer()
    sim = api.simulate("ws", recipe="adk_chain", n_particles=200, viewer=viewer)
    emb = api.spectral("ws", viewer, n_eigenvectors=6)          # settings: SpectralConfig's fields
    fit = api.chainfit("ws", viewer, epochs=5)                  # eigenvectors: the newest spectral run
    vae = api.vae("ws", viewer, epochs=2, zdim=2)
    ref = api.refine("ws", viewer, embedding=vae.run_id, n_clusters=2)

Settings are the fields of the stage's config (``SpectralConfig``, ``ChainFitConfig``,
``VAEConfig``, ``RefineConfig``, ...); an unknown name is refused with the list of the
known ones. Inputs from other runs (the chain fit's ``eigenvectors``, the clustering's
``embedding``) are given by run id, or default to the newest finished run that fits (a run
of a stage the input accepts, on the same particles). docs/api.md is the reference.

This module sits in the outer ring beside ``plugin/`` and ``cli/``: it imports the stages
at call time, and napari (through ``plugin/``) only when a viewer is given, so it runs
headless on a GPU node. Under ``torchrun`` the stages that share their work among processes
(VAE, chain fit, clustering/refinement) run on every process; the others run on rank 0
while the rest wait; only rank 0 gets the result (the others get ``None``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

__all__ = ["open_workspace", "viewer_if_available", "run_stage", "simulate", "spectral", "chainfit", "vae", "refine", "hypermolecule",
           "settings_of", "default_input", "SHARED_STAGES"]

#: Stages whose run takes part in ``torch.distributed`` collectives under ``torchrun``
#: (docs/scale-out.md, "What scales"); the others run on rank 0 alone.
SHARED_STAGES = frozenset({"vae", "chainfit", "refine"})


def open_workspace(folder: str | Path | Any, source: str | Path | dict[str, Any] | None = None):
    """The workspace in ``folder``; a new one for ``source`` when the folder holds none.

    Parameters
    ----------
    folder
        A workspace folder, or a :class:`Workspace` (returned as it is).
    source
        The dataset of a new workspace: a ``.star``/``.cs``/``.mrcs`` path, ``{"path": ...,
        "options": {"datadir": ..., "contrast_inverted": True, ...}}`` (the options of
        :func:`napari_cryohet.io.load_particles.load_dataset`), or a simulator recipe
        ``{"recipe": "adk_chain", "args": {"n_particles": 200, "seed": 0}}``. An existing
        workspace opened with another source is refused.

    Returns
    -------
    Workspace
    """
    from napari_cryohet.stages.workspace import WORKSPACE_FILE, Workspace

    if isinstance(folder, Workspace):
        return folder
    folder = Path(folder)
    if source is None:
        if not (folder / WORKSPACE_FILE).is_file():
            raise ValueError(f"workspace folder {folder}: not a workspace yet (no {WORKSPACE_FILE}); give the "
                             "dataset as source= (a .star file or a simulator recipe)")
        return Workspace.open(folder)
    return Workspace.create(folder, source)


def viewer_if_available(**kwargs: Any) -> Any:
    """A ``napari.Viewer(**kwargs)`` when napari is installed and a display exists, else ``None``.

    Scripts call it so that the same file draws in a window on a desktop and runs headless
    on a GPU node (no ``DISPLAY`` nor ``WAYLAND_DISPLAY``). ``CRYOHET_NO_VIEWER=1`` in the
    environment forces headless.
    """
    import os

    if os.environ.get("CRYOHET_NO_VIEWER") == "1":
        return None
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return None
    try:
        import napari
    except ImportError:
        return None
    return napari.Viewer(**kwargs)


def settings_of(stage: str) -> list[str]:
    """The names of the settings ``stage`` takes (its config's fields)."""
    from napari_cryohet.stages.registry import stage_spec

    return [f.name for f in dataclasses.fields(stage_spec(stage).config) if f.init]


def _config(spec: Any, settings: dict[str, Any]) -> Any:
    known = [f.name for f in dataclasses.fields(spec.config) if f.init]
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise ValueError(f"{spec.name}: unknown setting(s) {unknown}; {spec.config.__name__} takes "
                         f"{', '.join(known)}")
    return spec.config(**settings)


def default_input(ws: Any, stage: str, name: str) -> str | None:
    """The run id an input defaults to: the newest finished run that fits (``None``: none does).

    A run fits when its stage is one the input accepts and it has per-particle vectors (or a
    result, for result inputs); runs on the workspace's particles are preferred over runs on
    a subset of them.
    """
    from napari_cryohet.stages.protocol import dataset_indices, particle_index_hash
    from napari_cryohet.stages.registry import stage_spec

    ispec = stage_spec(stage).inputs[name]
    done = [m for m in ws.runs() if m.get("status") == "done" and m.get("stage") in ispec.stages]
    if not done:
        return None
    def finished(m: dict[str, Any]) -> tuple[str, int]:  # oldest first; the manifest's last write breaks
        manifest = ws.root / m["run_id"] / "manifest.json"  # same-second ties (it is written at the end)
        return m.get("ended") or "", manifest.stat().st_mtime_ns if manifest.exists() else 0

    done.sort(key=finished)
    whole = particle_index_hash(dataset_indices(ws.dataset))
    same = [m for m in done if m.get("particle_index_hash") == whole]
    return (same or done)[-1]["run_id"]


def _inputs(ws: Any, spec: Any, given: dict[str, str | None]) -> dict[str, str]:
    unknown = sorted(set(given) - set(spec.inputs))
    if unknown:
        raise ValueError(f"{spec.name}: unknown input(s) {unknown}; it takes {sorted(spec.inputs) or 'none'}")
    out = {}
    for name, ispec in spec.inputs.items():
        ref = given.get(name)
        if ref is None and ispec.required:
            ref = default_input(ws, spec.name, name)
            if ref is None:
                raise ValueError(f"{spec.name}: input {name!r} needs a finished run of "
                                 f"{' or '.join(ispec.stages)} in workspace {ws.root}; run one first")
        if ref is not None:
            out[name] = str(getattr(ref, "run_id", None) or ref)  # a result stands for its run
    return out


def _session(viewer: Any, ws: Any):
    """The viewer's session, working in ``ws`` (opened there once: its scenes are restored)."""
    from napari_cryohet.plugin.session import Session

    session = Session.for_viewer(viewer)
    current = session.workspace
    if current is None or current.root.resolve() != ws.root.resolve():
        session.use_workspace(ws.root)
    return session


def _present(viewer: Any, ws: Any, result: Any) -> None:
    from napari_cryohet.plugin.presenters import PRESENTERS, present

    session = _session(viewer, ws)
    if result is not None and result.STAGE in PRESENTERS:
        present(session, result, show=True)


def run_stage(stage: str, workspace: str | Path | Any, viewer: Any = None, *,
              inputs: dict[str, str] | None = None, progress: Any = None, **settings: Any) -> Any:
    """Run ``stage`` in ``workspace`` with ``settings``; draw its scene in ``viewer`` when given.

    Parameters
    ----------
    stage
        A registered stage name (``"spectral"``, ``"chainfit"``, ``"vae"``, ``"refine"``,
        ``"hypermolecule"`` ...).
    workspace
        A workspace folder or :class:`Workspace`.
    viewer
        A ``napari.Viewer``: its session opens the workspace and the result's scene is shown.
    inputs
        Input name → run id (``{"eigenvectors": "spectral/0002"}``); a result object stands
        for its run. Required inputs left out take :func:`default_input`. Input names may
        also be given as keywords (``eigenvectors="spectral/0002"``).
    progress
        ``progress(fraction, message)`` callback.
    **settings
        Fields of the stage's config.

    Returns
    -------
    StageResult
        The run's result (``result.run_id`` names its folder); ``None`` on ranks other than
        0 under ``torchrun``.
    """
    from napari_cryohet.stages import distributed
    from napari_cryohet.stages.registry import stage_spec

    spec = stage_spec(stage)
    given = dict(inputs or {})
    for name in list(settings):
        if name in spec.inputs:
            given[name] = settings.pop(name)
    config = _config(spec, settings)
    if stage == "chainfit" and getattr(config, "reference", None):  # one file, one setting, from any folder
        config = dataclasses.replace(config, reference=str(Path(config.reference).expanduser().resolve()))
    ws = distributed.main_first(lambda: open_workspace(workspace))
    if viewer is not None:
        _session(viewer, ws)  # the dataset and earlier runs appear before this one starts
    ctx = distributed.context()
    ids = distributed.broadcast_object(_inputs(ws, spec, given) if ctx.is_main else None)
    if stage in SHARED_STAGES:
        result = distributed.run_in_workspace(ws, stage, config, inputs=ids, progress=progress)
    else:  # rank 0 runs it; the others wait for its files (the spectral embedding, docs/scale-out.md)
        result = ws.run(stage, config, inputs=ids, progress=progress) if ctx.is_main else None
        distributed.barrier()
    if viewer is not None:
        _present(viewer, ws, result)
    return result


def simulate(folder: str | Path, viewer: Any = None, *, recipe: str = "adk_chain", n_particles: int = 200,
             seed: int = 0, progress: Any = None, **args: Any) -> Any:
    """Simulate a dataset with ground truth as the dataset of workspace ``folder``.

    ``recipe`` and its ``args`` (``snr``, ``box_size``, ``apix``, ...) are those of
    :mod:`napari_cryohet.stages.simulate` (``cryohet simulate --help``). The workspace's
    source becomes ``{"recipe": recipe, "args": {...}}``, so the GUI and every later call
    reopen the very same particles. With a viewer, its session opens the workspace: the
    particles scene shows the stack.

    Returns
    -------
    SimulateResult
        ``result.dataset`` is the simulated ``ParticleDataset``.
    """
    from napari_cryohet.stages import distributed
    from napari_cryohet.stages.registry import stage_spec

    config = _config(stage_spec("simulate"), {"recipe": recipe, "n_particles": n_particles, "seed": seed,
                                                "args": args})
    ws = distributed.main_first(lambda: open_workspace(folder, config.source()))

    def make():
        result = ws.run("simulate", config, progress=progress)
        ws._dataset = result.dataset  # what ws.dataset reads back: the run's own files
        return result

    result = distributed.main_first(make)
    if viewer is not None:
        _session(viewer, ws)
    return result


def spectral(workspace: str | Path | Any, viewer: Any = None, *, features: str | None = None, progress: Any = None,
             **settings: Any) -> Any:
    """Spectral embedding (Esteve-Yagüe et al. 2022, §2.2): Laplacian eigenvectors ``(N, K)``.

    Settings are :class:`~napari_cryohet.stages.spectral.SpectralConfig`'s fields. Without
    ``representation``: ``"table"`` with ``features`` (another run's per-particle vectors,
    e.g. ``"vae/0001"``) or ``columns``; ``"lowres_volumes"`` for simulated data; else
    ``"pca_images"`` (as ``cryohet spectral``).
    """
    if "representation" not in settings:
        settings["representation"] = _default_representation(workspace, features, settings)
    return run_stage("spectral", workspace, viewer, inputs={"features": features} if features else None,
                     progress=progress, **settings)


def _default_representation(workspace: Any, features: str | None, settings: dict[str, Any]) -> str:
    if features or settings.get("columns"):
        return "table"
    dataset = open_workspace(workspace).dataset
    truth = getattr(dataset, "ground_truth", None) or {}
    return "lowres_volumes" if getattr(dataset, "low_dim", None) is not None or "coords_a" in truth else "pca_images"


def chainfit(workspace: str | Path | Any, viewer: Any = None, *, eigenvectors: str | None = None,
             progress: Any = None, **settings: Any) -> Any:
    """Backbone chain fit (Esteve-Yagüe et al. 2022, eq. 2.6) on a spectral run's eigenvectors.

    ``eigenvectors`` is a spectral run id (default: the newest finished one); settings are
    :class:`~napari_cryohet.stages.chainfit.ChainFitConfig`'s fields.
    """
    return run_stage("chainfit", workspace, viewer, inputs={"eigenvectors": eigenvectors}, progress=progress,
                     **settings)


def vae(workspace: str | Path | Any, viewer: Any = None, *, progress: Any = None, **settings: Any) -> Any:
    """Structural-basis VAE (Kimanius, Jamali & Scheres 2022): latents ``(N, zdim)`` and a decoder.

    Settings are :class:`~napari_cryohet.stages.vae.VAEConfig`'s fields.
    """
    return run_stage("vae", workspace, viewer, progress=progress, **settings)


def refine(workspace: str | Path | Any, viewer: Any = None, *, embedding: str | None = None, progress: Any = None,
           **settings: Any) -> Any:
    """Clustering and pose refinement (Silvera Coeff 2025, §4.1) on a run's per-particle vectors.

    ``embedding`` is a VAE or spectral run id (default: the newest finished one of either);
    settings are :class:`~napari_cryohet.stages.refine.config.RefineConfig`'s fields.
    """
    return run_stage("refine", workspace, viewer, inputs={"embedding": embedding}, progress=progress, **settings)


def hypermolecule(workspace: str | Path | Any, viewer: Any = None, *, progress: Any = None, **settings: Any) -> Any:
    """Hyper-molecule sampler (Lederman, Andén & Singer 2020): samples of ``V(r, τ)``.

    Available when the stage ``"hypermolecule"`` is registered (looked up at call time);
    settings are its config's fields.
    """
    from napari_cryohet.stages.registry import STAGES

    if "hypermolecule" not in STAGES:
        raise ValueError("hypermolecule: the hyper-molecule sampler is not part of this version of napari-cryohet "
                         f"(stages: {', '.join(sorted(STAGES))})")
    return run_stage("hypermolecule", workspace, viewer, progress=progress, **settings)
