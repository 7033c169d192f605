"""Landscape clustering (cryoDRGN's landscape analysis) with an analytic decoder: latent groups
that decode to the same volume are merged, where K-Means on the latents splits them."""

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from napari_cryohet.stages._common import Cancelled, CancelToken
from napari_cryohet.stages.refine.landscape import landscape_clusters

D = 16
_GRID = np.stack(np.meshgrid(*(np.arange(D) - D / 2,) * 3, indexing="ij"), axis=-1)  # (D, D, D, 3)


def blob_decoder(z):
    """``(B, 3)`` latents → ``(B, D, D, D)`` Gaussian blobs.

    The blob sits at ``(|z0|/2 − 2, z1/2 − 2, 0)`` voxels with σ = 1.5 + 0.05·|z0| voxels;
    ``z2`` is ignored. ``|z0|`` makes the decoder even in z0: latents at z0 = −8 and +8
    decode to the same volume.
    """
    z = np.asarray(z, dtype=np.float64)
    pos = np.stack([np.abs(z[:, 0]) / 2 - 2, z[:, 1] / 2 - 2, np.zeros(len(z))], axis=1)  # (B, 3)
    sigma = 1.5 + 0.05 * np.abs(z[:, 0])  # (B,)
    r2 = ((_GRID[None] - pos[:, None, None, None]) ** 2).sum(-1)  # (B, D, D, D)
    return np.exp(-r2 / (2 * sigma[:, None, None, None] ** 2)).astype(np.float32)


def latent_groups(means, n_per=200, seed=0):
    """Gaussian groups (σ 0.7 in z0, z1; σ 2 in the ignored z2) around ``means`` (G, 2)."""
    rng = np.random.default_rng(seed)
    z, g = [], []
    for i, (a, b) in enumerate(means):
        z.append(np.column_stack([rng.normal(a, 0.7, n_per), rng.normal(b, 0.7, n_per),
                                  rng.normal(0, 2.0, n_per)]))
        g.append(np.full(n_per, i))
    return np.concatenate(z), np.concatenate(g)


#: Groups A1 (z0 = −8) and A2 (z0 = +8) decode to one volume, B (z1 = 8) to another.
MERGE_MEANS = [(-8.0, 0.0), (8.0, 0.0), (0.0, 8.0)]
MERGE_TRUTH = np.array([0, 0, 1])  # group → volume class


@pytest.mark.parametrize("linkage, n_pcs", [("ward", 10), ("average", None)])
def test_groups_far_apart_with_the_same_volume_are_merged(linkage, n_pcs):
    z, group = latent_groups(MERGE_MEANS)
    truth = MERGE_TRUTH[group]
    res = landscape_clusters(z, blob_decoder, n_clusters=2, n_centres=30, n_pcs=n_pcs, linkage=linkage)
    ari = adjusted_rand_score(truth, res.clusters.labels)
    km = KMeans(n_clusters=2, n_init=10, random_state=0).fit_predict(z)
    ari_km = adjusted_rand_score(truth, km)
    print(f"{linkage}, n_pcs={n_pcs}: landscape ARI {ari:.3f}, K-Means on latents ARI {ari_km:.3f}, "
          f"explained variance {np.round(res.explained_variance_ratio[:3], 3)}")
    assert ari >= 0.95
    assert ari_km < 0.7
    # each cluster's mean volume is its class's volume
    for c in range(2):
        cls = np.bincount(truth[res.clusters.labels == c]).argmax()
        ref = blob_decoder(np.array([[8.0, 0.0, 0.0], [0.0, 8.0, 0.0]])[cls:cls + 1])[0]
        corr = np.corrcoef(res.cluster_volumes[c].ravel(), ref.ravel())[0, 1]
        assert corr > 0.95, (c, corr)


def test_distinct_volumes_are_recovered_and_labels_follow_the_centres():
    z, truth = latent_groups([(-8.0, 0.0), (0.0, 8.0)], n_per=150, seed=1)
    res = landscape_clusters(z, blob_decoder, n_clusters=2, n_centres=20, seed=3)
    lab = res.clusters.labels
    ari = adjusted_rand_score(truth, lab)
    print(f"two distinct volumes: landscape ARI {ari:.3f}, mask {res.mask.sum()} voxels "
          f"at threshold {res.mask_threshold:.3f}")
    assert ari >= 0.95
    assert lab.shape == (len(z),) and lab.dtype == np.int64
    assert set(np.unique(lab)) <= {0, 1}
    assert np.array_equal(lab, res.centre_labels[res.kmeans_labels])
    assert res.centre_latents.shape == (20, 3) and res.volume_pcs.shape[0] == 20
    assert np.array_equal(res.centre_counts, np.bincount(res.kmeans_labels, minlength=20))
    for c in range(2):
        np.testing.assert_allclose(res.clusters.centres[c], z[lab == c].mean(0))
    assert res.clusters.method == "landscape" and res.clusters.n_clusters == 2
    # automatic threshold: mean of half the 99.99th percentiles, the blob peaks are ~1
    assert 0.4 < res.mask_threshold < 0.55 and 0 < res.mask.sum() < D**3


def test_decode_is_called_in_batches_at_the_centres_and_on_data_snaps_to_particles():
    z, _ = latent_groups(MERGE_MEANS, n_per=50)
    calls = []

    def decode(c):
        calls.append(np.array(c))
        return blob_decoder(c)

    res = landscape_clusters(z, decode, n_clusters=3, n_centres=12, decode_batch=5, on_data=True,
                             mask_threshold=-np.inf)
    assert [len(c) for c in calls] == [5, 5, 2]
    np.testing.assert_allclose(np.concatenate(calls), res.centre_latents, rtol=1e-6)
    # on_data: every decoded latent is one of the particles'
    assert all(np.isclose(z, c, rtol=0, atol=1e-9).all(1).any() for c in res.centre_latents)
    assert res.mask.all() and res.mask_threshold == -np.inf


def test_bad_input_and_cancel():
    z, _ = latent_groups(MERGE_MEANS, n_per=20)
    with pytest.raises(ValueError, match="n_clusters"):
        landscape_clusters(z, blob_decoder, n_clusters=11, n_centres=10)
    with pytest.raises(ValueError, match="decode"):
        landscape_clusters(z, lambda c: blob_decoder(c)[:, 0], n_clusters=2, n_centres=10)
    with pytest.raises(ValueError, match="decode"):
        landscape_clusters(z, lambda c: blob_decoder(c[:1]), n_clusters=2, n_centres=10)
    with pytest.raises(ValueError, match="linkage"):
        landscape_clusters(z, blob_decoder, n_clusters=2, n_centres=10, linkage="median")
    with pytest.raises(ValueError, match="mask_threshold"):
        landscape_clusters(z, blob_decoder, n_clusters=2, n_centres=10, mask_threshold=2.0)
    with pytest.raises(ValueError, match="latents"):
        landscape_clusters(z[:, 0], blob_decoder)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        landscape_clusters(z, blob_decoder, n_clusters=2, n_centres=10, cancel=token)
