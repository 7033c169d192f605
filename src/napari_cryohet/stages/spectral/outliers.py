"""Particles that hijack a spectral embedding: disconnected graph components and eigenvectors
concentrated on a few particles.

A handful of blank, constant or mis-scaled images (a bad micrograph region, a value written
1e6 times too large) sit far from every other particle. The similarity graph then either
splits (a second zero eigenvalue of the normalised Laplacian: one eigenvector per connected
component, eq. 2.5 of Esteve-Yagüe et al. 2022) or keeps them on a weak link, and one of the
first eigenvectors localises on them (most of its squared mass on a few particles) instead of
following a conformational change. Both are detected here from the graph and the
eigenvectors; :func:`~napari_cryohet.stages.spectral.run.run_spectral` warns naming the
particles, records them in the result's provenance and, with ``exclude_outliers=True``,
recomputes without them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph

__all__ = ["OUTLIER_MASS", "OUTLIER_FRACTION", "OUTLIER_COMPONENT", "SpectralOutliers", "find_spectral_outliers"]

#: An eigenvector is outlier-dominated when more than this share of its squared mass ...
OUTLIER_MASS = 0.5
#: ... lies on fewer than this share of the particles.
OUTLIER_FRACTION = 0.02
#: A connected component of the graph other than the largest is an outlier group when it
#: holds fewer than this share of the particles (larger ones are real, separate populations,
#: or a graph with too few neighbours k).
OUTLIER_COMPONENT = 0.05


@dataclass
class SpectralOutliers:
    """What :func:`find_spectral_outliers` found.

    Attributes
    ----------
    rows
        ``(M,)`` sorted 0-based rows of the dataset the embedding was computed on.
    n_components
        Connected components of the similarity graph (1 when connected).
    small_components
        Rows in components other than the largest holding fewer than ``OUTLIER_COMPONENT · N`` rows.
    eigenvectors
        Column → (rows dominating it, share of the column's squared mass on them).
    """

    rows: np.ndarray
    n_components: int
    small_components: np.ndarray
    eigenvectors: dict[int, tuple[np.ndarray, float]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return len(self.rows) > 0

    def describe(self) -> str:
        """Why the rows were flagged, in words."""
        parts = []
        if len(self.small_components):
            parts.append(f"{len(self.small_components)} particle(s) are cut off from the others in the "
                         f"similarity graph (it has {self.n_components} connected components, hence "
                         f"{self.n_components} zero eigenvalues)")
        for col, (rows, share) in self.eigenvectors.items():
            parts.append(f"eigenvector {col} has {share:.0%} of its weight on {len(rows)} particle(s)")
        return "; ".join(parts)


def find_spectral_outliers(weights, eigenvectors: np.ndarray, *, mass: float = OUTLIER_MASS,
                           fraction: float = OUTLIER_FRACTION,
                           component: float = OUTLIER_COMPONENT) -> SpectralOutliers:
    """Rows that form small graph components or dominate an eigenvector.

    Parameters
    ----------
    weights
        ``(N, N)`` symmetric similarity graph (sparse or dense) the eigenvectors came from.
    eigenvectors
        ``(N, K)`` eigenvectors of its normalised Laplacian (any normalisation per column).
    mass, fraction
        A column is outlier-dominated when more than ``mass`` of its squared entries lie on
        fewer than ``fraction · N`` rows (at least 1). Its outliers are the rows holding more
        than ten times the uniform share ``1/N`` of that mass (so at most ``N / 10`` rows).
    component
        Components other than the largest with fewer than ``component · N`` rows are outliers.

    Returns
    -------
    SpectralOutliers
    """
    n = eigenvectors.shape[0]
    graph = scipy.sparse.csr_matrix(weights) if not scipy.sparse.issparse(weights) else weights
    n_comp, labels = scipy.sparse.csgraph.connected_components(graph, directed=False)
    small = np.zeros(n, bool)
    if n_comp > 1:
        sizes = np.bincount(labels)
        tiny = (sizes < component * n) & (np.arange(n_comp) != np.argmax(sizes))
        small = tiny[labels]
    m = max(1, int(np.floor(fraction * n)))
    flagged: dict[int, tuple[np.ndarray, float]] = {}
    for col in range(eigenvectors.shape[1]):
        w = np.asarray(eigenvectors[:, col], np.float64) ** 2  # (N,)
        total = w.sum()
        if not total > 0:
            continue
        w = w / total
        top = np.argsort(w)[::-1][:m]
        share = float(w[top].sum())
        if share > mass:
            rows = np.flatnonzero(w > 10.0 / n)
            if len(rows):
                flagged[col] = (rows, float(w[rows].sum()))
    out = np.zeros(n, bool)
    out[small] = True
    for rows, _ in flagged.values():
        out[rows] = True
    return SpectralOutliers(rows=np.flatnonzero(out), n_components=int(n_comp),
                            small_components=np.flatnonzero(small), eigenvectors=flagged)
