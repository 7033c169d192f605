"""The scenes of a clustering/refinement result (Silvera Coeff 2025, §4.1).

Two scenes per run:

- **Clustering · refine/NNNN** (3D): class maps side by side in one physical frame (Å;
  the *j*-th cluster id with a map anywhere in the run, :func:`map_ids`, is moved along x
  by ``j · (D + 4) · apix``, so the maps never overlap, keep their scale and a cluster keeps
  its place), each as a maximum-intensity image (the contrast of
  :func:`~napari_cryohet.plugin._vae_scene.density_limits`) and an iso-surface in the
  cluster's colour, with a two-line text label under it (cluster id; particles, resolution). The
  scene shows one *step* of the run (:func:`class_maps`): iteration *i*'s maps (made from
  the poses it started with, before it refined them) or the final maps (from the refined
  poses, the default); :func:`show_step` switches step by updating the same layers in place
  (maps of clusters absent at that step are hidden).
- **Clusters · refine/NNNN** (2D): the particles in the input run's embedding (its
  per-particle vectors, VAE latents or spectral eigenvectors, reduced by PCA to 2D and
  scaled to equal spread) coloured by cluster at one iteration (:func:`show_iteration`);
  the layer's ``"cluster"`` feature holds that iteration's ids. Selecting points selects
  those particles everywhere (the stack viewer follows).

Cluster colours are categorical and fixed by cluster id (:func:`cluster_colour`), so a
cluster keeps its colour across iterations (ids are aligned by the stage) and its map's
surface has the colour of its points. Particles in no cluster (id −1) are grey.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_cryohet.plugin._embedding_layer import embedding_points, link_selection
from napari_cryohet.plugin._vae_scene import density_limits, equal_spread
from napari_cryohet.plugin.scenes import Scene, scene_name

__all__ = ["present", "show_iteration", "show_step", "class_maps", "ClassMaps", "map_ids", "n_steps",
           "cluster_colour", "map_offsets_a", "input_points", "MAPS_TITLE",
           "CLUSTERS_TITLE", "POINTS_LAYER", "LABELS_LAYER", "map_layer_name", "surface_layer_name", "GAP_VOXELS"]

MAPS_TITLE = "Clustering"
CLUSTERS_TITLE = "Clusters"
POINTS_LAYER = "particles by cluster"
LABELS_LAYER = "cluster names"
#: Empty voxels between neighbouring maps.
GAP_VOXELS = 4
_ZYX = ("z (Å)", "y (Å)", "x (Å)")
#: Categorical colours by cluster id (matplotlib's tab10), cycled; noise is grey.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
NOISE = (0.55, 0.55, 0.55, 1.0)


def map_layer_name(k: int) -> str:
    return f"cluster {k} map"


def surface_layer_name(k: int) -> str:
    return f"cluster {k} surface"


def cluster_colour(k: int) -> tuple[float, float, float, float]:
    """RGBA of cluster id ``k`` (grey for −1, no cluster)."""
    if k < 0:
        return NOISE
    h = PALETTE[int(k) % len(PALETTE)].lstrip("#")
    return tuple(int(h[i:i + 2], 16) / 255.0 for i in (0, 2, 4)) + (1.0,)


def cluster_colours(labels: np.ndarray) -> np.ndarray:
    """``(N, 4)`` float32 RGBA of each particle's cluster id."""
    labels = np.asarray(labels, dtype=np.int64)
    out = np.empty((len(labels), 4), dtype=np.float32)
    for k in np.unique(labels):
        out[labels == k] = cluster_colour(int(k))
    return out


def kept_iterations(result: Any) -> bool:
    """Whether ``result`` kept every iteration's class maps (runs saved before that did not)."""
    iterations = getattr(result, "iterations", None) or []
    return len(iterations) == len(result.labels) and all("maps" in it for it in iterations)


def n_steps(result: Any) -> int:
    """Steps the maps scene can show: each kept iteration and the final maps (1 without kept iterations)."""
    return len(result.labels) + 1 if kept_iterations(result) else 1


