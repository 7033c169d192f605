"""Your own motion: Cα trajectories from a file or from elastic-network modes, and the
particle datasets imaged from them (issue 14, item 3).

=============================  ==================================================================
function                       what
=============================  ==================================================================
:func:`read_trajectory`        Cα frames of a topology PDB/mmCIF + a multi-model PDB/mmCIF (gemmi)
                               or a DCD/XTC/TRR (MDAnalysis, when installed)
:func:`normal_mode_trajectory` the reference deformed along its slowest ANM modes
                               (:mod:`napari_cryohet.core.anm`), RMSD ≤ ``amplitude_a``, bond
                               lengths restored to the reference's
:func:`restore_bond_lengths`   nearest chain (least-norm correction) with given Cα–Cα distances
:func:`trajectory_chain`       the recipe: particles imaged from such a trajectory exactly like
                               :func:`~napari_cryohet.stages.simulate.adk.adk_chain` (same
                               imaging path, same ground-truth keys)
=============================  ==================================================================

Frames share the reference's model frame: the reference's Cα centroid is the origin; frames
read from a file are superposed on the reference (Kabsch, all Cα) unless
``superpose=False``, so the ground truth measures conformational change, not drift.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_cryohet.core.anm import ANMModes, anm_modes
from napari_cryohet.core.particle_dataset import ParticleDataset
from napari_cryohet.io.errors import CryohetInputError
from napari_cryohet.stages._common import CancelToken, ProgressCallback, report
from napari_cryohet.stages.simulate.engine import AtomicModel
from napari_cryohet.stages.simulate.recipe_support import _simulate_dataset

__all__ = ["ChainTrajectory", "read_trajectory", "normal_mode_trajectory", "restore_bond_lengths",
           "trajectory_chain"]

#: Trajectory formats read through MDAnalysis (when it is installed).
MDANALYSIS_SUFFIXES = (".dcd", ".xtc", ".trr", ".nc", ".netcdf")
#: Structure formats read through gemmi (every model is a frame).
GEMMI_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif", ".gz")


@dataclass
class ChainTrajectory:
    """Cα frames of one protein in the reference's model frame.

    Attributes
    ----------
    coords_a
        ``(F, M, 3)`` float32 frames, Å.
    reference_a
        ``(M, 3)`` float32 the known conformation (its centroid is the origin).
    params
        ``(F, k)`` float32 each frame's continuous state: path position ``t ∈ [0, 1]``
        (``k = 1``) for a file or a sinusoidal path, the per-mode amplitudes (``k = K``)
        for random normal-mode frames.
    resnames, resids
        ``(M,)`` residue names and numbers of the reference.
    modes
        The ANM modes used (:func:`normal_mode_trajectory`), else ``None``.
    mode_amplitudes_a
        ``(F, K)`` float32 the amplitudes each frame was made with (Å of RMSD per mode,
        before the bond lengths were restored), else ``None``.
    gaps
        ``(G,)`` bond indices where the reference's chain is broken (``io.pdb``); their
        distances are kept like every other Cα–Cα distance.
    notes
        What reading the topology left out or found (gaps, caps, waters, altlocs).
    source
        Where the frames came from.
    """

    coords_a: np.ndarray
    reference_a: np.ndarray
    params: np.ndarray
    resnames: np.ndarray
    resids: np.ndarray
    modes: ANMModes | None = None
    mode_amplitudes_a: np.ndarray | None = None
    gaps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    notes: tuple[str, ...] = ()
    source: str = ""

    @property
    def n_frames(self) -> int:
        return len(self.coords_a)

    def bond_lengths_a(self) -> np.ndarray:
        """``(M − 1,)`` the reference's Cα–Cα distances, Å."""
        return _bond_lengths(self.reference_a.astype(np.float64))


def _bond_lengths(x: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.diff(x, axis=-2), axis=-1)


# ------------------------------------------------------------------ bond lengths


