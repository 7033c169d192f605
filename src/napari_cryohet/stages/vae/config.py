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

    #: Fields the settings form always shows; the others sit under "Advanced settings".
    PRIMARY: ClassVar[tuple[str, ...]] = ("zdim", "epochs", "batch_size", "beta")

    # Model hyper-parameters: the defaults are ModelShape's, so the two cannot drift apart.
    zdim: int = param(ModelShape.zdim, minimum=1, unit="dimensions", label="latent dimensions",
                      help="Number of coordinates that describe each particle's shape after training (its "
                           "latent point); 8 in Kimanius, Jamali & Scheres 2022; 2-16 typical")
    n_basis: int = param(ModelShape.n_basis, minimum=1, unit="volumes", label="basis volumes K",
                         help="Number of building-block volumes the decoder mixes to make each particle's volume "
                              "(structural basis, K in eq. 3 of Kimanius, Jamali & Scheres 2022, who used 16); "
                              "more can express more shapes but trains slower; 8-32 typical")
    epochs: int = param(20, minimum=0, unit="epochs",
                        help="Passes over all particles; 20-50 typical (50 in Kimanius, Jamali & Scheres 2022)")
    batch_size: int = param(16, minimum=1, unit="images", label="batch size",
                            help="Images per training step; smaller takes more, noisier steps per epoch; "
                                 "16-128 typical")
    lr: float = param(1e-3, minimum=0.0, label="network learning rate",
                      help="Step size (Adam) of the encoder and of the network that mixes the basis volumes; "
                           "0.0001-0.003 typical")
    lr_basis: float = param(1e-3, minimum=0.0, label="basis learning rate",
                            help="Step size (Adam) of the basis volumes; 0.0001-0.003 typical (larger fitted noise)")
    lr_schedule: str = param("cosine", choices=LR_SCHEDULES, label="learning-rate schedule",
                             help="'cosine' = both learning rates fall smoothly to 0 by the last epoch; "
                                  "'constant' = they stay as set")
    beta: float = param(0.1, minimum=0.0, label="latent prior weight β",
                        help="How strongly the latent points are pulled towards a standard normal cloud; "
                             "0.1-0.3 typical: they keep the differences between particles, while 1 collapsed the "
                             "latent points of noisy data (signal-to-noise 0.1)")
    prior_weight: float = param(3000.0, minimum=0.0, label="basis prior weight",
                                help="Weight of a penalty on large basis volumes that keeps them from fitting noise "
                                     "as training goes on (a Gaussian prior); 0 = off, as in Kimanius, Jamali & "
                                     "Scheres 2022; 300-3000 typical")
    enc_dim: int = param(ModelShape.enc_dim, minimum=1, unit="neurons", label="encoder width",
                         help="Neurons per layer of the encoder (the network that turns an image into a latent "
                              "point); 128-1024 typical")
    enc_blocks: int = param(ModelShape.enc_blocks, minimum=0, unit="blocks", label="encoder depth",
                            help="Residual blocks (pairs of layers) of the encoder; 1-4 typical")
    dec_dim: int = param(ModelShape.dec_dim, minimum=1, unit="neurons", label="mixing network width",
                         help="Neurons per layer of the network that turns a latent point into the weights of the "
                              "basis volumes; 32-256 typical")
    dec_blocks: int = param(ModelShape.dec_blocks, minimum=0, unit="blocks", label="mixing network depth",
                            help="Residual blocks (pairs of layers) of the network that turns a latent point into "
                                 "basis-volume weights; 1-4 typical")
    radius: float | None = param(ModelShape.radius, minimum=0.0, unit="px of frequency", label="Fourier radius",
                                 help="Finest detail modelled, as a radius in pixels from the centre of the image's "
                                      "Fourier transform (resolution = box size × pixel size / radius); empty = "
                                      "Nyquist, half the box; a smaller radius trains faster at lower resolution")
    mask_radius: float = param(ModelShape.mask_radius, minimum=0.0, maximum=1.5, unit="× half box",
                               label="encoder mask radius",
                               help="Radius of the circular mask applied to the images the encoder sees, as a "
                                    "fraction of half the box (0.9 = just inside the box edge); 0.5-1")
    enc_whiten: bool = param(ModelShape.enc_whiten, label="whiten encoder input",
                             help="Divide the encoder's input by the noise spectrum (eq. 5 of Kimanius, Jamali & "
                                  "Scheres 2022) instead of only scaling it to unit variance (lowered the latent "
                                  "quality at signal-to-noise 0.1)")
    normalisation_images: int = param(10000, minimum=1, unit="images", label="images for the noise spectrum",
                                      help="Images used to estimate the noise spectrum (eq. 5); all of them when "
                                           "the dataset is smaller; 1000-10 000 typical")
    seed: int = param(0, minimum=0, label="random seed",
                      help="Seeds the initial weights, the particle order and the sampling noise")
    device: str | None = param(None, runtime=True, label="compute on",
                               help="Where to compute: 'cpu', 'cuda' (graphics card), or empty = the graphics card "
                                    "when there is one; does not change the result")

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
