"""napari sample data: each contribution returns the right layers, aligned with the stack."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryohet.plugin import _sample_data as S
from napari_cryohet.plugin._reader import DATASET_KEY

SMALL = {
    "box_arms_2d": {"n_particles": 12},
    "adk_chain": {"n_particles": 6, "snr": 0.05},
    "adk_volumes": {"n_particles": 6, "n_conformations": 2, "box_size": 32, "apix": 3.0, "sigma_a": 3.0},
    "assembly_classes": {"n_particles": 6, "box_size": 32, "apix": 3.0, "sigma_a": 3.0},
    "cat": {"n_particles": 6, "n_volumes": 2, "box_size": 32, "apix": 5.0},
    "pretzel": {"n_particles": 6, "n_volumes_per_arm": 2, "box_size": 32, "apix": 5.0},
    "trajectory": {"n_particles": 6, "normal_modes": 2, "amplitude_a": 4.0, "n_frames": 8},
}


@pytest.fixture
def small(monkeypatch):
    for name, kwargs in SMALL.items():
        monkeypatch.setitem(S.SAMPLE_SIZES, name, kwargs)


def _by_kind(layers):
    out: dict[str, list] = {}
    for data, kwargs, kind in layers:
        assert isinstance(kwargs.get("name"), str)
        out.setdefault(kind, []).append((data, kwargs))
    return out


def test_every_dataset_has_a_sample_in_the_manifest():
    from importlib.resources import files

    import npe2

    manifest = npe2.PluginManifest.from_file(str(files("napari_cryohet") / "napari.yaml"))
    keys = {s.key for s in manifest.contributions.sample_data}
    assert keys == set(S.SAMPLE_SIZES)
    commands = {c.id: c.python_name for c in manifest.contributions.commands}
    for key in keys:
        module, func = commands[f"napari-cryohet.sample_{key}"].split(":")
        assert getattr(S, func) is getattr(S, f"{key}_sample")


def test_adk_chain_sample_layers(small):
    kinds = _by_kind(S.adk_chain_sample())
    (stack, skw), = kinds["image"]
    assert stack.shape == (6, 64, 64)
    ds = skw["metadata"][DATASET_KEY]
    assert skw["scale"] == (1.0, 2.0, 2.0) and skw["translate"] == (0.0, -64.0, -64.0)
    (points, _), = kinds["points"]
    assert points.shape == (6 * 214, 3)
    (paths, pkw), = kinds["shapes"]
    assert pkw["shape_type"] == "path" and len(paths) == 6 and paths[0].shape == (214, 3)
    np.testing.assert_array_equal(paths[3][:, 0], 3)  # each chain on its particle's slice
    # the path overlays its particle: its centroid is the centroid of the CTF-free image
    clean = _noctf_image(ds, 0)
    grid = (np.arange(64) - 32) * 2.0
    cy = (clean.sum(1) * grid).sum() / clean.sum()
    cx = (clean.sum(0) * grid).sum() / clean.sum()
    np.testing.assert_allclose(paths[0][:, 1:].mean(0), [cy, cx], atol=0.05)


def _noctf_image(ds, i):
    import torch

    from napari_cryohet.core.projection import project_gaussian_atoms

    return project_gaussian_atoms(torch.as_tensor(ds.ground_truth["coords_a"][i:i + 1]),
                                  torch.as_tensor(ds.rotations[i:i + 1]), d=64, apix=2.0, sigma_a=3.0)[0].numpy()


@pytest.mark.parametrize("name,n_vol", [("adk_volumes", 2), ("assembly_classes", 4), ("cat", 2), ("pretzel", 4)])
def test_volume_samples(small, name, n_vol):
    kinds = _by_kind(getattr(S, f"{name}_sample")())
    images = kinds["image"]
    assert len(images) == 2
    (stack, skw), (vols, vkw) = images
    assert stack.shape == (6, 32, 32)
    assert vols.shape == (n_vol, 32, 32, 32) and len(vkw["scale"]) == 4
    (points, _), = kinds["points"]
    assert points.shape[1] == 3 and set(np.unique(points[:, 0])) == set(range(6))
    ((verts, faces), _), = kinds["surface"]
    assert verts.shape[1] == 3 and faces.shape[1] == 3 and len(faces) > 0
    # the surface sits inside the translated volume's box
    lo = np.asarray(vkw["translate"][1:])
    hi = lo + 32 * np.asarray(vkw["scale"][1:])
    assert (verts >= lo - 1e-3).all() and (verts <= hi + 1e-3).all()
    if name == "assembly_classes":  # only the atoms each particle's class has
        ds = skw["metadata"][DATASET_KEY]
        masks = ds.ground_truth["global/class_masks"][ds.ground_truth["state"]]
        assert len(points) == masks.sum()


def test_box_arms_sample(small):
    layers = S.box_arms_2d_sample()
    kinds = _by_kind(layers)
    (dens, dkw), (proj, _) = kinds["image"]
    assert dens.shape == (12, 64, 64) and proj.shape == (12, 128)
    (paths, pkw), = kinds["shapes"]
    assert pkw["shape_type"] == "path" and len(paths) == 12 and paths[0].shape == (149, 3)
    # chains in Å on the density grid: every atom within the grid's extent
    extent = 32 * dkw["scale"][1]
    assert np.abs(np.concatenate(paths)[:, 1:]).max() < extent
    (points, _), = kinds["points"]
    assert points.shape == (12 * 149, 3)
    # the overlaid atoms sit on the density: the clean density (eq. 3.4) at the atoms is high,
    # so the noisy density sampled there averages well above the image mean
    iy = np.rint((points[:, 1] - dkw["translate"][1]) / dkw["scale"][1]).astype(int)
    ix = np.rint((points[:, 2] - dkw["translate"][2]) / dkw["scale"][2]).astype(int)
    on_atoms = dens[points[:, 0].astype(int), iy, ix]
    assert on_atoms.mean() > dens.mean() + 4.0  # measured +5.9 (chains in the anchor frame: +1.9)


@pytest.mark.gui
def test_samples_open_in_napari(small, make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-cryohet", "cat")
    viewer.open_sample("napari-cryohet", "box_arms_2d")
    kinds = {type(layer).__name__ for layer in viewer.layers}
    assert {"Image", "Points", "Surface", "Shapes"} <= kinds
    assert len(viewer.layers) == 8


def test_trajectory_sample_layers(small):
    """Chains deformed along elastic-network modes: one path per particle, and every true chain keeps
    the reference's bond lengths while moving away from it."""
    kinds = _by_kind(S.trajectory_sample())
    (stack, skw), = kinds["image"]
    assert stack.shape[0] == 6
    (paths, _), = kinds["shapes"]
    assert len(paths) == 6 and paths[0].shape == (214, 3)
    truth = skw["metadata"][DATASET_KEY].ground_truth
    atoms, ref = np.asarray(truth["coords_a"]), np.asarray(truth["global/reference_coords_a"])
    bonds = np.linalg.norm(np.diff(atoms, axis=1), axis=-1)
    assert np.abs(bonds - np.linalg.norm(np.diff(ref, axis=0), axis=-1)).max() < 0.05
    rmsd = np.sqrt(((atoms - ref) ** 2).sum(-1).mean(-1))
    assert 0.0 < rmsd.max() <= 4.0 + 1e-6