@dataclass(frozen=True)
class ClassMaps:
    """The class maps of one step of a run.

    Attributes
    ----------
    step
        0-based: iteration ``step``'s maps, or ``len(result.labels)`` for the final maps.
    final
        The final maps (``result.maps``, from the refined poses).
    labels_index
        The iteration whose clusters these maps are (the last one for the final maps).
    cluster_ids, maps, fsc
        ``(K,)``, ``(K, D, D, D)`` float32 and ``(K, S)`` corrected FSC (``result.fsc_freq``).
    resolution_a
        ``(K,)`` resolution at FSC 0.143 in Å (NaN where unknown).
    """

    step: int
    final: bool
    labels_index: int
    cluster_ids: np.ndarray
    maps: np.ndarray
    fsc: np.ndarray
    resolution_a: np.ndarray


def class_maps(result: Any, step: int | None = None) -> ClassMaps:
    """The class maps at ``step`` (0-based iteration; ``None`` or ``len(result.labels)``: the final maps).

    Iteration *i*'s maps are those it reconstructed from the poses it started with (before
    it refined them); their resolutions are the run's history. A result without kept
    iterations (saved before they were kept) gives its final maps at every step.
    """
    n_it = len(result.labels)
    final = step is None or int(step) >= n_it or not kept_iterations(result)
    if final:
        ids = np.asarray(result.cluster_ids, dtype=np.int64)
        fsc = np.asarray(result.fsc, dtype=np.float64)
        res = np.array([_curve_resolution(result, curve) for curve in fsc], dtype=np.float64)
        return ClassMaps(n_it, True, n_it - 1, ids, np.asarray(result.maps, dtype=np.float32), fsc, res)
    i = _iteration(result, step)
    it = result.iterations[i]
    ids = np.asarray(it["cluster_ids"], dtype=np.int64).reshape(-1)
    d = _box(result)
    maps = np.asarray(it["maps"], dtype=np.float32).reshape(len(ids), d, d, d) if len(ids) else \
        np.zeros((0, d, d, d), dtype=np.float32)
    fsc = np.asarray(it["fsc"], dtype=np.float64).reshape(len(ids), -1) if len(ids) else np.zeros((0, 0))
    res = np.array([np.nan if (r := _resolution(result, i, int(k))) is None else r for k in ids], dtype=np.float64)
    return ClassMaps(i, False, i, ids, maps, fsc, res)


def _curve_resolution(result: Any, curve: np.ndarray) -> float:
    """Resolution (Å) where ``curve`` (over ``result.fsc_freq``, 1/Å) falls below 0.143."""
    from napari_cryohet.core.fsc import resolution_at

    freq = np.asarray(result.fsc_freq, dtype=np.float64)
    if len(freq) < 2 or len(curve) != len(freq):
        return float("nan")
    return float(resolution_at(freq * result.apix, curve, apix=result.apix))


def _box(result: Any) -> int:
    """The maps' box size D (voxels)."""
    if result.maps.ndim == 4 and len(result.maps):
        return int(result.maps.shape[-1])
    for it in getattr(result, "iterations", None) or []:
        maps = np.asarray(it.get("maps", np.zeros(0)))
        if maps.ndim == 4 and len(maps):
            return int(maps.shape[-1])
    return int(result.maps.shape[-1]) if result.maps.ndim == 4 else 0


def map_ids(result: Any) -> list[int]:
    """Every cluster id with a class map in the run (final maps and kept iterations), increasing."""
    ids = {int(k) for k in result.cluster_ids}
    if kept_iterations(result):
        for it in result.iterations:
            ids.update(int(k) for k in np.asarray(it["cluster_ids"]).reshape(-1))
    return sorted(ids)


def _slots_a(result: Any) -> dict[int, float]:
    """Cluster id → x translation (Å) of its map: ``j · (D + GAP_VOXELS) · apix`` for the j-th of :func:`map_ids`."""
    step = (_box(result) + GAP_VOXELS) * float(result.apix)
    return {k: j * step for j, k in enumerate(map_ids(result))}


def map_offsets_a(result: Any) -> np.ndarray:
    """``(K,)`` x translation (Å) of each final class map (its cluster id's slot, see :func:`map_ids`)."""
    slots = _slots_a(result)
    return np.array([slots[int(k)] for k in result.cluster_ids], dtype=np.float64)


def _iteration(result: Any, iteration: int | None) -> int:
    """0-based iteration index (``None``: the last); ``iteration`` counts from 0."""
    n = len(result.labels)
    i = n - 1 if iteration is None else int(iteration)
    if not 0 <= i < n:
        raise ValueError(f"iteration {i}: this run has iterations 0..{n - 1}")
    return i


