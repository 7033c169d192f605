"""Several processes, one run: ``torch.distributed`` for training and reconstruction (docs/scale-out.md).

The stages run unchanged in one process; under ``torchrun`` (one process per GPU, one or
many nodes) they share the work through ``torch.distributed`` — the engine torch ships,
NCCL between GPUs, gloo between CPU processes — and nothing here schedules anything:

- :func:`init_from_env` joins the process group that ``torchrun`` describes in the
  environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``);
  without those variables (or with ``WORLD_SIZE=1``) it does nothing and every helper
  below is the single-process identity.
- Training keeps the *global* batch of the settings (``batch_size``): each process takes
  its contiguous slice of every global batch (:func:`batch_shard`), its loss is weighted by
  its share so that DistributedDataParallel's gradient average equals the gradient of the
  global batch mean, and the per-epoch random streams stay derived from ``(seed, epoch)``.
  A run therefore ends with the same weights on 1 or N processes, up to floating-point
  reduction order.
- Rank 0 alone reads and writes the checkpoint and the run's files (:func:`is_main`); it
  hands the resumed state to the other ranks (:func:`broadcast_object`), so a run may be
  resumed with another number of processes.
- Reconstruction sums (``Σ CTF·Y`` and ``Σ CTF²``, :func:`~napari_cryohet.core.reconstruct.backproject_images`)
  are computed per shard and added (:func:`all_reduce_` under torchrun, or
  :func:`save_partial_sums` / :func:`load_partial_sums` for separate jobs), then divided once.
"""

from __future__ import annotations

import gc
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from napari_cryohet.core.half_maps import reconstruct_half_maps
from napari_cryohet.core.reconstruct import backproject_shard, shard_rows, volume_from_sums
from napari_cryohet.io.atomic import save_npz_atomic

__all__ = ["Context", "context", "init_from_env", "shutdown", "is_main", "rank_device", "batch_shard",
           "shard_rows", "all_reduce_", "all_reduce_array", "any_rank", "broadcast_object", "barrier", "data_parallel",
           "main_first", "run_in_workspace", "reconstruct_volume_distributed",
           "reconstruct_half_maps_distributed", "save_partial_sums", "load_partial_sums"]

#: Environment variables ``torchrun`` sets for every process it starts.
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Context:
    """Where this process stands: ``rank`` of ``world_size`` processes (``local_rank`` on its node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def active(self) -> bool:
        """Several processes share the run."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that reads and writes the run's files."""
        return self.rank == 0


def context() -> Context:
    """This process's place in the process group (rank 0 of 1 when there is none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Context()
    return Context(rank=dist.get_rank(), world_size=dist.get_world_size(),
                   local_rank=int(os.environ.get("LOCAL_RANK", dist.get_rank())), backend=dist.get_backend())


def init_from_env(device: str | torch.device | None = None) -> Context:
    """Join the process group ``torchrun`` describes in the environment; nothing without one.

    The backend is NCCL when the run computes on CUDA (``device`` ``None``/``"auto"`` with a
    GPU present, or ``"cuda"``), else gloo; under NCCL each process takes GPU
    ``LOCAL_RANK``. Calling it again returns the group already joined.
    """
    if dist.is_available() and dist.is_initialized():
        return context()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context()
    missing = [v for v in TORCHRUN_VARS if v not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={world} is set but {', '.join(missing)} are not: start several "
                           "processes with torchrun (docs/scale-out.md), which sets all of them")
    wanted = str(device) if device is not None else "auto"
    cuda = torch.cuda.is_available() and (wanted == "auto" or wanted.startswith("cuda"))
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return context()


def shutdown() -> None:
    """Leave the process group (when one was joined), once every rank got here.

    Garbage (a finished DistributedDataParallel wrapper, the gloo work objects of its last
    reductions) is collected before and after leaving: gloo's worker threads may still hold
    such objects, and destroying them during interpreter finalization aborts the process
    ("terminate called without an active exception"; pytorch/pytorch PR #179291 describes the
    mechanism). Seen once in about ten 2-process test runs before this collection was added.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # no rank tears its connections down while another still uses them
        gc.collect()
        dist.destroy_process_group()
        gc.collect()


def is_main() -> bool:
    """True on rank 0 (and in a single process): the process that writes files."""
    return context().is_main


def rank_device(device: torch.device) -> torch.device:
    """``device`` for this process: ``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun."""
    ctx = context()
    if ctx.active and device.type == "cuda":
        return torch.device("cuda", ctx.local_rank)
    return device


