"""Settings of the chain fit (Esteve-Yagüe et al. 2022, §2.3 and §3).

Every field is declared once with :func:`~napari_cryohet.stages.protocol.param`; the
widget's form and the ``cryohet chainfit`` flags are generated from these declarations.
``device`` and ``checkpoint_every`` do not change the result (``runtime=True``: left out of
the fingerprint that decides whether a workspace run can be resumed).
"""

from __future__ import annotations

from dataclasses import dataclass

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

    reference: str | None = param(
        None, label="reference model",
        help="PDB/mmCIF file of the known conformation, in the frame of the particle poses; empty: the "
             "dataset's own known conformation (simulated data)")
    reference_chain: str | None = param(
        None, help="chain of the reference model to use (empty: the first chain)")
    n_eigenvectors: int = param(
        10, minimum=1, label="eigenvectors K",
        help="number of leading Laplacian eigenvectors the angles are expanded on (the constant one included)")
    epochs: int = param(30, minimum=0, unit="epochs", help="passes over the training particles")
    batch_size: int = param(100, minimum=1, unit="particles", help="particles per gradient step")
    optimizer: str = param("adam", choices=("adam", "sgd"), help="gradient method: Adam, or SGD with momentum")
    learning_rate: float = param(
        0.002, unit="rad per step",
        help="step size of the optimiser; the coefficients are angles in radians per unit eigenvector")
    lr_schedule: str = param(
        "cosine", choices=LR_SCHEDULES, label="learning-rate schedule",
        help="cosine: decay the step size to zero over the run (steadier on noisy data); constant: "
             "plain steps as in the paper")
    momentum: float = param(0.9, minimum=0.0, maximum=1.0, help="momentum of SGD (not used by Adam)")
    test_fraction: float = param(
        0.1, minimum=0.0, unit="fraction",
        help="share of particles held out to score the fit (on clean images when the data are simulated)")
    sigma_a: float | None = param(
        None, unit="Å", label="atom width",
        help="width σ of the Gaussian atoms in the projections; empty: the simulator's value or 3 Å")
    amplitude: float = param(1.0, help="mass of one atom in the projections (the simulator's images use 1)")
    reference_atom: int | None = param(
        None, minimum=0, unit="atom index",
        help="0-based atom the chain is built from in both directions; empty: the atom nearest the "
             "centroid, as in the paper's code")
    anchor: str = param(
        "reference", choices=("reference", "truth"),
        help="where the reference atom sits: reference = the known conformation's position and frame for "
             "every particle (the pose does the rest); truth = each particle's own true position and frame "
             "(simulated data only)")
    bond_length_mode: str = param(
        "mean", choices=("mean", "reference"), label="bond lengths",
        help="mean: one Cα–Cα distance (the reference's mean); reference: each bond as in the reference")
    bond_length_a: float | None = param(
        None, unit="Å", label="bond length", help="one fixed Cα–Cα distance instead (empty: from the reference)")
    fit_bond_angles: bool = param(True, help="fit bond angles as well as torsion angles")
    fixed_angles: tuple[int, ...] = param(
        (), unit="angle indices", help="angles kept exactly at the reference (no coefficient)")
    rigid_angles: tuple[int, ...] = param(
        (), unit="angle indices", help="angles that only get the constant term (helices, strands)")
    varying_angles: tuple[int, ...] | None = param(
        None, unit="angle indices", help="if given, only these angles are fitted; every other stays fixed")
    fit_box_size: int | None = param(
        None, minimum=2, unit="px",
        help="fit on the central N×N Fourier components only (even; faster for atoms much wider than a "
             "pixel); empty: the whole image")
    seed: int = param(0, help="random seed of the train/test split and the shuffling")
    device: str | None = param(
        "cpu", runtime=True, help="where to compute: cpu, cuda, or auto (a GPU when there is one)")
    checkpoint_every: int = param(
        1, minimum=1, runtime=True, unit="epochs",
        help="epochs between checkpoints a run can resume from (workspace runs only)")

    def validate(self) -> None:
        if not self.learning_rate > 0:
            self.fail("learning_rate", "a positive number", self.learning_rate)
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
