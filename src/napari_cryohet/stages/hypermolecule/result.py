"""What the hyper-molecule sampler gives: maps along the states, per-particle states, diagnostics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_cryohet.io.atomic import save_npz_atomic
from napari_cryohet.io.json_files import jsonable
from napari_cryohet.stages.hypermolecule.config import HyperMoleculeConfig, layout_components
from napari_cryohet.stages.protocol import Embedding, StageResult

__all__ = ["HyperMoleculeResult", "RESULT_FILE"]

RESULT_FILE = "hypermolecule.npz"
_ARRAYS = ("indices", "tau_grid", "volumes_mean", "volumes_std", "tau_mean", "tau_std", "tau_mean_chains",
           "rotations", "shifts_a", "contrast", "theta_mean", "theta_samples")


class HyperMoleculeResult(StageResult):
    """The posterior of a composite hyper-molecule (Lederman, Andén & Singer 2020, eq. 29).

    Attributes
    ----------
    indices
        ``(N,)`` root particle indices.
    state_names
        ``(S,)`` what each state column is: ``"arm1"``, ``"arm2"`` (1D components), or
        ``"<name>[0]"``, ``"<name>[1]"`` (2D).
    tau_grid
        ``(G, S)`` states of the output maps (``T`` values per knob, all combinations: ``G = T^S``).
    volumes_mean, volumes_std
        ``(G, D, D, D)`` float32 posterior mean and standard deviation of ``V(·, τ)`` at each
        grid state (mass per voxel, ``[z, y, x]``, pixel ``apix``). For the napari τ slider:
        ``volumes_mean.reshape(T, …, T, D, D, D)`` has one axis per knob (:meth:`volumes_by_knob`).
    apix
        Pixel size of the maps in Å.
    tau_mean, tau_std
        ``(N, S)`` posterior mean and standard deviation of each particle's states.
    tau_mean_chains
        ``(C, N, S)`` the same means for every chain (each chain may order its states its
        own way: τ and 1 − τ describe the same motion).
    rotations, shifts_a, contrast
        ``(N, 3, 3)``, ``(N, 2)`` Å, ``(N,)``: the chain's last sample.
    theta_mean, theta_samples
        ``(n,)`` posterior mean of the coefficients and ``(C, K, n)`` the samples kept (the
        map at any state: :meth:`volume_at`).
    layout
        The regions (``{"components": [...]}``) with the model's ``spacing_a``, ``sigma_a`` and
        ``state_basis``.
    acceptance
        Kernel → acceptance rate over the sampling sweeps (``tau``, ``pose``, ``shift``,
        ``contrast``, ``theta``) of the chain shown.
    traces
        Name → ``(C, sweeps)`` per-sweep values: ``log_posterior``, ``max_frequency_per_a``,
        ``state_order``, ``theta_step``, ``tau_step``, ``pose_step_deg``, ``shift_step_a``,
        ``contrast_step``, ``acceptance_<kernel>``.
    chain
        Index of the chain shown (the highest mean log posterior; ``chain_scores``).
    seconds
        Wall time of the run (this process; a resumed run counts from its resume).
    """

    STAGE = "hypermolecule"
    FORMAT_VERSION = 1

    def __init__(self, *, indices, state_names, tau_grid, volumes_mean, volumes_std, apix: float, tau_mean, tau_std,
                 tau_mean_chains, rotations, shifts_a, contrast, theta_mean, theta_samples,
                 layout: dict[str, Any], acceptance: dict[str, float], traces: dict[str, np.ndarray], chain: int,
                 chain_scores: list[float], seconds: float, config: HyperMoleculeConfig,
                 run_id: str | None = None) -> None:
        self.indices = np.asarray(indices, dtype=np.int64)
        self.state_names = [str(s) for s in state_names]
        self.tau_grid = np.asarray(tau_grid, dtype=np.float64)
        self.volumes_mean = np.asarray(volumes_mean, dtype=np.float32)
        self.volumes_std = np.asarray(volumes_std, dtype=np.float32)
        self.apix = float(apix)
        self.tau_mean = np.asarray(tau_mean, dtype=np.float64)
        self.tau_std = np.asarray(tau_std, dtype=np.float64)
        self.tau_mean_chains = np.asarray(tau_mean_chains, dtype=np.float64)
        self.rotations = np.asarray(rotations, dtype=np.float64)
        self.shifts_a = np.asarray(shifts_a, dtype=np.float64)
        self.contrast = np.asarray(contrast, dtype=np.float64)
        self.theta_mean = np.asarray(theta_mean, dtype=np.float64)
        self.theta_samples = np.asarray(theta_samples, dtype=np.float32)
        self.layout = dict(layout)
        self.acceptance = {str(k): float(v) for k, v in acceptance.items()}
        self.traces = {str(k): np.asarray(v, dtype=np.float64) for k, v in traces.items()}
        self.chain = int(chain)
        self.chain_scores = [float(s) for s in chain_scores]
        self.seconds = float(seconds)
        self.config = config
        self.run_id = run_id
        n = len(self.indices)
        if self.tau_mean.shape != (n, len(self.state_names)):
            raise ValueError(f"HyperMoleculeResult: tau_mean {self.tau_mean.shape} does not match {n} particles "
                             f"and states {self.state_names}")
        if self.volumes_mean.shape[0] != len(self.tau_grid) or self.volumes_std.shape != self.volumes_mean.shape:
            raise ValueError(f"HyperMoleculeResult: maps {self.volumes_mean.shape}/{self.volumes_std.shape} do not "
                             f"match the {len(self.tau_grid)} grid states")

    @property
    def particle_indices(self) -> np.ndarray:
        return self.indices

    @property
    def box_size(self) -> int:
        return int(self.volumes_mean.shape[-1])

    def embedding(self) -> Embedding:
        """Each particle's posterior-mean states ``(N, S)``, for colouring and other stages."""
        return Embedding(self.tau_mean, self.indices, run_id=self.run_id, name="states")

    def volumes_by_knob(self) -> np.ndarray:
        """``(T, …, T, D, D, D)`` posterior-mean maps with one axis per state column (named by
        :attr:`state_names`): the napari layer whose extra axes are the τ sliders."""
        s = len(self.state_names)
        if s == 0:
            return self.volumes_mean[0]
        t = int(round(len(self.tau_grid) ** (1.0 / s)))
        return self.volumes_mean.reshape(*(t,) * s, *self.volumes_mean.shape[1:])

    def model(self, *, device: str = "cpu", dtype: torch.dtype = torch.float64):
        """The :class:`~napari_cryohet.core.hypermolecule.HyperMolecule` of the run (its layout)."""
        from napari_cryohet.core.hypermolecule import HyperMolecule

        return HyperMolecule(layout_components(self.layout), spacing_a=float(self.layout["spacing_a"]),
                             sigma_a=float(self.layout["sigma_a"]), state_basis=str(self.layout["state_basis"]),
                             device=device, dtype=dtype)

    def volume_at(self, tau, *, size_px: int | None = None, apix: float | None = None) -> np.ndarray:
        """``(B, D, D, D)`` posterior-mean map at any states ``tau (B, S)`` (a continuous slider);
        exact for components without a trajectory (the map is linear in the coefficients)."""
        from napari_cryohet.core.hypermolecule_posterior import unflatten_params

        model = self.model()
        params = unflatten_params(torch.as_tensor(self.theta_mean), model.parameter_shapes())
        tau = torch.as_tensor(np.asarray(tau, dtype=np.float64)).reshape(-1, len(self.state_names))
        vol = model.evaluate_volume(params, tau, d=size_px or self.box_size, apix=apix or self.apix)
        return vol.numpy().astype(np.float32)

    def __repr__(self) -> str:
        return (f"HyperMoleculeResult(run_id={self.run_id!r}, particles={len(self.indices)}, "
                f"states={self.state_names}, maps={self.volumes_mean.shape}, acceptance={self.acceptance})")

    def _save(self, run_dir: Path) -> None:
        meta = {"state_names": self.state_names, "apix": self.apix, "layout": self.layout,
                "acceptance": self.acceptance, "chain": self.chain, "chain_scores": self.chain_scores,
                "seconds": self.seconds, "config": self.config.to_dict()}
        save_npz_atomic(run_dir / RESULT_FILE, **{k: getattr(self, k) for k in _ARRAYS},
                        **{f"trace_{k}": v for k, v in self.traces.items()},
                        meta_json=np.array(json.dumps(jsonable(meta))))

    @classmethod
    def _load(cls, run_dir: Path) -> HyperMoleculeResult:
        path = run_dir / RESULT_FILE
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta_json"]))
            arrays = {k: data[k] for k in _ARRAYS}
            traces = {k[len("trace_"):]: data[k] for k in data.files if k.startswith("trace_")}
        return cls(**arrays, traces=traces, state_names=meta["state_names"], apix=meta["apix"], layout=meta["layout"],
                   acceptance=meta["acceptance"], chain=meta["chain"], chain_scores=meta["chain_scores"],
                   seconds=meta["seconds"], config=HyperMoleculeConfig.from_dict(meta["config"], source=path))
