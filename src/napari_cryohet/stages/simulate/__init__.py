"""Synthetic particle data with ground truth: the forward model and the seeds' recipes.

Modules, by concept:

- :mod:`.engine` — the forward model ``y_i = CTF_i · T_{-s_i}(P_{R_i} V_i) + ε_i``:
  structure models (:class:`AtomicModel`, :class:`VolumeModel`), :func:`simulate`,
  :func:`save_simulation`; :mod:`.imaging` — imaging parameters (:class:`SimulationConfig`,
  :func:`draw_ctf`, :func:`draw_shifts`); :mod:`.stage` — the simulator as a workspace stage;
- the recipes, each a function with sizes as keyword parameters (registry
  :data:`RECIPES`, name → function; the CLI and the napari samples look them up there):

=====================  =====================================================  ==========================
function               what                                                   seed
=====================  =====================================================  ==========================
:func:`box_arms_2d`    2D chain (149 points, δ = 3.5): a box with two arms;   000 §3.1
                       1D projections, noise variance 2500 (:mod:`.box_arms`)
:func:`adk_chain`      Cα chains of the AdK closed→open trajectory, Gaussian  000 §3.2, Table 1, Fig. 12
                       atoms σ = 3 Å, 64 px, 200 kV, Cs 2 mm, Q0 0.1,
                       defocus ∈ {1.5, 1.75, 2, 2.25, 2.5} µm (:mod:`.adk`)
:func:`adk_volumes`    heavy-atom AdK at 10 frames (discrete) or along the    004 §5.1
                       path (continuous), SNR 1/10, defocus 0.2–2 µm
                       (:mod:`.adk`)
:func:`assembly_classes`  AdK split into CORE / NMP / LID; classes lack       003 §2.5–2.7, §4.2.1
                       one or more domains (compositional heterogeneity,
                       :mod:`.assembly`)
:func:`cat`            Gaussian blobs, 1D state τ: the head turns             001 §3.1.1
                       (:mod:`.hypermolecule_toys`)
:func:`pretzel`        rigid base + two identical, independent arms (τ₁, τ₂)  001 §3.1.2, §5
                       (:mod:`.hypermolecule_toys`)
=====================  =====================================================  ==========================

All but :func:`box_arms_2d` return a :class:`~napari_cryohet.core.particle_dataset.ParticleDataset`
made by :func:`simulate`, with ``ground_truth`` keys (docs/design.md, ground-truth keys):

- ``"state"`` — ``(N,)`` int (frame / conformation / class index) or ``(N, k)`` float
  (continuous state);
- ``"state_params"`` — ``(N, k)`` float continuous parameters;
- ``"coords_a"`` — ``(N, M, 3)`` per-particle atom (blob) coordinates, model frame, Å;
- ``"clean_images"`` — ``(N, D, D)`` CTF-filtered noiseless images;
- ``"global/..."`` — ``sigma_a``, ``snr``, ``noise_var``, ``signal_var``, and per dataset
  ``reference_coords_a``, ``volumes (C, D, D, D)``, ``volume_states``, masks (see each
  function's docstring).

Widgets colour points by the ground truth through
:func:`napari_cryohet.stages.particle_columns.particle_columns` (``truth_state``,
``truth_state_0`` …); the truth is saved beside a written star file as ``<name>_truth.npz``
and read back with it, never as star-file columns.

:func:`box_arms_2d` returns a :class:`Toy2DDataset` (1D projections are not square images).
What the recipes share (the bundled reference data, ground-truth volumes) is in
:mod:`.recipe_support`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from napari_cryohet.stages.simulate.adk import (
    ADK_DOMAINS,
    adk_chain,
    adk_volumes,
    load_adk_ca,
    load_adk_heavy,
)
from napari_cryohet.stages.simulate.assembly import assembly_classes
from napari_cryohet.stages.simulate.box_arms import (
    LOW_DIM_FRAMES,
    Toy2DDataset,
    box_arms_2d,
    box_arms_angles,
    box_arms_chain,
    density_2d,
    project_points_1d,
    superpose_2d,
)
from napari_cryohet.stages.simulate.engine import (
    AtomicModel,
    ProjectionModel,
    VolumeModel,
    measured_snr,
    save_simulation,
    simulate,
)
from napari_cryohet.stages.simulate.hypermolecule_toys import cat, cat_blobs, pretzel, pretzel_blobs
from napari_cryohet.stages.simulate.imaging import SimulationConfig, draw_ctf, draw_shifts
from napari_cryohet.stages.simulate.recipe_support import sample_data_dir
from napari_cryohet.stages.simulate.trajectory import (
    normal_mode_trajectory,
    read_trajectory,
    trajectory_chain,
)

__all__ = [
    # the forward model
    "ProjectionModel",
    "AtomicModel",
    "VolumeModel",
    "SimulationConfig",
    "simulate",
    "save_simulation",
    "draw_ctf",
    "draw_shifts",
    "measured_snr",
    # the recipes
    "RECIPES",
    "box_arms_2d",
    "Toy2DDataset",
    "box_arms_angles",
    "box_arms_chain",
    "project_points_1d",
    "density_2d",
    "superpose_2d",
    "LOW_DIM_FRAMES",
    "adk_chain",
    "adk_volumes",
    "load_adk_ca",
    "load_adk_heavy",
    "ADK_DOMAINS",
    "assembly_classes",
    "cat",
    "cat_blobs",
    "pretzel",
    "pretzel_blobs",
    "sample_data_dir",
    "trajectory_chain",
    "read_trajectory",
    "normal_mode_trajectory",
]

#: name → recipe function (the CLI and the napari samples look recipes up here).
RECIPES: dict[str, Callable[..., Any]] = {
    "box_arms_2d": box_arms_2d,
    "adk_chain": adk_chain,
    "adk_volumes": adk_volumes,
    "assembly_classes": assembly_classes,
    "cat": cat,
    "pretzel": pretzel,
    "trajectory": trajectory_chain,
}
