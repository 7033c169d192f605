"""VAE stage: the structural-basis VAE of Kimanius, Jamali, Scheres 2022 (seed 004).

A variational autoencoder whose decoder mixes a few Fourier basis volumes,
``g(z) = Σ_k V^(k) s^(k)(z) + V^(0)`` (eq. 3), trained with sparse Fourier
backpropagation (§4.3). The model, loss and fused sparse slice live in
:mod:`napari_cryohet.core.vae_model` and :mod:`napari_cryohet.core.basis_slice`; this
package holds

- :mod:`.config` — :class:`VAEConfig`;
- :mod:`.result` — :class:`VAEResult` (model, latents; ``embedding()`` hands the latents to
  other stages, keyed on particle indices);
- :mod:`.train` — :func:`train_vae` (checkpoints and per-epoch latents in the run directory);
- :mod:`.encode` — the dataset checks, batch reading, :func:`encode_dataset`;
- :mod:`.volumes` — :func:`decode_volumes`, :func:`isosurface`;
- :mod:`.latent_space` — what the latent explorer computes: embeddings (PCA, UMAP), back
  to latents, latent paths, particles inside a polygon;
- :mod:`.stage` — ``run`` and ``STAGE`` for the workspace (``ws.run("vae", config)``).
"""

from napari_cryohet.stages.vae.config import VAEConfig
from napari_cryohet.stages.vae.encode import encode_dataset
from napari_cryohet.stages.vae.latent_space import (
    EMBEDDING_METHODS,
    embed_latents,
    embedding_to_latent,
    latent_path,
    points_in_polygon,
)
from napari_cryohet.stages.vae.result import VAEResult
from napari_cryohet.stages.vae.train import latents_epoch_path, train_vae
from napari_cryohet.stages.vae.volumes import decode_volumes, isosurface

__all__ = [
    "VAEConfig",
    "VAEResult",
    "train_vae",
    "latents_epoch_path",
    "decode_volumes",
    "encode_dataset",
    "embed_latents",
    "embedding_to_latent",
    "latent_path",
    "isosurface",
    "points_in_polygon",
    "EMBEDDING_METHODS",
]
