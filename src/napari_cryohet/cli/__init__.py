"""cryohet: cryo-EM heterogeneity analysis from the shell: simulate data, embed, fit chains, train a VAE.

A thin ring (docs/design.md, "Architecture and rings"): every stage from the shell.

One module per subcommand in this package, each with a module docstring (its help),
``add_args(parser)`` and ``main(args)``; ``main`` only parses and delegates to a stage.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["main", "SUBCOMMANDS"]

#: subcommand name → module in this package. Add a line per stage.
SUBCOMMANDS: dict[str, str] = {
    "demo": "demo",
    "info": "info",
    "simulate": "simulate",
    "spectral": "spectral",
    "chainfit": "chainfit",
    "vae": "vae",
    "refine": "refine",
    "hypermolecule": "hypermolecule",
    "ws": "ws",
    "run-all": "run_all",
}


def build_parser() -> argparse.ArgumentParser:
    from napari_cryohet import __version__
    from napari_cryohet.cli._config_args import plain_text

    parser = argparse.ArgumentParser(prog="cryohet", description=plain_text(__doc__.splitlines()[0]))
    parser.add_argument("--version", action="version", version=f"napari-cryohet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(f"napari_cryohet.cli.{module_name}")
        doc = plain_text((module.__doc__ or name).strip())
        p = sub.add_parser(name, help=doc.splitlines()[0], description=doc,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_args(p)
        p.set_defaults(_main=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cryohet`` console script; returns the exit status."""
    from napari_cryohet.io.errors import CryohetInputError

    args = build_parser().parse_args(argv)
    try:
        return int(args._main(args) or 0)
    except (CryohetInputError, ValueError) as err:  # bad files, bad settings: one line, no traceback
        print(f"cryohet {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