def restore_bond_lengths(coords_a: np.ndarray, bond_lengths_a: np.ndarray, *, tol_a: float = 1e-4,
                         max_iter: int = 50) -> np.ndarray:
    """The chain nearest to ``coords_a`` whose consecutive distances are ``bond_lengths_a``.

    Gauss–Newton projection onto the constraints ``g_j(x) = (|x_{j+1} − x_j|² − b_j²) / 2 = 0``
    (the matrix form of SHAKE, Ryckaert, Ciccotti & Berendsen 1977): each step moves the atoms
    by the least-norm ``Δx = −Jᵀ (J Jᵀ)⁻¹ g``, ``J Jᵀ`` being tridiagonal for a chain (one
    banded solve per frame), until every ``|bond − b_j| < tol_a``.

    Parameters
    ----------
    coords_a
        ``(M, 3)`` or ``(F, M, 3)`` chains, Å.
    bond_lengths_a
        ``(M − 1,)`` target distances (e.g. the reference's, gap "bonds" included), Å.

    Returns
    -------
    ``(…, M, 3)`` float64 chains.

    Raises
    ------
    RuntimeError
        No convergence within ``max_iter`` steps (a deformation far too large to be a
        chain of those bonds).
    """
    from scipy.linalg import solveh_banded

    x = np.array(coords_a, dtype=np.float64)
    single = x.ndim == 2
    frames = x[None] if single else x
    b = np.asarray(bond_lengths_a, dtype=np.float64)
    if frames.ndim != 3 or frames.shape[-1] != 3 or b.shape != (frames.shape[1] - 1,):
        raise ValueError(f"coords_a (…, M, 3) and bond_lengths_a (M − 1,) disagree: {x.shape}, {b.shape}")
    for f in range(len(frames)):
        xf = frames[f]
        for _ in range(max_iter):
            d = np.diff(xf, axis=0)  # (M − 1, 3)
            length2 = np.einsum("jk,jk->j", d, d)
            if np.abs(np.sqrt(length2) - b).max() < tol_a:
                break
            g = 0.5 * (length2 - b**2)
            banded = np.zeros((2, len(d)))  # upper form: [super-diagonal; diagonal]
            banded[1] = 2.0 * length2
            banded[0, 1:] = -np.einsum("jk,jk->j", d[:-1], d[1:])
            lam = solveh_banded(banded, g)  # (M − 1,)
            step = np.zeros_like(xf)
            step[1:] -= lam[:, None] * d  # ∂g_j/∂x_{j+1} = d_j
            step[:-1] += lam[:, None] * d  # ∂g_j/∂x_j = −d_j
            xf += step
        else:
            err = np.abs(_bond_lengths(xf) - b).max()
            raise RuntimeError(f"bond lengths not restored in frame {f}: worst bond still {err:.3f} Å off after "
                               f"{max_iter} steps (is the deformation much larger than the chain allows?)")
    return frames[0] if single else frames


# ------------------------------------------------------------------ elastic-network modes


