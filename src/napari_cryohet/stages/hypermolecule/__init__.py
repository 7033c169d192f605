"""Hyper-molecule sampler stage (Lederman, Andén & Singer 2020, 001_e1fd27914a9da292.txt §2.5–2.7, §4–5).

MCMC on a composite hyper-molecule V(r, τ) and every particle's state, pose, shift and
contrast. The package holds

- :mod:`.config` — :class:`HyperMoleculeConfig` and the regions layouts
  (:data:`DEFAULT_LAYOUTS` for the simulator's pretzel and cat, :func:`layout_components`);
- :mod:`.sampler` — :class:`HyperMoleculeSampler`: MH blocks per particle, MALA or the crude
  mode on θ, frequency marching in r and τ, low-resolution restarts, several chains;
- :mod:`.result` — :class:`HyperMoleculeResult`: posterior mean/std maps on a τ grid,
  per-particle states, acceptance rates, traces; save/load;
- :mod:`.stage` — :func:`run_hypermolecule` (checkpoint per sweep, resume) and ``STAGE``.

The model and kernels live in ``core/hypermolecule.py``, ``core/hypermolecule_posterior.py``
and ``core/mcmc.py``.
"""

from napari_cryohet.stages.hypermolecule.config import (
    C2_Z,
    DEFAULT_LAYOUTS,
    HyperMoleculeConfig,
    default_layout,
    layout_components,
    layout_symmetries,
)
from napari_cryohet.stages.hypermolecule.result import HyperMoleculeResult
from napari_cryohet.stages.hypermolecule.sampler import KERNELS, HyperMoleculeSampler, SweepPlan
from napari_cryohet.stages.hypermolecule.stage import STAGE, run_hypermolecule

__all__ = [
    "C2_Z",
    "DEFAULT_LAYOUTS",
    "HyperMoleculeConfig",
    "HyperMoleculeResult",
    "HyperMoleculeSampler",
    "KERNELS",
    "STAGE",
    "SweepPlan",
    "default_layout",
    "layout_components",
    "layout_symmetries",
    "run_hypermolecule",
]
