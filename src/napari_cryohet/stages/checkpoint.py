"""One checkpointer for every iterative stage (docs/design.md, "The stage protocol").

A checkpoint is one ``torch.save`` file written atomically (temporary file + rename, see
:mod:`napari_cryohet.io.atomic`) and read with ``torch.load(weights_only=True)``, so a file
crafted to run code when unpickled is refused, not executed. Beside the stage's own state
it records what the state belongs to — the config fingerprint, the input run ids, the
particle count and particle-index hash — and the torch and NumPy random states, so that a
resumed run continues the same random streams.

Resuming is strict: a checkpoint written under another config, other inputs or other
particles raises :class:`CheckpointMismatchError` saying what differs. It is never silently
reused (the old result under the new config) and never silently discarded (hours of
training overwritten). Hidden temporary files left by a killed write are deleted when the
checkpointer starts.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_cryohet.io.atomic import atomic_path, remove_stale_partials
from napari_cryohet.io.errors import CorruptFileError, CryohetInputError
from napari_cryohet.io.json_files import jsonable
from napari_cryohet.stages._common import ProgressCallback, report
from napari_cryohet.stages.protocol import StageConfig, particle_index_hash

__all__ = ["Checkpointer", "CheckpointMismatchError", "rng_state", "restore_rng", "MANIFEST"]

CHECKPOINT_NAME = "checkpoint.pt"
MANIFEST = "manifest.json"


class CheckpointMismatchError(CryohetInputError):
    """A checkpoint belongs to another config, other inputs or other particles."""


def rng_state() -> dict[str, Any]:
    """The global torch (CPU and CUDA) and NumPy random states, as tensors and ints."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002 - the global state is what we save
    state: dict[str, Any] = {"torch": torch.get_rng_state(),
                             "numpy": {"name": str(name), "keys": torch.as_tensor(keys.astype(np.int64)),
                                       "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Set the global random states saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))  # noqa: NPY002
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


class Checkpointer:
    """Save and resume an iterative stage in ``run_dir``.

    Parameters
    ----------
    run_dir
        The run's directory (``<workspace>/<stage>/<NNNN>``), or any directory.
    config
        The run's config; its fingerprint and science fields are stored and compared.
    n_particles, particle_indices
        The particles the run trains on (count and, when given, the index hash).
    inputs
        Input name → run id; default: read from ``run_dir/manifest.json`` when present.
    run_id
        Shown in messages (default: from the manifest, else ``<parent>/<dir>``).
    identity
        What else the state belongs to, beyond config, inputs and particles: description →
        a value or an :func:`~napari_cryohet.stages.protocol.array_hash` (the VAE's
        ``{"image sizes": 64}``, the chain fit's eigenvectors and reference chain). A
        checkpoint whose value differs is refused ("written for other image sizes").
    name
        File name of the checkpoint.
    """

    def __init__(self, run_dir: str | Path, *, config: StageConfig, n_particles: int,
                 particle_indices: np.ndarray | None = None, inputs: dict[str, str] | None = None,
                 run_id: str | None = None, identity: dict[str, Any] | None = None,
                 name: str = CHECKPOINT_NAME):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / name
        self.config = config
        manifest = {}
        if (self.run_dir / MANIFEST).is_file():
            try:
                manifest = json.loads((self.run_dir / MANIFEST).read_text())
            except (OSError, ValueError):
                manifest = {}
        self.inputs = dict(inputs if inputs is not None else manifest.get("inputs", {}))
        self.run_id = run_id or manifest.get("run_id") or f"{self.run_dir.parent.name}/{self.run_dir.name}"
        self.meta = {"fingerprint": config.fingerprint(), "config": config.science_dict(),
                     "inputs": self.inputs, "n_particles": int(n_particles),
                     "particle_index_hash": None if particle_indices is None else particle_index_hash(particle_indices),
                     "identity": jsonable(identity or {})}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.removed_partials = remove_stale_partials(self.run_dir)

    def exists(self) -> bool:
        return self.path.is_file()

    def load(self, *, map_location: Any = "cpu", progress: ProgressCallback | None = None,
             restore_random: bool = True) -> dict[str, Any] | None:
        """The saved state (``state["epoch"]`` and the stage's own keys), or ``None`` if none.

        Raises :class:`CheckpointMismatchError` when the checkpoint belongs to another
        config, other inputs or other particles, and :class:`CorruptFileError` when it
        cannot be read (truncated, not a checkpoint, or holding objects other than tensors
        and plain data).
        """
        if not self.path.is_file():
            return None
        try:
            blob = torch.load(self.path, map_location=map_location, weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile,
                AttributeError, TypeError) as err:
            raise CorruptFileError(self.path, f"unreadable checkpoint (truncated, or holding more than "
                                   f"tensors and plain data, which are not loaded for safety): "
                                   f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from err
        if not isinstance(blob, dict) or "meta" not in blob or "state" not in blob:
            raise CorruptFileError(self.path, "not a napari-cryohet checkpoint (no meta/state)")
        self._check(blob["meta"])
        state = blob["state"]
        if restore_random and "rng" in blob:
            restore_rng(blob["rng"])
        report(progress, 0.0, f"resumed from epoch {state.get('epoch', '?')} of run {self.run_id}")
        return state

    def _check(self, saved: dict[str, Any]) -> None:
        problems = []
        if saved.get("fingerprint") != self.meta["fingerprint"]:
            diff = self.config.differences(saved.get("config", {}))
            what = ", ".join(f"{k}: {old!r} → {new!r}" for k, (old, new) in diff.items()) or "stage version"
            problems.append(f"settings differ ({what})")
        if saved.get("inputs", {}) != self.meta["inputs"]:
            problems.append(f"inputs differ ({saved.get('inputs')} → {self.meta['inputs']})")
        if int(saved.get("n_particles", -1)) != self.meta["n_particles"]:
            problems.append(f"particle count differs ({saved.get('n_particles')} → {self.meta['n_particles']})")
        elif (self.meta["particle_index_hash"] is not None and saved.get("particle_index_hash") is not None
              and saved["particle_index_hash"] != self.meta["particle_index_hash"]):
            problems.append("the particles differ (same count, other particles)")
        saved_identity = saved.get("identity", {})
        for what, value in self.meta["identity"].items():
            if saved_identity.get(what) != value:
                problems.append(f"written for other {what} ({saved_identity.get(what)} → {value})")
        if problems:
            raise CheckpointMismatchError(
                self.path, f"checkpoint of run {self.run_id} does not belong to this run: {'; '.join(problems)}. "
                "Start a new run (a workspace does this for a changed config) or delete the checkpoint "
                "to start over", field="checkpoint")

    def save(self, state: dict[str, Any]) -> Path:
        """Write ``state`` (tensors, numbers, strings, lists and dicts of them) atomically.

        ``state`` should carry ``"epoch"``. A full disk raises
        :class:`~napari_cryohet.io.errors.OutputLocationError`; the previous checkpoint is kept.
        """
        blob = {"meta": jsonable(self.meta), "state": state, "rng": rng_state(), "format_version": 1}
        with atomic_path(self.path) as tmp:
            torch.save(blob, tmp)
        return self.path