def normal_mode_trajectory(
    reference_a: np.ndarray,
    *,
    n_modes: int,
    amplitude_a: float,
    n_frames: int = 100,
    amplitudes: str = "random",
    cutoff_a: float = 15.0,
    seed: int = 0,
    resnames: np.ndarray | None = None,
    resids: np.ndarray | None = None,
) -> ChainTrajectory:
    """Frames of ``reference_a (M, 3)`` deformed along its ``n_modes`` slowest ANM modes.

    Mode ``k`` gets a thermal-like weight ``sqrt(λ_1 / λ_k)`` (softer modes move more) and

    - ``amplitudes="random"``: each frame a random direction in the modes' span (Gaussian
      coefficients × weights) at an RMSD drawn uniformly in ``[0, amplitude_a]``;
    - ``amplitudes="sinusoidal"``: a path ``t = f / (F − 1)``, coefficient
      ``w_k sin((k + 1) π t / 2)`` — frame 0 is the reference, mode 1 opens steadily, higher
      modes swing — scaled so the largest frame's RMSD is ``amplitude_a``.

    A linear mode stretches bonds (a rotation of a domain is not linear), so each frame's
    Cα–Cα distances are then restored to the reference's (:func:`restore_bond_lengths`);
    a frame whose RMSD then exceeds ``amplitude_a`` is shrunk and redone, so every frame's
    RMSD to the reference (no superposition: modes carry no rigid-body motion) is
    ``≤ amplitude_a``. ``mode_amplitudes_a`` are the prescribed per-mode amplitudes (Å of
    RMSD); ``params`` are those (random) or the path position ``t`` (sinusoidal).
    """
    ref = np.asarray(reference_a, dtype=np.float64)
    if ref.ndim != 2 or ref.shape[1] != 3:
        raise ValueError(f"reference_a: expected (M, 3), got {ref.shape}")
    if not amplitude_a > 0:
        raise ValueError(f"amplitude_a must be positive (Å of RMSD), got {amplitude_a}")
    if n_frames < 1:
        raise ValueError(f"n_frames must be at least 1, got {n_frames}")
    if amplitudes not in ("random", "sinusoidal"):
        raise ValueError(f"amplitudes: expected 'random' or 'sinusoidal', got {amplitudes!r}")
    ref = ref - ref.mean(axis=0)
    modes = anm_modes(ref, n_modes=n_modes, cutoff_a=cutoff_a)
    weight = np.sqrt(modes.eigenvalues[0] / modes.eigenvalues)  # (K,)
    rng = np.random.default_rng([int(seed), 14])
    if amplitudes == "random":
        z = rng.standard_normal((n_frames, n_modes)) * weight
        z /= np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
        c = z * rng.uniform(0.0, amplitude_a, (n_frames, 1))  # (F, K), |c_f| = RMSD
    t = np.linspace(0.0, 1.0, n_frames)[:, None]
    if amplitudes == "sinusoidal":
        c = weight * np.sin((np.arange(n_modes) + 1) * np.pi * t / 2)
        c *= amplitude_a / max(float(np.linalg.norm(c, axis=1).max()), 1e-12)
    bonds = _bond_lengths(ref)
    coords = np.empty((n_frames, len(ref), 3))
    for f in range(n_frames):
        for _ in range(20):
            coords[f] = restore_bond_lengths(modes.displace(c[f]), bonds)
            rmsd = float(np.sqrt(((coords[f] - ref) ** 2).sum(axis=1).mean()))
            if rmsd <= amplitude_a:
                break
            c[f] *= 0.995 * amplitude_a / rmsd
        else:
            raise RuntimeError(f"frame {f}: RMSD {rmsd:.2f} Å stays above amplitude_a = {amplitude_a:g} Å")
    m = len(ref)
    return ChainTrajectory(
        coords_a=coords.astype(np.float32), reference_a=ref.astype(np.float32),
        params=(c if amplitudes == "random" else t).astype(np.float32), mode_amplitudes_a=c.astype(np.float32),
        resnames=np.full(m, "ALA") if resnames is None else np.asarray(resnames, dtype=str),
        resids=np.arange(1, m + 1) if resids is None else np.asarray(resids, dtype=np.int64),
        modes=modes, source=f"ANM: {n_modes} modes, cutoff {cutoff_a:g} Å, RMSD ≤ {amplitude_a:g} Å, {amplitudes}")


# ------------------------------------------------------------------ files


