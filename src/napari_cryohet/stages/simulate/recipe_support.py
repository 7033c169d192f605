"""What the synthetic-data recipes share: the bundled reference data, ground-truth
volumes, and simulating a recipe's model (:func:`_simulate_dataset`: defocus in µm, the
dataset's name).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_cryohet.core.particle_dataset import ParticleDataset
from napari_cryohet.stages._common import CancelToken, ProgressCallback, report
from napari_cryohet.stages.simulate.engine import AtomicModel, simulate
from napari_cryohet.stages.simulate.imaging import SimulationConfig

__all__ = ["sample_data_dir"]


def sample_data_dir() -> Path:
    """The small reference data shipped with the project (``sample_data/``).

    Inside an installed wheel it is ``napari_cryohet/sample_data`` (pyproject force-include);
    in a source checkout (editable install) it is the repository's top-level folder.
    """
    packaged = Path(__file__).resolve().parents[2] / "sample_data"  # napari_cryohet/
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[4] / "sample_data"  # the repository


def _load_npz(name: str) -> dict[str, np.ndarray]:
    from napari_cryohet.io.errors import MissingFileError

    path = sample_data_dir() / name
    if not path.is_file():
        raise MissingFileError(path, "reference data file not found (it ships in the repository's sample_data/)")
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _volumes(coords_a: np.ndarray, *, d: int, apix: float, sigma_a: float, weights: np.ndarray | None,
             device: Any, progress: ProgressCallback | None = None) -> np.ndarray:
    """``(C, D, D, D)`` Gaussian-atom densities (``core.atoms.gaussian_density_3d``)."""
    from napari_cryohet.core.atoms import gaussian_density_3d
    from napari_cryohet.core.device import select_device

    report(progress, 0.0, "computing ground-truth volumes")
    dev = select_device(device)
    out = np.empty((len(coords_a), d, d, d), dtype=np.float32)
    for c in range(len(coords_a)):
        w = None
        if weights is not None:
            w = torch.tensor(weights[c] if weights.ndim == 2 else weights, device=dev)
        vol = gaussian_density_3d(torch.tensor(coords_a[c], device=dev), d=d, apix=apix, sigma_a=sigma_a,
                                  weights=w)
        out[c] = vol.detach().cpu().numpy()
    return out


def _simulate_dataset(name: str, model: AtomicModel, *, defocus_range_um: tuple[float, float] | None = None,
                      defocus_values_um: tuple[float, ...] | None = None, progress: ProgressCallback | None,
                      cancel: CancelToken | None, **config: Any) -> ParticleDataset:
    """Simulate ``model`` (``config``: :class:`SimulationConfig` fields, defocus given in µm)
    and name the dataset ``name``."""
    if defocus_range_um is not None:
        config["defocus_range_a"] = (defocus_range_um[0] * 1e4, defocus_range_um[1] * 1e4)
    if defocus_values_um is not None:
        config["defocus_values_a"] = tuple(float(v) * 1e4 for v in defocus_values_um)
    ds = simulate(model, SimulationConfig(**config), progress=progress, cancel=cancel)
    ds.meta["name"] = name
    return ds
