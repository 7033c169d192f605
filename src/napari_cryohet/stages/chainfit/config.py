"""Settings of the chain fit (Esteve-Yagüe et al. 2022, §2.3 and §3).

Every field is declared once with :func:`~napari_cryohet.stages.protocol.param`; the
widget's form and the ``cryohet chainfit`` flags are generated from these declarations.
``device`` and ``checkpoint_every`` do not change the result (``runtime=True``: left out of
the fingerprint that decides whether a workspace run can be resumed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from napari_cryohet.stages._common import LR_SCHEDULES
from napari_cryohet.stages.protocol import StageConfig, param

__all__ = ["ChainFitConfig"]


@dataclass
class ChainFitConfig(StageConfig):
    """Settings of the chain fit (Esteve-Yagüe et al. 2022, §2.3 and §3).

    See each field's help (``ChainFitConfig.field_info()``) for its meaning and unit. Angle
    indices are 0-based; angle ``j`` sits at atom ``j + 1``
    (:func:`~napari_cryohet.stages.chainfit.reference.angles_for_residues` converts residue
    ranges).
    """

    STAGE = "chainfit"
    RETIRED = ("resume",)  # the workspace decides this now

    #: Fields the settings form always shows; the others sit under "Advanced settings".
    PRIMARY: ClassVar[tuple[str, ...]] = ("reference", "basis", "n_eigenvectors", "epochs", "learning_rate")

    reference: str | None = param(
        None, label="reference model",
        help="PDB or mmCIF file of one known conformation of the molecule, in the same frame as the particle "
             "poses; every particle's chain is fitted as a deformation of it; empty = the dataset's own known "
             "conformation (simulated data)")
    reference_chain: str | None = param(
        None, label="reference chain",
        help="Chain identifier in the reference model (e.g. A); empty = the first chain")
    basis: str = param(
        "eigenvectors", choices=("eigenvectors", "normal_modes"), label="deformation model",
        help="'eigenvectors' = every angle of the chain follows the particles' spectral-embedding eigenvectors "
             "(Esteve-Yagüe et al. 2022); 'normal_modes' = each particle's chain is the reference moved along its "
             "slowest elastic-network normal modes, amplitudes fitted to each image (HEMNMA, Jin et al. 2014; "
             "eq. 7 of Toader, Sigworth & Lederman 2023); needs no eigenvectors")
    n_modes: int = param(
        6, minimum=1, unit="modes", label="normal modes",
        help="Normal-mode model only: how many of the slowest elastic-network modes each particle may move "
             "along; 3-10 typical (HEMNMA uses a handful)")
    mode_cutoff_a: float = param(
        15.0, unit="Å", label="spring cutoff",
        help="Normal-mode model only: Cα atoms closer than this are joined by springs in the elastic network "
             "(anisotropic network model, Atilgan et al. 2001); 12-20 Å typical")
    mode_amplitudes: str = param(
        "per_particle", choices=("per_particle", "eigenvectors"), label="amplitudes from",
        help="Normal-mode model only: 'per_particle' = each particle's amplitudes fitted to its own image, as in "
             "HEMNMA (Jin et al. 2014); 'eigenvectors' = the amplitudes follow the spectral eigenvectors (one map "
             "for all particles, as the angles do in Esteve-Yagüe et al. 2022), so each rests on all the images")
    mode_min_collectivity: float = param(
        0.1, minimum=0.0, maximum=1.0, unit="fraction", label="least collectivity",
        help="Normal-mode model only: skip modes in which fewer atoms move than this share (Brüschweiler 1995 "
             "collectivity: 1 = all atoms move alike, near 0 = one loose loop flaps); 0 = the slowest modes "
             "whatever they are; 0.1 typical")
    mode_step_a: float = param(
        0.5, unit="Å per step", label="amplitude step",
        help="Normal-mode model only: about how far one optimiser step moves a particle along a mode (Å of "
             "RMSD); 0.1-2 typical")
    mode_prior_a: float | None = param(
        2.0, unit="Å", label="expected motion",
        help="Normal-mode model only: how far particles typically move along the softest mode (Å of RMSD; softer "
             "modes are expected to move more, as in the elastic network); a prior that keeps noisy images from "
             "pulling the amplitudes around; empty = no prior, as in HEMNMA")
    mode_prior_learned: bool = param(
        True, label="learn the expected motion",
        help="Normal-mode model only: re-estimate from the images, every epoch of the first two thirds, how far "
             "the particles move along each mode and which modes move together (empirical Bayes: the spread of "
             "the fitted amplitudes plus their uncertainty), starting from 'expected motion'; modes the "
             "particles do not use are then held near the reference. Off = keep 'expected motion' fixed")
    mode_steps: int = param(
        5, minimum=1, unit="steps", label="steps per visit",
        help="Normal-mode model only: optimiser steps on a particle's amplitudes each time its batch comes up "
             "(each particle has only its own image to learn from); 1-10, 5 typical")
    n_eigenvectors: int = param(
        10, minimum=1, unit="eigenvectors", label="eigenvectors used",
        help="How many of the spectral embedding's eigenvectors (smooth per-particle coordinates, the constant "
             "one included) each angle of the chain is expanded on (K in Esteve-Yagüe et al. 2022, eq. 2.6); "
             "more follows finer changes but fits noise sooner; 5-20 typical (10 for adenylate kinase)")
    epochs: int = param(30, minimum=0, unit="epochs",
                        help="Passes over the training particles; 20-100 typical (30 for adenylate kinase in "
                             "Esteve-Yagüe et al. 2022); 0 = just score the reference")
    batch_size: int = param(100, minimum=1, unit="particles", label="batch size",
                            help="Particles per gradient step (100 in Esteve-Yagüe et al. 2022); 16-500 typical")
    optimizer: str = param("adam", choices=("adam", "sgd"), label="optimiser",
                           help="How the coefficients are updated: 'adam' (adapts the step of every coefficient; "
                                "robust) or 'sgd' = plain gradient descent with momentum, as in the paper")
    learning_rate: float = param(
        0.1, unit="Å per step", label="learning rate",
        help="Step size of the optimiser. With step scaling 'lever arm' (the default): about how far, in Å, one "
             "step moves the atoms through one angle, the same for a small or a large protein; 0.05-1 typical. "
             "With step scaling 'none': radians per step (Adam 0.0005-0.01; SGD about 0.5 as in Esteve-Yagüe "
             "et al. 2022)")
    step_scaling: str = param(
        "lever_arm", choices=("lever_arm", "none"), label="step scaling",
        help="'lever_arm' = each angle's step is divided by how far it moves the atoms (an angle near the anchor "
             "of a large protein swings hundreds of atoms, one at a chain end a single atom), so the defaults hold "
             "for 100-1000 residues; 'none' = every angle gets the same step in radians, as in Esteve-Yagüe et al. "
             "2022")
    lr_schedule: str = param(
        "cosine", choices=LR_SCHEDULES, label="learning-rate schedule",
        help="'cosine' = the step size falls smoothly to zero by the last epoch (steadier on noisy data); "
             "'constant' = the same step throughout, as in the paper")
    momentum: float = param(0.9, minimum=0.0, maximum=1.0,
                            help="SGD only: share of the previous step carried into the next (0.9 typical); "
                                 "not used by Adam")
    test_fraction: float = param(
        0.1, minimum=0.0, unit="fraction", label="held-out share",
        help="Share of the particles kept out of training to score the fit (compared with clean images when "
             "the data are simulated); 0-0.5, 0.1 as in Esteve-Yagüe et al. 2022")
    sigma_a: float | None = param(
        None, unit="Å", label="atom width",
        help="Width (standard deviation σ) of the Gaussian blob drawn for each atom in the predicted images "
             "(eq. 2.9); empty = the simulator's value or 3 Å; 2-5 Å typical for Cα atoms")
    amplitude: float = param(1.0, label="atom mass",
                             help="Height of each atom's blob in the predicted images (ν in eq. 2.9 of "
                                  "Esteve-Yagüe et al. 2022); 1 matches the simulator's images")
    reference_atom: int | None = param(
        None, minimum=0, unit="atom index", label="anchor atom",
        help="Atom (counted from 0) the chain is rebuilt from in both directions; it keeps its position, the "
             "rest follows the fitted angles; empty = the atom nearest the centre, as in the paper's code")
    anchor: str = param(
        "reference", choices=("reference", "truth"), label="anchor position",
        help="Where the anchor atom sits in each particle: 'reference' = at the reference model's position and "
             "orientation (the particle pose does the rest); 'truth' = at each particle's true position "
             "(simulated data only, to test the fit)")
    bond_length_mode: str = param(
        "mean", choices=("mean", "reference"), label="bond lengths",
        help="'mean' = every Cα–Cα distance set to the reference's mean (3.8 Å in proteins), as in Esteve-Yagüe et "
             "al. 2022; 'reference' = each bond as long as in the reference model, so the untrained chain is the "
             "reference exactly (a cis-proline's 2.9 Å bond stays 2.9 Å); on adenylate kinase both give the same "
             "fit to ±0.01 Å; gaps keep their own length either way")
    bond_length_a: float | None = param(
        None, unit="Å", label="bond length",
        help="One fixed Cα–Cα distance for every bond instead; empty = from the reference (3.8 Å in proteins)")
    fit_bond_angles: bool = param(True, label="fit bond angles",
                                  help="Fit the bond angles as well as the torsion angles (Esteve-Yagüe et al. "
                                       "2022 fit both); off = bond angles stay as in the reference")
    fixed_angles: tuple[int, ...] = param(
        (), unit="angle indices", label="fixed angles",
        help="Angles (counted from 0; angle j sits at atom j + 1) kept exactly as in the reference, e.g. 10,11,12")
    rigid_angles: tuple[int, ...] = param(
        (), unit="angle indices", label="rigid angles",
        help="Angles that may change once for all particles but not between particles (helices, strands)")
    varying_angles: tuple[int, ...] | None = param(
        None, unit="angle indices", label="only these angles",
        help="If given, only these angles are fitted and every other stays as in the reference (as in §3.1.1 "
             "of Esteve-Yagüe et al. 2022)")
    fit_box_size: int | None = param(
        None, minimum=2, unit="px", label="fitted box",
        help="Fit only the central N × N Fourier components (the low resolutions; even N): faster when atoms "
             "are much wider than a pixel; empty = the whole image; e.g. half the box size")
    seed: int = param(0, label="random seed",
                      help="Seed of the random split into training and held-out particles and of the shuffling")
    device: str | None = param(
        "cpu", runtime=True, label="compute on",
        help="Where to compute: 'cpu', 'cuda' (graphics card) or 'auto' (the graphics card when there is one); "
             "does not change the result")
    checkpoint_every: int = param(
        1, minimum=1, runtime=True, unit="epochs", label="save every",
        help="Epochs between saved checkpoints an interrupted run resumes from (workspace runs only); 1-10")

    def validate(self) -> None:
        if not self.learning_rate > 0:
            self.fail("learning_rate", "a positive number", self.learning_rate)
        if not self.mode_step_a > 0:
            self.fail("mode_step_a", "a positive step in Å", self.mode_step_a)
        if self.mode_prior_a is not None and not self.mode_prior_a > 0:
            self.fail("mode_prior_a", "a positive distance in Å (or empty: no prior)", self.mode_prior_a)
        if not self.mode_cutoff_a > 0:
            self.fail("mode_cutoff_a", "a positive distance in Å", self.mode_cutoff_a)
        if not self.test_fraction < 1:
            self.fail("test_fraction", "a fraction in [0, 1)", self.test_fraction)
        if self.sigma_a is not None and not self.sigma_a > 0:
            self.fail("sigma_a", "a positive width in Å", self.sigma_a)
        if self.bond_length_a is not None and not self.bond_length_a > 0:
            self.fail("bond_length_a", "a positive length in Å", self.bond_length_a)
        if self.fit_box_size is not None and self.fit_box_size % 2:
            self.fail("fit_box_size", "an even number of pixels >= 2", self.fit_box_size)
        if self.reference is not None:
            self.reference = str(self.reference).strip() or None
        if self.reference_chain is not None:
            self.reference_chain = str(self.reference_chain).strip() or None
        for name in ("fixed_angles", "rigid_angles", "varying_angles"):
            value = getattr(self, name)
            if value is None:
                continue
            try:
                setattr(self, name, tuple(int(j) for j in value))
            except (TypeError, ValueError):
                self.fail(name, "a list of angle indices", value)