def _collective_device() -> torch.device:
    if context().backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def batch_shard(n_batch: int, ctx: Context | None = None) -> tuple[np.ndarray, float]:
    """This rank's rows of a global batch of ``n_batch`` and the weight of its mean loss.

    The rows are a contiguous slice (``np.array_split``); the weight ``n_rank·W/n_batch``
    makes the average of the ranks' weighted means — what DistributedDataParallel's gradient
    average computes — the mean over the global batch, also when the batch does not split
    evenly. A rank left without rows (a last batch smaller than the number of processes)
    gets row 0 with weight 0: every rank must run the backward pass of every step.
    """
    ctx = ctx or context()
    rows = np.array_split(np.arange(n_batch), ctx.world_size)[ctx.rank]
    if len(rows) == 0:
        return np.zeros(1, dtype=np.int64), 0.0
    return rows, len(rows) * ctx.world_size / n_batch


def all_reduce_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks, in place (complex tensors too); returns it."""
    if not context().active:
        return tensor
    target = _collective_device()
    if tensor.device == target:
        dist.all_reduce(tensor)
        return tensor
    moved = tensor.to(target)
    dist.all_reduce(moved)
    tensor.copy_(moved)
    return tensor


def all_reduce_array(values: np.ndarray | float) -> np.ndarray:
    """Sum a NumPy array (or a number) over all ranks; a new float64 array."""
    tensor = torch.as_tensor(np.array(values, dtype=np.float64))
    return all_reduce_(tensor).numpy()


def any_rank(flag: bool) -> bool:
    """True when ``flag`` is true on any rank (e.g. a cancel, a non-finite loss): one decision for all."""
    if not context().active:
        return bool(flag)
    return bool(all_reduce_array(1.0 if flag else 0.0) > 0)


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (picklable: tensors, numbers, lists, dicts)."""
    if not context().active:
        return obj
    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0, device=_collective_device())
    return box[0]


def barrier() -> None:
    """Wait until every rank gets here."""
    if context().active:
        dist.barrier()


