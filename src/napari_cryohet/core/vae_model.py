"""Structural-basis VAE of Kimanius, Jamali, Scheres 2022: encoder, decoder, loss, volume decoding.

Model (§2.2, §4.2, §4.3)
------------------------
- **Encoder** ``f_θ``: the particle image, centred (its shift undone by a Fourier phase
  ramp), low-passed to the model's Fourier disc, *standardised* (divided by the data's root
  mean power, so pixels have unit variance, as §4.3 standardises the real-space images) and
  taken in **real space**, where a circular mask keeps only the pixels that can hold the
  particle; an MLP with residual blocks maps these pixels to ``(μ, log σ²)``. Real space
  rather than Hartley space: an MLP's first linear layer is indifferent to any fixed
  orthogonal change of basis (Hartley *is* one), so the only thing the choice changes is
  what can be masked — and the particle's support, outside which there is nothing but
  noise, is a simple disc only in real space (measured: dropping the mask and feeding the
  Fourier half-disc lowered the k-NN accuracy of the benchmark's latents from 0.33 to 0.29).
  The per-frequency *spectral* normalisation by ``σ̄_y`` (eq. 5) is applied to the data the
  decoder is compared with; for the encoder it is optional (``ModelShape.enc_whiten``) and
  off by default: it raises the noise-only high shells to the power of the signal-bearing
  low ones, and on the benchmark (``adk_volumes``, SNR 0.1) it lowered the k-NN accuracy of
  the latents from 0.30 to 0.22.
  The noise spectrum ``σ̄_y`` itself is estimated in
  :mod:`napari_cryohet.core.vae_normalisation`.
- **Decoder** ``g_ω(z) = Σ_k V^(k) s^(k)(z) + V^(0)`` (eq. 3): ``K`` structural basis volumes
  plus a bias volume, complex Fourier coefficients stored only inside the Nyquist sphere of
  the Hermitian half-grid (:mod:`napari_cryohet.core.basis_slice`), in units normalised by
  ``σ̄_y`` (so all coefficients have similar magnitude, which the optimiser needs);
  ``s(z)`` is a small residual MLP.
- **Loss** (eq. 4): ``(1 − λ) |y_n − C · H(φ) g(z)|²`` over the half-disc of
  image frequencies, with ``y_n = y / σ̄_y`` and ``1 − λ ∝ σ̄_y²`` (§4.3), normalised so that
  pure noise scores ≈ 1; plus ``β · KL(q(z|y) ‖ N(0, I))`` divided by the number of
  frequencies, so ``β = 1`` is the evidence lower bound per frequency for noise whose
  variance is the data's power; plus the log-prior ``λ P`` with ``P = Σ_k ‖V^(k)‖²`` on the
  structural basis (the paper sets ``P = 0``; without it the grid basis starts fitting noise
  as training goes on, see ``VAEConfig.prior_weight``).
- ``decode_volume(z)``: assemble ``g(z) · σ̄_y`` on the full Hermitian grid and inverse-FFT.

The slice of ``g(z_i)`` in pose ``φ_i`` is computed by the fused sparse function
:func:`napari_cryohet.core.basis_slice.extract_basis_slices`; no volume is built in training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from napari_cryohet.core.basis_slice import (
    HalfGridLookup,
    basis_to_volume,
    build_half_grid,
    build_slice_points,
    extract_basis_slices,
    rotate_slice_points,
)
from napari_cryohet.core.fft import fft2_centered, ifft2_centered, ifft3_centered, phase_shift_2d
from napari_cryohet.core.vae_normalisation import shell_index_2d

__all__ = ["ModelShape", "ResidualMLP", "StructuralBasisVAE"]


class _ResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.relu(self.linear(x))


class ResidualMLP(nn.Module):
    """``Linear → ReLU → n_blocks × (x + ReLU(Linear x)) → Linear``."""

    def __init__(self, n_in: int, width: int, n_out: int, n_blocks: int):
        super().__init__()
        self.inp = nn.Linear(n_in, width)
        self.blocks = nn.Sequential(*[_ResidualBlock(width) for _ in range(n_blocks)])
        self.out = nn.Linear(width, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.blocks(torch.relu(self.inp(x))))


@dataclass
class ModelShape:
    """Hyper-parameters that fix the model's tensors (saved with every checkpoint).

    Attributes
    ----------
    box_size
        Image size ``D`` (even).
    zdim
        Latent dimension (8 in §5.1).
    n_basis
        ``K``, number of structural basis volumes (16 in §4.2).
    radius
        Fourier radius of the model in pixels of frequency (``None`` = ``D/2``, Nyquist).
    enc_dim, enc_blocks
        Encoder width and number of residual blocks.
    dec_dim, dec_blocks
        Width and residual blocks of ``s(z)``.
    mask_radius
        Encoder's real-space mask radius as a fraction of ``D/2``.
    enc_whiten
        Feed the encoder the image spectrally normalised by ``σ̄_y`` (eq. 5) instead of
        standardised (see the module docstring).
    """

    box_size: int
    zdim: int = 8
    n_basis: int = 16
    radius: float | None = None
    enc_dim: int = 256
    enc_blocks: int = 2
    dec_dim: int = 64
    dec_blocks: int = 2
    mask_radius: float = 0.9
    enc_whiten: bool = False

    def validate(self) -> None:
        checks = {
            "box_size": self.box_size > 0 and self.box_size % 2 == 0,
            "zdim": self.zdim >= 1,
            "n_basis": self.n_basis >= 1,
            "radius": self.radius is None or 0 < self.radius <= self.box_size / 2,
            "enc_dim": self.enc_dim >= 1,
            "enc_blocks": self.enc_blocks >= 0,
            "dec_dim": self.dec_dim >= 1,
            "dec_blocks": self.dec_blocks >= 0,
            "mask_radius": 0 < self.mask_radius <= 1.5,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"ModelShape.{name} is invalid: {getattr(self, name)!r}")


class StructuralBasisVAE(nn.Module):
    """The VAE of seed 004: image encoder and structural-basis Fourier decoder.

    Parameters
    ----------
    shape
        :class:`ModelShape`.

    Attributes
    ----------
    basis
        ``(P, 2, K+1)`` parameter (real, imaginary parts); ``basis[..., 0]`` is the bias
        volume ``V^(0)``.
    sigma_shell
        ``(S,)`` buffer: ``σ̄_y`` per Fourier shell (eq. 5); set with
        :meth:`set_spectral_normalisation` before training.
    power_mean
        Scalar buffer: mean data power per frequency (``|y|²``), the loss's unit.
    """

    def __init__(self, shape: ModelShape):
        super().__init__()
        shape.validate()
        self.shape = shape
        d = shape.box_size
        lookup = build_half_grid(d, radius=shape.radius)
        self.register_buffer("lookup_index", lookup.index, persistent=False)
        self.register_buffer("lookup_sign", lookup.sign, persistent=False)
        self.register_buffer("lookup_coords", lookup.coords, persistent=False)
        self._lookup_radius, self._lookup_offset = lookup.radius, lookup.offset
        pts = build_slice_points(d, radius=shape.radius)
        self.register_buffer("point_freqs", pts.freqs, persistent=False)  # (Q, 2)
        self.register_buffer("point_pixels", pts.pixel_index, persistent=False)  # (Q,)
        self.register_buffer("point_weight", pts.weight, persistent=False)  # (Q,)
        shells = shell_index_2d(d).clamp(max=d // 2 + 1)
        self.register_buffer("pixel_shell", shells.reshape(-1), persistent=False)  # (D²,)
        k3 = lookup.coords.to(torch.float64).norm(dim=-1).round().to(torch.int64).clamp(max=d // 2 + 1)
        self.register_buffer("voxel_shell", k3, persistent=False)  # (P,)
        f = torch.arange(d, dtype=torch.float64) - d // 2
        r_pix = torch.sqrt(f[None, :] ** 2 + f[:, None] ** 2)
        disc = (r_pix < (d / 2.0 if shape.radius is None else shape.radius)).to(torch.float32)
        self.register_buffer("freq_disc", disc, persistent=False)  # (D, D)
        mask = (r_pix < shape.mask_radius * d / 2.0).reshape(-1)
        self.register_buffer("mask_pixels", torch.nonzero(mask).squeeze(1), persistent=False)  # (M,)
        self.register_buffer("sigma_shell", torch.ones(d // 2 + 2))
        self.register_buffer("power_mean", torch.tensor(1.0))
        k1 = shape.n_basis + 1
        basis = torch.zeros(lookup.n_stored, 2, k1)
        basis[..., 1:] = 0.01 * torch.randn(lookup.n_stored, 2, shape.n_basis)
        self.basis = nn.Parameter(basis)
        self.encoder = ResidualMLP(int(self.mask_pixels.numel()), shape.enc_dim, 2 * shape.zdim, shape.enc_blocks)
        self.weights_net = ResidualMLP(shape.zdim, shape.dec_dim, shape.n_basis, shape.dec_blocks)

    # ------------------------------------------------------------------ helpers
    @property
    def lookup(self) -> HalfGridLookup:
        return HalfGridLookup(radius=self._lookup_radius, coords=self.lookup_coords, index=self.lookup_index,
                              sign=self.lookup_sign, offset=self._lookup_offset)

    @property
    def n_points(self) -> int:
        """``Q``: image frequencies in the loss (half-disc)."""
        return int(self.point_pixels.numel())

    def config_dict(self) -> dict:
        return asdict(self.shape)

    def set_spectral_normalisation(self, sigma_shell: torch.Tensor, power_mean: float) -> None:
        """Store ``σ̄_y`` per shell (eq. 5) and the mean power per frequency."""
        if sigma_shell.shape != self.sigma_shell.shape:
            raise ValueError(f"sigma_shell must have shape {tuple(self.sigma_shell.shape)}, got {tuple(sigma_shell.shape)}")
        self.sigma_shell.copy_(sigma_shell.to(self.sigma_shell))
        self.power_mean.fill_(float(power_mean))

    # ------------------------------------------------------------------ data side
    def preprocess(self, images: torch.Tensor, shifts_px: torch.Tensor | None = None):
        """Centre, transform and spectrally normalise images.

        Parameters
        ----------
        images
            ``(B, D, D)`` real images.
        shifts_px
            ``(B, 2)`` RELION origin shifts in pixels (``shifts_a / apix``) or ``None``: the
            particle is re-centred by translating the image by ``+shift`` (docs/design.md, "Poses").

        Returns
        -------
        y_points
            ``(B, Q)`` complex ``y / σ̄_y`` at the half-disc frequencies.
        encoder_input
            ``(B, M)`` real-space masked pixels of the standardised (or, with
            ``enc_whiten``, spectrally normalised) image.
        """
        d = self.shape.box_size
        spectra = fft2_centered(images)  # (B, D, D)
        if shifts_px is not None:
            spectra = phase_shift_2d(spectra, shifts_px.to(images.dtype))
        sigma_pix = self.sigma_shell[self.pixel_shell].reshape(d, d)  # (D, D)
        whitened = spectra * (self.freq_disc / sigma_pix)  # (B, D, D)
        y_points = whitened.reshape(images.shape[0], -1)[:, self.point_pixels]  # (B, Q)
        if self.shape.enc_whiten:
            enc_spectra = whitened
        else:  # standardised: unit mean power per frequency ⇒ unit variance per pixel
            enc_spectra = spectra * (self.freq_disc / torch.sqrt(self.power_mean))
        real = ifft2_centered(enc_spectra).real * d  # (B, D, D), ~unit variance per pixel
        encoder_input = real.reshape(images.shape[0], -1)[:, self.mask_pixels]  # (B, M)
        return y_points, encoder_input

    def ctf_at_points(self, ctf_2d: torch.Tensor) -> torch.Tensor:
        """``(B, D, D)`` centred CTF → ``(B, Q)`` at the loss frequencies."""
        return ctf_2d.reshape(ctf_2d.shape[0], -1)[:, self.point_pixels]

    # ------------------------------------------------------------------ model side
    def encode(self, encoder_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, M)`` → ``μ (B, zdim)``, ``log σ² (B, zdim)``."""
        out = self.encoder(encoder_input)
        mu, logvar = out.chunk(2, dim=-1)
        return mu, logvar.clamp(-20.0, 10.0)

    def basis_weights(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, zdim)`` → ``(B, K+1)`` weights ``[1, s(z)]`` of eq. 3."""
        s = self.weights_net(z)
        return torch.cat([torch.ones_like(s[:, :1]), s], dim=1)

    def slices(self, z: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
        """``H(φ) g(z)`` at the half-disc frequencies: ``(B, Q)`` complex (normalised units)."""
        coords = rotate_slice_points(self.point_freqs, rotations.to(self.point_freqs.dtype))  # (B, Q, 3)
        return extract_basis_slices(self.basis, self.basis_weights(z), coords, self.lookup)

    def loss(
        self,
        y_points: torch.Tensor,
        encoder_input: torch.Tensor,
        rotations: torch.Tensor,
        ctf_points: torch.Tensor | None,
        *,
        beta: float = 1.0,
        prior_scale: float = 0.0,
        generator: torch.Generator | None = None,
        eps: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Negative ELBO per frequency (eq. 4, plus ``β · KL``; the prior term only when
        ``prior_scale`` > 0).

        Parameters
        ----------
        y_points, encoder_input
            From :meth:`preprocess`.
        rotations
            ``(B, 3, 3)`` poses.
        ctf_points
            ``(B, Q)`` CTF at the loss frequencies (:meth:`ctf_at_points`) or ``None``.
        beta
            KL weight.
        prior_scale
            Weight of the log-prior ``λ P`` of eq. 4 per image: ``P = Σ_k ‖V^(k)‖²`` over the
            structural basis volumes (not the bias ``V^(0)``), in σ̄_y-normalised units and
            per frequency like the data term — a Gaussian prior that pulls coefficients no
            image consistently asks for back to zero. The trainer passes
            ``prior_weight / N`` so the prior counts once per pass over the data.
        generator
            Random generator of the reparameterisation noise (reproducible runs).
        eps
            ``(B, zdim)`` reparameterisation noise to use instead of drawing it (under
            torchrun: this process's rows of the noise of the whole global batch,
            ``stages/distributed.py``).

        Returns
        -------
        dict with ``loss`` (scalar to minimise), ``reconstruction`` and ``kl`` (batch means),
        ``mu`` and ``logvar`` ``(B, zdim)`` (detached).
        """
        mu, logvar = self.encode(encoder_input)
        if eps is None:
            eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        z = mu + torch.exp(0.5 * logvar) * eps
        pred = self.slices(z, rotations)  # (B, Q)
        if ctf_points is not None:
            pred = pred * ctf_points
        sigma2 = self.sigma_shell[self.pixel_shell[self.point_pixels]] ** 2  # (Q,) (1 − λ) ∝ σ̄²
        weight = self.point_weight * sigma2 / self.power_mean  # (Q,)
        total_weight = self.point_weight.sum()
        rec = ((y_points - pred).abs().pow(2) * weight).sum(-1) / total_weight  # (B,)
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(-1)  # (B,)
        loss = rec.mean() + beta * kl.mean() / total_weight
        if prior_scale:
            loss = loss + prior_scale * self.basis[..., 1:].pow(2).sum() / total_weight
        return {"loss": loss, "reconstruction": rec.mean().detach(), "kl": kl.mean().detach(),
                "mu": mu.detach(), "logvar": logvar.detach()}

    # ------------------------------------------------------------------ volumes
    @torch.no_grad()
    def decode_fourier(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, zdim)`` → ``(B, P)`` complex half-grid coefficients of ``g(z) · σ̄_y``."""
        w = self.basis_weights(z.to(self.basis.dtype))  # (B, K+1)
        coeffs = torch.einsum("prk,bk->bpr", self.basis, w)  # (B, P, 2)
        scale = self.sigma_shell[self.voxel_shell]  # (P,)
        return torch.view_as_complex(coeffs.contiguous()) * scale

    @torch.no_grad()
    def decode_volume(self, z: torch.Tensor, *, batch: int = 8) -> torch.Tensor:
        """Real-space volumes at latent points ``z`` (inverse FFT of the full Hermitian grid).

        Parameters
        ----------
        z
            ``(B, zdim)`` (or ``(zdim,)``) latent points.
        batch
            Volumes assembled per inverse FFT.

        Returns
        -------
        ``(B, D, D, D)`` float32 volumes indexed ``[z, y, x]`` (``(D, D, D)`` for a single
        ``z``), in the units of the images: their projections match the data.
        """
        single = z.dim() == 1
        z = z.reshape(-1, self.shape.zdim).to(self.basis.device)
        d = self.shape.box_size
        out = []
        for start in range(0, z.shape[0], max(1, batch)):
            coeffs = self.decode_fourier(z[start:start + batch])  # (b, P)
            vol_ft = basis_to_volume(coeffs, self.lookup, d)  # (b, D, D, D)
            out.append(ifft3_centered(vol_ft).real.to(torch.float32))
        vols = torch.cat(out, 0)
        return vols[0] if single else vols
