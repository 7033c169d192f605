"""The particle-file options every command takes: --datadir, --contrast-inverted (issue 15).

A .star whose stacks were moved, with inverted contrast: ``cryohet info`` names the missing
option, then reports the contrast both ways; a new workspace stores the options, so later
commands on it need not repeat them.
"""

from __future__ import annotations

import pytest

from napari_cryohet.cli import build_parser, main
from napari_cryohet.cli._config_args import open_workspace
from napari_cryohet.stages.workspace import Workspace


@pytest.fixture(scope="module")
def moved_inverted(tmp_path_factory, write_inverted_files):
    """(star, folder the stack was moved to): 200 particles with inverted contrast (tests/conftest.py)."""
    return write_inverted_files(tmp_path_factory.mktemp("options"), n_particles=200, seed=4)


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
