"""Embedding and clustering registry: every method recovers well-separated blobs, GMM memberships
are distributions, a warm-started K-Means keeps the previous partition, embeddings have their shapes."""

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from napari_cryohet.core.label_alignment import align_labels
from napari_cryohet.stages.refine import (
    CLUSTERERS,
    ClusterResult,
    align_embedding,
    cluster_vectors,
    embed_vectors,
)

#: Parameters that suit the blobs below (6 blobs, σ = 0.6, centres ≥ 9.8 apart, 4-D).
BLOB_PARAMS = {
    "kmeans": {"n_clusters": 6},
    "gmm": {"n_clusters": 6},
    "dbscan": {"eps": 1.5, "min_samples": 5},
    "hdbscan": {"min_cluster_size": 30},
    "landscape": {"n_clusters": 6, "n_centres": 30},
}


def _blob_decoder(z):
    """Volumes (16³) of two Gaussian blobs placed by the 4 latent coordinates (a stand-in VAE decoder)."""
    z = np.asarray(z, dtype=np.float64)
    g = np.arange(16) - 8.0
    zz, yy, xx = np.meshgrid(g, g, g, indexing="ij")
    out = np.empty((len(z), 16, 16, 16))
    for i, (a, b, c, d) in enumerate(z / 4.0):
        out[i] = (np.exp(-((xx - a) ** 2 + (yy - b) ** 2 + zz ** 2) / 4.0)
                  + np.exp(-(xx ** 2 + (yy - c) ** 2 + (zz - d) ** 2) / 4.0))
    return out.astype(np.float32)


@pytest.fixture(scope="module")
def blobs():
    x, y = make_blobs(600, centers=6, n_features=4, cluster_std=0.6, center_box=(-12, 12),
                      random_state=0)
    return x, y


def test_every_registered_method_is_tested_and_documented():
    assert set(CLUSTERERS) == set(BLOB_PARAMS)
    for name, spec in CLUSTERERS.items():
        assert spec.name == name and spec.reference and spec.description
        assert all(p.help for p in spec.params)
        assert set(BLOB_PARAMS[name]) <= set(spec.defaults())


@pytest.mark.parametrize("method", sorted(BLOB_PARAMS))
def test_methods_recover_separated_blobs(blobs, method):
    x, y = blobs
    decode = _blob_decoder if CLUSTERERS[method].needs_decoder else None
    res = cluster_vectors(x, method, seed=1, decode=decode, **BLOB_PARAMS[method])
    ari = adjusted_rand_score(y, res.labels)
    print(f"{method}: ARI {ari:.4f}, {res.n_clusters} clusters, {(res.labels == -1).sum()} noise")
    assert isinstance(res, ClusterResult) and res.method == method
    assert res.labels.shape == (600,) and res.labels.dtype == np.int64
    assert res.labels.min() >= -1
    assert ari >= 0.95
    assert res.params["seed"] == 1 and res.params["warm_start"] is False
    assert set(CLUSTERERS[method].defaults()) <= set(res.params)
    if res.centres is not None:
        assert res.centres.shape == (res.n_clusters, 4)


def test_landscape_needs_a_decoder(blobs):
    with pytest.raises(ValueError, match="needs a VAE run"):
        cluster_vectors(blobs[0], "landscape", n_clusters=6)


def test_density_methods_mark_outliers_as_noise(blobs):
    x, _ = blobs
    far = np.array([[60.0, 60, 60, 60], [-60.0, 60, -60, 60]])  # isolated points
    xo = np.concatenate([x, far])
    for method in ("dbscan", "hdbscan"):
        res = cluster_vectors(xo, method, **BLOB_PARAMS[method])
        assert res.labels[-2:].tolist() == [-1, -1], method
        assert res.n_clusters == 6


def test_gmm_memberships_are_distributions_matching_labels(blobs):
    x, _ = blobs
    res = cluster_vectors(x, "gmm", n_clusters=6)
    w = res.memberships
    assert w.shape == (600, 6)
    assert (w >= 0).all()
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-10)
    np.testing.assert_array_equal(w.argmax(1), res.labels)


