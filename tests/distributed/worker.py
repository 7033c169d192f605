"""One process of a distributed test run: ``torchrun --nproc-per-node N worker.py TASK OUT [RUN_DIR]``.

Also runs alone (``python worker.py ...``: one process, no process group). Tasks build
the same tiny data in every process (seeded), train or reconstruct through the package's
ordinary stage functions, and rank 0 writes what the test compares to ``OUT`` (``.pt``):

- ``vae``: the VAE toy of tests/stages/vae (100 particles, 16 px), 2 epochs, global batch
  33 (the last batch holds one image: one rank trains on none of it);
- ``vae_cancel``: the same run cancelled in epoch 2 (epoch 1 is checkpointed in RUN_DIR);
- ``chainfit``: 64 AdK particles at 16 px, angle model on 3 seeded columns, 2 epochs,
  global batch 25;
- ``reconstruct``: backprojection of 70 particles of the VAE toy, sums shared among ranks.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

from napari_cryohet.stages import distributed
from napari_cryohet.stages._common import Cancelled, CancelToken

HERE = Path(__file__).resolve().parent


def _vae_fixtures():
    spec = importlib.util.spec_from_file_location("vae_conftest", HERE.parent / "stages" / "vae" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def vae_run(run_dir: str | None, cancel_epoch: int | None = None):
    from napari_cryohet.stages.vae import train_vae

    ds, cfg = _vae_fixtures().small(100, epochs=2, batch_size=33, lr_schedule="cosine")
    token = CancelToken()

    def progress(fraction, message):
        if cancel_epoch is not None and message.startswith(f"epoch {cancel_epoch}/") and "batch" in message:
            token.cancel()

    res = train_vae(ds, cfg, run_dir=run_dir, progress=progress, cancel=token)
    return {"state": res.model.state_dict(), "latents": torch.as_tensor(res.latents), "history": res.history}


def chainfit_run(run_dir: str | None):
    from napari_cryohet.stages.chainfit import ChainFitConfig, reference_from_dataset, run_chainfit
    from napari_cryohet.stages.protocol import Embedding
    from napari_cryohet.stages.simulate import adk_chain

    ds = adk_chain(64, box_size=16, apix=8.0, snr=1.0, seed=3)
    phi = np.random.default_rng(0).normal(size=(len(ds), 3))
    cfg = ChainFitConfig(n_eigenvectors=3, epochs=2, batch_size=25, learning_rate=0.5, seed=0, device="cpu")
    res = run_chainfit(ds, cfg, eigenvectors=Embedding.for_dataset(phi, ds, name="eigenvectors"),
                       reference=reference_from_dataset(ds), run_dir=run_dir)
    return {"coeff_theta": torch.as_tensor(res.coeff_theta), "coeff_psi": torch.as_tensor(res.coeff_psi),
            "history": res.history}


def reconstruct_run():
    ds = _vae_fixtures().toy_dataset(70, d=16, apix=6.0, seed=4)
    weights = np.linspace(0.2, 1.0, len(ds))
    volume = distributed.reconstruct_volume_distributed(ds.images, ds.rotations, apix=ds.apix, ctf=ds.ctf.as_dict(),
                                                        shifts_a=ds.shifts_a, weights=weights, batch=16)
    return {"volume": volume}


def half_maps_data():
    ds = _vae_fixtures().toy_dataset(61, d=16, apix=6.0, seed=7)
    halves = np.where(np.arange(len(ds)) % 3 == 0, 1, 2)  # unequal halves, interleaved
    weights = torch.as_tensor(np.linspace(0.1, 1.0, len(ds)), dtype=torch.float32)
    return ds, halves, weights


def half_maps_run():
    ds, halves, weights = half_maps_data()
    a, b, full = distributed.reconstruct_half_maps_distributed(
        ds.get_images(np.arange(len(ds))), ds.rotations, ds.shifts_a, ds.ctf.as_dict(), ds.apix, halves,
        weights=weights, batch=16)
    # a half set absent from every shard but one: rank 1 has none of its particles
    only_first = np.where(np.arange(len(ds)) < 10, 1, 2)
    a1, _, _ = distributed.reconstruct_half_maps_distributed(
        ds.get_images(np.arange(len(ds))), ds.rotations, ds.shifts_a, ds.ctf.as_dict(), ds.apix, only_first,
        batch=16)
    return {"map_a": a, "map_b": b, "full": full, "map_a_first10": a1}


def main(argv: list[str]) -> int:
    task, out = argv[0], Path(argv[1])
    run_dir = argv[2] if len(argv) > 2 else None
    torch.set_num_threads(1)
    ctx = distributed.init_from_env("cpu")
    try:
        if task == "vae":
            result = vae_run(run_dir)
        elif task == "vae_cancel":
            try:
                vae_run(run_dir, cancel_epoch=2)
            except Cancelled:
                result = {"cancelled": True}
            else:
                raise AssertionError("the run was not cancelled")
        elif task == "chainfit":
            result = chainfit_run(run_dir)
        elif task == "reconstruct":
            result = reconstruct_run()
        elif task == "half_maps":
            result = half_maps_run()
        else:
            raise SystemExit(f"unknown task {task}")
        result["world_size"] = ctx.world_size
        if ctx.is_main:
            torch.save(result, out)
    finally:
        distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
