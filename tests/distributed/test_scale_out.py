"""Several processes, one run (stages/distributed.py; issue 18): CPU, gloo, 2 processes started by torchrun.

Each test starts ``tests/distributed/worker.py`` alone and under
``python -m torch.distributed.run --standalone --nproc-per-node 2`` and compares what rank 0
wrote. Equal means equal up to float32 reduction order: DDP averages two half-batch
gradients where one process computes the whole batch's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_cryohet.core.reconstruct import (
    backproject_images,
    backproject_shard,
    shard_rows,
    volume_from_sums,
)
from napari_cryohet.stages.distributed import (
    Context,
    batch_shard,
    context,
    init_from_env,
    load_partial_sums,
    save_partial_sums,
)

WORKER = Path(__file__).resolve().parent / "worker.py"
pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")


def run_worker(task: str, out: Path, run_dir: Path | None = None, processes: int = 1) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    launcher = [] if processes == 1 else ["-m", "torch.distributed.run", "--standalone",
                                          f"--nproc-per-node={processes}"]
    cmd = [sys.executable, *launcher, str(WORKER), task, str(out), *([str(run_dir)] if run_dir else [])]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return torch.load(out, weights_only=True)


def assert_same_tensors(a: dict, b: dict, rtol: float) -> float:
    """Every tensor of ``b`` equals ``a``'s within ``rtol`` of the tensor's largest value; the worst ratio."""
    assert a.keys() == b.keys()
    worst = 0.0
    for key in a:
        x, y = a[key].double(), b[key].double()
        scale = max(float(x.abs().max()), 1e-12)
        worst = max(worst, float((x - y).abs().max()) / scale)
        assert float((x - y).abs().max()) <= rtol * scale, key
    return worst


@pytest.fixture(scope="module")
def vae_one(tmp_path_factory):
    return run_worker("vae", tmp_path_factory.mktemp("vae1") / "out.pt")


def test_vae_two_processes_end_with_the_weights_of_one(vae_one, tmp_path):
    two = run_worker("vae", tmp_path / "out.pt", processes=2)
    assert vae_one["world_size"] == 1 and two["world_size"] == 2
    worst = assert_same_tensors(vae_one["state"], two["state"], rtol=1e-5)
    np.testing.assert_allclose(two["latents"].numpy(), vae_one["latents"].numpy(), rtol=1e-4, atol=1e-5)
    print(f"VAE 2 vs 1 process: largest weight difference {worst:.2e} of the tensor's largest value")
    for one, rec in zip(vae_one["history"], two["history"], strict=True):
        assert rec["loss"] == pytest.approx(one["loss"], rel=1e-5)  # the global batch mean loss
        assert (rec["processes"], rec["global_batch_size"], rec["lr"]) == (2, 33, 1e-3)
        assert one["processes"] == 1


def test_vae_started_on_two_processes_resumes_on_one(vae_one, tmp_path):
    """Cancelled in epoch 2 of a 2-process run; the checkpoint rank 0 wrote holds the global
    state, and one process finishes the run with the weights of an uninterrupted one."""
    run_dir = tmp_path / "run"
    assert run_worker("vae_cancel", tmp_path / "cancel.pt", run_dir, processes=2)["cancelled"]
    assert (run_dir / "checkpoint.pt").exists() and (run_dir / "latents_epoch_001.npz").exists()
    assert not (run_dir / "latents_epoch_002.npz").exists()
    latents_1 = np.load(run_dir / "latents_epoch_001.npz")["mu"]
    assert np.all(np.abs(latents_1).sum(1) > 0)  # every particle's row, from both ranks
    resumed = run_worker("vae", tmp_path / "resumed.pt", run_dir, processes=1)
    assert [h["processes"] for h in resumed["history"]] == [2, 1]
    worst = assert_same_tensors(vae_one["state"], resumed["state"], rtol=1e-5)
    print(f"VAE 2 processes then resumed on 1 vs 1 process: largest weight difference {worst:.2e}")


def test_chainfit_two_processes_end_with_the_coefficients_of_one(tmp_path):
    one = run_worker("chainfit", tmp_path / "one.pt")
    two = run_worker("chainfit", tmp_path / "two.pt", processes=2)
    coefficients = ("coeff_theta", "coeff_psi")
    assert float(one["coeff_theta"].abs().max()) > 1e-3  # the fit moved
    worst = assert_same_tensors({k: one[k] for k in coefficients}, {k: two[k] for k in coefficients}, rtol=1e-4)
    print(f"chain fit 2 vs 1 process: largest coefficient difference {worst:.2e} of the largest coefficient")
    last_one, last_two = one["history"][-1], two["history"][-1]
    assert last_two["train_loss"] == pytest.approx(last_one["train_loss"], rel=1e-5)
    assert last_two["avg_error_a"] == pytest.approx(last_one["avg_error_a"], rel=1e-5)
    assert (last_two["processes"], last_two["global_batch_size"], last_two["learning_rate"]) == (2, 25, 0.5)


def test_sharded_backprojection_equals_one_process(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("worker", WORKER)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    ds = worker._vae_fixtures().toy_dataset(70, d=16, apix=6.0, seed=4)
    weights = np.linspace(0.2, 1.0, len(ds))
    sums = backproject_images(ds.images, ds.rotations, apix=ds.apix, ctf=ds.ctf.as_dict(), shifts_a=ds.shifts_a,
                              weights=weights, batch=16)
    reference = volume_from_sums(*sums, 16)
    two = run_worker("reconstruct", tmp_path / "out.pt", processes=2)["volume"]
    rel = float((two - reference).norm() / reference.norm())
    print(f"sharded backprojection, 2 processes vs 1: relative difference {rel:.2e}")
    assert rel < 1e-5
    # three shards computed apart (e.g. separate jobs), saved, added and divided once
    files = []
    for rank in range(3):
        num, den = backproject_shard(ds.images, ds.rotations, rank=rank, world_size=3, apix=ds.apix,
                                     ctf=ds.ctf.as_dict(), shifts_a=ds.shifts_a, weights=weights, batch=16)
        rows = shard_rows(len(ds), rank, 3)
        files.append(save_partial_sums(tmp_path / f"part{rank}.npz", num, den, n_particles=rows.stop - rows.start))
    num, den, count = load_partial_sums(files)
    assert count == len(ds)
    rel_files = float((volume_from_sums(num, den, 16) - reference).norm() / reference.norm())
    assert rel_files < 1e-5, rel_files


def test_sharded_half_maps_equal_one_process(tmp_path):
    """The clustering stage's half maps (two half sets, soft weights) on 2 processes equal 1
    process's; a half set whose particles all sit in one shard still reconstructs."""
    one = run_worker("half_maps", tmp_path / "one.pt")
    two = run_worker("half_maps", tmp_path / "two.pt", processes=2)
    assert two["world_size"] == 2 and one["world_size"] == 1
    worst = 0.0
    for key in ("map_a", "map_b", "full", "map_a_first10"):
        ref = one[key]
        assert float(ref.norm()) > 0, key
        rel = float((two[key] - ref).norm() / ref.norm())
        worst = max(worst, rel)
        assert rel < 1e-5, (key, rel)
    print(f"half maps, 2 processes vs 1: largest relative difference {worst:.2e}")


