"""The chain of tests/stages/test_workspace_chain.py from the shell, by run id, then ``ws ls``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_cryohet.cli import main
from napari_cryohet.stages.workspace import Workspace

STAR = Path(__file__).resolve().parents[2] / "sample_data" / "adk_small" / "particles.star"


@pytest.mark.slow
def test_shell_chain_by_run_ids(tmp_path, capsys):
    ws = str(tmp_path / "ws")
    steps = [
        ["spectral", "--workspace", ws, "--star", str(STAR), "--representation", "lowres_volumes",
         "--n-components", "10", "--k", "10", "--n-eigenvectors", "6"],
        ["chainfit", "--workspace", ws, "--eigenvectors", "spectral/0001", "--n-eigenvectors", "4",
         "--epochs", "2", "--batch-size", "50"],
        ["vae", "train", "--workspace", ws, "--epochs", "1", "--zdim", "2", "--n-basis", "4", "--enc-dim", "32",
         "--enc-blocks", "1", "--dec-dim", "16", "--dec-blocks", "1", "--normalisation-images", "64",
         "--batch-size", "32"],
        ["spectral", "--workspace", ws, "--features", "vae/0001", "--representation", "table",
         "--n-components", "none", "--k", "10", "--n-eigenvectors", "4"],
    ]
    for argv, run_id in zip(steps, ["spectral/0001", "chainfit/0001", "vae/0001", "spectral/0002"], strict=True):
        assert main(argv) == 0, capsys.readouterr().err
        assert run_id in capsys.readouterr().out
    assert main(["ws", "ls", ws]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[2:]}
    assert sorted(rows) == ["chainfit/0001", "spectral/0001", "spectral/0002", "vae/0001"]
    assert all(row[1] == "done" and row[2] == "200" for row in rows.values())
    assert rows["chainfit/0001"][-1] == "eigenvectors=spectral/0001"
    assert rows["spectral/0002"][-1] == "features=vae/0001"
    # the shell's results are the workspace's: the chain fit used exactly spectral/0001's vectors
    w = Workspace.open(ws)
    fit = w.result("chainfit/0001")
    phi = w.embedding("spectral/0001").aligned_to(w.dataset)[:, :4]
    np.testing.assert_allclose(fit.phi, phi / np.sqrt((phi**2).mean(0)), rtol=1e-5, atol=1e-6)
    # a changed setting makes a new run; the same settings again do not
    assert main(steps[1][:-2] + ["--batch-size", "40"]) == 0
    assert "chainfit/0002" in capsys.readouterr().out
    assert main(steps[1]) == 0
    assert "chainfit/0001" in capsys.readouterr().out
