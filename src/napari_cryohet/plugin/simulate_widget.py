"""Simulate your own protein: particle images of a PDB/mmCIF structure in motion (issue 14, item 3).

The GUI twin of ``cryohet simulate trajectory --topology my.pdb --normal-modes 3
--amplitude-a 5`` (or ``--trajectory md.pdb``) and of
:func:`napari_cryohet.stages.simulate.trajectory.trajectory_chain`. The user picks a
structure file and its chain(s), and a motion: the structure's slowest elastic-network
(ANM) modes (Atilgan et al. 2001, Biophys. J. 80:505) with a largest RMSD, or the frames of
a trajectory file. The widget reads the structure when it is chosen (``io.pdb.read_ca_chains``:
standard amino acids only; gaps, caps and ligands left out are listed) and suggests a pixel
size at which the protein fills ≈ 75 % of the box.

*Simulate* runs the simulate stage's ``trajectory`` recipe
(``SimulateConfig.from_recipe("trajectory", …)`` + ``make_dataset``, so the dataset records
its recipe and a workspace can remake it) off the GUI thread in a
:class:`~napari_cryohet.plugin._runner.StageRunner` (progress, cancel), then adds the layers
the trajectory sample has — the particle stack (carrying the dataset, so the window's
:class:`~napari_cryohet.plugin.session.Session` adopts it as it adopts sample data), the
true Cα atoms as points and the true chains as paths, one path per connected piece (no line
is drawn across a gap or between chains).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, Label, LineEdit, PushButton

from napari_cryohet.plugin._config_form import ConfigForm
from napari_cryohet.plugin._docking import ScrollDock
from napari_cryohet.plugin._runner import StageRunner
from napari_cryohet.plugin._sample_data import _points_layer, _projected_atoms, _stack_layer
from napari_cryohet.plugin.scenes import PER_PARTICLE, ROLE_KEY
from napari_cryohet.plugin.session import Session
from napari_cryohet.stages.protocol import StageConfig, param

__all__ = ["SimulateProteinSettings", "SimulateProteinWidget", "SimulateDock", "suggest_apix", "MODES", "FILE",
           "FILL"]

#: The two kinds of motion.
MODES = "elastic-network modes"
FILE = "trajectory file"
#: Share of the box the protein's largest Cα–Cα extent fills at the suggested pixel size
#: (the rule of ``benchmarks/chainfit_proteins.py``).
FILL = 0.75
#: Width of the Gaussian atoms the recipe draws (its ``sigma_a`` default), Å.
SIGMA_A = 3.0
STRUCTURE_FILTER = "*.pdb *.ent *.cif *.mmcif *.gz"
TRAJECTORY_FILTER = "*.pdb *.ent *.cif *.mmcif *.gz *.dcd *.xtc *.trr *.nc"
_TRUTH_COLOUR = "#ffb000"
#: Notes of the structure listed in the dock (the rest in the note's tooltip).
MAX_NOTES = 12
ANM_HELP = ("The structure is bent along its slowest elastic-network modes: the anisotropic network model "
            "(Atilgan et al. 2001, Biophys. J. 80:505) joins every pair of Cα atoms closer than 15 Å by a "
            "spring; its softest collective motions are the modes.")

_APIX_HELP = ("Size of one pixel of the images in Å; suggested when a structure is chosen so that the protein's "
              "largest extent fills about 75 % of the box.")


@dataclass
class SimulateProteinSettings(StageConfig):
    """The widget's numeric settings; with the structure, chains and motion they become the
    arguments of the ``trajectory`` recipe (:meth:`recipe_args`)."""

    PRIMARY: ClassVar[tuple[str, ...]] = ("normal_modes", "amplitude_a", "n_particles", "apix")
    normal_modes: int = param(3, minimum=1, maximum=50, label="number of modes",
                              help=f"{ANM_HELP} How many of the softest modes move the protein, each particle a "
                                   "random mix of them (typical: 1 to 5; the benchmarks use 3).")
    amplitude_a: float = param(5.0, minimum=0.1, maximum=50.0, unit="Å", label="largest RMSD",
                               help="The largest root-mean-square deviation of a particle's Cα atoms from the "
                                    "structure; each particle moves by a random amount up to this (typical: 2 to 10 Å; "
                                    "the benchmarks use 5 Å).")
    n_particles: int = param(1000, minimum=1, maximum=1_000_000, unit="particles", label="number of particles",
                             help="How many particle images to simulate (typical: a few thousand for a chain fit; "
                                  "the paper's adenylate kinase test uses 4000).")
    apix: float = param(2.0, minimum=0.1, maximum=50.0, unit="Å/px", label="pixel size", help=_APIX_HELP)
    box_size: int = param(64, minimum=16, maximum=512, unit="px", label="box size",
                          help="Edge length of each particle image, an even number of pixels (typical: 64 to 128 "
                               "px).")
    snr: float | None = param(0.05, minimum=0.0, label="signal-to-noise ratio",
                              help="Power of the protein's image over the power of the noise (cryo-EM particles: "
                                   "typical 0.01 to 0.1; the chain-fit benchmarks use 0.05); empty: no noise.")
    seed: int = param(0, minimum=0, label="random seed",
                      help="Seed of the motions, poses, defocus values and noise: the same seed gives the same "
                           "particles.")

    def validate(self) -> None:
        if self.box_size % 2:
            self.fail("box_size", "an even number of pixels", self.box_size)
        if self.snr is not None and self.snr <= 0:
            self.fail("snr", "a positive signal-to-noise ratio, or empty for no noise", self.snr)

    def recipe_args(self, *, topology: str, chain: str | None, trajectory: str | None = None) -> dict[str, Any]:
        """Keyword arguments of :func:`~napari_cryohet.stages.simulate.trajectory.trajectory_chain`
        (``trajectory=None``: the elastic-network modes)."""
        args: dict[str, Any] = {"topology": topology, "chain": chain}
        if trajectory is None:
            args.update(normal_modes=self.normal_modes, amplitude_a=self.amplitude_a)
        else:
            args["trajectory"] = trajectory
        args.update(n_particles=self.n_particles, box_size=self.box_size, apix=self.apix, snr=self.snr,
                    seed=self.seed)
        return args


def largest_extent_a(coords_a: np.ndarray) -> float:
    """The largest distance between two of ``coords_a (M, 3)``, Å (over the convex hull's corners)."""
    x = np.asarray(coords_a, dtype=np.float64)
    if len(x) > 50:
        from scipy.spatial import ConvexHull, QhullError

        try:
            x = x[ConvexHull(x).vertices]
        except QhullError:  # flat or degenerate: every atom
            pass
    if len(x) < 2:
        return 0.0
    from scipy.spatial.distance import pdist

    return float(pdist(x).max())


def suggest_apix(coords_a: np.ndarray, box_size: int, *, amplitude_a: float = 0.0, sigma_a: float = SIGMA_A) -> float:
    """Pixel size (Å, rounded up to 0.25) at which the protein's largest extent fills ≈ 75 % of
    the box, and its farthest atom — moved by up to ``amplitude_a`` and blurred by 3σ — stays
    inside it (the recipe warns otherwise)."""
    x = np.asarray(coords_a, dtype=np.float64)
    fill = largest_extent_a(x) / (FILL * box_size)
    reach = (float(np.linalg.norm(x - x.mean(axis=0), axis=1).max()) + 3 * sigma_a + amplitude_a) / (box_size / 2)
    return max(math.ceil(max(fill, reach) / 0.25) * 0.25, 0.25)


def _segments(n_atoms: int, gaps: np.ndarray) -> list[tuple[int, int]]:
    bounds = [0, *(int(g) + 1 for g in sorted(np.asarray(gaps).ravel())), n_atoms]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b - a >= 2]


