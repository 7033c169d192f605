"""Issue 16 item 3a: a few constant or 1e6-valued images among 200 hijack the spectral
embedding (a split graph, or an eigenvector localised on them); the stage names them and
can drop them."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
import scipy.stats

from napari_cryohet.core.particle_dataset import ParticleDataset
from napari_cryohet.stages.spectral import SpectralConfig
from napari_cryohet.stages.spectral.outliers import find_spectral_outliers
from napari_cryohet.stages.spectral.run import run_spectral

BAD = [17, 50, 101, 150, 190]
CFG = dict(representation="pca_images", n_components=10, k=8, n_eigenvectors=5)


def blob_images(n: int = 200, d: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A Gaussian blob sliding along x (one conformational coordinate) plus noise: ``(N, D, D)``
    images and the ``(N,)`` coordinate."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, 1, n)
    yy, xx = np.mgrid[:d, :d]
    images = np.exp(-((xx[None] - 4 - 8 * t[:, None, None]) ** 2 + (yy[None] - 8) ** 2) / 6)
    return (images + rng.normal(0, 0.05, (n, d, d))).astype(np.float32), t


def _max_share(vectors: np.ndarray, m: int) -> float:
    """Largest share of a column's squared mass on its ``m`` heaviest rows."""
    w = vectors ** 2 / (vectors ** 2).sum(0)
    return float(np.sort(w, axis=0)[::-1][:m].sum(0).max())


@pytest.mark.parametrize("value", [0.0, 1e6], ids=["constant", "1e6-valued"])
def test_outlier_images_are_named_and_can_be_dropped(value):
    images, t = blob_images()
    images[BAD] = value
    ds = ParticleDataset(images=images, apix=1.0, indices=np.arange(1000, 1200))
    with pytest.warns(UserWarning, match="5 particle\\(s\\) dominate it: 1017, 1050, 1101, 1150, 1190 ") as rec:
        res = run_spectral(ds, SpectralConfig(**CFG))
    msg = str(rec[0].message)
    assert "exclude_outliers=True" in msg and "--exclude-outliers" in msg
    assert res.provenance["outlier_particles"]["particles"] == [1000 + b for b in BAD]
    share = _max_share(res.eigenvectors, 4)
    print(f"{value}: eigenvalues {np.round(res.eigenvalues, 5)}; largest share on 4 particles {share:.2f}; {msg[:160]}")
    assert share > 0.5  # the symptom the warning is about
    if value == 1e6:  # cut off: a second zero eigenvalue
        assert res.provenance["n_components_graph"] == 2 and res.eigenvalues[1] < 1e-8
    clean = run_spectral(ds, SpectralConfig(**CFG, exclude_outliers=True))  # no warning (warnings are errors)
    np.testing.assert_array_equal(clean.indices, np.setdiff1d(np.arange(1000, 1200), [1000 + b for b in BAD]))
    assert clean.provenance["excluded_outliers"]["particles"] == [1000 + b for b in BAD]
    assert clean.provenance["n_components_graph"] == 1 and clean.eigenvalues[1] > 1e-4
    clean_share = _max_share(clean.eigenvectors[:, 1:], 4)
    print(f"  excluded: eigenvalues {np.round(clean.eigenvalues, 5)}; largest share on 4 particles {clean_share:.2f}")
    assert clean_share < 0.2
    # the first non-trivial eigenvector follows the blob position again (rank correlation)
    keep = np.setdiff1d(np.arange(200), BAD)
    r = scipy.stats.spearmanr(t[keep], clean.eigenvectors[:, 1]).statistic
    print(f"  excluded: |Spearman| of eigenvector 1 with the blob position {abs(r):.3f}")
    assert abs(r) > 0.9


def test_clean_data_raises_no_warning_and_keeps_the_fingerprint():
    res = run_spectral(ParticleDataset(images=blob_images()[0], apix=1.0), SpectralConfig(**CFG))
    assert "outlier_particles" not in res.provenance
    assert "exclude_outliers" not in SpectralConfig(**CFG).science_dict()  # old runs keep their fingerprint
    assert SpectralConfig(**CFG).fingerprint() != SpectralConfig(**CFG, exclude_outliers=True).fingerprint()


def test_detector_on_a_hand_built_graph():
    """Two cliques of 96 and 4 nodes: the 4 form an outlier component; a localised vector is
    flagged; two halves of 50 are two populations, not outliers."""
    n = 100
    w = np.zeros((n, n))
    w[:96, :96] = 1
    w[96:, 96:] = 1
    np.fill_diagonal(w, 0)
    vec = np.ones((n, 2))
    vec[:, 1] = 0.01
    vec[[3, 7], 1] = 1.0  # 2 rows hold ~99 % of column 1
    out = find_spectral_outliers(scipy.sparse.csr_matrix(w), vec)
    assert out.n_components == 2
    np.testing.assert_array_equal(out.small_components, np.arange(96, 100))
    np.testing.assert_array_equal(out.rows, [3, 7, 96, 97, 98, 99])
    assert list(out.eigenvectors) == [1]
    w[0, 96] = w[96, 0] = 1  # connect them; a flat vector: nothing flagged
    assert not find_spectral_outliers(w, np.ones((n, 1)))
    halves = np.zeros((n, n))
    halves[:50, :50] = halves[50:, 50:] = 1
    out = find_spectral_outliers(halves, np.ones((n, 1)))
    assert out.n_components == 2 and not out
