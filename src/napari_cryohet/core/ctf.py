"""Contrast transfer function, RELION convention (the one place it is defined).

Convention
----------
With defocus ``Δf(θ) = (Δf_u + Δf_v)/2 + (Δf_u − Δf_v)/2 · cos 2(θ − α)`` in Å (positive =
underfocus; ``θ`` the direction of the frequency vector measured from the x axis, ``α`` =
``defocus_angle_rad`` the direction of ``Δf_u``), relativistic wavelength ``λ`` in Å,
``Cs`` in Å, additional phase shift ``φ`` and amplitude contrast ``Q0``::

    χ(k)   = π λ Δf(θ) k² − (π/2) Cs λ³ k⁴ + φ + atan(Q0 / sqrt(1 − Q0²))
    CTF(k) = sin χ(k) · exp(−B k² / 4)                      (k in cycles/Å)

This is RELION's ``CTF::getCTF`` (``src/ctf.h``) term for term: RELION stores the
defocus *negated* (``defocus_average = −(ΔfU + ΔfV)/2``) and returns
``−sin(K1·Δf_R·k² + K2·k⁴ − K5 − K3)`` with ``K1 = πλ``, ``K2 = (π/2)·Cs·λ³``,
``K3 = atan(Q0/√(1−Q0²))``, ``K5 = φ``, ``Δf_R = −Δf``, which is ``sin χ`` above; the
B-factor envelope is RELION's ``exp(K4 k²)`` with ``K4 = −B/4``. It is also torch-ctf's
``−sin(−πλΔf k² + (π/2)Csλ³k⁴ − φ − K3)`` (the test compares against it).

**Sign**: at ``k = 0`` the CTF equals ``sin(φ + K3)``, i.e. ``+Q0`` without phase shift,
and it is *positive* at low frequency in underfocus. Eq. 1.2 of 000_8d73a95ce4c6e7ab.txt
(and cryoDRGN's ``compute_ctf``) carries the opposite overall sign (``−Q0`` at ``k = 0``);
RELION's sign is the one used here, so a simulated stack has RELION's (white-particle)
contrast: ``image = CTF · projection`` keeps positive density positive at low frequency.
"""

from __future__ import annotations

import math

import torch

from napari_cryohet.core.fft import fftfreq_grid_2d

__all__ = [
    "electron_wavelength_a",
    "compute_ctf_2d",
    "compute_ctf_1d",
    "CTF_KEYS",
]

#: Keyword names of :func:`compute_ctf_2d`'s parameters (= fields of ``core.particle_dataset.CTFParams``).
CTF_KEYS = (
    "defocus_u_a",
    "defocus_v_a",
    "defocus_angle_rad",
    "voltage_kv",
    "cs_mm",
    "amplitude_contrast",
    "phase_shift_rad",
    "bfactor_a2",
)


def electron_wavelength_a(voltage_kv: float | torch.Tensor) -> float | torch.Tensor:
    """Relativistic electron wavelength in Å.

    ``λ = 12.2643247 / sqrt(V (1 + 0.978466e-6 V))`` with ``V`` the accelerating voltage in
    volts (RELION ``src/ctf.cpp``). 200 kV → 0.02508 Å, 300 kV → 0.01969 Å.

    Parameters
    ----------
    voltage_kv
        Accelerating voltage in kV (float or tensor of any shape).

    Returns
    -------
    Wavelength in Å, a float for a float input, else a tensor of the input's shape.
    """
    if isinstance(voltage_kv, torch.Tensor):
        volts = voltage_kv * 1e3
        return 12.2643247 / torch.sqrt(volts * (1.0 + 0.978466e-6 * volts))
    volts = float(voltage_kv) * 1e3
    if volts <= 0:
        raise ValueError(f"voltage_kv must be positive, got {voltage_kv}")
    return 12.2643247 / math.sqrt(volts * (1.0 + 0.978466e-6 * volts))


