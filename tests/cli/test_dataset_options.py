"""The particle-file options every command takes: --datadir, --contrast-inverted (issue 15).

A .star whose stacks were moved, with inverted contrast: ``cryohet info`` names the missing
option, then reports the contrast both ways; a new workspace stores the options, so later
commands on it need not repeat them.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryohet.cli import build_parser, main
from napari_cryohet.cli._config_args import open_workspace
from napari_cryohet.core.particle_dataset import ParticleDataset
from napari_cryohet.io.write_particles import save_dataset
from napari_cryohet.stages.simulate import RECIPES
from napari_cryohet.stages.workspace import Workspace


@pytest.fixture(scope="module")
def moved_inverted(tmp_path_factory):
    """(star, folder the stack was moved to): 200 inverted particles, 32 px."""
    ds = RECIPES["adk_volumes"](n_particles=200, n_conformations=1, box_size=32, apix=3.0, sigma_a=2.0, snr=0.05,
                                seed=4)
    inverted = ParticleDataset(images=-ds.get_images(np.arange(len(ds))), apix=ds.apix, rotations=ds.rotations,
                               shifts_a=ds.shifts_a, ctf=ds.ctf)
    root = tmp_path_factory.mktemp("options")
    files = save_dataset(root / "analysis", inverted, name="particles")
    moved = root / "scratch"
    moved.mkdir()
    files["stack"].rename(moved / files["stack"].name)
    return files["star"], moved


def test_info_names_datadir_then_reports_the_contrast_both_ways(moved_inverted, capsys):
    star, moved = moved_inverted
    assert main(["info", str(star), "--no-contrast-check"]) == 2
    assert "--datadir" in capsys.readouterr().err
    assert main(["info", str(star), "--datadir", str(moved)]) == 0
    out = capsys.readouterr().out
    assert "particles:   200" in out and "looks INVERTED" in out and "use --contrast-inverted" in out
    assert main(["info", str(star), "--datadir", str(moved), "--contrast-inverted"]) == 0
    out = capsys.readouterr().out
    assert "contrast:    as expected" in out and "read with --contrast-inverted" in out


def test_a_new_workspace_stores_the_options(moved_inverted, tmp_path):
    star, moved = moved_inverted
    parser = build_parser()
    args = parser.parse_args(["spectral", "--workspace", str(tmp_path / "ws"), "--star", str(star),
                              "--datadir", str(moved), "--contrast-inverted"])
    ws = open_workspace(args)
    assert ws.info["source"]["options"] == {"datadir": str(moved.resolve()), "contrast_inverted": True}
    again = Workspace.open(tmp_path / "ws")  # a later command names the workspace only
    ds = again.dataset  # no inverted-contrast warning (the suite turns warnings into errors)
    assert ds.meta["contrast_check"].verdict == "expected" and len(ds) == 200
    later = open_workspace(parser.parse_args(["spectral", "--workspace", str(tmp_path / "ws")]))
    assert later.info["source"] == ws.info["source"]
    with pytest.raises(SystemExit, match="give them with --star"):
        open_workspace(parser.parse_args(["spectral", "--workspace", str(tmp_path / "ws"), "--contrast-inverted"]))
