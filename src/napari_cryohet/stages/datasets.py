"""The seeds' synthetic datasets, each a function with sizes as keyword parameters.

=====================  =====================================================  ==========================
function               what                                                   seed
=====================  =====================================================  ==========================
:func:`box_arms_2d`    2D chain (149 points, δ = 3.5): a box with two arms;   000 §3.1
                       1D projections, noise variance 2500
:func:`adk_chain`      Cα chains of the AdK closed→open trajectory, Gaussian  000 §3.2, Table 1, Fig. 12
                       atoms σ = 3 Å, 64 px, 200 kV, Cs 2 mm, Q0 0.1,
                       defocus ∈ {1.5, 1.75, 2, 2.25, 2.5} µm
:func:`adk_volumes`    heavy-atom AdK at 10 frames (discrete) or along the    004 §5.1
                       path (continuous), SNR 1/10, defocus 0.2–2 µm
:func:`assembly_classes`  AdK split into CORE / NMP / LID; classes lack       003 §2.5–2.7, §4.2.1
                       one or more domains (compositional heterogeneity)
:func:`cat`            Gaussian blobs, 1D state τ: the head turns             001 §3.1.1
:func:`pretzel`        rigid base + two identical, independent arms (τ₁, τ₂)  001 §3.1.2, §5
=====================  =====================================================  ==========================

All but :func:`box_arms_2d` return a :class:`~napari_cryohet.core.particle_dataset.ParticleDataset`
made by :func:`napari_cryohet.stages.simulate.simulate`, with ``ground_truth`` keys
(CONTRACT "Ground-truth keys"):

- ``"state"`` — ``(N,)`` int (frame / conformation / class index) or ``(N, k)`` float
  (continuous state);
- ``"state_params"`` — ``(N, k)`` float continuous parameters;
- ``"coords_a"`` — ``(N, M, 3)`` per-particle atom (blob) coordinates, model frame, Å;
- ``"clean_images"`` — ``(N, D, D)`` CTF-filtered noiseless images;
- ``"global/..."`` — ``sigma_a``, ``snr``, ``noise_var``, ``signal_var``, and per dataset
  ``reference_coords_a``, ``volumes (C, D, D, D)``, ``volume_states``, masks (see each
  function's docstring).

Their ``table`` carries the ground-truth state as columns (:func:`truth_state_columns`):
``truth_state`` for an ``(N,)`` or ``(N, 1)`` state, ``truth_state_0``, ``truth_state_1`` …
for an ``(N, k)`` one, so widgets that colour points by a table column can colour by truth.
They are not RELION labels and are left out of star files written from the dataset.

:func:`box_arms_2d` returns a :class:`Toy2DDataset` (1D projections are not square images).

AdK coordinates come from ``sample_data/adk_dims_ca.npz`` and ``adk_dims_heavy.npz`` in
the repository (DIMS trajectory of Beckstein, Seyler & Kumar 2018, CC-BY 4.0; see
``sample_data/README.md``). All coordinates are centred on one fixed point (the mean Cα
centroid over the trajectory), so every frame shares the model frame.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_cryohet.core.particle_dataset import ParticleDataset
from napari_cryohet.stages._common import CancelToken, ProgressCallback, report
from napari_cryohet.stages.simulate import AtomicModel, SimulationConfig, simulate

__all__ = [
    "Toy2DDataset",
    "box_arms_angles",
    "box_arms_chain",
    "project_points_1d",
    "density_2d",
    "box_arms_2d",
    "superpose_2d",
    "LOW_DIM_FRAMES",
    "load_adk_ca",
    "load_adk_heavy",
    "ADK_DOMAINS",
    "adk_chain",
    "adk_volumes",
    "assembly_classes",
    "cat_blobs",
    "cat",
    "pretzel_blobs",
    "pretzel",
    "DATASETS",
    "sample_data_dir",
    "TRUTH_STATE_COLUMN",
    "truth_state_columns",
    "add_truth_state_columns",
]

# ---------------------------------------------------------------------------------------
# data files


def sample_data_dir() -> Path:
    """The small reference data shipped with the project (``sample_data/``).

    Inside an installed wheel it is ``napari_cryohet/sample_data`` (pyproject force-include);
    in a source checkout (editable install) it is the repository's top-level folder.
    """
    packaged = Path(__file__).resolve().parents[1] / "sample_data"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "sample_data"


def _load_npz(name: str) -> dict[str, np.ndarray]:
    from napari_cryohet.io.errors import MissingFileError

    path = sample_data_dir() / name
    if not path.is_file():
        raise MissingFileError(path, "reference data file not found (it ships in the repository's sample_data/)")
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


_ADK_CACHE: dict[str, dict[str, np.ndarray]] = {}


def _adk_centre() -> np.ndarray:
    return load_adk_ca()["centre_a"]


def load_adk_ca() -> dict[str, np.ndarray]:
    """AdK Cα trajectory: ``coords (102, 214, 3)`` Å centred, ``resnames``, ``resids``.

    ``centre_a`` is the (x, y, z) subtracted from the file's coordinates (the mean Cα
    centroid over all frames), shared with :func:`load_adk_heavy`.
    """
    if "ca" not in _ADK_CACHE:
        data = _load_npz("adk_dims_ca.npz")
        coords = data["coords"].astype(np.float32)
        centre = coords.mean(axis=(0, 1))
        _ADK_CACHE["ca"] = {"coords": coords - centre, "resnames": data["resnames"], "resids": data["resids"],
                            "centre_a": centre.astype(np.float32)}
    return _ADK_CACHE["ca"]


#: Atomic numbers used as Gaussian-atom weights for heavy atoms.
_ATOMIC_NUMBER = {"C": 6.0, "N": 7.0, "O": 8.0, "S": 16.0, "P": 15.0, "H": 1.0}


def load_adk_heavy() -> dict[str, np.ndarray]:
    """AdK heavy atoms: ``coords (102, 1656, 3)`` Å (same frame as :func:`load_adk_ca`),
    ``elements``, ``resids``, ``weights`` (atomic numbers)."""
    if "heavy" not in _ADK_CACHE:
        data = _load_npz("adk_dims_heavy.npz")
        coords = data["coords"].astype(np.float32) - _adk_centre()
        elements = data["elements"].astype(str)
        weights = np.array([_ATOMIC_NUMBER.get(e[:1].upper(), 6.0) for e in elements], dtype=np.float32)
        _ADK_CACHE["heavy"] = {"coords": coords, "elements": elements, "resids": data["resids"], "weights": weights}
    return _ADK_CACHE["heavy"]


#: Domains of E. coli adenylate kinase by residue ranges (inclusive): the CORE, the
#: AMP-binding NMP domain and the ATP lid (LID).
ADK_DOMAINS: dict[str, tuple[tuple[int, int], ...]] = {
    "CORE": ((1, 29), (60, 121), (160, 214)),
    "NMP": ((30, 59),),
    "LID": ((122, 159),),
}


def _domain_of(resids: np.ndarray) -> np.ndarray:
    out = np.full(len(resids), "", dtype="<U8")
    for name, ranges in ADK_DOMAINS.items():
        for lo, hi in ranges:
            out[(resids >= lo) & (resids <= hi)] = name
    return out


def _trajectory_at(coords: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Coordinates at path positions ``t ∈ [0, 1]`` by linear interpolation between frames.

    ``coords (F, M, 3)``, ``t (N,)`` → ``(N, M, 3)``.
    """
    f = np.clip(np.asarray(t, dtype=np.float64), 0.0, 1.0) * (len(coords) - 1)
    lo = np.floor(f).astype(np.int64)
    hi = np.minimum(lo + 1, len(coords) - 1)
    w = (f - lo).astype(np.float32)[:, None, None]
    return (1 - w) * coords[lo] + w * coords[hi]


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


