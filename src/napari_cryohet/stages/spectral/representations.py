"""Per-particle representations ``beta_i`` of Assumption 3 (Esteve-Yagüe et al. 2022, §3, App. B).

Registry :data:`REPRESENTATIONS`, name → builder ``(dataset, config, features, progress,
cancel) -> (x (N, q), provenance)``:

``"table"``
    Per-particle numbers: an input :class:`~napari_cryohet.stages.protocol.Embedding`
    (VAE latents, another run's eigenvectors), aligned to the dataset by particle index, or
    numeric ``columns`` of the dataset's table (``standardize`` z-scores them — columns of
    different units).
``"lowres_volumes"``
    Synthetic data (§3.1-3.2): the ground-truth density of every particle on a coarse grid
    plus Gaussian noise of variance ``noise_var``, in the *model frame* (independent of the
    pose, Assumption 3), reduced by PCA to ``n_components``. For a
    :class:`~napari_cryohet.stages.simulate.box_arms.Toy2DDataset` (box with two arms, §3.1)
    these are its 64×64 noisy densities ``low_dim`` (noise variance 9, in the frame
    ``low_dim_frame`` names: by default superposed on the reference); for a
    :class:`~napari_cryohet.core.particle_dataset.ParticleDataset` with
    ``ground_truth["coords_a"]`` the sum of unit-height Gaussians (eq. 3.8, width
    ``sigma_a``) on a ``grid_size``³ grid (16³ in §3.2) spanning the image field of view.
    ``lowpass_a`` blurs every noisy density before PCA (:func:`lowpass_densities`).
``"pca_images"``
    Real data: PCA of the particle images (binned to ``grid_size`` px), streamed in batches.
    Not pose-invariant; a pragmatic first look, not Assumption 3.

:func:`build_representation` runs the builder, then the PCA to ``n_components`` and the
optional standardisation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_cryohet.stages._common import CancelToken, ProgressCallback, check_cancel, report
from napari_cryohet.stages.protocol import Embedding

if TYPE_CHECKING:
    from napari_cryohet.stages.spectral.config import SpectralConfig

__all__ = ["REPRESENTATIONS", "build_representation", "lowpass_densities"]


def _table_features(dataset, config: SpectralConfig, features: Embedding | None, progress,
                    cancel) -> tuple[np.ndarray, dict]:
    if features is not None:
        x = np.asarray(features.aligned_to(dataset), dtype=np.float64)
        source = f"{features.name} of run {features.run_id}" if features.run_id else f"{features.name} (in memory)"
        info: dict[str, Any] = {"source": source, "input_run": features.run_id}
        return x, info
    table = getattr(dataset, "table", None)
    if not config.columns:
        raise ValueError("columns: the 'table' representation needs table columns or an input run (features)")
    if table is None:
        raise ValueError("columns: this dataset has no per-particle table")
    missing = [c for c in config.columns if c not in table.columns]
    if missing:
        raise ValueError(f"columns: not in the particle table: {missing}")
    x = table[list(config.columns)].to_numpy(dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    return x, {"source": f"table columns {list(config.columns)}"}


def _density_volumes(dataset, config: SpectralConfig, features, progress, cancel) -> tuple[np.ndarray, dict]:
    rng = np.random.default_rng([int(config.seed), 4])
    low_dim = getattr(dataset, "low_dim", None)
    if low_dim is not None:  # Toy2DDataset: §3.1 densities with their own noise
        info = {"source": "Toy2DDataset.low_dim (64x64 noisy densities, seed 000 §3.1)",
                "noise_var": float(getattr(dataset, "low_dim_noise_var", np.nan))}
        low_dim = np.asarray(low_dim)
        if config.lowpass_a is not None:
            grid = np.asarray(getattr(dataset, "low_dim_grid_a", [0.0, 1.0]), dtype=np.float64)
            spacing = float(np.abs(np.diff(grid[:2]))[0]) if len(grid) > 1 else 1.0
            low_dim = lowpass_densities(low_dim, config.lowpass_a / spacing,
                                        batch_size=config.batch_size, cancel=cancel)
            info.update(lowpass_a=float(config.lowpass_a), lowpass_px=config.lowpass_a / spacing,
                        lowpass_spacing_a=spacing)
        x = np.asarray(low_dim, dtype=np.float64).reshape(len(low_dim), -1)
        return x, info
    truth = getattr(dataset, "ground_truth", None) or {}
    if "coords_a" not in truth:
        raise ValueError("representation: 'lowres_volumes' needs ground_truth['coords_a'] (synthetic data); "
                         "use 'pca_images' or 'table' for real data")
    import torch

    from napari_cryohet.core.atoms import gaussian_density_3d

    coords = np.asarray(truth["coords_a"], dtype=np.float32)  # (N, M, 3)
    n, d = len(coords), int(config.grid_size)
    sigma_a = float(config.sigma_a or np.asarray(truth.get("global/sigma_a", 3.0)).ravel()[0])
    apix_low = float(dataset.apix) * dataset.box_size / d  # same field of view as the images
    # unit-height Gaussians (eq. 3.8): divide by the peak of one atom at a voxel centre
    one = gaussian_density_3d(torch.zeros(1, 3), d=d, apix=apix_low, sigma_a=sigma_a)
    peak = float(one.max())
    x = np.empty((n, d**3), dtype=np.float32)
    bs = int(config.batch_size)
    for start in range(0, n, bs):
        check_cancel(cancel)
        stop = min(start + bs, n)
        vol = gaussian_density_3d(torch.as_tensor(coords[start:stop]), d=d, apix=apix_low, sigma_a=sigma_a)
        x[start:stop] = vol.reshape(stop - start, -1).numpy() / peak
        report(progress, 0.4 * stop / n, f"low-resolution volumes {stop}/{n}")
    if config.noise_var > 0:
        x += rng.normal(0.0, np.sqrt(config.noise_var), x.shape).astype(np.float32)
    info = {"source": f"ground-truth densities {d}^3 at {apix_low:.2f} A/voxel",
            "sigma_a": sigma_a, "noise_var": float(config.noise_var)}
    if config.lowpass_a is not None:
        x = lowpass_densities(x.reshape(n, d, d, d), config.lowpass_a / apix_low,
                              batch_size=config.batch_size, cancel=cancel).reshape(n, -1)
        info.update(lowpass_a=float(config.lowpass_a), lowpass_px=config.lowpass_a / apix_low,
                    lowpass_spacing_a=apix_low)
    return x.astype(np.float64), info


def lowpass_densities(
    densities: np.ndarray, sigma_px: float, *, batch_size: int = 512, cancel: CancelToken | None = None
) -> np.ndarray:
    """Gaussian low-pass of every density (2-D or 3-D) in a stack, batched.

    Parameters
    ----------
    densities
        ``(N, G, G)`` or ``(N, G, G, G)`` densities (one per particle).
    sigma_px
        Standard deviation of the Gaussian filter in pixels/voxels (the same on every
        spatial axis; none across particles).
    batch_size, cancel
        Particles per ``scipy.ndimage.gaussian_filter`` call; a cancel check per batch.

    Returns
    -------
    Filtered stack, same shape, float32 (float64 input stays float64). White noise of
    variance ``v`` comes out with variance ``v / (4π σ_px²)`` in 2-D and
    ``v / (4π σ_px²)^{3/2}`` in 3-D (σ_px ≳ 1); a smooth density keeps its sum
    (``mode="constant"`` edges: only what leaks past the box is lost).
    """
    from scipy.ndimage import gaussian_filter

    x = np.asarray(densities)
    if x.ndim < 3:
        raise ValueError(f"densities: expected (N, G, G) or (N, G, G, G), got shape {x.shape}")
    if not sigma_px > 0:
        raise ValueError(f"lowpass: sigma must be > 0 pixels, got {sigma_px}")
    dtype = np.float64 if x.dtype == np.float64 else np.float32
    out = np.empty(x.shape, dtype=dtype)
    sigma = (0.0,) + (float(sigma_px),) * (x.ndim - 1)
    for start in range(0, len(x), int(batch_size)):
        check_cancel(cancel)
        stop = min(start + int(batch_size), len(x))
        out[start:stop] = gaussian_filter(x[start:stop].astype(dtype, copy=False), sigma, mode="constant")
    return out


def _image_pca_features(dataset, config: SpectralConfig, features, progress, cancel) -> tuple[np.ndarray, dict]:
    from sklearn.decomposition import IncrementalPCA

    images = getattr(dataset, "images", None)
    if images is None:
        raise ValueError("representation: 'pca_images' needs a dataset with images")
    n, d = len(dataset), dataset.box_size
    factor = max(1, d // int(config.grid_size))
    side = d // factor
    q = int(config.n_components or 30)
    q = min(q, side * side, n)
    bs = max(int(config.batch_size), q)
    pca = IncrementalPCA(n_components=q)

    def batch(start: int, stop: int) -> np.ndarray:
        img = dataset.get_images(np.arange(start, stop))[:, : side * factor, : side * factor]  # (B, D, D)
        img = img.reshape(stop - start, side, factor, side, factor).mean(axis=(2, 4))
        return img.reshape(stop - start, -1).astype(np.float64)

    starts = list(range(0, n, bs))
    if len(starts) > 1 and n - starts[-1] < q:  # IncrementalPCA needs batches >= q
        starts.pop()
    bounds = [(s, starts[i + 1] if i + 1 < len(starts) else n) for i, s in enumerate(starts)]
    for i, (s, e) in enumerate(bounds):
        check_cancel(cancel)
        pca.partial_fit(batch(s, e))
        report(progress, 0.2 * (i + 1) / len(bounds), "image PCA (fit)")
    out = np.empty((n, q))
    for i, (s, e) in enumerate(bounds):
        check_cancel(cancel)
        out[s:e] = pca.transform(batch(s, e))
        report(progress, 0.2 + 0.2 * (i + 1) / len(bounds), "image PCA (transform)")
    return out, {"source": f"images binned x{factor} to {side}px", "pca_done": True,
                 "explained_variance": pca.explained_variance_}


#: representation name → builder(dataset, config, features, progress, cancel) -> (x (N, q), info)
REPRESENTATIONS: dict[str, Callable[..., tuple[np.ndarray, dict]]] = {
    "table": _table_features,
    "lowres_volumes": _density_volumes,
    "pca_images": _image_pca_features,
}


def build_representation(
    dataset,
    config: SpectralConfig,
    *,
    features: Embedding | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The ``(N, q)`` representation ``beta_i`` of Assumption 3 (after PCA/standardising).

    ``features`` (the ``"table"`` representation only) is an
    :class:`~napari_cryohet.stages.protocol.Embedding`: its rows are taken in the dataset's
    particle order by root particle index. Returns the array and a provenance dictionary.
    """
    if features is not None and not isinstance(features, Embedding):
        raise TypeError(f"features: expected an Embedding (values keyed by particle index; "
                        f"Embedding.for_dataset(values, dataset) for rows in the dataset's order), "
                        f"got {type(features).__name__}")
    if features is not None and config.representation != "table":
        raise ValueError(f"representation: an input run's vectors ({features.name}) are used by the 'table' "
                         f"representation, got {config.representation!r}; choose 'table' or leave the input out")
    x, info = REPRESENTATIONS[config.representation](dataset, config, features, progress, cancel)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"representation '{config.representation}': contains NaN or infinite values")
    info["raw_dim"] = int(x.shape[1])
    q = config.n_components
    if q and not info.pop("pca_done", False) and q < x.shape[1]:
        from sklearn.decomposition import PCA

        check_cancel(cancel)
        pca = PCA(n_components=int(min(q, len(x))), svd_solver="randomized", random_state=config.seed)
        x = pca.fit_transform(x)
        info["explained_variance"] = pca.explained_variance_
    if config.standardize:
        std = x.std(axis=0)
        std[std == 0] = 1.0
        x = (x - x.mean(axis=0)) / std
    info["dim"] = int(x.shape[1])
    return x, info
