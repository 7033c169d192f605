"""List and describe the runs of a workspace: ``cryohet ws ls DIR``, ``cryohet ws show DIR RUN``.

A workspace is the folder every stage writes its runs into (``--workspace DIR``): one
``<stage>/<NNNN>/`` folder per run with its settings, inputs, status and results. Examples:

  cryohet ws ls ws                     # every run: id, status, inputs, particles, time
  cryohet ws ls ws --stage spectral
  cryohet ws show ws chainfit/0001     # settings, inputs, status and result files of one run
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["add_args", "main", "list_runs", "describe_run"]


def add_args(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="ws_command", required=True, metavar="<ls|show>")
    ls = sub.add_parser("ls", help="list the runs of a workspace",
                        description="List the runs of a workspace: id, status, particles, start time, inputs.")
    ls.add_argument("workspace", type=Path, metavar="DIR", help="workspace folder")
    ls.add_argument("--stage", default=None, metavar="STAGE",
                    help="only the runs of this stage (simulate, spectral, chainfit, vae)")
    show = sub.add_parser("show", help="describe one run",
                          description="Describe one run: status, settings, inputs and result files.")
    show.add_argument("workspace", type=Path, metavar="DIR", help="workspace folder")
    show.add_argument("run", metavar="RUN", help="run id, e.g. spectral/0002 (or a stage name: its latest finished run)")


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


def main(args: argparse.Namespace) -> int:
    if args.ws_command == "ls":
        print(list_runs(args.workspace, args.stage))
    else:
        print(describe_run(args.workspace, args.run))
    return 0
