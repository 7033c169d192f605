"""napari sample data: each synthetic-data recipe of ``stages.simulate``, generated at load time.

Every sample is simulated from small parameters (a few seconds on a laptop CPU; nothing
is stored in the repository) and returns napari layer data tuples. World coordinates are
Å with the origin at the particle (box) centre, so the ground truth overlays the images.
Each layer says where it belongs (``metadata["cryohet_role"]``,
:mod:`napari_cryohet.plugin.scenes`): the stack and the per-particle overlays make the
dataset's 2D particles scene, the 3D ground truth (volumes, surfaces) its own 3D scene:

- the particle stack: image ``(N, D, D)`` (axes particle, y, x) carrying its
  :class:`~napari_cryohet.core.particle_dataset.ParticleDataset` in ``metadata`` (as the reader
  does, so the stack viewer widget picks it up);
- atoms (or blobs) as points ``(particle, y, x)``: each particle's ground-truth atoms in its
  pose, ``(R r)[:2] − shift``, i.e. where they project in that image;
- chains as paths (shapes layer, ``shape_type="path"``), one per particle, same frame;
- volumes as an image ``(C, D, D, D)`` (conformation, z, y, x) plus an iso-surface of the
  first one (``skimage.measure.marching_cubes``), in the ground-truth scene.

:func:`box_arms_2d_sample` shows the 2D toy: its noisy low-dimensional densities
``(N, 64, 64)`` (model frame), the chains over them, and all 1D projections as an
``(N, L)`` image below.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_cryohet.core.particle_dataset import ParticleDataset
from napari_cryohet.plugin._reader import DATASET_KEY, dataset_layer_data
from napari_cryohet.plugin.scenes import PER_PARTICLE, ROLE_KEY, TRUTH_3D

__all__ = [
    "box_arms_2d_sample",
    "adk_chain_sample",
    "adk_volumes_sample",
    "assembly_classes_sample",
    "cat_sample",
    "pretzel_sample",
    "SAMPLE_SIZES",
]

LayerData = tuple[Any, dict, str]

#: Keyword arguments each sample passes to its dataset function (small: seconds to load).
SAMPLE_SIZES: dict[str, dict[str, Any]] = {
    "box_arms_2d": {"n_particles": 200},
    "adk_chain": {"n_particles": 100, "snr": 0.05},
    "adk_volumes": {"n_particles": 100, "n_conformations": 5},
    "assembly_classes": {"n_particles": 100},
    "cat": {"n_particles": 100, "n_volumes": 3},
    "pretzel": {"n_particles": 100, "n_volumes_per_arm": 2},
    "trajectory": {"n_particles": 100, "normal_modes": 3, "amplitude_a": 5.0, "snr": 0.05},
}

_TRUTH_COLOUR = "#ffb000"


def _centre_a(dataset: ParticleDataset) -> float:
    return (dataset.box_size // 2) * float(dataset.apix)


def _stack_layer(dataset: ParticleDataset, name: str) -> LayerData:
    data, kwargs, kind = dataset_layer_data(dataset, name=name)
    c = _centre_a(dataset)
    kwargs["translate"] = (0.0, -c, -c)  # world = Å about the box centre
    return data, kwargs, kind


def _projected_atoms(dataset: ParticleDataset, coords_a: np.ndarray) -> np.ndarray:
    """``(N, M, 2)`` (y, x) in Å where each particle's atoms land in its image."""
    rot = np.asarray(dataset.rotations, dtype=np.float64)  # (N, 3, 3)
    xy = np.einsum("nij,nmj->nmi", rot[:, :2, :], coords_a)  # (N, M, 2) = (R r)[:2]
    if dataset.shifts_a is not None:
        xy = xy - np.asarray(dataset.shifts_a, dtype=np.float64)[:, None, :]
    return xy[..., ::-1]  # (y, x)


def _particle_coords(dataset: ParticleDataset) -> np.ndarray | None:
    truth = dataset.ground_truth or {}
    if "coords_a" in truth:
        return np.asarray(truth["coords_a"], dtype=np.float64)
    if "global/conformation_coords_a" in truth and np.asarray(truth["state"]).ndim == 1:
        return np.asarray(truth["global/conformation_coords_a"], dtype=np.float64)[np.asarray(truth["state"])]
    if "global/reference_coords_a" in truth and "global/class_masks" in truth:
        ref = np.asarray(truth["global/reference_coords_a"], dtype=np.float64)
        return np.broadcast_to(ref, (len(dataset), *ref.shape))
    return None


