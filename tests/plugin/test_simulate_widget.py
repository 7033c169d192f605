"""The "Simulate your own protein" dock (issue 14, item 3): the user's PDB, its chains and a motion,
run from the widget's own button through the runner, into the window's session like sample data."""

from __future__ import annotations

from pathlib import Path

import numpy as np

STRUCTURES = Path(__file__).resolve().parents[2] / "sample_data" / "structures"
PDB = STRUCTURES / "1a28_ca.pdb"
TIMEOUT_MS = 120_000


def _widget(make_napari_viewer):
    from napari_cryohet.plugin.simulate_widget import SimulateProteinWidget

    viewer = make_napari_viewer()
    return viewer, SimulateProteinWidget(viewer)


def _wait(qtbot, runner) -> None:
    qtbot.waitUntil(lambda: not runner.busy, timeout=TIMEOUT_MS)


def _reach_a(coords: np.ndarray) -> float:
    return float(np.linalg.norm(coords - coords.mean(axis=0), axis=1).max())


def test_simulates_your_protein_from_the_button(make_napari_viewer, qtbot):
    """1A28 chains A+B (500 residues, two pieces) bent along 2 elastic-network modes, from the
    Simulate button: 40 particles with ground truth (bonds kept inside each piece, RMSD within
    the largest RMSD), the recipe recorded, stack + true atoms + true chains (no line across
    the break between the chains), the dataset in use in the window's session."""
    from napari_cryohet.io.pdb import read_ca_chains
    from napari_cryohet.plugin._reader import DATASET_KEY
    from napari_cryohet.plugin.simulate_widget import FILL, SIGMA_A, largest_extent_a

    viewer, widget = _widget(make_napari_viewer)
    widget.chains.value = "A,B"
    widget.structure_file.value = PDB  # read at once: residues, pieces, notes, pixel size
    widget.form.normal_modes.value = 2
    widget.form.n_particles.value = 40
    widget.form.box_size.value = 32  # the suggested pixel size follows the box
    read = read_ca_chains(PDB, chain="A,B")
    assert widget.structure is not None and len(widget.structure.coords) == 500
    note = widget.structure_note.value
    print(f"\nstructure note: {note!r}")
    assert "1a28_ca.pdb: 500 residues" in note and "chains A, B" in note and "2 connected pieces" in note
    assert widget.notes == read.notes and all(n in note for n in read.notes)

    # the suggested pixel size: the largest extent fills ≤ 75 % of the box and the farthest atom
    # (+3σ blur, +the largest RMSD) stays inside it; 0.25 Å/px less breaks one of the two
    apix = float(widget.form.apix.parse_value())
    extent, reach = largest_extent_a(read.coords), _reach_a(read.coords.astype(np.float64)) + 3 * SIGMA_A + 5.0

    def fits(a: float) -> bool:
        return extent / (a * 32) <= FILL and reach <= a * 16

    print(f"suggested {apix} Å/px: extent {extent:.1f} Å fills {extent / (apix * 32):.0%}, reach {reach:.1f} Å "
          f"of a {apix * 16:.0f} Å half-box")
    assert apix == widget.suggested_apix and apix % 0.25 == 0 and fits(apix) and not fits(apix - 0.25)

    widget.run_button.native.click()
    assert widget.runner.busy
    _wait(qtbot, widget.runner)
    assert widget.runner.last_error is None, widget.runner.last_error  # also: no "atoms outside the box" warning
    ds = widget.dataset
    assert ds is not None and len(ds) == 40 and ds.box_size == 32 and float(ds.apix) == apix
    truth = ds.ground_truth
    coords = np.asarray(truth["coords_a"], dtype=np.float64)
    ref = np.asarray(truth["global/reference_coords_a"], dtype=np.float64)
    assert coords.shape == (40, 500, 3)
    ca = read.coords.astype(np.float64)
    assert np.abs(ref - (ca - ca.mean(axis=0))).max() < 1e-3  # the user's structure, centred
    worst = 0.0
    for a, b in read.segments:  # ((0, 251), (251, 500)): bonds inside each piece as the reference's
        bonds = np.linalg.norm(np.diff(coords[:, a:b], axis=1), axis=-1)
        worst = max(worst, float(np.abs(bonds - np.linalg.norm(np.diff(ref[a:b], axis=0), axis=-1)).max()))
    rmsd = np.sqrt(((coords - ref) ** 2).sum(-1).mean(-1))
    print(f"bond error inside pieces {worst:.4f} Å; RMSD to the structure {rmsd.min():.2f}–{rmsd.max():.2f} Å")
    assert worst < 0.05
    assert 0.5 < rmsd.max() <= 5.0 + 1e-4
    assert ds.meta["recipe"] == {"recipe": "trajectory", "args": {
        "topology": str(PDB.resolve()), "chain": "A,B", "normal_modes": 2, "amplitude_a": 5.0, "n_particles": 40,
        "box_size": 32, "apix": apix, "snr": 0.05, "seed": 0}}

    stack, points, chains = widget.layers
    assert stack.metadata[DATASET_KEY] is ds and stack.data.shape == (40, 32, 32)
    assert points.data.shape == (40 * 500, 3)
    assert len(chains.data) == 80 and sorted({len(p) for p in chains.data}) == [249, 251]  # a path per piece
    assert all(layer in viewer.layers for layer in widget.layers)
    session = widget.session
    assert session.dataset is ds and session.dataset_name(ds) == stack.name
    assert "1a28_ca A,B: 2 elastic-network modes" in stack.name and "40 particles" in widget.info.value


