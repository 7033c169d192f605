"""Command-line flags generated from a stage's config fields, and the shared workspace flags.

A stage config declares each field once (:func:`napari_cryohet.stages.protocol.param`:
default, help, unit, allowed values); this module turns those declarations into argparse
flags (``learning_rate`` → ``--learning-rate``, booleans as ``--x/--no-x``, tuples as
comma-separated lists, ``None`` defaults as "leave out"), and back into a config. The
widgets build their forms from the same declarations (``plugin/_config_form.py``), so the
GUI, the CLI and the Python API cannot drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path
from typing import Any

from napari_cryohet.stages.protocol import field_type

__all__ = ["add_config_args", "config_from_args", "add_workspace_args", "open_workspace", "input_ids", "print_progress",
           "plain_text"]

_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`~?([^`<]*?)\s*(?:<[^>]*>)?`")  # :func:`~a.b.c` / :class:`x <a.b>`
_LITERAL = re.compile(r"``(.+?)``", re.DOTALL)
_STRONG = re.compile(r"(?<![\w*])\*\*(\S(?:.*?\S)?)\*\*(?![\w*])")
_EMPHASIS = re.compile(r"(?<![\w*])\*(\S(?:[^*]*?\S)?)\*(?![\w*])")
_INTERPRETED = re.compile(r"(?<![\w`])`([^`]+)`(?![\w`])")


def plain_text(text: str) -> str:
    """``text`` (a docstring or help in reStructuredText) as plain text for ``--help``.

    Roles keep their last name (``:func:`~a.b.run``` → ``run``), literals and emphasis
    lose their markers, and a literal-block ``::`` becomes ``:``.
    """
    def role(m: re.Match) -> str:
        target = m.group(1).strip()
        return target.rsplit(".", 1)[-1] if m.group(0).split("`", 1)[1].startswith("~") else target

    text = _ROLE.sub(role, text)
    text = _LITERAL.sub(r"\1", text)
    text = _STRONG.sub(r"\1", text)
    text = _EMPHASIS.sub(r"\1", text)
    text = _INTERPRETED.sub(r"\1", text)
    return re.sub(r"(\S)::$", r"\1:", re.sub(r"\s::$", "", text, flags=re.MULTILINE), flags=re.MULTILINE)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_args(parser: argparse.ArgumentParser, config_cls: type, *, exclude: tuple[str, ...] = (),
                    title: str | None = None, default_text: dict[str, str] | None = None) -> None:
    """Add one flag per field of ``config_cls`` (except ``exclude``) to ``parser``.

    ``default_text`` replaces the shown default of fields whose default the command picks
    from the data (field name → words).
    """
    group = parser.add_argument_group(title or f"{config_cls.__name__} settings")
    defaults = config_cls()
    for f in dataclasses.fields(config_cls):
        if f.name in exclude or not f.init:
            continue
        base, optional, is_tuple = field_type(config_cls, f)
        if base is dict:
            continue
        meta = f.metadata
        default = getattr(defaults, f.name)
        unit = f" [{meta['unit']}]" if meta.get("unit") else ""
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        shown = "none" if shown is None or shown == "" else shown
        shown = {True: "on", False: "off"}.get(shown, shown) if isinstance(shown, bool) else shown
        shown = (default_text or {}).get(f.name, shown)
        text = plain_text(f"{meta.get('help') or meta.get('label') or ''}{unit}{_bounds(meta)} (default: {shown})")
        text = text.strip().replace("%", "%%")  # argparse formats help with %
        kwargs: dict[str, Any] = {"dest": f"cfg_{f.name}", "default": argparse.SUPPRESS, "help": text}
        if base is bool and not optional:
            group.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, **kwargs)
            continue
        if is_tuple:
            kwargs["type"] = _list_parser(base)
            kwargs["metavar"] = "A,B,..."
        else:
            kwargs["type"] = _none_or(base) if optional else base
            kwargs["metavar"] = {int: "N", float: "X"}.get(base, "TEXT")
            if meta.get("choices") is not None:
                kwargs["choices"] = list(meta["choices"]) + ([None] if optional else [])
                kwargs["metavar"] = "{" + ",".join(map(str, meta["choices"])) + "}"
        group.add_argument(_flag(f.name), **kwargs)


def _bounds(meta: dict[str, Any]) -> str:
    lo, hi = meta.get("minimum"), meta.get("maximum")
    if meta.get("choices") is not None or (lo is None and hi is None):
        return ""
    if lo is not None and hi is not None:
        return f" ({lo:g} to {hi:g})"
    return f" ({lo:g} or more)" if lo is not None else f" (up to {hi:g})"


def _none_or(base: type):
    def parse(text: str):
        return None if text.lower() in ("none", "") else base(text)

    parse.__name__ = base.__name__
    return parse


def _list_parser(base: type):
    def parse(text: str):
        return tuple(base(part) for part in text.replace(" ", "").split(",") if part)

    parse.__name__ = f"list of {base.__name__}"
    return parse


def config_from_args(config_cls: type, args: argparse.Namespace, **overrides: Any):
    """Build ``config_cls`` from the flags :func:`add_config_args` added (plus ``overrides``).

    Invalid values end as the config's own ``ValueError``; the CLI prints it as an error.
    """
    values = {k[len("cfg_"):]: v for k, v in vars(args).items() if k.startswith("cfg_")}
    values.update(overrides)
    return config_cls(**values)


def add_workspace_args(parser: argparse.ArgumentParser, *, inputs: dict[str, str] | None = None) -> None:
    """``--workspace DIR`` (required), the dataset source of a new workspace, and input run ids."""
    parser.add_argument("--workspace", type=Path, required=True, metavar="DIR",
                        help="workspace directory: created on first use, reused after (results, checkpoints)")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--star", type=Path, default=None, metavar="FILE",
                     help="a RELION .star file, a cryoSPARC .cs file or a .mrcs stack: the dataset of a new "
                          "workspace")
    src.add_argument("--sample", default=None, metavar="RECIPE",
                     help="a simulator recipe (adk_chain, adk_volumes, box_arms_2d, ...): the dataset of a new "
                          "workspace")
    add_dataset_args(parser, new_workspace=True)
    parser.add_argument("--n-particles", type=int, default=None, metavar="N", help="particles of --sample")
    parser.add_argument("--snr", type=float, default=None, metavar="X", help="signal-to-noise ratio of --sample")
    parser.add_argument("--sample-seed", type=int, default=0, metavar="N", help="random seed of --sample")
    for name, text in (inputs or {}).items():
        parser.add_argument(_flag(name), dest=f"in_{name}", default=None, metavar="RUN", help=text)


def add_dataset_args(parser: argparse.ArgumentParser, *, new_workspace: bool = False) -> None:
    """How to read a particle file: ``--datadir``, ``--contrast-inverted``, cryoDRGN and cryoSPARC files.

    The options of :func:`napari_cryohet.io.load_particles.load_dataset`; with
    ``new_workspace`` the help says they describe the particles of a new workspace (which
    stores them, so later commands on the workspace need not repeat them).
    """
    when = " (new workspace; stored in it)" if new_workspace else ""
    g = parser.add_argument_group("reading the particle file" + when)
    g.add_argument("--datadir", type=Path, default=None, metavar="DIR",
                   help="folder the particle stacks are in, when not where the .star/.cs file says (moved or "
                        "copied data; as cryoDRGN's --datadir). For a .cs file: the cryoSPARC project folder")
    g.add_argument("--contrast-inverted", action="store_true",
                   help="the images show density dark on a light background (inverted with respect to RELION; "
                        "cryoDRGN's default input, some ASPIRE stacks): they are multiplied by -1 when read. "
                        "'cryohet info' checks which way the data look")
    g.add_argument("--poses", type=Path, default=None, metavar="FILE",
                   help="cryoDRGN poses .pkl (for a .mrcs stack, or overriding the file's poses)")
    g.add_argument("--ctf", type=Path, default=None, metavar="FILE",
                   help="cryoDRGN CTF .pkl (for a .mrcs stack, or overriding the file's CTF)")
    g.add_argument("--apix", type=float, default=None, metavar="X", help="pixel size in Å, overriding the files'")
    g.add_argument("--passthrough", type=Path, action="append", default=None, metavar="FILE",
                   help="cryoSPARC passthrough .cs merged by particle uid (repeatable; default: the "
                        "*passthrough*.cs files beside the .cs, when needed)")


def dataset_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``load_dataset`` options given by :func:`add_dataset_args`' flags (``None`` ones left out)."""
    from napari_cryohet.io.load_particles import load_options

    return load_options(poses=args.poses, ctf=args.ctf, apix=args.apix, passthrough=args.passthrough,
                        datadir=args.datadir, contrast_inverted=args.contrast_inverted)


