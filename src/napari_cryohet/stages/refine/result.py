"""What the clustering/refinement loop gives: labels per iteration, refined poses, class maps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from napari_cryohet.io.atomic import save_npz_atomic
from napari_cryohet.io.json_files import jsonable
from napari_cryohet.stages.protocol import Embedding, StageResult
from napari_cryohet.stages.refine.config import RefineConfig

__all__ = ["RefineResult", "RESULT_FILE"]

RESULT_FILE = "refine.npz"


class RefineResult(StageResult):
    """Labels of every iteration, the refined poses and the last iteration's class maps.

    Attributes
    ----------
    indices
        ``(N,)`` root particle indices.
    labels
        ``(I, N)`` int cluster id of each particle at each iteration, aligned across
        iterations (Hungarian; −1: noise, in no cluster).
    half_sets
        ``(N,)`` gold-standard half set (1 or 2), fixed for the run.
    rotations, shifts_a
        ``(N, 3, 3)`` and ``(N, 2)`` Å: the poses after the last iteration.
    cluster_ids, maps
        ``(K,)`` and ``(K, D, D, D)``: the last iteration's postprocessed class maps.
    fsc
        ``(K, S)`` corrected masked FSC per shell of those maps (``fsc_freq`` 1/Å).
    history
        One record per iteration: ``iteration``, ``n_clusters``, ``label_stability``,
        ``merges``, ``splits``, ``clusters`` (id → particles, resolution in Å, mean pose
        change), ``seconds``, ``cluster_method``, ``cluster_params``, ``resolution_limit_a``.
    iterations
        One dict per iteration (``I`` of them): ``rotations`` ``(N, 3, 3)`` and ``shifts_a``
        ``(N, 2)`` float32, the poses after it; ``cluster_ids`` ``(K_i,)``, ``maps``
        ``(K_i, D, D, D)`` and ``fsc`` ``(K_i, S)``: the class maps it reconstructed (before
        refining the poses) and their corrected FSC curves.
    """

    STAGE = "refine"
    FORMAT_VERSION = 2
    ITERATION_KEYS = ("rotations", "shifts_a", "cluster_ids", "maps", "fsc")

    def __init__(self, *, indices, labels, half_sets, rotations, shifts_a, cluster_ids, maps, fsc, fsc_freq,
                 apix: float, history: list[dict[str, Any]], config: RefineConfig, run_id: str | None = None,
                 iterations: list[dict[str, np.ndarray]] | None = None) -> None:
        self.indices = np.asarray(indices, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.half_sets = np.asarray(half_sets, dtype=np.int64)
        self.rotations = np.asarray(rotations, dtype=np.float64)
        self.shifts_a = np.asarray(shifts_a, dtype=np.float64)
        self.cluster_ids = np.asarray(cluster_ids, dtype=np.int64)
        self.maps = np.asarray(maps, dtype=np.float32)
        self.fsc = np.asarray(fsc, dtype=np.float64)
        self.fsc_freq = np.asarray(fsc_freq, dtype=np.float64)
        self.apix = float(apix)
        self.history = list(history)
        self.config = config
        self.run_id = run_id
        self.iterations = [dict(it) for it in (iterations or [])]
        n = len(self.indices)
        if self.labels.ndim != 2 or self.labels.shape[1] != n:
            raise ValueError(f"RefineResult: labels {self.labels.shape} do not match {n} particles")

    @property
    def particle_indices(self) -> np.ndarray:
        return self.indices

    @property
    def final_labels(self) -> np.ndarray:
        """``(N,)`` cluster ids after the last iteration."""
        return self.labels[-1]

    def embedding(self) -> Embedding:
        """The final cluster id of each particle (``(N, 1)``, −1: none), for colouring and other stages."""
        return Embedding(self.final_labels[:, None].astype(np.float64), self.indices, run_id=self.run_id,
                         name="cluster")

    def __repr__(self) -> str:
        return (f"RefineResult(run_id={self.run_id!r}, particles={len(self.indices)}, "
                f"iterations={len(self.labels)}, clusters={len(self.cluster_ids)})")

    def _save(self, run_dir: Path) -> None:
        save_npz_atomic(run_dir / RESULT_FILE, indices=self.indices, labels=self.labels, half_sets=self.half_sets,
                        rotations=self.rotations, shifts_a=self.shifts_a, cluster_ids=self.cluster_ids,
                        maps=self.maps, fsc=self.fsc, fsc_freq=self.fsc_freq, apix=np.array(self.apix),
                        history_json=np.array(json.dumps(jsonable(self.history))),
                        config_json=np.array(json.dumps(self.config.to_dict())),
                        **{f"iteration{i}_{key}": np.asarray(it[key]) for i, it in enumerate(self.iterations)
                           for key in self.ITERATION_KEYS if key in it})

    @classmethod
    def _load(cls, run_dir: Path) -> RefineResult:
        path = run_dir / RESULT_FILE
        with np.load(path, allow_pickle=False) as data:
            iterations = []
            while f"iteration{len(iterations)}_rotations" in data.files:
                i = len(iterations)
                iterations.append({key: data[f"iteration{i}_{key}"] for key in cls.ITERATION_KEYS
                                   if f"iteration{i}_{key}" in data.files})
            return cls(iterations=iterations, indices=data["indices"], labels=data["labels"], half_sets=data["half_sets"],
                       rotations=data["rotations"], shifts_a=data["shifts_a"], cluster_ids=data["cluster_ids"],
                       maps=data["maps"], fsc=data["fsc"], fsc_freq=data["fsc_freq"], apix=float(data["apix"]),
                       history=json.loads(str(data["history_json"])),
                       config=RefineConfig.from_dict(json.loads(str(data["config_json"])), source=path))