#: Name of the ``dataset.table`` column holding a scalar ground-truth state; a
#: ``(N, k)`` state with ``k > 1`` gets ``truth_state_0 … truth_state_{k-1}``.
TRUTH_STATE_COLUMN = "truth_state"


def truth_state_columns(state: Any) -> dict[str, np.ndarray]:
    """Per-particle table columns of a ground-truth ``state`` (colour points by truth).

    ``(N,)`` (int class / frame, or float) or ``(N, 1)`` → ``{"truth_state": (N,)}``;
    ``(N, k)``, ``k > 1`` (continuous multi-parameter) → ``{"truth_state_0": (N,), …}``.
    The dtype is kept (int stays int). ``None`` or any other shape → ``{}``.
    """
    if state is None:
        return {}
    arr = np.asarray(state)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim == 1:
        return {TRUTH_STATE_COLUMN: arr}
    if arr.ndim == 2:
        return {f"{TRUTH_STATE_COLUMN}_{j}": arr[:, j] for j in range(arr.shape[1])}
    return {}


def add_truth_state_columns(dataset: ParticleDataset) -> ParticleDataset:
    """Add :func:`truth_state_columns` of ``ground_truth["state"]`` to ``dataset.table``
    (in place; existing columns of those names are left as they are). Returns ``dataset``.

    These columns are not RELION labels: :func:`napari_cryohet.io.write_particles.write_dataset_star`
    writes only the ``rln*`` columns of a synthetic dataset's table, so they never reach a
    star file (the truth travels in ``<name>_truth.npz``).
    """
    for name, values in truth_state_columns((dataset.ground_truth or {}).get("state")).items():
        if name not in dataset.table.columns:
            dataset.table[name] = values
    return dataset


def _simulate_dataset(name: str, model: AtomicModel, *, defocus_range_um: tuple[float, float] | None = None,
                      defocus_values_um: tuple[float, ...] | None = None, progress: ProgressCallback | None,
                      cancel: CancelToken | None, **config: Any) -> ParticleDataset:
    """Simulate ``model`` (``config``: :class:`SimulationConfig` fields, defocus given in µm),
    name the dataset ``name`` and add its ground-truth state to its table."""
    if defocus_range_um is not None:
        config["defocus_range_a"] = (defocus_range_um[0] * 1e4, defocus_range_um[1] * 1e4)
    if defocus_values_um is not None:
        config["defocus_values_a"] = tuple(float(v) * 1e4 for v in defocus_values_um)
    ds = simulate(model, SimulationConfig(**config), progress=progress, cancel=cancel)
    ds.meta["name"] = name
    return add_truth_state_columns(ds)


# ---------------------------------------------------------------------------------------
# box_arms_2d: seed 000 §3.1

#: ``ν`` of eq. 2.9 for the projections: puts the variance of the clean projections at
#: 182.6, the value reported in §3.1 of 000_8d73a95ce4c6e7ab.txt (measured on 20 000
#: random conformations and poses), so its noise variance 2500 gives its SNR 0.073.
BOX_ARMS_AMPLITUDE = 0.0699
#: 0-based index of ``θ_j`` for the paper's 1-based ``j``.
_J = {33: 32, 53: 52, 73: 72, 93: 92, 123: 122, 133: 132}


def box_arms_angles(arm1_rad: Any, arm2_rad: Any, box_rad: Any, *, m: int = 149) -> torch.Tensor:
    """Turning angles ``Θ (..., m-2)`` of the box with two arms, eq. 3.2–3.3 of seed 000.

    ``θ_33 = −π/2 + arm1``, ``θ_133 = −π/2 + arm2``, ``θ_53 = θ_93 = −π/2 + box``,
    ``θ_73 = θ_123 = −π/2 − box`` (1-based ``j`` as in the paper), all other angles 0.
    The reference conformation (arms aligned, square box) has all three parameters 0.
    """
    a1, a2, b = (torch.as_tensor(v, dtype=torch.float64) for v in (arm1_rad, arm2_rad, box_rad))
    a1, a2, b = torch.broadcast_tensors(a1, a2, b)
    theta = torch.zeros(*a1.shape, m - 2, dtype=torch.float64)
    half = -torch.pi / 2
    theta[..., _J[33]] = half + a1
    theta[..., _J[133]] = half + a2
    theta[..., _J[53]] = half + b
    theta[..., _J[93]] = half + b
    theta[..., _J[73]] = half - b
    theta[..., _J[123]] = half - b
    return theta