def _kabsch(frames: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``frames (F, M, 3)`` rotated and translated onto ``reference (M, 3)`` (centred)."""
    out = np.empty_like(frames)
    for f, x in enumerate(frames):
        xc = x - x.mean(axis=0)
        u, _, vt = np.linalg.svd(xc.T @ reference)
        sign = np.sign(np.linalg.det(u @ vt))
        rot = u @ np.diag([1.0, 1.0, sign]) @ vt
        out[f] = xc @ rot
    return out


def _model_ca(model, keys: set[tuple[str, int, str]]) -> dict[tuple[str, int, str], tuple[float, float, float]]:  # noqa: ANN001
    """Cα of the residues ``keys`` (chain, number, insertion code) in one gemmi model, the
    most occupied alternative location (as ``io.pdb.read_ca_chains`` chooses)."""
    import gemmi

    carbon = gemmi.Element("C")
    best: dict[tuple[str, int, str], tuple[float, tuple[float, float, float]]] = {}
    for ch in model:
        for residue in ch:
            key = (ch.name, int(residue.seqid.num), residue.seqid.icode.strip())
            if key not in keys:
                continue
            for atom in residue:
                if atom.name == "CA" and atom.element == carbon and (key not in best or atom.occ > best[key][0]):
                    best[key] = (atom.occ, (atom.pos.x, atom.pos.y, atom.pos.z))
    return {k: v[1] for k, v in best.items()}


def _read_frames_mdanalysis(topology: Path, trajectory: Path, keys: list[tuple[str, int, str]]) -> np.ndarray:
    try:
        import MDAnalysis as mda  # noqa: N813
    except ImportError as err:
        raise CryohetInputError(
            trajectory, f"reading {trajectory.suffix} trajectories needs the MDAnalysis package, which is not "
            "installed (pip install MDAnalysis); or write the frames as a multi-model PDB file",
            field="trajectory") from err
    universe = mda.Universe(str(topology), str(trajectory))
    ca = universe.select_atoms("name CA")
    chain_ids = ca.chainIDs if hasattr(ca, "chainIDs") else np.full(len(ca), "")
    icodes = ca.icodes if hasattr(ca, "icodes") else np.full(len(ca), "")
    index: dict[tuple[str, int, str], int] = {}
    for i, (c, r, ic) in enumerate(zip(chain_ids, ca.resids, icodes, strict=True)):
        index.setdefault((str(c).strip(), int(r), str(ic).strip()), i)
    missing = [k for k in keys if k not in index]
    if missing:
        ch, num, icode = missing[0]
        raise CryohetInputError(trajectory, f"no Cα for residue {ch} {num}{icode} of the topology {topology.name} "
                                f"({len(missing)} missing in all)", field="CA")
    pick = np.array([index[k] for k in keys])
    return np.stack([ca.positions[pick].astype(np.float64) for _ in universe.trajectory])


def read_trajectory(topology: str | Path, trajectory: str | Path | None = None, *, chain: str | None = None,
                    superpose: bool = True) -> ChainTrajectory:
    """Cα frames of a structure's trajectory.

    Parameters
    ----------
    topology
        PDB/mmCIF file; its first model is the reference, read as the chain fit reads a
        reference (``io.pdb.read_ca_chains``: standard amino acids only, most occupied
        alternative location, insertion codes; what was left out and the gaps are in
        ``notes``).
    trajectory
        Multi-model PDB/mmCIF (every model a frame, read with gemmi), or DCD/XTC/TRR (read
        with MDAnalysis, needed only then); ``None``: the models of ``topology`` itself.
        Every frame must hold the reference's residues (matched by chain, number and
        insertion code).
    chain
        Chain name or several (``"A,B"``); ``None``: the first chain with amino acids.
    superpose
        Superpose every frame on the reference (Kabsch, all Cα).

    Raises
    ------
    CryohetInputError
        A file is missing or unreadable, a frame lacks a residue of the reference (named),
        the chain is absent, or MDAnalysis is needed and not installed.
    """
    from napari_cryohet.io.pdb import read_ca_chains, read_structure

    topology = Path(topology)
    read = read_ca_chains(topology, chain=chain)
    keys = [(str(c), int(r), str(i)) for c, r, i in zip(read.chain_ids, read.resids, read.icodes, strict=True)]
    reference = read.coords.astype(np.float64)
    source_path = topology if trajectory is None else Path(trajectory)
    suffix = source_path.suffix.lower()
    if suffix in MDANALYSIS_SUFFIXES:
        if not source_path.is_file():
            raise CryohetInputError(source_path, "file does not exist")
        frames = _read_frames_mdanalysis(topology, source_path, keys)
    elif suffix in GEMMI_SUFFIXES:
        models = read_structure(source_path)
        frames = np.empty((len(models), len(keys), 3))
        wanted = set(keys)
        for f, model in enumerate(models):
            atoms = _model_ca(model, wanted)
            missing = [k for k in keys if k not in atoms]
            if missing:
                ch, num, icode = missing[0]
                raise CryohetInputError(source_path, f"model {f + 1} lacks the Cα of residue {ch} "
                                        f"{read.resnames[keys.index(missing[0])]} {num}{icode} of the topology "
                                        f"({len(missing)} missing in all)", field="MODEL")
            frames[f] = [atoms[k] for k in keys]
    else:
        raise CryohetInputError(source_path, f"unknown trajectory format {source_path.suffix!r}: expected a "
                                f"multi-model PDB/mmCIF or {', '.join(MDANALYSIS_SUFFIXES)}", field="trajectory")
    centre = reference.mean(axis=0)
    reference = reference - centre
    frames = _kabsch(frames, reference) if superpose else frames - centre
    n = len(frames)
    t = np.arange(n, dtype=np.float32)[:, None] / max(n - 1, 1)
    return ChainTrajectory(coords_a=frames.astype(np.float32), reference_a=reference.astype(np.float32), params=t,
                           resnames=read.resnames, resids=read.resids, gaps=read.gaps, notes=read.notes,
                           source=str(source_path))


# ------------------------------------------------------------------ the recipe


def _interpolate(coords: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``coords (F, M, 3)`` at path positions ``t (N,) ∈ [0, 1]``, linear between frames."""
    f = np.clip(t, 0.0, 1.0) * (len(coords) - 1)
    lo = np.floor(f).astype(np.int64)
    hi = np.minimum(lo + 1, len(coords) - 1)
    w = (f - lo).astype(np.float32)[:, None, None]
    return (1 - w) * coords[lo] + w * coords[hi]


