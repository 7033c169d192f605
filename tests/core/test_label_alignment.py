"""Stable labels: a known permutation is undone, a known merge and split are reported, noise stays noise."""

import numpy as np
import pytest

from napari_cryohet.core.label_alignment import (
    ClusterMerge,
    ClusterSplit,
    align_labels,
    align_memberships,
    label_stability,
)


def _blocks(sizes, ids=None):
    """Labels ``ids[k]`` repeated ``sizes[k]`` times."""
    ids = range(len(sizes)) if ids is None else ids
    return np.concatenate([np.full(s, i) for s, i in zip(sizes, ids, strict=True)]).astype(np.int64)


def test_known_permutation_is_recovered_exactly():
    rng = np.random.default_rng(0)
    previous = rng.integers(0, 6, 600)
    previous[rng.random(600) < 0.1] = -1
    perm = np.array([4, 0, 5, 2, 1, 3]) + 10  # current id of previous cluster k
    current = np.where(previous >= 0, perm[np.maximum(previous, 0)], -1)
    # a few particles change cluster: the matching must still be the permutation
    moved = rng.choice(np.flatnonzero(previous >= 0), 20, replace=False)
    current[moved] = perm[(previous[moved] + 1) % 6]
    a = align_labels(previous, current)
    assert a.mapping == {int(perm[k]): k for k in range(6)}
    same = np.setdiff1d(np.arange(600), moved)
    np.testing.assert_array_equal(a.labels[same], previous[same])
    assert a.new_ids == () and a.vanished == () and a.merges == () and a.splits == ()
    assert a.next_id == 6
    assert a.stability == pytest.approx(label_stability(previous, a.labels))  # ARI ignores ids


def test_known_merge_and_split_are_reported_with_ids_and_counts():
    # previous: 0 (100), 1 (60), 2 (40), 3 (80)
    previous = _blocks([100, 60, 40, 80])
    # current (input ids scrambled): clusters 1 and 2 merge into input 7; cluster 0 splits
    # 70 / 30 into inputs 4 and 9; cluster 3 is input 2.
    current = _blocks([70, 30, 60, 40, 80], ids=[4, 9, 7, 7, 2])
    a = align_labels(previous, current, fraction=0.3)
    # Hungarian: 4→0 (70), 7→1 (60, beats 40 from prev 2), 2→3 (80); 9 is new; 2 vanished
    assert a.mapping == {2: 3, 4: 0, 7: 1, 9: 4}
    assert a.new_ids == (4,) and a.vanished == (2,)
    assert a.merges == (ClusterMerge(current_id=1, previous_ids=(1, 2), counts=(60, 40)),)
    assert a.splits == (ClusterSplit(previous_id=0, current_ids=(0, 4), counts=(70, 30)),)
    np.testing.assert_array_equal(a.labels, _blocks([70, 30, 60, 40, 80], ids=[0, 4, 1, 1, 3]))
    assert a.overlap.sum() == 280


def test_split_below_fraction_is_not_reported():
    previous = _blocks([100, 50])
    current = _blocks([80, 20, 50], ids=[0, 1, 2])  # 20 % of cluster 0 leaves: below 30 %
    a = align_labels(previous, current, fraction=0.3)
    assert a.splits == () and a.merges == ()
    assert a.mapping == {0: 0, 1: 2, 2: 1}  # the 20 particles form a new cluster, id 2


def test_noise_stays_noise_and_never_takes_an_id():
    previous = _blocks([50, 50, 30], ids=[0, 1, -1])
    # current: all of previous noise plus half of cluster 1 become noise; a new cluster
    # appears from previous noise
    current = _blocks([50, 25, 25, 20, 10], ids=[3, -1, 8, 5, -1])
    a = align_labels(previous, current)
    assert -1 not in a.mapping and -1 not in a.mapping.values()
    np.testing.assert_array_equal(a.labels == -1, current == -1)
    assert a.mapping[3] == 0 and a.mapping[8] == 1
    assert a.mapping[5] == 2 and a.new_ids == (2,)  # cluster of former noise: new id
    # noise is excluded from the overlap matrix and from merges/splits
    assert a.overlap.shape == (2, 3) and a.overlap.sum() == 75
    assert a.merges == () and a.splits == ()


def test_other_noise_value_is_respected():
    a = align_labels([0, 0, 9, 9, 99], [1, 1, 0, 0, 99], noise=99)
    assert a.labels.tolist() == [0, 0, 9, 9, 99]


def test_new_clusters_get_fresh_ids_never_used_before():
    previous = _blocks([40, 40, 40])
    current = _blocks([40, 40, 20, 20], ids=[0, 1, 2, 3])  # cluster 2 splits 20/20
    a = align_labels(previous, current, next_id=7)  # ids 3..6 were used in earlier iterations
    assert a.new_ids == (7,) and a.next_id == 8
    assert set(a.labels.tolist()) == {0, 1, 2, 7}
    # no shared particle at all: the current cluster is new, the previous one vanished
    c = align_labels(_blocks([10, 10], ids=[0, -1]), _blocks([10, 10], ids=[-1, 0]))
    assert c.mapping == {0: 1} and c.new_ids == (1,) and c.vanished == (0,)


def test_min_overlap_rejects_weak_matches():
    # previous cluster 0 has 5 particles, the rest was noise; now all 100 form cluster 3:
    # it shares only 5 % of its particles with cluster 0
    previous = np.r_[np.zeros(5, int), np.full(95, -1)]
    current = np.full(100, 3)
    a = align_labels(previous, current, min_overlap=0.1)
    assert a.mapping == {3: 1} and a.new_ids == (1,) and a.vanished == (0,)
    b = align_labels(previous, current, min_overlap=0.0)
    assert b.mapping == {3: 0} and b.new_ids == ()


def test_label_stability_bounds():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 5, 2000)
    relabelled = np.array([3, 4, 0, 1, 2])[labels]
    assert label_stability(labels, relabelled) == pytest.approx(1.0)
    independent = rng.integers(0, 5, 2000)
    ari = label_stability(labels, independent)
    print(f"ARI of independent labelings, N=2000: {ari:+.4f}")
    assert abs(ari) < 0.05


def test_align_memberships_follows_the_label_assignment():
    rng = np.random.default_rng(4)
    previous = rng.integers(0, 3, 300)
    perm = np.array([2, 0, 1])  # current id of previous cluster k
    current = perm[previous]
    w = np.eye(3)[current] * 0.8 + 0.2 / 3  # (N, 3) columns by current id
    a = align_labels(previous, current)
    w_aligned, ids = align_memberships(w, a)
    assert ids.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(w_aligned.argmax(1), previous)
    np.testing.assert_allclose(w_aligned.sum(1), 1.0)


@pytest.mark.parametrize(
    ("previous", "current", "kwargs", "match"),
    [
        ([0, 1], [0, 1, 1], {}, "same particles"),
        ([[0, 1]], [[0, 1]], {}, "1-D"),
        ([0, -2], [0, 1], {}, "negative labels"),
        ([0.5, 1], [0, 1], {}, "integer"),
        ([0, 1], [0, 1], {"fraction": 0.0}, "fraction"),
        ([0, 1], [0, 1], {"min_overlap": 1.5}, "min_overlap"),
    ],
)
def test_bad_input_raises(previous, current, kwargs, match):
    with pytest.raises(ValueError, match=match):
        align_labels(previous, current, **kwargs)
