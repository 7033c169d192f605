"""Imaging conditions of a simulated stack: box, pixel size, SNR, CTF and shift distributions.

:class:`SimulationConfig` holds them (units in the names, RELION conventions:
docs/design.md, "CTF"); :func:`draw_ctf` and :func:`draw_shifts` draw the per-particle
defocus, astigmatism and in-plane shifts from it. The forward model that uses them is in
:mod:`napari_cryohet.stages.simulate.engine`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_cryohet.core.particle_dataset import CTFParams

__all__ = ["SimulationConfig", "draw_ctf", "draw_shifts"]


@dataclass
class SimulationConfig:
    """Imaging parameters of a simulated stack (units in the names; RELION conventions).

    Defocus: ``defocus_values_a`` (a set, drawn uniformly) wins over
    ``defocus_range_a`` (uniform on [lo, hi]). ``astigmatism_a`` is the largest
    ``defocus_u − defocus_v`` (drawn uniformly in [0, astigmatism_a], angle uniform).
    ``snr=None`` makes a noiseless stack. ``keep_clean_images=False`` saves memory for
    large stacks (the projections are then computed twice: once to measure the signal
    variance, once to add the noise).
    """

    box_size: int = 64
    apix: float = 2.0
    snr: float | None = 0.1
    apply_ctf: bool = True
    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.1
    defocus_range_a: tuple[float, float] = (10000.0, 25000.0)
    defocus_values_a: tuple[float, ...] | None = None
    astigmatism_a: float = 0.0
    bfactor_a2: float = 0.0
    shift_std_a: float = 0.0
    seed: int = 0
    batch_size: int = 256
    device: str | None = "cpu"
    keep_clean_images: bool = True

    def __post_init__(self) -> None:
        if self.box_size <= 0 or self.box_size % 2:
            raise ValueError(f"box_size must be a positive even number, got {self.box_size}")
        if not self.apix > 0:
            raise ValueError(f"apix must be positive, got {self.apix}")
        if self.snr is not None and not self.snr > 0:
            raise ValueError(f"snr must be positive (or None for no noise), got {self.snr}")
        lo, hi = self.defocus_range_a
        if self.defocus_values_a is None and not 0 < lo <= hi:
            raise ValueError(f"defocus_range_a must satisfy 0 < lo <= hi, got {self.defocus_range_a}")
        if self.defocus_values_a is not None and (len(self.defocus_values_a) == 0
                                                  or min(self.defocus_values_a) <= 0):
            raise ValueError("defocus_values_a must be a non-empty set of positive defoci (Å)")
        if self.astigmatism_a < 0 or self.shift_std_a < 0:
            raise ValueError("astigmatism_a and shift_std_a must be >= 0")
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")


def draw_ctf(n: int, config: SimulationConfig, rng: np.random.Generator) -> CTFParams:
    """Per-particle CTF parameters: defocus from the config's set or range (Å)."""
    if config.defocus_values_a is not None:
        values = np.asarray(config.defocus_values_a, dtype=np.float64)
        mean = values[rng.integers(0, len(values), n)]
    else:
        lo, hi = config.defocus_range_a
        mean = rng.uniform(lo, hi, n)
    astig = rng.uniform(0.0, config.astigmatism_a, n) if config.astigmatism_a > 0 else np.zeros(n)
    angle = rng.uniform(0.0, np.pi, n) if config.astigmatism_a > 0 else np.zeros(n)
    return CTFParams.constant(
        n, defocus_u_a=mean + astig / 2, defocus_v_a=mean - astig / 2, defocus_angle_rad=angle,
        voltage_kv=config.voltage_kv, cs_mm=config.cs_mm, amplitude_contrast=config.amplitude_contrast,
        bfactor_a2=config.bfactor_a2,
    )


def draw_shifts(n: int, config: SimulationConfig, rng: np.random.Generator) -> np.ndarray:
    """``(N, 2)`` shifts in Å, Gaussian with standard deviation ``shift_std_a`` per axis."""
    if config.shift_std_a == 0:
        return np.zeros((n, 2), dtype=np.float32)
    return rng.normal(0.0, config.shift_std_a, (n, 2)).astype(np.float32)