def _points_layer(dataset: ParticleDataset, *, name: str, size_a: float, mask: np.ndarray | None = None,
                  parts: np.ndarray | None = None) -> LayerData | None:
    coords = _particle_coords(dataset)
    if coords is None:
        return None
    yx = _projected_atoms(dataset, coords)  # (N, M, 2)
    n, m = yx.shape[:2]
    keep = np.ones((n, m), dtype=bool) if mask is None else mask
    particle = np.broadcast_to(np.arange(n)[:, None], (n, m))
    data = np.column_stack([particle[keep], yx[keep]]).astype(np.float32)  # (P, 3)
    kwargs: dict[str, Any] = {
        "name": name, "size": size_a, "face_color": _TRUTH_COLOUR, "border_width": 0, "opacity": 0.6,
        "visible": True, "metadata": {ROLE_KEY: PER_PARTICLE}, "axis_labels": ("particle", "y", "x"),
    }
    if parts is not None:
        labels = np.array([f"part {k}" for k in range(int(parts.max()) + 1)])
        kwargs["features"] = {"part": labels[np.broadcast_to(parts, (n, m))[keep]]}
        kwargs["face_color"] = "part"
        kwargs["face_color_cycle"] = ["#ffb000", "#00c0ff", "#ff4080", "#80ff40"]
    return data, kwargs, "points"


def _paths_layer(dataset: ParticleDataset, *, name: str) -> LayerData | None:
    coords = _particle_coords(dataset)
    if coords is None:
        return None
    yx = _projected_atoms(dataset, coords)  # (N, M, 2)
    n, m = yx.shape[:2]
    paths = [np.column_stack([np.full(m, i, dtype=np.float64), yx[i]]) for i in range(n)]
    kwargs = {"name": name, "shape_type": "path", "edge_color": _TRUTH_COLOUR, "edge_width": 0.8, "opacity": 0.8,
              "metadata": {ROLE_KEY: PER_PARTICLE}, "axis_labels": ("particle", "y", "x")}
    return paths, kwargs, "shapes"


def _iso_level(volume: np.ndarray, mass_fraction: float = 0.8) -> float:
    """The density level whose super-level set holds ``mass_fraction`` of the (positive) mass."""
    values = np.sort(volume[volume > 0].ravel())[::-1]
    if values.size == 0:
        return 0.0
    cum = np.cumsum(values, dtype=np.float64)
    return float(values[min(np.searchsorted(cum, mass_fraction * cum[-1]), values.size - 1)])


def _volume_layers(dataset: ParticleDataset, *, name: str) -> list[LayerData]:
    truth = dataset.ground_truth or {}
    if "global/volumes" not in truth:
        return []
    volumes = np.asarray(truth["global/volumes"], dtype=np.float32)  # (C, D, D, D)
    _d, apix = volumes.shape[-1], float(dataset.apix)
    c = _centre_a(dataset)
    translate = (0.0, -c, -c, -c)  # Å about the box centre, like atomic models and decoded volumes
    layers: list[LayerData] = [(volumes, {
        "name": f"{name} volumes", "scale": (1.0, apix, apix, apix), "translate": translate,
        "colormap": "magma", "axis_labels": ("conformation", "z (Å)", "y (Å)", "x (Å)"),
        "contrast_limits": (0.0, float(volumes.max()) or 1.0), "rendering": "mip",
        "metadata": {ROLE_KEY: TRUTH_3D},
    }, "image")]
    try:
        from skimage.measure import marching_cubes
    except ImportError:  # pragma: no cover - scikit-image ships with napari
        return layers
    level = _iso_level(volumes[0])
    if level > 0 and volumes[0].max() > level:
        verts, faces, _, _ = marching_cubes(volumes[0], level=level)
        verts = verts * apix + np.asarray(translate[1:])  # (V, 3) z, y, x in Å
        layers.append(((verts.astype(np.float32), faces.astype(np.int64)), {
            "name": f"{name} surface (conformation 0)", "colormap": "bop orange", "opacity": 0.7,
            "metadata": {ROLE_KEY: TRUTH_3D}, "axis_labels": ("z (Å)", "y (Å)", "x (Å)"),
        }, "surface"))
    return layers


def _dataset_sample(name: str, *, chains: bool = False, points_size_a: float = 2.0, parts_key: str | None = None,
                    **overrides: Any) -> list[LayerData]:
    from napari_cryohet.stages.simulate.stage import SimulateConfig, make_dataset

    # through the simulate stage, so the dataset records its recipe and a workspace can remake it
    kwargs = {**SAMPLE_SIZES[name], **overrides}
    dataset: ParticleDataset = make_dataset(SimulateConfig.from_recipe(name, kwargs))
    layers: list[LayerData] = [_stack_layer(dataset, name)]
    truth = dataset.ground_truth or {}
    mask = None
    if "global/class_masks" in truth:  # assembly classes: only the atoms each class has
        mask = np.asarray(truth["global/class_masks"])[np.asarray(truth["state"])]
    parts = np.asarray(truth[parts_key]) if parts_key and parts_key in truth else None
    pts = _points_layer(dataset, name=f"{name} atoms (truth)", size_a=points_size_a, mask=mask, parts=parts)
    if pts is not None:
        layers.append(pts)
    if chains:
        paths = _paths_layer(dataset, name=f"{name} chains (truth)")
        if paths is not None:
            layers.append(paths)
    layers.extend(_volume_layers(dataset, name=name))
    return layers


