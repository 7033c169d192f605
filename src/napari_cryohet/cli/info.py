"""Summarise a particle file: ``cryohet info FILE`` (.star, .cs, .mrcs, .mrc/.map).

Prints the number of particles, the box size, the pixel size, whether poses and CTF are
present, which metadata columns the file holds and which way the contrast looks
(:mod:`napari_cryohet.core.contrast`: the one part that reads images, at most 512 of them;
``--no-contrast-check`` skips it). The file is read as every command reads it, with the
same options (``--datadir``, ``--contrast-inverted``, cryoDRGN pickles, passthrough files).
"""

from __future__ import annotations

import argparse
from pathlib import Path

#: What ``cryohet info`` calls each particle file by its suffix (anything else: a particle stack).
KINDS = {".star": "star file", ".cs": "cryoSPARC particles (.cs)"}

__all__ = ["add_args", "main", "summarize"]


def add_args(parser: argparse.ArgumentParser) -> None:
    from napari_cryohet.cli._config_args import add_dataset_args

    parser.add_argument("file", type=Path, metavar="FILE",
                        help="a RELION .star file, a cryoSPARC .cs file, a .mrcs/.mrc stack or a .mrc/.map volume")
    parser.add_argument("--no-contrast-check", dest="contrast_check", action="store_false",
                        help="do not read images to check which way the contrast is")
    add_dataset_args(parser)


def summarize(path: str | Path, *, contrast_check: bool = True, **options) -> str:
    """The text ``cryohet info`` prints for ``path`` (``options`` go to ``load_dataset``)."""
    from napari_cryohet.io.load_particles import load_dataset
    from napari_cryohet.io.mrc_header import read_stack_header

    path = Path(path)
    if path.suffix.lower() in (".mrc", ".map"):
        header = read_stack_header(path, require_even_square=False)
        if path.suffix.lower() == ".map" or header.n_images == header.ny == header.nx:
            apix = f"{header.apix:g} Å/px" if header.apix else "absent"
            return "\n".join([f"file:        {path}", "kind:        volume",
                              f"shape:       {header.n_images} x {header.ny} x {header.nx} (z, y, x)",
                              f"voxel size:  {apix}"])
    ds = load_dataset(path, ground_truth=False, **options)
    columns = [str(c) for c in ds.table.columns] if ds.table is not None else []
    optics = ds.meta.get("optics")
    lines = [
        f"file:        {path}",
        f"kind:        {KINDS.get(path.suffix.lower(), 'particle stack')}"
        + (f" ({ds.meta['star_format']})" if "star_format" in ds.meta else ""),
        f"particles:   {len(ds)}",
        f"box:         {ds.box_size} px",
        f"pixel size:  {ds.apix:g} Å/px",
        f"poses:       {'yes' if ds.rotations is not None else 'no'}",
        f"shifts:      {'yes' if ds.shifts_a is not None else 'no'}",
        f"ctf:         {'yes' if ds.ctf is not None else 'no'}",
    ]
    if ds.ctf is not None and len(ds):
        lines.append(f"defocus:     {ds.ctf.defocus_u_a.min():.0f} – {ds.ctf.defocus_u_a.max():.0f} Å (U)")
    if ds.meta.get("cs_passthrough"):
        lines.append(f"passthrough: {', '.join(ds.meta['cs_passthrough'])}")
    if contrast_check and len(ds):
        lines.append(_contrast_line(ds))
    if columns:
        lines.append(f"columns:     {', '.join(columns)}")
    if optics is not None and len(getattr(optics, "columns", [])):
        lines.append(f"optics:      {len(optics)} group(s): {', '.join(str(c) for c in optics.columns)}")
    return "\n".join(lines)


def _contrast_line(ds) -> str:
    from napari_cryohet.core.contrast import check_contrast

    check = check_contrast(ds)
    setting = "read with --contrast-inverted" if ds.meta.get("contrast_inverted") else "read as they are"
    verdict = {"expected": "as expected (density white on dark, RELION's convention)",
               "inverted": "looks INVERTED (density dark on light): "
                           + ("leave out --contrast-inverted" if ds.meta.get("contrast_inverted")
                              else "use --contrast-inverted"),
               "undecided": "undecided (too little signal in the images checked)"}[check.verdict]
    return f"contrast:    {verdict}; images {setting}; {check.evidence}"


def main(args: argparse.Namespace) -> int:
    from napari_cryohet.cli._config_args import dataset_options

    print(summarize(args.file, contrast_check=args.contrast_check, **dataset_options(args)))
    return 0
