"""List, describe and export the runs of a workspace: ``cryohet ws ls|show|export-script``.

A workspace is the folder every stage writes its runs into (``--workspace DIR``): one
``<stage>/<NNNN>/`` folder per run with its settings, inputs, status and results. Examples:

  cryohet ws ls ws                     # every run: id, status, inputs, particles, time
  cryohet ws ls ws --stage spectral
  cryohet ws show ws chainfit/0001     # settings, inputs, status and result files of one run
  cryohet ws export-script ws > reproduce.py
      # a Python script that makes every finished run again from its recorded settings:
      # python reproduce.py NEW_FOLDER (docs/api.md)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["add_args", "main", "list_runs", "describe_run", "export_script"]


def add_args(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="ws_command", required=True, metavar="<ls|show|export-script>")
    ls = sub.add_parser("ls", help="list the runs of a workspace",
                        description="List the runs of a workspace: id, status, particles, start time, inputs.")
    ls.add_argument("workspace", type=Path, metavar="DIR", help="workspace folder")
    ls.add_argument("--stage", default=None, metavar="STAGE",
                    help="only the runs of this stage (simulate, spectral, chainfit, vae)")
    show = sub.add_parser("show", help="describe one run",
                          description="Describe one run: status, settings, inputs and result files.")
    show.add_argument("workspace", type=Path, metavar="DIR", help="workspace folder")
    show.add_argument("run", metavar="RUN", help="run id, e.g. spectral/0002 (or a stage name: its latest finished run)")
    export = sub.add_parser("export-script", help="print a Python script that reproduces the workspace's runs",
                            description="Print a Python script that makes every finished run of the workspace "
                                        "again, in order, from its recorded settings and inputs, through "
                                        "napari_cryohet.api: cryohet ws export-script ws > reproduce.py, then "
                                        "python reproduce.py NEW_FOLDER.")
    export.add_argument("workspace", type=Path, metavar="DIR", help="workspace folder")


def list_runs(root: str | Path, stage: str | None = None) -> str:
    """The table ``cryohet ws ls`` prints."""
    from napari_cryohet.stages.workspace import Workspace

    ws = Workspace.open(root)
    src = ws.info["source"]
    what = f"simulated: {src['recipe']} {src.get('args', {})}" if "recipe" in src else src["path"]
    lines = [f"workspace {ws.root}  (dataset: {what})",
             f"{'run':<16}{'status':<11}{'particles':>10}  {'started':<26}inputs"]
    for m in ws.runs(stage):
        inputs = ", ".join(f"{k}={v}" for k, v in m.get("inputs", {}).items()) or "-"
        lines.append(f"{m['run_id']:<16}{m['status']:<11}{m.get('n_particles', 0):>10}  "
                     f"{m.get('started') or '':<26}{inputs}")
    return "\n".join(lines)


def describe_run(root: str | Path, run: str) -> str:
    """The text ``cryohet ws show`` prints."""
    from napari_cryohet.stages.workspace import Workspace

    ws = Workspace.open(root)
    run_id = ws.resolve(run, done=False)
    m = ws.manifest(run_id, done=False)
    files = sorted(p.name for p in (ws.root / run_id).iterdir() if not p.name.startswith("."))
    lines = [f"run:        {run_id}", f"status:     {m['status']}" + (f" ({m['error']})" if m.get("error") else ""),
             f"started:    {m.get('started')}", f"ended:      {m.get('ended')}",
             f"particles:  {m.get('n_particles')} (index hash {m.get('particle_index_hash')})",
             f"inputs:     {json.dumps(m.get('inputs', {}))}", f"settings:   fingerprint {m.get('fingerprint')}"]
    lines += [f"  {k} = {json.dumps(v)}" for k, v in m.get("config", {}).items()]
    lines += [f"version:    napari-cryohet {m.get('package_version')}", f"files:      {', '.join(files)}"]
    return "\n".join(lines)


def _source_literal(ws) -> dict:
    """The workspace's dataset source as ``api.open_workspace`` takes it (the particle file's
    absolute path as found now: beside the workspace when it travelled with it)."""
    src = dict(ws.info["source"])
    if "recipe" in src:
        return {"recipe": src["recipe"], "args": dict(src.get("args", {}))}
    relative = ws.root / src.get("relative_path", "")
    path = relative if src.get("relative_path") and relative.exists() else Path(src["path"])
    out = {"path": str(path.resolve())}
    if src.get("options"):
        out["options"] = dict(src["options"])
    return out


def export_script(root: str | Path) -> str:
    """The Python script ``cryohet ws export-script`` prints: every finished run again, in order.

    Each finished run of the workspace becomes one :func:`napari_cryohet.api.run_stage`
    call with the settings recorded in its ``manifest.json`` and its inputs mapped to the
    new workspace's run ids (numbers may differ when failed or cancelled runs took some).
    Runs on a subset of the particles (a selection made in the window) and runs of stages
    this version does not know are listed as comments, with the runs that took them as input.
    """
    import datetime
    import pprint

    from napari_cryohet import __version__
    from napari_cryohet.api import settings_of
    from napari_cryohet.stages.protocol import dataset_indices, particle_index_hash
    from napari_cryohet.stages.registry import STAGES
    from napari_cryohet.stages.workspace import Workspace

    ws = Workspace.open(root)
    source = _source_literal(ws)
    done = sorted((m for m in ws.runs() if m.get("status") == "done"),
                  key=lambda m: (m.get("started") or "", m["run_id"]))
    whole = None
    lines = [f'"""Reproduce the runs of the napari-cryohet workspace {ws.root.resolve()}.',
             "",
             f"Written by `cryohet ws export-script` on {datetime.date.today().isoformat()} (napari-cryohet "
             f"{__version__}). Every finished run",
             "of that workspace, in the order it was made, with the settings and inputs recorded in its",
             "manifest.json. Run it with",
             "",
             "    python reproduce.py NEW_FOLDER",
             "",
             "The runs are deterministic given their seeds: the new folder gets the same results (up to",
             "floating-point summation order on other hardware). The device setting (cpu, cuda, auto)",
             "does not change which run is made and may be edited.",
             '"""',
             "",
             "import sys",
             "",
             "from napari_cryohet import api",
             "",
             'folder = sys.argv[1] if len(sys.argv) > 1 else "reproduced_workspace"',
             f"ws = api.open_workspace(folder, source={pprint.pformat(source, width=100, sort_dicts=False)})",
             "runs = {}  # run id in the original workspace -> run id in the new one",
             ""]
    skipped: set[str] = set()
    for m in _in_dependency_order(done):
        run_id, stage = m["run_id"], m["stage"]
        inputs = dict(m.get("inputs") or {})
        why = None
        missing = [ref for ref in inputs.values() if ref in skipped or ref not in {d["run_id"] for d in done}]
        if stage not in STAGES:
            why = f"stage {stage!r} is not part of this version"
        elif missing:
            why = f"its input {', '.join(missing)} is not reproduced"
        elif _needs_dataset(stage):
            if whole is None:
                whole = particle_index_hash(dataset_indices(ws.dataset))
            if m.get("particle_index_hash") != whole:
                why = f"it ran on a subset of {m.get('n_particles')} particles (a selection), not the whole dataset"
        if why:
            skipped.add(run_id)
            lines += [f"# {run_id}: not reproduced: {why}", ""]
            continue
        known = set(settings_of(stage))
        recorded = m.get("config") or {}
        dropped = sorted(set(recorded) - known)
        note = f" (settings this version no longer has, left out: {dropped})" if dropped else ""
        mapped = "{" + ", ".join(f"{name!r}: runs[{ref!r}]" for name, ref in inputs.items()) + "}"
        lines += [f"# {run_id}: made {m.get('started')}, fingerprint {m.get('fingerprint')}{note}",
                  "settings = {", *(f"    {k!r}: {v!r}," for k, v in recorded.items() if k in known), "}",
                  f"runs[{run_id!r}] = api.run_stage({stage!r}, ws, inputs={mapped}, **settings).run_id",
                  ""]
    lines += ['print("\\n".join(f"{old} -> {new}" for old, new in runs.items()))']
    return "\n".join(lines) + "\n"


def _in_dependency_order(manifests: list[dict]) -> list[dict]:
    """``manifests`` (oldest first) with every run after the runs it took as input (start
    times have one-second resolution, so a fast chain of runs can share one)."""
    pending, placed, out = list(manifests), set(), []
    known = {m["run_id"] for m in manifests}
    while pending:
        ready = next((m for m in pending if all(ref in placed or ref not in known
                                                for ref in (m.get("inputs") or {}).values())), pending[0])
        pending.remove(ready)
        placed.add(ready["run_id"])
        out.append(ready)
    return out


def _needs_dataset(stage: str) -> bool:
    from napari_cryohet.stages.registry import stage_spec

    return bool(stage_spec(stage).needs_dataset)


def main(args: argparse.Namespace) -> int:
    if args.ws_command == "ls":
        print(list_runs(args.workspace, args.stage))
    elif args.ws_command == "export-script":
        print(export_script(args.workspace), end="")
    else:
        print(describe_run(args.workspace, args.run))
    return 0
