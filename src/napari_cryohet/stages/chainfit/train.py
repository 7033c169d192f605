"""The training loop shared by the 3D and the planar chain fit (Esteve-Yagüe et al. 2022, §2.3).

Minibatch Adam or SGD on the misfit of eq. 2.11 (per pixel), from ``A = B = 0``, with a
held-out test set scored every epoch (test loss; average and maximum error, eq. 3.7 / 3.6,
when the true chains are known).

A *divergence guard* watches the loss of up to ``GUARD_PARTICLES`` held-out particles
(training particles when nothing is held out) ``GUARD_CHECKS`` times an epoch: when it is
non-finite or more than ``GUARD_TOLERANCE`` above the best so far, or a batch's loss is not
finite, the model goes back to the best state, the optimiser's memory is cleared and the
step is halved (``backoffs`` in the history counts these). A run therefore never goes far
from its best state, whatever the step size, and a wild step costs a fifth of an epoch.

The model is either :class:`~napari_cryohet.stages.chainfit.model.SpectralAngles` (angles
on eigenvectors, trained on the training particles) or
:class:`~napari_cryohet.stages.chainfit.normal_modes.NormalModeAmplitudes` (per-particle
normal-mode amplitudes: every particle is fitted to its own image, several steps a batch).

Runs with a run directory save a checkpoint through the shared :class:`~napari_cryohet.stages.checkpoint.Checkpointer` and resume from it; a
checkpoint of other settings, other particles, other eigenvectors or another reference is
refused (:class:`~napari_cryohet.stages.checkpoint.CheckpointMismatchError`), never reused
or overwritten.

Under ``torchrun`` (:mod:`napari_cryohet.stages.distributed`) the angle models train on
several processes at once: each takes its slice of every global batch of
``config.batch_size`` particles, DistributedDataParallel averages the gradients (each
rank's loss weighted by its share, so the average is the global batch mean), the guard and
the test metrics see the same parameters on every rank and so decide the same, and rank 0
alone writes the checkpoint. History records state ``processes``, ``global_batch_size`` and
``learning_rate``. The per-particle normal-mode model is refused there (its amplitudes
belong to single particles: share the particles among separate runs instead).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from napari_cryohet.core.frenet import chain_angles
from napari_cryohet.stages import distributed
from napari_cryohet.stages._common import (
    Cancelled,
    CancelToken,
    ProgressCallback,
    check_cancel,
    report,
    set_scheduled_lr,
)
from napari_cryohet.stages.chainfit.config import ChainFitConfig
from napari_cryohet.stages.chainfit.model import SpectralAngles, chain_errors
from napari_cryohet.stages.chainfit.normal_modes import ModeExpansion, NormalModeAmplitudes
from napari_cryohet.stages.chainfit.reference import ChainReference
from napari_cryohet.stages.chainfit.result import ChainFitResult
from napari_cryohet.stages.checkpoint import Checkpointer

__all__ = ["Problem", "EpochCallback", "train", "make_result", "split"]

EpochCallback = Callable[[dict[str, float]], None]

#: Relative rise of the guard's loss over its best value that counts as diverging (minibatch noise moves
#: it by ~10-20 %; a diverging fit by many times).
GUARD_TOLERANCE = 0.5
#: Checks of the divergence guard per epoch, and the held-out particles it scores.
GUARD_CHECKS = 5
GUARD_PARTICLES = 128
#: The step grows linearly over the first epoch (at least this many steps): Adam's first steps move every
#: coefficient by the full step at once, which on a large protein overshoots before the moments settle.
WARM_UP_STEPS = 10


@dataclass
class Problem:
    """What the loop needs: data access and a forward model of a batch."""

    n: int
    planar: bool
    phi: torch.Tensor  # (N, K)
    anchor_positions: torch.Tensor  # (N, d)
    anchor_frames: torch.Tensor  # (N, d, d)
    ref_index: int
    delta: torch.Tensor  # (m-1,) or ()
    misfit: Callable[[torch.Tensor, np.ndarray, bool], torch.Tensor]  # (coords, idx, clean) → mean sq.
    truth_coords: np.ndarray | None  # (N, m, d) model frame
    particle_indices: np.ndarray  # (N,) root particle indices
    data_hash: str = ""  # array_hash of eigenvectors, reference and anchors: what a checkpoint must match
    restraint: Callable[[torch.Tensor], torch.Tensor] | None = None  # coords → training-loss penalty


class _BatchLoss(torch.nn.Module):
    """The training loss of a batch as a module's ``forward``: what DistributedDataParallel wraps."""

    def __init__(self, model: torch.nn.Module, problem: Problem, per_particle: bool):
        super().__init__()
        self.model, self.per_particle = model, per_particle
        self.problem = problem

    def forward(self, idx: np.ndarray) -> torch.Tensor:
        coords = self.model.coords(self.problem, torch.as_tensor(idx))
        loss = self.problem.misfit(coords, idx, False)
        if self.problem.restraint is not None:
            loss = loss + self.problem.restraint(coords)
        if self.per_particle:
            loss = loss + self.model.penalty(torch.as_tensor(idx))
        return loss