def adk_chain_sample() -> list[LayerData]:
    """AdK Cα chains (seed 000 §3.2): stack, Cα atoms as points, chains as paths."""
    return _dataset_sample("adk_chain", chains=True, points_size_a=2.5)


def trajectory_sample() -> list[LayerData]:
    """Your own protein (here AdK, closed) deformed along its 3 slowest elastic-network modes
    (Atilgan et al. 2001): stack, Cα atoms as points, chains as paths. The same recipe takes any
    PDB (``cryohet simulate trajectory --topology``)."""
    return _dataset_sample("trajectory", chains=True, points_size_a=2.5)


def adk_volumes_sample() -> list[LayerData]:
    """AdK heavy-atom conformations (seed 004 §5.1): stack, atoms, volumes + surface."""
    return _dataset_sample("adk_volumes", points_size_a=1.0)


def assembly_classes_sample() -> list[LayerData]:
    """AdK assembly classes (seed 003): stack, present atoms, class volumes + surface."""
    return _dataset_sample("assembly_classes", points_size_a=1.0)


def cat_sample() -> list[LayerData]:
    """The cat (seed 001 §3.1.1): stack, blobs coloured by part, volumes along τ."""
    return _dataset_sample("cat", points_size_a=6.0, parts_key="global/blob_parts")


def pretzel_sample() -> list[LayerData]:
    """The pretzel (seed 001 §3.1.2): stack, blobs coloured by part, volumes."""
    return _dataset_sample("pretzel", points_size_a=5.0, parts_key="global/blob_parts")


def box_arms_2d_sample() -> list[LayerData]:
    """The 2D box with two arms (seed 000 §3.1): densities, chains, 1D projections."""
    from napari_cryohet.stages.simulate.stage import SimulateConfig, make_dataset

    # through the simulate stage, so the dataset records its recipe and a workspace can remake it
    ds = make_dataset(SimulateConfig.from_recipe("box_arms_2d", dict(SAMPLE_SIZES["box_arms_2d"])))
    n, g = ds.low_dim.shape[:2]
    spacing = float(ds.low_dim_grid_a[1] - ds.low_dim_grid_a[0])
    origin = float(ds.low_dim_grid_a[0])
    lo, hi = np.percentile(ds.low_dim, [0.5, 99.5])
    densities = (ds.low_dim, {
        "name": f"box_arms_2d densities (noisy, {ds.low_dim_frame} frame)", "scale": (1.0, spacing, spacing),
        "translate": (0.0, origin, origin), "colormap": "gray", "contrast_limits": (float(lo), float(hi)),
        "axis_labels": ("particle", "y", "x"), "metadata": {DATASET_KEY: ds, ROLE_KEY: PER_PARTICLE},
    }, "image")
    m = ds.coords.shape[1]
    yx = ds.low_dim_coords()[..., ::-1]  # (N, m, 2) (y, x) in Å, in the densities' frame
    paths = [np.column_stack([np.full(m, i, dtype=np.float32), yx[i]]) for i in range(n)]
    chain = (paths, {"name": "box_arms_2d chains (truth)", "shape_type": "path", "edge_color": _TRUTH_COLOUR,
                     "edge_width": 2.0, "metadata": {ROLE_KEY: PER_PARTICLE}}, "shapes")
    particle = np.repeat(np.arange(n, dtype=np.float32), m)
    pts = (np.column_stack([particle, yx.reshape(-1, 2)]), {
        "name": "box_arms_2d atoms (truth)", "size": 3.0, "face_color": "cyan", "border_width": 0, "opacity": 0.7,
        "metadata": {ROLE_KEY: PER_PARTICLE},
    }, "points")
    grid_spacing = float(ds.grid_x_a[1] - ds.grid_x_a[0])
    plo, phi = np.percentile(ds.projections, [0.5, 99.5])
    projections = (ds.projections, {
        "name": "box_arms_2d 1D projections (rows = particles)", "scale": (1.0, grid_spacing),
        "translate": (-origin + 2 * spacing, float(ds.grid_x_a[0])), "colormap": "gray",
        "contrast_limits": (float(plo), float(phi)), "metadata": {ROLE_KEY: PER_PARTICLE},
    }, "image")
    return [densities, chain, pts, projections]
