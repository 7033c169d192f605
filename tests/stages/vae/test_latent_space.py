"""Latent-space helpers of the explorer (stages/vae/latent_space.py, volumes.py)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryohet.stages.vae import (
    embed_latents,
    embedding_to_latent,
    isosurface,
    latent_path,
    points_in_polygon,
)


def test_latent_helpers():
    rng = np.random.default_rng(0)
    lat = np.concatenate([rng.normal(0, 0.1, (50, 4)), rng.normal(3, 0.1, (50, 4))]).astype(np.float32)
    emb = embed_latents(lat, method="pca2")
    assert emb.shape == (100, 2)
    # PCA's first axis separates the two clusters
    assert abs(emb[:50, 0].mean() - emb[50:, 0].mean()) > 5
    back = embedding_to_latent(emb[[0, 75]], emb, lat, k=5)
    np.testing.assert_allclose(back[0], lat[:50].mean(0), atol=0.2)
    np.testing.assert_allclose(back[1], lat[50:].mean(0), atol=0.2)
    path = latent_path(np.stack([lat[0], lat[60], lat[99]]), 5)
    assert path.shape == (5, 4)
    np.testing.assert_allclose(path[0], lat[0])
    np.testing.assert_allclose(path[-1], lat[99])
    straight = latent_path(np.stack([lat[0], lat[99]]), 5)  # two end points: equal steps
    steps = np.linalg.norm(np.diff(straight, axis=0), axis=1)
    np.testing.assert_allclose(steps, np.linalg.norm(lat[99] - lat[0]) / 4, rtol=1e-5)
    with pytest.raises(ValueError, match="method"):
        embed_latents(lat, method="tsne")
    with pytest.raises(ValueError, match="n_steps"):
        latent_path(lat[:2], 1)


def test_points_in_polygon_and_isosurface():
    pts = np.array([[0.5, 0.5], [2.0, 2.0], [0.1, 0.9]])
    square = np.array([[0, 0], [0, 1], [1, 1], [1, 0]], float)
    np.testing.assert_array_equal(points_in_polygon(pts, square), [0, 2])
    with pytest.raises(ValueError, match="3 vertices"):
        points_in_polygon(pts, square[:2])
    u = np.arange(16) - 8.0
    ball = (u[:, None, None] ** 2 + u[None, :, None] ** 2 + u[None, None, :] ** 2 < 16).astype(np.float32)
    verts, faces = isosurface(ball, level_sigma=0.0, apix=2.0)
    assert len(faces) > 0
    radius = np.linalg.norm(verts - 2.0 * 8.0, axis=1)  # Å from the centre voxel
    # a sphere around the ball of radius 4 voxels = 8 Å (smoothed: a little larger at the mean level)
    assert 8.0 < radius.mean() < 14.0 and radius.std() < 0.1 * radius.mean()
