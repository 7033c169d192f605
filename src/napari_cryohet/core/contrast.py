"""Which way is the contrast? A check that particle images show positive density as positive.

Every analysis here models an image as ``CTF · projection + noise`` with RELION's CTF sign
(:mod:`napari_cryohet.core.ctf`): positive density, after the CTF, is positive at low
frequency — white particles on a dark background. Data whose contrast is inverted with
respect to that (dark particles: some ASPIRE-simulated stacks, some pipelines'
extractions, cryoSPARC particles with ``blob/sign = −1`` handled elsewhere) load without
any visible fault, yet every stage then fits inverted density: the VAE decodes a map
correlated −0.7 with the truth.

The check (:func:`check_contrast`) is the two-dimensional form of "the sign of a quick
reconstruction's mean density inside the particle". Multiplying each image's Fourier
transform by its own CTF (a matched filter) turns the signal into ``CTF² · projection``,
whose weights are all non-negative whatever the defocus; averaged over many randomly
oriented particles, the filtered images are brighter in the middle of the box, where the
particle is, than at its edge — when, and only when, the contrast is as the model
assumes. Per image and per disc radius ρ the difference is

    s_i(ρ) = mean(y_i over the central disc r < ρ) − mean(y_i over the edge ring r > 0.4 D),
    y_i = Re F⁻¹[ CTF_i · F[(x_i − m_i) / σ_i] ],

with ``m_i`` and ``σ_i`` the mean and standard deviation of image ``i``'s edge ring (its
noise). Which radius shows the particle best depends on its size and on the CTF's first
lobe (a compact Cα model is brightest within D/16, a box-filling map within D/4), so the
statistic sums the four radii D/16, D/10, D/6, D/4, each scaled to unit spread over the
particles: ``s_i = Σ_ρ s_i(ρ) / std(s(ρ))`` — one test, not four. Over ``n`` particles,
``z = mean(s) / (std(s) / √n)`` is a t-statistic with no assumption about the
signal-to-noise ratio: on the simulator's datasets (512 particles, SNR 0.003–0.05) it is
+16 to +80, and as negative on the same images inverted: ``z ≥ +4`` says the contrast is as expected,
``z ≤ −4`` says it is inverted, anything between is left undecided. No poses are needed
(so the check also runs on data before any refinement). Without CTF parameters the images
are taken as plain projections (CTF = 1), as the stages then take them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from napari_cryohet.core.ctf import compute_ctf_2d
from napari_cryohet.core.fft import fft2_centered, fourier_crop, ifft2_centered, radial_frequency_2d

__all__ = ["ContrastCheck", "check_contrast", "contrast_statistics", "warn_if_inverted", "Z_DECISIVE",
           "DISC_RADII"]

#: |z| at or above which the check decides (a 4-σ t-statistic: about 1 in 30 000 by chance).
Z_DECISIVE = 4.0
#: Radii of the central discs, as fractions of the box edge D.
DISC_RADII = (1 / 16, 1 / 10, 1 / 6, 1 / 4)
_MAX_BOX = 128  # images are Fourier-cropped to at most this many pixels (the check is low-resolution)


@dataclass(frozen=True)
class ContrastCheck:
    """The outcome of :func:`check_contrast`.

    Attributes
    ----------
    verdict
        ``"expected"`` (positive density is positive), ``"inverted"`` or ``"undecided"``.
    z
        ``mean(s) / (std(s)/√n)``: positive when the particle is brighter than the box edge.
    mean_difference
        ``mean(s(ρ))`` averaged over the radii, in units of the images' noise standard
        deviation (how much brighter the middle is than the edge).
    n_particles
        How many particles were used.
    used_ctf
        Whether CTF parameters were applied (``False``: images taken as plain projections).
    """

    verdict: str
    z: float
    mean_difference: float
    n_particles: int
    used_ctf: bool

    @property
    def evidence(self) -> str:
        """One sentence a user can judge: what was measured, on how many particles."""
        ctf = "CTF-weighted" if self.used_ctf else "(no CTF known)"
        side = "brighter" if self.z > 0 else "darker"
        return (f"the {ctf} images of {self.n_particles} particles are {side} in the middle of the box than at "
                f"its edge by {abs(self.mean_difference):.3g} noise standard deviations on average "
                f"(t = {self.z:+.1f}; |t| ≥ {Z_DECISIVE:g} decides)")


def contrast_statistics(images: np.ndarray, apix: float, ctf: dict[str, np.ndarray] | None = None,
                        *, device: str | torch.device = "cpu") -> np.ndarray:
    """``(n, 4)`` per-image differences ``s_i(ρ)`` (module docstring) of ``(n, D, D)`` images, one column per radius of :data:`DISC_RADII`.

    ``ctf`` maps :data:`~napari_cryohet.core.ctf.CTF_KEYS` to ``(n,)`` arrays, or is ``None``
    (CTF = 1). Images larger than 128 px are Fourier-cropped to 128 px first (the
    statistic lives at low resolution).
    """
    x = torch.as_tensor(np.asarray(images, dtype=np.float32), device=device)  # (n, D, D)
    d = x.shape[-1]
    # distance of each pixel from the box centre (pixel D//2) as a fraction of the box edge: the
    # centred grid of radial_frequency_2d, read in real space
    edge = radial_frequency_2d(d, device=device) > 0.4
    m = x[:, edge].mean(1)
    s = x[:, edge].std(1).clamp_min(torch.finfo(torch.float32).tiny)
    x = (x - m[:, None, None]) / s[:, None, None]
    spectra = fft2_centered(x)
    d_out, apix_out = d, float(apix)
    if d > _MAX_BOX:
        d_out, apix_out = _MAX_BOX, float(apix) * d / _MAX_BOX
        spectra = fourier_crop(spectra, d_out)
    if ctf is not None:
        params = {k: torch.as_tensor(np.asarray(v, dtype=np.float32), device=device) for k, v in ctf.items()}
        spectra = spectra * compute_ctf_2d(d_out, apix_out, **params, device=device)
    y = ifft2_centered(spectra).real  # (n, d_out, d_out)
    r = radial_frequency_2d(d_out, device=device)
    edge_mean = y[:, r > 0.4].mean(1)
    out = torch.stack([y[:, r < rho].mean(1) - edge_mean for rho in DISC_RADII], 1)
    return out.cpu().numpy().astype(np.float64)


def check_contrast(dataset, *, n_particles: int = 512, device: str | torch.device = "cpu") -> ContrastCheck:
    """Decide whether ``dataset``'s images show positive density as positive (module docstring).

    Reads ``n_particles`` images spread evenly over the dataset (all when fewer), so it
    costs one pass over at most 512 images.

    Parameters
    ----------
    dataset
        A :class:`~napari_cryohet.core.particle_dataset.ParticleDataset` (images, ``apix``,
        optional ``ctf``).
    """
    n = len(dataset)
    if n == 0:
        raise ValueError("check_contrast: the dataset has no particles")
    idx = np.unique(np.linspace(0, n - 1, min(n, int(n_particles))).round().astype(np.int64))
    images = dataset.get_images(idx)
    ctf = None if dataset.ctf is None else {k: np.asarray(v)[idx] for k, v in dataset.ctf.as_dict().items()}
    per_radius = contrast_statistics(images, dataset.apix, ctf, device=device)  # (k, 4)
    k = len(per_radius)
    z = 0.0
    if k > 2:
        spread = per_radius.std(0, ddof=1)
        if (spread > 0).all():
            s = (per_radius / spread).sum(1)  # (k,)
            z = float(s.mean() / (s.std(ddof=1) / np.sqrt(k)))
    verdict = "expected" if z >= Z_DECISIVE else "inverted" if z <= -Z_DECISIVE else "undecided"
    return ContrastCheck(verdict=verdict, z=z, mean_difference=float(per_radius.mean()), n_particles=k,
                         used_ctf=ctf is not None)


def warn_if_inverted(dataset, *, source: str | None = None, n_particles: int = 512) -> ContrastCheck:
    """Run :func:`check_contrast` on ``dataset`` and warn, with the evidence, when it looks inverted.

    The outcome is also kept in ``dataset.meta["contrast_check"]`` so that a viewer can show
    it without reading the images again. ``dataset.meta["contrast_inverted"]`` (set by
    :func:`~napari_cryohet.io.load_particles.load_dataset`) says whether the images are
    already being multiplied by −1; the advice names the setting to change either way.
    """
    result = check_contrast(dataset, n_particles=n_particles)
    dataset.meta["contrast_check"] = result
    if result.verdict == "inverted":
        where = source or dataset.meta.get("source") or "these particles"
        if dataset.meta.get("contrast_inverted"):
            advice = ("they were opened with 'contrast inverted', which multiplies them by −1: open them without "
                      "it (cryohet: leave out --contrast-inverted)")
        else:
            advice = ("if their density is dark on a light background, open them with 'contrast inverted' "
                      "(cryohet: --contrast-inverted; Python: load_dataset(..., contrast_inverted=True)); "
                      "otherwise every stage fits density of the wrong sign")
        warnings.warn(f"{where}: the particle images look inverted: {result.evidence}. {advice}", stacklevel=2)
    return result