def _as_tensors(params: dict, device, dtype) -> dict[str, torch.Tensor]:
    """Params (floats or tensors) → tensors on one device/dtype, broadcast together."""
    out = {}
    for name, value in params.items():
        if isinstance(value, torch.Tensor):
            out[name] = value.to(device=device, dtype=dtype)
        else:
            try:
                out[name] = torch.as_tensor(value, device=device, dtype=dtype)
            except (TypeError, ValueError, RuntimeError) as exc:
                raise ValueError(f"CTF parameter {name} must be a number or tensor, got {value!r}") from exc
    shape = torch.broadcast_shapes(*(t.shape for t in out.values()))
    return {k: v.expand(shape) for k, v in out.items()}


def _infer(params: dict, device) -> tuple[torch.device, torch.dtype]:
    tensors = [v for v in params.values() if isinstance(v, torch.Tensor)]
    if device is None:
        device = tensors[0].device if tensors else torch.device("cpu")
    dtype = torch.float32
    if any(t.dtype == torch.float64 for t in tensors):
        dtype = torch.float64
    return torch.device(device), dtype


def _check(p: dict[str, torch.Tensor]) -> None:
    q0 = p["amplitude_contrast"]
    if q0.numel() and (bool((q0 < 0).any()) or bool((q0 >= 1).any())):
        raise ValueError("amplitude_contrast must lie in [0, 1)")
    if p["voltage_kv"].numel() and bool((p["voltage_kv"] <= 0).any()):
        raise ValueError("voltage_kv must be positive")


