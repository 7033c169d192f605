"""Settings of the hyper-molecule sampler (Lederman, Andén & Singer 2020, 001_e1fd27914a9da292.txt §4–5).

Besides the numbers (sweeps, resolutions, step counts, priors) a run needs a **regions
layout**: the balls the composite hyper-molecule's components live in (Lederman et al. 2020, eq. 25–27,
Remark 5). A layout is a dict (what ``regions.json`` holds, what the widget draws)::

    {"components": [
        {"name": "base", "centre_a": [0, 0, 0], "radius_a": 30, "state_dim": 0},
        {"name": "arm1", "centre_a": [46, 0, 0], "radius_a": 26, "state_dim": 1, "state_order": 2},
        {"name": "arm2", "copy_of": "arm1", "state_dim": 1, "state_order": 2,
         "copy_rotation": [[-1, 0, 0], [0, -1, 0], [0, 0, 1]], "copy_translation_a": [0, 0, 0]}
    ]}

Each component: ``name``; ``centre_a`` (x, y, z) Å from the box centre and ``radius_a`` Å (the
ball); ``state_dim`` 0 (rigid), 1 or 2 (its own state, a "knob" in [0, 1]); ``state_order``
(how many wiggles the density may make along the knob: the degree of the polynomials or
cosines in τ); ``trajectory`` (the whole component also slides along a straight line as
its knob turns, eq. 27); ``copy_of`` (another component's name: same density, own knob —
the pretzel's two identical arms) with ``copy_rotation`` (3×3 proper rotation) and
``copy_translation_a`` (Å) mapping the source onto the copy. :func:`layout_components`
turns a layout into :class:`~napari_cryohet.core.hypermolecule.Component` objects and
:data:`DEFAULT_LAYOUTS` holds the layouts of the simulator's ``pretzel`` and ``cat``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from napari_cryohet.core.hypermolecule import STATE_BASES, Component
from napari_cryohet.stages.protocol import StageConfig, param

__all__ = ["HyperMoleculeConfig", "DEFAULT_LAYOUTS", "layout_components", "default_layout", "C2_Z"]

#: The C₂ rotation about z (the pretzel's two arms).
C2_Z = [[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]]

#: Layouts of the simulator's hyper-molecule toys (stages/simulate/hypermolecule_toys.py),
#: drawn from their blob coordinates: the pretzel (Lederman et al. 2020, §5, Fig. 2: a rigid base and two
#: identical arms, C₂ about z, each with its own 1D state) and the cat (Lederman et al. 2020, §3.1.1: a rigid
#: body and a head turning with one 1D state).
DEFAULT_LAYOUTS: dict[str, dict[str, Any]] = {
    "pretzel": {"components": [
        {"name": "base", "centre_a": [0.0, 0.0, 0.0], "radius_a": 30.0, "state_dim": 0},
        {"name": "arm1", "centre_a": [46.0, 0.0, 0.0], "radius_a": 26.0, "state_dim": 1, "state_order": 2},
        {"name": "arm2", "copy_of": "arm1", "state_dim": 1, "state_order": 2, "copy_rotation": C2_Z,
         "copy_translation_a": [0.0, 0.0, 0.0]},
    ], "symmetries": [  # hypermolecule_toys.pretzel_symmetries: the same image at pose R g, states mapped
        {"rotation": C2_Z, "states_from": ["arm2", "arm1"], "reversed": [False, False]},
        {"rotation": [[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]], "states_from": ["arm1", "arm2"],
         "reversed": [True, True]},
        {"rotation": [[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]], "states_from": ["arm2", "arm1"],
         "reversed": [True, True]},
    ]},
    "cat": {"components": [
        {"name": "body", "centre_a": [-9.0, 0.0, 3.0], "radius_a": 56.0, "state_dim": 0},
        {"name": "head", "centre_a": [40.6, 0.0, 24.3], "radius_a": 26.0, "state_dim": 1, "state_order": 3},
    ]},
}

_COMPONENT_KEYS = {f.name for f in dataclasses.fields(Component)}


def default_layout(dataset: Any) -> dict[str, Any]:
    """The layout for ``layout="auto"``: the toy's own layout for simulated pretzel and cat
    data (``dataset.meta["name"]``, or the recipe of a dataset read back from a workspace),
    else one heterogeneous ball (1D state, order 2) filling 80 % of the box."""
    meta = getattr(dataset, "meta", None) or {}
    # a simulated dataset read back from a workspace keeps its recipe, not its name
    name = str(meta.get("name") or (meta.get("recipe") or {}).get("recipe", ""))
    if name in DEFAULT_LAYOUTS:
        return DEFAULT_LAYOUTS[name]
    radius = 0.4 * float(dataset.box_size) * float(dataset.apix)
    return {"components": [{"name": "molecule", "centre_a": [0.0, 0.0, 0.0], "radius_a": radius,
                             "state_dim": 1, "state_order": 2}]}


def layout_components(layout: dict[str, Any], *, source: str = "the regions layout") -> list[Component]:
    """:class:`Component` objects from a layout dict (module docstring); errors name the
    component and the key (``source`` names the file in messages)."""
    if not isinstance(layout, dict) or not isinstance(layout.get("components"), list) or not layout["components"]:
        raise ValueError(f"{source}: expected a JSON object with a non-empty list 'components' "
                         "(each {name, centre_a, radius_a, state_dim, ...})")
    out = []
    for i, comp in enumerate(layout["components"]):
        where = f"{source}, component {i + 1}"
        if not isinstance(comp, dict) or "name" not in comp:
            raise ValueError(f"{where}: expected an object with at least a 'name'")
        where = f"{source}, component {comp['name']!r}"
        unknown = sorted(set(comp) - _COMPONENT_KEYS)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; the keys are {sorted(_COMPONENT_KEYS)}")
        kwargs = dict(comp)
        try:
            for key in ("centre_a", "copy_translation_a"):
                if key in kwargs:
                    kwargs[key] = tuple(float(v) for v in kwargs[key])
                    if len(kwargs[key]) != 3:
                        raise ValueError(f"{key} must be 3 numbers (x, y, z) in Å")
            if "copy_rotation" in kwargs:
                kwargs["copy_rotation"] = tuple(tuple(float(v) for v in row) for row in kwargs["copy_rotation"])
            if "radius_a" in kwargs:
                kwargs["radius_a"] = float(kwargs["radius_a"])
                if kwargs["radius_a"] <= 0:
                    raise ValueError("radius_a must be a positive radius in Å")
            for key in ("state_dim", "state_order"):
                if key in kwargs:
                    kwargs[key] = int(kwargs[key])
            if kwargs.get("state_order", 2) < 0 or kwargs.get("state_order", 2) > 12:
                raise ValueError("state_order must be 0 to 12")
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: {err}") from err
        out.append(Component(**kwargs))
    return out


def layout_symmetries(layout: dict[str, Any], *,
                      source: str = "the regions layout") -> list[tuple[list[list[float]], list[int], list[bool]]]:
    """The layout's ``symmetries``: half turns ``g`` under which the hyper-molecule is unchanged
    once its states are mapped, ``V_τ(g r) = V_σ(τ)(r)`` — an image at pose ``R`` and states
    ``τ`` is then the same image at pose ``R g`` and states ``σ(τ)``, so a chain may move
    between the two and its states are only comparable in one frame.

    Each entry: ``{"rotation": 3 × 3, "states_from": [knob names], "reversed": [bools]}``;
    ``σ(τ)_j = τ[states_from[j]]``, or ``1 − τ[states_from[j]]`` where ``reversed[j]``. Only
    half turns (``g² = I``, ``σ∘σ = id``) are accepted, so each symmetry is its own inverse.
    Returns ``(g, columns, reversed)`` per symmetry, ``columns`` indices into the state columns
    (the heterogeneous components in the order given, ``name[i]`` for a 2D state).
    """
    state_names = []
    for comp in layout_components(layout, source=source):
        state_names += ([comp.name] if comp.state_dim == 1
                        else [f"{comp.name}[{i}]" for i in range(comp.state_dim)])
    out = []
    for i, entry in enumerate(layout.get("symmetries") or []):
        where = f"{source}: symmetries[{i}]"
        try:
            g = np.asarray(entry["rotation"], dtype=float)
            names, rev = list(entry["states_from"]), [bool(x) for x in entry["reversed"]]
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{where}: expected rotation (3 × 3), states_from (knob names) and reversed "
                             f"(true/false per knob); {err}") from err
        if g.shape != (3, 3) or not np.allclose(g @ g.T, np.eye(3), atol=1e-6) or np.linalg.det(g) < 0:
            raise ValueError(f"{where}: rotation must be a 3 × 3 rotation matrix, got {g.tolist()}")
        if not np.allclose(g @ g, np.eye(3), atol=1e-6):
            raise ValueError(f"{where}: only half turns are supported (the rotation applied twice must be the "
                             f"identity), got {g.tolist()}")
        if sorted(names) != sorted(state_names) or len(rev) != len(state_names):
            raise ValueError(f"{where}: states_from must list each knob {state_names} once and reversed have one "
                             f"entry per knob; got {names} and {rev}")
        cols = [state_names.index(n) for n in names]
        if any(cols[cols[j]] != j or rev[cols[j]] != rev[j] for j in range(len(cols))):
            raise ValueError(f"{where}: the state map must undo itself (a half turn): swapped knobs must be "
                             f"reversed alike")
        out.append((g.tolist(), cols, rev))
    return out


@dataclass
class HyperMoleculeConfig(StageConfig):
    """MCMC for a composite hyper-molecule V(r, τ) and every particle's state, pose, shift and
    contrast (Lederman, Andén & Singer 2020, eq. 29; §4–5)."""

    STAGE = "hypermolecule"
    PRIMARY: ClassVar[tuple[str, ...]] = ("layout", "n_burnin_sweeps", "n_sample_sweeps", "estimate_poses")

    layout: str = param("auto", label="regions layout",
                        help="which regions to use when none are drawn or given (regions): 'auto' takes the "
                             "simulator's own layout for pretzel and cat data and one heterogeneous ball otherwise; "
                             "'pretzel' or 'cat' name those layouts")
    regions: dict | None = param(None, label="regions",
                                 help="the components as balls (name, centre_a, radius_a, state_dim, state_order, "
                                      "trajectory, copy_of with copy_rotation/copy_translation_a), as in regions.json; "
                                      "overrides layout")
    working_size_px: int = param(32, minimum=8, maximum=512, unit="px", label="working image size",
                                 help="images are Fourier-cropped to this size (the pixel grows accordingly) to make "
                                      "each sweep fast; 32 px of a 64-px, 3-Å box is 6 Å per pixel, 12 Å Nyquist")
    blob_spacing_a: float | None = param(None, minimum=0.5, unit="Å", label="blob spacing",
                                         help="distance between the Gaussian blobs that build each region's density; "
                                              "the map's resolution is about π × blob width (default: the working "
                                              "pixel size)")
    blob_width: float = param(0.8, minimum=0.3, maximum=2.0, label="blob width / spacing",
                              help="width σ of each blob as a fraction of the spacing: smaller is sharper but "
                                   "less smooth between blobs")
    state_basis: str = param("legendre", choices=STATE_BASES, label="functions of the state",
                             help="how the density varies with a knob τ: Legendre polynomials or cosines (Lederman et al. 2020, §5 "
                                  "used cosines)")
    n_chains: int = param(1, minimum=1, maximum=16, label="chains",
                          help="independent Markov chains (own random streams); the result shows the chain with "
                               "the highest mean log posterior, the others are kept for comparison")
    n_burnin_sweeps: int = param(30, minimum=1, maximum=100000, unit="sweeps", label="burn-in sweeps",
                                 help="sweeps (every particle's variables, then the map) before samples are kept; "
                                      "resolution and state detail grow and step sizes adapt during them only")
    n_sample_sweeps: int = param(20, minimum=1, maximum=100000, unit="sweeps", label="sampling sweeps",
                                 help="sweeps after burn-in whose samples make the posterior mean and standard "
                                      "deviation")
    n_restarts: int = param(1, minimum=0, maximum=20, label="low-resolution restarts",
                            help="times the burn-in drops back to the starting resolution and climbs again: the "
                                 "paper's substitute for tempering (Lederman et al. 2020, §5), helping particles out of wrong poses "
                                 "and states")
    start_resolution_a: float = param(30.0, minimum=1.0, unit="Å", label="starting resolution",
                                      help="only image detail coarser than this is compared at the start of each "
                                           "burn-in segment (frequency marching, Lederman et al. 2020, §5)")
    final_resolution_a: float | None = param(None, minimum=1.0, unit="Å", label="final resolution",
                                             help="finest detail compared, reached 60 % into each burn-in segment "
                                                  "(default: the working Nyquist, 2 × working pixel)")
    start_state_order: int = param(1, minimum=0, maximum=12, label="starting state detail",
                                   help="the density may first vary only this much along each knob (degree); the "
                                        "regions' state_order is reached half way through the first burn-in "
                                        "segment (frequency marching in τ)")
    estimate_poses: bool = param(True, label="estimate poses",
                                 help="sample each particle's orientation; off: keep the dataset's orientations "
                                      "(known poses)")
    estimate_shifts: bool = param(True, label="estimate shifts", help="sample each particle's in-plane shift")
    estimate_contrast: bool = param(True, label="estimate contrast",
                                    help="sample each particle's contrast (amplitude) factor")
    initial_poses: str = param("dataset", choices=("dataset", "random"), label="starting poses",
                               help="dataset: the orientations and shifts in the particle file (uniform random "
                                    "orientations and zero shifts where it has none); random: Haar-uniform "
                                    "orientations and zero shifts (Lederman et al. 2020, §5)")
    initial_map: str = param("auto", label="starting map (hand)",
                             help="the density the map starts from, which also decides the hand (a projection "
                                  "cannot tell a molecule from its mirror image, Lederman et al. 2020, §5): 'truth' (the simulator's "
                                  "mean ground-truth volume), 'truth_mirrored' (the same mirrored in z: the other "
                                  "hand), 'zero', or the path of an .mrc map at the dataset's pixel size; 'auto' is "
                                  "truth for simulated data, zero otherwise")
    theta_update: str = param("mala", choices=("mala", "crude"), label="map update",
                              help="mala: Metropolis-adjusted Langevin steps on the map's coefficients with all "
                                   "particles (Lederman et al. 2020, eq. 17–19); crude: the paper's fast approximation, particle "
                                   "subsets updated and a gradient step on the map per subset (Lederman et al. 2020, §5)")
    theta_steps: int = param(3, minimum=1, maximum=100, unit="steps", label="map steps per sweep",
                             help="MALA or gradient steps on the map per sweep")
    crude_fraction: float = param(0.25, minimum=0.01, maximum=1.0, label="crude subset fraction",
                                  help="fraction of particles in each subset of the crude mode")
    crude_step: float = param(0.3, minimum=1e-4, maximum=2.0, label="crude step",
                              help="gradient step of the crude mode, as a fraction of a Newton step with the "
                                   "diagonal curvature")
    tau_steps: int = param(3, minimum=0, maximum=100, label="state proposals per sweep",
                           help="Metropolis–Hastings proposals of each particle's states per sweep")
    pose_steps: int = param(3, minimum=0, maximum=100, label="pose proposals per sweep",
                            help="Metropolis–Hastings proposals of each particle's orientation per sweep")
    global_pose_probability: float = param(0.2, minimum=0.0, maximum=1.0, label="global pose jumps",
                                           help="chance that an orientation proposal is a uniformly random "
                                                "orientation rather than a small turn (escapes wrong poses)")
    pose_search_candidates: int = param(1000, minimum=0, maximum=100000, label="global pose candidates",
                                        help="orientations drawn uniformly at random each sweep and scored against "
                                             "every particle at low resolution, each at a grid of states (see states "
                                             "per knob in the pose search); each particle may jump to one of them "
                                             "(an exact Metropolis–Hastings move, see the sampler): finds poses "
                                             "from a random start. 0: off")
    pose_search_resolution_a: float = param(20.0, minimum=1.0, unit="Å", label="pose search resolution",
                                            help="only image detail coarser than this (and than the current "
                                                 "frequency-marching limit) scores the global pose candidates")
    pose_search_states: int = param(4, minimum=0, maximum=16, label="states per knob in the pose search",
                                    help="the global pose search scores each candidate orientation at this many "
                                         "settings of each knob (a stratified grid, drawn afresh each sweep) "
                                         "against the map at that setting, and a particle may jump to an "
                                         "orientation and states together. 0 or 1: one map averaged over the "
                                         "states (faster, but a moving part blurs and orientations are found less "
                                         "often)")
    pose_only_sweeps: int = param(0, minimum=0, maximum=100000, unit="sweeps", label="pose-only sweeps",
                                  help="the first burn-in sweeps update only orientations, shifts and contrast "
                                       "against the starting map (states and map frozen): the paper's homogeneous "
                                       "first stage (Lederman et al. 2020, §5), so states are learned once poses are roughly right")
    shift_steps: int = param(2, minimum=0, maximum=100, label="shift and contrast proposals per sweep",
                             help="Metropolis–Hastings proposals of each particle's shift and of its contrast "
                                  "per sweep (cheap: the projection is reused)")
    coefficient_std: float = param(1.0, minimum=1e-6, label="map prior width",
                                   help="width of the Gaussian prior on each blob mass (a loose L² prior, Lederman et al. 2020, §5)")
    smoothness_weight: float = param(0.0, minimum=0.0, label="smoothness along the knob",
                                     help="weight of the prior penalising density changes along τ (Lederman et al. 2020, eq. 24)")
    shift_std_a: float = param(5.0, minimum=0.1, unit="Å", label="shift prior width",
                               help="width of the Gaussian prior on each in-plane shift, per axis")
    contrast_std: float = param(0.3, minimum=1e-3, label="contrast prior width",
                                help="width of the Gaussian prior on the contrast factor around 1")
    tau_grid_size: int = param(5, minimum=2, maximum=21, label="states per knob in the output",
                               help="the posterior mean and standard deviation maps are computed on this many "
                                    "states per knob (a grid for two or more knobs)")
    output_size_px: int | None = param(None, minimum=8, maximum=512, unit="px", label="output map size",
                                       help="box of the output maps (default: the particles' box, same pixel "
                                            "size)")
    volume_samples: int = param(10, minimum=1, maximum=1000, label="samples per output map",
                                help="posterior samples of the map (evenly thinned) whose mean and standard "
                                     "deviation make the output maps")
    seed: int = param(0, help="random seed (chain c uses stream c)")
    batch_size: int = param(512, minimum=1, runtime=True, label="batch size",
                            help="particles projected at once (memory; the result does not change)")
    device: str | None = param("auto", runtime=True, help="where to compute: cpu, cuda or auto")

    def validate(self) -> None:
        if self.regions is None and self.layout not in ("auto", *DEFAULT_LAYOUTS):
            self.fail("layout", f"'auto' or one of {sorted(DEFAULT_LAYOUTS)} (or regions given)", self.layout)
        if self.regions is not None:
            layout_symmetries(self.regions, source="HyperMoleculeConfig.regions")
        if self.final_resolution_a is not None and self.final_resolution_a > self.start_resolution_a:
            self.fail("final_resolution_a", f"a resolution finer (smaller) than start_resolution_a = "
                      f"{self.start_resolution_a} Å", self.final_resolution_a)
        if self.pose_only_sweeps > self.n_burnin_sweeps:
            self.fail("pose_only_sweeps", f"at most n_burnin_sweeps = {self.n_burnin_sweeps} (they are burn-in "
                      "sweeps)", self.pose_only_sweeps)
        if not (self.estimate_poses or self.initial_poses == "dataset"):
            self.fail("initial_poses", "'dataset' when estimate_poses is off (random poses would stay random)",
                      self.initial_poses)
