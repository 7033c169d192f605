"""Spectral-embedding stage: Laplacian eigenvectors of the conformational manifold.

Seed 000_8d73a95ce4c6e7ab.txt §2.2 (eq. 2.5-2.6), §3.1-3.2 and Appendix B: a
low-dimensional representation ``beta_i`` of each particle's conformation (Assumption 3)
→ a similarity graph → the symmetric normalised Laplacian ``L`` → the eigenvectors of its
``K`` smallest eigenvalues, ``Phi (N, K)``, which the chain-fit stage expands the torsion and
bond angles on (eq. 2.6). The numerics live in :mod:`napari_cryohet.core.laplacian`.

Representations (registry :data:`REPRESENTATIONS`, name → builder)
------------------------------------------------------------------
``"table"``
    Any per-particle array: ``features=`` passed to :func:`run_spectral` (VAE latents,
    another stage's output) or numeric ``columns`` of the dataset's table
    (``standardize`` z-scores them — columns of different units).
``"lowres_volumes"``
    Synthetic data (seed 000 §3.1-3.2): the ground-truth density of every particle on a
    coarse grid plus Gaussian noise of variance ``noise_var``, in the *model frame*
    (independent of the pose, Assumption 3), reduced by PCA to ``n_components``.
    For a :class:`~napari_cryohet.stages.simulate.box_arms.Toy2DDataset` (box with two arms, §3.1)
    these are its 64×64 noisy densities ``low_dim`` (noise variance 9, in the frame
    ``low_dim_frame`` names: by default superposed on the reference); for a
    :class:`~napari_cryohet.core.particle_dataset.ParticleDataset` with ``ground_truth["coords_a"]``
    the sum of unit-height Gaussians (eq. 3.8, width ``sigma_a``) on a ``grid_size``³
    grid (16³ in §3.2) spanning the image field of view.
``"pca_images"``
    Real data: PCA of the particle images (binned to ``grid_size`` px), streamed in batches.
    Not pose-invariant; a pragmatic first look, not Assumption 3.

Graphs: ``"gaussian"`` — dense kernel eq. 3.5 (``sigma``; default: the median over
points of the distance to the ``k``-th neighbour); ``"knn"`` — symmetric kNN, ``weights``
``"binary"`` / ``"gaussian"`` / ``"self_tuning"`` (Appendix B; sparse, scales to 10^6).

Additions against weak, short conformational directions under noise (docs/spectral.md):
``lowpass_a`` — a Gaussian low-pass of the noisy densities before PCA (matched filtering of
white pixel noise against band-limited atoms); ``denoise_dim`` — projection of the
representation onto its local tangent spaces
(:func:`~napari_cryohet.core.laplacian.tangent_denoise`); ``alpha`` — Coifman-Lafon density
normalisation of the graph (:func:`~napari_cryohet.core.laplacian.density_normalize`);
``order="parsimonious"`` — compute ``n_candidates`` eigenvectors and keep the *unique*
directions first, harmonics after (Dsilva et al. 2018,
:func:`~napari_cryohet.core.laplacian.harmonic_residuals`). The box-arms acceptance setting
(:data:`BOX_ARMS_ACCEPTANCE`) combines the first three.

The result is stored on the dataset as ``dataset.meta["spectral"]`` (a
:class:`SpectralResult`) for the chain-fit stage and saved under ``<workspace>/spectral/``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_cryohet.core.graph import build_gaussian_graph, build_knn_graph, find_nearest_neighbors
from napari_cryohet.core.harmonics import harmonic_residuals, parsimonious_order
from napari_cryohet.core.laplacian import LaplacianEigenmaps, density_normalize, laplacian_eigenmaps
from napari_cryohet.core.tangent_denoise import tangent_denoise
from napari_cryohet.io.atomic import save_npz_atomic
from napari_cryohet.io.errors import CorruptFileError
from napari_cryohet.stages._common import CancelToken, ProgressCallback, check_cancel, report

__all__ = [
    "SpectralConfig",
    "SpectralResult",
    "REPRESENTATIONS",
    "run_spectral",
    "build_representation",
    "regression_r2",
    "lowpass_densities",
    "RESULT_FILE",
    "BOX_ARMS_ACCEPTANCE",
]

ORDERS = ("eigenvalue", "parsimonious")

#: The setting that passes issue 4's box-arms check (R² >= 0.9 for all three parameters
#: from 20 eigenvectors; docs/spectral.md): ``SpectralConfig(**BOX_ARMS_ACCEPTANCE)``.
BOX_ARMS_ACCEPTANCE = dict(representation="lowres_volumes", n_components=30, lowpass_a=5.0, denoise_dim=6,
                           graph="knn", weights="self_tuning", k=8, alpha=1.0, n_eigenvectors=20)

RESULT_FILE = "spectral.npz"


@dataclass
class SpectralConfig:
    """Settings of one spectral embedding (every field is recorded with the result).

    Parameters
    ----------
    representation
        ``"table"``, ``"lowres_volumes"`` or ``"pca_images"`` (see the module docstring).
    columns
        ``"table"``: names of numeric table columns (ignored when ``features`` is given).
    standardize
        z-score each feature before the graph (useful for table columns of mixed units).
    n_components
        PCA dimensions ``q`` (``None`` or 0: no PCA).
    grid_size
        ``"lowres_volumes"``: voxels per edge (16 in §3.2); ``"pca_images"``: binned image size.
    sigma_a
        ``"lowres_volumes"``: Gaussian atom width in Å (default ``global/sigma_a`` or 3 Å).
    noise_var
        ``"lowres_volumes"``: variance of the noise added to the unit-height densities
        (Table 1 of 000: 0.5 or 1). Toy 2D datasets carry their own noisy densities.
    graph
        ``"knn"`` or ``"gaussian"``.
    weights
        kNN weighting: ``"self_tuning"``, ``"binary"`` or ``"gaussian"``.
    k
        Neighbours of the kNN graph (also sets the default Gaussian ``sigma``).
    sigma
        Gaussian kernel width in representation units (``None``: median distance to the
        ``k``-th neighbour).
    lowpass_a
        ``"lowres_volumes"``: standard deviation (Å) of a Gaussian low-pass applied to every
        noisy density before PCA (``None``: none). The box-arms densities carry white noise
        of variance 9 per 5 Å pixel while the atoms are Gaussians of σ = 7 Å, band-limited
        to a few cycles per 100 Å; a Gaussian of width ``σ_f`` keeps most of the signal and
        divides the per-pixel noise variance by ``4π σ_f²`` (σ_f in pixels, 2-D) —
        matched filtering — so the pairwise distances that build the graph are less
        dominated by noise (their noise floor ``2·var·pixels`` drops). Applied per
        particle with ``scipy.ndimage.gaussian_filter`` (Toy2D: spacing ``low_dim_grid_a``,
        3-D volumes: the coarse voxel size). The box-arms acceptance setting uses 5 Å
        (docs/spectral.md).
    denoise_dim
        If set, project the representation onto its local tangent spaces of this dimension
        before the graph (:func:`~napari_cryohet.core.laplacian.tangent_denoise`: local PCA
        of ``denoise_k`` neighbours, ``denoise_iter`` passes) — removes the noise normal to
        the conformational manifold. ``None``: off. The box-arms toy (3 parameters) uses 6
        (docs/spectral.md).
    denoise_k, denoise_iter
        Neighbours per local PCA and passes of the tangent projection.
    alpha
        Density normalisation of the graph before the Laplacian, ``W ← D^-α W D^-α``
        (diffusion maps, :func:`~napari_cryohet.core.laplacian.density_normalize`):
        0 = the paper's graph, 1 = Laplace-Beltrami (sampling density factored out).
    n_eigenvectors
        ``K``, trivial eigenvector included (20 in §3.1, 10 in §3.2): the output columns.
    order
        ``"eigenvalue"``: the ``K`` smallest eigenpairs, ascending. ``"parsimonious"``:
        compute ``n_candidates`` eigenpairs, score each by its local-linear-regression
        residual on the earlier unique ones (Dsilva et al. 2018,
        :func:`~napari_cryohet.core.laplacian.harmonic_residuals`) and output the trivial
        one, then the unique directions, then the remaining harmonics, each group in
        eigenvalue order (``SpectralResult.eigenvalue_rank`` gives every column's rank).
    n_candidates
        ``"parsimonious"``: eigenpairs computed before the selection (``None``:
        ``3 * n_eigenvectors``).
    unique_threshold
        ``"parsimonious"``: residual above which an eigenvector is a unique direction
        (0.5 in Dsilva et al.).
    harmonic_regress_on
        ``"parsimonious"``: ``"unique"`` (default; regress each eigenvector on the unique
        ones found so far — robust on noisy data with many candidates) or ``"all"``
        (Dsilva et al.: on every earlier eigenvector — exact on clean manifolds, over-fits
        with many noisy candidates); see :func:`~napari_cryohet.core.laplacian.harmonic_residuals`.
    solver
        ``"auto"``, ``"dense"``, ``"sparse"``, ``"multilevel"`` (core.laplacian).
    device
        Torch device (``"auto"``: CUDA when present, else CPU). The multilevel eigensolver's
        subspace iteration (N > 5·10^4) runs in torch on it (on CPU 221 s vs 521 s for SciPy at
        10^6 points, docs/spectral.md); on CUDA the neighbour searches are exact brute force
        in torch too (:func:`~napari_cryohet.core.laplacian.find_nearest_neighbors`), on CPU
        scikit-learn / NN-descent. Dense and ARPACK solves (N ≤ 5·10^4) stay SciPy on CPU.
    seed
        Noise, PCA and eigensolver seed.
    batch_size
        Particles per batch for densities and image PCA (one cancel check per batch).
    """

    representation: str = "lowres_volumes"
    columns: tuple[str, ...] | None = None
    standardize: bool = False
    n_components: int | None = 30
    grid_size: int = 16
    sigma_a: float | None = None
    noise_var: float = 0.5
    graph: str = "knn"
    weights: str = "self_tuning"
    k: int = 30
    sigma: float | None = None
    n_eigenvectors: int = 20
    lowpass_a: float | None = None
    denoise_dim: int | None = None
    denoise_k: int = 80
    denoise_iter: int = 3
    alpha: float = 0.0
    order: str = "eigenvalue"
    n_candidates: int | None = None
    unique_threshold: float = 0.5
    harmonic_regress_on: str = "unique"
    solver: str = "auto"
    device: str = "auto"
    seed: int = 0
    batch_size: int = 512

    def __post_init__(self) -> None:
        if self.representation not in REPRESENTATIONS:
            raise ValueError(f"representation: expected one of {sorted(REPRESENTATIONS)}, got {self.representation!r}")
        if self.graph not in ("knn", "gaussian"):
            raise ValueError(f"graph: expected 'knn' or 'gaussian', got {self.graph!r}")
        if self.weights not in ("self_tuning", "binary", "gaussian"):
            raise ValueError(f"weights: expected 'self_tuning', 'binary' or 'gaussian', got {self.weights!r}")
        if self.graph == "knn" and self.weights == "gaussian" and self.sigma is None:
            raise ValueError("sigma: kNN graph with gaussian weights needs sigma")
        for name in ("k", "n_eigenvectors", "grid_size", "batch_size", "denoise_k", "denoise_iter"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: expected a positive integer, got {getattr(self, name)}")
        if self.sigma is not None and not self.sigma > 0:
            raise ValueError(f"sigma: expected > 0 or None, got {self.sigma}")
        if self.denoise_dim is not None and int(self.denoise_dim) < 1:
            raise ValueError(f"denoise_dim: expected a positive integer or None, got {self.denoise_dim}")
        if not 0.0 <= float(self.alpha) <= 1.0:
            raise ValueError(f"alpha: expected in [0, 1], got {self.alpha}")
        if self.lowpass_a is not None and not self.lowpass_a > 0:
            raise ValueError(f"lowpass_a: expected > 0 or None, got {self.lowpass_a}")
        if self.order not in ORDERS:
            raise ValueError(f"order: expected one of {ORDERS}, got {self.order!r}")
        if self.n_candidates is not None and int(self.n_candidates) < int(self.n_eigenvectors):
            raise ValueError(f"n_candidates: expected >= n_eigenvectors ({self.n_eigenvectors}) or None, "
                             f"got {self.n_candidates}")
        if self.harmonic_regress_on not in ("unique", "all"):
            raise ValueError(f"harmonic_regress_on: expected 'unique' or 'all', got {self.harmonic_regress_on!r}")
        if not 0 < self.unique_threshold < 1:
            raise ValueError(f"unique_threshold: expected in (0, 1), got {self.unique_threshold}")
        if self.noise_var < 0:
            raise ValueError(f"noise_var: expected >= 0, got {self.noise_var}")
        if self.columns is not None:
            self.columns = tuple(self.columns)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["columns"] = None if self.columns is None else list(self.columns)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SpectralConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class SpectralResult:
    """Eigenpairs of one embedding, keyed on particle indices.

    Attributes
    ----------
    eigenvalues
        ``(K,)`` eigenvalues of the normalised Laplacian, aligned with the columns
        (ascending for ``order="eigenvalue"``).
    eigenvectors
        ``(N, K)`` float64 eigenvectors (``Phi`` of eq. 2.5), column 0 trivial; for
        ``order="parsimonious"`` the unique directions follow it, then the harmonics.
    indices
        ``(N,)`` root-dataset index of each row.
    trivial
        ``(K,)`` bool, True for the trivial eigenvector.
    config
        The :class:`SpectralConfig` that produced it.
    provenance
        What else was decided at run time: representation shape, PCA variance, sigma used,
        solver, graph size, timings, unique eigenvectors.
    eigenvalue_rank
        ``(K,)`` int, each column's position in eigenvalue order (``0..K-1`` for
        ``order="eigenvalue"``; ranks among the ``n_candidates`` for ``"parsimonious"``).
    harmonic_residual
        ``(K,)`` float, each column's local-linear-regression residual ``r_k`` (NaN where
        not computed: eigenvalue order, the trivial column, results saved before it existed).
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    indices: np.ndarray
    trivial: np.ndarray
    config: SpectralConfig
    provenance: dict[str, Any] = field(default_factory=dict)
    eigenvalue_rank: np.ndarray | None = None
    harmonic_residual: np.ndarray | None = None

    def __post_init__(self) -> None:
        k = len(self.eigenvalues)
        if self.eigenvalue_rank is None:
            self.eigenvalue_rank = np.arange(k, dtype=np.int64)
        if self.harmonic_residual is None:
            self.harmonic_residual = np.full(k, np.nan)
        self.eigenvalue_rank = np.asarray(self.eigenvalue_rank, dtype=np.int64)
        self.harmonic_residual = np.asarray(self.harmonic_residual, dtype=np.float64)

    def save(self, directory: str | Path) -> Path:
        """Write ``<directory>/spectral.npz`` atomically; returns its path."""
        path = Path(directory) / RESULT_FILE
        return save_npz_atomic(
            path,
            eigenvalues=self.eigenvalues,
            eigenvectors=self.eigenvectors,
            indices=self.indices,
            trivial=self.trivial,
            eigenvalue_rank=self.eigenvalue_rank,
            harmonic_residual=self.harmonic_residual,
            config_json=np.array(json.dumps(self.config.to_dict())),
            provenance_json=np.array(json.dumps(_jsonable(self.provenance))),
        )

    @classmethod
    def load(cls, directory: str | Path) -> SpectralResult:
        """Read a result written by :meth:`save` (a directory or the ``.npz`` itself)."""
        path = Path(directory)
        if path.is_dir():
            path = path / RESULT_FILE
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls(
                    eigenvalues=data["eigenvalues"],
                    eigenvectors=data["eigenvectors"],
                    indices=data["indices"],
                    trivial=data["trivial"],
                    config=SpectralConfig.from_dict(json.loads(str(data["config_json"]))),
                    provenance=json.loads(str(data["provenance_json"])),
                    eigenvalue_rank=data["eigenvalue_rank"] if "eigenvalue_rank" in data.files else None,
                    harmonic_residual=data["harmonic_residual"] if "harmonic_residual" in data.files else None,
                )
        except FileNotFoundError:
            raise
        except (KeyError, ValueError, OSError) as err:
            raise CorruptFileError(path, f"not a spectral result: {err}") from err


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