def test_shards_cover_every_row_once():
    for n in (0, 1, 5, 70):
        for world in (1, 2, 3, 8):
            rows = [shard_rows(n, r, world) for r in range(world)]
            covered = np.concatenate([np.arange(s.start, s.stop) for s in rows])
            np.testing.assert_array_equal(covered, np.arange(n))
            assert max(s.stop - s.start for s in rows) - min(s.stop - s.start for s in rows) <= 1
    with pytest.raises(ValueError, match="rank"):
        shard_rows(5, 2, 2)


def test_batch_shard_weights_average_to_the_global_mean():
    """The ranks' weighted means, averaged as DDP does, are the global batch mean (uneven and empty shards too)."""
    values = np.arange(1.0, 6.0)
    for world in (1, 2, 3, 7):
        parts = [batch_shard(len(values), Context(rank=r, world_size=world)) for r in range(world)]
        average = sum(w * values[rows].mean() for rows, w in parts) / world
        assert average == pytest.approx(values.mean())
        assert sum(len(rows) for rows, w in parts if w > 0) == len(values)


def test_without_torchrun_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_from_env("cpu") == Context() == context()
    monkeypatch.setenv("WORLD_SIZE", "2")
    for var in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(RuntimeError, match="torchrun"):
        init_from_env("cpu")