def _segment_paths_layer(dataset: Any, *, name: str) -> tuple[list, dict, str]:
    """True chains as paths, one per particle and connected piece (none across a gap)."""
    truth = dataset.ground_truth
    coords = np.asarray(truth["coords_a"], dtype=np.float64)  # (N, M, 3)
    yx = _projected_atoms(dataset, coords)  # (N, M, 2) where each atom lands in its image
    pieces = _segments(coords.shape[1], truth.get("global/gaps", np.zeros(0, dtype=np.int64)))
    paths = [np.column_stack([np.full(b - a, i, dtype=np.float64), yx[i, a:b]])
             for i in range(len(coords)) for a, b in pieces]
    kwargs = {"name": name, "shape_type": "path", "edge_color": _TRUTH_COLOUR, "edge_width": 0.8, "opacity": 0.8,
              "metadata": {ROLE_KEY: PER_PARTICLE}, "axis_labels": ("particle", "y", "x")}
    return paths, kwargs, "shapes"


def dataset_layers(dataset: Any, name: str) -> list[tuple[Any, dict, str]]:
    """Layer data of a simulated protein: stack (carrying the dataset), true Cα atoms, true chains."""
    layers = [_stack_layer(dataset, name)]
    points = _points_layer(dataset, name=f"{name} atoms (truth)", size_a=2.5)
    if points is not None:
        layers.append(points)
    layers.append(_segment_paths_layer(dataset, name=f"{name} chains (truth)"))
    return layers


