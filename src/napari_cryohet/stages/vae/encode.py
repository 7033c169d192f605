"""Particle images in, latents out: the dataset checks, batch reading and the encoder pass.

Shared by training (:mod:`napari_cryohet.stages.vae.train`) and by encoding a dataset with a
trained model (:func:`encode_dataset`).
"""

from __future__ import annotations

import numpy as np
import torch

from napari_cryohet.core.ctf import compute_ctf_2d
from napari_cryohet.core.device import select_device
from napari_cryohet.core.particle_dataset import ParticleDataset
from napari_cryohet.core.vae_model import StructuralBasisVAE
from napari_cryohet.io.errors import CryohetInputError, MissingColumnError
from napari_cryohet.stages._common import CancelToken, ProgressCallback, check_cancel, report

__all__ = ["check_dataset", "ImageBatches", "encode_dataset"]


def check_dataset(dataset: ParticleDataset) -> None:
    """Refuse datasets the VAE cannot train on, with a named error (poses, square even images, ≥ 2)."""
    src = dataset.meta.get("source") if isinstance(dataset.meta, dict) else None
    if dataset.rotations is None:
        raise MissingColumnError(src, "the VAE needs particle poses (consensus refinement)", field="rotations")
    d = dataset.box_size
    if d % 2 or dataset.images.shape[-2] != d:
        raise CryohetInputError(src, f"images must be square with an even edge, got {tuple(dataset.images.shape[1:])}",
                                field="images")
    if len(dataset) < 2:
        raise CryohetInputError(src, f"need at least 2 particles, got {len(dataset)}", field="images")


class ImageBatches:
    """Reads batches of images, poses, CTF and shifts (by dataset row) as device tensors."""

    def __init__(self, dataset: ParticleDataset, device: torch.device):
        self.ds, self.device = dataset, device
        self.d = dataset.box_size

    def __call__(self, idx: np.ndarray):
        images = torch.as_tensor(self.ds.get_images(idx), device=self.device)  # (B, D, D)
        rotations = torch.as_tensor(np.asarray(self.ds.rotations[idx]), dtype=torch.float32, device=self.device)
        shifts_px = None
        if self.ds.shifts_a is not None:
            shifts_px = torch.as_tensor(np.asarray(self.ds.shifts_a[idx]) / self.ds.apix, dtype=torch.float32,
                                        device=self.device)
        ctf = None
        if self.ds.ctf is not None:
            ctf = compute_ctf_2d(self.d, self.ds.apix, **self.ds.ctf.to_torch(indices=idx, device=self.device))
        return images, rotations, shifts_px, ctf


@torch.no_grad()
def encode_dataset(
    model: StructuralBasisVAE,
    dataset: ParticleDataset,
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means and log-variances of every particle: ``(N, zdim)`` each, float32."""
    check_dataset(dataset)
    if dataset.box_size != model.shape.box_size:
        raise CryohetInputError(dataset.meta.get("source"), f"box size {dataset.box_size} differs from the "
                                f"model's {model.shape.box_size}", field="images")
    device = next(model.parameters()).device if device is None else select_device(device)
    model.eval()
    batches = ImageBatches(dataset, device)
    n = len(dataset)
    mu = np.zeros((n, model.shape.zdim), np.float32)
    logvar = np.zeros_like(mu)
    for start in range(0, n, batch_size):
        check_cancel(cancel)
        idx = np.arange(start, min(n, start + batch_size))
        images, _, shifts_px, _ = batches(idx)
        _, enc_in = model.preprocess(images, shifts_px)
        m, lv = model.encode(enc_in)
        mu[idx], logvar[idx] = m.cpu().numpy(), lv.cpu().numpy()
        report(progress, (idx[-1] + 1) / n, "encoding particles")
    return mu, logvar