def _resolution(result: Any, i: int, k: int) -> float | None:
    try:
        value = result.history[i]["clusters"][str(k)].get("resolution_a")
    except (IndexError, KeyError, AttributeError):
        return None
    return None if value is None else float(value)


def input_run(session: Any, result: Any) -> str | None:
    """The run id of the embedding the refine run clustered (``None`` when unknown)."""
    ref = (getattr(result, "memory_inputs", None) or {}).get("embedding")
    if ref is None and session.workspace is not None and result.run_id:
        try:
            ref = (session.workspace.manifest(result.run_id).get("inputs") or {}).get("embedding")
        except (ValueError, KeyError, OSError):
            ref = None
    return ref


def input_points(session: Any, result: Any) -> tuple[np.ndarray, tuple[str, str]]:
    """``(N, 2)`` positions of the particles: the input run's vectors by PCA (equal spread).

    Without the input run (deleted, another window), each cluster is a column of points
    (x: cluster id, y: a fixed jitter) so the colours and the selection still work.
    """
    from napari_cryohet.stages.refine.clustering import embed_vectors

    ref = input_run(session, result)
    vectors = None
    if ref is not None:
        try:
            vectors = session.embedding(ref).aligned_to(result.indices)
        except Exception:  # noqa: BLE001 - a missing or mismatched input: fall back to the cluster columns
            vectors = None
    if vectors is not None and vectors.shape[1] >= 2:
        xy = embed_vectors(np.asarray(vectors, dtype=np.float64), "pca", n_components=2)
        if xy.shape[1] == 2:
            return equal_spread(xy), (f"PCA 1 of {ref} (scaled)", f"PCA 2 of {ref} (scaled)")
    rng = np.random.default_rng(0)
    n = len(result.indices)
    xy = np.column_stack([result.labels[-1] + rng.uniform(-0.3, 0.3, n), rng.uniform(-1.0, 1.0, n)])
    return xy, ("cluster (last iteration)", "spread")


def present(session: Any, result: Any, *, show: bool = True, iteration: int | None = None,
            step: int | None = None) -> Scene:
    """Draw ``result`` (a :class:`~napari_cryohet.stages.refine.result.RefineResult`): its class
    maps scene at ``step`` (see :func:`class_maps`; ``None``: the final maps; returned, shown
    when ``show``) and its clusters scene coloured at ``iteration`` (0-based; ``None``: the last)."""
    for _ in present_steps(session, result, iteration=iteration, step=step):
        pass
    scene = maps_scene(session, result)
    if show:
        session.scenes.show(scene)
    return scene


def present_steps(session: Any, result: Any, *, iteration: int | None = None, step: int | None = None):
    """:func:`present` without showing, as a generator: one step per cluster map, then the points."""
    yield from _draw_maps(session, result, step)
    clusters_scene(session, result, iteration=iteration)
    yield


def show_step(session: Any, result: Any, step: int | None = None) -> ClassMaps:
    """Make the maps scene show ``step`` (see :func:`class_maps`): the maps of its clusters put
    into the existing layers (made only for a cluster id not drawn before), the others hidden."""
    for _ in _draw_maps(session, result, step):
        pass
    return class_maps(result, step)