def split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) row positions: ``round(test_fraction · n)`` test rows, at least one of each."""
    order = np.random.default_rng([int(seed), 500]).permutation(n)
    n_test = int(round(test_fraction * n))
    if test_fraction > 0 and n > 1:
        n_test = min(max(n_test, 1), n - 1)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def train(problem: Problem, model: SpectralAngles, config: ChainFitConfig, *, run_dir: str | Path | None,
          progress: ProgressCallback | None, cancel: CancelToken | None, on_epoch: EpochCallback | None,
          eval_batch: int = 500) -> tuple[list[dict[str, float]], np.ndarray, np.ndarray]:
    """Fit ``model`` to ``problem``; returns ``(history, train rows, test rows)``.

    With ``run_dir``, a checkpoint there is resumed (strictly: see the module docstring) and
    a new one written every ``config.checkpoint_every`` epochs and after the last.
    """
    train_idx, test_idx = split(problem.n, config.test_fraction, config.seed)
    if len(train_idx) == 0:
        raise ValueError("no training particles (dataset too small for test_fraction)")
    params = [p for p in model.parameters() if p.requires_grad]
    per_particle = bool(getattr(model, "per_particle", False))  # normal modes: every particle fits its own
    ctx = distributed.context()
    if ctx.active and per_particle:
        raise ValueError("ChainFitConfig.mode_amplitudes: per-particle normal-mode amplitudes are not trained on "
                         "several processes (each particle's amplitudes see only its own image); use "
                         "mode_amplitudes='eigenvectors' or the angle model, or split the particles among "
                         "separate single-process runs")
    fit_idx = np.arange(problem.n) if per_particle else train_idx
    steps_per_batch = int(getattr(model, "steps_per_batch", 1))
    base_lr = float(config.mode_step_a if per_particle else config.learning_rate)

    def new_optimizer() -> torch.optim.Optimizer:
        if per_particle:
            return model.optimizer(base_lr)
        if config.optimizer == "adam":
            return torch.optim.Adam(params, lr=config.learning_rate)
        return torch.optim.SGD(params, lr=config.learning_rate, momentum=config.momentum)

    opt = new_optimizer()

    def chains(idx: np.ndarray) -> torch.Tensor:
        return model.coords(problem, torch.as_tensor(idx))

    def evaluate() -> dict[str, float]:
        record: dict[str, float] = {}
        if len(test_idx) == 0:
            return record
        total, preds = 0.0, []
        with torch.no_grad():
            for s in range(0, len(test_idx), eval_batch):
                idx = test_idx[s:s + eval_batch]
                coords = chains(idx)
                total += float(problem.misfit(coords, idx, True)) * len(idx)
                preds.append(coords.double())
        record["test_loss"] = total / len(test_idx)
        if problem.truth_coords is not None:
            avg, mx = chain_errors(torch.cat(preds), problem.truth_coords[test_idx])
            record["avg_error_a"], record["max_error_a"] = avg, mx
        return record

    probe = (test_idx if len(test_idx) else train_idx)[:GUARD_PARTICLES]

    def probe_loss() -> float:
        with torch.no_grad():
            return float(problem.misfit(chains(probe), probe, True))

    checkpointer = None
    history: list[dict[str, float]] = []
    start_epoch = 1
    # divergence guard: the best state so far, its probe loss, and the step factor after back-offs
    guard = {"state": None, "loss": math.inf, "lr_factor": 1.0, "backoffs": 0}
    if run_dir is not None and ctx.is_main:  # rank 0 alone reads and writes; the others get its state
        checkpointer = Checkpointer(run_dir, config=config, n_particles=problem.n,
                                    particle_indices=problem.particle_indices,
                                    identity={"eigenvectors or another reference chain": problem.data_hash})
    state = None if checkpointer is None else checkpointer.load(progress=progress)
    state = distributed.broadcast_object(state)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        history = [dict(h) for h in state["history"]]
        start_epoch = int(state["epoch"]) + 1
        if "guard" in state:
            guard.update(state["guard"])
    if not history:
        record = {"epoch": 0, **evaluate(), "seconds": 0.0, "backoffs": 0}
        history.append(record)
        if on_epoch is not None:
            on_epoch(dict(record))
    if guard["state"] is None:
        guard["state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        guard["loss"] = probe_loss()

    def back_off(epoch: int, why: str) -> torch.optim.Optimizer:
        model.load_state_dict(guard["state"])
        guard["lr_factor"] *= 0.5
        guard["backoffs"] += 1
        report(progress, (epoch - 1) / max(config.epochs, 1),
               f"epoch {epoch}: the fit was moving away ({why}); went back to the best state so far and "
               f"halved the step")
        return new_optimizer()  # Adam's moments of the wild steps would push the same way again

    step_loss = distributed.data_parallel(_BatchLoss(model, problem, per_particle),
                                          problem.anchor_positions.device)  # the module itself in one process
    n_batches = math.ceil(len(fit_idx) / config.batch_size)
    total_steps = max(config.epochs * n_batches, 1)
    check_every = max(n_batches // GUARD_CHECKS, 1)
    for epoch in range(start_epoch, config.epochs + 1):
        tic = time.perf_counter()
        order = fit_idx[np.random.default_rng([int(config.seed), 501, epoch]).permutation(len(fit_idx))]
        total, seen = 0.0, 0
        for b in range(n_batches):
            if distributed.any_rank(cancel is not None and cancel.cancelled):  # every rank stops at one batch
                check_cancel(cancel)
                raise Cancelled("cancelled by another process of this run")
            idx = order[b * config.batch_size:(b + 1) * config.batch_size]
            weight = 1.0
            if ctx.active:  # this rank's slice of the global batch
                rows, weight = distributed.batch_shard(len(idx), ctx)
                idx = idx[rows]
            step = (epoch - 1) * n_batches + b
            warm_up = min(1.0, (step + 1) / max(n_batches, WARM_UP_STEPS))  # Adam's first steps overshoot
            set_scheduled_lr(opt, [base_lr * guard["lr_factor"] * warm_up] * len(opt.param_groups),
                             config.lr_schedule, step, total_steps)
            for _ in range(steps_per_batch):
                loss = step_loss(idx)
                if distributed.any_rank(not bool(torch.isfinite(loss))):
                    opt = back_off(epoch, "the loss of a batch is not a finite number")
                    break
                opt.zero_grad(set_to_none=True)
                (loss * weight if ctx.active else loss).backward()
                opt.step()
            else:
                if weight > 0:
                    total += float(loss.detach()) * len(idx)
                    seen += len(idx)
            if (b + 1) % check_every == 0 or b == n_batches - 1:
                now = probe_loss()
                if not math.isfinite(now) or now > guard["loss"] * (1 + GUARD_TOLERANCE):
                    opt = back_off(epoch, f"held-out loss {now:.4g}, best {guard['loss']:.4g}")
                elif now < guard["loss"]:
                    guard["loss"] = now
                    guard["state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            report(progress, ((epoch - 1) + (b + 1) / n_batches) / max(config.epochs, 1),
                   f"epoch {epoch}/{config.epochs}  batch {b + 1}/{n_batches}")
        if ctx.active:
            total, seen = (float(v) for v in distributed.all_reduce_array([total, seen]))
        end_of_epoch = getattr(model, "end_of_epoch", None)  # the normal modes' learned prior
        note = None if end_of_epoch is None else end_of_epoch(problem, epoch)
        seconds = time.perf_counter() - tic
        record = {"epoch": epoch, "train_loss": total / max(seen, 1), **evaluate(), "seconds": seconds,
                  "processes": ctx.world_size, "global_batch_size": int(config.batch_size),
                  "learning_rate": base_lr}
        record["backoffs"] = int(guard["backoffs"])
        history.append(record)
        if on_epoch is not None:
            on_epoch(dict(record))
        msg = f"epoch {epoch}/{config.epochs}  train {record['train_loss']:.4g}"
        if "avg_error_a" in record:
            msg += f"  avg err {record['avg_error_a']:.2f} Å  max err {record['max_error_a']:.2f} Å"
        if note:
            msg += f"  ({note})"
        report(progress, epoch / max(config.epochs, 1), msg)
        if checkpointer is not None and (epoch % config.checkpoint_every == 0 or epoch == config.epochs):
            checkpointer.save({"epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                               "history": history, "guard": guard})
    return history, train_idx, test_idx


def make_result(problem: Problem, model: SpectralAngles | NormalModeAmplitudes | ModeExpansion,
                reference: ChainReference,
                config: ChainFitConfig, history: list[dict[str, float]], train_idx: np.ndarray,
                test_idx: np.ndarray) -> ChainFitResult:
    """The :class:`ChainFitResult` of a trained model (arrays on the CPU)."""
    def np32(t: torch.Tensor) -> np.ndarray:
        return t.detach().cpu().numpy().astype(np.float32)

    def np64(t: torch.Tensor) -> np.ndarray:
        return t.detach().cpu().numpy().astype(np.float64)

    delta = np64(problem.delta)
    m = reference.n_atoms
    common = dict(anchor_positions=np64(problem.anchor_positions), anchor_frames=np64(problem.anchor_frames),
                  reference=reference, ref_index=problem.ref_index,
                  bond_lengths_a=np.broadcast_to(delta, (m - 1,)).copy(), history=history,
                  train_indices=train_idx, test_indices=test_idx, config=config.to_dict(),
                  particle_indices=problem.particle_indices)
    if isinstance(model, NormalModeAmplitudes | ModeExpansion):
        theta0, psi0 = chain_angles(model.reference.detach().cpu().double())
        k = model.displacements.shape[0]
        zeros = np.zeros((m - 2, k), dtype=np.float32)
        amplitudes = (model.amplitudes.weight if isinstance(model, NormalModeAmplitudes)
                      else model.amplitudes(problem.phi))  # (N, K) per particle either way
        return ChainFitResult(coeff_theta=zeros, coeff_psi=zeros, theta0=np64(theta0), psi0=np64(psi0),
                              phi=np32(amplitudes), coeff_mask=zeros, mode_vectors=np32(model.displacements),
                              **common)
    a, b = model.coefficients()
    return ChainFitResult(coeff_theta=np32(a), coeff_psi=np32(b), theta0=np64(model.theta0), psi0=np64(model.psi0),
                          phi=np32(problem.phi), coeff_mask=np32(model.mask), **common)
