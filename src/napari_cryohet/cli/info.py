"""Summarise a particle file: ``cryohet info FILE`` (.star, .cs, .mrcs, .mrc/.map).

Prints the number of particles, the box size, the pixel size, whether poses and CTF are
present and which metadata columns the file holds. Reads headers and tables only, never
the image data.
"""

from __future__ import annotations

import argparse
from pathlib import Path

#: What ``cryohet info`` calls each particle file by its suffix (anything else: a particle stack).
KINDS = {".star": "star file", ".cs": "cryoSPARC particles (.cs)"}

__all__ = ["add_args", "main", "summarize"]


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, metavar="FILE",
                        help="a .star file, a .mrcs/.mrc stack or a .mrc/.map volume")


def summarize(path: str | Path) -> str:
    """The text ``cryohet info`` prints for ``path``."""
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
    ds = load_dataset(path, ground_truth=False)
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
    if columns:
        lines.append(f"columns:     {', '.join(columns)}")
    if optics is not None and len(getattr(optics, "columns", [])):
        lines.append(f"optics:      {len(optics)} group(s): {', '.join(str(c) for c in optics.columns)}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    print(summarize(args.file))
    return 0
