"""Training the structural-basis VAE (§4 of Kimanius, Jamali, Scheres 2022).

``train_vae(dataset, config, *, run_dir=None, progress=None, cancel=None, initial=None) -> VAEResult``
streams minibatches from the (lazy) dataset, reports the loss per epoch and honours
cancellation within one batch. With ``initial`` (a trained :class:`VAEResult`) training
starts from its weights instead of a fresh model — a warm start, e.g. a few more epochs on
refined poses between iterations of the clustering/refinement loop, as the thesis
re-trains cryoDRGN on the refined poses (Silvera Coeff 2025, §4.1.6);
:func:`fine_tune_vae` does this with the initial run's settings. With a ``run_dir`` (a workspace run, ``<ws>/vae/NNNN``) it
writes there after every epoch:

- ``checkpoint.pt`` through the shared :class:`~napari_cryohet.stages.checkpoint.Checkpointer`
  (model, optimiser, epoch, history), from which a new call with the same ``run_dir``
  continues *exactly* (per-epoch random streams are derived from ``(seed, epoch)``, so an
  interrupted and resumed run ends with the same weights as an uninterrupted one); a
  checkpoint written under other settings or other particles raises
  :class:`~napari_cryohet.stages.checkpoint.CheckpointMismatchError` naming what differs;
- ``latents_epoch_NNN.npz``: ``mu``, ``logvar`` and ``indices`` of all particles (the
  posterior means seen during that epoch's pass, as cryoDRGN's ``z.N.pkl``).

The result itself is not written here: the workspace saves it (``VAEResult.save``).

Under ``torchrun`` (several processes, :mod:`napari_cryohet.stages.distributed`) the same
call trains one model together: each process takes its slice of every global batch of
``config.batch_size`` images (and of the noise spectrum's images and the final encoding
pass), DistributedDataParallel averages the gradients, and rank 0 alone reads and writes
the checkpoint and the per-epoch latents. Every history record states ``processes``,
``global_batch_size`` and the learning rates ``lr``, ``lr_basis``; the weights equal those of
one process up to floating-point reduction order, and a run may resume with another number
of processes.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from napari_cryohet.core.device import select_device
from napari_cryohet.core.particle_dataset import ParticleDataset
from napari_cryohet.core.vae_model import ModelShape, StructuralBasisVAE
from napari_cryohet.core.vae_normalisation import spectral_normalisation, spectral_shell_sums
from napari_cryohet.io.atomic import save_npz_atomic
from napari_cryohet.stages import distributed
from napari_cryohet.stages._common import (
    Cancelled,
    CancelToken,
    ProgressCallback,
    check_cancel,
    report,
    set_scheduled_lr,
)
from napari_cryohet.stages.checkpoint import Checkpointer
from napari_cryohet.stages.protocol import array_hash, dataset_indices
from napari_cryohet.stages.vae.config import VAEConfig
from napari_cryohet.stages.vae.encode import ImageBatches, check_dataset, encode_dataset
from napari_cryohet.stages.vae.result import VAEResult

__all__ = ["train_vae", "fine_tune_vae", "latents_epoch_path"]


def latents_epoch_path(run_dir: str | Path, epoch: int) -> Path:
    """``run_dir/latents_epoch_NNN.npz``: the latents seen during epoch ``epoch`` (1-based)."""
    return Path(run_dir) / f"latents_epoch_{int(epoch):03d}.npz"


def _estimate_normalisation(dataset: ParticleDataset, model: StructuralBasisVAE, batches: ImageBatches,
                            config: VAEConfig, progress, cancel) -> None:
    """``σ̄_y`` per shell (eq. 5 of Kimanius, Jamali, Scheres 2022) and the mean power per frequency."""
    n = len(dataset)
    rng = np.random.default_rng([config.seed, 5])
    use_all = np.sort(rng.choice(n, size=min(n, config.normalisation_images), replace=False))
    ctx = distributed.context()
    use = use_all[distributed.shard_rows(len(use_all), ctx.rank, ctx.world_size)]  # all of them in one process
    scale = 1.0
    if len(use) == 0:  # more processes than images: add zero sums of one image
        use, scale = use_all[:1], 0.0
    power = ctf2 = None
    disc_power = 0.0
    disc = model.freq_disc.reshape(-1).bool()
    for start in range(0, len(use), 256):
        check_cancel(cancel)
        idx = use[start:start + 256]
        images, _, _, ctf = batches(idx)
        p, c = spectral_shell_sums(images, ctf)
        power = p if power is None else power + p
        ctf2 = c if ctf2 is None else ctf2 + c
        spec = torch.fft.fft2(images.to(torch.float64)).abs().pow(2).reshape(len(idx), -1)
        disc_power += float(torch.fft.fftshift(spec.reshape(len(idx), batches.d, batches.d),
                                               dim=(-2, -1)).reshape(len(idx), -1)[:, disc].sum())
        report(progress, 0.02 * (start + len(idx)) / len(use), "noise spectrum (eq. 5)")
    if ctx.active:
        power, ctf2 = distributed.all_reduce_(power * scale), distributed.all_reduce_(ctf2 * scale)
        disc_power = float(distributed.all_reduce_array(disc_power * scale))
    sigma = spectral_normalisation(power, ctf2)
    power_mean = disc_power / (len(use_all) * int(disc.sum()))
    model.set_spectral_normalisation(sigma, power_mean)


def _epoch_generators(seed: int, epoch: int, device: torch.device) -> tuple[torch.Generator, torch.Generator]:
    """Shuffling and reparameterisation streams of one epoch, derived from ``(seed, epoch)``."""
    base = int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1)[0])
    shuffle = torch.Generator().manual_seed(base)
    noise = torch.Generator(device=device).manual_seed(base + 1)
    return shuffle, noise


def _new_model(shape: ModelShape, seed: int) -> StructuralBasisVAE:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return StructuralBasisVAE(shape)


def _optimizer(model: StructuralBasisVAE, config: VAEConfig) -> torch.optim.Adam:
    nets = [p for n, p in model.named_parameters() if n != "basis"]
    return torch.optim.Adam([{"params": [model.basis], "lr": config.lr_basis},
                             {"params": nets, "lr": config.lr}])


def _check_initial(initial: VAEResult, shape: ModelShape, apix: float) -> None:
    """Raise ``ValueError`` naming every field in which ``initial``'s model differs from ``shape``."""
    have = dataclasses.asdict(initial.model.shape)
    want = dataclasses.asdict(shape)
    diff = [f"{name}: {have[name]!r} (initial) vs {want[name]!r} (config/dataset)"
            for name in want if have.get(name) != want[name]]
    if not np.isclose(float(initial.apix), float(apix), rtol=1e-4):
        diff.append(f"apix: {float(initial.apix)!r} (initial) vs {float(apix)!r} (dataset)")
    if diff:
        raise ValueError("initial VAE model does not match this training run: " + "; ".join(diff)
                         + " (a warm start needs the same model shape, image size and pixel size)")


