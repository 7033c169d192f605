"""napari reader for particle stacks and maps: ``.star``, ``.cs``, ``.mrcs``, ``.mrc``, ``.map``.

Nothing here reads a whole stack: napari gets the lazy stack object (memory-mapped MRC or
a :class:`~napari_cryohet.core.particle_dataset.SubsetStack`) and explicit contrast limits computed
from a few sampled images, so opening a 10^6-particle star file reads only those images.

- ``.star`` → one image layer ``(N, D, D)`` (slider over particles) whose
  ``metadata["cryohet_dataset"]`` is the :class:`ParticleDataset` and whose
  ``metadata["cryohet_table"]`` is the per-particle table (a DataFrame, every star column).
- ``.cs`` (cryoSPARC particles, :mod:`napari_cryohet.io.cryosparc`) → the same, with poses
  and CTF; stack paths are looked up from the file's folder upwards (the project folder).
- ``.mrcs`` (and ``.mrc`` whose ``nz != nx``) → the same kind of stack layer, without poses.
- ``.mrc``/``.map`` with ``nz == ny == nx`` → a 3D volume with ``scale = apix``.

Bad files raise the named :class:`~napari_cryohet.io.errors.CryohetInputError` from the
reader function; napari shows it as a notification and keeps running.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from napari_cryohet.core.particle_dataset import ParticleDataset

__all__ = [
    "get_reader",
    "read_path",
    "dataset_layer_data",
    "sample_contrast_limits",
    "DATASET_KEY",
    "TABLE_KEY",
    "STACK_SUFFIXES",
]

#: ``layer.metadata`` key under which a stack layer carries its ParticleDataset.
DATASET_KEY = "cryohet_dataset"
#: ``layer.metadata`` key of the per-particle table (``dataset.table``).
TABLE_KEY = "cryohet_table"
STACK_SUFFIXES = (".star", ".cs", ".mrcs", ".mrc", ".map")

LayerData = tuple[Any, dict, str]


def get_reader(path: str | list[str]) -> Callable[[Any], list[LayerData]] | None:
    """npe2 ``get_reader`` hook: a reader for our suffixes, ``None`` for other paths.

    Only the suffix is checked here; problems with the file itself are raised by the
    returned reader function as named :class:`CryohetInputError` subclasses.
    """
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or not all(Path(p).suffix.lower() in STACK_SUFFIXES for p in paths):
        return None
    return _read_paths


def _read_paths(path: str | list[str], **_: Any) -> list[LayerData]:
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    out: list[LayerData] = []
    for p in paths:
        out.extend(read_path(p))
    return out


def read_path(path: str | Path) -> list[LayerData]:
    """Read one file into napari layer data tuples ``(data, kwargs, "image")``.

    Raises
    ------
    CryohetInputError
        (a subclass naming the file and the problem) for files we cannot read.
    """
    from napari_cryohet.io.errors import PixelSizeError
    from napari_cryohet.io.load_particles import load_dataset
    from napari_cryohet.io.mrc_header import read_stack_header
    from napari_cryohet.io.mrc_volume import read_volume

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".star", ".cs"):
        return [dataset_layer_data(load_dataset(path), name=path.stem)]
    if suffix == ".map" or (suffix == ".mrc" and _is_cubic(read_stack_header(path, require_even_square=False))):
        volume, apix = read_volume(path)
        if apix is None:
            raise PixelSizeError(path, "the MRC header has no voxel size (0); set it, e.g. with "
                                       "mrcfile or relion_image_handler --angpix", field="voxel_size")
        kwargs = {
            "name": path.stem,
            "scale": (apix, apix, apix),
            "contrast_limits": _limits(np.asarray(volume)),
            "metadata": {"apix": apix, "source": str(path)},
        }
        return [(volume, kwargs, "image")]
    # an .mrcs (or a non-cubic .mrc): a particle stack, lazy, no poses
    return [dataset_layer_data(load_dataset(path), name=path.stem)]


def _is_cubic(header) -> bool:
    return header.n_images == header.ny == header.nx


def dataset_layer_data(dataset: ParticleDataset, *, name: str | None = None) -> LayerData:
    """The image-layer data tuple for a dataset: lazy stack, sampled contrast, metadata.

    The layer is ``(N, D, D)`` with ``scale = (1, apix, apix)`` (particle axis in steps of
    one particle, image axes in Å) and carries the dataset in ``metadata[DATASET_KEY]``
    and the per-particle table (image layers have no ``features``) in
    ``metadata[TABLE_KEY]``.
    """
    apix = float(dataset.apix)
    kwargs: dict[str, Any] = {
        "name": name or str(dataset.meta.get("name", "particles")),
        "scale": (1.0, apix, apix),
        "contrast_limits": sample_contrast_limits(dataset),
        "axis_labels": ("particle", "y", "x"),
        "metadata": {DATASET_KEY: dataset, TABLE_KEY: dataset.table, "apix": apix},
        "colormap": "gray",
        "interpolation2d": "nearest",
    }
    return (dataset.images, kwargs, "image")


def sample_contrast_limits(dataset: ParticleDataset, *, n_samples: int = 16) -> tuple[float, float]:
    """Contrast limits from ≤ ``n_samples`` evenly spaced images (0.5/99.5 percentiles)."""
    n = len(dataset)
    if n == 0:
        return (0.0, 1.0)
    idx = np.unique(np.linspace(0, n - 1, min(n, n_samples)).round().astype(np.int64))
    return _limits(dataset.get_images(idx))


def _limits(data: np.ndarray) -> tuple[float, float]:
    data = np.asarray(data, dtype=np.float32)
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return (0.0, 1.0)
    lo, hi = np.percentile(finite, [0.5, 99.5])
    if not hi > lo:
        lo, hi = float(finite.min()), float(finite.max())
    if not hi > lo:
        hi = lo + 1.0
    return (float(lo), float(hi))
