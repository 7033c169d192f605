"""Settings of the VAE stage (Kimanius, Jamali, Scheres 2022: §4.2, §4.3, §5.1).

Every field is declared once with :func:`~napari_cryohet.stages.protocol.param`; the widget
form and the ``cryohet vae train`` flags are generated from these declarations.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from napari_cryohet.core.vae_model import ModelShape
from napari_cryohet.stages._common import LR_SCHEDULES
from napari_cryohet.stages.protocol import StageConfig, param

__all__ = ["VAEConfig"]


@dataclass
class VAEConfig(StageConfig):
    """Training options (defaults follow §4.2 and §5.1 of Kimanius, Jamali, Scheres 2022).

    Notes on the defaults (measured on the ``adk_volumes`` benchmark,
    ``benchmarks/vae_vs_cryodrgn.py``):

    batch_size
        §4.3 notes that dense basis gradients are efficient from about 64 images on; 16
        costs about 1.5× more time per epoch (each step still updates the whole basis) but
        takes 4× more steps, and it trained better latents and volumes in equal epochs
        (3 epochs: k-NN accuracy 0.30 → 0.33, FSC AUC 0.468 → 0.475). cryoDRGN also
        defaults to 16 images per step.
    lr, lr_basis
        Adam learning rates of the networks and of the basis volumes (1e-3 each; 3e-3 and
        1e-2 for the basis fitted noise and lowered the FSC to the truth).
    lr_schedule
        ``"cosine"`` (both rates decay to 0 over ``epochs``: the final basis volumes are
        averaged over many noisy minibatches rather than taken from the last few) or
        ``"constant"``.
    beta
        Weight of the KL term (1 = evidence lower bound per frequency, with the noise
        variance taken as the data's power). At SNR ≈ 0.1, β = 1 collapsed the latents
        (k-NN accuracy 0.13); 0.1–0.3 keep the heterogeneity in them.
    prior_weight
        Weight of the Gaussian log-prior on the structural basis volumes (``λ P`` of eq. 4,
        which the paper sets to 0): ``prior_weight · Σ_k ‖V^(k)‖² / N`` per image, so it
        counts once per epoch whatever ``N``. 3000 raised the FSC AUC to the truth from
        0.479 to 0.508 (0.5 crossing 6.4 → 5.9 Å) at 3 epochs and left the k-NN accuracy
        of the latents as it was (0.329 → 0.326); at 6 epochs, 300 raised FSC AUC / k-NN
        from 0.442 / 0.451 to 0.465 / 0.510 — without it the grid basis fits noise as
        training goes on.
    enc_whiten
        ``ModelShape.enc_whiten`` (see :mod:`napari_cryohet.core.vae_model`).
    """

    STAGE: ClassVar[str] = "vae"
    RETIRED: ClassVar[tuple[str, ...]] = ("workspace", "resume")  # the workspace decides these now

    # Model hyper-parameters: the defaults are ModelShape's, so the two cannot drift apart.
    zdim: int = param(ModelShape.zdim, minimum=1, label="latent dimensions",
                      help="Number of latent coordinates per particle (8 in Kimanius, Jamali, Scheres 2022)")
    n_basis: int = param(ModelShape.n_basis, minimum=1, label="basis volumes (K)",
                         help="Number of structural basis volumes the decoder mixes (16 in Kimanius, Jamali, "
                              "Scheres 2022)")
    epochs: int = param(20, minimum=0, unit="epochs", help="Passes over all particles")
    batch_size: int = param(16, minimum=1, unit="images", help="Images per optimisation step")
    lr: float = param(1e-3, minimum=0.0, label="network learning rate",
                      help="Adam learning rate of the encoder and of the network that mixes the basis volumes")
    lr_basis: float = param(1e-3, minimum=0.0, label="basis learning rate",
                            help="Adam learning rate of the basis volumes")
    lr_schedule: str = param("cosine", choices=LR_SCHEDULES, label="learning-rate schedule",
                             help="cosine: both learning rates fall smoothly to 0 by the last epoch; "
                                  "constant: they stay as set")
    beta: float = param(0.1, minimum=0.0, label="latent prior weight (β)",
                        help="Weight of the pull of the latents towards a standard normal distribution; "
                             "1 collapsed the latents of noisy data (SNR 0.1), 0.1-0.3 keep the heterogeneity")
    prior_weight: float = param(3000.0, minimum=0.0, label="basis prior weight",
                                help="Weight of a Gaussian prior on the basis volumes that keeps them from fitting "
                                     "noise as training goes on (0: off, as in the paper)")
    enc_dim: int = param(ModelShape.enc_dim, minimum=1, unit="neurons", label="encoder width",
                         help="Width of the encoder's layers")
    enc_blocks: int = param(ModelShape.enc_blocks, minimum=0, label="encoder residual blocks",
                            help="Residual blocks of the encoder")
    dec_dim: int = param(ModelShape.dec_dim, minimum=1, unit="neurons", label="mixing network width",
                         help="Width of the network that turns a latent point into basis-volume weights")
    dec_blocks: int = param(ModelShape.dec_blocks, minimum=0, label="mixing network residual blocks",
                            help="Residual blocks of the network that turns a latent point into basis-volume weights")
    radius: float | None = param(ModelShape.radius, minimum=0.0, unit="px of frequency", label="Fourier radius",
                                 help="Highest spatial frequency modelled, in pixels from the centre of the "
                                      "image's Fourier transform (empty: Nyquist, half the box)")
    mask_radius: float = param(ModelShape.mask_radius, minimum=0.0, maximum=1.5, unit="× half box",
                               label="encoder mask radius",
                               help="Radius of the circular mask on the images the encoder sees, as a fraction of "
                                    "half the box")
    enc_whiten: bool = param(ModelShape.enc_whiten, label="whiten encoder input",
                             help="Divide the encoder's input by the noise spectrum (eq. 5) instead of only "
                                  "scaling it to unit variance (lowered latent quality at SNR 0.1)")
    normalisation_images: int = param(10000, minimum=1, unit="images", label="images for the noise spectrum",
                                      help="Images used to estimate the noise spectrum (eq. 5); all of them when "
                                           "the dataset is smaller")
    seed: int = param(0, minimum=0, label="random seed",
                      help="Seeds the initial weights, the particle order and the sampling noise")
    device: str | None = param(None, runtime=True,
                               help="Where to compute: cpu, cuda, or empty to pick the GPU when there is one")

    def validate(self) -> None:
        for name in ("lr", "lr_basis", "mask_radius"):
            if not float(getattr(self, name)) > 0:
                self.fail(name, "a value > 0", getattr(self, name))
        if self.radius is not None and not float(self.radius) > 0:
            self.fail("radius", "a value > 0 (or empty for Nyquist)", self.radius)

    def model_shape(self, box_size: int) -> ModelShape:
        """The model's shape: ``ModelShape``'s fields taken from this config by name."""
        names = [f.name for f in dataclasses.fields(ModelShape) if f.name != "box_size"]
        return ModelShape(box_size=int(box_size), **{name: getattr(self, name) for name in names})