class _BatchLoss(torch.nn.Module):
    """The model's loss as a module's ``forward``: what DistributedDataParallel wraps."""

    def __init__(self, model: StructuralBasisVAE):
        super().__init__()
        self.model = model

    def forward(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        return self.model.loss(*args, **kwargs)


def _weights_hash(model: StructuralBasisVAE) -> str:
    """Hash of a model's saved state (weights and spectral normalisation), for the checkpoint's identity."""
    state = model.state_dict()
    return array_hash(*(state[k].detach().cpu().numpy() for k in sorted(state)))


def train_vae(
    dataset: ParticleDataset,
    config: VAEConfig | None = None,
    *,
    run_dir: str | Path | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    initial: VAEResult | None = None,
) -> VAEResult:
    """Train the structural-basis VAE (§4 of Kimanius, Jamali, Scheres 2022) on ``dataset``.

    Parameters
    ----------
    dataset
        Particles with poses (``rotations``; shifts and CTF optional), images read lazily
        in batches of ``config.batch_size``.
    config
        :class:`VAEConfig` (defaults when ``None``).
    run_dir
        Directory of this run: checkpoint and per-epoch latents are written there, and a
        checkpoint found there is resumed ("resumed from epoch N of run …" is reported).
        ``None``: everything stays in memory.
    progress
        ``progress(fraction, message)``; the message carries the epoch's mean loss.
    cancel
        Checked before every batch; a cancelled run raises ``Cancelled`` and leaves the last
        epoch's checkpoint intact (a new call with the same ``run_dir`` continues from it).
    initial
        A trained :class:`VAEResult` to start from (warm start, Silvera Coeff 2025, §4.1.6):
        its whole model state — encoder, mixing network, basis volumes and the noise
        spectrum ``σ̄_y`` of eq. 5 (kept, not re-estimated, so the encoder sees its input
        scaled as it was trained on) — is copied into a new model; ``initial`` itself is
        not changed. ``config.epochs`` then counts the *extra* epochs (the history holds
        only those, numbered from 1), with a fresh Adam optimiser and ``config``'s learning
        rates and schedule. The dataset's poses (and particles) may differ from those
        ``initial`` was trained on — that is the point: refined poses. The model shape
        derived from ``config`` and the dataset (box size, ``zdim``, ``n_basis``, widths,
        radius, …) and the pixel size must equal ``initial``'s, else ``ValueError`` naming
        each differing field. With a ``run_dir`` holding a checkpoint, the checkpoint is
        resumed, not ``initial``; the checkpoint records a hash of ``initial``'s weights and
        one written from other weights (or from a fresh start) is refused with
        ``CheckpointMismatchError``.

    Returns
    -------
    :class:`VAEResult` (not saved: the workspace, or the caller, saves it).
    """
    config = config or VAEConfig()
    check_dataset(dataset)
    ctx = distributed.context()
    device = distributed.rank_device(select_device(config.device))
    n, d = len(dataset), dataset.box_size
    indices = dataset_indices(dataset)
    shape = config.model_shape(d)
    identity: dict[str, object] = {"image sizes (px)": d}
    if initial is not None:
        _check_initial(initial, shape, float(dataset.apix))
        identity["initial weights"] = _weights_hash(initial.model)

    model = _new_model(shape, config.seed).to(device)
    if initial is not None:
        model.load_state_dict(initial.model.state_dict())  # copies the tensors: initial is untouched
    optimizer = _optimizer(model, config)
    batches = ImageBatches(dataset, device)
    # Rank 0 alone reads and writes the run's files; the other ranks get the state it resumed.
    ckpt = None if run_dir is None or not ctx.is_main else Checkpointer(
        run_dir, config=config, n_particles=n, particle_indices=indices, identity=identity)
    # Loaded on the CPU: load_state_dict copies the tensors to the model's and optimiser's device.
    state = None if ckpt is None else ckpt.load(map_location="cpu", progress=progress)
    state = distributed.broadcast_object(state)
    start_epoch, history = 0, []
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, history = int(state["epoch"]), [dict(h) for h in state["history"]]
    elif initial is not None:
        label = f" of run {initial.run_id}" if getattr(initial, "run_id", None) else ""
        report(progress, 0.02, f"warm start from the trained model{label}")
    else:
        _estimate_normalisation(dataset, model, batches, config, progress, cancel)

    step_loss = distributed.data_parallel(_BatchLoss(model), device)  # the model itself in one process
    n_batches = (n + config.batch_size - 1) // config.batch_size
    epochs = max(int(config.epochs), start_epoch)
    for epoch in range(start_epoch, int(config.epochs)):
        t0 = time.perf_counter()
        shuffle, noise = _epoch_generators(config.seed, epoch, device)
        order = torch.randperm(n, generator=shuffle).numpy()
        mu_all = np.zeros((n, config.zdim), np.float32)
        logvar_all = np.zeros((n, config.zdim), np.float32)
        sums = {"loss": 0.0, "reconstruction": 0.0, "kl": 0.0}
        model.train()
        for b in range(n_batches):
            if distributed.any_rank(cancel is not None and cancel.cancelled):  # every rank stops at one batch
                check_cancel(cancel)
                raise Cancelled("cancelled by another process of this run")
            idx = np.sort(order[b * config.batch_size:(b + 1) * config.batch_size])
            set_scheduled_lr(optimizer, (config.lr_basis, config.lr), config.lr_schedule, epoch * n_batches + b,
                             int(config.epochs) * n_batches)
            weight, eps = 1.0, None
            if ctx.active:  # this rank's slice of the global batch, with its rows of the batch's noise
                eps_all = torch.randn((len(idx), config.zdim), generator=noise, dtype=torch.float32, device=device)
                rows, weight = distributed.batch_shard(len(idx), ctx)
                idx, eps = idx[rows], eps_all[torch.as_tensor(rows, device=device)]
            images, rotations, shifts_px, ctf = batches(idx)
            y_points, enc_in = model.preprocess(images, shifts_px)
            ctf_points = model.ctf_at_points(ctf) if ctf is not None else None
            out = step_loss(y_points, enc_in, rotations, ctf_points, beta=config.beta,
                            prior_scale=config.prior_weight / n, generator=noise, eps=eps)
            optimizer.zero_grad(set_to_none=True)
            (out["loss"] * weight if ctx.active else out["loss"]).backward()
            optimizer.step()
            if weight == 0.0:  # a rank without images in this (last, small) batch
                continue
            for key in sums:
                sums[key] += float(out[key].detach()) * len(idx)
            mu_all[idx] = out["mu"].cpu().numpy()
            logvar_all[idx] = out["logvar"].cpu().numpy()
            if b % 10 == 0 or b == n_batches - 1:
                frac = 0.02 + 0.93 * (epoch + (b + 1) / n_batches) / max(1, epochs)
                report(progress, frac, f"epoch {epoch + 1}/{epochs} batch {b + 1}/{n_batches} "
                                       f"loss {float(out['loss'].detach()):.4f}")
        if ctx.active:  # each rank filled its own rows: the sums over the ranks are the whole epoch's
            totals = distributed.all_reduce_array([sums[k] for k in sums])
            sums = dict(zip(sums, (float(v) for v in totals), strict=True))
            mu_all = distributed.all_reduce_array(mu_all).astype(np.float32)
            logvar_all = distributed.all_reduce_array(logvar_all).astype(np.float32)
        record = {"epoch": epoch + 1, **{k: v / n for k, v in sums.items()},
                  "seconds": time.perf_counter() - t0, "processes": ctx.world_size,
                  "global_batch_size": int(config.batch_size), "lr": float(config.lr),
                  "lr_basis": float(config.lr_basis)}
        history.append(record)
        report(progress, 0.02 + 0.93 * (epoch + 1) / max(1, epochs),
               f"epoch {epoch + 1}/{epochs}: loss {record['loss']:.4f} (rec {record['reconstruction']:.4f}, "
               f"KL {record['kl']:.2f})")
        if ckpt is not None:
            save_npz_atomic(latents_epoch_path(run_dir, epoch + 1), mu=mu_all, logvar=logvar_all, indices=indices)
            ckpt.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
                       "history": history})

    mu, logvar = _encode_all(model, dataset, ctx, batch_size=max(config.batch_size, 128), device=device,
                             cancel=cancel, progress=lambda f, m: report(progress, 0.95 + 0.05 * f, m))
    result = VAEResult(model=model, config=config, latents=mu, logvar=logvar, indices=indices,
                       apix=float(dataset.apix), history=history)
    report(progress, 1.0, f"done: {len(history)} epochs, final loss "
                          f"{history[-1]['loss']:.4f}" if history else "done")
    return result