class SimulateProteinWidget(Container):
    """Dock widget: simulate particle images of the user's own protein (module docstring).

    Attributes
    ----------
    session
        The window's :class:`Session` (the simulated dataset joins it like sample data).
    structure_file, chains
        The PDB/mmCIF file and its chain(s) (``"A"``, ``"A,B"``; empty: the first chain).
    structure_note
        What reading the structure found: residues, chains, pieces, and its notes (gaps,
        residues left out, alternative locations), or the error naming the file.
    motion, trajectory_file
        :data:`MODES` or :data:`FILE` (then the trajectory file, shown only then).
    form
        :class:`ConfigForm` of :class:`SimulateProteinSettings` (modes, RMSD, particles,
        pixel size; box size, SNR and seed under "Advanced settings").
    run_button, runner
        *Simulate* and the :class:`StageRunner` (progress, cancel).
    structure, notes
        The :class:`~napari_cryohet.io.pdb.CaChains` read (``None``: none or unreadable), its notes.
    suggested_apix
        The pixel size suggested for the structure and box (``None``: no structure).
    dataset, layers
        The latest simulated dataset and the layers added for it.
    info
        One line: what was simulated, or why not.
    """

    def __init__(self, napari_viewer) -> None:
        self.viewer = napari_viewer
        self.session = Session.for_viewer(napari_viewer)
        self.structure_file = FileEdit(
            label="structure file", filter=STRUCTURE_FILTER,
            tooltip="Your protein's structure: a PDB or mmCIF file (gzip allowed). Its Cα atoms of standard amino "
                    "acids are used; caps, ligands, ions and waters are left out and listed below.")
        self.chains = LineEdit(
            label="chain(s)", value="",
            tooltip="Which chain to use, e.g. A, or several joined in this order, e.g. A,B (each its own piece, no "
                    "bond between them); empty: the first chain with amino acids.")
        self.structure_note = Label(value="Choose a PDB or mmCIF file of your protein.")
        self.structure_note.native.setWordWrap(True)
        self.motion = ComboBox(
            label="motion", value=MODES, choices=[MODES, FILE],
            tooltip=f"How the protein moves from particle to particle. '{MODES}': {ANM_HELP} '{FILE}': the frames "
                    "of your own trajectory (molecular dynamics, morph), each particle one frame.")
        self.trajectory_file = FileEdit(
            label="trajectory file", filter=TRAJECTORY_FILTER,
            tooltip="Frames of the motion: a multi-model PDB/mmCIF (every model a frame), or a DCD/XTC/TRR "
                    "molecular-dynamics trajectory (needs MDAnalysis), with the same residues as the structure. "
                    "Every frame is superposed on the structure.")
        self.form = ConfigForm(SimulateProteinSettings)
        self.run_button = PushButton(text="Simulate")
        self.runner = StageRunner()
        self.info = Label(value="")
        self.info.native.setWordWrap(True)
        for line_edit in (self.structure_file.line_edit, self.trajectory_file.line_edit):
            line_edit.value = ""  # FileEdit.value = "" would become the working folder
        super().__init__(widgets=[
            self.structure_file, self.chains, self.structure_note, self.motion, self.trajectory_file, self.form,
            self.run_button, self.runner, self.info,
        ])
        self.structure = None
        self.notes: tuple[str, ...] = ()
        self.suggested_apix: float | None = None
        self.dataset: Any = None
        self.layers: list[Any] = []
        self.structure_file.changed.connect(self.check_structure)
        self.chains.native.editingFinished.connect(self.check_structure)
        self.form.box_size.changed.connect(self._suggest)
        self.motion.changed.connect(self._show_motion)
        self.run_button.changed.connect(self.simulate)
        self._show_motion()

    # ------------------------------------------------------------------ inputs
    def _path(self, edit: FileEdit) -> Path | None:
        text = str(edit.line_edit.value or "").strip()
        return Path(text).expanduser() if text else None

    def _chain(self) -> str | None:
        return ",".join(c.strip() for c in self.chains.value.split(",") if c.strip()) or None

    def _show_motion(self, *_: Any) -> None:
        from_file = self.motion.value == FILE
        self.trajectory_file.visible = from_file
        for name in ("normal_modes", "amplitude_a"):
            self.form.inputs[name].visible = not from_file

    def check_structure(self, *_: Any):
        """Read the structure file with the chosen chains; show what was found (residues,
        pieces, notes) or the problem. Returns the ``CaChains`` (``None`` on a problem)."""
        from napari_cryohet.io.errors import CryohetInputError
        from napari_cryohet.io.pdb import read_ca_chains

        self.structure, self.notes, self.suggested_apix = None, (), None
        self.structure_note.tooltip = None
        path = self._path(self.structure_file)
        if path is None:
            self.structure_note.value = "Choose a PDB or mmCIF file of your protein."
            return None
        try:
            read = read_ca_chains(path, chain=self._chain())
        except (ValueError, OSError, RuntimeError) as err:
            problem = err.problem if isinstance(err, CryohetInputError) else str(err)
            self.structure_note.value = (f"Cannot use {path.name} ({path.parent}): {problem}. Expected a PDB or "
                                         "mmCIF file with the Cα atoms of a protein.")
            return None
        self.structure, self.notes = read, tuple(read.notes)
        names = ", ".join(dict.fromkeys(str(c) for c in read.chain_ids))
        pieces = len(read.segments)
        lines = [f"{path.name}: {len(read.coords)} residues (Cα of standard amino acids) in chain"
                 f"{'s' if ',' in names else ''} {names}, {pieces} connected piece{'s' if pieces > 1 else ''}"
                 f"{'' if read.notes else '; nothing left out, no gaps'}."]
        lines += [f"• {note}" for note in read.notes[:MAX_NOTES]]
        if len(read.notes) > MAX_NOTES:
            lines.append(f"• … and {len(read.notes) - MAX_NOTES} more (all {len(read.notes)} in the tooltip)")
        self.structure_note.tooltip = "\n".join(read.notes) or None
        self.structure_note.value = "\n".join(lines)
        self._suggest()
        return read

    def _suggest(self, *_: Any) -> None:
        """Set the pixel size suggested for the structure and the box size."""
        if self.structure is None:
            return
        try:
            amplitude = float(self.form.amplitude_a.parse_value()) if self.motion.value == MODES else 0.0
        except ValueError:
            amplitude = 0.0
        box = int(self.form.box_size.value)
        self.suggested_apix = apix = suggest_apix(self.structure.coords, box, amplitude_a=amplitude)
        self.form.apix.show_value(apix)
        extent = largest_extent_a(self.structure.coords)
        self.form.apix.tooltip = (f"suggested {apix:g} Å/px: the protein's largest extent, {extent:.0f} Å, fills "
                                  f"{extent / (apix * box):.0%} of the {box}-px box\n"
                                  + _APIX_HELP)

    def settings(self) -> SimulateProteinSettings:
        """The numeric settings in the form (``ValueError`` naming a bad entry)."""
        return self.form.config()

    def recipe_args(self) -> dict[str, Any]:
        """The ``trajectory`` recipe's arguments from the form (``ValueError`` naming what is missing)."""
        settings = self.settings()
        path = self._path(self.structure_file)
        if path is None:
            raise ValueError("choose a structure file (PDB or mmCIF) first")
        trajectory = None
        if self.motion.value == FILE:
            traj = self._path(self.trajectory_file)
            if traj is None:
                raise ValueError("choose a trajectory file (multi-model PDB/mmCIF, DCD, XTC), or pick "
                                 f"'{MODES}' as the motion")
            if not traj.is_file():
                raise ValueError(f"{traj}: file does not exist")
            trajectory = str(traj.resolve())
        return settings.recipe_args(topology=str(path.resolve()), chain=self._chain(), trajectory=trajectory)

    # ------------------------------------------------------------------ run
    def simulate(self, *_: Any) -> bool:
        """Check the inputs and start the simulation (layers arrive in :meth:`show_dataset_steps`).
        ``False`` (and a message in :attr:`info`) when the inputs are not usable."""
        from napari_cryohet.stages._common import check_cancel, report_busy
        from napari_cryohet.stages.simulate.stage import SimulateConfig, make_dataset

        if self.check_structure() is None:
            self.info.value = self.structure_note.value
            return False
        try:
            args = self.recipe_args()
            config = SimulateConfig.from_recipe("trajectory", args)
        except ValueError as err:
            self.info.value = f"Cannot simulate: {err}"
            return False
        name = self._dataset_name(args)
        self.info.value = self.box_warning(args)

        def job(progress, cancel):
            dataset = make_dataset(config, progress=progress, cancel=cancel)  # stops between batches
            check_cancel(cancel)
            report_busy(progress, f"drawing {len(dataset)} particles")
            return dataset, dataset_layers(dataset, name)

        self.runner.start(job, self.show_dataset_steps, on_error=self._show_error)
        return True

    def box_warning(self, args: dict[str, Any]) -> str:
        """A sentence when the protein (moved by up to the largest RMSD, blurred by 3σ) leaves the box."""
        x = np.asarray(self.structure.coords, dtype=np.float64)
        reach = float(np.linalg.norm(x - x.mean(axis=0), axis=1).max()) + 3 * SIGMA_A + args.get("amplitude_a", 0.0)
        half = args["box_size"] * args["apix"] / 2
        if reach <= half:
            return ""
        return (f"Note: the protein reaches about {reach:.0f} Å from its centre (with its motion and the width of "
                f"its atoms) but the box is only {half:.0f} Å from centre to edge: atoms fall outside the images. "
                f"Raise the pixel size (suggested: {self.suggested_apix:g} Å/px) or the box size.")

    def _dataset_name(self, args: dict[str, Any]) -> str:
        stem = Path(args["topology"]).name.split(".")[0]
        chain = f" {args['chain']}" if args.get("chain") else ""
        if "trajectory" in args:
            return f"{stem}{chain}: {Path(args['trajectory']).name}"
        k = args["normal_modes"]
        return f"{stem}{chain}: {k} elastic-network mode{'s' if k > 1 else ''}"

    def show_dataset_steps(self, outcome: tuple[Any, list]):
        """Add the layers one per event-loop turn (the runner yields between them)."""
        from napari.layers import Layer

        dataset, layer_data = outcome
        self.dataset, self.layers = dataset, []
        for data, kwargs, kind in layer_data:
            self.layers.append(self.viewer.add_layer(Layer.create(data, kwargs, kind)))
            yield
        truth = dataset.ground_truth
        n_res = np.asarray(truth["coords_a"]).shape[1]
        done = (f"Simulated {len(dataset)} particles of {n_res} residues ({dataset.box_size} px at "
                f"{float(dataset.apix):g} Å/px) as '{self.session.dataset_name(dataset) or self.layers[0].name}'. "
                "Fit them with Plugins ▸ napari-cryohet ▸ 3 · Backbone chain fit.")
        self.info.value = f"{self.info.value}\n{done}" if self.info.value else done

    def _show_error(self, err: BaseException) -> None:
        self.info.value = f"Could not simulate: {err}"


class SimulateDock(ScrollDock):
    """The Plugins-menu entry: :class:`SimulateProteinWidget` in a scroll area, tabbed with the
    stage docks (:mod:`napari_cryohet.plugin._docking`)."""

    def __init__(self, napari_viewer) -> None:
        super().__init__(SimulateProteinWidget(napari_viewer))