def data_parallel(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``module`` wrapped in DistributedDataParallel under torchrun; ``module`` itself otherwise.

    DDP copies rank 0's parameters to every rank when it is built (so build it after any
    checkpoint was loaded) and averages the gradients during every backward pass. Buffers
    (the VAE's noise spectrum) are not re-broadcast: every rank computes or loads the same.
    """
    if not context().active:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    # the buffers are equal on every rank: no broadcast before each forward (the option's new name since torch 2.12)
    names = inspect.signature(DistributedDataParallel.__init__).parameters
    quiet = {"forward_sync_buffers": False} if "forward_sync_buffers" in names else {"broadcast_buffers": False}
    return DistributedDataParallel(module, device_ids=ids, **quiet)


# ------------------------------------------------------------------ workspace runs

def main_first(make: Callable[[], Any]) -> Any:
    """``make()`` on rank 0, then (once it is done) on the other ranks: for steps that may write
    (opening a new workspace, simulating its dataset) and that the others then only read."""
    if context().is_main:
        value = make()
        barrier()
        return value
    barrier()
    return make()


def _finished_run(ws: Any, spec: Any, config: Any, input_ids: dict[str, str], dataset: Any) -> str | None:
    """The id of a finished run of these settings, inputs and particles (what ``Workspace.run`` returns as is)."""
    from napari_cryohet.stages.protocol import dataset_indices, particle_index_hash

    key = {"fingerprint": config.fingerprint(), "inputs": input_ids,
           "particle_index_hash": particle_index_hash(dataset_indices(dataset))}
    for manifest in reversed(ws.runs(spec.name)):
        if all(manifest.get(k) == v for k, v in key.items()):
            return manifest["run_id"] if manifest.get("status") == "done" else None
    return None


def run_in_workspace(ws: Any, stage: str, config: Any, *, inputs: dict[str, str] | None = None,
                     progress: Any = None) -> Any:
    """``ws.run(stage, config, ...)`` with every rank of a torchrun job taking part.

    Rank 0 runs the stage through the workspace (run folder, manifest, checkpoint, saved
    result, as in one process); the other ranks call the stage's run function on the same
    dataset and inputs, without a run folder, and take part in its collectives. A run
    already finished with these settings is returned by rank 0 and not trained again on
    any rank. The other ranks return ``None`` (only rank 0 reports). In one process this is
    ``ws.run``.
    """
    ctx = context()
    if not ctx.active:
        return ws.run(stage, config, inputs=inputs, progress=progress)
    from napari_cryohet.stages.registry import stage_spec

    spec = stage_spec(stage)
    dataset = main_first(lambda: ws.dataset) if spec.needs_dataset else None
    input_ids = {name: ws.resolve(ref) for name, ref in (inputs or {}).items()}
    done = broadcast_object(_finished_run(ws, spec, config, input_ids, dataset) if ctx.is_main else None)
    if ctx.is_main:
        return ws.run(stage, config, inputs=inputs, progress=progress)
    if done is not None:
        return None
    resolved = {name: ws.embedding(run_id) if spec.inputs[name].kind == "embedding" else ws.result(run_id)
                for name, run_id in input_ids.items()}
    spec.run(dataset, config, inputs=resolved, progress=None, cancel=None, run_dir=None)
    return None


# ------------------------------------------------------------------ reconstruction

def reconstruct_volume_distributed(images, rotations, *, apix: float, ctf: dict | None = None, shifts_a=None,
                                   weights=None, batch: int = 256, pad_factor: int = 2, wiener_eps: float = 1e-3,
                                   device: str | torch.device | None = None) -> torch.Tensor:
    """:func:`~napari_cryohet.core.reconstruct.reconstruct_volume` with the images shared among the ranks.

    Every rank backprojects its contiguous shard of the particles (reading only those
    images of a lazy stack), the numerator ``Σ w·CTF·Y`` and the denominator ``Σ w·CTF²``
    are summed over the ranks, and every rank divides once. In a single process this is
    ``reconstruct_volume`` (with ``weights``). Equal to it up to float32 summation order.
    """
    ctx = context()
    num, den = backproject_shard(images, rotations, rank=ctx.rank, world_size=ctx.world_size, apix=apix, ctf=ctf,
                                 shifts_a=shifts_a, weights=weights, batch=batch, pad_factor=pad_factor,
                                 device=device)
    all_reduce_(num)
    all_reduce_(den)
    return volume_from_sums(num, den, int(images.shape[-1]), wiener_eps=wiener_eps)


def reconstruct_half_maps_distributed(images, rotations, shifts_a, ctf: dict | None, apix: float, half_sets, *,
                                     weights=None, **options) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`~napari_cryohet.core.half_maps.reconstruct_half_maps` with the particles shared among the ranks.

    Each rank backprojects its contiguous shard of the particles (both half sets, the
    labels kept), the sums are added over the ranks before the division, and every rank
    gets the maps of all particles. In a single process this is ``reconstruct_half_maps``.
    Used by the clustering and refinement stage for its per-cluster and half maps.
    """
    ctx = context()
    if not ctx.active:
        return reconstruct_half_maps(images, rotations, shifts_a, ctf, apix, half_sets, weights=weights, **options)
    rows = shard_rows(int(images.shape[0]), ctx.rank, ctx.world_size)
    part_ctf = None if ctf is None else {k: (v[rows] if np.ndim(v) else v) for k, v in ctf.items()}
    return reconstruct_half_maps(images[rows], rotations[rows], None if shifts_a is None else shifts_a[rows], part_ctf,
                                 apix, np.asarray(half_sets)[rows], weights=None if weights is None else weights[rows],
                                 reduce=all_reduce_, **options)


def save_partial_sums(path: str | Path, numerator: torch.Tensor, weights: torch.Tensor, *,
                      n_particles: int) -> Path:
    """Write one shard's backprojection sums (``.npz``: ``numerator``, ``weights``, ``n_particles``).

    For shards computed by separate jobs (e.g. a SLURM array): add them with
    :func:`load_partial_sums` and finish with
    :func:`~napari_cryohet.core.reconstruct.volume_from_sums`.
    """
    path = Path(path)
    save_npz_atomic(path, numerator=numerator.detach().cpu().numpy(), weights=weights.detach().cpu().numpy(),
                    n_particles=np.int64(n_particles))
    return path


def load_partial_sums(paths: list[str | Path]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The sums of several :func:`save_partial_sums` files added: ``(numerator, weights, n_particles)``."""
    if not paths:
        raise ValueError("load_partial_sums: no files given")
    num = den = None
    count = 0
    for path in paths:
        with np.load(Path(path), allow_pickle=False) as blob:
            missing = {"numerator", "weights", "n_particles"} - set(blob.files)
            if missing:
                raise ValueError(f"{path}: not a file of partial backprojection sums (no {sorted(missing)})")
            n, w = torch.as_tensor(blob["numerator"]), torch.as_tensor(blob["weights"])
            if num is not None and n.shape != num.shape:
                raise ValueError(f"{path}: sums of shape {tuple(n.shape)}, the first file's are {tuple(num.shape)} "
                                 "(other box size or padding)")
            num = n if num is None else num + n
            den = w if den is None else den + w
            count += int(blob["n_particles"])
    return num, den, count