@pytest.mark.parametrize("method", ["kmeans", "gmm"])
def test_warm_start_keeps_the_previous_partition(blobs, method):
    x, _ = blobs
    first = cluster_vectors(x, method, seed=0, n_clusters=6)
    again = cluster_vectors(x, method, seed=123, n_clusters=6, init_labels=first.labels)
    assert again.params["warm_start"] is True
    assert adjusted_rand_score(first.labels, again.labels) == 1.0
    # warm start takes the clusters in increasing previous id: the ids come back unchanged
    np.testing.assert_array_equal(again.labels, first.labels)
    # next iteration: a re-embedding moves and rotates the space; started from the
    # previous labels the partition and (after alignment) the ids stay
    rng = np.random.default_rng(5)
    q, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    moved = (x @ q) * 2.0 + 7.0 + 0.05 * rng.standard_normal(x.shape)
    nxt = cluster_vectors(moved, method, seed=7, n_clusters=6, init_labels=first.labels)
    aligned = align_labels(first.labels, nxt.labels)
    np.testing.assert_array_equal(aligned.labels, first.labels)
    assert aligned.stability == 1.0


def test_warm_start_errors(blobs):
    x, _ = blobs
    labels = cluster_vectors(x, "kmeans", n_clusters=6).labels
    with pytest.raises(ValueError, match="keeps the number of clusters"):
        cluster_vectors(x, "kmeans", n_clusters=5, init_labels=labels)
    with pytest.raises(ValueError, match="no warm start"):
        cluster_vectors(x, "dbscan", init_labels=labels)
    with pytest.raises(ValueError, match="shape"):
        cluster_vectors(x, "gmm", n_clusters=6, init_labels=labels[:10])


@pytest.mark.parametrize(
    ("method", "kwargs", "match"),
    [
        ("spectral", {}, "must be one of"),
        ("kmeans", {"eps": 1.0}, "unknown parameter"),
        ("kmeans", {"n_clusters": 0}, "n_clusters"),
    ],
)
def test_cluster_bad_input(blobs, method, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cluster_vectors(blobs[0], method, **kwargs)


def test_none_and_pca_embeddings_have_documented_shapes(blobs):
    x, _ = blobs
    none = embed_vectors(x, "none")
    assert none.shape == (600, 4) and none.dtype == np.float32
    np.testing.assert_allclose(none, x, rtol=1e-6)
    pca = embed_vectors(x, "pca", n_components=3)
    assert pca.shape == (600, 3) and pca.dtype == np.float32
    np.testing.assert_allclose(pca.mean(0), 0.0, atol=1e-4)
    var = pca.var(0)
    assert (np.diff(var) <= 1e-6).all()  # components by decreasing variance
    assert embed_vectors(x[:3], "pca", n_components=8).shape == (3, 3)  # capped at min(N, d)
    for bad, match in [("tsne", "must be one of"), ("pca", "n_components")]:
        with pytest.raises(ValueError, match=match):
            embed_vectors(x, bad, n_components=0)
    with pytest.raises(ValueError, match="NaN"):
        embed_vectors(np.full((4, 2), np.nan), "none")


def test_umap_is_seeded_and_keeps_blobs_apart(blobs):
    # the only UMAP test (UMAP compiles on first use): small data, fixed seed
    x, y = blobs
    x, y = x[:200], y[:200]
    a = embed_vectors(x, "umap", n_components=2, seed=3, n_neighbors=10)
    b = embed_vectors(x, "umap", n_components=2, seed=3, n_neighbors=10)
    assert a.shape == (200, 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    res = cluster_vectors(a, "kmeans", n_clusters=len(np.unique(y)))
    ari = adjusted_rand_score(y, res.labels)
    print(f"K-Means on UMAP of blobs: ARI {ari:.4f}")
    assert ari >= 0.95


def test_align_embedding_undoes_rotation_and_mirror(blobs):
    x, _ = blobs
    emb = embed_vectors(x, "pca", n_components=2)
    mirror_rot = np.array([[0.0, 1.0], [1.0, 0.0]]) @ np.array([[0.6, -0.8], [0.8, 0.6]])
    moved = emb @ mirror_rot + np.array([5.0, -3.0])
    np.testing.assert_allclose(align_embedding(emb, moved), emb, atol=1e-4)
