"""Each cluster of a refine run as a RELION ``.star``: refined poses, class number, half set.

The particles of one cluster (after the last iteration) keep every original column of
the ``.star`` they came from; their pose columns are rewritten from the refined poses,
``rlnClassNumber`` is the cluster id + 1 (RELION numbers classes from 1) and
``rlnRandomSubset`` the run's gold-standard half set, so RELION, cryoSPARC or a later run
continues with the same halves (Silvera Coeff 2025, §4.1: the thesis' loop lost track of
which particle ended where).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from napari_cryohet.stages.protocol import Embedding, dataset_indices

__all__ = ["cluster_dataset", "export_cluster_star"]


def cluster_dataset(dataset: Any, result: Any, cluster_id: int) -> Any:
    """The particles of ``cluster_id`` (last iteration) as a dataset with the refined poses."""
    in_cluster = np.flatnonzero(result.final_labels == int(cluster_id))
    if not len(in_cluster):
        raise ValueError(f"cluster {cluster_id}: no particles (clusters: {sorted(set(result.cluster_ids.tolist()))})")
    order = Embedding(np.arange(len(dataset))[:, None], dataset_indices(dataset), name="dataset rows")
    rows = order.aligned_to(result.particle_indices[in_cluster])[:, 0]
    sub = dataset.subset(rows)
    sub.rotations = np.array(result.rotations[in_cluster])
    sub.shifts_a = np.array(result.shifts_a[in_cluster])
    table = pd.DataFrame(index=range(len(rows))) if sub.table is None else sub.table.copy()
    table["rlnClassNumber"] = int(cluster_id) + 1
    table["rlnRandomSubset"] = np.asarray(result.half_sets[in_cluster], dtype=np.int64)
    sub.table = table
    return sub


def export_cluster_star(path: str | Path, dataset: Any, result: Any, cluster_id: int) -> Path:
    """Write cluster ``cluster_id`` as ``.star`` (atomic); returns the path."""
    from napari_cryohet.io.write_particles import write_dataset_star

    return write_dataset_star(path, cluster_dataset(dataset, result, cluster_id), update=("poses",))