def _encode_all(model: StructuralBasisVAE, dataset: ParticleDataset, ctx: distributed.Context, **options):
    """:func:`encode_dataset` of every particle; under torchrun each rank encodes its shard and the rows are summed."""
    if not ctx.active:
        return encode_dataset(model, dataset, **options)
    n = len(dataset)
    rows = distributed.shard_rows(n, ctx.rank, ctx.world_size)
    mu = np.zeros((n, model.shape.zdim), np.float64)
    logvar = np.zeros_like(mu)
    if rows.stop - rows.start >= 2:  # check_dataset needs 2 particles; a smaller shard is encoded row by row
        mu[rows], logvar[rows] = encode_dataset(model, dataset.subset(np.arange(rows.start, rows.stop)), **options)
    else:
        for row in range(rows.start, rows.stop):
            pair = dataset.subset(np.array([row, (row + 1) % n]))
            m, lv = encode_dataset(model, pair, **options)
            mu[row], logvar[row] = m[0], lv[0]
    return (distributed.all_reduce_array(mu).astype(np.float32),
            distributed.all_reduce_array(logvar).astype(np.float32))


def fine_tune_vae(
    initial: VAEResult,
    dataset: ParticleDataset,
    epochs: int,
    *,
    run_dir: str | Path | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    **overrides,
) -> VAEResult:
    """A few more epochs of ``initial``'s model on ``dataset`` (e.g. with refined poses).

    The warm-started VAE step of the clustering/refinement loop: the thesis re-trains
    cryoDRGN on the locally refined poses before the next clustering (Silvera Coeff 2025,
    §4.1.6). The settings are ``initial.config`` with ``epochs`` replaced (and any
    ``overrides``, e.g. ``lr=3e-4`` or ``device="cpu"``), so the model shape matches by
    construction; see :func:`train_vae` (``initial``) for what is copied and for
    ``run_dir``.
    """
    config = dataclasses.replace(initial.config, epochs=int(epochs), **overrides)  # unknown names raise TypeError
    return train_vae(dataset, config, run_dir=run_dir, progress=progress, cancel=cancel, initial=initial)
