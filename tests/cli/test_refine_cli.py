"""``cryohet refine`` on a spectral run of the bundled .star: a finished run whose clusters cover the particles."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_cryohet.cli import main
from napari_cryohet.stages.workspace import Workspace

STAR = Path(__file__).resolve().parents[2] / "sample_data" / "adk_small" / "particles.star"


def test_refine_from_the_shell_by_run_id(tmp_path, capsys):
    ws = str(tmp_path / "ws")
    assert main(["spectral", "--workspace", ws, "--star", str(STAR), "--representation", "pca_images",
                 "--n-components", "10", "--k", "10", "--n-eigenvectors", "4"]) == 0, capsys.readouterr().err
    assert "spectral/0001" in capsys.readouterr().out
    assert main(["refine", "--workspace", ws, "--embedding", "spectral/0001", "--embedding-method", "none",
                 "--n-clusters", "2", "--n-iterations", "2", "--no-refine-poses", "--min-cluster-size", "10",
                 "--device", "cpu"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "refine/0001: 2 iterations" in out and "label stability" in out
    w = Workspace.open(ws)
    manifest = w.manifest("refine/0001")
    assert manifest["status"] == "done" and manifest["inputs"] == {"embedding": "spectral/0001"}
    result = w.result("refine/0001")
    labels = result.final_labels
    assert len(labels) == 200 and set(np.unique(labels)) <= {0, 1}
    # the clusters split the particles along the first eigenvector they were made from
    phi = w.embedding("spectral/0001").aligned_to(result.particle_indices)[:, 1]
    assert abs(phi[labels == 0].mean() - phi[labels == 1].mean()) > 0.5 * phi.std()
    # a second identical command reuses the finished run, and writes each cluster as .star
    assert main(["refine", "--workspace", ws, "--embedding", "spectral/0001", "--embedding-method", "none",
                 "--n-clusters", "2", "--n-iterations", "2", "--no-refine-poses", "--min-cluster-size", "10",
                 "--device", "cpu", "--export-dir", str(tmp_path / "clusters")]) == 0
    assert "refine/0001" in capsys.readouterr().out and len(w.runs("refine")) == 1
    import starfile

    sizes = [len(starfile.read(tmp_path / "clusters" / f"cluster_{k}.star", always_dict=True)["particles"])
             for k in (0, 1)]
    assert sizes == [int((labels == 0).sum()), int((labels == 1).sum())]
