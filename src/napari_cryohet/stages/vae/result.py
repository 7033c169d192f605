"""The VAE stage's result: the trained model and the latents of its particles.

Files in a run directory (the names of earlier versions, so their results still load):
``model.pt`` (model shape, weights, pixel size; read with ``torch.load(weights_only=True)``,
so a file crafted to run code is refused), ``latents.npz`` (``mu``, ``logvar``,
``indices``), ``history.json`` (one record per epoch) and ``config.json``.
"""

from __future__ import annotations

import dataclasses
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from napari_cryohet.core.device import select_device
from napari_cryohet.core.vae_model import ModelShape, StructuralBasisVAE
from napari_cryohet.io.atomic import atomic_path, save_npz_atomic
from napari_cryohet.io.errors import CorruptFileError, MissingFileError
from napari_cryohet.io.json_files import read_json, write_json
from napari_cryohet.stages.protocol import Embedding, StageResult
from napari_cryohet.stages.vae.config import VAEConfig
from napari_cryohet.stages.vae.volumes import decode_volumes

__all__ = ["VAEResult"]


@dataclass(eq=False)
class VAEResult(StageResult):
    """A trained model and the latents of the particles it was trained on.

    Attributes
    ----------
    model
        The trained :class:`~napari_cryohet.core.vae_model.StructuralBasisVAE`.
    config
        The :class:`VAEConfig` used.
    latents
        ``(N, zdim)`` float32 posterior means ``μ`` (final encoder pass).
    logvar
        ``(N, zdim)`` float32 posterior log-variances.
    indices
        ``(N,)`` particle indices in the root dataset (``ParticleDataset.indices``).
    apix
        Pixel size of the decoded volumes (Å/px).
    history
        One dict per epoch: ``epoch``, ``loss``, ``reconstruction``, ``kl``, ``seconds``.
    """

    STAGE: ClassVar[str] = "vae"
    FORMAT_VERSION: ClassVar[int] = 1

    model: StructuralBasisVAE
    config: VAEConfig
    latents: np.ndarray
    logvar: np.ndarray
    indices: np.ndarray
    apix: float
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def box_size(self) -> int:
        return self.model.shape.box_size

    @property
    def particle_indices(self) -> np.ndarray:
        return np.asarray(self.indices, dtype=np.int64)

    def embedding(self) -> Embedding:
        """The latents (posterior means), keyed on the particles' root indices."""
        return Embedding(self.latents, self.particle_indices, run_id=self.run_id, name="latents", source=self)

    def decode(self, z: Any, *, batch: int = 8) -> np.ndarray:
        """Volumes at latent points ``z`` ``(B, zdim)`` → ``(B, D, D, D)`` float32 (see
        :meth:`StructuralBasisVAE.decode_volume`)."""
        return decode_volumes(self.model, z, batch=batch)

    def _save(self, run_dir: Path) -> None:
        with atomic_path(run_dir / "model.pt") as tmp:
            torch.save({"model_shape": dataclasses.asdict(self.model.shape),
                        "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                        "apix": float(self.apix)}, tmp)
        save_npz_atomic(run_dir / "latents.npz", mu=self.latents, logvar=self.logvar,
                        indices=self.particle_indices)
        write_json(run_dir / "history.json", self.history)
        write_json(run_dir / "config.json", self.config.to_dict())

    @classmethod
    def from_folder(cls, folder: str | Path, *, device: str | None = "cpu") -> VAEResult:
        """A trained VAE from a run folder (``<workspace>/vae/0001``), a workspace (its newest
        finished VAE run) or an older ``<folder>/vae``."""
        from napari_cryohet.stages.workspace import WORKSPACE_FILE, Workspace

        folder = Path(folder)
        if (folder / WORKSPACE_FILE).is_file():
            return Workspace.open(folder).result("vae", device=device)
        if not (folder / "model.pt").exists() and (folder / "vae" / "model.pt").exists():
            folder = folder / "vae"  # an older workspace: results were written to <folder>/vae
        return cls.load(folder, device=device)

    @classmethod
    def _load(cls, run_dir: Path, device: str | None = "cpu") -> VAEResult:
        for name in ("model.pt", "latents.npz"):
            if not (run_dir / name).exists():
                raise MissingFileError(run_dir / name, "VAE result file not found (train first)")
        try:
            blob = torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True)
            model = StructuralBasisVAE(ModelShape(**blob["model_shape"]))
            model.load_state_dict(blob["model"])
        except (pickle.UnpicklingError, RuntimeError, KeyError, TypeError, ValueError, EOFError,
                zipfile.BadZipFile) as err:
            raise CorruptFileError(run_dir / "model.pt", f"not a VAE model (or holding more than tensors and "
                                   f"plain data, which is not loaded for safety): {err}") from err
        model = model.to(select_device(device))
        try:
            with np.load(run_dir / "latents.npz", allow_pickle=False) as lat:
                latents, logvar, indices = lat["mu"], lat["logvar"], lat["indices"]
        except (KeyError, ValueError, OSError, zipfile.BadZipFile) as err:
            raise CorruptFileError(run_dir / "latents.npz", f"not VAE latents (mu, logvar, indices): {err}") from err
        config = VAEConfig()
        if (run_dir / "config.json").exists():
            saved = read_json(run_dir / "config.json")
            config = VAEConfig.from_dict(saved, source=run_dir / "config.json")
        history = read_json(run_dir / "history.json") if (run_dir / "history.json").exists() else []
        return cls(model=model, config=config, latents=latents, logvar=logvar, indices=indices,
                   apix=float(blob.get("apix", 1.0)), history=history)