def run_cli_one_and_two(tmp_path: Path, args: list[str], reported: str, timeout: int = 180):
    """``cryohet <args>`` in one process (workspace ``tmp_path/one``) and under ``torchrun``
    with 2 (``tmp_path/two``); each must succeed and report ``reported`` once (rank 0 alone).
    Returns the two workspaces."""
    from napari_cryohet.stages.workspace import Workspace

    env = dict(os.environ, OMP_NUM_THREADS="1")
    for name, launcher in (("one", []), ("two", ["-m", "torch.distributed.run", "--standalone",
                                                 "--nproc-per-node=2"])):
        done = subprocess.run([sys.executable, *launcher, "-m", "napari_cryohet.cli", *args, "--workspace",
                               str(tmp_path / name)], env=env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.count(reported) == 1
    return tuple(Workspace.open(tmp_path / name) for name in ("one", "two"))


def test_cli_chainfit_under_torchrun_writes_one_run_equal_to_one_process(tmp_path):
    """``torchrun -m napari_cryohet.cli chainfit``: rank 0 writes one run (and the spectral run it
    needs first); its coefficients equal those of the same command in one process."""
    one, two = run_cli_one_and_two(tmp_path, ["chainfit", "--sample", "adk_chain", "--n-particles", "60", "--epochs",
                                              "2", "--batch-size", "25", "--learning-rate", "0.5", "--device", "cpu"],
                                   "results in", timeout=120)
    assert [m["run_id"] for m in two.runs("chainfit")] == ["chainfit/0001"]
    a, b = one.result("chainfit/0001"), two.result("chainfit/0001")
    np.testing.assert_allclose(b.coeff_theta, a.coeff_theta, rtol=1e-4, atol=1e-4 * np.abs(a.coeff_theta).max())
    assert b.history[-1]["processes"] == 2 and a.history[-1]["processes"] == 1


def test_cli_refine_under_torchrun_equals_one_process(tmp_path):
    """``torchrun -m napari_cryohet.cli refine`` on the bundled .star: the half maps are shared
    among 2 processes; rank 0 writes one run whose labels equal, and whose resolutions agree
    to 1e-6 Å with, the same command in one process; the manifest records 2 processes."""
    from napari_cryohet.cli import main

    star = Path(__file__).resolve().parents[2] / "sample_data" / "adk_small" / "particles.star"
    assert main(["spectral", "--workspace", str(tmp_path / "one"), "--star", str(star), "--representation",
                 "pca_images", "--n-components", "10", "--k", "10", "--n-eigenvectors", "4"]) == 0
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    one, two = run_cli_one_and_two(tmp_path, ["refine", "--embedding", "spectral/0001", "--embedding-method", "none",
                                              "--n-clusters", "2", "--n-iterations", "2", "--no-refine-poses",
                                              "--min-cluster-size", "10", "--device", "cpu"], "label stability")
    assert [m["run_id"] for m in two.runs("refine")] == ["refine/0001"]
    assert two.manifest("refine/0001")["processes"] == 2
    a, b = one.result("refine/0001"), two.result("refine/0001")
    for la, lb in zip(a.labels, b.labels, strict=True):
        np.testing.assert_array_equal(la, lb)
    for k, entry in a.history[-1]["clusters"].items():
        assert b.history[-1]["clusters"][k]["resolution_a"] == pytest.approx(entry["resolution_a"], abs=1e-6)