# ------------------------------------------------------------------ representations


def _table_features(dataset, config: SpectralConfig, features, progress, cancel) -> tuple[np.ndarray, dict]:
    if features is not None:
        x = np.asarray(features, dtype=np.float64)
        source = "features array"
    else:
        table = getattr(dataset, "table", None)
        if not config.columns:
            raise ValueError("columns: the 'table' representation needs columns (or a features array)")
        if table is None:
            raise ValueError("columns: this dataset has no per-particle table")
        missing = [c for c in config.columns if c not in table.columns]
        if missing:
            raise ValueError(f"columns: not in the particle table: {missing}")
        x = table[list(config.columns)].to_numpy(dtype=np.float64)
        source = f"table columns {list(config.columns)}"
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or len(x) != _n_particles(dataset):
        raise ValueError(f"features: expected ({_n_particles(dataset)}, q), got shape {x.shape}")
    return x, {"source": source}


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


def _n_particles(dataset) -> int:
    return len(dataset)


def build_representation(
    dataset,
    config: SpectralConfig,
    *,
    features: np.ndarray | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The ``(N, q)`` representation ``beta_i`` of Assumption 3 (after PCA/standardising).

    Returns the array and a provenance dictionary.
    """
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


# ---------------------------------------------------------------------------- stage


def run_spectral(
    dataset,
    config: SpectralConfig,
    *,
    features: np.ndarray | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    workspace: str | Path | None = None,
) -> SpectralResult:
    """Representation → similarity graph → normalised Laplacian → ``K`` eigenvectors.

    Parameters
    ----------
    dataset
        A :class:`~napari_cryohet.core.particle_dataset.ParticleDataset` or a
        :class:`~napari_cryohet.stages.simulate.box_arms.Toy2DDataset`.
    config
        :class:`SpectralConfig`.
    features
        ``(N, q)`` per-particle array for the ``"table"`` representation (e.g. VAE latents).
    progress, cancel
        Progress callback and cancel token (``stages._common``).
    workspace
        If given, the result is saved to ``<workspace>/spectral/spectral.npz``.

    Returns
    -------
    SpectralResult
        Also stored as ``dataset.meta["spectral"]`` when the dataset has a ``meta`` dict.
    """
    t0 = time.perf_counter()
    report(progress, 0.0, f"representation: {config.representation}")
    x, info = build_representation(dataset, config, features=features, progress=progress, cancel=cancel)
    check_cancel(cancel)
    if config.denoise_dim is not None:
        if not int(config.denoise_dim) < x.shape[1]:
            raise ValueError(f"denoise_dim: expected < the representation's {x.shape[1]} dimensions, "
                             f"got {config.denoise_dim}")
        dk = min(int(config.denoise_k), len(x) - 1)
        report(progress, 0.35, f"tangent-space denoising (dim {config.denoise_dim}, k {dk})")
        x = tangent_denoise(x, dim=int(config.denoise_dim), k=dk, n_iter=int(config.denoise_iter),
                            seed=config.seed, device=config.device)
        info["denoise"] = {"dim": int(config.denoise_dim), "k": dk, "n_iter": int(config.denoise_iter)}
    t_rep = time.perf_counter()
    check_cancel(cancel)
    n = len(x)
    k = min(int(config.k), n - 1)
    report(progress, 0.45, f"{config.graph} graph on {n} points ({x.shape[1]} dims)")
    sigma = config.sigma
    if config.graph == "gaussian":
        if sigma is None:
            _, dist = find_nearest_neighbors(x, k, seed=config.seed, device=config.device)
            sigma = float(np.median(dist[:, -1]))
        weights = build_gaussian_graph(x, sigma=sigma)
    else:
        weights = build_knn_graph(x, k=k, weights=config.weights, sigma=sigma, seed=config.seed,
                                  device=config.device)
    weights = density_normalize(weights, config.alpha)
    t_graph = time.perf_counter()
    check_cancel(cancel)
    n_out = min(int(config.n_eigenvectors), n - 1)
    parsimonious = config.order == "parsimonious"
    n_compute = n_out
    if parsimonious:
        n_compute = min(int(config.n_candidates or 3 * int(config.n_eigenvectors)), n - 1)
    report(progress, 0.7, f"eigenvectors ({n_compute})")
    emb: LaplacianEigenmaps = laplacian_eigenmaps(weights, n_compute, method=config.solver, seed=config.seed,
                                                  device=config.device)
    t_eig = time.perf_counter()
    n_cols = emb.eigenvectors.shape[1]
    rank = np.arange(min(n_out, n_cols), dtype=np.int64)
    residual = np.full(n_cols, np.nan)
    unique_info: dict[str, Any] = {}
    if parsimonious:
        check_cancel(cancel)
        report(progress, 0.85, f"harmonic residuals of {n_cols} eigenvectors")
        residual, unique = harmonic_residuals(emb.eigenvectors, trivial=emb.trivial,
                                              threshold=config.unique_threshold,
                                              regress_on=config.harmonic_regress_on, seed=config.seed)
        rank = parsimonious_order(emb.trivial, unique, n_out)
        unique_info = {"n_candidates": n_cols, "unique_eigenvalue_ranks": unique,
                       "n_unique": int(len(unique))}
    t_sel = time.perf_counter()
    nnz = int(weights.nnz) if hasattr(weights, "nnz") else int(np.count_nonzero(weights))
    provenance = {
        "representation": {k_: v for k_, v in info.items()},
        "n_particles": n,
        "sigma_used": sigma,
        "k_used": k,
        "graph_nnz": nnz,
        "solver": emb.method,
        "solver_info": {k_: v for k_, v in emb.info.items() if k_ != "residual_history"},
        "n_components_graph": emb.n_components,
        "seconds": {"representation": t_rep - t0, "graph": t_graph - t_rep, "eigen": t_eig - t_graph,
                    "selection": t_sel - t_eig},
        "order": config.order,
        **unique_info,
    }
    root_idx = getattr(dataset, "indices", None)
    indices = np.arange(n, dtype=np.int64) if root_idx is None else np.asarray(root_idx, dtype=np.int64)
    result = SpectralResult(
        eigenvalues=emb.eigenvalues[rank], eigenvectors=np.ascontiguousarray(emb.eigenvectors[:, rank]),
        indices=indices, trivial=emb.trivial[rank], config=config, provenance=provenance,
        eigenvalue_rank=rank, harmonic_residual=residual[rank],
    )
    meta = getattr(dataset, "meta", None)
    if isinstance(meta, dict):
        meta["spectral"] = result
    if workspace is not None:
        from napari_cryohet.stages._common import stage_dir

        result.save(stage_dir(workspace, "spectral"))
    report(progress, 1.0, f"done: lambda_1 = {emb.eigenvalues[min(1, len(emb.eigenvalues) - 1)]:.3g}")
    return result


# ------------------------------------------------------------------------- helpers


def regression_r2(
    eigenvectors: np.ndarray, targets: np.ndarray, *, train_fraction: float = 0.8, seed: int = 0
) -> np.ndarray:
    """Held-out R² of a least-squares fit ``target ≈ c + Phi a`` for each target column.

    The check of issue 4: the true parameters predicted linearly from the eigenvectors,
    fitted on ``train_fraction`` of the particles and scored on the rest.

    Parameters
    ----------
    eigenvectors
        ``(N, K)`` features.
    targets
        ``(N,)`` or ``(N, T)`` true parameters.

    Returns
    -------
    ``(T,)`` R² on the held-out particles.
    """
    phi = np.asarray(eigenvectors, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    y = y[:, None] if y.ndim == 1 else y
    n = len(phi)
    perm = np.random.default_rng(seed).permutation(n)
    n_train = int(round(train_fraction * n))
    train, test = perm[:n_train], perm[n_train:]
    design = np.c_[np.ones(n), phi]
    coef, *_ = np.linalg.lstsq(design[train], y[train], rcond=None)
    resid = y[test] - design[test] @ coef
    return 1.0 - (resid**2).mean(axis=0) / y[test].var(axis=0)
