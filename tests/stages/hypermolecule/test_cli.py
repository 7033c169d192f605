"""``cryohet hypermolecule`` (cli/hypermolecule.py)."""

from __future__ import annotations

import json

from napari_cryohet.cli import main
from napari_cryohet.stages.hypermolecule import HyperMoleculeResult


def test_cli_runs_a_layout_file_into_the_workspace(tmp_path, capsys):
    regions = {"components": [
        {"name": "base", "centre_a": [0, 0, 0], "radius_a": 30},
        {"name": "arm1", "centre_a": [46, 0, 0], "radius_a": 26, "state_dim": 1, "state_order": 1},
        {"name": "arm2", "copy_of": "arm1", "state_dim": 1, "state_order": 1,
         "copy_rotation": [[-1, 0, 0], [0, -1, 0], [0, 0, 1]]}]}
    (tmp_path / "regions.json").write_text(json.dumps(regions))
    ws = tmp_path / "ws"
    rc = main(["hypermolecule", "--workspace", str(ws), "--sample", "pretzel", "--n-particles", "30",
               "--layout", str(tmp_path / "regions.json"), "--working-size-px", "16", "--n-burnin-sweeps", "2",
               "--n-sample-sweeps", "1", "--output-size-px", "16", "--no-estimate-poses", "--tau-grid-size", "2",
               "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "hypermolecule/0001: 30 particles, states ['arm1', 'arm2']" in out
    res = HyperMoleculeResult.load(ws / "hypermolecule" / "0001")
    assert res.config.regions["components"][1]["state_order"] == 1 and res.volumes_mean.shape == (4, 16, 16, 16)


def test_cli_names_a_missing_layout_file(tmp_path, capsys):
    rc = main(["hypermolecule", "--workspace", str(tmp_path / "ws"), "--sample", "pretzel", "--n-particles", "10",
               "--layout", str(tmp_path / "nope.json")])
    assert rc == 2 and "nope.json" in capsys.readouterr().err