def trajectory_chain(
    n_particles: int = 200,
    *,
    topology: str | None = None,
    trajectory: str | None = None,
    chain: str | None = None,
    normal_modes: int | None = None,
    amplitude_a: float = 5.0,
    n_frames: int = 100,
    amplitudes: str = "random",
    cutoff_a: float = 15.0,
    continuous: bool = False,
    box_size: int = 64,
    apix: float = 2.0,
    snr: float | None = 0.05,
    sigma_a: float = 3.0,
    voltage_kv: float = 200.0,
    cs_mm: float = 2.0,
    amplitude_contrast: float = 0.1,
    defocus_values_um: tuple[float, ...] = (1.5, 1.75, 2.0, 2.25, 2.5),
    shift_std_a: float = 0.0,
    seed: int = 0,
    batch_size: int = 256,
    device: str | None = "cpu",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> ParticleDataset:
    """Cα chains of your own protein and motion, imaged like :func:`~.adk.adk_chain`.

    The motion is either a file (``trajectory``: multi-model PDB/mmCIF or DCD/XTC with the
    ``topology`` PDB, :func:`read_trajectory`) or ``normal_modes`` elastic-network modes of
    ``topology`` (default: AdK frame 0) with RMSD ≤ ``amplitude_a`` Å and bond lengths
    restored (:func:`normal_mode_trajectory`, ``n_frames`` frames). Each particle takes a
    frame drawn uniformly (or, with ``continuous=True`` on a path — a file or
    ``amplitudes="sinusoidal"`` — a position ``t ~ U[0, 1]`` interpolated between frames),
    a uniform pose, a defocus from ``defocus_values_um``; Gaussian atoms of σ = ``sigma_a``
    at the Cα, imaged with the Table 1 conditions of ``000_8d73a95ce4c6e7ab.txt`` by the
    simulator's forward model.

    Ground truth (the keys of :func:`~.adk.adk_chain`)
    ------------
    ``state``
        ``(N,)`` int frame index, or ``(N, 1)`` float ``t`` (continuous).
    ``state_params``
        ``(N, 1)`` path position ``t`` (file, sinusoidal path), or ``(N, K)`` the frame's
        per-mode amplitudes in Å (random normal modes).
    ``coords_a``
        ``(N, M, 3)`` Cα coordinates, model frame, Å.
    ``global/reference_coords_a``
        ``(M, 3)`` the reference (topology's first model / the undeformed chain).
    ``global/trajectory_coords_a``
        ``(F, M, 3)`` all frames.
    ``global/resids``, ``global/gaps``
        ``(M,)`` residue numbers, ``(G,)`` bond indices of the reference's gaps; normal modes also give ``global/mode_vectors (K, M, 3)``,
        ``global/mode_eigenvalues (K,)``, ``global/mode_amplitudes_a (F, K)``.
    ``global/sigma_a``, ``clean_images``, ``global/snr``, ``global/noise_var``.
    """
    if (trajectory is None) == (normal_modes is None):
        raise ValueError("trajectory_chain: give either trajectory= (a file of frames) or normal_modes= "
                         "(a number of elastic-network modes), not both or neither")
    if normal_modes is not None:
        if topology is None:
            from napari_cryohet.stages.simulate.adk import load_adk_ca

            ca = load_adk_ca()
            ref, resnames, resids = ca["coords"][0], ca["resnames"], ca["resids"]
            gaps, notes = np.zeros(0, dtype=np.int64), ()
        else:
            ref_traj = read_trajectory(topology, chain=chain)
            ref, resnames, resids = ref_traj.reference_a, ref_traj.resnames, ref_traj.resids
            gaps, notes = ref_traj.gaps, ref_traj.notes
        report(progress, 0.0, f"elastic-network modes of {len(ref)} residues, {n_frames} frames")
        traj = normal_mode_trajectory(ref, n_modes=int(normal_modes), amplitude_a=amplitude_a, n_frames=n_frames,
                                      amplitudes=amplitudes, cutoff_a=cutoff_a, seed=seed, resnames=resnames,
                                      resids=resids)
        traj.gaps, traj.notes = gaps, notes
        path_like = amplitudes == "sinusoidal"
    else:
        if topology is None:
            raise ValueError("trajectory_chain: trajectory= needs topology= (the PDB file naming its residues)")
        traj = read_trajectory(topology, trajectory, chain=chain)
        path_like = True
    if continuous and not path_like:
        raise ValueError("continuous=True needs a path (a trajectory file or amplitudes='sinusoidal'); random "
                         "normal-mode frames are not ordered: raise n_frames instead")
    coords_f = traj.coords_a
    radius = float(np.linalg.norm(coords_f, axis=-1).max()) + 3 * sigma_a
    if radius > box_size * apix / 2:
        warnings.warn(f"the chain reaches {radius:.0f} Å from the centre (with 3σ of its atoms) but the box "
                      f"({box_size} px × {apix:g} Å/px) has a half-width of {box_size * apix / 2:.0f} Å: atoms "
                      f"fall outside the images; raise box_size or apix", stacklevel=2)
    rng = np.random.default_rng([int(seed), 31])
    n_total = traj.n_frames
    if continuous:
        t = rng.uniform(0.0, 1.0, n_particles)
        coords = _interpolate(coords_f, t)
        state: np.ndarray = t[:, None].astype(np.float32)
        params = t[:, None].astype(np.float32)
    else:
        frame = rng.integers(0, n_total, n_particles)
        coords = coords_f[frame]
        state = frame.astype(np.int64)
        params = traj.params[frame]
    truth: dict[str, np.ndarray] = {
        "state": state,
        "state_params": params,
        "global/reference_coords_a": traj.reference_a,
        "global/trajectory_coords_a": coords_f,
        "global/resids": traj.resids,
        "global/gaps": traj.gaps,
    }
    if traj.modes is not None:
        truth["global/mode_vectors"] = traj.modes.vectors.astype(np.float32)
        truth["global/mode_eigenvalues"] = traj.modes.eigenvalues.astype(np.float32)
        truth["global/mode_amplitudes_a"] = traj.mode_amplitudes_a
    model = AtomicModel(coords_a=coords, sigma_a=sigma_a, truth=truth)
    ds = _simulate_dataset("trajectory_chain", model, box_size=box_size, apix=apix, snr=snr, voltage_kv=voltage_kv,
                           cs_mm=cs_mm, amplitude_contrast=amplitude_contrast, defocus_values_um=defocus_values_um,
                           shift_std_a=shift_std_a, seed=seed, batch_size=batch_size, device=device,
                           progress=progress, cancel=cancel)
    ds.meta["trajectory_source"] = traj.source
    ds.meta["trajectory_notes"] = list(traj.notes)
    return ds
