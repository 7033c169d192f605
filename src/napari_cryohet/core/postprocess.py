"""Postprocessing of two half maps, after RELION's ``relion_postprocess``.

Steps (Silvera Coeff 2025, §2.7 for the FSC and the 0.143 threshold, §4.1 for the workflow):

1. a soft mask from the low-pass-filtered average map (:func:`soft_mask`): threshold,
   extend by ``extend_px``, raised-cosine edge of ``soft_edge_px`` (relion_mask_create);
2. FSC of the unmasked and of the masked half maps, and the masked FSC of half maps
   whose phases are randomised beyond the frequency where the unmasked FSC first drops
   below 0.8 (:func:`masked_fsc`). The mask's own correlation is removed with
   ``FSC_true = (FSC_masked − FSC_rand) / (1 − FSC_rand)`` beyond that frequency
   (Chen et al. 2013, Ultramicroscopy 135:24, "High-resolution noise substitution");
3. the resolution at FSC_true = 0.143 (:func:`napari_cryohet.core.fsc.resolution_at`);
4. FSC weighting of the average map by ``sqrt(2·FSC/(1+FSC))`` (Rosenthal & Henderson
   2003, J. Mol. Biol. 333:721, eq. for ``C_ref``) and sharpening by a B-factor fitted to
   a Guinier plot (``ln|F|`` against ``s² = 1/d²`` between 10 Å and the resolution,
   Rosenthal & Henderson 2003), then a low-pass at the resolution.

Conventions: volumes are ``(D, D, D)`` real, indexed ``[z, y, x]``, centred FFTs
(:mod:`napari_cryohet.core.fft`); shell ``i`` holds the voxels whose radius (in Fourier
voxels) rounds to ``i`` and has frequency ``i/D`` cycles/voxel, as in
:func:`napari_cryohet.core.fsc.fourier_shell_correlation`. ``b_factor`` is the Guinier
decay ``B`` (Å², positive for a blurred map: ``|F(s)| ∝ exp(−B s²/4)``); sharpening
multiplies by ``exp(+B s²/4)`` (RELION prints this as a B-factor of ``−B``).

Masks are built with :func:`scipy.ndimage.distance_transform_edt` (well kept and exact;
the rest is torch, on the maps' device).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from napari_cryohet.core.fft import fft3_centered, ifft3_centered
from napari_cryohet.core.fsc import (
    fourier_radius_px,
    fourier_shell_correlation,
    resolution_at,
    shell_index,
)

__all__ = [
    "FscCurves",
    "PostprocessResult",
    "soft_mask",
    "randomise_phases",
    "masked_fsc",
    "fsc_weighted_filter",
    "fit_b_factor",
    "sharpen",
    "postprocess",
    "resolution_at",
]


@dataclass
class FscCurves:
    """FSC curves of a pair of half maps (all ``(S,)`` float64 numpy, ``S = D//2 + 1``).

    Attributes
    ----------
    freq_per_px
        Shell frequencies ``i / D`` in cycles/voxel.
    unmasked, masked, randomised
        FSC of the raw half maps, of the masked half maps, and of the masked half maps
        with phases randomised from shell ``randomise_from_shell`` on.
    corrected
        ``FSC_true``: ``masked`` below ``randomise_from_shell``, beyond it
        ``(masked − randomised) / (1 − randomised)`` (Chen et al. 2013).
    randomise_from_shell
        First randomised shell.
    """

    freq_per_px: np.ndarray
    unmasked: np.ndarray
    masked: np.ndarray
    randomised: np.ndarray
    corrected: np.ndarray
    randomise_from_shell: int


@dataclass
class PostprocessResult:
    """What :func:`postprocess` returns.

    Attributes
    ----------
    curves
        :class:`FscCurves` of the half maps.
    resolution_a
        Resolution in Å where ``curves.corrected`` first drops below 0.143.
    b_factor
        Guinier decay ``B`` in Å² used for sharpening (0 when sharpening was off).
    map
        ``(D, D, D)`` FSC-weighted, sharpened, low-passed average map (unmasked).
    mask
        ``(D, D, D)`` soft mask in [0, 1] used for the masked FSC.
    """

    curves: FscCurves
    resolution_a: float
    b_factor: float
    map: torch.Tensor
    mask: torch.Tensor


def _as_volume(x, device=None) -> torch.Tensor:
    v = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if v.dim() != 3 or len(set(v.shape)) != 1:
        raise ValueError(f"volumes must be cubic (D, D, D), got {tuple(v.shape)}")
    return v.to(device=device if device is not None else v.device, dtype=torch.float64)


def _per_shell(values, d: int, device) -> torch.Tensor:
    """``(D, D, D)`` voxel values of an ``(S,)`` per-shell curve; 0 beyond the last shell."""
    curve = torch.as_tensor(np.asarray(values.cpu() if isinstance(values, torch.Tensor) else values),
                            dtype=torch.float64, device=device)
    shell = shell_index(d, device)
    inside = shell < curve.shape[0]
    return torch.where(inside, curve[shell.clamp(max=curve.shape[0] - 1)], torch.zeros((), dtype=torch.float64,
                                                                                       device=device))


def _lowpass(volume: torch.Tensor, *, apix: float, resolution_a: float, edge_px: float = 2.0) -> torch.Tensor:
    """Raised-cosine low-pass to ``resolution_a`` (edge ``edge_px`` Fourier voxels wide)."""
    d = volume.shape[-1]
    cut = d * float(apix) / float(resolution_a)  # radius in Fourier voxels
    r = fourier_radius_px(d, volume.device)
    t = ((r - cut) / max(edge_px, 1e-9)).clamp(0.0, 1.0)
    filt = 0.5 * (1.0 + torch.cos(torch.pi * t))
    return ifft3_centered(fft3_centered(volume) * filt).real


def soft_mask(
    volume,
    *,
    apix: float,
    threshold: float | None = None,
    extend_px: float = 3.0,
    soft_edge_px: float = 6.0,
    lowpass_a: float = 15.0,
) -> torch.Tensor:
    """Soft mask from a map, as relion_mask_create.

    Parameters
    ----------
    volume
        ``(D, D, D)`` map (e.g. the average of the half maps).
    apix
        Voxel size in Å.
    threshold
        Density threshold of the low-pass-filtered map; ``None`` takes 10 % of its maximum.
    extend_px
        The binary mask is grown by this many voxels.
    soft_edge_px
        Width of the raised-cosine edge beyond the grown mask, in voxels.
    lowpass_a
        Low-pass resolution in Å applied before thresholding (never finer than Nyquist).

    Returns
    -------
    ``(D, D, D)`` float64 tensor in [0, 1] on the volume's device: 1 inside the grown
    mask, ``½(1 + cos(π·(dist − extend)/soft_edge))`` in the edge, 0 beyond.
    """
    v = _as_volume(volume)
    if float(apix) <= 0:
        raise ValueError(f"apix must be positive, got {apix}")
    if extend_px < 0 or soft_edge_px < 0:
        raise ValueError(f"extend_px and soft_edge_px must be ≥ 0, got {extend_px}, {soft_edge_px}")
    low = _lowpass(v, apix=apix, resolution_a=max(float(lowpass_a), 2.0 * float(apix)))
    thr = 0.1 * float(low.max()) if threshold is None else float(threshold)
    binary = (low > thr).cpu().numpy()
    if not binary.any():
        raise ValueError(f"soft_mask: no voxel of the low-pass-filtered map is above the threshold {thr:g}")
    dist = ndimage.distance_transform_edt(~binary)  # 0 inside, distance (voxels) to the mask outside
    dist = torch.as_tensor(dist, dtype=torch.float64, device=v.device)
    t = ((dist - float(extend_px)) / max(float(soft_edge_px), 1e-9)).clamp(0.0, 1.0)
    mask = 0.5 * (1.0 + torch.cos(torch.pi * t))
    if soft_edge_px == 0:
        mask = (dist <= float(extend_px)).to(torch.float64)
    return mask


def randomise_phases(volume, *, from_shell: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The volume with Fourier phases replaced by random ones from shell ``from_shell`` on.

    The random phases are those of the transform of real white noise, so they are uniform
    and Hermitian-symmetric: the result is real and keeps every amplitude ``|F(k)|``.

    Parameters
    ----------
    volume
        ``(D, D, D)`` real volume.
    from_shell
        First randomised shell (rounded radius in Fourier voxels).
    generator
        Torch generator (CPU) for reproducible phases.

    Returns
    -------
    ``(D, D, D)`` float64 tensor on the volume's device.
    """
    v = _as_volume(volume)
    d = v.shape[-1]
    noise = torch.randn(d, d, d, generator=generator, dtype=torch.float64).to(v.device)
    phase = torch.angle(fft3_centered(noise))
    f = fft3_centered(v)
    beyond = shell_index(d, v.device) >= int(from_shell)
    f = torch.where(beyond, torch.polar(f.abs(), phase), f)
    return ifft3_centered(f).real


def masked_fsc(
    map_a,
    map_b,
    mask,
    *,
    apix: float,
    randomise_from_a: float | None = None,
    randomise_below_fsc: float = 0.8,
    seed: int = 0,
) -> FscCurves:
    """Masked FSC corrected by phase randomisation (Chen et al. 2013; Silvera Coeff 2025, §2.7).

    Parameters
    ----------
    map_a, map_b
        ``(D, D, D)`` half maps from disjoint half sets.
    mask
        ``(D, D, D)`` soft mask in [0, 1].
    apix
        Voxel size in Å.
    randomise_from_a
        Randomise phases from this resolution (Å) on; ``None`` uses the first shell
        (after DC) where the unmasked FSC drops below ``randomise_below_fsc`` (RELION: 0.8).
    seed
        Seed of the random phases (each half map gets its own).

    Returns
    -------
    :class:`FscCurves`.
    """
    a, b = _as_volume(map_a), _as_volume(map_b)
    m = _as_volume(mask, device=a.device)
    if a.shape != b.shape or a.shape != m.shape:
        raise ValueError(f"map_a, map_b and mask must have one shape, got {tuple(a.shape)}, {tuple(b.shape)}, "
                         f"{tuple(m.shape)}")
    b = b.to(a.device)
    d = a.shape[-1]
    freq, unmasked = fourier_shell_correlation(a, b)
    _, masked = fourier_shell_correlation(a * m, b * m)
    n_shells = freq.shape[0]
    if randomise_from_a is not None:
        if float(randomise_from_a) <= 0:
            raise ValueError(f"randomise_from_a must be positive, got {randomise_from_a}")
        cut = int(round(d * float(apix) / float(randomise_from_a)))
    else:
        below = torch.nonzero(unmasked[1:] < float(randomise_below_fsc)).flatten()
        cut = int(below[0]) + 1 if len(below) else n_shells
    cut = max(1, min(cut, n_shells))
    g = torch.Generator().manual_seed(int(seed))
    ra = randomise_phases(a, from_shell=cut, generator=g)
    rb = randomise_phases(b, from_shell=cut, generator=g)
    _, rand = fourier_shell_correlation(ra * m, rb * m)
    shell = torch.arange(n_shells, device=rand.device)
    denom = 1.0 - rand
    ok = (shell >= cut) & (denom.abs() > 1e-12)
    corrected = torch.where(ok, (masked - rand) / torch.where(ok, denom, torch.ones_like(denom)), masked)
    return FscCurves(
        freq_per_px=freq.cpu().numpy(), unmasked=unmasked.cpu().numpy(), masked=masked.cpu().numpy(),
        randomised=rand.cpu().numpy(), corrected=corrected.cpu().numpy(), randomise_from_shell=cut,
    )


def fsc_weighted_filter(volume, fsc) -> torch.Tensor:
    """Weight each shell by ``sqrt(2·FSC / (1 + FSC))`` (Rosenthal & Henderson 2003).

    ``fsc`` is the half-map FSC per shell, ``(D//2 + 1,)``; negative values weigh 0, as do
    the corners beyond the last shell. This is the expected correlation of the full map
    with the truth, ``C_ref``.
    """
    v = _as_volume(volume)
    c = np.clip(np.asarray(fsc.cpu() if isinstance(fsc, torch.Tensor) else fsc, dtype=np.float64), 0.0, 1.0)
    weights = np.sqrt(2.0 * c / (1.0 + c))
    return ifft3_centered(fft3_centered(v) * _per_shell(weights, v.shape[-1], v.device)).real


def _guinier(volume: torch.Tensor, apix: float):
    """``(s²  in 1/Å², ln of the mean amplitude)`` per shell (shells 1 … D/2)."""
    d = volume.shape[-1]
    amp = fft3_centered(volume).abs().reshape(-1)
    shell = shell_index(d, volume.device).reshape(-1)
    n_shells = d // 2 + 1
    keep = shell < n_shells
    total = torch.zeros(n_shells, dtype=torch.float64, device=volume.device).index_add_(0, shell[keep], amp[keep])
    count = torch.zeros_like(total).index_add_(0, shell[keep], torch.ones_like(amp[keep]))
    mean = (total / count.clamp(min=1)).cpu().numpy()
    s2 = (np.arange(n_shells) / (d * float(apix))) ** 2
    return s2[1:], np.log(np.maximum(mean[1:], 1e-300))


def fit_b_factor(volume, *, apix: float, high_res_a: float, low_res_a: float = 10.0) -> float:
    """Guinier B-factor: ``−4 × slope`` of ``ln ⟨|F|⟩_shell`` against ``s²`` (Rosenthal & Henderson 2003).

    Parameters
    ----------
    volume
        ``(D, D, D)`` map.
    apix
        Voxel size in Å.
    high_res_a, low_res_a
        The fit uses the shells with ``low_res_a ≥ d ≥ high_res_a`` (RELION: 10 Å to the
        FSC resolution).

    Returns
    -------
    ``B`` in Å² (positive for a map whose amplitudes fall off as ``exp(−B s²/4)``).

    Raises
    ------
    ValueError
        Fewer than 3 shells in the fitting range.
    """
    v = _as_volume(volume)
    s2, log_amp = _guinier(v, apix)
    sel = (s2 >= 1.0 / float(low_res_a) ** 2) & (s2 <= 1.0 / float(high_res_a) ** 2)
    if int(sel.sum()) < 3:
        raise ValueError(
            f"Guinier fit between {low_res_a} Å and {high_res_a} Å has {int(sel.sum())} shells (need ≥ 3) "
            f"at apix {apix} Å and D = {v.shape[-1]}"
        )
    slope = np.polyfit(s2[sel], log_amp[sel], 1)[0]
    return float(-4.0 * slope)


def sharpen(
    volume,
    *,
    apix: float,
    fsc,
    b_factor: float | None = None,
    resolution_a: float | None = None,
    low_res_a: float = 10.0,
) -> tuple[torch.Tensor, float]:
    """FSC-weight, sharpen by ``exp(B s²/4)`` and low-pass at the resolution.

    Parameters
    ----------
    volume
        ``(D, D, D)`` full (average) map.
    apix
        Voxel size in Å.
    fsc
        ``(D//2 + 1,)`` corrected half-map FSC.
    b_factor
        Guinier ``B`` in Å² to undo; ``None`` fits it to the FSC-weighted map between
        ``low_res_a`` and ``resolution_a`` (RELION's order); 0 turns sharpening off.
    resolution_a
        Low-pass resolution; ``None`` is the FSC = 0.143 resolution of ``fsc``.

    Returns
    -------
    sharpened
        ``(D, D, D)`` float64 tensor.
    b_factor
        The ``B`` applied. When the automatic fit is impossible (fewer than 3 shells
        between ``low_res_a`` and the resolution) or gives ``B < 0``, 0 is applied.
    """
    v = _as_volume(volume)
    d = v.shape[-1]
    fsc_np = np.asarray(fsc.cpu() if isinstance(fsc, torch.Tensor) else fsc, dtype=np.float64)
    if resolution_a is None:
        freq = np.arange(len(fsc_np)) / d
        resolution_a = resolution_at(freq, fsc_np, apix=apix, threshold=0.143)
    resolution_a = max(float(resolution_a), 2.0 * float(apix))
    weighted = fsc_weighted_filter(v, fsc_np)
    if b_factor is None:
        try:
            b_factor = max(0.0, fit_b_factor(weighted, apix=apix, high_res_a=resolution_a, low_res_a=low_res_a))
        except ValueError:
            b_factor = 0.0
    s2 = (fourier_radius_px(d, v.device) / (d * float(apix))) ** 2
    boosted = ifft3_centered(fft3_centered(weighted) * torch.exp(float(b_factor) * s2 / 4.0)).real
    return _lowpass(boosted, apix=apix, resolution_a=resolution_a), float(b_factor)


def postprocess(
    map_a,
    map_b,
    *,
    apix: float,
    mask=None,
    b_factor: float | None = None,
    randomise_from_a: float | None = None,
    seed: int = 0,
) -> PostprocessResult:
    """RELION-style postprocessing of two half maps (see the module docstring).

    Parameters
    ----------
    map_a, map_b
        ``(D, D, D)`` gold-standard half maps.
    apix
        Voxel size in Å.
    mask
        ``(D, D, D)`` soft mask; ``None`` builds one with :func:`soft_mask` from the average.
    b_factor
        ``None``: automatic Guinier fit; a number: that ``B``; 0: no sharpening.
    randomise_from_a, seed
        As :func:`masked_fsc`.

    Returns
    -------
    :class:`PostprocessResult`.
    """
    a, b = _as_volume(map_a), _as_volume(map_b)
    b = b.to(a.device)
    average = 0.5 * (a + b)
    m = soft_mask(average, apix=apix) if mask is None else _as_volume(mask, device=a.device)
    curves = masked_fsc(a, b, m, apix=apix, randomise_from_a=randomise_from_a, seed=seed)
    res = resolution_at(curves.freq_per_px, curves.corrected, apix=apix, threshold=0.143)
    sharpened, b_used = sharpen(average, apix=apix, fsc=curves.corrected, b_factor=b_factor,
                                resolution_a=res if np.isfinite(res) else None)
    return PostprocessResult(curves=curves, resolution_a=float(res), b_factor=b_used, map=sharpened, mask=m)