def box_arms_chain(theta: torch.Tensor, *, delta: float = 3.5, j0: int = 33) -> torch.Tensor:
    """Chain ``(..., m, 2)`` from turning angles, eq. 3.1 of seed 000, model frame.

    The reference atom ``z_{j0}`` (1-based ``j0``, default 33 as in the paper) sits at the
    origin with frame ``F_{j0} = I`` (its bond points along +y).
    """
    from napari_cryohet.core.frenet import build_chain_2d

    theta = torch.as_tensor(theta, dtype=torch.float64)
    zero = torch.zeros(2, dtype=theta.dtype)
    return build_chain_2d(theta, ref_index=j0 - 1, ref_position=zero, ref_frame=torch.eye(2, dtype=theta.dtype),
                          bond_lengths_a=delta)


def _rotate_2d(coords: torch.Tensor, angle_rad: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(angle_rad)[..., None], torch.sin(angle_rad)[..., None]
    x, y = coords[..., 0], coords[..., 1]
    return torch.stack([c * x - s * y, s * x + c * y], -1)


def project_points_1d(coords: torch.Tensor, *, grid_x_a: torch.Tensor, sigma: float,
                      amplitude: float = 1.0) -> torch.Tensor:
    """Exact projection along y of a 2D Gaussian sum, eq. 3.4 of seed 000 (times ``ν``).

    ``∫ ν Σ_j exp(−|x − z_j|² / 2σ²) dy = ν √(2π) σ Σ_j exp(−(x − x_j)² / 2σ²)``.

    Parameters
    ----------
    coords
        ``(..., M, 2)`` posed point coordinates (x, y), differentiable.
    grid_x_a
        ``(L,)`` sample positions along x.

    Returns
    -------
    ``(..., L)`` projections.
    """
    diff = grid_x_a - coords[..., :, 0:1]  # (..., M, L)
    gauss = torch.exp(-0.5 * (diff / sigma) ** 2)
    return amplitude * np.sqrt(2 * np.pi) * sigma * gauss.sum(-2)


def density_2d(coords: torch.Tensor, *, grid_a: torch.Tensor, sigma: float) -> torch.Tensor:
    """2D density ``u(x) = Σ_j exp(−|x − z_j|² / 2σ²)`` (eq. 3.4 of seed 000) on a grid.

    ``coords (..., M, 2)``, ``grid_a (G,)`` (the same axis for x and y) → ``(..., G, G)``
    indexed (y, x). Separable: an outer product per point.
    """
    gx = torch.exp(-0.5 * ((grid_a - coords[..., :, 0:1]) / sigma) ** 2)  # (..., M, G)
    gy = torch.exp(-0.5 * ((grid_a - coords[..., :, 1:2]) / sigma) ** 2)  # (..., M, G)
    return torch.einsum("...my,...mx->...yx", gy, gx)


@dataclass
class Toy2DDataset:
    """The 2D box-with-two-arms dataset of seed 000 §3.1 (1D projections of 2D chains).

    Per particle ``i`` (first axis ``N``):

    Attributes
    ----------
    projections
        ``(N, L)`` noisy 1D projections ``Y_i = T(u_i) + ς_i`` (float32).
    clean_projections
        ``(N, L)`` noiseless projections ``T(u_i)``.
    rotation_angles_rad
        ``(N,)`` in-plane pose ``F̂_i = R(α_i)`` (uniform on SO(2)); the posed chain is
        ``R(α_i) z`` (see :meth:`posed_coords`), projected along y onto ``grid_x_a``.
    coords
        ``(N, m, 2)`` chain in the model frame (``z_{j0} = 0``, ``F_{j0} = I``), before
        the pose.
    angles_rad
        ``(N, m-2)`` turning angles ``Θ_i`` (eq. 3.1–3.3).
    state_params
        ``(N, 3)`` the three true parameters (``θ̃_33``, ``θ̃_133``, ``θ̃_box``) in radians:
        the two arm angles ∈ [−π/2, π/2] and the box angle ∈ [−π/4, π/4].
    low_dim
        ``(N, G, G)`` noisy 2D densities (eq. 3.4, noise variance ``low_dim_noise_var``):
        the low-dimensional representation of Assumption 3 used for the graph Laplacian in
        §3.1, in the frame ``low_dim_frame`` names.
    reference_coords, reference_angles_rad
        ``(m, 2)``, ``(m-2,)``: the known conformation (all three parameters 0).
    grid_x_a, low_dim_grid_a
        ``(L,)``, ``(G,)`` sample positions (Å) of the projections and of the densities.
    delta, sigma, amplitude, noise_var, low_dim_noise_var, j0
        Bond length, Gaussian width, ``ν`` of the projections, noise variances and the
        1-based reference atom.
    low_dim_frame
        Frame of ``low_dim``: ``"consensus"`` (each chain superposed on
        ``reference_coords`` by least squares over all atoms, centroid at the origin — the
        frame a consensus refinement aligns particles to; :func:`superpose_2d`) or
        ``"anchor"`` (the model frame of ``coords``, ``z_{j0} = 0``, ``F_{j0} = I``).
        Files written before this field existed load as ``"anchor"``.
    """

    projections: np.ndarray
    clean_projections: np.ndarray
    rotation_angles_rad: np.ndarray
    coords: np.ndarray
    angles_rad: np.ndarray
    state_params: np.ndarray
    low_dim: np.ndarray
    reference_coords: np.ndarray
    reference_angles_rad: np.ndarray
    grid_x_a: np.ndarray
    low_dim_grid_a: np.ndarray
    delta: float
    sigma: float
    amplitude: float
    noise_var: float
    low_dim_noise_var: float
    j0: int
    seed: int = 0
    low_dim_frame: str = "anchor"

    def __len__(self) -> int:
        return len(self.projections)

    def posed_coords(self) -> np.ndarray:
        """``(N, m, 2)`` chains in their poses, ``R(α_i) z_i``."""
        return _rotate_2d(torch.as_tensor(self.coords, dtype=torch.float64),
                          torch.as_tensor(self.rotation_angles_rad, dtype=torch.float64)).numpy().astype(np.float32)

    def low_dim_coords(self) -> np.ndarray:
        """``(N, m, 2)`` chains in the frame of ``low_dim`` (``low_dim_frame``), float32."""
        return _low_dim_frame_coords(self.coords, self.reference_coords, self.low_dim_frame).astype(np.float32)

    def measured_snr(self) -> float:
        """``var(clean projections) / var(noise)``."""
        noise = self.projections.astype(np.float64) - self.clean_projections
        return float(self.clean_projections.var() / noise.var())

    def save(self, path: str | Path) -> Path:
        """Write every field to one ``.npz`` (atomic)."""
        from napari_cryohet.io.atomic import save_npz_atomic

        arrays = {f.name: np.asarray(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return save_npz_atomic(path, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> Toy2DDataset:
        """Read a dataset written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as data:
            kwargs = {}
            for f in dataclasses.fields(cls):
                if f.name not in data.files and f.default is not dataclasses.MISSING:
                    continue  # a field added later: its default (see the attribute docs)
                value = data[f.name]
                kwargs[f.name] = value.item() if value.ndim == 0 else value
        for name in ("j0", "seed"):
            kwargs[name] = int(kwargs[name])
        if "low_dim_frame" in kwargs:
            kwargs["low_dim_frame"] = str(kwargs["low_dim_frame"])
        return cls(**kwargs)


LOW_DIM_FRAMES = ("consensus", "anchor")


def superpose_2d(coords: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Least-squares superposition of 2D point clouds on a reference (Kabsch in 2D).

    Each ``coords[i]`` is centred on its centroid and turned by the proper rotation that
    minimises ``Σ_j |R (z_ij − c_i) − (r_j − c_r)|²``; in 2D that angle is closed-form,
    ``atan2(Σ_j x_j × y_j, Σ_j x_j · y_j)`` with ``x`` the centred points and ``y`` the
    centred reference (``scipy.linalg.orthogonal_procrustes`` would also allow a reflection).

    Parameters
    ----------
    coords
        ``(N, m, 2)`` point clouds.
    reference
        ``(m, 2)`` the cloud to superpose on.

    Returns
    -------
    ``(N, m, 2)`` float64 superposed clouds, centroid at the origin.
    """
    x = np.asarray(coords, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if x.ndim != 3 or x.shape[-1] != 2 or r.shape != x.shape[1:]:
        raise ValueError(f"superpose_2d: expected coords (N, m, 2) and reference (m, 2), "
                         f"got {x.shape} and {r.shape}")
    x = x - x.mean(axis=1, keepdims=True)
    r = r - r.mean(axis=0)
    dot = np.einsum("nmi,mi->n", x, r)
    cross = np.einsum("nm,m->n", x[..., 0], r[:, 1]) - np.einsum("nm,m->n", x[..., 1], r[:, 0])
    return _rotate_2d(torch.as_tensor(x), torch.as_tensor(np.arctan2(cross, dot))).numpy()


def _low_dim_frame_coords(coords: np.ndarray, reference: np.ndarray, frame: str) -> np.ndarray:
    """Chains ``(N, m, 2)`` in the frame ``frame`` of the low-dimensional densities."""
    if frame == "consensus":
        return superpose_2d(coords, reference)
    return np.asarray(coords, dtype=np.float64)


def box_arms_2d(
    n_particles: int = 400,
    *,
    noise_var: float = 2500.0,
    grid_size: int = 128,
    grid_spacing_a: float = 2.5,
    low_dim_size: int = 64,
    low_dim_spacing_a: float = 5.0,
    low_dim_noise_var: float = 9.0,
    sigma: float = 7.0,
    delta: float = 3.5,
    amplitude: float = BOX_ARMS_AMPLITUDE,
    low_dim_frame: str = "consensus",
    seed: int = 0,
) -> Toy2DDataset:
    """The 2D box with two arms of 000_8d73a95ce4c6e7ab.txt §3.1.

    A chain of ``m = 149`` points, ``δ = 3.5`` (eq. 3.1), all turning angles 0 except at
    the corners (eq. 3.2–3.3): arm angles ``θ̃_33, θ̃_133 ~ U[−π/2, π/2]``, box angle
    ``θ̃_box ~ U[−π/4, π/4]``; reference atom ``j0 = 33``. Each chain is rotated by
    ``F̂ ~ U(SO(2))``; its density (eq. 3.4, σ = 7) is projected along the vertical axis
    onto ``grid_size`` = 128 points and Gaussian noise of variance 2500 is added. With
    ``ν`` = :data:`BOX_ARMS_AMPLITUDE` the clean projections have variance ≈ 182.6 and the
    SNR is 0.073, as in the paper. The low-dimensional representation is the density of
    each chain on a 64 × 64 grid plus noise of variance 9 (§3.1).

    The paper does not state the grid spacing; 2.5 Å (projections) and 5 Å (densities)
    cover the largest conformation (radius 133 Å about ``z_{j0}`` plus 3σ; 135 Å about the
    centroid of a superposed chain).

    Nor does it state the frame of the densities. Assumption 3 has them come from a
    low-resolution reconstruction of each particle, which in cryo-EM is aligned to the
    consensus map; ``low_dim_frame="consensus"`` (default) superposes each chain on the
    reference conformation over all atoms (:func:`superpose_2d`). ``"anchor"`` keeps the
    frame of eq. 3.1 (``z_{33}``, ``F_{33}`` fixed), in which the hinge at θ_33 swings the
    box and the second arm (115 atoms) about atom 34 and the short arm sweeps the whole
    field of view; there its density spreads over hundreds of principal components and even
    a supervised regressor on 30 of them predicts θ̃_133 with R² ≈ 0.74 only
    (docs/spectral.md).

    Parameters
    ----------
    n_particles
        ``N`` (the paper uses 4000).
    low_dim_frame
        ``"consensus"`` or ``"anchor"`` (see above).
    seed
        Everything random derives from it.

    Returns
    -------
    Toy2DDataset
    """
    if n_particles < 1:
        raise ValueError(f"n_particles must be >= 1, got {n_particles}")
    if low_dim_frame not in LOW_DIM_FRAMES:
        raise ValueError(f"low_dim_frame: expected one of {LOW_DIM_FRAMES}, got {low_dim_frame!r}")
    rng = np.random.default_rng([int(seed), 20])
    arms = rng.uniform(-np.pi / 2, np.pi / 2, (n_particles, 2))
    box = rng.uniform(-np.pi / 4, np.pi / 4, n_particles)
    alpha = rng.uniform(0.0, 2 * np.pi, n_particles)
    theta = box_arms_angles(arms[:, 0], arms[:, 1], box)  # (N, m-2)
    coords = box_arms_chain(theta, delta=delta)  # (N, m, 2)
    posed = _rotate_2d(coords, torch.as_tensor(alpha))
    grid = (torch.arange(grid_size, dtype=torch.float64) - grid_size // 2) * grid_spacing_a
    clean = project_points_1d(posed, grid_x_a=grid, sigma=sigma, amplitude=amplitude).numpy()
    noisy = clean + rng.normal(0.0, np.sqrt(noise_var), clean.shape)
    low_grid = (torch.arange(low_dim_size, dtype=torch.float64) - low_dim_size // 2) * low_dim_spacing_a
    ref_theta = box_arms_angles(0.0, 0.0, 0.0)
    reference = box_arms_chain(ref_theta, delta=delta)
    low_coords = torch.as_tensor(_low_dim_frame_coords(coords.numpy(), reference.numpy(), low_dim_frame))
    low = np.empty((n_particles, low_dim_size, low_dim_size), dtype=np.float32)
    for s in range(0, n_particles, 256):
        low[s:s + 256] = density_2d(low_coords[s:s + 256], grid_a=low_grid, sigma=sigma).numpy()
    low += rng.normal(0.0, np.sqrt(low_dim_noise_var), low.shape).astype(np.float32)
    return Toy2DDataset(
        projections=noisy.astype(np.float32),
        clean_projections=clean.astype(np.float32),
        rotation_angles_rad=alpha.astype(np.float32),
        coords=coords.numpy().astype(np.float32),
        angles_rad=theta.numpy().astype(np.float32),
        state_params=np.column_stack([arms, box]).astype(np.float32),
        low_dim=low,
        reference_coords=reference.numpy().astype(np.float32),
        reference_angles_rad=ref_theta.numpy().astype(np.float32),
        grid_x_a=grid.numpy().astype(np.float32),
        low_dim_grid_a=low_grid.numpy().astype(np.float32),
        delta=float(delta), sigma=float(sigma), amplitude=float(amplitude), noise_var=float(noise_var),
        low_dim_noise_var=float(low_dim_noise_var), j0=33, seed=int(seed), low_dim_frame=low_dim_frame,
    )


# ---------------------------------------------------------------------------------------
# adenylate kinase


def adk_chain(
    n_particles: int = 200,
    *,
    box_size: int = 64,
    apix: float = 2.0,
    snr: float | None = 0.05,
    sigma_a: float = 3.0,
    continuous: bool = False,
    voltage_kv: float = 200.0,
    cs_mm: float = 2.0,
    amplitude_contrast: float = 0.1,
    defocus_values_um: tuple[float, ...] = (1.5, 1.75, 2.0, 2.25, 2.5),
    shift_std_a: float = 0.0,
    seed: int = 0,
    batch_size: int = 256,
    device: str | None = "cpu",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> ParticleDataset:
    """Cα chains of the AdK closed→open trajectory (000_8d73a95ce4c6e7ab.txt §3.2.1).

    Each particle takes a frame drawn uniformly from the 102 frames (or, with
    ``continuous=True``, a position ``t ~ U[0, 1]`` along the path, linearly interpolated
    between frames), a uniform pose on SO(3), and a defocus drawn from
    ``defocus_values_um``; its density is a sum of Gaussians of σ = 3 Å at the Cα atoms
    (eq. 3.8), imaged at 200 kV, Cs 2 mm, amplitude contrast 0.1 on 64 × 64 pixels
    (Table 1 conditions). The paper gives no pixel size; 2 Å/px (a 128 Å box) holds the
    largest frame (radius 35 Å) with its CTF fringes. Its SNRs are 0.055 and 0.0136.

    Ground truth
    ------------
    ``state``
        ``(N,)`` int frame index (discrete) or ``(N, 1)`` float path position ``t``
        (continuous).
    ``state_params``
        ``(N, 1)`` path position ``t = frame / 101`` ∈ [0, 1].
    ``coords_a``
        ``(N, 214, 3)`` Cα coordinates, model frame, Å.
    ``global/reference_coords_a``
        ``(214, 3)`` frame 0, the known conformation of §3.2 (Assumption 2).
    ``global/trajectory_coords_a``
        ``(102, 214, 3)`` all frames.
    ``global/sigma_a``, ``clean_images``, ``global/snr``, ``global/noise_var``.
    """
    ca = load_adk_ca()
    traj = ca["coords"]  # (F, 214, 3)
    n_frames = len(traj)
    rng = np.random.default_rng([int(seed), 30])
    if continuous:
        t = rng.uniform(0.0, 1.0, n_particles)
        coords = _trajectory_at(traj, t)
        state: np.ndarray = t[:, None].astype(np.float32)
    else:
        frame = rng.integers(0, n_frames, n_particles)
        coords = traj[frame]
        t = frame / (n_frames - 1)
        state = frame.astype(np.int64)
    truth = {
        "state": state,
        "state_params": t[:, None].astype(np.float32),
        "global/reference_coords_a": traj[0],
        "global/trajectory_coords_a": traj,
    }
    model = AtomicModel(coords_a=coords, sigma_a=sigma_a, truth=truth)
    return _simulate_dataset("adk_chain", model, box_size=box_size, apix=apix, snr=snr, voltage_kv=voltage_kv,
                             cs_mm=cs_mm, amplitude_contrast=amplitude_contrast, defocus_values_um=defocus_values_um,
                             shift_std_a=shift_std_a, seed=seed, batch_size=batch_size, device=device,
                             progress=progress, cancel=cancel)


def adk_volumes(
    n_particles: int = 200,
    *,
    n_conformations: int = 10,
    continuous: bool = False,
    box_size: int = 64,
    apix: float = 1.5,
    sigma_a: float = 1.5,
    snr: float | None = 0.1,
    defocus_range_um: tuple[float, float] = (0.2, 2.0),
    voltage_kv: float = 300.0,
    cs_mm: float = 2.7,
    amplitude_contrast: float = 0.1,
    shift_std_a: float = 0.0,
    seed: int = 0,
    batch_size: int = 256,
    device: str | None = "cpu",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> ParticleDataset:
    """Heavy-atom AdK volumes at chosen frames, seed 004 §5.1 style.

    ``n_conformations`` frames evenly spaced along the closed→open trajectory; discrete
    mode gives each conformation an equal share of the particles (like the ten states of
    004 §5.1), continuous mode draws ``t ~ U[0, 1]`` along the whole path. Heavy atoms
    are Gaussians of σ = ``sigma_a`` weighted by atomic number; images are their exact
    analytic projections (no voxel grid), SNR 1/10, defocus uniform in 0.2–2 µm.

    Ground truth
    ------------
    ``state``
        ``(N,)`` int conformation index (discrete) or ``(N, 1)`` float ``t`` (continuous).
    ``state_params``
        ``(N, 1)`` path position ``t`` ∈ [0, 1].
    ``coords_a``
        continuous mode only: ``(N, 1656, 3)`` heavy-atom coordinates.
    ``global/volumes``
        ``(C, D, D, D)`` densities of the chosen frames (``core.atoms.gaussian_density_3d``).
    ``global/volume_states``
        ``(C,)`` path positions of those frames; ``global/frames`` ``(C,)`` frame indices.
    ``global/conformation_coords_a``
        ``(C, 1656, 3)``; ``global/atom_weights`` ``(1656,)``.
    """
    heavy = load_adk_heavy()
    traj, weights = heavy["coords"], heavy["weights"]
    n_frames = len(traj)
    if not 1 <= n_conformations <= n_frames:
        raise ValueError(f"n_conformations must lie in [1, {n_frames}], got {n_conformations}")
    frames = np.unique(np.linspace(0, n_frames - 1, n_conformations).round().astype(np.int64))
    conf_coords = traj[frames]  # (C, M, 3)
    volume_states = (frames / (n_frames - 1)).astype(np.float32)
    rng = np.random.default_rng([int(seed), 40])
    truth: dict[str, np.ndarray] = {
        "global/volume_states": volume_states,
        "global/frames": frames,
        "global/conformation_coords_a": conf_coords,
        "global/atom_weights": weights,
    }
    if continuous:
        t = rng.uniform(0.0, 1.0, n_particles)
        truth["state"] = t[:, None].astype(np.float32)
        truth["state_params"] = t[:, None].astype(np.float32)
        model = AtomicModel(coords_a=_trajectory_at(traj, t), sigma_a=sigma_a, weights=weights, truth=truth)
    else:
        conformation = rng.permutation(np.arange(n_particles) % len(frames))
        truth["state"] = conformation.astype(np.int64)
        truth["state_params"] = volume_states[conformation][:, None]
        model = AtomicModel(coords_a=conf_coords, sigma_a=sigma_a, conformation=conformation, weights=weights,
                            truth=truth, store_coords=False)
    truth["global/volumes"] = _volumes(conf_coords, d=box_size, apix=apix, sigma_a=sigma_a, weights=weights,
                                       device=device, progress=progress)
    return _simulate_dataset("adk_volumes", model, box_size=box_size, apix=apix, snr=snr, voltage_kv=voltage_kv,
                             cs_mm=cs_mm, amplitude_contrast=amplitude_contrast, defocus_range_um=defocus_range_um,
                             shift_std_a=shift_std_a, seed=seed, batch_size=batch_size, device=device,
                             progress=progress, cancel=cancel)


def assembly_classes(
    n_particles: int = 200,
    *,
    classes: tuple[tuple[str, ...], ...] = (("CORE", "NMP", "LID"), ("CORE", "NMP"), ("CORE", "LID"), ("CORE",)),
    class_probabilities: tuple[float, ...] | None = None,
    frame: int = 0,
    box_size: int = 64,
    apix: float = 1.5,
    sigma_a: float = 1.5,
    snr: float | None = 0.1,
    defocus_range_um: tuple[float, float] = (0.5, 2.5),
    voltage_kv: float = 300.0,
    cs_mm: float = 2.7,
    amplitude_contrast: float = 0.1,
    shift_std_a: float = 0.0,
    seed: int = 0,
    batch_size: int = 256,
    device: str | None = "cpu",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> ParticleDataset:
    """Compositional heterogeneity: AdK assembly intermediates lacking domains.

    Like the L17-depleted 50S intermediates of 003 §4.2.1 (subunits present or absent),
    the complex is heavy-atom AdK (one ``frame``) split by residue ranges into the
    domains of :data:`ADK_DOMAINS`; class ``c`` keeps the domains named in
    ``classes[c]`` (default: complete, −LID, −NMP, CORE only). The particles' class is
    drawn with ``class_probabilities`` (default uniform); images follow the forward model
    of 003 eq. 2.1–2.2 (projection, CTF, noise).

    Ground truth
    ------------
    ``state``
        ``(N,)`` int class index.
    ``global/volumes``
        ``(C, D, D, D)`` density of each class.
    ``global/class_masks``
        ``(C, M)`` bool: atom ``j`` present in class ``c``.
    ``global/class_names``
        ``(C,)`` str, e.g. ``"CORE+NMP"``.
    ``global/reference_coords_a``
        ``(M, 3)`` heavy-atom coordinates (all domains); ``global/atom_domains`` ``(M,)``
        str; ``global/atom_weights`` ``(M,)`` atomic numbers.
    """
    heavy = load_adk_heavy()
    if not 0 <= frame < len(heavy["coords"]):
        raise ValueError(f"frame must lie in [0, {len(heavy['coords'])}), got {frame}")
    coords = heavy["coords"][frame]  # (M, 3)
    domains = _domain_of(heavy["resids"])
    for c in classes:
        unknown = set(c) - set(ADK_DOMAINS)
        if unknown or not c:
            raise ValueError(f"classes: each class must be a non-empty subset of {sorted(ADK_DOMAINS)}, got {c}")
    masks = np.stack([np.isin(domains, list(c)) for c in classes])  # (C, M)
    n_classes = len(classes)
    if class_probabilities is None:
        probs = np.full(n_classes, 1.0 / n_classes)
    else:
        probs = np.asarray(class_probabilities, dtype=np.float64)
        if probs.shape != (n_classes,) or (probs < 0).any() or probs.sum() <= 0:
            raise ValueError(f"class_probabilities: expected {n_classes} non-negative numbers")
        probs = probs / probs.sum()
    rng = np.random.default_rng([int(seed), 50])
    state = rng.choice(n_classes, size=n_particles, p=probs).astype(np.int64)
    class_weights = masks * heavy["weights"][None, :]  # (C, M)
    truth = {
        "state": state,
        "global/class_masks": masks,
        "global/class_names": np.array(["+".join(c) for c in classes]),
        "global/reference_coords_a": coords,
        "global/atom_domains": domains,
        "global/atom_weights": heavy["weights"],
    }
    truth["global/volumes"] = _volumes(np.broadcast_to(coords, (n_classes, *coords.shape)), d=box_size, apix=apix,
                                       sigma_a=sigma_a, weights=class_weights, device=device, progress=progress)
    model = AtomicModel(coords_a=np.broadcast_to(coords, (n_classes, *coords.shape)).copy(), sigma_a=sigma_a,
                        conformation=state, weights=class_weights, truth=truth, store_coords=False)
    return _simulate_dataset("assembly_classes", model, box_size=box_size, apix=apix, snr=snr,
                             voltage_kv=voltage_kv, cs_mm=cs_mm, amplitude_contrast=amplitude_contrast,
                             defocus_range_um=defocus_range_um, shift_std_a=shift_std_a, seed=seed,
                             batch_size=batch_size, device=device, progress=progress, cancel=cancel)


# ---------------------------------------------------------------------------------------
# seed 001 toys: the cat and the pretzel


def _rot_z(angle: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    z, o = np.zeros_like(c), np.ones_like(c)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def _rot_y(angle: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    z, o = np.zeros_like(c), np.ones_like(c)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


_CAT_BODY = np.array(
    [[x, 0.0, 0.0] for x in range(-30, 31, 10)]  # torso
    + [[sx * 24.0, sy * 8.0, z] for sx in (-1, 1) for sy in (-1, 1) for z in (-10.0, -20.0, -30.0)]  # legs
    + [[-38.0, 0.0, 6.0], [-45.0, 0.0, 14.0], [-50.0, 0.0, 23.0], [-52.0, 0.0, 32.0]]  # tail
    + [[36.0, 0.0, 10.0]],  # neck
    dtype=np.float64,
)
_CAT_PIVOT = np.array([36.0, 0.0, 10.0])
_CAT_HEAD = np.array([[10.0, 0.0, 8.0], [8.0, 6.0, 18.0], [8.0, -6.0, 18.0], [18.0, 0.0, 6.0]])  # about the pivot
_CAT_WEIGHTS = np.concatenate([np.full(7, 1.5), np.ones(12), np.ones(4), [1.0], [2.0, 1.0, 1.0, 1.0]]).astype(np.float32)
#: part of each cat blob: 0 rigid body, 1 head (moves with τ).
CAT_PARTS = np.concatenate([np.zeros(len(_CAT_BODY)), np.ones(len(_CAT_HEAD))]).astype(np.int64)


def cat_blobs(tau: Any) -> np.ndarray:
    """Blob centres of the cat at states ``τ`` (001 §3.1.1): ``(N,)`` → ``(N, 28, 3)`` Å.

    A rigid body (torso, four legs, tail, neck) and a head whose blobs turn about the
    vertical axis through the neck by ``φ(τ) = (τ − ½) π`` (−90° … +90°): every centre
    follows a continuous trajectory in ``τ ∈ [0, 1]``. Centred so that ``τ = ½`` has its
    centroid at the origin.
    """
    tau = np.atleast_1d(np.asarray(tau, dtype=np.float64))
    head = _CAT_PIVOT + np.einsum("nij,mj->nmi", _rot_z((tau - 0.5) * np.pi), _CAT_HEAD)  # (N, 4, 3)
    body = np.broadcast_to(_CAT_BODY, (len(tau), *_CAT_BODY.shape))
    blobs = np.concatenate([body, head], axis=1)
    centre = np.concatenate([_CAT_BODY, _CAT_PIVOT + _CAT_HEAD]).mean(0)
    return (blobs - centre).astype(np.float32)


def _pretzel_base() -> np.ndarray:
    s = np.linspace(0, 2 * np.pi, 10, endpoint=False)
    rings = [np.column_stack([cx + 12 * np.cos(s), 12 * np.sin(s), np.zeros_like(s)]) for cx in (-14.0, 14.0)]
    return np.concatenate(rings)


_PRETZEL_BASE = _pretzel_base()
_PRETZEL_ARM_BLOBS = 5
#: part of each pretzel blob: 0 rigid base, 1 arm 1, 2 arm 2.
PRETZEL_PARTS = np.concatenate([np.zeros(len(_PRETZEL_BASE)), np.ones(_PRETZEL_ARM_BLOBS),
                                np.full(_PRETZEL_ARM_BLOBS, 2)]).astype(np.int64)


def _pretzel_arm(tau: np.ndarray) -> np.ndarray:
    """One arm at states ``τ (N,)``: 5 blobs from (30, 0, 0) outwards, bending in x–z."""
    beta = (tau - 0.5) * (2 * np.pi / 3)  # ±60°
    j = np.arange(_PRETZEL_ARM_BLOBS)
    angles = beta[:, None] * (0.6 + 0.4 * j / (_PRETZEL_ARM_BLOBS - 1))  # (N, 5): a curling arm
    steps = 8.0 * np.stack([np.cos(angles), np.zeros_like(angles), np.sin(angles)], -1)
    return np.array([30.0, 0.0, 0.0]) + np.cumsum(steps, axis=1) - steps[:, :1]


def pretzel_blobs(tau: Any) -> np.ndarray:
    """Blob centres of the pretzel at states ``τ (N, 2)`` (001 §3.1.2) → ``(N, 30, 3)`` Å.

    A rigid base (two touching rings of 10 blobs in the x–y plane) and two identical arms
    related by the C₂ rotation about z (001 §5, Remark 5), each bending independently in
    its own state ``τ_k ∈ [0, 1]`` (±60° at its root, curling further along the arm).
    """
    tau = np.atleast_2d(np.asarray(tau, dtype=np.float64))
    if tau.shape[-1] != 2:
        raise ValueError(f"tau: expected (N, 2) arm states, got {tau.shape}")
    arm1 = _pretzel_arm(tau[:, 0])
    arm2 = _pretzel_arm(tau[:, 1]) * np.array([-1.0, -1.0, 1.0])  # C2 about z
    base = np.broadcast_to(_PRETZEL_BASE, (len(tau), *_PRETZEL_BASE.shape))
    return np.concatenate([base, arm1, arm2], axis=1).astype(np.float32)


def _toy(name: str, blobs: np.ndarray, weights: np.ndarray, state: np.ndarray, volume_states: np.ndarray,
         volume_blobs: np.ndarray, parts: np.ndarray, *, sigma_a: float, box_size: int, apix: float,
         snr: float | None, defocus_range_um: tuple[float, float], shift_std_a: float, seed: int,
         batch_size: int, device: str | None, progress: ProgressCallback | None,
         cancel: CancelToken | None) -> ParticleDataset:
    truth = {
        "state": state.astype(np.float32),
        "state_params": state.astype(np.float32),
        "global/volume_states": volume_states.astype(np.float32),
        "global/blob_weights": weights,
        "global/blob_parts": parts,
    }
    truth["global/volumes"] = _volumes(volume_blobs, d=box_size, apix=apix, sigma_a=sigma_a, weights=weights,
                                       device=device, progress=progress)
    model = AtomicModel(coords_a=blobs, sigma_a=sigma_a, weights=weights, truth=truth)
    return _simulate_dataset(name, model, box_size=box_size, apix=apix, snr=snr, defocus_range_um=defocus_range_um,
                             shift_std_a=shift_std_a, seed=seed, batch_size=batch_size, device=device,
                             progress=progress, cancel=cancel)


def cat(
    n_particles: int = 200,
    *,
    box_size: int = 64,
    apix: float = 3.0,
    sigma_a: float = 5.0,
    snr: float | None = 0.1,
    n_volumes: int = 5,
    defocus_range_um: tuple[float, float] = (1.0, 2.5),
    shift_std_a: float = 0.0,
    seed: int = 0,
    batch_size: int = 256,
    device: str | None = "cpu",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> ParticleDataset:
    """The "cat" of 001_e1fd27914a9da292.txt §3.1.1: Gaussian blobs, 1D state τ.

    ``τ ~ U[0, 1]`` per particle (the direction the head is turned, :func:`cat_blobs`),
    uniform pose, CTF (300 kV, Cs 2.7 mm, defocus uniform in ``defocus_range_um``) and
    white noise at ``snr``, the imaging model of eq. 5–9.

    Ground truth
    ------------
    ``state``, ``state_params``
        ``(N, 1)`` float τ.
    ``coords_a``
        ``(N, 28, 3)`` blob centres.
    ``global/volumes``, ``global/volume_states``
        ``(n_volumes, D, D, D)`` densities at ``τ = linspace(0, 1, n_volumes)``.
    ``global/blob_weights`` ``(28,)``, ``global/blob_parts`` ``(28,)`` (0 body, 1 head),
    ``global/sigma_a``.
    """
    rng = np.random.default_rng([int(seed), 60])
    tau = rng.uniform(0.0, 1.0, n_particles)
    vol_tau = np.linspace(0.0, 1.0, n_volumes)
    return _toy("cat", cat_blobs(tau), _CAT_WEIGHTS, tau[:, None], vol_tau[:, None], cat_blobs(vol_tau), CAT_PARTS,
                sigma_a=sigma_a, box_size=box_size, apix=apix, snr=snr, defocus_range_um=defocus_range_um,
                shift_std_a=shift_std_a, seed=seed, batch_size=batch_size, device=device, progress=progress,
                cancel=cancel)


def pretzel(
    n_particles: int = 200,
    *,
    box_size: int = 64,
    apix: float = 3.0,
    sigma_a: float = 4.0,
    snr: float | None = 1 / 30,
    n_volumes_per_arm: int = 3,
    defocus_range_um: tuple[float, float] = (1.0, 2.5),
    shift_std_a: float = 3.0,
    seed: int = 0,
    batch_size: int = 256,
    device: str | None = "cpu",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> ParticleDataset:
    """The "pretzel" of 001_e1fd27914a9da292.txt §3.1.2 / §5: rigid base, two arms.

    Each arm's state ``τ_k ~ U[0, 1]`` independently (:func:`pretzel_blobs`); uniform
    pose, Gaussian in-plane shifts (``shift_std_a``), CTF and noise at SNR 1/30 as in
    001 §5 (which used 151 px; 64 px here by default).

    Ground truth
    ------------
    ``state``, ``state_params``
        ``(N, 2)`` float ``(τ₁, τ₂)``.
    ``coords_a``
        ``(N, 30, 3)`` blob centres.
    ``global/volumes``, ``global/volume_states``
        ``(k², D, D, D)`` densities on a ``k × k`` grid of arm states and those states
        ``(k², 2)``, ``k = n_volumes_per_arm``.
    ``global/blob_weights`` ``(30,)``, ``global/blob_parts`` ``(30,)`` (0 base, 1 arm 1,
    2 arm 2), ``global/sigma_a``.
    """
    rng = np.random.default_rng([int(seed), 70])
    tau = rng.uniform(0.0, 1.0, (n_particles, 2))
    g = np.linspace(0.0, 1.0, n_volumes_per_arm)
    vol_tau = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    weights = np.ones(len(PRETZEL_PARTS), dtype=np.float32)
    return _toy("pretzel", pretzel_blobs(tau), weights, tau, vol_tau, pretzel_blobs(vol_tau), PRETZEL_PARTS,
                sigma_a=sigma_a, box_size=box_size, apix=apix, snr=snr, defocus_range_um=defocus_range_um,
                shift_std_a=shift_std_a, seed=seed, batch_size=batch_size, device=device, progress=progress,
                cancel=cancel)


#: name → dataset function (the CLI and the napari samples look datasets up here).
DATASETS: dict[str, Callable[..., Any]] = {
    "box_arms_2d": box_arms_2d,
    "adk_chain": adk_chain,
    "adk_volumes": adk_volumes,
    "assembly_classes": assembly_classes,
    "cat": cat,
    "pretzel": pretzel,
}