def test_notes_of_a_structure_with_a_gap_and_a_ligand(make_napari_viewer, tmp_path):
    """A structure with 5 residues missing and a hetero residue: both named in the widget, before any run."""
    from napari_cryohet.io.pdb import read_ca_chains

    lines = PDB.read_text().splitlines()
    atoms = [i for i, line in enumerate(lines) if line.startswith("ATOM") and line[21] == "A"]
    gone = set(atoms[100:105])
    kept = [line for i, line in enumerate(lines) if i not in gone and not line.startswith("END")]
    kept.append("HETATM 9999  CA  NME A 999      30.000   0.000  90.000  1.00  0.00           C")
    path = tmp_path / "gap_and_cap.pdb"
    path.write_text("\n".join(kept) + "\nEND\n")
    _, widget = _widget(make_napari_viewer)
    widget.structure_file.value = path  # chain empty: the first chain, A
    read = read_ca_chains(path)
    note = widget.structure_note.value
    print(f"\nstructure note: {note!r}")
    assert len(read.notes) == 2 and all(f"• {n}" in note for n in read.notes)
    assert "246 residues" in note and "2 connected pieces" in note and "NME 999" in note and "gap" in note


def test_a_bad_file_is_named_in_the_widget(make_napari_viewer, tmp_path):
    """A text file named .pdb: the widget says which file and why; Simulate starts nothing."""
    bad = tmp_path / "not_a_structure.pdb"
    bad.write_text("Dear colleague, the structure will follow next week.\n")
    viewer, widget = _widget(make_napari_viewer)
    widget.structure_file.value = bad
    assert widget.structure is None
    assert "not_a_structure.pdb" in widget.structure_note.value
    print(f"\nnote: {widget.structure_note.value!r}")
    widget.run_button.native.click()
    assert not widget.runner.busy and widget.runner.last_result is None and widget.dataset is None
    assert "not_a_structure.pdb" in widget.info.value and len(viewer.layers) == 0
    # and a missing trajectory file in file mode
    widget.structure_file.value = PDB
    assert widget.trajectory_file.native.isHidden() and not widget.form.normal_modes.native.isHidden()
    widget.motion.value = "trajectory file"  # the trajectory file shows, the mode settings hide
    assert not widget.trajectory_file.native.isHidden() and widget.form.normal_modes.native.isHidden()
    widget.trajectory_file.value = tmp_path / "md.dcd"
    widget.run_button.native.click()
    assert not widget.runner.busy and "md.dcd" in widget.info.value and "does not exist" in widget.info.value


