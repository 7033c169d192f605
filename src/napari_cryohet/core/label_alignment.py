"""Stable cluster labels across iterations: Hungarian matching, merges, splits, label stability.

An iterative clustering/refinement loop re-clusters the particles at every iteration, and a
clustering algorithm numbers its clusters arbitrarily: without matching, cluster 2 of one
iteration may be cluster 0 of the next and be refined against the wrong map (Silvera Coeff
2025, §4.1.4, Fig. 4.5). :func:`align_labels` renumbers the current clusters so that each
takes the id of the previous cluster it shares most particles with: a Hungarian assignment
(:func:`scipy.optimize.linear_sum_assignment`) that maximises the total number of shared
particles over the particle-overlap (contingency) matrix. Matching on shared particles,
not on positions, makes the result independent of how the embedding moved: a UMAP
re-embedding that rotates or mirrors the picture (Silvera Coeff 2025, §5.3) changes
nothing here.

Conventions
-----------
- Labels are ``(N,)`` integers over the same particles, in the same order, in both
  iterations; cluster ids are ≥ 0 and ``noise`` (default −1, what DBSCAN/HDBSCAN write)
  marks particles in no cluster. Noise is never matched, never given an id, and stays
  noise in the relabelled output.
- A current cluster with no previous counterpart (more clusters than before, or too
  little overlap) gets a new id never used before: ``next_id`` upward, by decreasing
  size. A previous cluster with no counterpart is reported in ``Alignment.vanished``
  (its id is not reused).
- Merges and splits are reported, not undone (Silvera Coeff 2025, Fig. 5.19 shows K-Means
  merging and splitting clusters between iterations): a *merge* is one current cluster
  holding at least ``fraction`` of each of two or more previous clusters; a *split* is one
  previous cluster with at least ``fraction`` of its particles in each of two or more
  current clusters. Fractions are of the previous cluster's size (all its particles,
  including those that became noise).

:func:`label_stability` is the adjusted Rand index between two labelings (Hubert & Arabie
1985; :func:`sklearn.metrics.adjusted_rand_score`), what issue 13 calls "label stability":
1 for the same partition under any renumbering, ≈ 0 for independent labelings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "ClusterMerge",
    "ClusterSplit",
    "Alignment",
    "align_labels",
    "align_memberships",
    "label_stability",
]


@dataclass(frozen=True)
class ClusterMerge:
    """One current cluster that took ≥ ``fraction`` of two or more previous clusters.

    Attributes
    ----------
    current_id
        The current cluster's id after alignment.
    previous_ids
        The previous clusters it took from, by decreasing shared count.
    counts
        Particles shared with each of ``previous_ids``.
    """

    current_id: int
    previous_ids: tuple[int, ...]
    counts: tuple[int, ...]


@dataclass(frozen=True)
class ClusterSplit:
    """One previous cluster whose particles went, ≥ ``fraction`` each, to two or more current clusters.

    Attributes
    ----------
    previous_id
        The previous cluster's id.
    current_ids
        The current clusters (ids after alignment) it went to, by decreasing shared count.
    counts
        Particles shared with each of ``current_ids``.
    """

    previous_id: int
    current_ids: tuple[int, ...]
    counts: tuple[int, ...]


@dataclass(frozen=True)
class Alignment:
    """What :func:`align_labels` found.

    Attributes
    ----------
    labels
        ``(N,)`` int64, the current labels renumbered: matched clusters carry the previous
        ids, new ones fresh ids, noise stays ``noise``.
    mapping
        Current (input) id → aligned id, for every current cluster.
    matched
        Previous id → aligned current id (the same number) for the matched pairs.
    new_ids
        Aligned ids given to current clusters without a previous counterpart.
    vanished
        Previous ids with no current counterpart.
    merges, splits
        :class:`ClusterMerge` / :class:`ClusterSplit` records.
    overlap
        ``(P, C)`` int64 contingency matrix: particles in previous cluster
        ``previous_ids[i]`` and current cluster ``current_ids[j]`` (input ids; noise
        excluded).
    previous_ids, current_ids
        ``(P,)`` and ``(C,)`` the row and column ids of ``overlap``.
    next_id
        The smallest id not used so far (previous ids, aligned ids and the ``next_id``
        given): pass it to the next call so that ids are never reused.
    stability
        :func:`label_stability` of the two labelings.
    """

    labels: np.ndarray
    mapping: dict[int, int]
    matched: dict[int, int]
    new_ids: tuple[int, ...]
    vanished: tuple[int, ...]
    merges: tuple[ClusterMerge, ...]
    splits: tuple[ClusterSplit, ...]
    overlap: np.ndarray = field(repr=False)
    previous_ids: np.ndarray = field(repr=False)
    current_ids: np.ndarray = field(repr=False)
    next_id: int = 0
    stability: float = 0.0


def _check_labels(labels, name: str, noise: int) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of cluster labels, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must hold integer cluster labels, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    bad = (arr < 0) & (arr != noise)
    if bad.any():
        raise ValueError(f"{name} holds negative labels other than noise={noise}: "
                         f"{sorted(set(arr[bad].tolist()))[:5]}")
    return arr


def _overlap_matrix(previous: np.ndarray, current: np.ndarray, noise: int):
    """``(P, C)`` counts of particles in both clusters, rows/columns the sorted non-noise ids."""
    prev_ids = np.unique(previous[previous != noise])
    cur_ids = np.unique(current[current != noise])
    both = (previous != noise) & (current != noise)
    rows = np.searchsorted(prev_ids, previous[both])
    cols = np.searchsorted(cur_ids, current[both])
    overlap = np.zeros((len(prev_ids), len(cur_ids)), dtype=np.int64)
    np.add.at(overlap, (rows, cols), 1)
    return overlap, prev_ids, cur_ids


def align_labels(previous, current, *, noise: int = -1, min_overlap: float = 0.1,
                 fraction: float = 0.3, next_id: int | None = None) -> Alignment:
    """Renumber ``current`` so its clusters keep the ids of the matching ``previous`` clusters.

    The Hungarian assignment of Silvera Coeff 2025, §4.1.4, on the particle-overlap matrix
    (maximum total of shared particles, :func:`scipy.optimize.linear_sum_assignment`).

    Parameters
    ----------
    previous, current
        ``(N,)`` integer labels of the same particles at two iterations; ids ≥ 0, and
        ``noise`` for particles in no cluster.
    noise
        The noise label (−1 for DBSCAN/HDBSCAN); kept as is, never matched.
    min_overlap
        A Hungarian pair counts as a match only when the particles it shares are at least
        this fraction of the current cluster (0 < ... ≤ 1; any shared particle when 0).
        Below it, the current cluster is new.
    fraction
        Threshold for the merge and split reports, as a fraction of the previous
        cluster's size (default 0.3).
    next_id
        Smallest id new clusters may take; default one more than the largest previous id
        (0 when there is none). Pass ``Alignment.next_id`` of the last call to never reuse
        an id over many iterations.

    Returns
    -------
    :class:`Alignment`.

    Examples
    --------
    >>> a = align_labels([0, 0, 1, 1, -1], [5, 5, 3, 3, -1])
    >>> a.labels.tolist(), a.mapping
    ([0, 0, 1, 1, -1], {3: 1, 5: 0})
    """
    from scipy.optimize import linear_sum_assignment

    prev = _check_labels(previous, "previous", noise)
    cur = _check_labels(current, "current", noise)
    if prev.shape != cur.shape:
        raise ValueError(f"previous and current must label the same particles, got {prev.shape} "
                         f"and {cur.shape}")
    if not 0.0 <= min_overlap <= 1.0:
        raise ValueError(f"min_overlap must be in [0, 1], got {min_overlap}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")

    overlap, prev_ids, cur_ids = _overlap_matrix(prev, cur, noise)
    cur_sizes = np.array([(cur == c).sum() for c in cur_ids], dtype=np.int64)
    prev_sizes = np.array([(prev == p).sum() for p in prev_ids], dtype=np.int64)

    mapping: dict[int, int] = {}
    matched: dict[int, int] = {}
    if overlap.size:
        rows, cols = linear_sum_assignment(overlap, maximize=True)
        for r, c in zip(rows, cols, strict=True):
            shared = overlap[r, c]
            if shared > 0 and shared >= min_overlap * cur_sizes[c]:
                mapping[int(cur_ids[c])] = int(prev_ids[r])
                matched[int(prev_ids[r])] = int(prev_ids[r])

    start = int(prev_ids.max()) + 1 if len(prev_ids) else 0
    fresh = start if next_id is None else max(int(next_id), start)
    unmatched = [j for j in range(len(cur_ids)) if int(cur_ids[j]) not in mapping]
    unmatched.sort(key=lambda j: (-cur_sizes[j], cur_ids[j]))  # largest first, then by id
    new_ids = []
    for j in unmatched:
        mapping[int(cur_ids[j])] = fresh
        new_ids.append(fresh)
        fresh += 1
    mapping = dict(sorted(mapping.items()))

    labels = np.full_like(cur, noise)
    for c, new in mapping.items():
        labels[cur == c] = new

    merges = []
    for j, c in enumerate(cur_ids):
        big = np.flatnonzero(overlap[:, j] >= fraction * prev_sizes)
        big = big[overlap[big, j] > 0]
        if len(big) >= 2:
            big = big[np.argsort(-overlap[big, j], kind="stable")]
            merges.append(ClusterMerge(mapping[int(c)], tuple(int(prev_ids[i]) for i in big),
                                       tuple(int(overlap[i, j]) for i in big)))
    splits = []
    for i, p in enumerate(prev_ids):
        big = np.flatnonzero((overlap[i] >= fraction * prev_sizes[i]) & (overlap[i] > 0))
        if len(big) >= 2:
            big = big[np.argsort(-overlap[i, big], kind="stable")]
            splits.append(ClusterSplit(int(p), tuple(mapping[int(cur_ids[j])] for j in big),
                                       tuple(int(overlap[i, j]) for j in big)))

    vanished = tuple(int(p) for p in prev_ids if int(p) not in matched)
    return Alignment(labels=labels, mapping=mapping, matched=dict(sorted(matched.items())),
                     new_ids=tuple(new_ids), vanished=vanished, merges=tuple(merges),
                     splits=tuple(splits), overlap=overlap, previous_ids=prev_ids,
                     current_ids=cur_ids, next_id=fresh, stability=label_stability(prev, cur))


def align_memberships(memberships, alignment: Alignment, *, current_ids=None) -> tuple[np.ndarray, np.ndarray]:
    """Soft memberships with their columns renumbered by the same assignment as the labels.

    Parameters
    ----------
    memberships
        ``(N, K)`` soft memberships (e.g. a Gaussian mixture's responsibilities); column
        ``k`` belongs to current (input) cluster ``current_ids[k]``.
    alignment
        From :func:`align_labels` on the hard labels of the same clustering.
    current_ids
        ``(K,)`` input ids of the columns; default ``0 .. K−1`` (scikit-learn's order).

    Returns
    -------
    ``(memberships, ids)``: the ``(N, K)`` columns reordered by increasing aligned id and
    ``(K,)`` those ids. A column whose cluster got no particle (hence no id) is given a
    fresh id above all others.
    """
    w = np.asarray(memberships)
    if w.ndim != 2:
        raise ValueError(f"memberships must have shape (N, K), got {w.shape}")
    ids_in = np.arange(w.shape[1]) if current_ids is None else np.asarray(current_ids, dtype=np.int64)
    if ids_in.shape != (w.shape[1],):
        raise ValueError(f"current_ids must have shape ({w.shape[1]},), got {ids_in.shape}")
    fresh = alignment.next_id
    out_ids = []
    for c in ids_in.tolist():
        if c in alignment.mapping:
            out_ids.append(alignment.mapping[c])
        else:
            out_ids.append(fresh)
            fresh += 1
    out_ids = np.asarray(out_ids, dtype=np.int64)
    order = np.argsort(out_ids, kind="stable")
    return w[:, order], out_ids[order]


def label_stability(previous, current) -> float:
    """Label stability between two iterations: the adjusted Rand index of their labelings.

    Invariant to renumbering (no alignment needed); 1 for identical partitions, ≈ 0 (can
    be slightly negative) for independent ones (Hubert & Arabie 1985). Noise counts as one
    more cluster, so noise changing is instability too.

    Parameters
    ----------
    previous, current
        ``(N,)`` labels of the same particles.
    """
    from sklearn.metrics import adjusted_rand_score

    prev = np.asarray(previous).ravel()
    cur = np.asarray(current).ravel()
    if prev.shape != cur.shape:
        raise ValueError(f"previous and current must label the same particles, got {prev.shape} "
                         f"and {cur.shape}")
    return float(adjusted_rand_score(prev, cur))