def open_workspace(args: argparse.Namespace):
    """The workspace of ``--workspace``, created from ``--star``/``--sample`` when new."""
    from napari_cryohet.stages.workspace import WORKSPACE_FILE, Workspace

    root = args.workspace
    source: Any = None
    options = dataset_options(args)
    if options and args.star is None:
        raise SystemExit("cryohet: --datadir, --contrast-inverted, --poses, --ctf, --apix and --passthrough describe "
                         "the particle file of a new workspace: give them with --star")
    if args.star is not None:
        source = {"path": args.star, "options": options} if options else args.star
    elif args.sample is not None:
        sample_args = {"n_particles": args.n_particles, "snr": args.snr, "seed": args.sample_seed}
        source = {"recipe": args.sample, "args": {k: v for k, v in sample_args.items() if v is not None}}
    if source is None:
        if not (root / WORKSPACE_FILE).exists():
            raise SystemExit(f"cryohet: {root} is not a workspace yet: give --star FILE or --sample NAME")
        return Workspace.open(root)
    return Workspace.create(root, source)


def input_ids(args: argparse.Namespace) -> dict[str, str]:
    """Input name → run id from the input flags :func:`add_workspace_args` added."""
    return {k[len("in_"):]: v for k, v in vars(args).items() if k.startswith("in_") and v is not None}


def print_progress(every_batch: bool = False):
    """A progress callback printing stage messages (not every batch unless asked)."""
    def progress(fraction: float, message: str) -> None:
        if fraction < 0:  # busy, no fraction known (stages._common.BUSY)
            print(f"[  ...] {message}", flush=True)
        elif every_batch or "batch" not in message:
            print(f"[{100 * fraction:5.1f}%] {message}", flush=True)

    return progress
