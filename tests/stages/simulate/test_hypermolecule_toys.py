"""The cat and the pretzel (seed 001): blob geometry, truth layout, SNR, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryohet.stages.simulate import RECIPES
from napari_cryohet.stages.simulate import hypermolecule_toys as D
from napari_cryohet.stages.simulate.engine import measured_snr

# ------------------------------------------------------------------ cat and pretzel


def test_cat_blobs_head_turns_body_rigid():
    tau = np.linspace(0, 1, 5)
    blobs = D.cat_blobs(tau).astype(np.float64)
    body, head = blobs[:, D.CAT_PARTS == 0], blobs[:, D.CAT_PARTS == 1]
    np.testing.assert_allclose(body, np.broadcast_to(body[0], body.shape), atol=1e-5)
    neck = body[:, -1]  # the pivot
    radii = np.linalg.norm(head - neck[:, None], axis=-1)
    np.testing.assert_allclose(radii, np.broadcast_to(radii[0], radii.shape), atol=1e-4)  # rigid head
    heading = head[:, 0] - neck  # the head centre turns about z by π (τ 0 → 1)
    angle = np.unwrap(np.arctan2(heading[:, 1], heading[:, 0]))
    np.testing.assert_allclose(np.diff(angle), np.pi / 4, atol=1e-5)
    np.testing.assert_allclose(heading[:, 2], heading[0, 2], atol=1e-5)


def test_pretzel_arms_independent_and_c2():
    tau = np.array([[0.2, 0.7], [0.2, 0.1], [0.9, 0.7]])
    blobs = D.pretzel_blobs(tau).astype(np.float64)
    base, arm1, arm2 = (blobs[:, D.PRETZEL_PARTS == k] for k in range(3))
    np.testing.assert_allclose(base[0], base[1], atol=1e-6)
    np.testing.assert_allclose(arm1[0], arm1[1], atol=1e-6)  # τ2 changes only arm 2
    np.testing.assert_allclose(arm2[0], arm2[2], atol=1e-6)  # τ1 changes only arm 1
    assert not np.allclose(arm2[0], arm2[1]) and not np.allclose(arm1[0], arm1[2])
    c2 = np.array([-1.0, -1.0, 1.0])
    same = D.pretzel_blobs(np.array([[0.3, 0.3]])).astype(np.float64)[0]
    np.testing.assert_allclose(same[D.PRETZEL_PARTS == 2], same[D.PRETZEL_PARTS == 1] * c2, atol=1e-5)


@pytest.mark.parametrize("name", ["cat", "pretzel"])
def test_toy_datasets(name):
    ds = RECIPES[name](16, box_size=32, apix=5.0, seed=7)
    truth = ds.ground_truth
    k = 1 if name == "cat" else 2
    assert truth["state"].shape == (16, k) and truth["state_params"].shape == (16, k)
    assert truth["coords_a"].shape[0] == 16
    vols = truth["global/volumes"]
    assert len(vols) == len(truth["global/volume_states"])
    # the objects fit in the box: the sampled volumes hold their whole mass
    np.testing.assert_allclose(vols.sum((1, 2, 3)), truth["global/blob_weights"].sum(), rtol=2e-3)
    snr = 0.1 if name == "cat" else 1 / 30
    assert measured_snr(ds) == pytest.approx(snr, rel=0.05)
    again = RECIPES[name](16, box_size=32, apix=5.0, seed=7)
    np.testing.assert_array_equal(again.images, ds.images)


def test_pretzel_symmetries_map_the_blobs_onto_the_mapped_states():
    """Each listed half turn g carries the pretzel at states τ onto the pretzel at σ(τ), blob for
    blob (as sets: the base's rings map onto themselves), so images at (R, τ) and (R g, σ(τ))
    are identical; a half turn that is not listed (about the diagonal x = y) is no symmetry."""
    from napari_cryohet.stages.simulate.hypermolecule_toys import pretzel_blobs, pretzel_symmetries

    tau = np.random.default_rng(4).uniform(0.0, 1.0, (6, 2))
    moved = pretzel_blobs(tau)

    def mismatch(g, states):  # largest distance from a turned blob to the nearest blob at `states`
        turned = moved @ np.asarray(g).T
        return np.linalg.norm(turned[:, :, None] - pretzel_blobs(states)[:, None], axis=-1).min(-1).max()

    symmetries = pretzel_symmetries()
    assert len(symmetries) == 4
    for g, reverse, swap in symmetries:
        states = tau[:, ::-1] if swap else tau
        states = 1.0 - states if reverse else states
        assert mismatch(g, states) < 1e-4
        assert np.allclose(np.asarray(g) @ np.asarray(g), np.eye(3)) and np.isclose(np.linalg.det(g), 1.0)
    diagonal = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])  # half turn about x = y
    assert min(mismatch(diagonal, s) for s in (tau, tau[:, ::-1], 1.0 - tau, 1.0 - tau[:, ::-1])) > 1.0