def _ctf_from_k2(k2: torch.Tensor, defocus_a: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """``sin χ · exp(−B k²/4)`` for ``k2`` (..., F) in Å⁻² and per-batch params (..., 1)."""
    lam = electron_wavelength_a(p["voltage_kv"])
    cs_a = p["cs_mm"] * 1e7
    q0 = p["amplitude_contrast"]
    k3 = torch.atan(q0 / torch.sqrt(1.0 - q0 * q0))
    chi = torch.pi * lam * defocus_a * k2 - 0.5 * torch.pi * cs_a * lam**3 * k2 * k2 + p["phase_shift_rad"] + k3
    ctf = torch.sin(chi)
    bfac = p["bfactor_a2"]
    if bool((bfac != 0).any()):
        ctf = ctf * torch.exp(-bfac * k2 / 4.0)
    return ctf


def compute_ctf_2d(
    d: int,
    apix: float,
    *,
    defocus_u_a: float | torch.Tensor,
    defocus_v_a: float | torch.Tensor,
    defocus_angle_rad: float | torch.Tensor,
    voltage_kv: float | torch.Tensor,
    cs_mm: float | torch.Tensor,
    amplitude_contrast: float | torch.Tensor,
    phase_shift_rad: float | torch.Tensor = 0.0,
    bfactor_a2: float | torch.Tensor = 0.0,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """CTF on the centred 2D frequency grid of a ``d × d`` image (RELION convention).

    Implements eq. 1.2 of 000_8d73a95ce4c6e7ab.txt with RELION's sign, astigmatism,
    phase shift and B-factor (see the module docstring for the formula and the sign).

    Parameters
    ----------
    d
        Image edge length in pixels.
    apix
        Pixel size in Å/px.
    defocus_u_a, defocus_v_a
        Defoci in Å along the astigmatism axes (positive = underfocus); ``(B,)`` tensors
        (any broadcastable batch shape) or floats.
    defocus_angle_rad
        Angle from the x axis to the direction of ``defocus_u_a``, radians.
    voltage_kv, cs_mm, amplitude_contrast
        Accelerating voltage (kV), spherical aberration (mm), amplitude contrast Q0 ∈ [0, 1).
    phase_shift_rad
        Additional phase shift (phase plate), radians.
    bfactor_a2
        B-factor in Å²; the envelope is ``exp(−B k²/4)``.
    device
        Output device; defaults to the device of the tensor parameters (else CPU).

    Returns
    -------
    ``(B, d, d)`` real CTF (``batch_shape + (d, d)``; all-scalar parameters give
    ``(1, d, d)``), DC at index ``d // 2``; float64 when any parameter is float64, else
    float32.

    Examples
    --------
    >>> c = compute_ctf_2d(64, 1.5, defocus_u_a=15000., defocus_v_a=14000., defocus_angle_rad=0.3,
    ...                    voltage_kv=300., cs_mm=2.7, amplitude_contrast=0.1)
    >>> c.shape, round(float(c[0, 32, 32]), 6)
    (torch.Size([1, 64, 64]), 0.1)
    """
    if int(d) <= 0:
        raise ValueError(f"d must be a positive image size, got {d}")
    if float(apix) <= 0:
        raise ValueError(f"apix must be positive, got {apix}")
    params = dict(
        defocus_u_a=defocus_u_a, defocus_v_a=defocus_v_a, defocus_angle_rad=defocus_angle_rad,
        voltage_kv=voltage_kv, cs_mm=cs_mm, amplitude_contrast=amplitude_contrast,
        phase_shift_rad=phase_shift_rad, bfactor_a2=bfactor_a2,
    )
    dev, dtype = _infer(params, device)
    # phases reach hundreds of radians at high frequency: evaluate in float64, return dtype
    p = _as_tensors(params, dev, torch.float64)
    _check(p)
    batch_shape = p["defocus_u_a"].shape
    if len(batch_shape) == 0:
        p = {k: v.reshape(1) for k, v in p.items()}
        batch_shape = (1,)
    p = {k: v[..., None, None] for k, v in p.items()}  # (..., 1, 1)
    k = fftfreq_grid_2d(int(d), device=dev, dtype=torch.float64) / float(apix)  # (D, D, 2) cycles/Å
    k2 = (k * k).sum(-1)  # (D, D)
    theta = torch.atan2(k[..., 1], k[..., 0])  # (D, D)
    mean = 0.5 * (p["defocus_u_a"] + p["defocus_v_a"])
    half_diff = 0.5 * (p["defocus_u_a"] - p["defocus_v_a"])
    defocus = mean + half_diff * torch.cos(2.0 * (theta - p["defocus_angle_rad"]))  # (..., D, D)
    ctf = _ctf_from_k2(k2, defocus, p).to(dtype)
    return ctf.expand(*batch_shape, int(d), int(d))


def compute_ctf_1d(
    freq_per_a: torch.Tensor,
    *,
    defocus_a: float | torch.Tensor,
    voltage_kv: float | torch.Tensor,
    cs_mm: float | torch.Tensor,
    amplitude_contrast: float | torch.Tensor,
    phase_shift_rad: float | torch.Tensor = 0.0,
    bfactor_a2: float | torch.Tensor = 0.0,
) -> torch.Tensor:
    """Radial (non-astigmatic) CTF profile at spatial frequencies ``freq_per_a``.

    Same formula and sign as :func:`compute_ctf_2d` with ``Δf_u = Δf_v = defocus_a``.

    Parameters
    ----------
    freq_per_a
        ``(F,)`` spatial frequencies in cycles/Å.
    defocus_a
        Defocus in Å (positive = underfocus); a float, or a ``(B,)`` tensor for ``B`` profiles.

    Returns
    -------
    ``(F,)`` CTF values (``(B, F)`` for batched parameters).
    """
    freq = torch.as_tensor(freq_per_a)
    if not freq.is_floating_point():
        freq = freq.to(torch.float32)
    params = dict(
        defocus_a=defocus_a, voltage_kv=voltage_kv, cs_mm=cs_mm, amplitude_contrast=amplitude_contrast,
        phase_shift_rad=phase_shift_rad, bfactor_a2=bfactor_a2,
    )
    _, dtype = _infer({**params, "f": freq}, freq.device)
    p = _as_tensors(params, freq.device, torch.float64)
    _check(p)
    p = {k: v[..., None] for k, v in p.items()}  # (..., 1)
    freq = freq.to(torch.float64)
    return _ctf_from_k2(freq * freq, p["defocus_a"], p).to(dtype)
