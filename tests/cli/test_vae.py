"""``cryohet vae train`` and ``cryohet vae decode`` on the bundled sample (tiny model, 1 epoch)."""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pytest

from napari_cryohet.cli import main
from napari_cryohet.stages._common import Cancelled, CancelToken
from napari_cryohet.stages.vae import VAEConfig
from napari_cryohet.stages.workspace import Workspace

STAR = Path(__file__).resolve().parents[2] / "sample_data" / "adk_small" / "particles.star"
TINY = ["--zdim", "2", "--n-basis", "2", "--enc-dim", "16", "--dec-dim", "8", "--radius", "6", "--batch-size", "50",
        "--seed", "1"]
TINY_CONFIG = {"zdim": 2, "n_basis": 2, "enc_dim": 16, "dec_dim": 8, "radius": 6.0, "batch_size": 50, "seed": 1}


def test_train_new_runs_and_decode(tmp_path, capsys):
    ws = tmp_path / "ws"
    assert main(["vae", "train", "--workspace", str(ws), "--star", str(STAR), "--epochs", "1", *TINY]) == 0
    out = capsys.readouterr().out
    assert "vae/0001: 200 particles × 2 latent dimensions" in out
    assert f"results in {ws / 'vae' / '0001'}" in out
    assert (ws / "vae" / "0001" / "model.pt").is_file() and (ws / "vae" / "0001" / "latents_epoch_001.npz").is_file()
    # the same settings: the finished run; another β: a new run
    assert main(["vae", "train", "--workspace", str(ws), "--epochs", "1", *TINY]) == 0
    assert "already done" in capsys.readouterr().out
    assert main(["vae", "train", "--workspace", str(ws), "--epochs", "1", "--beta", "5", *TINY]) == 0
    assert "vae/0002:" in capsys.readouterr().out
    assert Workspace.open(ws).manifest("vae/0002")["config"]["beta"] == 5.0

    assert main(["vae", "decode", "--workspace", str(ws), "--run", "vae/0001", "-o", str(tmp_path / "vol.mrc"),
                 "--particles", "0,7"]) == 0
    files = [Path(p) for p in capsys.readouterr().out.split()]
    assert [f.name for f in files] == ["vol_000.mrc", "vol_001.mrc"]
    latents = Workspace.open(ws).result("vae/0001").latents
    decoded = Workspace.open(ws).result("vae/0001").decode(latents[[0, 7]])
    for f, expected in zip(files, decoded, strict=True):
        with mrcfile.open(f) as mrc:
            assert mrc.data.shape == (64, 64, 64)
            assert float(mrc.voxel_size.x) == pytest.approx(1.5)
            np.testing.assert_allclose(mrc.data, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    # the newest finished run by default, a latent point given directly, a result folder
    assert main(["vae", "decode", "--workspace", str(ws), "-o", str(tmp_path / "z.mrc"), "--z", "0,0"]) == 0
    assert (tmp_path / "z.mrc").is_file()
    assert main(["vae", "decode", "--result-dir", str(ws / "vae" / "0002"), "-o", str(tmp_path / "r.mrc"),
                 "--z", "0.5,-0.5"]) == 0
    with pytest.raises(SystemExit, match="need 2 values"):
        main(["vae", "decode", "--workspace", str(ws), "-o", str(tmp_path / "bad.mrc"), "--z", "0,0,0"])


def test_train_says_where_it_resumed(tmp_path, capsys):
    ws = Workspace.create(tmp_path / "ws", STAR)
    token = CancelToken()

    def cancel_in_epoch_2(fraction, message):
        if message.startswith("epoch 2/") and "batch" in message:
            token.cancel()

    with pytest.raises(Cancelled):
        ws.run("vae", VAEConfig(epochs=2, **TINY_CONFIG), progress=cancel_in_epoch_2, cancel=token)
    assert main(["vae", "train", "--workspace", str(ws.root), "--epochs", "2", *TINY]) == 0
    out = capsys.readouterr().out
    assert "resumed from epoch 1 of run vae/0001" in out and "vae/0001: 200 particles" in out


def test_train_flags_come_from_the_config(capsys):
    with pytest.raises(SystemExit):
        main(["vae", "train", "--help"])
    text = capsys.readouterr().out
    for flag in ("--lr-schedule", "--prior-weight", "--enc-whiten", "--no-enc-whiten", "--device", "--workspace",
                 "--star", "--sample", "--poses"):
        assert flag in text
    assert "--resume" not in text and "--no-resume" not in text


def test_train_on_a_stack_with_cryodrgn_pickles(tmp_path, capsys):
    folder = STAR.parent
    ws = tmp_path / "ws"
    assert main(["vae", "train", "--workspace", str(ws), "--star", str(folder / "particles.mrcs"), "--poses",
                 str(folder / "particles_poses.pkl"), "--ctf", str(folder / "particles_ctf.pkl"), "--apix", "1.5",
                 "--epochs", "1", *TINY]) == 0
    assert "vae/0001: 200 particles" in capsys.readouterr().out
    source = Workspace.open(ws).info["source"]
    assert source["options"]["poses"].endswith("particles_poses.pkl") and source["options"]["apix"] == 1.5
    with pytest.raises(SystemExit, match="--star"):
        main(["vae", "train", "--workspace", str(tmp_path / "other"), "--poses", "p.pkl", *TINY])