def _draw_maps(session: Any, result: Any, step: int | None):
    scene = maps_scene(session, result)
    shown = class_maps(result, step)
    d = _box(result)
    apix = float(result.apix)
    centre = (d // 2) * apix
    slots = _slots_a(result)
    labels = result.labels[shown.labels_index]
    labels_pos, labels_text, labels_colour = [], [], []
    for j, k in enumerate(int(k) for k in shown.cluster_ids):
        x0 = slots[k]
        _put_map(session, scene, k, shown.maps[j], apix, (-centre, -centre, x0 - centre))
        yield
        n_k = int((labels == k).sum())
        res = shown.resolution_a[j]
        labels_pos.append((0.0, centre + 3 * apix, x0))
        # two lines: neighbouring labels must not run into each other in a narrow canvas
        labels_text.append(f"cluster {k}\n{n_k} particles" + (f", {res:.1f} Å" if np.isfinite(res) else ""))
        labels_colour.append(cluster_colour(k))
    present_ids = {int(k) for k in shown.cluster_ids}
    for k in slots:
        for name in (map_layer_name(k), surface_layer_name(k)):
            layer = scene.layer(name)
            if layer is not None:
                layer.visible = k in present_ids
    labels_layer = scene.layer(LABELS_LAYER)
    if labels_pos:
        labels_layer = _put_labels(session, scene, np.asarray(labels_pos), labels_text, np.asarray(labels_colour))
        labels_layer.visible = True
    elif labels_layer is not None:
        labels_layer.visible = False


def maps_scene(session: Any, result: Any) -> Scene:
    return session.scenes.scene(scene_name(MAPS_TITLE, result.run_id or "latest"), kind="volume", ndisplay=3,
                                run_id=result.run_id)


def _put_map(session: Any, scene: Scene, k: int, volume: np.ndarray, apix: float, translate: tuple) -> None:
    from napari.layers import Image, Surface
    from napari.utils.colormaps import Colormap

    from napari_cryohet.stages.vae import isosurface

    volume = np.asarray(volume, dtype=np.float32)
    limits = density_limits(volume)

    def update_image(layer):
        layer.data, layer.contrast_limits, layer.translate = volume, limits, translate

    session.scenes.put(scene, map_layer_name(k),
                       lambda: Image(volume, scale=(apix,) * 3, translate=translate, rendering="mip", colormap="gray",
                                     contrast_limits=limits, axis_labels=_ZYX), update_image)
    verts, faces = isosurface(volume, level_sigma=2.0, apix=apix)
    verts = verts + np.asarray(translate, dtype=np.float32)
    values = np.ones(len(verts), dtype=np.float32)
    rgba = cluster_colour(k)
    cmap = Colormap([rgba, rgba], name=f"cryohet cluster {k}")

    def update_surface(layer):
        layer.data = (verts, faces, values)

    session.scenes.put(scene, surface_layer_name(k),
                       lambda: Surface((verts, faces, values), colormap=cmap, contrast_limits=(0.0, 1.0), opacity=0.6,
                                       blending="translucent", axis_labels=_ZYX), update_surface)


def _put_labels(session: Any, scene: Scene, pos: np.ndarray, text: list[str], colours: np.ndarray) -> Any:
    from napari.layers import Points

    features = {"label": text}
    colours = np.asarray(colours, dtype=np.float32).copy()
    colours[:, 3] = 0.0  # only the text shows: an anchor point would sit in the middle of it
    text_style = {"string": "{label}", "color": "white", "size": 11, "anchor": "center"}

    def update(layer):
        layer.data = pos
        layer.features = features
        layer.face_color = colours

    return session.scenes.put(scene, LABELS_LAYER,
                              lambda: Points(pos, features=features, text=text_style, size=2.0, face_color=colours,
                                             border_width=0, axis_labels=_ZYX), update)


def clusters_scene(session: Any, result: Any, *, iteration: int | None = None) -> Scene:
    """The clusters scene of ``result`` (its points made on first use), coloured at ``iteration``."""
    scene = session.scenes.scene(scene_name(CLUSTERS_TITLE, result.run_id or "latest"), kind="embedding",
                                 ndisplay=2, run_id=result.run_id)
    if scene.layer(POINTS_LAYER) is None:
        data, labels = input_points(session, result)

        def make():
            layer = embedding_points(data, name=POINTS_LAYER, columns=session.columns(result.indices),
                                     axis_labels=labels, indices=result.indices)
            link_selection(session, layer)
            return layer

        session.scenes.put(scene, POINTS_LAYER, make)
    show_iteration(session, result, iteration)
    return scene


def show_iteration(session: Any, result: Any, iteration: int | None = None) -> Any:
    """Colour the clusters scene's points by the cluster ids of ``iteration`` (0-based; ``None``:
    the last); the layer's ``"cluster"`` feature becomes those ids. Returns the layer."""
    i = _iteration(result, iteration)
    scene = session.scenes.scenes.get(scene_name(CLUSTERS_TITLE, result.run_id or "latest"))
    layer = None if scene is None else scene.layer(POINTS_LAYER)
    if layer is None:
        return None
    ids = np.asarray(result.labels[i], dtype=np.int64)
    features = layer.features.copy() if layer.features is not None and len(layer.features) else None
    if features is None:
        import pandas as pd

        features = pd.DataFrame(index=np.arange(len(ids)))
    features["cluster"] = ids
    layer.features = features
    layer.face_color = cluster_colours(ids)
    layer.metadata["cryohet_colour_by"] = ("cluster", "categorical", (float(ids.min()), float(ids.max())))
    layer.metadata["cryohet_iteration"] = i
    return layer