def test_your_own_trajectory_file(make_napari_viewer, qtbot, tmp_path):
    """Frames from a multi-model PDB: the structure itself, a rigidly moved copy (superposed back
    onto it) and a copy with one end swung out (its internal distances kept)."""
    from napari_cryohet.io.pdb import read_ca_chains, write_chains_pdb

    read = read_ca_chains(PDB, chain="A")
    x = read.coords.astype(np.float64)
    angle = 0.7
    rot = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    moved = x @ rot.T + np.array([12.0, -7.0, 3.0])
    swung = x.copy()
    swung[200:] += np.array([4.0, 0.0, 0.0])
    traj = write_chains_pdb(tmp_path / "md.pdb", np.stack([x, moved, swung]), resnames=read.resnames,
                            resids=read.resids)
    _, widget = _widget(make_napari_viewer)
    widget.structure_file.value = PDB
    widget.chains.value = "A"
    widget.check_structure()
    widget.motion.value = "trajectory file"
    widget.trajectory_file.value = traj
    widget.form.n_particles.value = 12
    widget.form.box_size.value = 32
    widget.run_button.native.click()
    _wait(qtbot, widget.runner)
    assert widget.runner.last_error is None, widget.runner.last_error
    ds = widget.dataset
    frames = np.asarray(ds.ground_truth["global/trajectory_coords_a"], dtype=np.float64)
    ref = x - x.mean(axis=0)
    assert frames.shape == (3, 251, 3) and len(ds) == 12
    assert np.abs(frames[0] - ref).max() < 1e-3 and np.abs(frames[1] - ref).max() < 1e-3

    def dist(c: np.ndarray) -> np.ndarray:
        return np.linalg.norm(c[:, None] - c[None], axis=-1)

    assert np.abs(dist(frames[2]) - dist(swung)).max() < 1e-3 and np.abs(frames[2] - ref).max() > 1.0
    assert ds.meta["recipe"]["args"]["trajectory"] == str(traj.resolve())
    assert "normal_modes" not in ds.meta["recipe"]["args"]
    assert "md.pdb" in widget.layers[0].name


def test_cancel_and_a_box_too_small(make_napari_viewer, qtbot):
    """Cancel stops the run (no dataset, no layers); a pixel size that leaves atoms outside the
    images is named, with the suggested one, before the run."""
    viewer, widget = _widget(make_napari_viewer)
    widget.structure_file.value = PDB
    widget.chains.value = "A"
    widget.check_structure()
    widget.form.normal_modes.value = 2
    widget.form.n_particles.value = 20
    widget.form.box_size.value = 32
    args = widget.recipe_args()
    assert widget.box_warning(args) == ""  # the suggested pixel size fits
    small = widget.box_warning({**args, "apix": 1.0})
    print(f"\n{small}")
    assert "16 Å from centre to edge" in small and f"suggested: {widget.suggested_apix:g} Å/px" in small

    widget.run_button.native.click()
    widget.runner.cancel_button.native.click()
    _wait(qtbot, widget.runner)
    assert widget.runner.status.value == "cancelled" and widget.runner.last_result is None
    assert widget.dataset is None and len(viewer.layers) == 0


def test_settings_in_plain_words(qtbot):
    """The simulator's settings meet the stage forms' standard (tests/plugin/test_config_form.py):
    short labels with units, a help sentence with a typical value, 4 settings shown, the rest folded."""
    import dataclasses

    from napari_cryohet.plugin._config_form import ConfigForm
    from napari_cryohet.plugin.simulate_widget import SimulateProteinSettings

    form = ConfigForm(SimulateProteinSettings)
    qtbot.addWidget(form.native)
    labels = {name: w.label for name, w in form.inputs.items()}
    print(f"\n{labels}")
    assert labels["amplitude_a"] == "largest RMSD (Å)" and labels["apix"] == "pixel size (Å/px)"
    assert labels["box_size"] == "box size (px)" and labels["n_particles"] == "number of particles"
    assert form.advanced_names == ("box_size", "snr", "seed")
    assert "Atilgan et al. 2001" in form.normal_modes.tooltip
    for f in dataclasses.fields(SimulateProteinSettings):
        help_text = f.metadata["help"]
        assert len(help_text) >= 40 and "default:" in form.inputs[f.name].tooltip, f.name
        if f.name != "seed":
            assert "typical" in help_text or " in " in help_text, f.name
